//! The real binary under SIGTERM: it stops accepting, lets an in-flight
//! request finish, flushes the last-known-good cache, exits 0, and never
//! logs a token.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::process::SidecarProcess;
use common::{project, snapshot};

#[test]
fn sigterm_under_load_drains_in_flight_requests_flushes_the_cache_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    common::write_json(
        &dir.path().join("snapshot.json"),
        &snapshot(1, vec![project("acme", 1)]),
    );
    let cache = dir.path().join("cache/lkg.json");
    let config = dir.path().join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"ENV_SIDECAR_TEST_SHUTDOWN_ADMIN\"\n\
             [source]\npath = \"{}\"\ntoken_env = \"ENV_SIDECAR_TEST_SHUTDOWN_CP\"\n[cache]\npath = \"{}\"\n",
            dir.path().join("snapshot.json").display(),
            cache.display()
        ),
    )
    .unwrap();
    let mut sidecar = SidecarProcess::start(
        &config,
        &[
            ("ENV_SIDECAR_TEST_SHUTDOWN_ADMIN", "admin-secret-value"),
            ("ENV_SIDECAR_TEST_SHUTDOWN_CP", "cp-secret-value"),
        ],
    );
    let (data_addr, admin_addr) = (sidecar.data_addr, sidecar.admin_addr);
    // Wait until it serves.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_status(data_addr, "/v1/resolve?project=acme") != Some(200) {
        assert!(Instant::now() < deadline, "never served");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The container health probe sees it ready.
    let health = common::shared::sidecar_command()
        .args(["health", "--addr", &admin_addr.to_string()])
        .status()
        .unwrap();
    assert!(health.success(), "health probe of a ready sidecar");

    // A batch request, in flight: headers and part of the body sent. With
    // `expect: 100-continue` the server says when the handler has started
    // reading the body, so the request is known to be in flight.
    let body = br#"{"requests":[{"project":"acme","environment":"qa"}]}"#;
    let mut inflight = TcpStream::connect(data_addr).unwrap();
    inflight
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(inflight, "POST /v1/resolve/batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n", body.len()).unwrap();
    let interim = read_head(&mut inflight);
    assert!(interim.starts_with("HTTP/1.1 100"), "interim: {interim:?}");
    inflight.write_all(&body[..10]).unwrap();

    // Four keep-alive clients resolving as fast as they can; each says when
    // it has its first answer.
    let (first, answered) = std::sync::mpsc::channel();
    let load: Vec<_> = (0..4)
        .map(|_| {
            let first = first.clone();
            std::thread::spawn(move || hammer(data_addr, first))
        })
        .collect();
    for _ in 0..4 {
        answered
            .recv_timeout(Duration::from_secs(10))
            .expect("every client gets an answer before the shutdown");
    }

    sidecar.terminate();
    // New connections are refused once the listener is closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect_timeout(&data_addr, Duration::from_millis(200)).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The in-flight request still completes.
    inflight.write_all(&body[10..]).unwrap();
    inflight
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = inflight.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "in-flight answer: {answer:?}"
    );
    assert!(answer.contains("qa-r1"));

    let exit = sidecar.wait_exit(Duration::from_secs(15));
    // Until its connection closed, every answer a client got was whole and 200.
    for worker in load {
        let (answered, bad) = worker.join().unwrap();
        assert!(answered > 0, "a client got no answer before the shutdown");
        assert!(bad.is_empty(), "answers during shutdown: {bad:?}");
    }
    let log = sidecar.log();
    assert_eq!(exit.code(), Some(0), "log:\n{log}");
    assert!(cache.exists(), "cache flushed at shutdown");
    assert!(common::cache_contains(&cache, "qa-r1"));
    assert!(log.contains("stopped"), "{log}");
    assert!(
        !log.contains("admin-secret-value") && !log.contains("cp-secret-value"),
        "a token was logged:\n{log}"
    );
}

#[test]
fn a_bad_config_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[source]\nrequest_timeout = \"soon\"\n").unwrap();
    let out = common::shared::sidecar_command()
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("source.request_timeout"), "{err}");
}

#[test]
fn the_health_subcommand_reports_readiness() {
    let out = common::shared::sidecar_command()
        .args(["health", "--addr", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "nothing listens on port 9");
}

/// Resolves over one keep-alive connection, reconnecting, until nothing
/// listens: (answers read whole, anything that was not a whole 200).
fn hammer(addr: SocketAddr, first: std::sync::mpsc::Sender<()>) -> (usize, Vec<String>) {
    let (mut answered, mut bad) = (0, Vec::new());
    while let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        loop {
            let sent = writer.write_all(
                b"GET /v1/resolve?project=acme&environment=qa HTTP/1.1\r\nhost: x\r\n\r\n",
            );
            if sent.is_err() {
                break; // closed between answers
            }
            match read_response(&mut reader) {
                Ok(None) => break, // closed before an answer began
                Err(e) => {
                    bad.push(format!("an answer cut short: {e}"));
                    break;
                }
                Ok(Some((200, body))) if body.contains("qa-r1") => {
                    answered += 1;
                    if answered == 1 {
                        let _ = first.send(());
                    }
                }
                Ok(Some((status, body))) => bad.push(format!("{status}: {body}")),
            }
        }
    }
    (answered, bad)
}

/// A response head, read byte by byte up to its blank line (nothing after
/// it is consumed).
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// One HTTP/1.1 response with a content-length. `None` when the
/// connection ended before any byte of an answer (a close or reset between
/// answers); an error once an answer has begun.
fn read_response(reader: &mut impl std::io::BufRead) -> std::io::Result<Option<(u16, String)>> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => return Ok(None),
        Err(_) if line.is_empty() => return Ok(None),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let status = line.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.trim_end().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some((status, String::from_utf8_lossy(&body).into_owned())))
}

fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.read_to_string(&mut text).ok()?;
    text.get(9..12)?.parse().ok()
}
