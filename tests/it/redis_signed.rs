//! Signed documents on a real `redis-server`: a sidecar that requires
//! signatures follows `env-sidecar publish --sign-key`; a writer without
//! the key (plain `redis-cli`: `HSET` + `XADD` of a higher revision, a
//! forged signature, an unsigned removal) changes nothing that is served
//! and status names each rejection; an old, validly signed envelope
//! replayed after a restart from the cache is refused; a removal by signed
//! tombstone survives a restart; and the keys rotate on a running sidecar
//! (two keys live, the fleet re-signed, the old key removed).

use crate::common;

use std::path::Path;

use common::attacker::{redis_cli, write_as_attacker, CHANGES, POPULATION, PROJECTS};
use common::redis::{RedisServer, Setup};
use common::signing::{forged, signed_redis_follower, TestKey};
use common::{eventually, json_file, project, snapshot, TestSidecar};
use env_sidecar::config::Config;
use serde_json::{json, Value};

/// `env-sidecar publish --redis URL [--sign-key K] [--trust-key T]… FILE`,
/// which must succeed; its output.
fn publish_trusting(url: &str, file: &Path, key: Option<&Path>, trusted: &[&Path]) -> String {
    let mut args: Vec<&str> = Vec::new();
    if let Some(key) = key {
        args.extend(["--sign-key", key.to_str().unwrap()]);
    }
    for t in trusted {
        args.extend(["--trust-key", t.to_str().unwrap()]);
    }
    let (code, out) = common::fleet::publish(url, &args, file);
    assert_eq!(code, 0, "publish failed: {out}");
    out
}

fn publish(url: &str, file: &Path, key: Option<&Path>) -> String {
    publish_trusting(url, file, key, &[])
}

async fn start(config: Config) -> TestSidecar {
    TestSidecar::launch_ready(config, None).await
}

#[tokio::test]
async fn writers_without_the_key_change_nothing_that_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let key = TestKey::new(dir.path(), "cp-2026");
    let v1 = json_file(
        dir.path(),
        "v1.json",
        &snapshot(1, vec![project("acme", 1), project("globex", 1)]),
    );
    let out = publish(&redis.url, &v1, Some(&key.private_file));
    assert!(
        out.contains("published project=acme revision=1 entry=") && out.contains("signed=true"),
        "{out}"
    );
    let cache = dir.path().join("lkg.json");
    let t = start(signed_redis_follower(
        dir.path(),
        &redis.url,
        &[&key.public_file],
        &cache,
    ))
    .await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");

    let v2 = json_file(
        dir.path(),
        "v2.json",
        &snapshot(2, vec![project("acme", 2), project("globex", 1)]),
    );
    publish(&redis.url, &v2, Some(&key.private_file));
    t.wait_revision("acme", 2).await;

    // A higher revision, unsigned.
    write_as_attacker(redis.port, "acme", &project("acme", 3));
    t.wait_rejection_at("acme", "unsigned", Some(3)).await;
    // A higher revision with a signature claiming the trusted key id.
    write_as_attacker(redis.port, "acme", &forged(&project("acme", 4), "cp-2026"));
    t.wait_rejection_at("acme", "bad_signature", Some(4)).await;
    // Signed by a key of the attacker's own.
    let own = TestKey::new(dir.path(), "attacker");
    write_as_attacker(redis.port, "acme", &own.sign(&project("acme", 5)));
    t.wait_rejection_at("acme", "unknown_key", Some(5)).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r2");

    // An unsigned removal: the field deleted and a `removed` entry.
    redis_cli(redis.port, &["HDEL", PROJECTS, "globex"]);
    redis_cli(
        redis.port,
        &["XADD", CHANGES, "*", "project", "globex", "removed", "1"],
    );
    eventually("the removal refused", || async {
        t.sidecar
            .store()
            .rejection("globex")
            .is_some_and(|r| r.message.contains("listed as removed"))
    })
    .await;
    assert_eq!(t.served("globex", "qa").await, "qa-r1");
    // The attacker deletes the stream: a full load. The hash lost a
    // field behind the population marker's back, so the load is partial
    // (nothing removed) and the stream is followed until it is complete.
    redis_cli(redis.port, &["DEL", CHANGES]);
    t.wait_population_incomplete().await;
    assert_eq!(t.served("globex", "qa").await, "qa-r1");
    // The marker set to match: the load is complete, globex absent from
    // it, and its removal refused all the same (no signed tombstone).
    redis_cli(redis.port, &["SET", POPULATION, "1"]);
    eventually("a full load after the stream went", || async {
        t.sidecar
            .store()
            .rejection("globex")
            .is_some_and(|r| r.message.contains("absent from a full snapshot"))
    })
    .await;
    assert_eq!(t.served("globex", "qa").await, "qa-r1");

    let status = t.get_admin("/admin/status").await.body;
    let reasons: Vec<(String, String)> = status["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["project"].to_string(), r["reason"].to_string()))
        .collect();
    assert!(
        reasons.contains(&("\"globex\"".into(), "\"unsigned\"".into())),
        "{status}"
    );
    assert_eq!(status["trust"]["keys"], json!(["cp-2026"]));
}

#[tokio::test]
async fn an_old_valid_envelope_replayed_after_a_restart_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let key = TestKey::new(dir.path(), "cp");
    let v1 = json_file(
        dir.path(),
        "v1.json",
        &snapshot(1, vec![project("acme", 1), project("keep", 1)]),
    );
    publish(&redis.url, &v1, Some(&key.private_file));
    // What an attacker keeps: the revision-1 envelope, from the stream.
    let old = redis_cli(redis.port, &["HGET", PROJECTS, "acme"]);
    let old: Value = serde_json::from_str(old.trim()).unwrap();
    let v2 = json_file(
        dir.path(),
        "v2.json",
        &snapshot(2, vec![project("acme", 2), project("keep", 1)]),
    );
    publish(&redis.url, &v2, Some(&key.private_file));
    let v2_envelope = redis_cli(redis.port, &["HGET", PROJECTS, "acme"]);
    let v2_envelope: Value = serde_json::from_str(v2_envelope.trim()).unwrap();

    let cache = dir.path().join("lkg.json");
    let config = || signed_redis_follower(dir.path(), &redis.url, &[&key.public_file], &cache);
    let t = start(config()).await;
    t.wait_revision("acme", 2).await;
    eventually("revision 2 cached", || async {
        env_sidecar::sync::cache::load(&cache)
            .is_ok_and(|c| c.revisions().contains(&("acme".to_owned(), Some(2))))
    })
    .await;
    t.sidecar.shutdown().await;

    // While the sidecar is down, the old envelope goes back in, stream
    // and hash, and the stream is trimmed so a restart takes a full load.
    write_as_attacker(redis.port, "acme", &old);
    redis_cli(redis.port, &["DEL", CHANGES]);
    let t = start(config()).await;
    t.wait_full_load().await;
    assert_eq!(t.served("acme", "qa").await, "qa-r2", "the replay is stale");

    // The operator puts revision 2 back, then removes the project: a
    // tombstone at revision 3, which survives a restart: the revision-2
    // envelope replayed afterwards stays refused.
    publish(&redis.url, &v2, Some(&key.private_file));
    let gone = json_file(
        dir.path(),
        "gone.json",
        &snapshot(3, vec![project("keep", 1)]),
    );
    let out = publish(&redis.url, &gone, Some(&key.private_file));
    assert!(
        out.contains("removed project=acme revision=3 entry="),
        "{out}"
    );
    eventually("acme removed", || async {
        t.sidecar.store().project("acme").is_none()
    })
    .await;
    eventually("the removal cached", || async {
        env_sidecar::sync::cache::load(&cache).is_ok_and(|c| {
            c.floors.contains(&(
                "acme".to_owned(),
                env_sidecar::model::floor::Floor::Removed(3),
            ))
        })
    })
    .await;
    t.sidecar.shutdown().await;
    write_as_attacker(redis.port, "acme", &v2_envelope);
    redis_cli(redis.port, &["DEL", CHANGES]);
    let t = start(config()).await;
    t.wait_full_load().await;
    assert!(t.sidecar.store().project("acme").is_none(), "still removed");
    assert_eq!(t.served("keep", "qa").await, "qa-r1");
}

#[tokio::test]
async fn keys_rotate_on_a_running_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let (keys, old, new) = common::signing::rotation(dir.path());
    let v1 = json_file(
        dir.path(),
        "v1.json",
        &snapshot(1, vec![project("acme", 1), project("globex", 1)]),
    );
    publish(&redis.url, &v1, Some(&old.private_file));
    let cache = dir.path().join("lkg.json");
    let config = || signed_redis_follower(dir.path(), &redis.url, &[&keys], &cache);
    let t = start(config()).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");

    // 1. Add the new key: two keys live.
    std::fs::copy(&new.public_file, keys.join("cp-2027.pub")).unwrap();
    eventually("both keys trusted", || async {
        t.get_admin("/admin/status").await.body["trust"]["keys"] == json!(["cp-2026", "cp-2027"])
    })
    .await;
    // 2. Publish with it, believing what the old key signed: the same
    // revisions, re-signed.
    let old_public = keys.join("cp-2026.pub");
    let out = publish_trusting(&redis.url, &v1, Some(&new.private_file), &[&old_public]);
    assert!(out.contains("resealed project=acme revision=1"), "{out}");
    assert!(out.ends_with("resealed=2\n"), "{out}");
    for id in ["acme", "globex"] {
        eventually(&format!("{id} re-signed"), || async {
            t.sidecar
                .store()
                .project(id)
                .and_then(|p| p.signature().map(|s| s.keyids.clone()))
                == Some(vec!["cp-2027".to_owned()])
        })
        .await;
    }
    // Publishing it again re-signs nothing.
    let out = publish(&redis.url, &v1, Some(&new.private_file));
    assert!(
        out.ends_with("done published=0 removed=0 unchanged=2\n"),
        "{out}"
    );
    // 3. Remove the old key.
    std::fs::remove_file(keys.join("cp-2026.pub")).unwrap();
    eventually("only the new key trusted", || async {
        t.get_admin("/admin/status").await.body["trust"]["keys"] == json!(["cp-2027"])
    })
    .await;
    let v2 = json_file(
        dir.path(),
        "v2.json",
        &snapshot(2, vec![project("acme", 2), project("globex", 1)]),
    );
    publish(&redis.url, &v2, Some(&new.private_file));
    t.wait_revision("acme", 2).await;
    // The old key signs nothing any more.
    write_as_attacker(redis.port, "acme", &old.sign(&project("acme", 3)));
    t.wait_rejection_at("acme", "unknown_key", Some(3)).await;
    eventually("the re-signed envelopes cached", || async {
        let envelopes = common::cached_documents(&cache);
        envelopes.len() == 2
            && envelopes.iter().all(|text| {
                env_sidecar::model::envelope::parse(text)
                    .is_ok_and(|s| s.signatures.iter().all(|x| x.keyid == "cp-2027"))
            })
    })
    .await;
    t.sidecar.shutdown().await;
    // A restart with only the new key serves everything from the cache.
    let t = start(config()).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r2");
    assert_eq!(t.served("globex", "qa").await, "qa-r1");
}
