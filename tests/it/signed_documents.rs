//! Signed documents through the file source and the last-known-good
//! cache, in process: a sidecar that requires signatures serves only what
//! a trusted key signed, names every other document's rejection
//! (`unsigned`, `unknown_key`, `bad_signature`, `expired`), removes a
//! project only on a signed tombstone, never goes back to an older
//! revision (not after a removal, not after a restart from its cache),
//! takes a re-signed revision as the same revision, follows a key
//! rotation without a restart, and without keys keeps serving unsigned
//! documents as before.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::signing::{ago, forged, requiring, with_payload, TestKey};
use common::{eventually, project, snapshot, write_json, TestSidecar};
use env_sidecar::config::Config;
use serde_json::{json, Value};

async fn start(dir: &Path, initial: &Value, tweak: impl FnOnce(&mut Config)) -> TestSidecar {
    let mut config = common::file_config(dir);
    write_json(&dir.join("snapshot.json"), initial);
    tweak(&mut config);
    TestSidecar::launch_ready(config, None).await
}

fn reason(t: &TestSidecar, id: &str) -> Option<String> {
    t.sidecar
        .store()
        .rejection(id)
        .map(|r| r.reason.as_str().to_owned())
}

#[tokio::test]
async fn only_what_a_trusted_key_signed_is_served_and_every_other_document_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::new(dir.path(), "cp-2026");
    let stranger = TestKey::new(dir.path(), "stranger");
    let signed = key.sign(&project("signed", 1));
    let tampered = with_payload(&key.sign(&project("tampered", 1)), &project("tampered", 1));
    let retyped = {
        let mut e = key.sign(&project("retyped", 1));
        e["payloadType"] = json!("application/vnd.env-sidecar.tombstone+json");
        e
    };
    let expired = key.sign_at(&project("expired", 1), ago(60), Some(ago(1)));
    let projects = vec![
        signed,
        project("plain", 1),
        stranger.sign(&project("stranger", 1)),
        forged(&project("forged", 1), "cp-2026"),
        tampered,
        retyped,
        expired,
    ];
    let t = start(dir.path(), &snapshot(1, projects), |c| {
        requiring(c, &[&key.public_file], None)
    })
    .await;

    assert_eq!(t.served("signed", "qa").await, "qa-r1");
    for (id, why) in [
        ("plain", "unsigned"),
        ("stranger", "unknown_key"),
        ("forged", "bad_signature"),
        ("tampered", "bad_signature"),
        ("retyped", "bad_signature"),
        ("expired", "expired"),
    ] {
        assert_eq!(
            t.get(&format!("/v1/resolve?project={id}")).await.status,
            404,
            "{id}"
        );
        assert_eq!(reason(&t, id).as_deref(), Some(why), "{id}");
    }
    let status = t.get_admin("/admin/status").await.body;
    assert_eq!(status["trust"]["require_signatures"], true);
    assert_eq!(status["trust"]["keys"], json!(["cp-2026"]));
    let rejected: Vec<(&str, &str)> = status["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["project"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(rejected.contains(&("forged", "bad_signature")), "{status}");
    let metrics = t.get_admin("/metrics").await.text;
    for reason in ["unsigned", "unknown_key", "bad_signature", "expired"] {
        let line = format!("env_sidecar_project_rejections_total{{reason=\"{reason}\"}} ");
        let count: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(count >= 1.0, "{reason}: {metrics}");
    }
    // The introspection endpoint names the key.
    let doc = t.get("/v1/projects/signed").await.body;
    assert_eq!(doc["signature"]["keys"], json!(["cp-2026"]), "{doc}");
}

#[tokio::test]
async fn a_forged_update_keeps_the_last_good_revision_serving() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::new(dir.path(), "cp");
    let t = start(
        dir.path(),
        &snapshot(1, vec![key.sign(&project("acme", 1))]),
        |c| requiring(c, &[&key.public_file], None),
    )
    .await;
    for bad in [
        project("acme", 2),
        forged(&project("acme", 3), "cp"),
        with_payload(&key.sign(&project("acme", 4)), &project("acme", 5)),
    ] {
        let at = std::time::SystemTime::now();
        t.write_snapshot(&snapshot(2, vec![bad]));
        t.wait_source_read_after(at).await;
        assert_eq!(t.served("acme", "qa").await, "qa-r1");
    }
    assert_eq!(reason(&t, "acme").as_deref(), Some("bad_signature"));
    t.write_snapshot(&snapshot(3, vec![key.sign(&project("acme", 6))]));
    t.wait_revision("acme", 6).await;
    assert_eq!(reason(&t, "acme"), None, "a newer good revision clears it");
}

#[tokio::test]
async fn only_a_signed_tombstone_removes_and_no_older_revision_comes_back_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::new(dir.path(), "cp");
    let cache = dir.path().join("lkg.json");
    let v1 = key.sign(&project("acme", 1));
    let keep = key.sign(&project("keep", 1));
    let t = start(
        dir.path(),
        &snapshot(1, vec![v1.clone(), keep.clone()]),
        |c| requiring(c, &[&key.public_file], Some(&cache)),
    )
    .await;

    // Gone from the snapshot without a tombstone: refused, still served.
    let at = std::time::SystemTime::now();
    t.write_snapshot(&snapshot(2, vec![keep.clone()]));
    t.wait_source_read_after(at).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
    assert_eq!(reason(&t, "acme").as_deref(), Some("unsigned"));

    // A forged tombstone does not remove either.
    let mut fake = key.tombstone("acme", 2);
    fake["signatures"][0]["sig"] = json!(base64_of(&[9; 64]));
    let at = std::time::SystemTime::now();
    t.write_snapshot(&snapshot(3, vec![fake, keep.clone()]));
    t.wait_source_read_after(at).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");

    // The signed tombstone removes it.
    t.write_snapshot(&snapshot(4, vec![key.tombstone("acme", 2), keep.clone()]));
    eventually("acme removed", || async {
        t.sidecar.store().project("acme").is_none()
    })
    .await;
    assert_eq!(t.sidecar.store().floor_revision("acme"), Some(2));

    // Replaying the old, validly signed revision 1 does not bring it back.
    let at = std::time::SystemTime::now();
    t.write_snapshot(&snapshot(5, vec![v1.clone(), keep.clone()]));
    t.wait_source_read_after(at).await;
    assert!(t.sidecar.store().project("acme").is_none());
    eventually("the cache written with the removal", || async {
        env_sidecar::sync::cache::load(&cache).is_ok_and(|c| {
            c.floors.contains(&(
                "acme".to_owned(),
                env_sidecar::model::floor::Floor::Removed(2),
            ))
        })
    })
    .await;
    let config_dir = t.dir.path().to_owned();
    t.sidecar.shutdown().await;
    drop(config_dir);

    // After a restart from the cache, the replay is still refused; a newer
    // signed revision is accepted.
    let t = start(dir.path(), &snapshot(5, vec![v1, keep]), |c| {
        requiring(c, &[&key.public_file], Some(&cache))
    })
    .await;
    assert!(t.sidecar.store().project("acme").is_none());
    assert_eq!(t.sidecar.store().floor_revision("acme"), Some(2));
    t.write_snapshot(&snapshot(6, vec![key.sign(&project("acme", 3))]));
    t.wait_revision("acme", 3).await;
}

#[tokio::test]
async fn a_restart_believes_the_signers_its_cache_recorded_while_they_are_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::new(dir.path(), "cp");
    let other = TestKey::new(dir.path(), "other");
    let cache = dir.path().join("lkg.json");
    let t = start(
        dir.path(),
        &snapshot(1, vec![key.sign(&project("acme", 1))]),
        |c| requiring(c, &[&key.public_file], Some(&cache)),
    )
    .await;
    eventually("the cache written", || async {
        t.sidecar.cache().log().successes >= 1
    })
    .await;
    t.sidecar.shutdown().await;
    let written = std::fs::read(&cache).unwrap();
    // Edited below as version 1 files (JSON), which still load by the
    // same rules; the file this build wrote is used again at the end.
    let file = common::cache_as_v1(&cache);
    let text = file.to_string();
    assert!(
        file["body"]["projects"][0]["payloadType"].is_string(),
        "envelopes are kept: {text}"
    );
    assert_eq!(file["body"]["signers"]["acme"], json!(["cp"]), "{text}");

    // The payload swapped and the checksum fixed: what someone with the
    // disk (outside what signatures protect against) can do.
    let mut swapped = file.clone();
    let envelope = file["body"]["projects"][0].clone();
    swapped["body"]["projects"][0] = with_payload(&envelope, &project("acme", 9));
    // Restarted with no readable source: only the cache could serve.
    let restart = |body: &Value, trusted: &TestKey| {
        let body = body.to_string();
        std::fs::write(
            &cache,
            format!(
                r#"{{"format":"{}","version":{},"crc32":"{:08x}","body":{body}}}"#,
                env_sidecar::sync::cache::FORMAT,
                env_sidecar::sync::cache::VERSION,
                crc32fast::hash(body.as_bytes())
            ),
        )
        .unwrap();
        let mut config = common::file_config(dir.path());
        config.source.kind = env_sidecar::config::Source::File(env_sidecar::config::FileConfig {
            path: dir.path().join("absent.json"),
        });
        requiring(&mut config, &[&trusted.public_file], Some(&cache));
        TestSidecar::launch(config, tempfile::tempdir().unwrap())
    };
    // The recorded signer still trusted: believed, not verified again.
    let t = restart(&swapped["body"], &key).await;
    t.wait_revision("acme", 9).await;
    t.sidecar.shutdown().await;
    // A cache without the record (an earlier version's): verified again.
    let mut unrecorded = swapped["body"].clone();
    unrecorded.as_object_mut().unwrap().remove("signers");
    let t = restart(&unrecorded, &key).await;
    eventually("the cached document judged", || async {
        reason(&t, "acme").is_some()
    })
    .await;
    assert_eq!(reason(&t, "acme").as_deref(), Some("bad_signature"));
    assert!(t.sidecar.store().project("acme").is_none());
    t.sidecar.shutdown().await;
    // The recorded signer no longer trusted: verified, and refused.
    let t = restart(&file["body"], &other).await;
    eventually("the cached document judged", || async {
        reason(&t, "acme").is_some()
    })
    .await;
    assert_eq!(reason(&t, "acme").as_deref(), Some("unknown_key"));
    assert!(t.sidecar.store().project("acme").is_none());
    t.sidecar.shutdown().await;
    // The same from the file this build wrote (its answers rendered):
    // the recorded signer no longer trusted, it is verified and refused.
    std::fs::write(&cache, &written).unwrap();
    let mut config = common::file_config(dir.path());
    config.source.kind = env_sidecar::config::Source::File(env_sidecar::config::FileConfig {
        path: dir.path().join("absent.json"),
    });
    requiring(&mut config, &[&other.public_file], Some(&cache));
    let t = TestSidecar::launch(config, tempfile::tempdir().unwrap()).await;
    eventually("the cached project judged", || async {
        reason(&t, "acme").is_some()
    })
    .await;
    assert_eq!(reason(&t, "acme").as_deref(), Some("unknown_key"));
    assert!(t.sidecar.store().project("acme").is_none());
}

#[tokio::test]
async fn max_signature_age_refuses_old_news_but_not_the_sidecars_own_cache() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::new(dir.path(), "cp");
    let cache = dir.path().join("lkg.json");
    // Five minutes old: within the 10 minutes allowed at first, past the
    // minute allowed after the restart.
    let fresh = key.sign_at(&project("acme", 1), ago(300), None);
    let stale = key.sign_at(&project("globex", 1), ago(3600), None);
    let t = start(dir.path(), &snapshot(1, vec![fresh, stale]), |c| {
        requiring(c, &[&key.public_file], Some(&cache));
        c.trust.max_signature_age = Duration::from_secs(600);
    })
    .await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
    assert_eq!(reason(&t, "globex").as_deref(), Some("expired"));
    eventually("the cache written", || async {
        t.sidecar.cache().log().successes >= 1
    })
    .await;
    t.sidecar.shutdown().await;

    // With a limit of one minute now, the cached document still loads.
    let mut config = common::file_config(dir.path());
    config.source.kind = env_sidecar::config::Source::File(env_sidecar::config::FileConfig {
        path: dir.path().join("absent.json"),
    });
    requiring(&mut config, &[&key.public_file], Some(&cache));
    config.trust.max_signature_age = Duration::from_secs(60);
    let t = TestSidecar::launch(config, tempfile::tempdir().unwrap()).await;
    t.wait_ready().await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
}

#[tokio::test]
async fn a_re_signed_revision_replaces_the_envelope_and_serves_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let old = TestKey::new(dir.path(), "old");
    let new = TestKey::new(dir.path(), "new");
    let ring = dir.path().join("ring.pub");
    std::fs::write(
        &ring,
        format!("{}{}", old.public.to_pem(), new.public.to_pem()),
    )
    .unwrap();
    let t = start(
        dir.path(),
        &snapshot(1, vec![old.sign(&project("acme", 1))]),
        |c| requiring(c, &[&ring], None),
    )
    .await;
    let before = t.get("/v1/projects/acme").await.body;
    t.write_snapshot(&snapshot(1, vec![new.sign(&project("acme", 1))]));
    eventually("acme re-signed by the new key", || async {
        t.sidecar
            .store()
            .project("acme")
            .and_then(|p| p.signature().map(|s| s.keyids.clone()))
            == Some(vec!["new".to_owned()])
    })
    .await;
    let after = t.get("/v1/projects/acme").await.body;
    assert_eq!(after["revision"], 1);
    assert_eq!(
        after["accepted_at"], before["accepted_at"],
        "the same revision"
    );
    assert_eq!(after["environments"], before["environments"]);

    // The same revision with another document is not a re-signing.
    let mut other = project("acme", 1);
    other["environments"][1]["pointers"]["prompts"]["summarize"] = json!("changed");
    let at = std::time::SystemTime::now();
    t.write_snapshot(&snapshot(1, vec![new.sign(&other)]));
    t.wait_source_read_after(at).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
}

#[tokio::test]
async fn keys_rotate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let old = TestKey::new(&keys, "cp-2026");
    let new = TestKey::new(dir.path(), "cp-2027");
    let t = start(
        dir.path(),
        &snapshot(1, vec![old.sign(&project("acme", 1))]),
        |c| requiring(c, &[&keys], None),
    )
    .await;
    // Signed by a key not yet trusted: refused.
    let at = std::time::SystemTime::now();
    t.write_snapshot(&snapshot(2, vec![new.sign(&project("acme", 2))]));
    t.wait_source_read_after(at).await;
    assert_eq!(reason(&t, "acme").as_deref(), Some("unknown_key"));

    // Add the new key: both live.
    std::fs::copy(&new.public_file, keys.join("cp-2027.pub")).unwrap();
    eventually("both keys trusted", || async {
        t.get_admin("/admin/status").await.body["trust"]["keys"] == json!(["cp-2026", "cp-2027"])
    })
    .await;
    t.write_snapshot(&snapshot(3, vec![new.sign(&project("acme", 3))]));
    t.wait_revision("acme", 3).await;

    // Remove the old key: what it signs is refused from now on, what is
    // served stays.
    std::fs::remove_file(keys.join("cp-2026.pub")).unwrap();
    eventually("only the new key trusted", || async {
        t.get_admin("/admin/status").await.body["trust"]["keys"] == json!(["cp-2027"])
    })
    .await;
    let at = std::time::SystemTime::now();
    t.write_snapshot(&snapshot(4, vec![old.sign(&project("acme", 4))]));
    t.wait_source_read_after(at).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r3");
    assert_eq!(reason(&t, "acme").as_deref(), Some("unknown_key"));

    // A broken key file changes nothing and says so.
    std::fs::write(keys.join("broken.pub"), "-----BEGIN PUBLIC KEY-----\n").unwrap();
    eventually("the key error shown", || async {
        let s = t.get_admin("/admin/status").await.body;
        s["trust"]["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("broken.pub"))
    })
    .await;
    assert_eq!(
        t.get_admin("/admin/status").await.body["trust"]["keys"],
        json!(["cp-2027"])
    );
}

#[tokio::test]
async fn without_keys_unsigned_documents_serve_as_before_and_an_envelope_is_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::new(dir.path(), "cp");
    let t = start(
        dir.path(),
        &snapshot(
            1,
            vec![project("plain", 1), key.sign(&project("signed", 1))],
        ),
        |_| {},
    )
    .await;
    assert_eq!(t.served("plain", "qa").await, "qa-r1");
    assert_eq!(reason(&t, "signed").as_deref(), Some("unknown_key"));
    // An unsigned removal still removes.
    t.write_snapshot(&snapshot(2, vec![]));
    eventually("plain removed", || async {
        t.sidecar.store().project("plain").is_none()
    })
    .await;
}

#[tokio::test]
async fn with_keys_but_not_required_both_kinds_serve_and_a_bad_signature_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::new(dir.path(), "cp");
    let projects = vec![
        project("plain", 1),
        key.sign(&project("signed", 1)),
        forged(&project("forged", 1), "cp"),
    ];
    let t = start(dir.path(), &snapshot(1, projects), |c| {
        c.trust.keys = vec![key.public_file.clone()];
    })
    .await;
    assert_eq!(t.served("plain", "qa").await, "qa-r1");
    assert_eq!(t.served("signed", "qa").await, "qa-r1");
    assert_eq!(reason(&t, "forged").as_deref(), Some("bad_signature"));
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn a_signing_simulator_is_followed_over_http_and_its_removals_are_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::new(dir.path(), "sim");
    let sim = env_sidecar::sim::simulator::Simulator::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    sim.sign_with(std::sync::Arc::new(
        env_sidecar::model::keys::parse_private(
            &std::fs::read_to_string(&key.private_file).unwrap(),
        )
        .unwrap(),
    ));
    sim.publish([project("acme", 1), project("globex", 1)]);
    let public = key.public_file.clone();
    let t = TestSidecar::follow(&sim.url(), move |c| requiring(c, &[&public], None)).await;
    t.wait_ready().await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
    sim.publish([project("acme", 2)]);
    t.wait_revision("acme", 2).await;
    sim.remove(["globex"]);
    eventually("globex removed by its tombstone", || async {
        t.sidecar.store().project("globex").is_none()
    })
    .await;
    assert_eq!(t.sidecar.store().floor_revision("globex"), Some(2));
}

#[tokio::test]
async fn the_simulator_binary_signs_what_it_serves() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::new(dir.path(), "sim");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/snapshot.json");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_control-plane-sim"))
        .arg("--snapshot")
        .arg(&sample)
        .arg("--sign-key")
        .arg(&key.private_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect(&line)
        .to_owned();
    let text = reqwest::get(format!("{url}/v1/snapshot"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let projects = body["projects"].as_array().unwrap();
    assert_eq!(projects.len(), 3);
    let snapshot = env_sidecar::model::wire::parse_snapshot(body.to_string().as_bytes()).unwrap();
    let trust = env_sidecar::model::trust::Trust::new(vec![key.public.clone()], true, None);
    for incoming in &snapshot.projects {
        let seal = incoming.seal().expect("an envelope");
        let opened = incoming.clone().open().expect("sealed").expect("it reads");
        trust
            .check(
                seal,
                opened.stamps(),
                std::time::SystemTime::now(),
                &env_sidecar::model::origin::Origin::Snapshot,
            )
            .expect("it verifies");
    }
}

#[test]
fn keys_made_by_openssl_sign_and_verify() {
    let Some(openssl) = common::system_tool("openssl", "openssl") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = (dir.path().join("k.pem"), dir.path().join("k.pub"));
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            private.to_str().unwrap(),
        ],
        vec![
            "pkey",
            "-in",
            private.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    ] {
        let out = std::process::Command::new(&openssl)
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/snapshot.json");
    let signed = dir.path().join("signed.json");
    let bin = env!("CARGO_BIN_EXE_env-sidecar");
    let out = std::process::Command::new(bin)
        .arg("sign")
        .arg("--key")
        .arg(&private)
        .arg(&sample)
        .arg("-o")
        .arg(&signed)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = std::process::Command::new(bin)
        .arg("validate")
        .arg("--trust-key")
        .arg(&public)
        .arg(&signed)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // No keyid line in openssl's files: the id is derived from the key.
    assert_eq!(text.matches(" signed_by=ed25519:").count(), 3, "{text}");
}
