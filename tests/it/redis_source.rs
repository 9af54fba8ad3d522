//! The Redis source against a real `redis-server`: it follows the stream
//! and serves what is published (added, changed, removed; a bad document
//! rejected alone), takes a full load when the stream lost entries it had
//! not read, keeps serving while Redis is down and starts from its cache,
//! refuses the mass removal an emptied Redis would cause, speaks
//! `requirepass` (password from `token_env`) and TLS, and follows a
//! read-only replica (the fleet topology) like the primary.

use crate::common;

use std::path::Path;

use common::redis::{Pki, Publisher, RedisServer, Setup};
use common::redis_config;
use common::{eventually, project, TestSidecar};
use env_sidecar::config::secret::Env;
use env_sidecar::config::{Config, TlsFiles};
use env_sidecar::model::raw::RawDigest;

async fn follow(dir: &Path, url: &str, tweak: impl FnOnce(&mut Config), env: Env) -> TestSidecar {
    let mut config = redis_config(dir, url);
    tweak(&mut config);
    let options = env_sidecar::app::Options {
        env,
        ..common::test_options()
    };
    TestSidecar::launch_with(config, tempfile::tempdir().unwrap(), options).await
}

/// A `redis-server` in `dir` holding acme@1, and its publisher; `None`
/// (skipped) where redis-server is not installed.
async fn redis_with_acme(dir: &Path) -> Option<(RedisServer, Publisher)> {
    let redis = RedisServer::start(dir, Setup::default())?;
    let mut publisher = Publisher::plain(&redis.url).await;
    publisher.write(&project("acme", 1)).await;
    Some((redis, publisher))
}

/// A sidecar, ready, following a `redis-server` in `dir` that holds
/// acme@1 and globex@1; `None` (skipped) where redis-server is not
/// installed.
async fn following_acme_and_globex(dir: &Path) -> Option<(RedisServer, Publisher, TestSidecar)> {
    let (redis, mut publisher) = redis_with_acme(dir).await?;
    publisher.write(&project("globex", 1)).await;
    let t = follow(dir, &redis.url, |_| {}, no_secrets()).await;
    t.wait_ready().await;
    Some((redis, publisher, t))
}

/// A sidecar following `url` with its last-known-good cache at
/// `dir/lkg.json`.
async fn follow_cached(dir: &Path, url: &str) -> TestSidecar {
    let cache = dir.join("lkg.json");
    follow(dir, url, |c| c.cache.path = cache, no_secrets()).await
}

fn no_secrets() -> Env {
    Env::from_pairs::<&str, &str>([])
}

#[tokio::test]
async fn the_cursor_shows_as_the_stream_id_and_the_revision_gauge_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let Some((redis, mut publisher)) = redis_with_acme(dir.path()).await else {
        return;
    };
    let t = follow_cached(dir.path(), &redis.url).await;
    t.wait_ready().await;
    let entry = publisher.write(&project("acme", 2)).await;
    t.wait_stream_entry(&entry).await;
    let status = t.get_admin("/admin/status").await.body;
    assert_eq!(status["cursor"], entry.as_str(), "{status}");
    assert_eq!(status["source"]["stream_cursor"], entry.as_str());
    // The gauge holds the id's milliseconds exactly (a float64 rounded the
    // packed number an earlier version showed).
    let ms: f64 = entry.split('-').next().unwrap().parse().unwrap();
    assert_eq!(t.metric("env_sidecar_snapshot_revision").await, ms);
    // The cache keeps it as the id.
    let cache = dir.path().join("lkg.json");
    eventually("the cursor cached", || async {
        env_sidecar::sync::cache::load(&cache).is_ok_and(|c| c.cursor.to_string() == entry)
    })
    .await;
}

#[tokio::test]
async fn every_failed_request_to_redis_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut redis, _)) = redis_with_acme(dir.path()).await else {
        return;
    };
    let t = follow(dir.path(), &redis.url, |_| {}, no_secrets()).await;
    t.wait_ready().await;
    let series =
        |kind: &str| format!("env_sidecar_sync_requests_total{{kind=\"{kind}\",result=\"error\"}}");
    assert_eq!(t.metric(&series("changes")).await, 0.0);
    // Redis goes away while the sidecar follows: the check before the
    // next read and the reconnects fail, and each failure is counted.
    redis.kill();
    eventually("failed requests counted", || async {
        t.metric(&series("changes")).await >= 2.0
    })
    .await;
    // A forced one-project refresh that cannot reach Redis counts too.
    let before = t.metric(&series("project")).await;
    let r = t.post_admin("/admin/refresh?project=acme", None).await;
    assert_eq!(r.body["result"], "error", "{}", r.text);
    assert_eq!(t.metric(&series("project")).await, before + 1.0);
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
}

#[tokio::test]
async fn published_changes_are_followed_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let Some((redis, mut publisher, t)) = following_acme_and_globex(dir.path()).await else {
        return;
    };
    assert_eq!(t.served("acme", "qa").await, "qa-r1");

    publisher.write(&project("acme", 2)).await;
    t.wait_revision("acme", 2).await;
    publisher.write(&project("initech", 1)).await;
    t.wait_revision("initech", 1).await;
    publisher.remove("globex").await;
    eventually("globex removed", || async {
        t.sidecar.store().project("globex").is_none()
    })
    .await;
    assert_eq!(t.get("/v1/resolve?project=globex").await.status, 404);

    // A bad document is rejected alone; its neighbour updates.
    let mut bad = project("acme", 3);
    bad["environments"][0]["color"] = serde_json::json!("green");
    publisher.write(&bad).await;
    publisher.write(&project("initech", 2)).await;
    t.wait_revision("initech", 2).await;
    assert_eq!(
        t.served("acme", "qa").await,
        "qa-r2",
        "the last good revision serves"
    );
    assert_eq!(
        t.sidecar.store().rejection("acme").unwrap().reason.as_str(),
        "invalid_color"
    );

    let status = t.get_admin("/admin/status").await.body;
    assert_eq!(status["source"]["kind"], "redis");
    assert_eq!(status["source"]["url"], redis.url.as_str());
    let stream_cursor = status["source"]["stream_cursor"].as_str().unwrap();
    assert!(
        stream_cursor.contains('-') && stream_cursor != "0-0",
        "{status}"
    );
    let m = t.get_admin("/metrics").await.text;
    assert!(
        m.contains("env_sidecar_sync_requests_total{kind=\"changes\",result=\"ok\"}"),
        "{m}"
    );
}

/// A full load does not read what is byte for byte the value a served
/// project was accepted from, and reads everything else as ever: other
/// content under the served revision, written into the hash alone
/// (`HSET`, as `redis-cli` would), is refused loudly by a forced reload
/// while its neighbour stays unchanged; the bytes put back are no news.
#[tokio::test]
async fn a_full_load_skips_what_is_served_byte_for_byte_and_reads_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_redis, mut publisher, t)) = following_acme_and_globex(dir.path()).await else {
        return;
    };
    let hash = "{env-sidecar}:projects";
    let redis::Value::BulkString(filed) = publisher.run(&["HGET", hash, "acme"]).await else {
        panic!("acme is in the hash");
    };
    let served = t.sidecar.store().project("acme").unwrap();
    assert_eq!(served.raw(), Some(RawDigest::of(&filed)));

    let mut reused = project("acme", 1);
    reused["environments"][0]["name"] = serde_json::json!("renamed");
    publisher
        .run(&["HSET", hash, "acme", &reused.to_string()])
        .await;
    let refresh = t.post_admin("/admin/refresh", None).await;
    assert_eq!(
        refresh.body["rejected"][0]["project"], "acme",
        "{}",
        refresh.text
    );
    assert_eq!(refresh.body["rejected"][0]["reason"], "revision_reused");
    assert_eq!(refresh.body["changed"], 0);
    assert!(std::sync::Arc::ptr_eq(
        &served,
        &t.sidecar.store().project("acme").unwrap()
    ));

    let filed = String::from_utf8(filed).unwrap();
    publisher.run(&["HSET", hash, "acme", &filed]).await;
    let refresh = t.post_admin("/admin/refresh", None).await;
    assert_eq!(refresh.body["result"], "not_modified", "{}", refresh.text);
}

#[tokio::test]
async fn a_read_replica_is_followed_while_the_publisher_writes_to_the_primary() {
    let dir = tempfile::tempdir().unwrap();
    let Some((primary, replica)) = RedisServer::with_replica(dir.path()) else {
        return;
    };
    let mut publisher = Publisher::plain(&primary.url).await;
    publisher.write(&project("acme", 1)).await;
    // Started at once: until the replica's first sync it answers
    // MASTERDOWN, and the sidecar backs off rather than load nothing.
    let t = follow(dir.path(), &replica.url, |_| {}, no_secrets()).await;
    t.wait_ready().await;
    // Replication is asynchronous: the replica may have synced before
    // this write reached it, and then delivers it to the blocked XREAD.
    t.wait_revision("acme", 1).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");

    // XREAD BLOCK on the replica wakes when the primary's write arrives.
    publisher.write(&project("acme", 2)).await;
    t.wait_revision("acme", 2).await;
    publisher.remove("acme").await;
    eventually("acme removed through the replica", || async {
        t.sidecar.store().project("acme").is_none()
    })
    .await;
    let status = t.get_admin("/admin/status").await.body;
    assert_eq!(status["source"]["url"], replica.url.as_str());
}

#[tokio::test]
async fn a_trimmed_stream_leads_to_a_full_load_on_restart_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let Some((redis, mut publisher)) = redis_with_acme(dir.path()).await else {
        return;
    };
    let cache = dir.path().join("lkg.json");
    let cached = |c: &mut Config| c.cache.path = cache.clone();
    let first = follow(dir.path(), &redis.url, cached, no_secrets()).await;
    first.wait_ready().await;
    eventually("the cache written", || async {
        first.sidecar.cache().log().successes > 0
    })
    .await;
    first.sidecar.shutdown().await;

    // While it is away: changes, then the stream trimmed past its cursor.
    publisher.write(&project("acme", 2)).await;
    publisher.write(&project("globex", 1)).await;
    publisher
        .run(&["XTRIM", "{env-sidecar}:changes", "MAXLEN", "0"])
        .await;

    let second = follow(
        dir.path(),
        &redis.url,
        |c| c.cache.path = dir.path().join("lkg.json"),
        no_secrets(),
    )
    .await;
    // Serves the cache at once, then reloads everything.
    assert_eq!(second.served("acme", "qa").await, "qa-r1");
    second.wait_revision("acme", 2).await;
    second.wait_revision("globex", 1).await;
    let m = second.get_admin("/metrics").await.text;
    assert!(
        m.contains("env_sidecar_sync_requests_total{kind=\"snapshot\",result=\"ok\"} 1"),
        "a full load: {m}"
    );
}

#[tokio::test]
async fn redis_down_keeps_serving_restarts_from_the_cache_and_follows_again() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut redis, _)) = redis_with_acme(dir.path()).await else {
        return;
    };
    let t = follow_cached(dir.path(), &redis.url).await;
    t.wait_ready().await;
    eventually("the cache written", || async {
        t.sidecar.cache().log().successes > 0
    })
    .await;

    redis.kill();
    t.wait_error_containing("Redis").await;
    for _ in 0..5 {
        assert_eq!(t.served("acme", "qa").await, "qa-r1");
    }
    assert_eq!(t.get_admin("/readyz").await.status, 200);

    // A restart while Redis is still down serves the cache at once.
    let restarted = follow(
        dir.path(),
        &redis.url,
        |c| c.cache.path = dir.path().join("lkg.json"),
        no_secrets(),
    )
    .await;
    assert_eq!(restarted.get_admin("/readyz").await.status, 200);
    assert_eq!(restarted.served("acme", "qa").await, "qa-r1");

    // Redis comes back (with the data, as a replica would have it).
    redis.restart();
    let mut publisher = Publisher::plain(&redis.url).await;
    publisher.write(&project("acme", 2)).await;
    t.wait_revision("acme", 2).await;
    restarted.wait_revision("acme", 2).await;
}

#[tokio::test]
async fn an_emptied_redis_cannot_remove_every_project() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let mut publisher = Publisher::plain(&redis.url).await;
    for i in 0..12 {
        publisher.write(&project(&format!("p{i}"), 1)).await;
    }
    let t = follow(dir.path(), &redis.url, |_| {}, no_secrets()).await;
    t.wait_ready().await;
    assert_eq!(t.sidecar.store().project_count(), 12);
    // Failover to an empty Redis: no population marker, so what it
    // holds (nothing) is not the population; nothing is removed.
    redis.restart();
    t.wait_population_incomplete().await;
    assert_eq!(t.sidecar.store().project_count(), 12, "nothing removed");
    // A writer claims the empty hash is complete: the blast-radius guard
    // still refuses.
    let mut publisher = Publisher::plain(&redis.url).await;
    publisher
        .run(&["SET", "{env-sidecar}:population", "0"])
        .await;
    t.wait_error_containing("refusing to remove 12 of 12").await;
    assert_eq!(t.sidecar.store().project_count(), 12, "nothing removed");
    assert_eq!(t.served("p3", "qa").await, "qa-r1");
    let m = t.get_admin("/metrics").await.text;
    assert!(
        m.contains("env_sidecar_updates_refused_total{reason=\"mass_removal\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn requirepass_takes_the_password_from_token_env() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        password: Some("r3dis-pw".into()),
        ..Setup::default()
    };
    let Some(redis) = RedisServer::start(dir.path(), setup) else {
        return;
    };
    let mut publisher = Publisher::connect(&redis.url, Some("r3dis-pw"), TlsFiles::default()).await;
    publisher.write(&project("acme", 1)).await;
    // Wrong password: never ready, and the password is never shown.
    let wrong = follow(
        dir.path(),
        &redis.url,
        |c| common::redis_mut(c).token_env = "PW".into(),
        Env::from_pairs([("PW", "nope")]),
    )
    .await;
    wrong.wait_error_containing("Redis").await;
    assert_eq!(wrong.get_admin("/readyz").await.status, 503);
    let status = wrong.get_admin("/admin/status").await.text;
    assert!(
        !status.contains("nope") && !status.contains("r3dis-pw"),
        "{status}"
    );
    // Right password.
    let right = follow(
        dir.path(),
        &redis.url,
        |c| common::redis_mut(c).token_env = "PW".into(),
        Env::from_pairs([("PW", "r3dis-pw")]),
    )
    .await;
    right.wait_ready().await;
    assert_eq!(right.served("acme", "qa").await, "qa-r1");
}

#[tokio::test]
async fn rediss_with_a_certificate_the_test_made() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pki) = Pki::make(dir.path()) else {
        return;
    };
    let ca = pki.ca.clone();
    let setup = Setup {
        tls: Some(pki),
        ..Setup::default()
    };
    let Some(redis) = RedisServer::start(dir.path(), setup) else {
        return;
    };
    assert!(redis.url.starts_with("rediss://"));
    let tls = TlsFiles {
        ca_file: Some(ca.clone()),
        ..TlsFiles::default()
    };
    let mut publisher = Publisher::connect(&redis.url, None, tls).await;
    publisher.write(&project("acme", 1)).await;
    let t = follow(
        dir.path(),
        &redis.url,
        |c| common::redis_mut(c).tls.ca_file = Some(ca.clone()),
        no_secrets(),
    )
    .await;
    t.wait_ready().await;
    publisher.write(&project("acme", 2)).await;
    t.wait_revision("acme", 2).await;
    // Without trusting the CA, TLS fails (and nothing loads).
    let untrusting = follow(dir.path(), &redis.url, |_| {}, no_secrets()).await;
    untrusting.wait_error_containing("Redis").await;
    assert_eq!(untrusting.get_admin("/readyz").await.status, 503);
}

#[tokio::test]
async fn the_simulator_publishes_to_redis_and_propagation_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let sim = env_sidecar::sim::simulator::Simulator::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let written = sim
        .mirror_to_redis(&redis.url, None, "env-sidecar")
        .await
        .unwrap();
    sim.generate(50);
    let t = follow(dir.path(), &redis.url, |_| {}, no_secrets()).await;
    t.wait_ready().await;
    eventually("the population", || async {
        t.sidecar.store().project_count() == 50
    })
    .await;
    sim.mutate(50, 10);
    eventually("mutations written and served", || async {
        written.load(std::sync::atomic::Ordering::Relaxed) >= 60
            && t.sidecar
                .store()
                .projects()
                .iter()
                .filter(|p| p.revision() > 1)
                .count()
                >= 1
    })
    .await;
    let m = t.get_admin("/metrics").await.text;
    let count: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("env_sidecar_propagation_delay_seconds_count "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(count >= 1.0, "published_at was measured: {m}");
    sim.stop();
}
