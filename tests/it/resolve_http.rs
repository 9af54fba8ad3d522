//! Resolution over real HTTP: every case of the resolution rules, query vs
//! headers, case-insensitivity, strict mode, and every invalid input class.

use crate::common;

use common::{project, raw_request, snapshot, TestSidecar};
use serde_json::json;

async fn sidecar() -> TestSidecar {
    let mut other = project("globex", 4);
    // globex falls back to staging, not prod.
    other["environments"][2]["gateway_fallback"] = json!(true);
    other["environments"][3]["gateway_fallback"] = json!(false);
    TestSidecar::start(Some(&snapshot(7, vec![project("acme", 3), other]))).await
}

#[tokio::test]
async fn requested_environment_that_exists_is_an_exact_answer() {
    let t = sidecar().await;
    let r = t.get("/v1/resolve?project=acme&environment=qa").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["project"], "acme");
    assert_eq!(r.body["revision"], 3);
    assert_eq!(r.body["outcome"], "exact");
    assert_eq!(r.body["reason"], json!(null));
    assert_eq!(r.body["environment"]["slug"], "qa");
    assert_eq!(r.body["environment"]["id"], "acme_qa");
    assert_eq!(r.body["environment"]["production"], false);
    assert_eq!(r.body["environment"]["color"], "#16a34a");
    assert_eq!(r.body["pointers"]["prompts"]["summarize"], "qa-r3");
    assert_eq!(r.body["pointers"]["routing_rules"], json!({}));
    assert_eq!(r.header("x-resolved-environment"), Some("qa"));
    assert_eq!(r.header("x-resolution-outcome"), Some("exact"));
    assert_eq!(r.header("x-snapshot-revision"), Some("3"));
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn no_environment_falls_back_with_reason_not_requested() {
    let t = sidecar().await;
    let r = t.get("/v1/resolve?project=acme").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["outcome"], "fallback");
    assert_eq!(r.body["reason"], "not_requested");
    assert_eq!(r.body["environment"]["slug"], "prod");
    assert_eq!(r.header("x-resolved-environment"), Some("prod"));
    assert_eq!(r.header("x-resolution-outcome"), Some("fallback"));
}

#[tokio::test]
async fn unknown_environment_falls_back_to_the_gateway_fallback() {
    let t = sidecar().await;
    let r = t.get("/v1/resolve?project=globex&environment=perf").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["outcome"], "fallback");
    assert_eq!(r.body["reason"], "unknown_environment");
    assert_eq!(
        r.body["environment"]["slug"], "staging",
        "globex's fallback is staging"
    );
    assert_eq!(r.body["pointers"]["prompts"]["summarize"], "staging-r4");
    assert_eq!(r.header("x-resolved-environment"), Some("staging"));
}

#[tokio::test]
async fn strict_mode_turns_an_unknown_environment_into_404() {
    let t = sidecar().await;
    let r = t
        .get("/v1/resolve?project=acme&environment=perf&strict=true")
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "unknown_environment");
    assert!(r.header("x-resolved-environment").is_none());
    // Strict mode changes nothing for environments that exist.
    let r = t
        .get("/v1/resolve?project=acme&environment=qa&strict=true")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["outcome"], "exact");
    let r = t
        .get("/v1/resolve?project=acme&environment=perf&strict=false")
        .await;
    assert_eq!(r.body["reason"], "unknown_environment");
}

#[tokio::test]
async fn unknown_project_is_404() {
    let t = sidecar().await;
    let r = t.get("/v1/resolve?project=nobody&environment=prod").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "unknown_project");
}

#[tokio::test]
async fn slugs_compare_ascii_case_insensitively() {
    let t = sidecar().await;
    for slug in ["QA", "Qa", "qA"] {
        let r = t
            .get(&format!("/v1/resolve?project=acme&environment={slug}"))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["outcome"], "exact", "{slug}");
        assert_eq!(r.header("x-resolved-environment"), Some("qa"));
    }
}

#[tokio::test]
async fn project_ids_are_case_sensitive() {
    let t = sidecar().await;
    let r = t.get("/v1/resolve?project=ACME").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "unknown_project");
}

#[tokio::test]
async fn headers_stand_in_for_query_parameters() {
    let t = sidecar().await;
    let resp = t
        .client
        .get(t.data("/v1/resolve"))
        .header("x-project-id", "acme")
        .header("x-environment", "Canary")
        .send()
        .await
        .unwrap();
    let r = common::Reply::from(resp).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["environment"]["slug"], "canary");
    assert_eq!(r.body["outcome"], "exact");
}

#[tokio::test]
async fn query_parameters_win_over_headers() {
    let t = sidecar().await;
    let resp = t
        .client
        .get(t.data("/v1/resolve?project=acme&environment=qa"))
        .header("x-project-id", "globex")
        .header("x-environment", "canary")
        .send()
        .await
        .unwrap();
    let r = common::Reply::from(resp).await;
    assert_eq!(r.body["project"], "acme");
    assert_eq!(r.body["environment"]["slug"], "qa");
}

#[tokio::test]
async fn header_names_are_configurable() {
    let snap = snapshot(1, vec![project("acme", 1)]);
    let t = TestSidecar::start_with(Some(&snap), |c| {
        c.server.project_header = http::HeaderName::from_static("x-tenant");
        c.server.environment_header = http::HeaderName::from_static("x-env");
    })
    .await;
    let resp = t
        .client
        .get(t.data("/v1/resolve"))
        .header("x-tenant", "acme")
        .header("x-env", "qa")
        .header("x-environment", "canary")
        .send()
        .await
        .unwrap();
    let r = common::Reply::from(resp).await;
    assert_eq!(r.body["environment"]["slug"], "qa");
}

#[tokio::test]
async fn empty_environment_counts_as_not_requested() {
    let t = sidecar().await;
    let r = t.get("/v1/resolve?project=acme&environment=").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["reason"], "not_requested");
}

#[tokio::test]
async fn every_invalid_input_class_is_400_with_the_error_shape() {
    let t = sidecar().await;
    let long_project = "p".repeat(129);
    let long_slug = format!("a{}", "b".repeat(64));
    let cases = [
        "/v1/resolve".to_string(),
        "/v1/resolve?environment=prod".to_string(),
        "/v1/resolve?project=".to_string(),
        "/v1/resolve?project=ac%20me".to_string(),
        "/v1/resolve?project=ac/me".to_string(),
        "/v1/resolve?project=%C3%A9".to_string(),
        format!("/v1/resolve?project={long_project}"),
        "/v1/resolve?project=acme&environment=q_a".to_string(),
        "/v1/resolve?project=acme&environment=1qa".to_string(),
        "/v1/resolve?project=acme&environment=qa-".to_string(),
        "/v1/resolve?project=acme&environment=-qa".to_string(),
        format!("/v1/resolve?project=acme&environment={long_slug}"),
        "/v1/resolve?project=acme&environment=%FF".to_string(),
        "/v1/resolve?project=%FF%FE".to_string(),
        "/v1/resolve?project=acme&project=globex".to_string(),
        "/v1/resolve?project=acme&strict=yes".to_string(),
        "/v1/resolve?project=acme&environment=..%2F..".to_string(),
    ];
    for path in &cases {
        let r = t.get(path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        assert_eq!(r.error_code(), "invalid_request", "{path}");
    }
    // Garbage never falls back: not even for a known project.
    let r = t.get("/v1/resolve?project=acme&environment=QA!").await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn non_ascii_header_value_is_400() {
    let t = sidecar().await;
    let resp = t
        .client
        .get(t.data("/v1/resolve"))
        .header(
            "x-project-id",
            http::HeaderValue::from_bytes(b"ac\xffme").unwrap(),
        )
        .send()
        .await
        .unwrap();
    let r = common::Reply::from(resp).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "invalid_request");
}

#[tokio::test]
async fn pending_releases_never_reach_an_answer() {
    let mut doc = project("acme", 1);
    doc["environments"][3]["pending"] = json!([{"kind": "prompts", "key": "summarize", "version": "PENDING-99", "requested_by": "u_1"},
               {"kind": "prompts", "key": "brand-new", "version": "PENDING-1"}]);
    let t = TestSidecar::start(Some(&snapshot(1, vec![doc]))).await;
    for path in [
        "/v1/resolve?project=acme&environment=prod",
        "/v1/resolve?project=acme",
    ] {
        let r = t.get(path).await;
        assert_eq!(
            r.body["pointers"]["prompts"],
            json!({"summarize": "prod-r1"})
        );
        assert!(!r.text.contains("PENDING"), "{}", r.text);
    }
    // They are visible to introspection, as pending.
    let r = t.get("/v1/projects/acme").await;
    assert!(r.text.contains("PENDING-99"));
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_error_shape() {
    let t = sidecar().await;
    let r = t.get("/v2/resolve").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
    let r = t.post("/v1/resolve", "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = t.get("/v1/resolve/batch").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));
    let r = t.post("/v1/projects/acme", "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    // HEAD is GET without the body.
    let (status, text) = raw_request(
        t.sidecar.data_addr(),
        b"HEAD /v1/resolve?project=acme HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("x-resolved-environment: "), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "a body after HEAD: {text}");
}
