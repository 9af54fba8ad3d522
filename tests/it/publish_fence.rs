//! Writer rule 3 as one step: `publish` reads what Redis holds, judges
//! the file against it, and writes the difference fenced on where the
//! stream ended when it read. A proxy between `publish` and a real
//! `redis-server` runs `FLUSHALL` right before the write reaches Redis:
//! the write is refused (`FENCED`), `publish` reads again and writes the
//! whole population, and the sidecar following Redis never removes a
//! project. Unfenced, the diff landed on the emptied hash and the marker
//! called one project the whole population: the sidecar removed the rest.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::fleet::{node_config, redis_source, run_capturing};
use common::process::SidecarProcess;
use common::redis::{RedisServer, Setup};
use common::{project, snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the write command starts on the wire (a RESP bulk string `EVAL`;
/// the reads use `EVAL_RO`).
const WRITE: &[u8] = b"$4\r\nEVAL\r\n";

/// A TCP proxy to Redis on `port` that runs `FLUSHALL` (once) just before
/// forwarding the first write it sees. Returns its port and whether it
/// flushed.
async fn flushing_proxy(port: u16) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let flushed = Arc::new(AtomicBool::new(false));
    let done = flushed.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let done = done.clone();
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                while let Ok(n) = client_read.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let chunk = &buf[..n];
                    if chunk.windows(WRITE.len()).any(|w| w == WRITE)
                        && !done.swap(true, Ordering::SeqCst)
                    {
                        let out = tokio::task::spawn_blocking(move || {
                            common::attacker::redis_cli(port, &["FLUSHALL"])
                        })
                        .await
                        .unwrap();
                        assert_eq!(out.trim(), "OK");
                    }
                    if server_write.write_all(chunk).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            });
        }
    });
    (proxy_port, flushed)
}

#[tokio::test]
async fn a_flush_between_the_read_and_the_write_never_marks_a_partial_hash() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), Setup::default()) else {
        return;
    };
    let ids = ["acme", "globex", "initech"];
    let v1 = common::json_file(
        dir.path(),
        "v1.json",
        &snapshot(1, ids.iter().map(|id| project(id, 1)).collect()),
    );
    let (code, out, err) = run_capturing(
        &["publish", "--redis", &redis.url, v1.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let node = SidecarProcess::start(
        &node_config(dir.path(), "gw-1", "eu", &redis_source(&redis.url), ""),
        &[],
    );
    common::eventually("every project served", || async {
        common::fleet::status(&node).await["projects"] == 3
    })
    .await;

    // acme at revision 2: a diff of one change, written through the proxy.
    let v2 = common::json_file(
        dir.path(),
        "v2.json",
        &snapshot(
            2,
            vec![
                project("acme", 2),
                project("globex", 1),
                project("initech", 1),
            ],
        ),
    );
    let (proxy, flushed) = flushing_proxy(redis.port).await;
    let via = format!("redis://127.0.0.1:{proxy}");
    let v2_path = v2.to_str().unwrap().to_owned();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run_capturing(&["publish", "--redis", &via, &v2_path], &[])
    })
    .await
    .unwrap();
    assert!(flushed.load(Ordering::SeqCst), "the proxy flushed Redis");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("waiting for Redis to hold what was read"),
        "{err}"
    );
    // Read again, the emptied Redis gets the whole population.
    assert!(
        out.ends_with("done published=3 removed=0 unchanged=0\n"),
        "{out}"
    );
    let cli = |args: &[&str]| {
        common::attacker::redis_cli(redis.port, args)
            .trim()
            .to_owned()
    };
    assert_eq!(cli(&["HLEN", "{env-sidecar}:projects"]), "3");
    assert_eq!(cli(&["GET", "{env-sidecar}:population"]), "3");

    common::eventually("acme at revision 2 served", || async {
        let url = format!(
            "http://{}/v1/resolve?project=acme&environment=qa",
            node.data_addr
        );
        reqwest::get(url).await.ok().is_some_and(|r| {
            r.headers()
                .get("x-snapshot-revision")
                .is_some_and(|v| v == "2")
        })
    })
    .await;
    assert_eq!(common::fleet::status(&node).await["projects"], 3);
    let log = node.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("update applied") && !l.contains("removed=0")),
        "the sidecar removed a project:\n{log}"
    );

    // The next publish of the same file finds every project in place.
    let (code, out, err) = run_capturing(
        &["publish", "--redis", &redis.url, v2.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.ends_with("done published=0 removed=0 unchanged=3\n"),
        "{out}"
    );
}
