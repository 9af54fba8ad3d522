//! `env-sidecar publish` against a real `redis-server`: a valid file is
//! written (hash and stream, one fenced script per transaction) and a sidecar
//! following Redis serves it; an unchanged file writes nothing; a file
//! with one bad project writes nothing at all; a mass removal is refused
//! unless allowed; an unreachable Redis or a bad file exits 2.

use crate::common;

use std::path::Path;

use common::redis::{Publisher, RedisServer, Setup};
use common::{project, snapshot, TestSidecar};
use serde_json::json;

fn publish(url: &str, file: &Path, extra: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let mut args = vec!["publish", "--redis", url];
    args.extend_from_slice(extra);
    args.push(file.to_str().unwrap());
    common::fleet::run_with_env(&args, envs)
}

async fn stream_length(p: &mut Publisher) -> i64 {
    match p.run(&["XLEN", "{env-sidecar}:changes"]).await {
        redis::Value::Int(n) => n,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_valid_file_is_published_and_served_and_an_unchanged_one_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let file = common::json_file(
        dir.path(),
        "v1.json",
        &snapshot(1, vec![project("acme", 1), project("globex", 1)]),
    );
    let (code, out) = publish(&redis.url, &file, &[], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("published project=acme revision=1 entry="),
        "{out}"
    );
    assert!(
        out.ends_with("done published=2 removed=0 unchanged=0\n"),
        "{out}"
    );
    let mut p = Publisher::plain(&redis.url).await;
    assert_eq!(stream_length(&mut p).await, 2);

    // A sidecar following Redis serves what was published.
    let config = common::redis_config(dir.path(), &redis.url);
    let t = TestSidecar::launch_ready(config, None).await;
    assert_eq!(t.served("globex", "qa").await, "qa-r1");

    // The same file again changes nothing.
    let (code, out) = publish(&redis.url, &file, &[], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.ends_with("done published=0 removed=0 unchanged=2\n"),
        "{out}"
    );
    assert_eq!(stream_length(&mut p).await, 2, "nothing written");

    // A newer revision of one project: only it is written.
    let file = common::json_file(
        dir.path(),
        "v2.json",
        &snapshot(2, vec![project("acme", 2), project("globex", 1)]),
    );
    let (code, out) = publish(&redis.url, &file, &[], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.ends_with("done published=1 removed=0 unchanged=1\n"),
        "{out}"
    );
    t.wait_revision("acme", 2).await;
}

#[tokio::test]
async fn one_bad_project_means_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let good = common::json_file(
        dir.path(),
        "good.json",
        &snapshot(1, vec![project("acme", 1), project("globex", 1)]),
    );
    assert_eq!(publish(&redis.url, &good, &[], &[]).0, 0);
    let mut bad = project("globex", 2);
    bad["environments"][1]["slug"] = json!("renamed");
    let file = common::json_file(
        dir.path(),
        "bad.json",
        &snapshot(2, vec![project("acme", 2), bad]),
    );
    let (code, out) = publish(&redis.url, &file, &[], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("rejected project=globex revision=2 reason=slug_changed"),
        "{out}"
    );
    assert!(out.contains("nothing written"), "{out}");
    let mut p = Publisher::plain(&redis.url).await;
    assert_eq!(
        stream_length(&mut p).await,
        2,
        "not even acme's good revision"
    );
    // A stale revision is refused as well.
    let file = common::json_file(
        dir.path(),
        "stale.json",
        &snapshot(2, vec![project("acme", 0), project("globex", 1)]),
    );
    let (code, out) = publish(&redis.url, &file, &[], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("reason=stale_revision"), "{out}");
}

#[tokio::test]
async fn a_mass_removal_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let all = common::json_file(dir.path(), "all.json", &snapshot(1, common::numbered(12)));
    assert_eq!(publish(&redis.url, &all, &[], &[]).0, 0);
    let few = common::json_file(dir.path(), "few.json", &snapshot(2, common::numbered(2)));
    let (code, out) = publish(&redis.url, &few, &[], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("refused removing=10 of=12"), "{out}");
    let (code, out) = publish(&redis.url, &few, &["--allow-mass-removal"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed project=p11 entry="), "{out}");
    assert!(
        out.ends_with("done published=0 removed=10 unchanged=2\n"),
        "{out}"
    );
}

#[tokio::test]
async fn unreachable_redis_bad_files_and_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::json_file(
        dir.path(),
        "v1.json",
        &snapshot(1, vec![project("acme", 1)]),
    );
    // Nothing listens there: a failover's kind of failure, retried for
    // --retry-for, said on stderr, then exit 2.
    let (code, out, err) = common::fleet::run_capturing(
        &[
            "publish",
            "--redis",
            "redis://127.0.0.1:9/0",
            "--retry-for",
            "1s",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("error redis"), "{out}");
    assert!(
        err.contains("waiting for Redis to accept connections") && err.contains("gave up"),
        "{err}"
    );
    let setup = Setup {
        password: Some("pw-1".into()),
        ..Setup::default()
    };
    let Some(redis) = RedisServer::start(dir.path(), setup) else {
        return;
    };
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, b"{ not json").unwrap();
    assert_eq!(publish(&redis.url, &garbage, &[], &[]).0, 2);
    let (code, out) = publish(&redis.url, &file, &[], &[]);
    assert_eq!(code, 2, "no password: {out}");
    let (code, out) = publish(
        &redis.url,
        &file,
        &["--password-env", "MY_PW"],
        &[("MY_PW", "pw-1")],
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("pw-1"));
}

#[tokio::test]
async fn a_large_publish_goes_in_bounded_transactions_marked_incomplete_until_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    // 2 500 projects: three transactions of at most 1 000 changes.
    let ids: Vec<String> = (0..2500).map(|i| format!("p{i:04}")).collect();
    let file = common::json_file(
        dir.path(),
        "big.json",
        &snapshot(1, ids.iter().map(|id| project(id, 1)).collect()),
    );
    let mut p = Publisher::plain(&redis.url).await;
    p.run(&["CONFIG", "RESETSTAT"]).await;
    // Every write Redis executes, in order, as MONITOR would show it is
    // too much here: the slow log at threshold 0 keeps each command.
    p.run(&["CONFIG", "SET", "slowlog-log-slower-than", "0"])
        .await;
    p.run(&["CONFIG", "SET", "slowlog-max-len", "100000"]).await;
    let (code, out) = publish(&redis.url, &file, &[], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.ends_with("done published=2500 removed=0 unchanged=0\n"),
        "{out}"
    );
    let stats = common::attacker::redis_cli(redis.port, &["INFO", "commandstats"]);
    // One script per transaction, fenced on the stream's end.
    assert!(stats.contains("cmdstat_eval:calls=3,"), "{stats}");
    // The marker: removed by the first transaction, left alone by the
    // second, set by the last (each script call names what it does to
    // the population).
    let log = common::attacker::redis_cli(redis.port, &["SLOWLOG", "GET", "100000"]);
    let marker_writes: Vec<&str> = log
        .lines()
        .filter(|l| ["complete", "incomplete", "untouched"].contains(l))
        .collect();
    assert_eq!(
        marker_writes,
        ["complete", "untouched", "incomplete"],
        "newest first: {marker_writes:?}"
    );
    assert_eq!(
        p.run(&["GET", "{env-sidecar}:population"]).await,
        redis::Value::BulkString(b"2500".to_vec())
    );
    assert_eq!(stream_length(&mut p).await, 2500);
    let config = common::redis_config(dir.path(), &redis.url);
    let t = TestSidecar::launch_ready(config, None).await;
    assert_eq!(t.sidecar.store().project_count(), 2500);
}
