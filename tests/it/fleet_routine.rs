//! Routine fleet operations on real processes: a rolling deploy (every
//! node stopped with SIGTERM and started again, one at a time) while a
//! pipeline publishes with `--wait` in a loop; a node that stops
//! gracefully leaves the fleet (Redis and the control plane forget it),
//! one killed without a word is lost.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fleet::{self, http_source, node_config, publish_acme, redis_source, reporting};
use common::process::SidecarProcess;
use common::redis::{RedisServer, Setup};
use common::{eventually_within, project};

/// `fleet status --redis URL` (or `--control-plane URL`) until its summary
/// line is `want`.
async fn wait_status(flag: &str, url: &str, want: &str) -> String {
    let mut last = String::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (_, out) = fleet::run_async(&["fleet", "status", flag, url]).await;
            if out.ends_with(&format!("{want}\n")) {
                return out;
            }
            last = out;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("fleet status never said {want:?}; last:\n{last}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_never_fails_a_waiting_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let url = redis.url.clone();
    publish_acme(dir.path(), &url, 1, false).await;
    let configs: Vec<_> = ["r1", "r2", "r3"]
        .iter()
        .map(|id| node_config(dir.path(), id, "eu", &redis_source(&url), &reporting("1s")))
        .collect();
    let mut nodes: Vec<SidecarProcess> = configs.iter().map(|c| fleet::start(c, &[])).collect();
    wait_status(
        "--redis",
        &url,
        "3 nodes, 3 converged, 0 behind, 0 rejecting, 0 stale reports, 0 lost",
    )
    .await;

    // The pipeline: publish the next revision and wait for the fleet,
    // again and again, for as long as the deploy runs.
    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(Mutex::new(Vec::new()));
    let pipeline = {
        let (stop, results, url) = (stop.clone(), results.clone(), url.clone());
        let dir = dir.path().to_owned();
        std::thread::spawn(move || {
            let mut revision = 2;
            while !stop.load(Ordering::SeqCst) {
                let file = common::json_file(
                    &dir,
                    &format!("pipeline-{revision}.json"),
                    &common::snapshot(
                        revision,
                        vec![project("acme", revision), project("globex", 1)],
                    ),
                );
                let file = file.display().to_string();
                let (code, out) = fleet::run(&[
                    "publish",
                    "--redis",
                    &url,
                    "--wait",
                    "--timeout",
                    "20s",
                    &file,
                ]);
                results.lock().unwrap().push((revision, code, out));
                revision += 1;
            }
        })
    };

    // Until the pipeline has finished `n` publishes (so that some run in
    // each state of the deploy).
    let published = |n: usize| {
        let results = results.clone();
        async move {
            eventually_within(
                Duration::from_secs(60),
                "the pipeline's publishes",
                || async { results.lock().unwrap().len() >= n },
            )
            .await
        }
    };
    // The rolling deploy: each node stopped (SIGTERM) and started again,
    // a publish finishing in each state.
    let mut done = 0;
    for (i, config) in configs.iter().enumerate() {
        done += 1;
        published(done).await;
        fleet::signal(&nodes[i], "TERM");
        let status = nodes[i].wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(0), "{}", nodes[i].log());
        // It left the fleet: not listed, not lost.
        let out = wait_status(
            "--redis",
            &url,
            "2 nodes, 2 converged, 0 behind, 0 rejecting, 0 stale reports, 0 lost",
        )
        .await;
        assert!(!out.contains(&format!("r{}", i + 1)), "{out}");
        assert!(
            nodes[i].log().contains("left the fleet"),
            "{}",
            nodes[i].log()
        );
        done += 1;
        published(done).await;
        // Started again under the same id: it registers again.
        nodes[i] = fleet::start(config, &[]);
        wait_status(
            "--redis",
            &url,
            "3 nodes, 3 converged, 0 behind, 0 rejecting, 0 stale reports, 0 lost",
        )
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    tokio::task::spawn_blocking(move || pipeline.join().unwrap())
        .await
        .unwrap();
    let results = results.lock().unwrap();
    assert!(results.len() >= 6, "{} publishes ran", results.len());
    for (revision, code, out) in results.iter() {
        assert_eq!(*code, 0, "publish --wait of acme@{revision} failed:\n{out}");
    }
    for node in &nodes {
        assert!(!node.log().contains("panicked"), "{}", node.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_leaves_the_control_plane_and_a_killed_one_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::simulator(vec![project("acme", 1)], None).await;
    let url = sim.url();
    let mut nodes: Vec<_> = ["g1", "g2", "g3"]
        .iter()
        .map(|id| {
            let config = node_config(dir.path(), id, "eu", &http_source(&url), &reporting("1s"));
            fleet::start(&config, &[])
        })
        .collect();
    let flag = "--control-plane";
    wait_status(
        flag,
        &url,
        "3 nodes, 3 converged, 0 behind, 0 rejecting, 0 stale reports, 0 lost",
    )
    .await;
    let mut stopped = nodes.remove(0);
    fleet::signal(&stopped, "TERM");
    assert_eq!(stopped.wait_exit(Duration::from_secs(20)).code(), Some(0));
    // The simulator forgot it at once: not lost, not listed; the log
    // names the request that did it.
    assert!(sim.nodes().current().iter().all(|r| r.summary.node != "g1"));
    let log = stopped.log();
    assert!(
        log.lines().any(|l| l.contains("left the fleet")
            && l.contains(&format!("target=DELETE {url}/v1/nodes/g1"))),
        "{log}"
    );
    wait_status(
        flag,
        &url,
        "2 nodes, 2 converged, 0 behind, 0 rejecting, 0 stale reports, 0 lost",
    )
    .await;
    // One killed without a word is lost.
    fleet::signal(&nodes[0], "KILL");
    eventually_within(Duration::from_secs(20), "g2 lost", || async {
        let (_, out) = fleet::run_async(&["fleet", "status", flag, &url]).await;
        out.contains("lost node=g2")
    })
    .await;
}

/// A node restarted from its cache against a reachable but quiet source
/// (a 30 s long poll, nothing changing): `live` in `/readyz`, its report
/// and `fleet status` within seconds, not once its first wait ends.
async fn live_at_once_after_a_restart(kind: &str, flag: &str, url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let source = format!("kind = \"{kind}\"\nurl = \"{url}\"\nlong_poll_wait = \"30s\"");
    let config = node_config(dir.path(), "q1", "eu", &source, &reporting("1s"));
    let node = fleet::start(&config, &[]);
    wait_status(
        flag,
        url,
        "1 nodes, 1 converged, 0 behind, 0 rejecting, 0 stale reports, 0 lost",
    )
    .await;
    let mut node = node;
    fleet::signal(&node, "TERM");
    assert_eq!(node.wait_exit(Duration::from_secs(20)).code(), Some(0));
    let node = fleet::start(&config, &[]);
    eventually_within(Duration::from_secs(5), "live on /readyz", || async {
        let resp = reqwest::get(format!("http://{}/readyz", node.admin_addr)).await;
        match resp {
            Ok(r) => r
                .text()
                .await
                .unwrap_or_default()
                .contains("\"provenance\":\"live\""),
            Err(_) => false,
        }
    })
    .await;
    eventually_within(Duration::from_secs(5), "live in the report", || async {
        let (_, out) = fleet::run_async(&["fleet", "status", flag, url]).await;
        out.contains("node=q1 labels=region=eu provenance=live")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_from_its_cache_on_a_quiet_redis_is_live_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    publish_acme(dir.path(), &redis.url, 1, false).await;
    live_at_once_after_a_restart("redis", "--redis", &redis.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_from_its_cache_on_a_quiet_control_plane_is_live_at_once() {
    let sim = common::simulator(vec![project("acme", 1)], None).await;
    let url = sim.url();
    live_at_once_after_a_restart("http", "--control-plane", &url).await;
}
