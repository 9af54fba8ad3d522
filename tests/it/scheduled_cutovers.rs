//! Scheduled cutovers: overlays applied when `at` passes, driven by an
//! injected clock (no sleeps) and once end to end with the real clock.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{project, snapshot, TestSidecar};
use env_sidecar::app::Options;
use env_sidecar::model::clock::ManualClock;
use env_sidecar::model::timestamp::format_rfc3339;
use serde_json::{json, Value};

/// 2030-01-01T00:00:00Z: the tests' "now" at start.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

fn at(offset_secs: u64) -> String {
    format_rfc3339(t0() + Duration::from_secs(offset_secs))
}

/// `project(id, revision)` with scheduled entries on prod.
fn scheduled(id: &str, revision: u64, entries: Value) -> Value {
    let mut doc = project(id, revision);
    doc["environments"][3]["pointers"] = json!({
        "prompts": {"summarize": format!("prod-r{revision}"), "classify": "4"},
        "providers": {"openai": "act-1"}
    });
    doc["environments"][3]["scheduled"] = entries;
    doc
}

struct Fixture {
    t: TestSidecar,
    clock: ManualClock,
}

async fn start(initial: Value) -> Fixture {
    let clock = ManualClock::new(t0());
    let options = Options {
        clock: Arc::new(clock.clone()),
        ..common::test_options()
    };
    let t = TestSidecar::start_with_options(&initial, options).await;
    Fixture { t, clock }
}

impl Fixture {
    async fn prod(&self, id: &str) -> Value {
        self.t
            .get(&format!("/v1/resolve?project={id}&environment=prod"))
            .await
            .body["pointers"]
            .clone()
    }

    /// Waits until `id` has a recorded rejection. (Status event times come
    /// from the manual clock, so waiting on them would not work here.)
    async fn rejected(&self, id: &str) {
        common::eventually("a rejection", || async {
            self.t.sidecar.store().rejection(id).is_some()
        })
        .await;
    }

    async fn advance_to(&self, offset_secs: u64) -> usize {
        self.clock.set(t0() + Duration::from_secs(offset_secs));
        self.t.sidecar.tick_schedules().await
    }
}

#[tokio::test]
async fn a_change_takes_effect_when_its_time_comes() {
    let f = start(snapshot(
        1,
        vec![scheduled(
            "acme",
            1,
            json!([{"at": at(60), "pointers": {"prompts": {"summarize": "18"}}}]),
        )],
    ))
    .await;
    assert_eq!(f.prod("acme").await["prompts"]["summarize"], "prod-r1");
    let status = f.t.get_admin("/admin/status").await;
    assert_eq!(
        status.body["next_scheduled_change"],
        json!({"project": "acme", "at": at(60)})
    );
    assert_eq!(f.advance_to(59).await, 0);
    assert_eq!(
        f.prod("acme").await["prompts"]["summarize"],
        "prod-r1",
        "not before its time"
    );
    assert_eq!(f.advance_to(60).await, 1);
    let r = f.t.get("/v1/resolve?project=acme&environment=prod").await;
    assert_eq!(r.body["pointers"]["prompts"]["summarize"], "18");
    assert_eq!(
        r.body["revision"], 1,
        "same accepted revision, overlay applied"
    );
    // The fallback answer switches too (prod is the fallback).
    assert_eq!(
        f.t.get("/v1/resolve?project=acme").await.body["pointers"]["prompts"]["summarize"],
        "18"
    );
    let view = f.t.get("/v1/projects/acme").await;
    assert_eq!(view.body["environments"][0]["scheduled"], json!([]));
    assert_eq!(
        f.t.get_admin("/admin/status").await.body["next_scheduled_change"],
        json!(null)
    );
    let m = f.t.get_admin("/metrics").await.text;
    assert!(
        m.contains("env_sidecar_scheduled_changes_applied_total 1"),
        "{m}"
    );
}

#[tokio::test]
async fn later_entries_win_and_unmentioned_keys_keep_their_values() {
    let f = start(snapshot(1, vec![scheduled("acme", 1, json!([
        {"at": at(20), "pointers": {"prompts": {"summarize": "b"}}},
        {"at": at(10), "pointers": {"prompts": {"summarize": "a"}, "providers": {"openai": "act-2"}}},
        {"at": at(20), "pointers": {"routing_rules": {"default": "rel-9"}}}
    ]))])).await;
    assert_eq!(f.advance_to(10).await, 1);
    let p = f.prod("acme").await;
    assert_eq!(
        p,
        json!({"prompts": {"summarize": "a", "classify": "4"}, "routing_rules": {}, "providers": {"openai": "act-2"}})
    );
    assert_eq!(f.advance_to(25).await, 2);
    let p = f.prod("acme").await;
    assert_eq!(
        p,
        json!({"prompts": {"summarize": "b", "classify": "4"}, "routing_rules": {"default": "rel-9"}, "providers": {"openai": "act-2"}})
    );
}

#[tokio::test]
async fn entries_already_due_on_arrival_are_in_effect_at_once() {
    let f = start(snapshot(1, vec![project("acme", 1)])).await;
    f.clock.set(t0() + Duration::from_secs(100));
    let doc = scheduled(
        "acme",
        2,
        json!([
            {"at": at(50), "pointers": {"prompts": {"summarize": "past"}}},
            {"at": at(200), "pointers": {"prompts": {"summarize": "future"}}}
        ]),
    );
    f.t.write_snapshot(&snapshot(2, vec![doc]));
    f.t.wait_revision("acme", 2).await;
    assert_eq!(f.prod("acme").await["prompts"]["summarize"], "past");
    assert_eq!(f.advance_to(200).await, 1);
    assert_eq!(f.prod("acme").await["prompts"]["summarize"], "future");
}

#[tokio::test]
async fn a_newer_document_replaces_the_whole_schedule() {
    let f = start(snapshot(
        1,
        vec![scheduled(
            "acme",
            1,
            json!([{"at": at(60), "pointers": {"prompts": {"summarize": "old-plan"}}}]),
        )],
    ))
    .await;
    let newer = scheduled(
        "acme",
        2,
        json!([{"at": at(120), "pointers": {"prompts": {"summarize": "new-plan"}}}]),
    );
    f.t.write_snapshot(&snapshot(2, vec![newer]));
    f.t.wait_revision("acme", 2).await;
    assert_eq!(f.advance_to(60).await, 0, "the replaced entry is gone");
    assert_eq!(f.prod("acme").await["prompts"]["summarize"], "prod-r2");
    assert_eq!(f.advance_to(120).await, 1);
    assert_eq!(f.prod("acme").await["prompts"]["summarize"], "new-plan");
}

#[tokio::test]
async fn a_rejected_document_leaves_the_old_schedule_in_place() {
    let f = start(snapshot(
        1,
        vec![scheduled(
            "acme",
            1,
            json!([{"at": at(60), "pointers": {"prompts": {"summarize": "kept"}}}]),
        )],
    ))
    .await;
    let mut bad = scheduled(
        "acme",
        2,
        json!([{"at": at(30), "pointers": {"prompts": {"summarize": "never"}}}]),
    );
    bad["environments"][0]["color"] = json!("not-a-color");
    f.t.write_snapshot(&snapshot(2, vec![bad]));
    f.rejected("acme").await;
    assert_eq!(
        f.t.sidecar
            .store()
            .rejection("acme")
            .unwrap()
            .reason
            .as_str(),
        "invalid_color"
    );
    assert_eq!(f.advance_to(30).await, 0);
    assert_eq!(f.advance_to(60).await, 1);
    assert_eq!(f.prod("acme").await["prompts"]["summarize"], "kept");
}

#[tokio::test]
async fn an_overlay_that_breaks_the_rules_rejects_the_document() {
    let f = start(snapshot(1, vec![project("acme", 1), project("globex", 1)])).await;
    let unknown_kind = scheduled(
        "acme",
        2,
        json!([{"at": at(10), "pointers": {"models": {"gpt": "4"}}}]),
    );
    let too_long = scheduled(
        "globex",
        2,
        json!([{"at": at(10), "pointers": {"prompts": {"summarize": "x".repeat(129)}}}]),
    );
    f.t.write_snapshot(&snapshot(2, vec![unknown_kind, too_long]));
    f.rejected("acme").await;
    f.rejected("globex").await;
    assert_eq!(
        f.t.sidecar
            .store()
            .rejection("acme")
            .unwrap()
            .reason
            .as_str(),
        "invalid_schedule"
    );
    assert_eq!(
        f.t.sidecar
            .store()
            .rejection("globex")
            .unwrap()
            .reason
            .as_str(),
        "invalid_pointer"
    );
    assert_eq!(f.t.sidecar.store().project("acme").unwrap().revision(), 1);
}

#[tokio::test]
async fn overlays_never_resurrect_pending_releases() {
    let mut doc = scheduled(
        "acme",
        1,
        json!([{"at": at(10), "pointers": {"providers": {"openai": "act-2"}}}]),
    );
    doc["environments"][3]["pending"] =
        json!([{"kind": "prompts", "key": "summarize", "version": "PENDING"}]);
    let f = start(snapshot(1, vec![doc])).await;
    assert_eq!(f.advance_to(10).await, 1);
    let p = f.prod("acme").await;
    assert_eq!(p["prompts"]["summarize"], "prod-r1");
    assert_eq!(p["providers"]["openai"], "act-2");
}

#[tokio::test]
async fn removing_a_project_drops_its_schedule() {
    let f = start(snapshot(
        1,
        vec![
            scheduled(
                "acme",
                1,
                json!([{"at": at(60), "pointers": {"prompts": {"summarize": "x"}}}]),
            ),
            project("globex", 1),
        ],
    ))
    .await;
    f.t.write_snapshot(&snapshot(2, vec![project("globex", 1)]));
    common::eventually("acme removed", || async {
        f.t.sidecar.store().project("acme").is_none()
    })
    .await;
    assert_eq!(f.advance_to(60).await, 0);
    assert_eq!(f.t.get("/v1/resolve?project=acme").await.status, 404);
}

#[tokio::test]
async fn a_backwards_clock_never_unapplies_a_change() {
    let f = start(snapshot(
        1,
        vec![scheduled(
            "acme",
            1,
            json!([
                {"at": at(60), "pointers": {"prompts": {"summarize": "first"}}},
                {"at": at(120), "pointers": {"prompts": {"summarize": "second"}}}
            ]),
        )],
    ))
    .await;
    assert_eq!(f.advance_to(60).await, 1);
    assert_eq!(f.advance_to(30).await, 0, "the clock jumped back");
    assert_eq!(f.prod("acme").await["prompts"]["summarize"], "first");
    // The same revision arriving again is a no-op: still applied.
    f.t.write_snapshot(&snapshot(2, vec![scheduled("acme", 1, json!([]))]));
    common::eventually("the file read again", || async {
        f.t.sidecar.store().cursor() == env_sidecar::model::cursor::Cursor::Revision(2)
    })
    .await;
    assert_eq!(f.prod("acme").await["prompts"]["summarize"], "first");
    assert_eq!(f.advance_to(120).await, 1);
    assert_eq!(f.prod("acme").await["prompts"]["summarize"], "second");
}

#[tokio::test]
async fn hundreds_of_changes_due_at_the_same_instant_all_apply() {
    let projects: Vec<Value> = (0..300)
        .map(|i| {
            scheduled(
                &format!("p{i}"),
                1,
                json!([{"at": at(60), "pointers": {"prompts": {"summarize": format!("cut-{i}")}}}]),
            )
        })
        .collect();
    let f = start(snapshot(1, projects)).await;
    // How long it takes is a benchmark (`cargo bench --bench store -- scheduled`).
    assert_eq!(f.advance_to(60).await, 300);
    for i in [0, 150, 299] {
        assert_eq!(
            f.prod(&format!("p{i}")).await["prompts"]["summarize"],
            format!("cut-{i}")
        );
    }
}

#[tokio::test]
async fn end_to_end_with_the_real_clock() {
    let due = SystemTime::now() + Duration::from_millis(1500);
    let doc = scheduled(
        "acme",
        1,
        json!([{"at": format_rfc3339(due), "pointers": {"prompts": {"summarize": "cutover"}}}]),
    );
    let t = TestSidecar::start(Some(&snapshot(1, vec![doc]))).await;
    let url = "/v1/resolve?project=acme&environment=prod";
    assert_eq!(
        t.get(url).await.body["pointers"]["prompts"]["summarize"],
        "prod-r1"
    );
    let seen = loop {
        let r = t.get(url).await;
        let now = SystemTime::now();
        if r.body["pointers"]["prompts"]["summarize"] == "cutover" {
            break now;
        }
        assert!(
            now < due + Duration::from_secs(5),
            "not applied 5 s after it was due"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    // Never early (millisecond rounding of the timestamp aside).
    assert!(
        seen + Duration::from_millis(1) >= due,
        "applied before it was due"
    );
}
