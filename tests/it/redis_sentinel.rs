//! A real Sentinel deployment on loopback: a primary, two replicas and
//! three sentinels. Sidecars name the sentinels
//! (`redis-sentinel://…#fleet`) and read replicas (one told
//! `read_from = "primary"` reads the primary); `publish --wait` goes
//! to the primary the sentinels name. A `publish --wait` started right
//! after a kill -9 of the primary waits out the sentinels' failover and
//! reaches every sidecar through the same URL, the node reports follow the new primary, and `publish
//! --wait` converges, with a resolver loop that never sees a miss.

use crate::common;

use common::attacker::redis_cli;
use common::fleet::{self, node_config, publish_acme, redis_source, reporting, run_async};
use common::resolver_loop::ResolverLoop;
use common::topology::Sentinels;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_are_followed_through_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut set) = Sentinels::start(dir.path(), 2) else {
        return;
    };
    let url = set.url();
    publish_acme(dir.path(), &url, 1, false).await;
    let nodes: Vec<_> = ["s1", "s2"]
        .iter()
        .map(|id| {
            let config = node_config(dir.path(), id, "eu", &redis_source(&url), &reporting("1s"));
            fleet::start(&config, &[])
        })
        .collect();
    fleet::listed(&["--redis", &url], &["s1", "s2"]);
    let out = publish_acme(dir.path(), &url, 2, true).await;
    assert!(out.contains("converged nodes=2 of=2"), "{out}");
    // They read replicas, not the primary.
    let primary = set.primary();
    let replica_reads: usize = set
        .servers
        .iter()
        .filter(|s| s.port != primary)
        .map(|s| redis_cli(s.port, &["INFO", "commandstats"]))
        .filter(|stats| stats.contains("cmdstat_xread:"))
        .count();
    assert!(replica_reads >= 1, "no replica served a read");
    assert!(
        !redis_cli(primary, &["INFO", "commandstats"]).contains("cmdstat_xread:"),
        "a sidecar read the primary"
    );
    // One told to read the primary does.
    let config = node_config(
        dir.path(),
        "s3",
        "eu",
        &format!("{}\nread_from = \"primary\"", redis_source(&url)),
        "[report]\nenabled = false",
    );
    let on_primary = fleet::start(&config, &[]);
    common::eventually("the primary read", || async {
        redis_cli(primary, &["INFO", "commandstats"]).contains("cmdstat_xread:")
    })
    .await;
    drop(on_primary);
    let resolver = ResolverLoop::start(
        nodes.iter().map(|n| n.data_addr).collect(),
        &["acme", "globex"],
    );

    // kill -9 of the primary, and a pipeline's publish started at once,
    // before the sentinels have even noticed: it waits the failover out
    // and converges.
    let old = set.kill_primary_now();
    assert_eq!(old, primary);
    let (out, err) = fleet::publish_acme_through_failover(dir.path(), &url, 3).await;
    assert!(out.contains("converged nodes=2 of=2"), "{out}");
    // Sentinel names the dead primary until it has elected another: the
    // publish must have met the outage and said it waited.
    assert!(err.contains("env-sidecar: waiting for"), "{err}");
    let new = set.wait_new_primary(old);
    assert_ne!(new, primary);
    // The reports are written to the new primary.
    let (code, status) = run_async(&["fleet", "status", "--redis", &url]).await;
    assert_eq!(code, 0, "{status}");
    assert!(
        status.ends_with("2 nodes, 2 converged, 0 behind, 0 rejecting, 0 stale reports, 0 lost\n"),
        "{status}"
    );
    assert!(redis_cli(new, &["EXISTS", "{env-sidecar}:node:s1"]).trim() == "1");
    resolver.finish().await;
    for node in &nodes {
        assert!(!node.log().contains("panicked"), "{}", node.log());
    }
}
