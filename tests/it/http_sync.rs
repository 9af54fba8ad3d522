//! Following a real control plane (the simulator, over HTTP): watch and
//! poll modes, removals, 410, the bearer token, every fault kind, no busy
//! loops, and the blast-radius guard.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{eventually, project, simulator, TestSidecar};
use env_sidecar::config::secret::Env;
use env_sidecar::config::SyncMode;
use env_sidecar::sim::simulator::{Faults, Simulator};

async fn synced(
    sim: &Simulator,
    tweak: impl FnOnce(&mut env_sidecar::config::Config),
) -> TestSidecar {
    let t = TestSidecar::follow(&sim.url(), tweak).await;
    t.wait_ready().await;
    t
}

/// Turns a fault on and waits until the control plane has actually served
/// a faulted request (so an in-flight long poll cannot slip a change past).
async fn fault(sim: &Simulator, faults: Faults) {
    let before = sim.counters().faulted.load(Ordering::SeqCst);
    sim.set_faults(faults);
    eventually("a faulted request", || async {
        sim.counters().faulted.load(Ordering::SeqCst) > before
    })
    .await;
}

/// Asserts the sidecar keeps serving `expected` for a while.
async fn keeps_serving(t: &TestSidecar, expected: &str) {
    for _ in 0..10 {
        assert_eq!(t.served("acme", "qa").await, expected);
        assert_eq!(t.get_admin("/readyz").await.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn watch_mode_serves_a_published_change() {
    let sim = simulator(vec![project("acme", 1)], None).await;
    let t = synced(&sim, |_| {}).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
    sim.publish([project("acme", 2)]);
    t.wait_revision("acme", 2).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r2");
    assert_eq!(
        t.sidecar.store().cursor(),
        env_sidecar::model::cursor::Cursor::Revision(sim.revision())
    );
}

#[tokio::test]
async fn watch_mode_follows_additions_and_removals() {
    let sim = simulator(vec![project("acme", 1), project("globex", 1)], None).await;
    let t = synced(&sim, |_| {}).await;
    sim.publish([project("initech", 1)]);
    t.wait_revision("initech", 1).await;
    sim.remove(["globex"]);
    eventually("globex removed", || async {
        t.sidecar.store().project("globex").is_none()
    })
    .await;
    assert_eq!(t.get("/v1/resolve?project=globex").await.status, 404);
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
}

#[tokio::test]
async fn a_410_leads_to_a_fresh_snapshot() {
    let sim = simulator(vec![project("acme", 1)], None).await;
    let t = synced(&sim, |_| {}).await;
    let snapshots = sim.counters().snapshot.load(Ordering::SeqCst);
    fault(
        &sim,
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
    )
    .await;
    sim.publish([project("acme", 2)]);
    sim.compact(); // the sidecar's cursor is now older than the change log
    sim.set_faults(Faults::default());
    t.wait_revision("acme", 2).await;
    assert!(
        sim.counters().gone.load(Ordering::SeqCst) >= 1,
        "the control plane answered 410"
    );
    assert!(
        sim.counters().snapshot.load(Ordering::SeqCst) > snapshots,
        "a new full snapshot was taken"
    );
}

#[tokio::test]
async fn poll_mode_sends_if_none_match_and_handles_304() {
    let sim = simulator(vec![project("acme", 1)], None).await;
    let t = synced(&sim, |c| common::http_mut(c).mode = SyncMode::Poll).await;
    eventually("a 304", || async {
        sim.counters().not_modified.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(
        sim.last_if_none_match(),
        Some(format!("\"{}\"", sim.revision()))
    );
    assert_eq!(
        sim.counters().changes.load(Ordering::SeqCst),
        0,
        "poll mode never long-polls"
    );
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
    sim.publish([project("acme", 2)]);
    t.wait_revision("acme", 2).await;
}

#[tokio::test]
async fn the_bearer_token_is_sent_on_every_request() {
    let sim = simulator(vec![project("acme", 1)], Some("s3cret-token")).await;
    let env = Env::from_pairs([("CP_TOKEN", "s3cret-token")]);
    let t = TestSidecar::follow_with_env(
        &sim.url(),
        |c| common::http_mut(c).token_env = "CP_TOKEN".into(),
        env,
    )
    .await;
    t.wait_ready().await;
    sim.publish([project("acme", 2)]);
    t.wait_revision("acme", 2).await;
    assert_eq!(
        sim.last_authorization().as_deref(),
        Some("Bearer s3cret-token")
    );
    assert_eq!(sim.counters().unauthorized.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_wrong_token_never_loads_anything() {
    let sim = simulator(vec![project("acme", 1)], Some("s3cret-token")).await;
    let env = Env::from_pairs([("CP_TOKEN", "not-it")]);
    let t = TestSidecar::follow_with_env(
        &sim.url(),
        |c| common::http_mut(c).token_env = "CP_TOKEN".into(),
        env,
    )
    .await;
    // The sync's own error (the node's report is refused too, and may be
    // the first 401 the control plane counts).
    t.wait_error_containing("401").await;
    eventually("401s", || async {
        sim.counters().unauthorized.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(t.get_admin("/readyz").await.status, 503);
    let err = t
        .sidecar
        .status()
        .events()
        .last_error
        .expect("error recorded");
    assert!(err.message.contains("401"), "{}", err.message);
    assert!(
        !err.message.contains("not-it"),
        "the token never appears in messages"
    );
}

#[tokio::test]
async fn error_statuses_keep_the_last_good_snapshot_and_recover() {
    let sim = simulator(vec![project("acme", 1)], None).await;
    let t = synced(&sim, |_| {}).await;
    fault(
        &sim,
        Faults {
            error_rate: 1.0,
            error_status: 500,
            ..Faults::default()
        },
    )
    .await;
    sim.publish([project("acme", 2)]);
    keeps_serving(&t, "qa-r1").await;
    assert!(t
        .sidecar
        .status()
        .events()
        .last_error
        .unwrap()
        .message
        .contains("500"));
    sim.set_faults(Faults::default());
    t.wait_revision("acme", 2).await;
}

#[tokio::test]
async fn malformed_bodies_keep_the_last_good_snapshot_and_recover() {
    let sim = simulator(vec![project("acme", 1)], None).await;
    let t = synced(&sim, |_| {}).await;
    fault(
        &sim,
        Faults {
            malformed_rate: 1.0,
            ..Faults::default()
        },
    )
    .await;
    sim.publish([project("acme", 2)]);
    keeps_serving(&t, "qa-r1").await;
    sim.set_faults(Faults::default());
    t.wait_revision("acme", 2).await;
}

#[tokio::test]
async fn slow_and_hanging_answers_time_out_and_recover() {
    let sim = simulator(vec![project("acme", 1)], None).await;
    let t = synced(&sim, |c| {
        common::http_mut(c).timing.request_timeout = Duration::from_millis(300);
        common::http_mut(c).timing.long_poll_wait = Duration::from_millis(200);
    })
    .await;
    fault(
        &sim,
        Faults {
            hang_rate: 1.0,
            ..Faults::default()
        },
    )
    .await;
    sim.publish([project("acme", 2)]);
    t.wait_error_containing("timed out").await;
    keeps_serving(&t, "qa-r1").await;
    // Slow but within the timeout is fine.
    sim.set_faults(Faults {
        latency: Duration::from_millis(100),
        ..Faults::default()
    });
    t.wait_revision("acme", 2).await;
}

#[tokio::test]
async fn a_control_plane_that_goes_down_is_waited_out() {
    let sim = simulator(vec![project("acme", 1)], None).await;
    let t = synced(&sim, |_| {}).await;
    sim.go_down(Duration::from_millis(1500));
    t.wait_error_containing("request to the control plane failed")
        .await;
    keeps_serving(&t, "qa-r1").await;
    sim.publish([project("acme", 2)]);
    t.wait_revision("acme", 2).await;
}

#[tokio::test]
async fn not_ready_while_nothing_answers_then_ready_when_it_does() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let t = TestSidecar::follow(&format!("http://{addr}"), |_| {}).await;
    eventually("a connection error", || async {
        t.sidecar.status().events().last_error.is_some()
    })
    .await;
    assert_eq!(t.get_admin("/readyz").await.status, 503);
    assert_eq!(
        t.get("/v1/resolve?project=acme").await.error_code(),
        "not_ready"
    );
    let sim = Simulator::start(addr, None)
        .await
        .expect("the port is free again");
    sim.publish([project("acme", 1)]);
    t.wait_ready().await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
}

#[tokio::test]
async fn a_rejected_change_batch_backs_off_instead_of_spinning() {
    let many: Vec<_> = common::numbered(12);
    let sim = simulator(many, None).await;
    let t = synced(&sim, |c| {
        common::http_mut(c).timing.backoff_max = Duration::from_secs(5)
    })
    .await;
    sim.remove(common::numbered_ids(9).iter().map(String::as_str));
    t.wait_error_containing("refusing to remove").await;
    let during = common::requests_during(&sim, Duration::from_millis(1500)).await;
    // A spinning loop would make thousands of requests in 1.5 s; backoff
    // with a 100 ms first window doubling each time makes a handful.
    assert!(during <= 12, "{during} requests in 1.5 s");
    assert_eq!(
        t.sidecar.store().project_count(),
        12,
        "mass removal refused"
    );
}

#[tokio::test]
async fn malformed_answers_back_off_instead_of_spinning() {
    let sim = simulator(vec![project("acme", 1)], None).await;
    let t = synced(&sim, |c| {
        common::http_mut(c).timing.backoff_max = Duration::from_secs(5)
    })
    .await;
    fault(
        &sim,
        Faults {
            malformed_rate: 1.0,
            ..Faults::default()
        },
    )
    .await;
    sim.publish([project("acme", 2)]);
    let during = common::requests_during(&sim, Duration::from_millis(1500)).await;
    assert!(during <= 12, "{during} requests in 1.5 s");
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
}

#[tokio::test]
async fn an_emptied_snapshot_is_refused_in_poll_mode() {
    let many: Vec<_> = common::numbered(12);
    let sim = simulator(many, None).await;
    let t = synced(&sim, |c| common::http_mut(c).mode = SyncMode::Poll).await;
    sim.remove(common::numbered_ids(12).iter().map(String::as_str));
    t.wait_error_containing("refusing to remove 12 of 12").await;
    assert_eq!(t.sidecar.store().project_count(), 12);
    assert_eq!(t.get("/v1/resolve?project=p3").await.status, 200);
}

#[tokio::test]
async fn an_invalid_document_from_the_control_plane_is_rejected_alone() {
    let sim = simulator(vec![project("acme", 1), project("globex", 1)], None).await;
    let t = synced(&sim, |_| {}).await;
    let mut bad = project("acme", 2);
    bad["environments"][0]["slug"] = serde_json::json!("Not A Slug");
    sim.publish([bad, project("globex", 2)]);
    t.wait_revision("globex", 2).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
    assert_eq!(
        t.sidecar.store().rejection("acme").unwrap().reason.as_str(),
        "invalid_slug"
    );
}

#[tokio::test]
async fn check_source_now_fetches_at_once_from_a_control_plane() {
    let sim = simulator(vec![project("acme", 1)], None).await;
    let t = synced(&sim, |c| {
        common::http_mut(c).mode = SyncMode::Poll;
        c.source.poll_interval = Duration::from_secs(3600);
    })
    .await;
    sim.publish([project("acme", 2)]);
    // Without the nudge the next poll is an hour away.
    t.sidecar.check_source_now();
    t.wait_revision("acme", 2).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r2");
}
