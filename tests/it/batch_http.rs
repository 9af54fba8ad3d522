//! `POST /v1/resolve/batch`: answers in order, per-item errors, limits.

use crate::common;

use common::{project, snapshot, TestSidecar};
use serde_json::json;

async fn sidecar() -> TestSidecar {
    TestSidecar::start(Some(&snapshot(
        1,
        vec![project("acme", 2), project("globex", 5)],
    )))
    .await
}

#[tokio::test]
async fn answers_come_back_in_request_order_with_per_item_errors() {
    let t = sidecar().await;
    let body = json!({"requests": [
        {"project": "globex", "environment": "qa"},
        {"project": "acme"},
        {"project": "nobody", "environment": "prod"},
        {"project": "acme", "environment": "perf"},
        {"project": "acme", "environment": "perf", "strict": true},
        {"project": "acme", "environment": "bad_slug"},
        {"environment": "prod"},
        {"project": "acme", "environment": "STAGING"}
    ]});
    let r = t.post("/v1/resolve/batch", body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 8);
    assert_eq!(results[0]["project"], "globex");
    assert_eq!(results[0]["environment"]["slug"], "qa");
    assert_eq!(results[0]["revision"], 5);
    assert_eq!(results[1]["reason"], "not_requested");
    assert_eq!(results[2]["error"]["code"], "unknown_project");
    assert_eq!(results[3]["reason"], "unknown_environment");
    assert_eq!(results[4]["error"]["code"], "unknown_environment");
    assert_eq!(results[5]["error"]["code"], "invalid_request");
    assert_eq!(results[6]["error"]["code"], "invalid_request");
    assert_eq!(results[7]["outcome"], "exact");
    assert_eq!(results[7]["environment"]["slug"], "staging");
}

#[tokio::test]
async fn a_batch_answer_equals_the_single_answers() {
    let t = sidecar().await;
    let single = t.get("/v1/resolve?project=acme&environment=canary").await;
    let r = t
        .post(
            "/v1/resolve/batch",
            json!({"requests": [{"project": "acme", "environment": "canary"}]}).to_string(),
        )
        .await;
    assert_eq!(r.body["results"][0], single.body);
}

#[tokio::test]
async fn a_thousand_requests_are_accepted() {
    let t = sidecar().await;
    let items: Vec<_> = (0..1000)
        .map(|_| json!({"project": "acme", "environment": "qa"}))
        .collect();
    let r = t
        .post("/v1/resolve/batch", json!({"requests": items}).to_string())
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["results"].as_array().unwrap().len(), 1000);
}

#[tokio::test]
async fn more_than_a_thousand_requests_is_413() {
    let t = sidecar().await;
    let items: Vec<_> = (0..1001).map(|_| json!({"project": "acme"})).collect();
    let r = t
        .post("/v1/resolve/batch", json!({"requests": items}).to_string())
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "payload_too_large");
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let t = sidecar().await;
    let padding = " ".repeat(2 * 1024 * 1024);
    let r = t
        .post(
            "/v1/resolve/batch",
            format!("{{\"requests\": []{padding}}}"),
        )
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "payload_too_large");
}

#[tokio::test]
async fn a_body_that_is_not_a_batch_is_400() {
    let t = sidecar().await;
    for body in [
        "",
        "not json",
        "{}",
        "[]",
        r#"{"requests": {}}"#,
        r#"{"requests": [{"project": 7}]}"#,
    ] {
        let r = t.post("/v1/resolve/batch", body).await;
        assert_eq!(r.status, 400, "{body:?}");
        assert_eq!(r.error_code(), "invalid_request");
    }
}
