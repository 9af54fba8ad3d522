//! `env-sidecar conformance --control-plane URL` against the simulator,
//! which must pass every check, and against the simulator breaking one
//! rule at a time (`--breach`), each of which it must catch by name.

use crate::common;

use common::fleet::run_async;
use common::{project, simulator};
use env_sidecar::sim::simulator::{Breach, Faults, Simulator};

/// A simulator with a change log reaching back past its revision, so the
/// change-batch check is exercised, not skipped.
async fn control_plane() -> Simulator {
    let sim = simulator(vec![project("acme-chat", 1), project("globex", 1)], None).await;
    sim.publish([project("acme-chat", 2)]);
    sim.remove(["globex"]);
    sim
}

async fn conformance(url: &str) -> (i32, String) {
    run_async(&["conformance", "--control-plane", url, "--wait", "1s"]).await
}

#[tokio::test]
async fn the_simulator_meets_every_rule() {
    let sim = control_plane().await;
    let (code, out) = conformance(&sim.url()).await;
    assert_eq!(code, 0, "{out}");
    for check in [
        "snapshot",
        "etag",
        "long poll",
        "change batch",
        "410",
        "project",
        "unknown project",
    ] {
        assert!(out.contains(&format!("ok    {check}: ")), "{check}: {out}");
    }
    // The batch just behind the snapshot: globex's removal.
    let batch = format!(
        "after={}: revision {}, 0 documents the sidecar accepts, 1 removed",
        sim.revision() - 1,
        sim.revision()
    );
    assert!(out.contains(&batch), "{out}");
    assert!(out.ends_with("7 checks, 7 passed, 0 failed\n"), "{out}");
}

/// Each broken control plane fails exactly the check of the rule it
/// breaks (and a check that needs what it broke), naming the section.
#[tokio::test]
async fn every_broken_control_plane_is_caught_by_name() {
    let sim = control_plane().await;
    for (breach, check, says) in [
        (Breach::MisspeltBatch, "long poll", "names neither"),
        (Breach::NoContentPoll, "long poll", "204 No Content"),
        (
            Breach::NoGone,
            "410",
            "a cursor it never gave, answered 200",
        ),
        (Breach::NoEtag, "etag", "the snapshot has no ETag"),
        (Breach::NoNotFound, "unknown project", "answered 200"),
        (Breach::NoWait, "long poll", "answered empty at once"),
    ] {
        sim.set_faults(Faults {
            breach: Some(breach),
            ..Faults::default()
        });
        let (code, out) = conformance(&sim.url()).await;
        assert_eq!(code, 1, "{breach:?}: {out}");
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("FAIL  {check}: ")))
            .unwrap_or_else(|| panic!("{breach:?} not caught by {check}: {out}"));
        assert!(line.contains(says), "{breach:?}: {line}");
        assert!(line.contains("(see docs/control-plane.md#"), "{line}");
    }
}

/// A control plane that forgot its change log and answers an old cursor
/// with an empty batch instead of `410` loses changes silently: the
/// batch just behind its revision names nothing.
#[tokio::test]
async fn a_forgotten_change_log_answered_without_410_is_caught() {
    let sim = control_plane().await;
    sim.compact();
    let (code, out) = conformance(&sim.url()).await;
    assert_eq!(code, 0, "410 is the right answer: {out}");
    assert!(out.contains("skip  change batch: "), "{out}");
    sim.set_faults(Faults {
        breach: Some(Breach::NoGone),
        ..Faults::default()
    });
    let (code, out) = conformance(&sim.url()).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  change batch: ") && out.contains("naming no change"),
        "{out}"
    );
}

#[tokio::test]
async fn a_control_plane_that_cannot_be_reached_exits_2() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, out) = conformance(&format!("http://127.0.0.1:{port}")).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("error: "), "{out}");
}

/// A token is sent from the variable named: without it, the checker says
/// the control plane refused, with it every rule holds.
#[tokio::test]
async fn the_bearer_token_comes_from_the_variable_named() {
    let sim = simulator(vec![project("acme-chat", 1)], Some("s3cret")).await;
    let (code, out) = conformance(&sim.url()).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  snapshot: control plane answered 401"),
        "{out}"
    );
    let url = sim.url();
    let (code, out) = tokio::task::spawn_blocking(move || {
        common::fleet::run_with_env(
            &[
                "conformance",
                "--control-plane",
                &url,
                "--token-env",
                "CP_TOKEN",
            ],
            &[("CP_TOKEN", "s3cret")],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
}

/// `conformance --redis URL` against a keyspace `publish` wrote: every
/// rule holds.
async fn published_redis(dir: &std::path::Path) -> Option<common::redis::RedisServer> {
    let redis = common::redis::RedisServer::start(dir, common::redis::Setup::default())?;
    let file = common::json_file(
        dir,
        "v1.json",
        &common::snapshot(1, vec![project("acme-chat", 1), project("globex", 1)]),
    );
    let (code, out) = run_async(&["publish", "--redis", &redis.url, file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}");
    Some(redis)
}

async fn conformance_redis(url: &str) -> (i32, String) {
    run_async(&["conformance", "--redis", url]).await
}

#[tokio::test]
async fn a_keyspace_publish_wrote_meets_every_writer_rule() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = published_redis(dir.path()).await else {
        return;
    };
    let (code, out) = conformance_redis(&redis.url).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok    population marker: 2, the hash's field count"),
        "{out}"
    );
    assert!(
        out.contains("ok    positions: 2 projects, each at its newest entry"),
        "{out}"
    );
    assert!(out.ends_with("5 checks, 5 passed, 0 failed\n"), "{out}");
}

/// What a writer holding no rule in mind does with `redis-cli`, each
/// caught by the check of the rule it breaks.
#[tokio::test]
async fn every_broken_writer_rule_is_caught_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = published_redis(dir.path()).await else {
        return;
    };
    let cli = |args: &[&str]| common::attacker::redis_cli(redis.port, args);
    let doc = project("acme-chat", 2).to_string();
    // A write of the hash alone: no entry, no position.
    cli(&["HSET", "{env-sidecar}:projects", "acme-chat", &doc]);
    let (code, out) = conformance_redis(&redis.url).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "FAIL  stream: 1 projects' newest entry is not what the hash holds: acme-chat"
        ),
        "{out}"
    );
    // A position that names another entry.
    cli(&["HSET", "{env-sidecar}:positions", "globex", "1 0-1"]);
    let (_, out) = conformance_redis(&redis.url).await;
    let line = out
        .lines()
        .find(|l| l.starts_with("FAIL  positions: "))
        .unwrap_or_else(|| panic!("positions not caught: {out}"));
    assert!(line.contains("globex: \"1 0-1\", not \"1 "), "{line}");
    // A new project in the hash only: the marker no longer matches, and no
    // follower learnt of it.
    cli(&[
        "HSET",
        "{env-sidecar}:projects",
        "initech",
        &project("initech", 1).to_string(),
    ]);
    let (_, out) = conformance_redis(&redis.url).await;
    assert!(
        out.contains("FAIL  population marker: 2, but the hash holds 3 fields"),
        "{out}"
    );
    assert!(
        out.contains("no stream entry, so no follower learnt of them: initech"),
        "{out}"
    );
    // An entry naming no project, and a key of the wrong type.
    cli(&["XADD", "{env-sidecar}:changes", "*", "document", "{}"]);
    cli(&["DEL", "{env-sidecar}:population"]);
    cli(&["LPUSH", "{env-sidecar}:population", "3"]);
    let (_, out) = conformance_redis(&redis.url).await;
    assert!(out.contains("1 entries have no project field"), "{out}");
    assert!(
        out.contains("FAIL  keys: {env-sidecar}:population is a list, not a string"),
        "{out}"
    );
    // A port nothing listens on.
    let (code, out) = conformance_redis("redis://127.0.0.1:1").await;
    assert_eq!(code, 2, "{out}");
}
