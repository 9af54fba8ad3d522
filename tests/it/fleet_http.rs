//! Fleet convergence over HTTP: real sidecar processes follow the
//! control-plane simulator and `POST /v1/nodes/{id}/status` their
//! reports to it; `fleet wait --control-plane` and `fleet status
//! --control-plane` read them back (`GET /v1/nodes`), see a publish
//! converge, name a paused node, list a killed one as lost (with its
//! labels), and the simulator keeps what it was sent.

use crate::common;

use common::fleet::{self, http_source, node_config, reporting, run_async};
use common::project;

/// `fleet wait --control-plane URL --project acme --revision R --timeout
/// T EXTRA…`: exit code and output.
async fn wait_acme(url: &str, revision: &str, timeout: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "fleet",
        "wait",
        "--control-plane",
        url,
        "--project",
        "acme",
        "--revision",
        revision,
        "--timeout",
        timeout,
    ];
    args.extend(extra);
    run_async(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_over_http_reports_to_the_control_plane_and_converges() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::simulator(vec![project("acme", 1), project("globex", 1)], None).await;
    let url = sim.url();
    let nodes: Vec<_> = [("h1", "eu"), ("h2", "eu"), ("h3", "us")]
        .iter()
        .map(|(id, region)| {
            let config = node_config(
                dir.path(),
                id,
                region,
                &http_source(&url),
                &reporting("30s"),
            );
            fleet::start(&config, &[])
        })
        .collect();
    // The simulator serves on this runtime's other worker meanwhile.
    tokio::task::block_in_place(|| fleet::listed(&["--control-plane", &url], &["h1", "h2", "h3"]));
    let wait =
        |revision: &'static str, timeout: &'static str| wait_acme(&url, revision, timeout, &[]);
    let (code, out) = wait("1", "20s").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3/3 nodes serve acme@1"), "{out}");

    sim.publish([project("acme", 2)]);
    let (code, out) = wait("2", "20s").await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_async(&[
        "fleet",
        "status",
        "--control-plane",
        &url,
        "--project",
        "acme",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("node=h1 labels=region=eu provenance=live"),
        "{out}"
    );
    assert!(out.contains("serves=2"), "{out}");
    assert!(
        out.ends_with("3 nodes, 3 converged, 0 behind, 0 rejecting, 0 stale reports, 0 lost\n"),
        "{out}"
    );
    assert!(sim.nodes().received() >= 3);

    fleet::signal(&nodes[2], "STOP");
    sim.publish([project("acme", 3)]);
    let (code, out) = wait("3", "2s").await;
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("behind node=h3 project=acme serves=<3 cursor=3"),
        "{out}"
    );
    fleet::signal(&nodes[2], "CONT");
    let (code, out) = wait("3", "20s").await;
    assert_eq!(code, 0, "{out}");

    // A document every node rejects shows them rejecting, with the reason.
    let mut bad = project("acme", 4);
    bad["environments"][0]["color"] = "green".into();
    sim.publish([bad]);
    let (code, out) = wait("4", "3s").await;
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("rejecting node=h2 project=acme revision=4 reason=invalid_color"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_reporting_to_the_control_plane_is_lost_with_its_labels() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::simulator(vec![project("acme", 1)], None).await;
    let url = sim.url();
    let mut nodes: Vec<_> = [("l1", "eu"), ("l2", "us")]
        .iter()
        .map(|(id, region)| {
            let config = node_config(dir.path(), id, region, &http_source(&url), &reporting("1s"));
            fleet::start(&config, &[])
        })
        .collect();
    let wait = |timeout: &'static str, extra: &'static [&'static str]| {
        wait_acme(&url, "1", timeout, extra)
    };
    let (code, out) = wait("20s", &[]).await;
    assert_eq!(code, 0, "{out}");
    fleet::signal(&nodes.pop().unwrap(), "KILL");
    // The control plane keeps its last report; its age says it expired.
    common::eventually_within(std::time::Duration::from_secs(20), "l2 lost", || async {
        let (_, out) = run_async(&["fleet", "status", "--control-plane", &url]).await;
        out.contains("lost node=l2 labels=region=us")
    })
    .await;
    let (code, out) = wait("1s", &[]).await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("lost node=l2 labels=region=us"), "{out}");
    // Its labels are known: a selector that leaves it out converges.
    let (code, out) = wait("1s", &["--selector", "region=eu"]).await;
    assert_eq!(code, 0, "{out}");
}
