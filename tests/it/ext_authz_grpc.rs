//! Envoy ext_authz over gRPC, spoken by a real HTTP/2 client: OK with the
//! three headers set to overwrite and the resolution as dynamic metadata;
//! NOT_FOUND / INVALID_ARGUMENT with a denied response; UNAVAILABLE while
//! not ready; route context extensions before headers; broken frames
//! refused cleanly; also over the Unix socket.

use crate::common;

use std::collections::HashMap;

use bytes::Bytes;

use common::h2;
use common::{project, snapshot, TestSidecar};
use env_sidecar::server::ext_authz::{
    AttributeContext, AttributeRequest, CheckRequest, HttpRequest, HttpResponse, Kind, Struct,
};

fn request(headers: &[(&str, &str)], extensions: &[(&str, &str)]) -> CheckRequest {
    let map = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttributeRequest {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    headers: map(headers),
                    path: "/v1/chat/completions".into(),
                    header_map: None,
                }),
            }),
            context_extensions: map(extensions),
        }),
    }
}

/// The entries of a struct whose values are all strings, in key order.
fn strings(map: &Struct) -> Vec<(&str, &str)> {
    map.fields
        .iter()
        .map(|(k, v)| match v.kind.as_ref() {
            Some(Kind::String(s)) => (k.as_str(), s.as_str()),
            other => panic!("{k}: {other:?}"),
        })
        .collect()
}

async fn sidecar() -> TestSidecar {
    TestSidecar::start(Some(&snapshot(
        1,
        vec![project("acme", 7), project("globex", 2)],
    )))
    .await
}

#[tokio::test]
async fn a_resolved_check_is_ok_with_overwriting_headers_and_metadata() {
    let t = sidecar().await;
    let mut client = h2::connect(t.sidecar.data_addr()).await;
    let (answer, message) = h2::check(
        &mut client,
        &request(
            &[("x-project-id", "acme"), ("x-environment", "Canary")],
            &[],
        ),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/grpc"));
    let message = message.expect("grpc-status 0 and a message");
    assert_eq!(message.status.as_ref().unwrap().code, 0);
    let Some(HttpResponse::Ok(ok)) = message.http_response else {
        panic!("not an ok_response: {message:?}")
    };
    let headers: Vec<(String, String, i32)> = ok
        .headers
        .iter()
        .map(|h| {
            let hv = h.header.as_ref().unwrap();
            (hv.key.clone(), hv.value.clone(), h.append_action)
        })
        .collect();
    assert_eq!(
        headers,
        [
            ("x-resolved-environment".into(), "canary".into(), 2),
            ("x-resolution-outcome".into(), "exact".into(), 2),
            ("x-snapshot-revision".into(), "7".into(), 2),
            (
                "x-resolved-pointers".into(),
                r#"{"prompts":{"summarize":"canary-r7"},"routing_rules":{},"providers":{}}"#.into(),
                2
            ),
        ],
        "OVERWRITE_IF_EXISTS_OR_ADD (2) for each"
    );
    let fields = message.dynamic_metadata.unwrap().fields;
    let get = |k: &str| match fields[k].kind.as_ref() {
        Some(Kind::String(s)) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(
        (
            get("project"),
            get("revision"),
            get("environment"),
            get("outcome")
        ),
        ("acme".into(), "7".into(), "canary".into(), "exact".into())
    );
    // The pointers as a struct: kind → key → version, every kind present.
    let Some(Kind::Struct(pointers)) = fields["pointers"].kind.as_ref() else {
        panic!("pointers: {:?}", fields["pointers"])
    };
    let kinds: Vec<(&str, Vec<(&str, &str)>)> = pointers
        .fields
        .iter()
        .map(|(kind, value)| {
            let Some(Kind::Struct(map)) = value.kind.as_ref() else {
                panic!("{kind}: {value:?}")
            };
            (kind.as_str(), strings(map))
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("prompts", vec![("summarize", "canary-r7")]),
            ("providers", vec![]),
            ("routing_rules", vec![])
        ]
    );
}

#[tokio::test]
async fn pointers_over_the_limit_are_left_out_and_say_so() {
    let t = TestSidecar::start_with(Some(&snapshot(1, vec![project("acme", 7)])), |c| {
        c.server.max_pointers_header_bytes = 40
    })
    .await;
    let mut client = h2::connect(t.sidecar.data_addr()).await;
    let (_, message) = h2::check(&mut client, &request(&[("x-project-id", "acme")], &[])).await;
    let message = message.expect("grpc-status 0 and a message");
    let Some(HttpResponse::Ok(ok)) = message.http_response else {
        panic!("not an ok_response: {message:?}")
    };
    let last = ok.headers.last().unwrap().header.as_ref().unwrap();
    assert_eq!(
        (last.key.as_str(), last.value.as_str()),
        ("x-resolved-pointers-omitted", "too_large")
    );
    assert!(ok
        .headers
        .iter()
        .all(|h| h.header.as_ref().unwrap().key != "x-resolved-pointers"));
    // The metadata still carries them.
    let fields = message.dynamic_metadata.unwrap().fields;
    assert!(matches!(fields["pointers"].kind, Some(Kind::Struct(_))));
}

#[tokio::test]
async fn context_extensions_win_over_the_clients_headers() {
    let t = sidecar().await;
    let mut client = h2::connect(t.sidecar.data_addr()).await;
    let req = request(
        &[("x-project-id", "acme"), ("x-environment", "qa")],
        &[("project", "globex"), ("environment", "staging")],
    );
    let (_, message) = h2::check(&mut client, &req).await;
    let fields = message.unwrap().dynamic_metadata.unwrap().fields;
    assert_eq!(fields["project"].kind, Some(Kind::String("globex".into())));
    assert_eq!(
        fields["environment"].kind,
        Some(Kind::String("staging".into()))
    );
}

#[tokio::test]
async fn denials_carry_status_code_and_the_json_error() {
    let t = sidecar().await;
    let mut client = h2::connect(t.sidecar.data_addr()).await;
    for (req, rpc_code, http_status, error_code) in [
        (
            request(&[("x-project-id", "nobody")], &[]),
            5,
            404,
            "unknown_project",
        ),
        (
            request(&[("x-project-id", "bad id")], &[]),
            3,
            400,
            "invalid_request",
        ),
        (request(&[], &[]), 3, 400, "invalid_request"),
        (
            request(&[("x-project-id", "acme,globex")], &[]),
            3,
            400,
            "invalid_request",
        ),
    ] {
        let (_, message) = h2::check(&mut client, &req).await;
        let message = message.expect("the call itself succeeds");
        assert_eq!(message.status.as_ref().unwrap().code, rpc_code, "{req:?}");
        let Some(HttpResponse::Denied(denied)) = message.http_response else {
            panic!("not denied: {message:?}")
        };
        assert_eq!(denied.status.unwrap().code, http_status);
        let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
        assert_eq!(body["error"]["code"], error_code);
    }
    let m = t.get_admin("/metrics").await.text;
    assert!(
        m.contains(
            "env_sidecar_resolve_requests_total{outcome=\"unknown_project\",api=\"authz_grpc\"} 1"
        ),
        "{m}"
    );
}

#[tokio::test]
async fn not_ready_fails_the_call_as_unavailable() {
    let t = TestSidecar::start(None).await;
    let mut client = h2::connect(t.sidecar.data_addr()).await;
    let (answer, message) =
        h2::check(&mut client, &request(&[("x-project-id", "acme")], &[])).await;
    assert_eq!(answer.grpc_status(), Some(14), "{answer:?}");
    assert!(message.is_none());
    assert!(answer.body.is_empty(), "trailers only");
}

#[tokio::test]
async fn broken_frames_are_refused_and_the_connection_keeps_serving() {
    let t = sidecar().await;
    let mut client = h2::connect(t.sidecar.data_addr()).await;
    let good = h2::framed(&request(&[("x-project-id", "acme")], &[]));
    let mut too_long = good.to_vec();
    too_long[4] = too_long[4].wrapping_add(9);
    let mut compressed = good.to_vec();
    compressed[0] = 1;
    for (body, code) in [
        (too_long, 3),
        (good[..3].to_vec(), 3),
        (compressed, 12),
        (vec![0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff], 3),
    ] {
        let answer = h2::check_raw(&mut client, body.into()).await;
        assert_eq!(answer.grpc_status(), Some(code), "{answer:?}");
    }
    let (_, message) = h2::check(&mut client, &request(&[("x-project-id", "acme")], &[])).await;
    assert!(message.is_some(), "same connection, still serving");
}

#[tokio::test]
async fn checks_work_over_the_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("data.sock");
    let sock = socket.clone();
    let t = TestSidecar::start_with(Some(&snapshot(1, vec![project("acme", 3)])), move |c| {
        c.server.unix_socket = sock.display().to_string()
    })
    .await;
    let io = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let mut client = h2::connect_io(io).await;
    let (_, message) = h2::check(&mut client, &request(&[("x-project-id", "acme")], &[])).await;
    assert_eq!(message.unwrap().status.unwrap().code, 0);
    drop(t);
}

/// A project whose prod pointers need JSON escapes and change at a
/// scheduled instant, for comparing the two ways of making the struct.
fn escaped_and_scheduled(revision: u64, change_at: std::time::SystemTime) -> serde_json::Value {
    let mut doc = project("acme", revision);
    doc["environments"][3]["pointers"] = serde_json::json!({
        "prompts": {"q\"uote": "x\\y", "été": format!("r{revision}")},
        "routing_rules": {"default": "rr-1"},
        "providers": {"😀": "act-2"}
    });
    doc["environments"][3]["scheduled"] = serde_json::json!([{
        "at": env_sidecar::model::timestamp::format_rfc3339(change_at),
        "pointers": {"prompts": {"été": "scheduled"}}
    }]);
    doc
}

/// Every way of asking for acme (each slug, none, an unknown one): the
/// raw reply bytes of each, and prod's `prompts` struct decoded.
async fn replies(t: &TestSidecar) -> (Vec<Bytes>, Vec<(String, String)>) {
    let mut client = h2::connect(t.sidecar.data_addr()).await;
    let mut raw = Vec::new();
    for slug in ["prod", "staging", "qa", "canary", "", "nope"] {
        let req = request(&[("x-project-id", "acme"), ("x-environment", slug)], &[]);
        let answer = h2::check_raw(&mut client, h2::framed(&req)).await;
        assert_eq!(answer.grpc_status(), Some(0), "{slug}: {answer:?}");
        raw.push(answer.body);
    }
    let (_, message) = h2::check(
        &mut client,
        &request(&[("x-project-id", "acme"), ("x-environment", "prod")], &[]),
    )
    .await;
    let fields = message.unwrap().dynamic_metadata.unwrap().fields;
    let Some(Kind::Struct(pointers)) = fields["pointers"].kind.as_ref() else {
        panic!("pointers: {fields:?}")
    };
    let Some(Kind::Struct(prompts)) = pointers.fields["prompts"].kind.as_ref() else {
        panic!("prompts: {pointers:?}")
    };
    let prompts = strings(prompts)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (raw, prompts)
}

#[tokio::test]
async fn a_prerendered_pointers_struct_is_the_same_reply_through_cutovers_and_revisions() {
    use env_sidecar::config::GrpcPointersStruct;
    use env_sidecar::model::clock::ManualClock;
    use std::time::{Duration, UNIX_EPOCH};

    let t0 = UNIX_EPOCH + Duration::from_secs(1_893_456_000);
    let change_at = t0 + Duration::from_secs(60);
    let start = |structs: GrpcPointersStruct| {
        let clock = ManualClock::new(t0);
        let options = env_sidecar::app::Options {
            clock: std::sync::Arc::new(clock.clone()),
            ..common::test_options()
        };
        let doc = snapshot(1, vec![escaped_and_scheduled(1, change_at)]);
        async move {
            let t = TestSidecar::start_configured(
                Some(&doc),
                |c| c.server.grpc_pointers_struct = structs,
                options,
            )
            .await;
            (t, clock)
        }
    };
    let (per_check, per_check_clock) = start(GrpcPointersStruct::PerCheck).await;
    let (prerendered, prerendered_clock) = start(GrpcPointersStruct::Prerendered).await;
    let prompts = |ete: &str| {
        vec![
            ("q\"uote".to_owned(), "x\\y".to_owned()),
            ("été".to_owned(), ete.to_owned()),
        ]
    };

    let (expected, decoded) = replies(&per_check).await;
    assert_eq!(decoded, prompts("r1"));
    assert_eq!(replies(&prerendered).await, (expected, decoded));

    // The scheduled change falls due: both render it.
    for (t, clock) in [
        (&per_check, &per_check_clock),
        (&prerendered, &prerendered_clock),
    ] {
        clock.set(change_at);
        assert_eq!(t.sidecar.tick_schedules().await, 1);
    }
    let (expected, decoded) = replies(&per_check).await;
    assert_eq!(decoded, prompts("scheduled"));
    assert_eq!(replies(&prerendered).await, (expected, decoded));

    // A new revision replaces the project.
    for t in [&per_check, &prerendered] {
        t.write_snapshot(&snapshot(
            2,
            vec![escaped_and_scheduled(
                2,
                change_at + Duration::from_secs(3600),
            )],
        ));
        t.wait_revision("acme", 2).await;
    }
    let (expected, decoded) = replies(&per_check).await;
    assert_eq!(decoded, prompts("r2"));
    assert_eq!(replies(&prerendered).await, (expected, decoded));
}
