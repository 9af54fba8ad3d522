//! HTTP/1.1 on the hot routes as it behaves on the wire, over raw
//! sockets: pipelining, requests in pieces, HTTP/1.0, `Connection:
//! close`, a body sent where none is read, header names in any case,
//! percent-decoding and absolute-form targets, framing that contradicts
//! itself, a `Date` on every answer, the order of an answer's headers and
//! the idle keep-alive timeout; a connection that moves from the hot
//! path to hyper mid-stream, and shutdown closing idle connections.
//! These run against the default, the hot path (`server::hot`) handing
//! over to hyper; the `http1` fuzz target holds hyper alone to the same
//! answers byte for byte.

use crate::common;

use std::time::Duration;

use common::TestSidecar;
use env_sidecar::server::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One answer as read off the wire.
#[derive(Debug)]
struct Answer {
    /// The status line's version (`HTTP/1.1`).
    version: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A raw connection and the bytes read from it not yet taken as answers.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    async fn open(t: &TestSidecar) -> Wire {
        let stream = TcpStream::connect(t.sidecar.data_addr()).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads more; false once the peer closed.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next answer; `head_only` for the answer to a `HEAD`.
    async fn answer(&mut self, head_only: bool) -> Answer {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(self.fill().await, "closed before an answer's head");
        };
        let head = String::from_utf8(self.buf[..end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let version = status_line[..8].to_owned();
        let status = status_line[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.to_owned(), v.trim().to_owned())
            })
            .collect();
        self.buf.drain(..end);
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let length = if head_only { 0 } else { length };
        while self.buf.len() < length {
            assert!(self.fill().await, "closed inside a body");
        }
        let body = self.buf.drain(..length).collect();
        Answer {
            version,
            status,
            headers,
            body,
        }
    }

    /// Sends `request` and reads its answer, which must be a 200 served
    /// from `environment`.
    async fn served(&mut self, request: &[u8], head_only: bool, environment: &str) -> Answer {
        self.send(request).await;
        let a = self.answer(head_only).await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.header("x-resolved-environment"), Some(environment));
        a
    }

    /// After an answer: true when more arrives (the next answer), false
    /// when the peer closes.
    async fn closes_or_buffers_next(&mut self) -> bool {
        !self.buf.is_empty() || self.fill().await
    }

    /// True when the server closes the connection within 10 s with
    /// nothing more sent.
    async fn closes(&mut self) -> bool {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), self.stream.read_to_end(&mut rest));
        matches!(read.await, Ok(Ok(_)) | Ok(Err(_))) && self.buf.is_empty() && rest.is_empty()
    }

    /// True when nothing arrives for `quiet` (the connection stays open).
    async fn stays_quiet(&mut self, quiet: Duration) -> bool {
        let mut chunk = [0u8; 64];
        tokio::time::timeout(quiet, self.stream.read(&mut chunk))
            .await
            .is_err()
    }
}

fn resolve(project: &str, environment: &str) -> Vec<u8> {
    format!(
        "GET /v1/resolve?project={project}&environment={environment} HTTP/1.1\r\nhost: x\r\n\r\n"
    )
    .into_bytes()
}

async fn sidecar() -> TestSidecar {
    TestSidecar::with_limits(Limits::default()).await
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let t = sidecar().await;
    let mut wire = Wire::open(&t).await;
    // An unknown environment falls back to prod; an unknown project is 404.
    let expected = [
        ("acme", "qa", 200, "qa"),
        ("acme", "prod", 200, "prod"),
        ("nope", "qa", 404, ""),
        ("acme", "nowhere", 200, "prod"),
        ("acme", "canary", 200, "canary"),
    ];
    let all: Vec<u8> = expected
        .iter()
        .flat_map(|(project, environment, _, _)| resolve(project, environment))
        .collect();
    wire.send(&all).await;
    for (project, environment, status, served) in expected {
        let a = wire.answer(false).await;
        assert_eq!(a.status, status, "{project} {environment}: {a:?}");
        if status == 200 {
            assert_eq!(a.header("x-resolved-environment"), Some(served));
        }
    }
    assert!(wire.stays_quiet(Duration::from_millis(200)).await);
}

#[tokio::test]
async fn a_request_arriving_in_pieces_is_answered_once_whole() {
    let t = sidecar().await;
    let mut wire = Wire::open(&t).await;
    let request = resolve("acme", "qa");
    let (first, rest) = request.split_at(17);
    let (second, third) = rest.split_at(rest.len() - 3);
    wire.send(first).await;
    assert!(wire.stays_quiet(Duration::from_millis(100)).await);
    wire.send(second).await;
    assert!(wire.stays_quiet(Duration::from_millis(100)).await);
    wire.served(third, false, "qa").await;
}

#[tokio::test]
async fn http_1_0_closes_after_the_answer_unless_asked_to_keep_alive() {
    let t = sidecar().await;
    let mut wire = Wire::open(&t).await;
    wire.send(b"GET /v1/resolve?project=acme HTTP/1.0\r\n\r\n")
        .await;
    let a = wire.answer(false).await;
    assert_eq!(a.status, 200);
    assert!(wire.closes().await, "an HTTP/1.0 connection stayed open");

    let mut wire = Wire::open(&t).await;
    let keep = b"GET /v1/resolve?project=acme HTTP/1.0\r\nconnection: keep-alive\r\n\r\n";
    wire.send(keep).await;
    let a = wire.answer(false).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("connection"), Some("keep-alive"));
    wire.send(keep).await;
    assert_eq!(wire.answer(false).await.status, 200, "the same connection");
}

#[tokio::test]
async fn connection_close_is_answered_then_closed() {
    let t = sidecar().await;
    let mut wire = Wire::open(&t).await;
    let mut both =
        b"GET /v1/resolve?project=acme HTTP/1.1\r\nhost: x\r\nConnection: close\r\n\r\n".to_vec();
    both.extend(resolve("acme", "qa"));
    wire.send(&both).await;
    let a = wire.answer(false).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("connection"), Some("close"));
    assert!(
        wire.closes().await,
        "a request after Connection: close was answered"
    );
}

#[tokio::test]
async fn a_body_on_a_hot_route_is_never_read_as_a_request() {
    let t = sidecar().await;
    let smuggled = resolve("acme", "canary");
    let framings = [
        format!("content-length: {}\r\n", smuggled.len()),
        "transfer-encoding: chunked\r\n".to_owned(),
    ];
    for framing in framings {
        for path in ["/v1/resolve?project=acme", "/v1/authz"] {
            let mut wire = Wire::open(&t).await;
            let mut request =
                format!("GET {path} HTTP/1.1\r\nhost: x\r\nx-project-id: acme\r\n{framing}\r\n")
                    .into_bytes();
            if framing.starts_with("transfer") {
                request.extend(format!("{:x}\r\n", smuggled.len()).into_bytes());
                request.extend(&smuggled);
                request.extend(b"\r\n0\r\n\r\n");
            } else {
                request.extend(&smuggled);
            }
            request.extend(resolve("acme", "qa"));
            wire.send(&request).await;
            let a = wire.answer(false).await;
            assert_eq!(a.status, 200, "{path} {framing}");
            assert_eq!(a.header("x-resolved-environment"), Some("prod"));
            // Either the body was skipped and the next request is
            // answered, or the connection closes: never `canary`.
            if wire.closes_or_buffers_next().await {
                let next = wire.answer(false).await;
                assert_eq!(
                    next.header("x-resolved-environment"),
                    Some("qa"),
                    "{path} {framing}: the body was read as a request"
                );
            }
        }
    }
}

#[tokio::test]
async fn header_names_match_in_any_case_and_values_are_trimmed() {
    let t = sidecar().await;
    let mut wire = Wire::open(&t).await;
    let request = b"GET /v1/authz HTTP/1.1\r\nHost: x\r\nX-PROJECT-ID:   acme \t\r\nx-Environment:\tqa  \r\n\r\n";
    wire.served(request, false, "qa").await;
    let request = b"HEAD /v1/resolve HTTP/1.1\r\nhost: x\r\nX-Project-Id: acme\r\nX-ENVIRONMENT: canary\r\n\r\n";
    let a = wire.served(request, true, "canary").await;
    assert!(a.header("content-length").is_some_and(|l| l != "0"));
}

#[tokio::test]
async fn the_query_is_percent_decoded_and_absolute_form_targets_work() {
    let t = sidecar().await;
    let mut wire = Wire::open(&t).await;
    let request = b"GET /v1/resolve?project=%61cm%65&environment=q%61 HTTP/1.1\r\nhost: x\r\n\r\n";
    wire.served(request, false, "qa").await;
    let request = b"GET http://sidecar.local/v1/resolve?project=acme&environment=staging HTTP/1.1\r\nhost: sidecar.local\r\n\r\n";
    wire.served(request, false, "staging").await;
}

#[tokio::test]
async fn contradictory_framing_is_refused_and_the_connection_closed() {
    let t = sidecar().await;
    for framing in [
        "content-length: 3\r\ncontent-length: 4\r\n",
        "transfer-encoding: gzip\r\n",
    ] {
        let mut wire = Wire::open(&t).await;
        let mut request =
            format!("GET /v1/resolve?project=acme HTTP/1.1\r\nhost: x\r\n{framing}\r\nabcd")
                .into_bytes();
        request.extend(resolve("acme", "qa"));
        wire.send(&request).await;
        let a = wire.answer(false).await;
        assert_eq!(a.status, 400, "{framing}: {a:?}");
        assert!(wire.closes().await, "{framing}: the connection stayed open");
    }
}

#[tokio::test]
async fn every_answer_carries_a_date() {
    let t = sidecar().await;
    let mut wire = Wire::open(&t).await;
    let requests: [(&[u8], bool); 5] = [
        (
            b"GET /v1/resolve?project=acme HTTP/1.1\r\nhost: x\r\n\r\n",
            false,
        ),
        (
            b"HEAD /v1/resolve?project=acme HTTP/1.1\r\nhost: x\r\n\r\n",
            true,
        ),
        (
            b"GET /v1/resolve?project=nope HTTP/1.1\r\nhost: x\r\n\r\n",
            false,
        ),
        (
            b"GET /v1/authz HTTP/1.1\r\nhost: x\r\nx-project-id: acme\r\n\r\n",
            false,
        ),
        (
            b"PUT /v1/resolve HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
            false,
        ),
    ];
    for (request, head_only) in requests {
        wire.send(request).await;
        let a = wire.answer(head_only).await;
        let date = a.header("date").unwrap_or_else(|| panic!("no date: {a:?}"));
        assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
        assert!(head_only || !a.body.is_empty(), "{a:?}");
    }
}

#[tokio::test]
async fn an_answers_head_comes_in_one_order_with_the_requests_version() {
    let t = sidecar().await;
    let names = |a: &Answer| -> Vec<String> { a.headers.iter().map(|(n, _)| n.clone()).collect() };
    let served = [
        "content-type",
        "x-resolved-environment",
        "x-resolution-outcome",
        "x-snapshot-revision",
        "x-resolved-pointers",
    ];
    let mut wire = Wire::open(&t).await;
    let a = wire.served(&resolve("acme", "qa"), false, "qa").await;
    assert_eq!(a.version, "HTTP/1.1");
    let mut expected: Vec<&str> = served.to_vec();
    expected.extend(["content-length", "date"]);
    assert_eq!(names(&a), expected);

    // HTTP/1.0 is answered as HTTP/1.0; the connection header comes
    // after the answer's own and before the length.
    let mut wire = Wire::open(&t).await;
    let request = b"GET /v1/resolve?project=acme HTTP/1.0\r\nconnection: keep-alive\r\n\r\n";
    let a = wire.served(request, false, "prod").await;
    assert_eq!(a.version, "HTTP/1.0");
    let mut expected: Vec<&str> = served.to_vec();
    expected.extend(["connection", "content-length", "date"]);
    assert_eq!(names(&a), expected);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let t = TestSidecar::with_limits(Limits {
        header_read_timeout: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    let mut wire = Wire::open(&t).await;
    wire.served(&resolve("acme", "qa"), false, "qa").await;
    // Open right after the answer, closed once idle past the timeout,
    // as a slow request head is.
    assert!(wire.stays_quiet(Duration::from_millis(100)).await);
    assert!(wire.closes().await, "an idle connection was kept open");
}

#[tokio::test]
async fn a_connection_moves_to_hyper_at_the_first_request_the_hot_path_does_not_take() {
    let t = sidecar().await;
    let mut wire = Wire::open(&t).await;
    // Hot, hot, then a batch with a body (hyper's from here on), then a
    // resolve that hyper answers on the same connection.
    let batch = br#"{"requests":[{"project":"acme","environment":"qa"}]}"#;
    let mut all = resolve("acme", "qa");
    all.extend(b"HEAD /v1/authz HTTP/1.1\r\nx-project-id: acme\r\n\r\n");
    all.extend(
        format!(
            "POST /v1/resolve/batch HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            batch.len()
        )
        .as_bytes(),
    );
    all.extend(batch);
    all.extend(resolve("acme", "prod"));
    all.extend(b"GET /v1/projects HTTP/1.1\r\n\r\n");
    wire.send(&all).await;
    let a = wire.answer(false).await;
    assert_eq!(
        (a.status, a.header("x-resolved-environment")),
        (200, Some("qa"))
    );
    let a = wire.answer(true).await;
    assert_eq!(
        (a.status, a.header("x-resolved-environment")),
        (200, Some("prod"))
    );
    assert!(a.body.is_empty(), "a HEAD answer has no body");
    let a = wire.answer(false).await;
    assert_eq!(a.status, 200, "{a:?}");
    let results: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(results["results"][0]["environment"]["slug"], "qa");
    let a = wire.answer(false).await;
    assert_eq!(
        (a.status, a.header("x-resolved-environment")),
        (200, Some("prod"))
    );
    let a = wire.answer(false).await;
    assert_eq!(a.status, 200, "{a:?}");
    let list: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert!(list["projects"].as_array().is_some_and(|p| !p.is_empty()));
    assert!(wire.stays_quiet(Duration::from_millis(200)).await);
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let t = TestSidecar::with_limits(Limits {
        drain_deadline: Duration::from_secs(30),
        ..Limits::default()
    })
    .await;
    let mut idle = Wire::open(&t).await;
    idle.served(&resolve("acme", "qa"), false, "qa").await;
    let started = std::time::Instant::now();
    let TestSidecar { sidecar, .. } = t;
    let stopping = tokio::spawn(sidecar.shutdown());
    assert!(idle.closes().await, "an idle connection was kept open");
    stopping.await.unwrap();
    // Far inside the drain deadline: nothing was in flight.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
