//! Abuse over raw sockets: slow headers (slowloris), oversized headers and
//! request lines, oversized chunked batch bodies, and more connections than
//! allowed. None of it may stall other clients or crash anything.

use crate::common;

use std::time::Duration;

use common::TestSidecar;
use env_sidecar::server::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (or `limit` passes); returns what arrived
/// and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut buf = Vec::new();
    let closed = matches!(
        tokio::time::timeout(limit, stream.read_to_end(&mut buf)).await,
        Ok(Ok(_)) | Ok(Err(_))
    );
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

/// A connection that has sent the head of a chunked batch request; the
/// body's chunks are the caller's.
async fn chunked_batch(t: &TestSidecar) -> TcpStream {
    let mut stream = TcpStream::connect(t.sidecar.data_addr()).await.unwrap();
    stream
        .write_all(b"POST /v1/resolve/batch HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    stream
}

#[tokio::test]
async fn half_sent_requests_do_not_stall_other_clients_and_are_cut_off() {
    let t = TestSidecar::with_limits(Limits {
        header_read_timeout: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    let addr = t.sidecar.data_addr();
    let mut slow = Vec::new();
    for _ in 0..64 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /v1/resolve?project=acme HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    // Other clients are served meanwhile.
    for _ in 0..20 {
        assert_eq!(
            t.get("/v1/resolve?project=acme&environment=qa")
                .await
                .status,
            200
        );
    }
    // The slow ones are disconnected once the header deadline passes.
    for s in &mut slow {
        let (_, closed) = read_until_closed(s, Duration::from_secs(10)).await;
        assert!(closed, "a half-sent request was kept open");
    }
}

#[tokio::test]
async fn an_oversized_header_block_is_refused() {
    let t = TestSidecar::with_limits(Limits::default()).await;
    let big = "a".repeat(64 * 1024);
    let request = format!("GET /v1/resolve?project=acme HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\nconnection: close\r\n\r\n");
    let (status, _) = common::raw_request(t.sidecar.data_addr(), request.as_bytes()).await;
    assert_eq!(status, 431, "request header fields too large");
    assert_eq!(
        t.get("/v1/resolve?project=acme").await.status,
        200,
        "still serving"
    );
}

#[tokio::test]
async fn an_overlong_request_line_is_refused() {
    let t = TestSidecar::with_limits(Limits::default()).await;
    let path = format!("/v1/resolve?project=acme&pad={}", "p".repeat(64 * 1024));
    let (status, _) = common::raw_get(t.sidecar.data_addr(), path.as_bytes()).await;
    assert!(status == 414 || status == 431, "got {status}");
    // A long but acceptable request line with an invalid id is a 400, not a crash.
    let path = format!("/v1/resolve?project={}", "p".repeat(4000));
    let (status, text) = common::raw_get(t.sidecar.data_addr(), path.as_bytes()).await;
    assert_eq!(status, 400, "{text}");
}

#[tokio::test]
async fn a_chunked_batch_body_over_the_limit_is_413() {
    let t = TestSidecar::with_limits(Limits::default()).await;
    let mut stream = chunked_batch(&t).await;
    let chunk = vec![b' '; 64 * 1024];
    let mut refused_early = false;
    for _ in 0..24 {
        let head = format!("{:x}\r\n", chunk.len());
        if stream.write_all(head.as_bytes()).await.is_err()
            || stream.write_all(&chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            refused_early = true;
            break;
        }
    }
    if !refused_early {
        let _ = stream.write_all(b"0\r\n\r\n").await;
    }
    let (text, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"));
}

#[tokio::test]
async fn a_batch_body_sent_in_many_chunks_is_read_whole() {
    let t = TestSidecar::with_limits(Limits::default()).await;
    let mut stream = chunked_batch(&t).await;
    let body = br#"{"requests":[{"project":"acme"},{"project":"nope"},{"project":"acme","environment":"staging"}]}"#;
    for part in body.chunks(7) {
        let chunk = [format!("{:x}\r\n", part.len()).as_bytes(), part, b"\r\n"].concat();
        stream.write_all(&chunk).await.unwrap();
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let (text, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{json}");
    assert_eq!(results[0]["project"], "acme");
    assert_eq!(results[1]["error"]["code"], "unknown_project");
    assert_eq!(results[2]["environment"]["slug"], "staging");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_cleanly() {
    let t = TestSidecar::with_limits(Limits {
        max_connections: 8,
        ..Limits::default()
    })
    .await;
    let addr = t.sidecar.data_addr();
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Complete one request so the connection is surely accepted and kept.
        s.write_all(b"GET /v1/resolve?project=acme HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let (text, closed) = read_until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains(r#""code":"overloaded""#));
    assert!(closed);
    let m = t.get_admin("/metrics").await.text;
    assert!(
        m.contains("env_sidecar_connections_refused_total{listener=\"data\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("env_sidecar_open_connections{listener=\"data\"} 8"),
        "{m}"
    );
    // Freeing one slot lets a new client in.
    drop(held.pop());
    common::eventually("a free slot", || async {
        common::raw_get(addr, b"/v1/resolve?project=acme").await.0 == 200
    })
    .await;
}
