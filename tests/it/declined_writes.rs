//! A document the sidecar declines for a reason its writer must fix
//! shows up, with `revision_reused`, in the project's rejection (what
//! `/admin/status` and the introspection endpoint show), the log and
//! `env_sidecar_project_rejections_total`: other content under the served
//! revision, a signed removal at the served revision, a re-signed copy
//! signed at the served copy's instant. The same document again, however
//! it is spelt, stays quiet; an older revision is stale, counted apart.

use crate::common;

use std::path::Path;
use std::time::SystemTime;

use common::signing::{ago, requiring, TestKey};
use common::{project, snapshot, write_json, TestSidecar};
use env_sidecar::config::Config;
use serde_json::{json, Value};

const REUSED: &str = "env_sidecar_project_rejections_total{reason=\"revision_reused\"}";

async fn start(dir: &Path, initial: &Value, tweak: impl FnOnce(&mut Config)) -> TestSidecar {
    let mut config = common::file_config(dir);
    write_json(&dir.join("snapshot.json"), initial);
    tweak(&mut config);
    TestSidecar::launch_ready(config, None).await
}

/// Writes `body` as the snapshot and waits until the sidecar has read it.
async fn replace(t: &TestSidecar, body: &Value) {
    let since = SystemTime::now();
    t.write_snapshot(body);
    t.wait_source_read_after(since).await;
}

fn rejection(t: &TestSidecar, id: &str) -> Option<(String, Option<u64>, String)> {
    t.sidecar
        .store()
        .rejection(id)
        .map(|r| (r.reason.as_str().to_owned(), r.revision, r.message.clone()))
}

#[tokio::test]
async fn other_content_under_the_served_revision_is_refused_and_the_same_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path(), &snapshot(1, vec![project("acme", 3)]), |_| {}).await;

    // The same document, spelt otherwise (environments in another order,
    // keys reordered, spaces): a no-op, nothing recorded.
    let mut respelt = project("acme", 3);
    respelt["environments"].as_array_mut().unwrap().reverse();
    let text = serde_json::to_string_pretty(&snapshot(2, vec![respelt])).unwrap();
    let since = SystemTime::now();
    t.write_raw(text.as_bytes());
    t.wait_source_read_after(since).await;
    replace(&t, &snapshot(3, vec![project("acme", 3)])).await;
    assert_eq!(rejection(&t, "acme"), None);
    assert_eq!(t.metric(REUSED).await, 0.0);

    // A regenerated field under the same revision.
    let mut changed = project("acme", 3);
    changed["environments"][1]["pointers"]["prompts"]["summarize"] = json!("qa-other");
    replace(&t, &snapshot(4, vec![changed])).await;
    t.wait_rejection_at("acme", "revision_reused", Some(3))
        .await;
    let (_, _, message) = rejection(&t, "acme").unwrap();
    assert!(message.contains("needs a higher revision"), "{message}");
    assert_eq!(
        t.served("acme", "qa").await,
        "qa-r3",
        "the served document stays"
    );
    assert_eq!(t.metric(REUSED).await, 1.0);
    let status = t.get_admin("/admin/status").await.body;
    assert!(status.to_string().contains("revision_reused"), "{status}");
    // A higher revision is accepted and clears it.
    replace(&t, &snapshot(5, vec![project("acme", 4)])).await;
    t.wait_revision("acme", 4).await;
    assert_eq!(rejection(&t, "acme"), None);
}

#[tokio::test]
async fn an_older_revision_is_stale_not_a_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path(), &snapshot(1, vec![project("acme", 3)]), |_| {}).await;
    replace(&t, &snapshot(2, vec![project("acme", 2)])).await;
    assert_eq!(rejection(&t, "acme"), None);
    // The source holds an older revision than this node serves.
    assert_eq!(
        t.sidecar.store().all_ahead(),
        vec![("acme".to_owned(), 3, 2)]
    );
    assert_eq!(t.metric(REUSED).await, 0.0);
    assert_eq!(t.served("acme", "qa").await, "qa-r3");
}

#[tokio::test]
async fn signed_writes_under_the_served_revision_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::new(dir.path(), "cp-2026");
    let signed_at = ago(60);
    let served = key.sign_at(&project("acme", 3), signed_at, None);
    let t = start(dir.path(), &snapshot(1, vec![served.clone()]), |c| {
        requiring(c, &[&key.public_file], None)
    })
    .await;

    // A tombstone at the served revision.
    replace(&t, &snapshot(2, vec![key.tombstone("acme", 3)])).await;
    t.wait_rejection_at("acme", "revision_reused", Some(3))
        .await;
    let (_, _, message) = rejection(&t, "acme").unwrap();
    assert!(
        message.contains("a tombstone's revision is above"),
        "{message}"
    );
    assert_eq!(t.served("acme", "qa").await, "qa-r3");

    // A re-signed copy with other content (a regenerated published_at).
    let mut regenerated = project("acme", 3);
    regenerated["published_at"] = json!("2026-12-01T00:00:00Z");
    replace(&t, &snapshot(3, vec![key.sign(&regenerated)])).await;
    common::eventually("the reseal refused for its content", || async {
        rejection(&t, "acme").is_some_and(|(_, _, m)| m.contains("other content"))
    })
    .await;

    // The same document signed again at the served copy's very instant
    // (another envelope: the payload spelt otherwise).
    let mut respelt = project("acme", 3);
    respelt["environments"].as_array_mut().unwrap().reverse();
    replace(
        &t,
        &snapshot(4, vec![key.sign_at(&respelt, signed_at, None)]),
    )
    .await;
    common::eventually("the reseal refused for its instant", || async {
        rejection(&t, "acme").is_some_and(|(_, _, m)| m.contains("same instant"))
    })
    .await;
    assert_eq!(t.metric(REUSED).await, 3.0);

    // Signed later: a reseal, taken.
    replace(&t, &snapshot(5, vec![key.sign(&project("acme", 3))])).await;
    common::eventually("the reseal taken", || async {
        t.sidecar
            .store()
            .project("acme")
            .and_then(|p| p.signature().map(|s| s.signed_at))
            .is_some_and(|at| at > signed_at)
    })
    .await;
    // The first envelope again, signed before the one now served: ignored,
    // and not taken for a source behind this node (it holds the served
    // revision).
    replace(&t, &snapshot(6, vec![served])).await;
    let kept = t.sidecar.store().project("acme").unwrap();
    assert!(kept.signature().is_some_and(|s| s.signed_at > signed_at));
    assert_eq!(t.sidecar.store().all_ahead(), Vec::new());
}
