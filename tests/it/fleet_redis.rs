//! Fleet convergence on a real `redis-server` with real sidecar
//! processes: a publish is seen converging (`publish --wait`, `fleet
//! wait`, `fleet status`); a document no node accepts shows every node
//! rejecting with the reason; a killed node is lost (named by `fleet
//! status`, holding `fleet wait` back unless `--ignore-lost`); a paused
//! node (SIGSTOP) is named when `fleet wait` times out and converges once
//! resumed (SIGCONT); a node started from its cache with its data replica
//! down reports `cache` to the primary, then `live` once the replica is
//! back; a Redis that refuses report writes (an ACL, a read-only replica)
//! is a warning and a metric while serving goes on. Reports hold a
//! cursor and exceptions: a node refusing one project (unsigned) is named
//! for that project and not for others; two nodes serving 100 000
//! projects report one field each; a node still writing the older
//! per-project layout is judged by what it lists (a rolling upgrade);
//! reports in a Redis of their own are judged against the source's
//! positions (`--config`, `--positions-from`).

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::fleet::{self, node_config, redis_source, reporting, run, until};
use common::redis::{Publisher, RedisServer, Setup};
use common::{project, snapshot};
use serde_json::Value;

fn publish_file(dir: &Path, name: &str, doc: &Value) -> String {
    common::json_file(dir, name, doc).display().to_string()
}

fn revisions(acme: u64) -> Value {
    snapshot(acme, vec![project("acme", acme), project("globex", 1)])
}

/// Sidecar processes `(id, region)` following Redis at `url`, reporting
/// with a heartbeat of `interval`; returns once each has reported.
fn following(
    dir: &Path,
    url: &str,
    nodes: &[(&str, &str)],
    interval: &str,
) -> Vec<common::process::SidecarProcess> {
    let started = nodes
        .iter()
        .map(|(id, region)| {
            let config = node_config(dir, id, region, &redis_source(url), &reporting(interval));
            fleet::start(&config, &[])
        })
        .collect();
    let ids: Vec<&str> = nodes.iter().map(|(id, _)| *id).collect();
    fleet::listed(&["--redis", url], &ids);
    started
}

/// `fleet wait --redis URL --project P --revision R EXTRA…`.
fn wait_for(url: &str, project: &str, revision: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "fleet",
        "wait",
        "--redis",
        url,
        "--project",
        project,
        "--revision",
        revision,
    ];
    args.extend(extra);
    run(&args)
}

/// A Redis with `acme` and `globex` at revision 1, published.
fn redis_at_revision_1(dir: &Path) -> Option<RedisServer> {
    let redis = RedisServer::start(dir, Setup::default())?;
    let v1 = publish_file(dir, "v1.json", &revisions(1));
    assert_eq!(run(&["publish", "--redis", &redis.url, &v1]).0, 0);
    Some(redis)
}

#[tokio::test]
async fn a_publish_converges_and_a_document_no_node_accepts_shows_them_rejecting() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = redis_at_revision_1(dir.path()) else {
        return;
    };
    let url = redis.url.as_str();
    let nodes = following(
        dir.path(),
        url,
        &[("n1", "eu"), ("n2", "eu"), ("n3", "us")],
        "2s",
    );
    let (code, out) = wait_for(url, "acme", "1", &["--timeout", "20s"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3/3 nodes serve acme@1"), "{out}");

    // publish --wait: written, then waited for.
    let v2 = publish_file(dir.path(), "v2.json", &revisions(2));
    let (code, out) = run(&["publish", "--redis", url, "--wait", "--timeout", "20s", &v2]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("published project=acme revision=2"), "{out}");
    assert!(out.contains("3/3 nodes serve acme@2"), "{out}");
    assert!(out.contains("converged nodes=3 of=3"), "{out}");

    let (code, out) = run(&["fleet", "status", "--redis", url, "--project", "acme"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("node=n3 labels=region=us provenance=live")
            && out.contains("digest=equal behind=0 rejected=0 serves=2"),
        "{out}"
    );
    assert!(
        out.ends_with("3 nodes, 3 converged, 0 behind, 0 rejecting, 0 stale reports, 0 lost\n"),
        "{out}"
    );
    let (_, json) = run(&["fleet", "status", "--redis", url, "--json"]);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["summary"]["converged"], 3, "{json}");
    assert_eq!(json["source"]["projects"], 2);

    // Only the us node: a selector.
    let (code, out) = wait_for(
        url,
        "acme",
        "2",
        &["--selector", "region=us", "--timeout", "5s"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1/1 nodes serve acme@2"), "{out}");

    // A revision that breaks a rule, written past `publish`'s checks.
    let mut bad = project("acme", 3);
    bad["environments"][0]["color"] = "green".into();
    Publisher::plain(url).await.write(&bad).await;
    let (code, out) = wait_for(url, "acme", "3", &["--timeout", "5s"]);
    assert_eq!(code, 3, "{out}");
    for id in ["n1", "n2", "n3"] {
        assert!(
            out.contains(&format!(
                "rejecting node={id} project=acme revision=3 reason=invalid_color"
            )),
            "{out}"
        );
    }
    let out = until(
        Duration::from_secs(10),
        &["fleet", "status", "--redis", url],
        |o| o.contains("3 rejecting"),
    );
    assert!(out.contains("rejected=1"), "{out}");
    // Every node still serves revision 2.
    for node in &nodes {
        let body = reqwest::get(format!(
            "http://{}/v1/resolve?project=acme&environment=qa",
            node.data_addr
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        assert!(body.contains("qa-r2"), "{body}");
    }
}

#[tokio::test]
async fn a_killed_node_is_lost_and_wait_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = redis_at_revision_1(dir.path()) else {
        return;
    };
    let url = redis.url.as_str();
    let mut nodes = following(
        dir.path(),
        url,
        &[("k1", "eu"), ("k2", "eu"), ("k3", "us")],
        "1s",
    );
    until(
        Duration::from_secs(20),
        &["fleet", "status", "--redis", url],
        |o| o.contains("3 nodes, 3 converged"),
    );
    let killed = nodes.pop().unwrap();
    fleet::signal(&killed, "KILL");
    // Its hash expires three heartbeats after its last write: lost, not
    // forgotten.
    let out = until(
        Duration::from_secs(20),
        &["fleet", "status", "--redis", url],
        |o| o.contains("1 lost"),
    );
    assert!(
        out.contains("lost node=k3 labels=? last_seen=")
            && out.ends_with(
                "3 nodes, 2 converged, 0 behind, 0 rejecting, 0 stale reports, 1 lost\n"
            ),
        "{out}"
    );
    // It may still serve an old revision somewhere: not converged.
    let (code, out) = wait_for(url, "acme", "1", &["--timeout", "1s"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("2/2 nodes serve acme@1 (1 lost)") && out.contains("lost node=k3"),
        "{out}"
    );
    // Redis keeps no labels of a lost node: a selector cannot rule it out.
    let (code, out) = wait_for(
        url,
        "acme",
        "1",
        &["--selector", "region=eu", "--timeout", "1s"],
    );
    assert_eq!(code, 3, "{out}");
    let (code, out) = wait_for(url, "acme", "1", &["--ignore-lost", "--timeout", "5s"]);
    assert_eq!(code, 0, "{out}");
    // Silent for longer than --lost-after: forgotten.
    let (code, out) = wait_for(
        url,
        "acme",
        "1",
        &["--lost-after", "1ms", "--timeout", "5s"],
    );
    assert_eq!(code, 0, "{out}");
    let (_, out) = run(&["fleet", "status", "--redis", url, "--lost-after", "1ms"]);
    assert!(!out.contains("node=k3"), "{out}");
    let (_, json) = run(&["fleet", "status", "--redis", url, "--json"]);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["lost"][0]["node"], "k3", "{json}");
    assert_eq!(json["summary"]["lost"], 1, "{json}");
}

#[tokio::test]
async fn a_paused_node_is_named_until_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = redis_at_revision_1(dir.path()) else {
        return;
    };
    let url = redis.url.as_str();
    // A heartbeat long enough that the paused node is not stale yet.
    let nodes = following(
        dir.path(),
        url,
        &[("p1", "eu"), ("p2", "eu"), ("p3", "eu")],
        "30s",
    );
    let wait =
        |revision: &str, timeout: &str| wait_for(url, "acme", revision, &["--timeout", timeout]);
    assert_eq!(wait("1", "20s").0, 0);
    fleet::signal(&nodes[1], "STOP");
    let v2 = publish_file(dir.path(), "v2.json", &revisions(2));
    // Written, but not everywhere within the timeout: exit 3, apart from
    // a refusal (1, nothing written) and an unreachable store (2).
    let (code, out) = run(&["publish", "--redis", url, "--wait", "--timeout", "1s", &v2]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("published project=acme revision=2") && out.contains("timeout serving=2 of=3"),
        "{out}"
    );
    let (code, out) = run(&["publish", "--redis", url, "--wait", "--timeout", "1s", &v2]);
    assert_eq!(code, 3, "an unchanged file still waits: {out}");
    // Refused (an older revision than Redis holds): 1, nothing written,
    // no wait; an unreachable Redis: 2.
    let v1 = publish_file(dir.path(), "v1-again.json", &revisions(1));
    let started = std::time::Instant::now();
    let (code, out) = run(&["publish", "--redis", url, "--wait", "--timeout", "30s", &v1]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("nothing written") && !out.contains("nodes serve"),
        "{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it waited: {out}"
    );
    let (code, out) = run(&[
        "publish",
        "--redis",
        "redis://127.0.0.1:1",
        "--retry-for",
        "0s",
        "--wait",
        &v2,
    ]);
    assert_eq!(code, 2, "{out}");
    let (code, out) = wait("2", "2s");
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("timeout serving=2 of=3 needed=3"), "{out}");
    assert!(
        out.contains("behind node=p2 project=acme serves=<2 cursor="),
        "{out}"
    );
    let (code, out) = wait_for(
        url,
        "acme",
        "2",
        &["--min-fraction", "0.6", "--timeout", "5s"],
    );
    assert_eq!(code, 0, "two of three is enough for 0.6: {out}");
    fleet::signal(&nodes[1], "CONT");
    let (code, out) = wait("2", "20s");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3/3 nodes serve acme@2"), "{out}");
}

#[tokio::test]
async fn a_node_on_its_cache_with_its_replica_down_reports_cache_to_the_primary_then_live() {
    let dir = tempfile::tempdir().unwrap();
    let Some((primary, mut replica)) = RedisServer::with_replica(dir.path()) else {
        return;
    };
    let p = primary.url.as_str();
    let v1 = publish_file(dir.path(), "v1.json", &revisions(1));
    assert_eq!(run(&["publish", "--redis", p, &v1]).0, 0);
    // Data from the replica, reports to the primary.
    let extra = format!("{}\nredis_url = \"{p}\"", reporting("1s"));
    let config = node_config(dir.path(), "r1", "eu", &redis_source(&replica.url), &extra);
    let mut node = fleet::start(&config, &[]);
    let out = until(
        Duration::from_secs(20),
        &["fleet", "status", "--redis", p],
        |o| o.contains("node=r1") && o.contains("provenance=live") && o.contains("1 converged"),
    );
    assert!(out.contains("digest=equal"), "{out}");
    let cache = dir.path().join("r1-cache.json");
    common::eventually("the cache written", || async { cache.exists() }).await;
    node.terminate();
    assert!(node.wait_exit(Duration::from_secs(10)).success());

    replica.kill();
    let node = fleet::start(&config, &[]);
    until(
        Duration::from_secs(20),
        &["fleet", "status", "--redis", p],
        |o| o.contains("node=r1") && o.contains("provenance=cache"),
    );
    let ready = reqwest::get(format!("http://{}/readyz", node.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(ready, r#"{"ready":true,"provenance":"cache"}"#);
    assert!(fleet::metrics(&node)
        .await
        .contains("env_sidecar_serving_provenance{provenance=\"cache\"} 1"));

    replica.restart();
    until(
        Duration::from_secs(30),
        &["fleet", "status", "--redis", p],
        |o| o.contains("node=r1") && o.contains("provenance=live"),
    );
    assert_eq!(fleet::status(&node).await["provenance"], "live");
}

#[tokio::test]
async fn a_redis_that_refuses_report_writes_is_a_warning_and_serving_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let Some((primary, replica)) = RedisServer::with_replica(dir.path()) else {
        return;
    };
    let p = primary.url.as_str();
    // A user that may read and follow, never write.
    let mut admin = Publisher::plain(p).await;
    admin
        .run(&[
            "ACL",
            "SETUSER",
            "reader",
            "on",
            ">reader-pw",
            "~*",
            "+@read",
            "+@connection",
            "+eval_ro",
        ])
        .await;
    let v1 = publish_file(dir.path(), "v1.json", &revisions(1));
    assert_eq!(run(&["publish", "--redis", p, &v1]).0, 0);

    let as_reader = p.replace("redis://", "redis://reader@");
    let denied = node_config(
        dir.path(),
        "acl",
        "eu",
        &format!("{}\ntoken_env = \"READER_PW\"", redis_source(&as_reader)),
        &reporting("1s"),
    );
    let denied = fleet::start(&denied, &[("READER_PW", "reader-pw")]);
    // Reports to the read-only replica.
    let extra = format!("{}\nredis_url = \"{}\"", reporting("1s"), replica.url);
    let readonly = node_config(dir.path(), "ro", "eu", &redis_source(p), &extra);
    let readonly = fleet::start(&readonly, &[]);

    let v2 = publish_file(dir.path(), "v2.json", &revisions(2));
    assert_eq!(run(&["publish", "--redis", p, &v2]).0, 0);
    for (node, code) in [(&denied, "noperm"), (&readonly, "readonly")] {
        common::eventually("the refused write shown", || async {
            fleet::status(node).await["report"]["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("refuses") && m.to_lowercase().contains(code))
        })
        .await;
        common::eventually("revision 2 served", || async {
            reqwest::get(format!(
                "http://{}/v1/resolve?project=acme&environment=qa",
                node.data_addr
            ))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("qa-r2")
        })
        .await;
        let metrics = fleet::metrics(node).await;
        let refused: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("env_sidecar_report_writes_total{result=\"refused\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(refused >= 1.0, "{metrics}");
        let status = fleet::status(node).await;
        assert_eq!(status["ready"], true);
        assert!(
            status["last_error"].is_null(),
            "sync is not failing: {status}"
        );
        assert!(node
            .log()
            .contains("node report not written; serving and sync go on"));
    }
    let (_, out) = run(&["fleet", "status", "--redis", p]);
    assert!(
        out.ends_with("0 nodes, 0 converged, 0 behind, 0 rejecting, 0 stale reports, 0 lost\n"),
        "{out}"
    );
}

/// `HLEN` and `MEMORY USAGE` of node `id`'s report.
async fn report_size(publisher: &mut Publisher, id: &str) -> (i64, i64) {
    let key = format!("{{env-sidecar}}:node:{id}");
    let number = |v: redis::Value| match v {
        redis::Value::Int(n) => n,
        other => panic!("not a number: {other:?}"),
    };
    let fields = number(publisher.run(&["HLEN", &key]).await);
    let bytes = number(publisher.run(&["MEMORY", "USAGE", &key]).await);
    (fields, bytes)
}

#[tokio::test]
async fn a_node_refusing_one_project_is_named_for_it_and_not_for_others() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let url = redis.url.as_str();
    let key = common::signing::TestKey::new(dir.path(), "cp-2026");
    let mut publisher = Publisher::plain(url).await;
    publisher.write(&key.sign(&project("acme", 1))).await;
    publisher.write(&key.sign(&project("globex", 1))).await;
    // Both trust the key; only the strict node requires a signature.
    let trusting = |require: bool| {
        format!(
            "{}\n[trust]\nkeys = [\"{}\"]\nrequire_signatures = {require}",
            reporting("30s"),
            key.public_file.display()
        )
    };
    let (strict, lenient) = (trusting(true), trusting(false));
    let _nodes: Vec<_> = [("strict", strict), ("lenient", lenient)]
        .iter()
        .map(|(id, extra)| {
            let config = node_config(dir.path(), id, "eu", &redis_source(url), extra);
            fleet::start(&config, &[])
        })
        .collect();
    fleet::listed(&["--redis", url], &["strict", "lenient"]);
    let (code, out) = wait_for(url, "acme", "1", &["--timeout", "20s"]);
    assert_eq!(code, 0, "{out}");

    // A writer holding no key: the strict node refuses acme@2, serves on.
    publisher.write(&project("acme", 2)).await;
    let (code, out) = wait_for(url, "acme", "2", &["--timeout", "3s"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("rejecting node=strict project=acme revision=2 reason=unsigned"),
        "{out}"
    );
    assert!(out.contains("timeout serving=1 of=2"), "{out}");
    assert!(!out.contains("node=lenient"), "{out}");
    // Nothing else is held against it.
    let (code, out) = wait_for(url, "globex", "1", &["--timeout", "5s"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2/2 nodes serve globex@1"), "{out}");
    // Its report holds its one exception; the other node's, nothing.
    assert_eq!(report_size(&mut publisher, "strict").await.0, 2);
    assert_eq!(report_size(&mut publisher, "lenient").await.0, 1);
    let out = until(
        Duration::from_secs(10),
        &["fleet", "status", "--redis", url, "--project", "acme"],
        |out| out.contains("node=strict") && out.contains("nack=2:unsigned"),
    );
    assert!(out.contains("node=lenient"), "{out}");
    assert!(out.contains("serves=2"), "{out}");
    assert!(out.contains("1 rejecting"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_serving_100_000_projects_report_one_field_each() {
    // 25 000 in a plain `cargo test`: a report of one field is as telling
    // there (before reports by exception: one field per project).
    let projects = common::scaled(100_000) as usize;
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let url = redis.url.as_str();
    let mut publisher = Publisher::plain(url).await;
    let docs = (0..projects)
        .map(|i| {
            let id = format!("p{i:06}");
            let doc = project(&id, 1).to_string();
            (id, doc)
        })
        .collect();
    publisher.write_all(docs).await;
    let _nodes = following(dir.path(), url, &[("big-1", "eu"), ("big-2", "us")], "30s");
    let out = until(
        Duration::from_secs(240),
        &["fleet", "status", "--redis", url],
        |out| {
            out.ends_with("2 nodes, 2 converged, 0 behind, 0 rejecting, 0 stale reports, 0 lost\n")
        },
    );
    assert!(
        out.contains("node=big-1") && out.contains("digest=equal"),
        "{out}"
    );
    for id in ["big-1", "big-2"] {
        let (fields, bytes) = report_size(&mut publisher, id).await;
        assert_eq!(fields, 1, "{id}");
        assert!(bytes < 1024, "{id}'s report takes {bytes} bytes");
    }
    let last = format!("p{:06}", projects - 1);
    let (code, out) = wait_for(url, &last, "1", &["--timeout", "10s"]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn a_node_of_the_older_layout_is_judged_by_what_it_lists() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = redis_at_revision_1(dir.path()) else {
        return;
    };
    let url = redis.url.as_str();
    let _nodes = following(dir.path(), url, &[("new", "eu")], "30s");
    // A node not yet upgraded: its summary has no layout, and it lists
    // every project it serves.
    let mut publisher = Publisher::plain(url).await;
    let now = env_sidecar::model::timestamp::format_rfc3339(std::time::SystemTime::now());
    let summary = serde_json::json!({
        "node": "old", "labels": {"region": "eu"}, "version": "0.1.0",
        "source": "redis", "provenance": "live", "cursor": "0-0",
        "snapshot_age_seconds": 1.0, "started_at": now, "reported_at": now,
        "interval_seconds": 30.0, "digest": "sha256:older", "projects": 2, "rejected": 0,
    })
    .to_string();
    let key = "{env-sidecar}:node:old";
    let served = |revision: u64| format!("{revision} {now}");
    publisher
        .run(&[
            "HSET",
            key,
            "report",
            &summary,
            "p:acme",
            &served(1),
            "p:globex",
            &served(1),
        ])
        .await;
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    publisher
        .run(&["ZADD", "{env-sidecar}:nodes", &ms, "old"])
        .await;
    let (code, out) = wait_for(url, "acme", "1", &["--timeout", "20s"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2/2 nodes serve acme@1"), "{out}");

    let v2 = publish_file(dir.path(), "v2.json", &revisions(2));
    assert_eq!(run(&["publish", "--redis", url, &v2]).0, 0);
    let (code, out) = wait_for(url, "acme", "2", &["--timeout", "3s"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("behind node=old project=acme serves=1\n"),
        "{out}"
    );
    assert!(!out.contains("node=new"), "{out}");
    publisher.run(&["HSET", key, "p:acme", &served(2)]).await;
    let (code, out) = wait_for(url, "acme", "2", &["--timeout", "5s"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2/2 nodes serve acme@2"), "{out}");
}

#[tokio::test]
async fn reports_in_a_redis_of_their_own_are_judged_against_the_sources_positions() {
    let dir = tempfile::tempdir().unwrap();
    let Some(data) = redis_at_revision_1(dir.path()) else {
        return;
    };
    let reports_dir = dir.path().join("reports");
    std::fs::create_dir_all(&reports_dir).unwrap();
    let Some(reports) = RedisServer::start(&reports_dir, Setup::default()) else {
        return;
    };
    let extra = format!("{}\nredis_url = \"{}\"", reporting("30s"), reports.url);
    let config = node_config(dir.path(), "apart", "eu", &redis_source(&data.url), &extra);
    let _node = fleet::start(&config, &[]);
    let config = config.display().to_string();
    let wait = |from: &[&str], timeout: &str| {
        let mut args = vec!["fleet", "wait", "--project", "acme", "--revision", "1"];
        args.extend(from);
        args.extend(["--timeout", timeout]);
        run(&args)
    };
    // Its config says where both are.
    let (code, out) = wait(&["--config", &config], "20s");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1/1 nodes serve acme@1"), "{out}");
    // The report store alone holds no positions: nothing can be judged.
    let (code, out) = wait(&["--redis", &reports.url], "1s");
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("behind node=apart project=acme serves=?"),
        "{out}"
    );
    let (code, out) = wait(
        &["--redis", &reports.url, "--positions-from", &data.url],
        "5s",
    );
    assert_eq!(code, 0, "{out}");
}
