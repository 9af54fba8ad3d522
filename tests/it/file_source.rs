//! The file source and the accept/reject rules: changes picked up, invalid
//! documents rejected alone, stale revisions ignored, slugs immutable,
//! malformed files harmless, not ready until something loads.

use crate::common;

use env_sidecar::model::clock::Clock;

use std::time::SystemTime;

use common::{project, snapshot, TestSidecar};
use env_sidecar::config::Source;
use serde_json::json;

fn summarize(r: &common::Reply) -> &str {
    r.body["pointers"]["prompts"]["summarize"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test]
async fn a_changed_file_is_picked_up() {
    let t = TestSidecar::start(Some(&snapshot(1, vec![project("acme", 1)]))).await;
    t.write_snapshot(&snapshot(2, vec![project("acme", 2), project("globex", 1)]));
    t.wait_revision("acme", 2).await;
    let r = t.get("/v1/resolve?project=acme&environment=qa").await;
    assert_eq!(summarize(&r), "qa-r2");
    assert_eq!(r.header("x-snapshot-revision"), Some("2"));
    assert_eq!(
        t.get("/v1/resolve?project=globex").await.status,
        200,
        "added project"
    );
}

#[tokio::test]
async fn the_file_is_noticed_without_being_asked() {
    let t = TestSidecar::start(Some(&snapshot(1, vec![project("acme", 1)]))).await;
    common::write_json(&t.snapshot_path, &snapshot(2, vec![project("acme", 2)]));
    t.wait_revision("acme", 2).await;
}

/// Sets the file's modification time, as a write within one tick of the
/// file system's coarse clock would leave it.
fn set_modified(path: &std::path::Path, at: SystemTime) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(at).unwrap();
}

fn modified(path: &std::path::Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[tokio::test]
async fn a_replace_at_the_same_size_and_time_is_noticed_by_its_inode() {
    // Long settled before the sidecar first looks: only the inode tells
    // the two files apart.
    let long_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
    let t = TestSidecar::start_with(Some(&snapshot(1, vec![project("acme", 1)])), |c| {
        let Source::File(file) = &c.source.kind else {
            unreachable!("a file config")
        };
        set_modified(&file.path, long_ago);
    })
    .await;
    let replacement = t.snapshot_path.with_extension("next");
    let body = serde_json::to_vec_pretty(&snapshot(2, vec![project("acme", 2)])).unwrap();
    std::fs::write(&replacement, &body).unwrap();
    assert_eq!(
        std::fs::metadata(&t.snapshot_path).unwrap().len(),
        body.len() as u64
    );
    set_modified(&replacement, long_ago);
    std::fs::rename(&replacement, &t.snapshot_path).unwrap();
    assert_eq!(modified(&t.snapshot_path), long_ago);
    t.wait_revision("acme", 2).await;
}

#[tokio::test]
async fn an_edit_in_place_in_the_same_tick_is_noticed_by_a_second_read() {
    let t = TestSidecar::start(Some(&snapshot(1, vec![project("acme", 1)]))).await;
    t.wait_revision("acme", 1).await;
    // Rewritten in place (the same inode), at the same size, and stamped
    // with the same time, as a second write in one tick of a file
    // system's clock: the poll after the first read reads it again.
    let first = modified(&t.snapshot_path);
    let body = serde_json::to_vec_pretty(&snapshot(2, vec![project("acme", 2)])).unwrap();
    assert_eq!(
        std::fs::metadata(&t.snapshot_path).unwrap().len(),
        body.len() as u64
    );
    std::fs::write(&t.snapshot_path, body).unwrap();
    set_modified(&t.snapshot_path, first);
    t.wait_revision("acme", 2).await;
}

#[tokio::test]
async fn projects_missing_from_the_file_are_removed() {
    let t = TestSidecar::start(Some(&snapshot(
        1,
        vec![project("acme", 1), project("globex", 1)],
    )))
    .await;
    t.write_snapshot(&snapshot(2, vec![project("acme", 1)]));
    common::eventually("globex removed", || async {
        t.sidecar.store().project("globex").is_none()
    })
    .await;
    assert_eq!(t.get("/v1/resolve?project=globex").await.status, 404);
    assert_eq!(t.get("/v1/resolve?project=acme").await.status, 200);
}

#[tokio::test]
async fn an_invalid_document_is_rejected_while_its_sibling_updates() {
    let t = TestSidecar::start(Some(&snapshot(
        1,
        vec![project("acme", 1), project("globex", 1)],
    )))
    .await;
    let mut bad = project("acme", 2);
    bad["environments"][1]["gateway_fallback"] = json!(true); // two fallbacks
    t.write_snapshot(&snapshot(2, vec![bad, project("globex", 2)]));
    t.wait_revision("globex", 2).await;
    let r = t.get("/v1/resolve?project=acme&environment=qa").await;
    assert_eq!(r.status, 200);
    assert_eq!(summarize(&r), "qa-r1", "last good revision keeps serving");
    assert_eq!(r.body["revision"], 1);
    let rejection = t.sidecar.store().rejection("acme").expect("rejection kept");
    assert_eq!(rejection.reason.as_str(), "gateway_fallback");
    assert_eq!(rejection.revision, Some(2));
    // A later valid revision is accepted and clears the rejection.
    t.write_snapshot(&snapshot(3, vec![project("acme", 3), project("globex", 2)]));
    t.wait_revision("acme", 3).await;
    assert!(t.sidecar.store().rejection("acme").is_none());
}

#[tokio::test]
async fn an_unreadable_document_is_rejected_alone() {
    let t = TestSidecar::start(Some(&snapshot(
        1,
        vec![project("acme", 1), project("globex", 1)],
    )))
    .await;
    let unreadable = json!({"id": "acme", "revision": 2, "environments": "oops"});
    t.write_snapshot(&snapshot(2, vec![unreadable, project("globex", 2)]));
    t.wait_revision("globex", 2).await;
    assert_eq!(t.sidecar.store().project("acme").unwrap().revision(), 1);
    assert_eq!(
        t.sidecar.store().rejection("acme").unwrap().reason.as_str(),
        "malformed"
    );
}

#[tokio::test]
async fn a_stale_revision_is_ignored() {
    let t = TestSidecar::start(Some(&snapshot(
        1,
        vec![project("acme", 5), project("globex", 1)],
    )))
    .await;
    t.write_snapshot(&snapshot(2, vec![project("acme", 4), project("globex", 2)]));
    t.wait_revision("globex", 2).await;
    let r = t.get("/v1/resolve?project=acme&environment=qa").await;
    assert_eq!(summarize(&r), "qa-r5");
    assert!(
        t.sidecar.store().rejection("acme").is_none(),
        "stale is not a rejection"
    );
}

#[tokio::test]
async fn an_equal_revision_changes_nothing() {
    let t = TestSidecar::start(Some(&snapshot(
        1,
        vec![project("acme", 5), project("globex", 1)],
    )))
    .await;
    let mut same_rev = project("acme", 5);
    same_rev["environments"][1]["pointers"] = json!({"prompts": {"summarize": "sneaky"}});
    t.write_snapshot(&snapshot(2, vec![same_rev, project("globex", 2)]));
    t.wait_revision("globex", 2).await;
    assert_eq!(
        summarize(&t.get("/v1/resolve?project=acme&environment=qa").await),
        "qa-r5"
    );
}

#[tokio::test]
async fn a_slug_change_is_refused() {
    let t = TestSidecar::start(Some(&snapshot(
        1,
        vec![project("acme", 1), project("globex", 1)],
    )))
    .await;
    let mut renamed = project("acme", 2);
    renamed["environments"][1]["slug"] = json!("quality"); // acme_qa was "qa"
    t.write_snapshot(&snapshot(2, vec![renamed, project("globex", 2)]));
    t.wait_revision("globex", 2).await;
    assert_eq!(
        t.sidecar.store().rejection("acme").unwrap().reason.as_str(),
        "slug_changed"
    );
    let r = t.get("/v1/resolve?project=acme&environment=qa").await;
    assert_eq!(r.body["outcome"], "exact");
    assert_eq!(summarize(&r), "qa-r1");
}

#[tokio::test]
async fn a_malformed_file_changes_nothing() {
    let t = TestSidecar::start(Some(&snapshot(1, vec![project("acme", 1)]))).await;
    for garbage in [
        &b"{ this is not json"[..],
        b"",
        br#"{"revision": 2, "projects": [{"no": "id"}]}"#,
        b"[]",
    ] {
        let since = SystemTime::now();
        t.write_raw(garbage);
        t.wait_source_read_after(since).await;
        let r = t.get("/v1/resolve?project=acme&environment=qa").await;
        assert_eq!(r.status, 200);
        assert_eq!(summarize(&r), "qa-r1");
        assert!(t.sidecar.status().events().last_error.is_some());
    }
    assert_eq!(t.get_admin("/readyz").await.status, 200);
}

#[tokio::test]
async fn not_ready_before_any_snapshot_then_ready_when_the_file_appears() {
    let t = TestSidecar::start(None).await;
    let r = t.get("/v1/resolve?project=acme").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "not_ready");
    let r = t.get_admin("/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "not_ready");
    assert_eq!(t.get("/v1/projects").await.status, 503);
    let batch = t
        .post("/v1/resolve/batch", r#"{"requests":[{"project":"acme"}]}"#)
        .await;
    assert_eq!(batch.body["results"][0]["error"]["code"], "not_ready");
    assert_eq!(
        t.get_admin("/healthz").await.status,
        200,
        "alive though not ready"
    );
    // Input errors are still input errors.
    assert_eq!(t.get("/v1/resolve?project=a%20b").await.status, 400);

    t.write_snapshot(&snapshot(1, vec![project("acme", 1)]));
    t.wait_ready().await;
    assert_eq!(t.get("/v1/resolve?project=acme").await.status, 200);
}

#[tokio::test]
async fn a_file_with_only_invalid_projects_still_counts_as_loaded() {
    let mut bad = project("acme", 1);
    bad["environments"] = json!([]);
    let t = TestSidecar::start(Some(&snapshot(1, vec![bad]))).await;
    assert_eq!(
        t.get("/v1/resolve?project=acme").await.error_code(),
        "unknown_project"
    );
    let r = t.get("/v1/projects/acme").await;
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("environment_count"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn a_file_removing_most_projects_is_refused_whole() {
    let many: Vec<_> = (0..12).map(|i| project(&format!("p{i}"), 1)).collect();
    let t = TestSidecar::start(Some(&snapshot(1, many))).await;
    let mut few: Vec<_> = (0..3).map(|i| project(&format!("p{i}"), 1)).collect();
    few[0] = project("p0", 2);
    let since = SystemTime::now();
    t.write_snapshot(&snapshot(2, few));
    t.wait_source_read_after(since).await;
    assert_eq!(t.sidecar.store().project_count(), 12, "nothing removed");
    assert_eq!(
        t.sidecar.store().project("p0").unwrap().revision(),
        1,
        "nothing updated either"
    );
    let err = t.sidecar.status().events().last_error.unwrap();
    assert!(
        err.message.contains("refusing to remove 9 of 12"),
        "{}",
        err.message
    );
    // Written within a second of its read, the file is read again at the
    // next poll: the same bytes, so nothing is applied, or refused, twice.
    let same_again = "env_sidecar_sync_requests_total{kind=\"snapshot\",result=\"not_modified\"}";
    common::eventually("the file read again", || async {
        t.metric(same_again).await >= 1.0
    })
    .await;
    let m = t.get_admin("/metrics").await.text;
    assert!(
        m.contains("env_sidecar_updates_refused_total{reason=\"mass_removal\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn an_unchanged_file_stays_fresh_for_staleness() {
    let clock = env_sidecar::model::clock::ManualClock::new(SystemTime::now());
    let options = env_sidecar::app::Options {
        clock: std::sync::Arc::new(clock.clone()),
        ..common::test_options()
    };
    let max = std::time::Duration::from_secs(30);
    let t = TestSidecar::start_configured(
        Some(&snapshot(1, vec![project("acme", 1)])),
        |c| c.readiness.max_staleness = max,
        options,
    )
    .await;
    // Several staleness windows pass (by the sidecar's clock) without any
    // change to the file: each check of the unchanged file counts as
    // fresh contact, so the sidecar stays ready.
    for _ in 0..4 {
        clock.advance(max * 2 / 3);
        let now = clock.now();
        common::eventually("a check of the unchanged file", || async {
            t.sidecar.status().last_contact().is_some_and(|at| {
                // Millisecond resolution.
                at + std::time::Duration::from_millis(1) >= now
            })
        })
        .await;
        assert_eq!(t.get_admin("/readyz").await.status, 200);
    }
    // Without contact it does go stale: the clock moves past max_staleness
    // while the file is unreadable.
    std::fs::remove_file(&t.snapshot_path).unwrap();
    t.wait_error_containing("cannot read").await;
    clock.advance(max * 2);
    assert_eq!(t.get_admin("/readyz").await.status, 503);
}
