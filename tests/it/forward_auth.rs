//! `/v1/authz`, the forward-auth endpoint proxies call before forwarding:
//! any method and any path under it, identity from the configured headers
//! only, the `x-resolved-*` headers on success (the versions among them,
//! within `server.max_pointers_header_bytes`), 404 / 400 to deny, 503
//! while not ready; and a repeated identity header refused everywhere.

use crate::common;

use common::{project, raw_request, snapshot, TestSidecar};
use reqwest::Method;

/// acme's qa pointers at revision 4, as `x-resolved-pointers` carries them.
const QA_POINTERS: &str = r#"{"prompts":{"summarize":"qa-r4"},"routing_rules":{},"providers":{}}"#;

async fn sidecar() -> TestSidecar {
    TestSidecar::start(Some(&snapshot(1, vec![project("acme", 4)]))).await
}

async fn authz(
    t: &TestSidecar,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> common::Reply {
    let mut req = t.client.request(method, t.data(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    common::Reply::from(req.send().await.unwrap()).await
}

#[tokio::test]
async fn every_method_and_every_path_under_authz_resolves_from_the_headers() {
    let t = sidecar().await;
    let id = [("x-project-id", "acme"), ("x-environment", "QA")];
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        for path in [
            "/v1/authz",
            "/v1/authz/",
            "/v1/authz/v1/chat/completions?stream=true",
        ] {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let r = authz(&t, method.clone(), path, &id).await;
            assert_eq!(r.status, 200, "{method} {path}: {}", r.text);
            assert_eq!(r.header("x-resolved-environment"), Some("qa"));
            assert_eq!(r.header("x-resolution-outcome"), Some("exact"));
            assert_eq!(r.header("x-snapshot-revision"), Some("4"));
            assert_eq!(r.body["pointers"]["prompts"]["summarize"], "qa-r4");
            assert_eq!(r.header("x-resolved-pointers"), Some(QA_POINTERS));
            assert_eq!(r.header("x-resolved-pointers-omitted"), None);
        }
    }
    // Not a prefix match on the bare string: /v1/authzx is no route.
    assert_eq!(authz(&t, Method::GET, "/v1/authzx", &id).await.status, 404);
}

#[tokio::test]
async fn head_gets_the_headers_without_a_body() {
    let t = sidecar().await;
    let (status, text) = raw_request(
        t.sidecar.data_addr(),
        b"HEAD /v1/authz HTTP/1.1\r\nhost: x\r\nx-project-id: acme\r\nx-environment: canary\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("x-resolved-environment: canary\r\n"),
        "{text}"
    );
    assert!(text.contains("x-resolution-outcome: exact\r\n"), "{text}");
    assert!(
        text.contains(
            "x-resolved-pointers: {\"prompts\":{\"summarize\":\"canary-r4\"},\"routing_rules\":{},\"providers\":{}}\r\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\n"),
        "no body after the head: {text:?}"
    );
}

#[tokio::test]
async fn the_pointers_header_is_the_bodys_pointers_byte_for_byte() {
    // Keys that JSON escapes: a quote, a backslash, beyond ASCII (written
    // as `\u` escapes in the body as in the header), and a due change.
    let mut doc = project("acme", 4);
    doc["environments"][1]["pointers"] = serde_json::json!({
        "prompts": {"q\"uote": "a\\b", "\u{e9}t\u{e9}": "1", "\u{1f600}": "2"},
        "providers": {"openai": "act-1"}
    });
    doc["environments"][1]["scheduled"] = serde_json::json!([
        {"at": "2020-01-01T00:00:00Z", "pointers": {"routing_rules": {"default": "r-2"}}}
    ]);
    let t = TestSidecar::start(Some(&snapshot(1, vec![doc]))).await;
    for path in ["/v1/authz", "/v1/resolve"] {
        let r = authz(
            &t,
            Method::GET,
            path,
            &[("x-project-id", "acme"), ("x-environment", "qa")],
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        let header = r
            .header("x-resolved-pointers")
            .expect("the pointers header");
        assert_eq!(
            header,
            r#"{"prompts":{"q\"uote":"a\\b","\u00e9t\u00e9":"1","\ud83d\ude00":"2"},"routing_rules":{"default":"r-2"},"providers":{"openai":"act-1"}}"#
        );
        assert!(
            r.text.ends_with(&format!("\"pointers\":{header}}}")),
            "{}",
            r.text
        );
        let parsed: serde_json::Value = serde_json::from_str(header).unwrap();
        assert_eq!(parsed, r.body["pointers"]);
        assert_eq!(parsed["prompts"]["\u{1f600}"], "2");
    }
}

#[tokio::test]
async fn pointers_over_the_limit_are_left_out_and_say_so() {
    let limit = QA_POINTERS.len();
    for (configured, sent) in [(limit, true), (limit - 1, false)] {
        let t = TestSidecar::start_with(Some(&snapshot(1, vec![project("acme", 4)])), |c| {
            c.server.max_pointers_header_bytes = configured
        })
        .await;
        for (method, path) in [
            (Method::GET, "/v1/authz"),
            (Method::HEAD, "/v1/authz/x"),
            (Method::POST, "/v1/authz"),
            (Method::GET, "/v1/resolve"),
        ] {
            let r = authz(
                &t,
                method.clone(),
                path,
                &[("x-project-id", "acme"), ("x-environment", "qa")],
            )
            .await;
            assert_eq!(r.status, 200, "{method} {path}");
            if sent {
                assert_eq!(r.header("x-resolved-pointers"), Some(QA_POINTERS));
                assert_eq!(r.header("x-resolved-pointers-omitted"), None);
            } else {
                assert_eq!(r.header("x-resolved-pointers"), None, "{method} {path}");
                assert_eq!(r.header("x-resolved-pointers-omitted"), Some("too_large"));
            }
            if method != Method::HEAD {
                // The body keeps them either way.
                assert_eq!(r.body["pointers"]["prompts"]["summarize"], "qa-r4");
            }
        }
    }
}

#[tokio::test]
async fn the_query_string_is_the_clients_and_never_decides() {
    let t = sidecar().await;
    // A client cannot pick the project or environment through the query.
    let r = authz(
        &t,
        Method::GET,
        "/v1/authz?project=globex&environment=canary",
        &[("x-project-id", "acme")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["project"], "acme");
    assert_eq!(r.header("x-resolution-outcome"), Some("fallback"));
    assert_eq!(r.body["reason"], "not_requested");
    let r = authz(&t, Method::GET, "/v1/authz?project=acme", &[]).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "invalid_request");
}

#[tokio::test]
async fn unknown_environments_fall_back_and_an_empty_header_is_not_requested() {
    let t = sidecar().await;
    let r = authz(
        &t,
        Method::GET,
        "/v1/authz",
        &[("x-project-id", "acme"), ("x-environment", "perf")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-resolved-environment"), Some("prod"));
    assert_eq!(r.body["reason"], "unknown_environment");
    let r = authz(
        &t,
        Method::GET,
        "/v1/authz",
        &[("x-project-id", "acme"), ("x-environment", "")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["reason"], "not_requested");
}

#[tokio::test]
async fn denials_carry_the_error_shape() {
    let t = sidecar().await;
    let r = authz(&t, Method::GET, "/v1/authz", &[("x-project-id", "nobody")]).await;
    assert_eq!((r.status, r.error_code()), (404, "unknown_project"));
    let r = authz(&t, Method::GET, "/v1/authz", &[("x-project-id", "bad id")]).await;
    assert_eq!((r.status, r.error_code()), (400, "invalid_request"));
    let r = authz(
        &t,
        Method::GET,
        "/v1/authz",
        &[("x-project-id", "acme"), ("x-environment", "Bad_Slug")],
    )
    .await;
    assert_eq!((r.status, r.error_code()), (400, "invalid_request"));
    assert_eq!(r.header("x-resolved-environment"), None);
}

#[tokio::test]
async fn not_ready_is_a_503_so_the_proxy_decides() {
    let t = TestSidecar::start(None).await;
    let r = authz(&t, Method::GET, "/v1/authz", &[("x-project-id", "acme")]).await;
    assert_eq!((r.status, r.error_code()), (503, "not_ready"));
}

#[tokio::test]
async fn a_repeated_identity_header_is_refused_on_authz_and_resolve() {
    let t = sidecar().await;
    let addr = t.sidecar.data_addr();
    for (path, header) in [
        ("/v1/authz", "x-project-id"),
        ("/v1/authz", "x-environment"),
        ("/v1/resolve", "x-project-id"),
        ("/v1/resolve", "x-environment"),
        // Even when the query names the project: the repeat is refused.
        ("/v1/resolve?project=acme", "x-project-id"),
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: x\r\nx-project-id: acme\r\nx-environment: qa\r\n{header}: globex\r\nconnection: close\r\n\r\n"
        );
        let (status, text) = raw_request(addr, request.as_bytes()).await;
        assert_eq!(status, 400, "{path} with {header} twice: {text}");
        assert!(
            text.contains("invalid_request") && text.contains("repeated"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn authz_requests_are_counted_under_their_own_api() {
    let t = sidecar().await;
    authz(
        &t,
        Method::POST,
        "/v1/authz/x",
        &[("x-project-id", "acme"), ("x-environment", "qa")],
    )
    .await;
    authz(&t, Method::GET, "/v1/authz", &[("x-project-id", "nobody")]).await;
    let m = t.get_admin("/metrics").await.text;
    let line = |outcome: &str| {
        format!("env_sidecar_resolve_requests_total{{outcome=\"{outcome}\",api=\"authz_http\"}} 1")
    };
    assert!(m.contains(&line("exact")), "{m}");
    assert!(m.contains(&line("unknown_project")), "{m}");
}
