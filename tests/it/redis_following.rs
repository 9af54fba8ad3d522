//! What following a Redis costs it, and a writer that never marks its
//! population: on a real `redis-server`, counted in its own `INFO
//! commandstats` (commands its scripts run included).
//!
//! * A follower keeping up makes one round trip per delivery: `XREAD`
//!   with an `XLEN` beside it, and no script (the thorough check of the
//!   stream, which builds its first and last entries, runs only when
//!   entries may be gone).
//! * A read that comes back empty before its block is not repeated back
//!   to back.
//! * A follower that found the population incomplete (the writer follows
//!   the hash-and-stream rule alone, and never marks) keeps following the
//!   stream: changes and explicit removals arrive as on a complete
//!   population, and the hash is never read again until the writer marks
//!   the population complete; then one full load.

use crate::common;

use std::time::{Duration, Instant};

use common::attacker::redis_cli;
use common::redis::{command_calls, Publisher, RedisServer, Setup};
use common::{eventually, project, redis_config, TestSidecar};

/// Calls of `command` on the server at `port` so far.
fn calls(port: u16, command: &str) -> u64 {
    command_calls(port).get(command).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_keeps_up_costs_one_read_and_a_length_per_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let mut publisher = Publisher::plain(&redis.url).await;
    for id in ["acme", "globex"] {
        publisher.write(&project(id, 1)).await;
    }
    let t = TestSidecar::launch_ready(redis_config(dir.path(), &redis.url), None).await;
    t.wait_revision("globex", 1).await;
    let (scripts, reads, lengths) = (
        calls(redis.port, "eval_ro"),
        calls(redis.port, "xread"),
        calls(redis.port, "xlen"),
    );
    for revision in 2..=21 {
        let entry = publisher.write(&project("acme", revision)).await;
        t.wait_stream_entry(&entry).await;
    }
    assert_eq!(t.served("acme", "qa").await, "qa-r21");
    let reads = calls(redis.port, "xread") - reads;
    assert!(reads >= 20, "{reads} reads for 20 deliveries");
    assert_eq!(
        calls(redis.port, "xlen") - lengths,
        reads,
        "one XLEN beside every XREAD"
    );
    assert_eq!(
        calls(redis.port, "eval_ro"),
        scripts,
        "no thorough check while the stream continues"
    );
    // Entries gone behind its back (the stream trimmed to nothing): the
    // thorough check runs, and a full load follows.
    let loads = "env_sidecar_sync_requests_total{kind=\"snapshot\",result=\"ok\"}";
    let before = t.metric(loads).await;
    publisher
        .run(&["XTRIM", "{env-sidecar}:changes", "MAXLEN", "0"])
        .await;
    publisher.write(&project("acme", 22)).await;
    eventually("a full load", || async { t.metric(loads).await > before }).await;
    assert!(calls(redis.port, "eval_ro") > scripts);
    t.wait_revision("acme", 22).await;
}

/// A read that comes back empty before its block (cut short here with
/// `CLIENT UNBLOCK … TIMEOUT`, as a proxy that does not block would
/// answer) is followed by the next one 100 ms later, not back to back;
/// changes still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_comes_back_early_is_not_repeated_in_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let mut publisher = Publisher::plain(&redis.url).await;
    publisher.write(&project("acme", 1)).await;
    let t = TestSidecar::launch_ready(redis_config(dir.path(), &redis.url), None).await;
    let blocked_reads = || {
        redis_cli(redis.port, &["CLIENT", "LIST"])
            .lines()
            .filter(|l| l.contains("cmd=xread") && l.contains("flags=b"))
            .filter_map(|l| Some(l.strip_prefix("id=")?.split(' ').next()?.to_owned()))
            .collect::<Vec<_>>()
    };
    let reads = calls(redis.port, "xread");
    let (started, mut cut_short) = (Instant::now(), 0);
    while started.elapsed() < Duration::from_millis(1500) {
        for id in blocked_reads() {
            // `1` when it was blocked and is no longer.
            let reply = redis_cli(redis.port, &["CLIENT", "UNBLOCK", &id, "TIMEOUT"]);
            cut_short += usize::from(reply.trim() == "1");
        }
    }
    let reads = calls(redis.port, "xread") - reads;
    assert!(cut_short >= 5, "only {cut_short} reads were cut short");
    // Back to back, each read would be cut short as soon as this loop
    // sees it: hundreds in 1.5 s.
    assert!(reads <= 25, "{reads} reads in 1.5 s");
    publisher.write(&project("acme", 2)).await;
    t.wait_revision("acme", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_never_marks_feeds_a_follower_without_reloading_the_hash() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let mut writer = Publisher::plain(&redis.url).await;
    for id in ["acme", "globex", "initech"] {
        writer.write_unmarked(&project(id, 1)).await;
    }
    // A cold follower: the population is incomplete (no marker), what is
    // there is served.
    let t = TestSidecar::launch_ready(redis_config(dir.path(), &redis.url), None).await;
    t.wait_population_incomplete().await;
    assert_eq!(t.sidecar.store().project_count(), 3);
    let hash_reads = calls(redis.port, "hscan");
    assert!(hash_reads >= 1, "the first full load read the hash");

    // A change and an explicit removal arrive as on a complete population.
    let entry = writer.write_unmarked(&project("acme", 2)).await;
    t.wait_stream_entry(&entry).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r2");
    let entry = writer.remove_unmarked("globex").await;
    t.wait_stream_entry(&entry).await;
    assert!(t.sidecar.store().project("globex").is_none());
    // Several waits of the read (and so of the marker check) pass.
    let reads = calls(redis.port, "xread");
    eventually("three more reads", || async {
        calls(redis.port, "xread") >= reads + 3
    })
    .await;
    assert_eq!(
        calls(redis.port, "hscan"),
        hash_reads,
        "no hash read while the population is incomplete"
    );
    assert!(t.sidecar.status().incomplete().is_some());
    let status = t.get_admin("/admin/status").await.body;
    assert!(
        status["population_incomplete"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("following the stream")),
        "{status}"
    );

    // The writer marks its population complete (no stream entry): one
    // full load within backoff_max, and the status says so no more.
    writer.run(&["SET", "{env-sidecar}:population", "2"]).await;
    eventually("the population complete", || async {
        t.sidecar.status().incomplete().is_none()
    })
    .await;
    assert!(calls(redis.port, "hscan") > hash_reads);
    let status = t.get_admin("/admin/status").await.body;
    assert!(status.get("population_incomplete").is_none(), "{status}");
    assert_eq!(t.sidecar.store().project_count(), 2);
}
