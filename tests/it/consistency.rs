//! Consistency under concurrency: readers hammer resolve while the writer
//! applies thousands of updates in which every pointer value carries its
//! document's revision, interleaved with documents that must be rejected.
//! No answer may mix revisions or come from a rejected document. In
//! process, and over real HTTP.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use env_sidecar::model::origin::{MassRemoval, Origin};
use env_sidecar::model::wire::{Incoming, SnapshotBody, WireProject};
use env_sidecar::store::{Contents, Store, Update};
use serde_json::{json, Value};

const PROJECTS: usize = 20;
const SLUGS: [&str; 5] = ["prod", "staging", "qa", "canary", "nope"];

/// A project whose every pointer value is tagged with `tag` (`r<revision>`
/// for good documents, `BAD` for ones that break a rule).
fn tagged(i: usize, revision: u64, bad: bool) -> Value {
    let tag = if bad {
        "BAD".to_string()
    } else {
        format!("r{revision}")
    };
    let mut doc = common::project(&format!("p{i}"), revision);
    for env in doc["environments"].as_array_mut().unwrap() {
        env["pointers"] = json!({
            "prompts": {"summarize": tag, "classify": tag},
            "routing_rules": {"default": tag},
            "providers": {"openai": tag, "anthropic": tag}
        });
    }
    if bad {
        doc["environments"][0]["color"] = json!("not-a-color");
    }
    doc
}

/// Asserts one answer is internally consistent; returns its revision.
fn check(body: &Value, header_revision: Option<&str>) -> u64 {
    let revision = body["revision"].as_u64().expect("revision");
    let want = format!("r{revision}");
    for kind in ["prompts", "routing_rules", "providers"] {
        for (key, value) in body["pointers"][kind].as_object().expect("map") {
            assert_eq!(
                value.as_str(),
                Some(want.as_str()),
                "{kind}.{key} in an answer of revision {revision}: {body}"
            );
        }
    }
    if let Some(h) = header_revision {
        assert_eq!(h, revision.to_string(), "header and body disagree");
    }
    revision
}

#[test]
fn in_process_readers_never_see_mixed_or_rejected_revisions() {
    let (store, mut writer) = Store::new(0.5);
    let initial = (0..PROJECTS)
        .map(|i| {
            Incoming::document(serde_json::from_value::<WireProject>(tagged(i, 1, false)).unwrap())
        })
        .collect();
    writer
        .apply(
            Update::new(
                Origin::Snapshot,
                Contents::Snapshot(SnapshotBody {
                    cursor: env_sidecar::model::cursor::Cursor::Revision(1),
                    projects: initial,
                    ..SnapshotBody::default()
                }),
            ),
            SystemTime::now(),
        )
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (store, done, checked) = (store.clone(), done.clone(), checked.clone());
            std::thread::spawn(move || {
                let mut n: u64 = r;
                let mut last_seen = [0u64; PROJECTS];
                while !done.load(Ordering::Relaxed) {
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let i = (n >> 33) as usize % PROJECTS;
                    let slug = SLUGS[(n >> 20) as usize % SLUGS.len()];
                    let answer = store
                        .resolve_with(&format!("p{i}"), Some(slug), false, |a| a.owned())
                        .unwrap();
                    let body: Value = serde_json::from_slice(&answer.body()).unwrap();
                    let revision = check(&body, answer.revision.to_str().ok());
                    assert!(
                        revision >= last_seen[i],
                        "p{i} went back from {} to {revision}",
                        last_seen[i]
                    );
                    last_seen[i] = revision;
                    checked.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let mut revisions = [1u64; PROJECTS];
    for n in 0..5000usize {
        let i = (n * 7) % PROJECTS;
        revisions[i] += 1;
        let bad = n % 5 == 0;
        let doc = serde_json::from_value::<WireProject>(tagged(i, revisions[i], bad)).unwrap();
        writer
            .apply(
                Update::new(
                    Origin::Refresh(MassRemoval::Guarded),
                    Contents::Project {
                        id: format!("p{i}"),
                        document: Some(Incoming::document(doc)),
                    },
                ),
                SystemTime::now(),
            )
            .unwrap();
        if bad {
            revisions[i] -= 1; // the rejected revision never served; reuse the number
        }
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader found an inconsistent answer");
    }
    assert!(checked.load(Ordering::Relaxed) > 1000, "readers ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_answers_never_mix_revisions() {
    let initial: Vec<Value> = (0..PROJECTS).map(|i| tagged(i, 1, false)).collect();
    let sim = common::simulator(initial, None).await;
    let t = Arc::new(common::TestSidecar::follow(&sim.url(), |_| {}).await);
    t.wait_ready().await;

    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (t, done) = (t.clone(), done.clone());
            tokio::spawn(async move {
                let mut checked = 0u64;
                let mut n = r as usize;
                while !done.load(Ordering::Relaxed) {
                    n = n.wrapping_mul(31).wrapping_add(17);
                    let path = format!(
                        "/v1/resolve?project=p{}&environment={}",
                        n % PROJECTS,
                        SLUGS[n % SLUGS.len()]
                    );
                    let reply = t.get(&path).await;
                    assert_eq!(reply.status, 200, "{}", reply.text);
                    check(&reply.body, reply.header("x-snapshot-revision"));
                    checked += 1;
                }
                checked
            })
        })
        .collect();

    let mut revisions = [1u64; PROJECTS];
    for n in 0..600usize {
        let i = (n * 3) % PROJECTS;
        let bad = n % 4 == 0;
        if !bad {
            revisions[i] += 1;
        }
        let revision = if bad { revisions[i] + 1 } else { revisions[i] };
        sim.publish([tagged(i, revision, bad)]);
        if n % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Let the sidecar catch up with the last published revisions.
    for (i, r) in revisions.iter().enumerate() {
        t.wait_revision(&format!("p{i}"), *r).await;
    }
    done.store(true, Ordering::Relaxed);
    let mut total = 0;
    for r in readers {
        total += r.await.expect("a reader found an inconsistent answer");
    }
    assert!(total > 100, "readers ran ({total} answers checked)");
}
