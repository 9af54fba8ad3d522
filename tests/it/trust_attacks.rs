//! The attacks of a writer holding no key, as they were first carried
//! out against signed documents (issue 26), on a real `redis-server` with
//! `redis-cli` as the attacker and sidecars restarted from their cache.
//! Each failed before the fix:
//!
//! 1. an older envelope of the served revision written back after a key
//!    rotation (or one with an earlier expiry) replaced the kept one, and
//!    a restart without the old key dropped the project;
//! 2. a revision that expired set no floor at a restart, so an older
//!    signed revision written back was served;
//! 3. `publish --sign-key` judged by what it could not verify: an
//!    unsigned document blocked it, set the revision of its tombstones,
//!    or made it sign tombstones for ids nobody published;
//! 4. a forged envelope of any size was decoded and parsed before its
//!    signature was checked.

use crate::common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::attacker::{held, redis_cli, write_as_attacker, write_text_as_attacker, CHANGES};
use common::redis::{Publisher, RedisServer, Setup};
use common::signing::{forged, signed_redis_follower, TestKey};
use common::{eventually, json_file, project, snapshot, TestSidecar};
use env_sidecar::config::Config;
use env_sidecar::model::clock::ManualClock;
use serde_json::{json, Value};

fn publish(url: &str, args: &[&str], file: &Path) -> (i32, String) {
    common::fleet::publish(url, args, file)
}

async fn start(config: Config, clock: Option<&ManualClock>) -> TestSidecar {
    TestSidecar::launch_ready(config, clock).await
}

/// The key ids the sidecar's kept envelope of `id` was signed by.
/// `acme` and `keep` at revision 1 published signed with a new key `cp`
/// to the Redis at `url`, and a sidecar (config `tweak`ed) that follows
/// it requiring that key, ready.
async fn signed_acme_and_keep(
    dir: &Path,
    url: &str,
    tweak: impl FnOnce(&mut Config),
) -> (TestKey, TestSidecar) {
    let key = TestKey::new(dir, "cp");
    let v1 = json_file(
        dir,
        "v1.json",
        &snapshot(1, vec![project("acme", 1), project("keep", 1)]),
    );
    let sign = ["--sign-key", key.private_file.to_str().unwrap()];
    assert_eq!(publish(url, &sign, &v1).0, 0);
    let cache = dir.join("lkg.json");
    let mut config = signed_redis_follower(dir, url, &[&key.public_file], &cache);
    tweak(&mut config);
    (key, start(config, None).await)
}

fn signed_by(t: &TestSidecar, id: &str) -> Option<Vec<String>> {
    t.sidecar
        .store()
        .project(id)
        .and_then(|p| p.signature().map(|s| s.keyids.clone()))
}

/// When the kept envelope of `id` was signed.
fn signed_at(t: &TestSidecar, id: &str) -> Option<SystemTime> {
    t.sidecar
        .store()
        .project(id)
        .and_then(|p| p.signature().map(|s| s.signed_at))
}

/// Waits until the cache file holds `id` in an envelope signed by
/// exactly `keyid`.
async fn cached_signed_by(cache: &Path, id: &str, keyid: &str) {
    eventually(&format!("{id} cached as signed by {keyid}"), || async {
        env_sidecar::sync::cache::load(cache).is_ok_and(|c| {
            c.projects.iter().any(|p| {
                p.id() == id
                    && p.stored_text()
                        .ok()
                        .and_then(|text| env_sidecar::model::envelope::parse(&text).ok())
                        .is_some_and(|s| s.signatures.iter().all(|x| x.keyid == keyid))
            })
        })
    })
    .await;
}

#[tokio::test]
async fn an_older_envelope_replayed_after_a_rotation_is_stale_and_a_restart_keeps_the_project() {
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
    let old_key = old.private_file.to_str().unwrap();
    assert_eq!(publish(&redis.url, &["--sign-key", old_key], &v1).0, 0);
    // What the attacker keeps: the envelope signed with the old key.
    let old_envelope = held(redis.port, "acme");
    let cache = dir.path().join("lkg.json");
    let config = || signed_redis_follower(dir.path(), &redis.url, &[&keys], &cache);
    let t = start(config(), None).await;

    // The rotation, as docs/trust.md says: add the new key, publish with
    // it (believing what the old one signed), remove the old one.
    std::fs::copy(&new.public_file, keys.join("cp-2027.pub")).unwrap();
    eventually("both keys trusted", || async {
        t.get_admin("/admin/status").await.body["trust"]["keys"] == json!(["cp-2026", "cp-2027"])
    })
    .await;
    let old_public = keys.join("cp-2026.pub");
    let (code, out) = publish(
        &redis.url,
        &[
            "--sign-key",
            new.private_file.to_str().unwrap(),
            "--trust-key",
            old_public.to_str().unwrap(),
        ],
        &v1,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("resealed project=acme revision=1"), "{out}");
    eventually("acme re-signed", || async {
        signed_by(&t, "acme") == Some(vec!["cp-2027".to_owned()])
    })
    .await;

    // The attack: the old envelope of the same revision written back.
    let entry = write_as_attacker(redis.port, "acme", &old_envelope);
    t.wait_stream_entry(&entry).await;
    assert_eq!(
        signed_by(&t, "acme"),
        Some(vec!["cp-2027".to_owned()]),
        "an older envelope of the served revision is stale"
    );

    std::fs::remove_file(&old_public).unwrap();
    eventually("only the new key trusted", || async {
        t.get_admin("/admin/status").await.body["trust"]["keys"] == json!(["cp-2027"])
    })
    .await;
    cached_signed_by(&cache, "acme", "cp-2027").await;
    t.sidecar.shutdown().await;
    let t = start(config(), None).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
    assert_eq!(t.served("globex", "qa").await, "qa-r1");
}

#[tokio::test]
async fn an_envelope_with_an_earlier_expiry_cannot_replace_a_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let key = TestKey::new(dir.path(), "cp");
    let now = SystemTime::now();
    let clock = ManualClock::new(now);
    // Two envelopes of revision 1 the publisher made over time: the first
    // expiring in a minute, the later one not.
    let first = key.sign_at(
        &project("acme", 1),
        now - Duration::from_secs(20),
        Some(now + Duration::from_secs(60)),
    );
    let later = key.sign_at(&project("acme", 1), now - Duration::from_secs(10), None);
    let mut publisher = Publisher::plain(&redis.url).await;
    publisher.write(&first).await;
    let cache = dir.path().join("lkg.json");
    let config = || signed_redis_follower(dir.path(), &redis.url, &[&key.public_file], &cache);
    let t = start(config(), Some(&clock)).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
    let first_at = signed_at(&t, "acme").unwrap();
    publisher.write(&later).await;
    eventually("the later envelope kept", || async {
        signed_at(&t, "acme").is_some_and(|at| at > first_at)
    })
    .await;
    let later_at = signed_at(&t, "acme");

    // The attack: the first one again.
    let entry = write_as_attacker(redis.port, "acme", &first);
    t.wait_stream_entry(&entry).await;
    assert_eq!(
        signed_at(&t, "acme"),
        later_at,
        "an envelope signed earlier is stale"
    );
    eventually("the later envelope cached", || async {
        let c = common::cached_documents(&cache).join("\n");
        c.contains(later["payload"].as_str().unwrap())
            && !c.contains(first["payload"].as_str().unwrap())
    })
    .await;
    t.sidecar.shutdown().await;
    // Past the first envelope's expiry, a restart still serves.
    clock.advance(Duration::from_secs(120));
    let t = start(config(), Some(&clock)).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
}

#[tokio::test]
async fn a_revision_that_expired_still_holds_its_floor_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let key = TestKey::new(dir.path(), "cp");
    let now = SystemTime::now();
    let clock = ManualClock::new(now);
    let r57 = key.sign_at(&project("acme", 57), now - Duration::from_secs(20), None);
    let r58 = key.sign_at(
        &project("acme", 58),
        now - Duration::from_secs(10),
        Some(now + Duration::from_secs(60)),
    );
    let mut publisher = Publisher::plain(&redis.url).await;
    publisher.write(&r57).await;
    publisher.write(&project_signed(&key, "keep", 1)).await;
    let cache = dir.path().join("lkg.json");
    let config = || signed_redis_follower(dir.path(), &redis.url, &[&key.public_file], &cache);
    let t = start(config(), Some(&clock)).await;
    t.wait_revision("acme", 57).await;
    publisher.write(&r58).await;
    t.wait_revision("acme", 58).await;
    eventually("revision 58 cached", || async {
        env_sidecar::sync::cache::load(&cache)
            .is_ok_and(|c| c.revisions().iter().any(|(_, r)| *r == Some(58)))
    })
    .await;
    t.sidecar.shutdown().await;

    // Revision 58 expires while the sidecar is down; the attacker writes
    // revision 57 back, a validly signed document.
    clock.advance(Duration::from_secs(120));
    let entry = write_as_attacker(redis.port, "acme", &r57);
    let t = start(config(), Some(&clock)).await;
    t.wait_stream_entry(&entry).await;
    t.wait_rejection("acme", "expired").await;
    assert_eq!(
        t.served("acme", "qa").await,
        "status 404",
        "no way back to 57"
    );
    assert_eq!(t.sidecar.store().floor_revision("acme"), Some(58));
    assert_eq!(t.served("keep", "qa").await, "qa-r1");
    // The floor survives the cache being written again (another project
    // changed: the expired document is no longer in it) and a restart.
    publisher.write(&project_signed(&key, "keep", 2)).await;
    t.wait_revision("keep", 2).await;
    eventually("the floor cached", || async {
        env_sidecar::sync::cache::load(&cache).is_ok_and(|c| {
            c.floors
                .iter()
                .any(|(id, f)| id == "acme" && f.revision() == 58)
                && c.revisions().iter().all(|(id, _)| id != "acme")
        })
    })
    .await;
    t.sidecar.shutdown().await;
    let t = start(config(), Some(&clock)).await;
    t.wait_stream_entry(&entry).await;
    assert_eq!(t.served("acme", "qa").await, "status 404");
    assert_eq!(t.sidecar.store().floor_revision("acme"), Some(58));
    // A newer revision moves on.
    publisher
        .write(&key.sign_at(&project("acme", 59), clock_now(&clock), None))
        .await;
    t.wait_revision("acme", 59).await;
}

fn project_signed(key: &TestKey, id: &str, revision: u64) -> Value {
    key.sign(&project(id, revision))
}

fn clock_now(clock: &ManualClock) -> SystemTime {
    use env_sidecar::model::clock::Clock;
    clock.now()
}

#[tokio::test]
async fn publish_believes_only_what_its_keys_verify() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let key = TestKey::new(dir.path(), "cp");
    let sign = ["--sign-key", key.private_file.to_str().unwrap()];
    let v3 = json_file(
        dir.path(),
        "v3.json",
        &snapshot(
            3,
            vec![project("acme", 3), project("globex", 3), project("keep", 1)],
        ),
    );
    assert_eq!(publish(&redis.url, &sign, &v3).0, 0);
    let cache = dir.path().join("lkg.json");
    let t = start(
        signed_redis_follower(dir.path(), &redis.url, &[&key.public_file], &cache),
        None,
    )
    .await;
    t.wait_revision("globex", 3).await;

    // An unsigned document at an enormous revision, one at revision 1
    // under a served project, and an id nobody published.
    write_as_attacker(redis.port, "acme", &project("acme", 999_999_999_999));
    write_as_attacker(redis.port, "globex", &project("globex", 1));
    let entry = write_as_attacker(redis.port, "invented", &project("invented", 5));
    t.wait_stream_entry(&entry).await;

    // The next release: acme at 4, globex removed. Nothing unverifiable
    // blocks it, and globex's tombstone is above what the fleet serves.
    let v4 = json_file(
        dir.path(),
        "v4.json",
        &snapshot(4, vec![project("acme", 4), project("keep", 1)]),
    );
    let (code, out) = publish(&redis.url, &sign, &v4);
    assert_eq!(code, 0, "{out}");
    for id in ["acme", "globex", "invented"] {
        assert!(
            out.contains(&format!("unverified project={id} ")),
            "{id} named: {out}"
        );
    }
    assert!(out.contains("published project=acme revision=4"), "{out}");
    assert!(out.contains("removed project=globex revision=4"), "{out}");
    assert!(
        !out.contains("removed project=invented"),
        "no tombstone for an id nobody published: {out}"
    );
    t.wait_revision("acme", 4).await;
    eventually("globex removed by its tombstone", || async {
        t.sidecar.store().project("globex").is_none()
    })
    .await;
    assert_eq!(t.served("invented", "qa").await, "status 404");

    // A file older than what the fleet serves is refused, whatever the
    // hash holds: the fleet would ignore it.
    write_as_attacker(redis.port, "keep", &project("keep", 0));
    let v_old = json_file(
        dir.path(),
        "old.json",
        &snapshot(5, vec![project("acme", 2), project("keep", 1)]),
    );
    let (code, out) = publish(&redis.url, &sign, &v_old);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("rejected project=acme revision=2 reason=stale_revision"),
        "{out}"
    );
}

#[tokio::test]
async fn a_document_over_the_size_limit_is_refused_unread_from_the_hash_and_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let (_, t) = signed_acme_and_keep(dir.path(), &redis.url, |c| {
        c.source.max_document_bytes = 64 << 10
    })
    .await;

    // A forged envelope of 1 MiB: through the stream, then (the stream
    // deleted) through a full load, then a forced one-project refresh.
    let mut huge = forged(&project("acme", 2), "cp");
    huge["padding"] = json!("x".repeat(1 << 20));
    let entry = write_text_as_attacker(redis.port, "acme", &huge.to_string());
    t.wait_stream_entry(&entry).await;
    t.wait_rejection("acme", "too_large").await;
    t.sidecar.store().rejection("acme").unwrap();
    redis_cli(redis.port, &["DEL", CHANGES]);
    let before = t.sidecar.store().rejection("acme").unwrap().at;
    eventually("refused again by a full load", || async {
        t.sidecar
            .store()
            .rejection("acme")
            .is_some_and(|r| r.at > before && r.reason.as_str() == "too_large")
    })
    .await;
    let refresh = t.post_admin("/admin/refresh?project=acme", None).await;
    assert_eq!(
        refresh.body["rejected"][0]["reason"], "too_large",
        "{:?}",
        refresh.body
    );
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
    assert_eq!(t.served("keep", "qa").await, "qa-r1");
}

/// A writer holding no key writes an envelope carrying thousands of
/// keyless signatures (each would be tried with every trusted key): it is
/// refused as malformed before one is verified, the project keeps
/// serving, and the writer goes on applying what comes after it.
#[tokio::test]
async fn an_envelope_with_thousands_of_signatures_is_refused_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let (key, t) = signed_acme_and_keep(dir.path(), &redis.url, |_| {}).await;

    let mut flood = forged(&project("acme", 2), "cp");
    let one = json!({"sig": "A".repeat(86) + "=="});
    flood["signatures"] = Value::Array(vec![one; 5000]);
    let entry = write_text_as_attacker(redis.port, "acme", &flood.to_string());
    t.wait_stream_entry(&entry).await;
    t.wait_rejection("acme", "malformed").await;
    let message = t.sidecar.store().rejection("acme").unwrap().message;
    assert!(message.contains("5000 signatures; at most 16"), "{message}");
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
    // What comes after it is applied as usual.
    let v2 = json_file(
        dir.path(),
        "v2.json",
        &snapshot(2, vec![project("acme", 1), project("keep", 2)]),
    );
    let sign = ["--sign-key", key.private_file.to_str().unwrap()];
    assert_eq!(publish(&redis.url, &sign, &v2).0, 0);
    t.wait_revision("keep", 2).await;
}
