//! Data loss in Redis never removes what is served, and the fleet
//! converges once the writer has written a complete population again.
//! Each case runs a real `redis-server`, a sidecar following it, and a
//! resolver loop the whole time that fails on any non-`200` for a project
//! that exists in the control plane's truth: a restart without
//! persistence, `FLUSHALL` while the sidecar waits in `XREAD BLOCK` and a
//! republish lacking one project, a repopulation written in several
//! transactions, the hash evicted alone, the stream deleted and recreated
//! during a blocking read.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::fleet::publish;
use common::redis::{Publisher, RedisServer, Setup};
use common::resolver_loop::ResolverLoop;
use common::{eventually, json_file, project, redis_config, redis_mut, snapshot, TestSidecar};
use env_sidecar::redis_client::{write_changes, Change, Population};
use serde_json::Value;

const ALL: [&str; 3] = ["acme", "globex", "initech"];

fn snapshot_of(ids: &[&str], revision: u64) -> Value {
    snapshot(
        revision,
        ids.iter().map(|id| project(id, revision)).collect(),
    )
}

/// A sidecar following `url`, idle in `XREAD BLOCK` for `long_poll_wait`,
/// with a last-known-good cache.
async fn follower(dir: &Path, url: &str, long_poll_wait: Duration) -> TestSidecar {
    let mut config = redis_config(dir, url);
    redis_mut(&mut config).timing.long_poll_wait = long_poll_wait;
    config.cache.path = dir.join("lkg.json");
    TestSidecar::launch_ready(config, None).await
}

/// Publishes `ids` at `revision` with `env-sidecar publish`.
fn publish_all(dir: &Path, url: &str, ids: &[&str], revision: u64) {
    let file = json_file(
        dir,
        &format!("v{revision}-{}.json", ids.len()),
        &snapshot_of(ids, revision),
    );
    let (code, out) = publish(url, &["--allow-mass-removal"], &file);
    assert_eq!(code, 0, "{out}");
}

/// The projects the last-known-good cache holds.
fn cached_projects(dir: &Path) -> usize {
    env_sidecar::sync::cache::load(&dir.join("lkg.json"))
        .expect("a cache")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_removes_nothing_even_with_three_projects() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    publish_all(dir.path(), &redis.url, &ALL, 1);
    let t = follower(dir.path(), &redis.url, Duration::from_millis(500)).await;
    eventually("the cache written", || async {
        dir.path().join("lkg.json").exists()
    })
    .await;
    let resolver = ResolverLoop::start(vec![t.sidecar.data_addr()], &ALL);

    redis.restart();
    t.wait_population_incomplete().await;
    assert_eq!(t.sidecar.store().project_count(), 3);
    assert_eq!(
        cached_projects(dir.path()),
        3,
        "the cache kept what is served"
    );
    // The writer writes its population again: the sidecar recovers.
    publish_all(dir.path(), &redis.url, &ALL, 1);
    t.wait_recovered().await;
    assert_eq!(t.sidecar.store().project_count(), 3);
    resolver.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_during_a_blocking_read_then_a_republish_lacking_one_converges_to_that_removal() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    publish_all(dir.path(), &redis.url, &ALL, 1);
    // Idle in XREAD BLOCK for long: the flush happens while it waits.
    let t = follower(dir.path(), &redis.url, Duration::from_secs(30)).await;
    let resolver = ResolverLoop::start(vec![t.sidecar.data_addr()], &ALL);
    let mut publisher = Publisher::plain(&redis.url).await;
    publisher.run(&["FLUSHALL"]).await;
    resolver.round().await;
    // The control plane no longer has globex.
    resolver.set_truth(&["acme", "initech"]);
    publish_all(dir.path(), &redis.url, &["acme", "initech"], 1);
    eventually("globex removed", || async {
        t.sidecar.store().project("globex").is_none()
    })
    .await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
    resolver.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repopulation_in_several_transactions_removes_nothing_until_it_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let ids: Vec<String> = (0..30).map(|i| format!("p{i:02}")).collect();
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    publish_all(dir.path(), &redis.url, &all, 1);
    let t = follower(dir.path(), &redis.url, Duration::from_millis(500)).await;
    let resolver = ResolverLoop::start(vec![t.sidecar.data_addr()], &all);
    let mut publisher = Publisher::plain(&redis.url).await;
    publisher.run(&["FLUSHALL"]).await;
    // The writer repopulates without p07, ten projects a transaction,
    // marking the population complete with the last one only.
    let kept: Vec<&str> = all.iter().copied().filter(|id| *id != "p07").collect();
    resolver.set_truth(&kept);
    let chunks: Vec<&[&str]> = kept.chunks(10).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let changes: Vec<Change> = chunk
            .iter()
            .map(|id| Change {
                project: (*id).to_owned(),
                document: Some(project(id, 1).to_string()),
            })
            .collect();
        let population = match i {
            0 => Population::Incomplete,
            i if i + 1 == chunks.len() => Population::Complete,
            _ => Population::Untouched,
        };
        write_changes(&mut publisher.con, &publisher.keys, &changes, population)
            .await
            .unwrap();
        if i + 1 < chunks.len() {
            // A full load of the partial population happens in between.
            t.wait_population_incomplete().await;
            resolver.round().await;
            assert!(t.sidecar.store().project("p07").is_some());
        }
    }
    eventually("p07 removed", || async {
        t.sidecar.store().project("p07").is_none()
    })
    .await;
    assert_eq!(t.sidecar.store().project_count(), 29);
    resolver.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hash_evicted_alone_removes_nothing_and_a_cold_start_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    publish_all(dir.path(), &redis.url, &ALL, 1);
    let t = follower(dir.path(), &redis.url, Duration::from_millis(500)).await;
    let resolver = ResolverLoop::start(vec![t.sidecar.data_addr()], &ALL);
    // What eviction does to one key (the stream and the marker stay).
    let mut publisher = Publisher::plain(&redis.url).await;
    publisher
        .run(&["DEL", &publisher.keys.projects.clone()])
        .await;
    // A sidecar starting now finds a hash that does not match the marker:
    // it is not ready with nothing, it waits.
    let cold_dir = tempfile::tempdir().unwrap();
    let mut config = redis_config(cold_dir.path(), &redis.url);
    config.cache.path = Default::default();
    let cold = TestSidecar::launch_with(config, cold_dir, common::test_options()).await;
    cold.wait_population_incomplete().await;
    assert_eq!(cold.get_admin("/readyz").await.status, 503);
    resolver.round().await;
    // A new revision of acme arrives on the stream all along.
    let entry = publisher.write(&project("acme", 2)).await;
    t.wait_stream_entry(&entry).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r2");
    assert_eq!(t.sidecar.store().project_count(), 3);
    // The writer writes its population again: both serve all of it.
    publish_all(dir.path(), &redis.url, &ALL, 3);
    cold.wait_ready().await;
    cold.wait_revision("globex", 3).await;
    t.wait_revision("globex", 3).await;
    resolver.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_recreated_during_a_blocking_read_is_not_taken_for_its_continuation() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    publish_all(dir.path(), &redis.url, &ALL, 1);
    let t = follower(dir.path(), &redis.url, Duration::from_secs(30)).await;
    let loads = "env_sidecar_sync_requests_total{kind=\"snapshot\",result=\"ok\"}";
    let before = t.metric(loads).await;
    let resolver = ResolverLoop::start(vec![t.sidecar.data_addr()], &ALL);
    let mut publisher = Publisher::plain(&redis.url).await;
    publisher
        .run(&["DEL", &publisher.keys.changes.clone()])
        .await;
    let entry = publisher.write(&project("acme", 2)).await;
    // The read wakes on the new stream's entry, sees it does not continue
    // its cursor and takes a full load.
    eventually("a full load", || async { t.metric(loads).await > before }).await;
    t.wait_stream_entry(&entry).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r2");
    resolver.finish().await;
}
