//! A real Redis Cluster of 3 masters and 3 replicas on loopback: a fleet
//! names whatever node its platform hands out. `publish` goes through a
//! master that does not own `{env-sidecar}`'s slot; one sidecar is given
//! that master, another a replica of the owner (it reads the replica:
//! `READONLY`); both serve every publish through a `CLUSTER FAILOVER` and
//! then a kill -9 of the new owner (the publish started at once, before
//! the cluster noticed), with a resolver loop that never sees a miss; `fleet status` and `fleet wait` read the reports through the
//! cluster and never call a revision converged while a node is behind.

use crate::common;

use common::attacker::redis_cli;
use common::fleet::{self, node_config, publish_acme, redis_source, reporting, run_async};
use common::resolver_loop::ResolverLoop;
use common::topology::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_followed_through_any_node_and_through_failovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cluster) = Cluster::start(dir.path()) else {
        return;
    };
    let owner = cluster.owner("env-sidecar");
    let replica = cluster.replica_of(owner);
    let other = cluster.other_master(owner);
    let via = Cluster::url(other);

    // Through a master that does not own the slot: redirected.
    publish_acme(dir.path(), &via, 1, false).await;

    let on_master = fleet::start(
        &node_config(
            dir.path(),
            "c1",
            "eu",
            &redis_source(&via),
            &reporting("1s"),
        ),
        &[],
    );
    let on_replica = fleet::start(
        &node_config(
            dir.path(),
            "c2",
            "eu",
            &redis_source(&Cluster::url(replica)),
            &reporting("1s"),
        ),
        &[],
    );
    fleet::listed(&["--redis", &via], &["c1", "c2"]);
    let (code, out) = run_async(&[
        "fleet",
        "wait",
        "--redis",
        &via,
        "--project",
        "acme",
        "--revision",
        "1",
        "--timeout",
        "30s",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("converged nodes=2 of=2"), "{out}");
    // The replica serves the reads of the sidecar given its address.
    let stats = redis_cli(replica, &["INFO", "commandstats"]);
    assert!(
        stats.contains("cmdstat_xread:") && stats.contains("cmdstat_eval_ro:"),
        "{stats}\n{}\nowner:{}",
        on_replica.log(),
        redis_cli(owner, &["INFO", "commandstats"])
    );
    let resolver = ResolverLoop::start(
        vec![on_master.data_addr, on_replica.data_addr],
        &["acme", "globex"],
    );

    // A manual failover: the replica becomes the owner.
    cluster.failover(replica);
    assert_eq!(cluster.owner("env-sidecar"), replica);
    let out = publish_acme(dir.path(), &via, 2, true).await;
    assert!(out.contains("converged nodes=2 of=2"), "{out}");
    resolver.round().await;

    // The new owner (the node one sidecar was given) dies, and a
    // pipeline's publish starts at once, before the cluster has noticed:
    // it waits until the replica has taken over, then converges.
    cluster.kill_now(replica);
    let (out, _) = fleet::publish_acme_through_failover(dir.path(), &via, 3).await;
    // Whether it printed `waiting for` depends on timing: the cluster
    // client retries inside one request, and a failover faster than that
    // request's timeout never reaches the command's own retry.
    assert!(out.contains("converged nodes=2 of=2"), "{out}");
    cluster.wait_failed_over(replica);
    assert_eq!(cluster.owner("env-sidecar"), owner);
    let (code, status) = run_async(&["fleet", "status", "--redis", &via]).await;
    assert_eq!(code, 0, "{status}");
    assert!(
        status.ends_with("2 nodes, 2 converged, 0 behind, 0 rejecting, 0 stale reports, 0 lost\n"),
        "{status}"
    );
    resolver.finish().await;
    for node in [on_master, on_replica] {
        assert!(!node.log().contains("panicked"), "{}", node.log());
    }
}
