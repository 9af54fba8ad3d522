//! `GET /v1/projects` and `GET /v1/projects/{id}`: what is served, in order.

use crate::common;

use common::{project, snapshot, TestSidecar};
use serde_json::json;

#[tokio::test]
async fn project_list_has_every_id_and_revision_sorted() {
    let t = TestSidecar::start(Some(&snapshot(
        1,
        vec![project("zeta", 9), project("acme", 2)],
    )))
    .await;
    let r = t.get("/v1/projects").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({"projects": [{"id": "acme", "revision": 2}, {"id": "zeta", "revision": 9}]})
    );
}

#[tokio::test]
async fn environments_are_listed_by_position_then_slug() {
    let mut doc = project("acme", 4);
    // Fixture order is canary, qa, staging, prod with positions 3, 2, 1, 0.
    // Give qa and canary the same position, and add one with none.
    doc["environments"][0]["position"] = json!(2);
    let mut extra = common::env("acme_beta", "beta", json!({}));
    extra.as_object_mut().unwrap().remove("position");
    doc["environments"].as_array_mut().unwrap().insert(0, extra);
    let t = TestSidecar::start(Some(&snapshot(1, vec![doc]))).await;
    let r = t.get("/v1/projects/acme").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let slugs: Vec<_> = r.body["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["prod", "staging", "canary", "qa", "beta"]);
}

#[tokio::test]
async fn project_view_shows_served_pointers_pending_schedule_and_revision() {
    let mut doc = project("acme", 4);
    doc["environments"][3]["description"] = json!("Live traffic");
    doc["environments"][3]["pending"] =
        json!([{"kind": "prompts", "key": "summarize", "version": "99", "requested_by": "u_7"}]);
    doc["environments"][3]["scheduled"] = json!([
        {"at": "2020-01-01T00:00:00Z", "pointers": {"providers": {"openai": "act-past"}}},
        {"at": "2099-01-01T00:00:00Z", "pointers": {"prompts": {"summarize": "future"}}}
    ]);
    doc["published_at"] = json!("2026-11-20T09:12:44Z");
    let t = TestSidecar::start(Some(&snapshot(1, vec![doc]))).await;
    let r = t.get("/v1/projects/acme").await;
    assert_eq!(r.body["id"], "acme");
    assert_eq!(r.body["revision"], 4);
    assert!(r.body["accepted_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(r.body["published_at"], "2026-11-20T09:12:44Z");
    assert_eq!(r.body["last_rejection"], json!(null));
    let prod = &r.body["environments"][0];
    assert_eq!(prod["slug"], "prod");
    assert_eq!(prod["description"], "Live traffic");
    assert_eq!(prod["gateway_fallback"], true);
    assert_eq!(prod["system"], true);
    // The past entry is in effect; the future one is listed as upcoming.
    assert_eq!(prod["pointers"]["providers"]["openai"], "act-past");
    assert_eq!(prod["pointers"]["prompts"]["summarize"], "prod-r4");
    assert_eq!(prod["pending"][0]["version"], "99");
    assert_eq!(
        prod["scheduled"],
        json!([{"at": "2099-01-01T00:00:00.000Z", "pointers": {"prompts": {"summarize": "future"}}}])
    );
    // And resolve serves exactly those pointers.
    let a = t.get("/v1/resolve?project=acme&environment=prod").await;
    assert_eq!(a.body["pointers"], prod["pointers"]);
}

#[tokio::test]
async fn project_view_reports_the_last_rejection() {
    let t = TestSidecar::start(Some(&snapshot(1, vec![project("acme", 1)]))).await;
    let mut bad = project("acme", 2);
    bad["environments"][0]["color"] = json!("blue");
    let since = std::time::SystemTime::now();
    t.write_snapshot(&snapshot(2, vec![bad]));
    t.wait_source_read_after(since).await;
    let r = t.get("/v1/projects/acme").await;
    assert_eq!(r.body["revision"], 1);
    assert_eq!(r.body["last_rejection"]["reason"], "invalid_color");
    assert_eq!(r.body["last_rejection"]["revision"], 2);
    assert!(r.body["last_rejection"]["message"]
        .as_str()
        .unwrap()
        .contains("blue"));
    assert!(r.body["last_rejection"]["at"].as_str().is_some());
}

#[tokio::test]
async fn bad_or_unknown_project_ids() {
    let t = TestSidecar::start(Some(&snapshot(1, vec![project("acme", 1)]))).await;
    let paths: [&[u8]; 7] = [
        b"/v1/projects/..",
        b"/v1/projects/../../etc/passwd",
        b"/v1/projects/%2E%2E%2Fetc",
        b"/v1/projects/a%FFb",
        b"/v1/projects/",
        b"/v1/projects/a/b",
        b"/v1/projects/%",
    ];
    for path in paths {
        let (status, text) = common::raw_get(t.sidecar.data_addr(), path).await;
        let shown = String::from_utf8_lossy(path);
        assert_eq!(status, 400, "{shown}: {text}");
        assert!(
            text.contains(r#"{"error":{"code":"invalid_request","message":"#),
            "{shown}: {text}"
        );
    }
    let long = format!("/v1/projects/{}", "x".repeat(129));
    assert_eq!(t.get(&long).await.status, 400);
    let r = t.get("/v1/projects/nobody").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "unknown_project");
    // Percent-encoded valid ids are decoded.
    assert_eq!(t.get("/v1/projects/ac%6De").await.status, 200);
}

#[tokio::test]
async fn a_list_larger_than_one_write_frame_arrives_whole_and_the_connection_serves_on() {
    // ~48 KB of listing: three frames and more of the flattened writes.
    let projects: Vec<_> = (0..1500)
        .map(|i| project(&format!("proj-{i:04}"), 1))
        .collect();
    let t = TestSidecar::start(Some(&snapshot(1, projects))).await;
    for _ in 0..2 {
        let r = t.get("/v1/projects").await;
        assert_eq!(r.status, 200);
        let max = env_sidecar::server::body::MAX_FRAME;
        assert!(r.text.len() > 2 * max, "{} bytes", r.text.len());
        let listed = r.body["projects"].as_array().unwrap();
        assert_eq!(listed.len(), 1500);
        assert_eq!(listed[1499]["id"], "proj-1499");
        let answer = t.get("/v1/resolve?project=proj-0042&environment=qa").await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.body["project"], "proj-0042");
    }
}
