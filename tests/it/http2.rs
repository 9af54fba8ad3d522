//! HTTP/2 with prior knowledge (h2c) beside HTTP/1.1 on the same data-plane
//! port and Unix socket: every endpoint answers over both, with real
//! clients (curl, and a Rust HTTP/2 client with many streams on one
//! connection); and the limits hold on HTTP/2 too (silent and garbage
//! connections, stream floods, huge header blocks).

use crate::common;

use std::time::Duration;

use common::h2;
use common::{project, snapshot, TestSidecar};
use env_sidecar::server::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn sidecar() -> TestSidecar {
    TestSidecar::start(Some(&snapshot(1, vec![project("acme", 5)]))).await
}

#[tokio::test]
async fn curl_with_prior_knowledge_and_plain_http1_share_the_port() {
    let Some(curl) = common::system_tool("curl", "curl") else {
        return;
    };
    let t = sidecar().await;
    let url = t.data("/v1/resolve?project=acme&environment=qa");
    for flag in ["--http2-prior-knowledge", "--http1.1"] {
        let args = ["-s", "-i", flag, &url].map(str::to_owned);
        // Off the runtime: the sidecar under test runs on this thread.
        let curl = curl.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(curl).args(args).output()
        })
        .await
        .unwrap()
        .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let expected = if flag.contains('2') {
            "HTTP/2 200"
        } else {
            "HTTP/1.1 200"
        };
        assert!(text.starts_with(expected), "{flag}: {text}");
        assert!(text.contains("x-resolved-environment: qa"), "{text}");
        assert!(text.contains("\"qa-r5\""), "{text}");
    }
}

#[tokio::test]
async fn every_data_plane_endpoint_answers_over_http2() {
    let t = sidecar().await;
    let mut c = h2::connect(t.sidecar.data_addr()).await;
    let r = h2::get(&mut c, "/v1/resolve?project=acme&environment=canary", &[]).await;
    assert_eq!(
        (r.status, r.header("x-resolved-environment")),
        (200, Some("canary"))
    );
    let r = h2::get(&mut c, "/v1/resolve", &[("x-project-id", "acme")]).await;
    assert_eq!(r.json()["reason"], "not_requested");
    let r = h2::get(
        &mut c,
        "/v1/authz/v1/chat",
        &[("x-project-id", "acme"), ("x-environment", "qa")],
    )
    .await;
    assert_eq!(
        (r.status, r.header("x-resolution-outcome")),
        (200, Some("exact"))
    );
    let r = h2::get(&mut c, "/v1/projects", &[]).await;
    assert_eq!(r.json()["projects"][0]["id"], "acme");
    let r = h2::get(&mut c, "/v1/projects/acme", &[]).await;
    assert_eq!(r.json()["revision"], 5);
    let batch = http::Request::post("http://localhost/v1/resolve/batch")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"requests":[{"project":"acme","environment":"qa"},{"project":"nobody"}]}"#,
        )))
        .unwrap();
    let r = h2::send(&mut c, batch).await;
    let v = r.json();
    assert_eq!(v["results"][0]["pointers"]["prompts"]["summarize"], "qa-r5");
    assert_eq!(v["results"][1]["error"]["code"], "unknown_project");
    let r = h2::get(&mut c, "/v1/resolve?project=nobody", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "unknown_project");
}

#[tokio::test]
async fn many_concurrent_streams_on_one_connection() {
    let t = sidecar().await;
    let client = h2::connect(t.sidecar.data_addr()).await;
    let slugs = ["prod", "staging", "qa", "canary"];
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move {
                let slug = slugs[i % slugs.len()];
                let r = h2::get(
                    &mut c,
                    &format!("/v1/resolve?project=acme&environment={slug}"),
                    &[],
                )
                .await;
                (slug, r)
            })
        })
        .collect();
    for task in tasks {
        let (slug, r) = task.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json()["pointers"]["prompts"]["summarize"],
            format!("{slug}-r5")
        );
    }
}

#[tokio::test]
async fn http2_works_on_the_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("data.sock");
    let sock = socket.clone();
    let _t = TestSidecar::start_with(Some(&snapshot(1, vec![project("acme", 2)])), move |c| {
        c.server.unix_socket = sock.display().to_string()
    })
    .await;
    let mut c = h2::connect_io(tokio::net::UnixStream::connect(&socket).await.unwrap()).await;
    let r = h2::get(
        &mut c,
        "/v1/authz",
        &[("x-project-id", "acme"), ("x-environment", "staging")],
    )
    .await;
    assert_eq!(
        (r.status, r.header("x-resolved-environment")),
        (200, Some("staging"))
    );
}

/// Reads until the server closes (or `limit` passes); true when it closed.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = Vec::new();
    matches!(
        tokio::time::timeout(limit, stream.read_to_end(&mut buf)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn silent_and_garbage_connections_are_cut_and_others_keep_being_served() {
    let t = TestSidecar::with_limits(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let addr = t.sidecar.data_addr();
    // Connects and says nothing at all.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The HTTP/2 preface, then bytes that are no HTTP/2 frame.
    let mut garbage = tokio::net::TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    garbage.write_all(&[0xff; 64]).await.unwrap();
    // Half a preface, then silence.
    let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2").await.unwrap();
    // Meanwhile a real client is served.
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
    let mut c = h2::connect(addr).await;
    assert_eq!(
        h2::get(&mut c, "/v1/resolve?project=acme", &[])
            .await
            .status,
        200
    );
    for (name, stream) in [
        ("silent", &mut silent),
        ("garbage", &mut garbage),
        ("half preface", &mut half),
    ] {
        assert!(
            closed_within(stream, Duration::from_secs(5)).await,
            "{name} connection still open"
        );
    }
}

#[tokio::test]
async fn a_stream_flood_is_bounded_and_the_server_keeps_serving() {
    let t = TestSidecar::with_limits(Limits {
        max_streams: 8,
        ..Limits::default()
    })
    .await;
    let addr = t.sidecar.data_addr();
    let client = h2::connect(addr).await;
    // Far more concurrent streams than allowed, at once: each is either
    // answered or refused with REFUSED_STREAM (safe to retry; streams the
    // client opened before it saw the server's limit), never anything else.
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let mut c = client.clone();
            tokio::spawn(async move {
                let req = http::Request::get("http://localhost/v1/resolve?project=acme")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                c.ready().await.map_err(|e| e.to_string())?;
                match c.send_request(req).await {
                    Ok(resp) => Ok(resp.status().as_u16()),
                    Err(e) => Err(format!("{e:?}")),
                }
            })
        })
        .collect();
    let (mut answered, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(200) => answered += 1,
            Err(e) if e.contains("REFUSED_STREAM") => refused += 1,
            other => panic!("neither answered nor refused: {other:?}"),
        }
    }
    assert_eq!(answered + refused, 500);
    assert!(answered >= 8, "{answered} answered");
    // The same connection goes on serving.
    let mut c = client.clone();
    assert_eq!(
        h2::get(&mut c, "/v1/resolve?project=acme", &[])
            .await
            .status,
        200
    );
    // The server announced the limit.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    raw.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // empty SETTINGS
    let mut head = [0u8; 9];
    raw.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 4, "the server's first frame is SETTINGS");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut settings = vec![0u8; len];
    raw.read_exact(&mut settings).await.unwrap();
    let max_streams = settings
        .chunks(6)
        .find(|s| u16::from_be_bytes([s[0], s[1]]) == 0x3)
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert_eq!(max_streams, Some(8));
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
}

#[tokio::test]
async fn a_huge_header_block_is_refused_without_harm() {
    let t = sidecar().await;
    let mut c = h2::connect(t.sidecar.data_addr()).await;
    let big = "x".repeat(64 * 1024);
    let req = http::Request::get("http://localhost/v1/resolve?project=acme")
        .header("x-padding", big.as_str())
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    c.ready().await.unwrap();
    let refused = match c.send_request(req).await {
        Ok(resp) => resp.status() == 431,
        Err(_) => true,
    };
    assert!(
        refused,
        "a 64 KiB header block is refused (431 or a reset stream)"
    );
    // The server and other clients are fine.
    let mut other = h2::connect(t.sidecar.data_addr()).await;
    assert_eq!(
        h2::get(&mut other, "/v1/resolve?project=acme", &[])
            .await
            .status,
        200
    );
}
