//! An HTTP/2 client for tests (prior knowledge, over TCP or a Unix
//! socket), and a gRPC `Check` call built on it.

use bytes::Bytes;
use env_sidecar::server::ext_authz::{CheckRequest, CheckResponse};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;

pub type Client = SendRequest<Full<Bytes>>;

/// An HTTP/2 connection with prior knowledge over `io`.
pub async fn connect_io<I>(io: I) -> Client
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    client
}

pub async fn connect(addr: std::net::SocketAddr) -> Client {
    connect_io(tokio::net::TcpStream::connect(addr).await.expect("connect")).await
}

/// What came back: status, headers, body and trailers.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub trailers: Option<http::HeaderMap>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `grpc-status`, from the trailers or (trailers-only) the headers.
    pub fn grpc_status(&self) -> Option<i32> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| self.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends `req` and reads the whole answer.
pub async fn send(client: &mut Client, req: http::Request<Full<Bytes>>) -> Answer {
    client.ready().await.expect("connection ready");
    let resp = client.send_request(req).await.expect("response");
    let (parts, mut body) = resp.into_parts();
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body frame");
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: data.into(),
        trailers,
    }
}

/// `GET path` with `headers`.
pub async fn get(client: &mut Client, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = http::Request::get(format!("http://localhost{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(client, req.body(Full::new(Bytes::new())).unwrap()).await
}

/// A gRPC body: the 5-byte prefix and the message.
pub fn framed(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.into()
}

/// Calls `Check` with raw body bytes.
pub async fn check_raw(client: &mut Client, body: Bytes) -> Answer {
    let req = http::Request::post(format!(
        "http://localhost{}",
        env_sidecar::server::ext_authz::CHECK_PATH
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(Full::new(body))
    .unwrap();
    send(client, req).await
}

/// Calls `Check`; the decoded response when the call succeeded.
pub async fn check(client: &mut Client, request: &CheckRequest) -> (Answer, Option<CheckResponse>) {
    let answer = check_raw(client, framed(request)).await;
    let message = (answer.grpc_status() == Some(0)).then(|| {
        assert!(answer.body.len() >= 5, "a message follows");
        CheckResponse::decode(&answer.body[5..]).expect("a CheckResponse")
    });
    (answer, message)
}
