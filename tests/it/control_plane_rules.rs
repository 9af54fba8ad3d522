//! The rules of the sync protocol a control plane written by someone else
//! might break (docs/control-plane.md, "Rules a control plane keeps"):
//! a real sidecar process follows the simulator breaking one rule, and
//! must say so in its log and lose nothing.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::process::SidecarProcess;
use common::{project, simulator};
use env_sidecar::sim::simulator::{Breach, Faults, Simulator};

/// A sidecar process following `sim` in watch mode (long polls of 1 s,
/// backoff capped at 300 ms), ready.
async fn following(dir: &Path, sim: &Simulator) -> SidecarProcess {
    let path: PathBuf = dir.join("sidecar.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [source]\nkind = \"http\"\nurl = \"{}\"\nbackoff_max = \"300ms\"\n\
             long_poll_wait = \"1s\"\n[cache]\npath = \"{}\"\n[report]\nenabled = false\n",
            sim.url(),
            dir.join("lkg.json").display()
        ),
    )
    .unwrap();
    let node = SidecarProcess::start(&path, &[]);
    common::eventually("the sidecar ready", || async {
        served(&node, "acme").await.starts_with("qa-r")
    })
    .await;
    node
}

/// The `summarize` prompt `acme`'s `qa` serves (tagged with its
/// revision), or the status.
async fn served(node: &SidecarProcess, id: &str) -> String {
    let url = format!(
        "http://{}/v1/resolve?project={id}&environment=qa",
        node.data_addr
    );
    let Ok(resp) = reqwest::get(url).await else {
        return "unreachable".into();
    };
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    match body["pointers"]["prompts"]["summarize"].as_str() {
        Some(v) => v.to_owned(),
        None => format!("status {status}"),
    }
}

async fn wait_served(node: &SidecarProcess, id: &str, expected: &str) {
    common::eventually(&format!("{id} serving {expected}"), || async {
        served(node, id).await == expected
    })
    .await;
}

async fn wait_logged(node: &SidecarProcess, text: &str) {
    common::eventually(&format!("the log saying {text:?}"), || async {
        node.log().contains(text)
    })
    .await;
}

fn breaking(breach: Breach) -> Faults {
    Faults {
        breach: Some(breach),
        ..Faults::default()
    }
}

/// A batch that names neither `projects` nor `removed` is refused as
/// malformed and the cursor stays, so the change arrives once the control
/// plane spells it right (read as an empty batch, the cursor would move
/// past it and it would never arrive).
#[tokio::test]
async fn a_misspelt_change_batch_is_refused_and_the_cursor_stays() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(vec![project("acme", 1)], None).await;
    let node = following(dir.path(), &sim).await;
    sim.set_faults(breaking(Breach::MisspeltBatch));
    sim.publish([project("acme", 2)]);
    wait_logged(&node, "names neither").await;
    assert_eq!(served(&node, "acme").await, "qa-r1");
    let snapshots = sim
        .counters()
        .snapshot
        .load(std::sync::atomic::Ordering::SeqCst);
    sim.set_faults(Faults::default());
    wait_served(&node, "acme", "qa-r2").await;
    assert_eq!(
        sim.counters()
            .snapshot
            .load(std::sync::atomic::Ordering::SeqCst),
        snapshots,
        "the change came as a change, after the cursor that stayed"
    );
}

/// `204` to a long poll is a failure whose message names the rule; the
/// change published meanwhile still arrives.
#[tokio::test]
async fn a_204_long_poll_is_an_error_that_names_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(vec![project("acme", 1)], None).await;
    let node = following(dir.path(), &sim).await;
    sim.set_faults(breaking(Breach::NoContentPoll));
    wait_logged(&node, "answers 200 with empty lists").await;
    assert!(node.log().contains("204"), "{}", node.log());
    sim.set_faults(Faults::default());
    sim.publish([project("acme", 2)]);
    wait_served(&node, "acme", "qa-r2").await;
}

/// A control plane that answers every long poll at once, its `wait`
/// ignored, is asked again after 100 ms, not back to back (a loop of
/// thousands of requests a second), and the log says so once; what it
/// publishes still arrives.
#[tokio::test]
async fn a_control_plane_that_ignores_the_wait_is_not_asked_in_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(vec![project("acme", 1)], None).await;
    let node = following(dir.path(), &sim).await;
    sim.set_faults(breaking(Breach::NoWait));
    wait_logged(&node, "came back empty before its wait").await;
    let during = common::requests_during(&sim, Duration::from_millis(1500)).await;
    assert!(during <= 20, "{during} requests in 1.5 s");
    sim.publish([project("acme", 2)]);
    wait_served(&node, "acme", "qa-r2").await;
    let said = node
        .log()
        .matches("came back empty before its wait")
        .count();
    assert_eq!(said, 1, "{}", node.log());
}

/// A control plane restarted without its change log, at a lower
/// revision, answers the sidecar's cursor with an empty batch at its own
/// revision: the sidecar says it went back and takes a full snapshot, so
/// the revision published since is served (moving the cursor back would
/// have skipped it for good).
#[tokio::test]
async fn a_control_plane_that_went_back_gets_a_full_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(vec![project("acme", 1)], None).await;
    sim.publish([project("acme", 2)]);
    sim.publish([project("acme", 3)]);
    let node = following(dir.path(), &sim).await;
    wait_served(&node, "acme", "qa-r3").await;
    sim.set_faults(breaking(Breach::NoGone));
    sim.restart_without_history(1);
    sim.publish([project("acme", 4)]);
    assert_eq!(sim.revision(), 2, "the control plane is below the cursor");
    wait_served(&node, "acme", "qa-r4").await;
    wait_logged(&node, "the control plane went back").await;
    // It settles: no loop of snapshots once the cursor is the control
    // plane's again.
    let during = common::requests_during(&sim, Duration::from_millis(1500)).await;
    assert!(during <= 4, "{during} requests in 1.5 s\n{}", node.log());
}
