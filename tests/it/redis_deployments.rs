//! The Redis deployments beside one server, and what a sidecar costs
//! Redis, all with a real `redis-server`: TLS with a private CA and
//! client certificates required (`tls-auth-clients yes`) for the source,
//! the node reports, `publish` and `fleet` (flags and `--config`); a Unix
//! socket; a forced refresh answered while the follower waits in `XREAD
//! BLOCK`; the commands one sidecar sends an empty Redis; and no command
//! of a full load of 20 000 projects in Redis' slow log.

use crate::common;

use std::time::{Duration, Instant};

use common::attacker::redis_cli;
use common::fleet::{self, node_config, redis_source, reporting, run_async};
use common::redis::{Pki, Publisher, RedisServer, Setup};
use common::{eventually, json_file, project, redis_config, redis_mut, snapshot, TestSidecar};
use env_sidecar::config::Timing;
use env_sidecar::redis_client::{write_changes, Change, Population};

fn v1(dir: &std::path::Path) -> String {
    json_file(
        dir,
        "v1.json",
        &snapshot(1, vec![project("acme", 1), project("globex", 1)]),
    )
    .display()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_for_the_source_reports_publish_and_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pki) = Pki::make(dir.path()) else {
        return;
    };
    let setup = Setup {
        tls: Some(pki.clone()),
        client_auth: true,
        ..Setup::default()
    };
    let Some(redis) = RedisServer::start(dir.path(), setup) else {
        return;
    };
    let url = redis.url.clone();
    let (ca, cert, key) = (
        pki.ca.display().to_string(),
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
    );
    let file = v1(dir.path());
    // Without a client certificate the server refuses: nothing written.
    let (code, out) = run_async(&["publish", "--redis", &url, "--tls-ca-file", &ca, &file]).await;
    assert_eq!(code, 2, "{out}");
    // The CA and the client certificate, as flags.
    let tls = [
        "--tls-ca-file",
        ca.as_str(),
        "--tls-cert-file",
        cert.as_str(),
        "--tls-key-file",
        key.as_str(),
    ];
    let (code, out) =
        run_async(&[&["publish", "--redis", &url][..], &tls, &[&file]].concat()).await;
    assert_eq!(code, 0, "{out}");
    // A sidecar with the certificate follows and reports over TLS.
    let tls_keys =
        format!("tls_ca_file = \"{ca}\"\ntls_cert_file = \"{cert}\"\ntls_key_file = \"{key}\"");
    let config = node_config(
        dir.path(),
        "t1",
        "eu",
        &format!("{}\n{tls_keys}", redis_source(&url)),
        &reporting("1s"),
    );
    let node = fleet::start(&config, &[]);
    // fleet reads where the config says, with its TLS files.
    let config_path = config.display().to_string();
    let (code, out) = run_async(&[
        "fleet",
        "wait",
        "--config",
        &config_path,
        "--project",
        "acme",
        "--revision",
        "1",
        "--timeout",
        "20s",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("converged nodes=1 of=1"), "{out}");
    // publish --config writes where the sidecar reads.
    let v2 = json_file(
        dir.path(),
        "v2.json",
        &snapshot(2, vec![project("acme", 2), project("globex", 1)]),
    );
    let (code, out) = run_async(&[
        "publish",
        "--config",
        &config_path,
        "--wait",
        "--timeout",
        "20s",
        v2.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_async(&[&["fleet", "status", "--redis", &url][..], &tls].concat()).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("node=t1") && out.contains("1 converged"),
        "{out}"
    );
    assert!(!node.log().contains("panicked"));
    // Without its certificate a sidecar is refused and never ready.
    let refused_dir = tempfile::tempdir().unwrap();
    let mut config = redis_config(refused_dir.path(), &url);
    redis_mut(&mut config).tls.ca_file = Some(pki.ca.clone());
    let refused = TestSidecar::launch_with(config, refused_dir, common::test_options()).await;
    refused.wait_error_containing("Redis").await;
    assert_eq!(refused.get_admin("/readyz").await.status, 503);
}

#[tokio::test]
async fn a_unix_socket_is_followed_and_published_to() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock");
    let setup = Setup {
        unix_socket: Some(socket.clone()),
        ..Setup::default()
    };
    let Some(_redis) = RedisServer::start(dir.path(), setup) else {
        return;
    };
    let file = v1(dir.path());
    let (code, out) = run_async(&[
        "publish",
        "--redis",
        &format!("unix://{}", socket.display()),
        &file,
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    let url = format!("redis+unix://{}", socket.display());
    let t = TestSidecar::launch_ready(redis_config(dir.path(), &url), None).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
    let mut publisher = Publisher::plain(&url).await;
    let entry = publisher.write(&project("acme", 2)).await;
    t.wait_stream_entry(&entry).await;
    assert_eq!(t.served("acme", "qa").await, "qa-r2");
}

#[tokio::test]
async fn a_forced_refresh_is_answered_while_the_follower_waits_in_xread() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let mut publisher = Publisher::plain(&redis.url).await;
    publisher.write(&project("acme", 1)).await;
    let mut config = redis_config(dir.path(), &redis.url);
    // Blocked for far longer than a refresh may take.
    redis_mut(&mut config).timing.long_poll_wait = Duration::from_secs(60);
    let t = TestSidecar::launch_ready(config, None).await;
    let reply = t.post_admin("/admin/refresh", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["result"], "not_modified", "{}", reply.text);
    assert!(reply.body["error"].is_null(), "{}", reply.text);
    let reply = t.post_admin("/admin/refresh?project=acme", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// Commands `redis-server` counted (`INFO commandstats`), all kinds.
fn commands(port: u16) -> u64 {
    common::redis::command_calls(port)
        .into_iter()
        .filter(|(name, _)| name != "info")
        .map(|(_, calls)| calls)
        .sum()
}

#[tokio::test]
async fn an_empty_or_broken_redis_gets_a_few_commands_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let mut config = redis_config(dir.path(), &redis.url);
    // The shipped timing (backoff up to 30 s).
    redis_mut(&mut config).timing = Timing::default();
    let t = TestSidecar::launch_with(config, tempfile::tempdir().unwrap(), common::test_options())
        .await;
    // Empty: no population marker, so the population is incomplete and
    // the (missing) stream is followed.
    t.wait_population_incomplete().await;
    // Long enough to see a busy loop (it made over 1 900 commands a
    // second), short enough for every `cargo test`.
    let window = Duration::from_secs(5);
    let before = commands(redis.port);
    tokio::time::sleep(window).await;
    let empty = commands(redis.port) - before;
    // A writer that has nothing to publish marks an empty population
    // complete: ready with nothing, waiting on a stream that is not there.
    let mut publisher = Publisher::plain(&redis.url).await;
    publisher
        .run(&["SET", "{env-sidecar}:population", "0"])
        .await;
    // The follower would load when its backoff says (up to the shipped
    // 30 s plus jitter); an operator's refresh loads it now.
    let reply = t.post_admin("/admin/refresh", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    common::eventually("sidecar ready", || async {
        t.get_admin("/readyz").await.status == 200
    })
    .await;
    let before = commands(redis.port);
    tokio::time::sleep(window).await;
    let complete = commands(redis.port) - before;
    println!("commands in {window:?}: empty {empty}, empty and complete {complete}");
    // At most 4 a second on average, counting the commands its read-only
    // scripts run (it was over 1 900 a second).
    for (what, n) in [("empty", empty), ("complete", complete)] {
        assert!(n <= 20, "{what}: {n} commands in {window:?}");
    }
    assert_eq!(t.sidecar.store().project_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_load_of_20000_projects_never_blocks_redis_for_long() {
    const PROJECTS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let mut publisher = Publisher::plain(&redis.url).await;
    let ids: Vec<String> = (0..PROJECTS).map(|i| format!("p{i:05}")).collect();
    for (i, chunk) in ids.chunks(1000).enumerate() {
        let changes: Vec<Change> = chunk
            .iter()
            .map(|id| Change {
                project: id.clone(),
                document: Some(project(id, 1).to_string()),
            })
            .collect();
        let population = if (i + 1) * 1000 >= PROJECTS {
            Population::Complete
        } else {
            Population::Untouched
        };
        write_changes(&mut publisher.con, &publisher.keys, &changes, population)
            .await
            .unwrap();
    }
    let slow = |port: u16| redis_cli(port, &["SLOWLOG", "GET", "100"]);
    redis_cli(
        redis.port,
        &["CONFIG", "SET", "slowlog-log-slower-than", "10000"],
    );
    redis_cli(redis.port, &["SLOWLOG", "RESET"]);
    // Another client pings all along.
    let port = redis.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pings = tokio::task::spawn_blocking({
        let stop = stop.clone();
        move || {
            use std::io::{Read, Write};
            let mut worst = Duration::ZERO;
            let mut con = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let start = Instant::now();
                con.write_all(b"PING\r\n").unwrap();
                let mut reply = [0u8; 7];
                con.read_exact(&mut reply).unwrap();
                assert_eq!(&reply, b"+PONG\r\n");
                worst = worst.max(start.elapsed());
                std::thread::sleep(Duration::from_millis(1));
            }
            worst
        }
    });
    let t = TestSidecar::launch_ready(redis_config(dir.path(), &redis.url), None).await;
    eventually("every project", || async {
        t.sidecar.store().project_count() == PROJECTS
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let worst_ping = pings.await.unwrap();
    let during_load = slow(redis.port);
    // The same hash in one HGETALL, as full loads used to read it: the
    // slow log does see that.
    redis_cli(redis.port, &["SLOWLOG", "RESET"]);
    let started = Instant::now();
    let _ = redis_cli(redis.port, &["HGETALL", "{env-sidecar}:projects"]);
    let hgetall = started.elapsed();
    let with_hgetall = slow(redis.port);
    println!(
        "worst PING during the full load: {worst_ping:?}; one HGETALL through redis-cli: {hgetall:?}"
    );
    assert!(
        with_hgetall.contains("HGETALL"),
        "the slow log would not see a long command: {with_hgetall}"
    );
    assert!(
        during_load.trim().is_empty(),
        "a command of the full load took over 10 ms: {during_load}"
    );
}
