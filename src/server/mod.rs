//! HTTP serving: the accept loop shared by the data plane and the operator
//! plane, over TCP or a Unix socket, with connection limits and graceful,
//! bounded shutdown.
//!
//! Each plane is a [`Handler`]; this module knows nothing of routes.
//!
//! * [`data`]: the data plane (what gateways call).
//! * [`admin`]: the operator plane (metrics, health, status, refresh).
//! * [`error`]: every error answer, from one vocabulary of codes.
//! * [`ext_authz`]: Envoy's ext_authz gRPC messages and framing.
//! * [`headers`]: the headers every resolve answer carries.
//! * [`hot`]: the HTTP/1.1 hot path, which answers plain resolve and
//!   forward-auth requests without hyper's per-request machinery and
//!   hands everything else to hyper.
//! * [`openapi`]: each plane's OpenAPI description.
//! * [`query`]: query strings and identity headers.
//! * [`service`]: the [`Handler`] a plane implements, its ready or pending
//!   [`Reply`], and the hyper service over it.
//! * [`views`]: JSON views of domain state. [`body`]: response bodies.
//!
//! The presentation layer: it reads the store and the sync state; nothing
//! below it imports it.

pub mod admin;
pub mod body;
pub mod data;
pub mod error;
pub mod ext_authz;
pub mod headers;
pub mod hot;
pub mod openapi;
mod prefixed;
pub mod query;
pub mod service;
pub mod views;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use prefixed::{Prefixed, Writes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};

use crate::telemetry::{metrics, Metrics};

pub use body::Body;
use error::{ApiError, ErrorCode};
use service::PlaneService;
pub use service::{Handler, Reply};

/// Protections applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A client must finish sending its request head within this.
    pub header_read_timeout: Duration,
    /// Read buffer, and so the largest request head (at least 8 KiB).
    pub max_header_bytes: usize,
    /// In-flight requests get this long to finish once shutdown starts.
    pub drain_deadline: Duration,
    /// Open connections per listener; one more is answered `503
    /// overloaded` and closed at once.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection (a client opening more
    /// is refused the extra streams).
    pub max_streams: u32,
    /// Who reads HTTP/1.1 requests first (`server.http1_hot_path`).
    pub http1: Http1,
}

/// Who reads an HTTP/1.1 connection's requests first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http1 {
    /// The hot path ([`hot`]) answers what it can, hyper the rest.
    HotPath,
    /// hyper answers every request.
    HyperOnly,
}

impl Limits {
    /// The largest HTTP/1 request head read, and so hyper's read buffer.
    fn max_head_bytes(&self) -> usize {
        self.max_header_bytes.max(8192)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            drain_deadline: Duration::from_secs(10),
            max_connections: 1024,
            max_streams: 256,
            http1: Http1::HotPath,
        }
    }
}

/// Something that yields connections.
pub trait Listener: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Listener for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&mut self) -> io::Result<Self::Io> {
        let (stream, _) = TcpListener::accept(self).await?;
        // Answers are small and latency-bound: never wait for Nagle.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Listener for UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&mut self) -> io::Result<Self::Io> {
        let (stream, _) = UnixListener::accept(self).await?;
        Ok(stream)
    }
}

/// One open connection, counted in the gauge while it lives.
struct Open(Arc<Metrics>, metrics::Listener);

impl Open {
    fn new(metrics: Arc<Metrics>, listener: metrics::Listener) -> Open {
        metrics.connection_opened(listener, 1.0);
        Open(metrics, listener)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connection_opened(self.1, -1.0);
    }
}

/// The HTTP/2 connection preface a client with prior knowledge sends.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which protocol a connection speaks, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    /// How its connections offer writes: HTTP/2 contiguous, so h2
    /// gathers the small replies of many streams into one write (see
    /// `prefixed`).
    fn writes(self) -> Writes {
        match self {
            Protocol::Http1 => Writes::AsInner,
            Protocol::Http2 => Writes::Contiguous,
        }
    }
}

/// Reads until the first bytes either are the HTTP/2 preface or cannot be
/// (one read is enough for HTTP/1.1: its first byte is a method's).
async fn sniff<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<(Protocol, Bytes)> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    while filled < buf.len() {
        let n = io.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        if buf[..filled] != H2_PREFACE[..filled] {
            return Ok((Protocol::Http1, Bytes::copy_from_slice(&buf[..filled])));
        }
    }
    Ok((Protocol::Http2, Bytes::copy_from_slice(&buf)))
}

/// How a plane's connections are read: the limits, and hyper's two
/// connection builders, made once per listener.
struct Protocols {
    limits: Limits,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(limits: Limits) -> Protocols {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_head_bytes())
            // One flattened write per answer: fewer instructions than
            // queueing the head and the body's parts for `writev` (see
            // `body`, which bounds what a large body adds to the buffer).
            .writev(false)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_streams)
            .max_header_list_size(limits.max_header_bytes as u32)
            .max_send_buf_size(64 * 1024);
        Protocols {
            limits,
            http1,
            http2,
        }
    }

    /// Serves one accepted connection to its end: sniffed, then, for
    /// HTTP/1.1 on a plane with hot routes, the hot path, then hyper with
    /// whatever the hot path did not answer.
    async fn serve<I, H>(
        &self,
        mut io: I,
        service: PlaneService<H>,
        watcher: Watcher,
        shutdown: watch::Receiver<bool>,
    ) where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        H: Handler,
    {
        let timeout = self.limits.header_read_timeout;
        // A client that sends nothing is cut like a slow request head.
        let (protocol, prefix) = match tokio::time::timeout(timeout, sniff(&mut io)).await {
            Ok(Ok(sniffed)) => sniffed,
            _ => return,
        };
        let hot_routes = match (protocol, self.limits.http1) {
            (Protocol::Http1, Http1::HotPath) => service.0.hot_routes(),
            _ => None,
        };
        let (io, prefix) = match hot_routes {
            None => (io, prefix),
            Some(routes) => {
                let max_head = self.limits.max_head_bytes();
                match hot::serve(io, prefix, routes, timeout, max_head, shutdown).await {
                    hot::Ended::Closed => return,
                    hot::Ended::Handoff(io, rest) => (io, rest),
                }
            }
        };
        let io = TokioIo::new(Prefixed::new(prefix, io, protocol.writes()));
        let result = match protocol {
            Protocol::Http1 => {
                watcher
                    .watch(self.http1.serve_connection(io, service))
                    .await
            }
            Protocol::Http2 => {
                watcher
                    .watch(self.http2.serve_connection(io, service))
                    .await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// Serves `handler` on `listener` until `shutdown` flips, then stops
/// accepting and lets in-flight requests finish within the drain deadline.
/// Each connection speaks HTTP/1.1, or HTTP/2 when it opens with the
/// HTTP/2 preface (prior knowledge, h2c), with the same limits either way.
pub async fn serve<L: Listener, H: Handler>(
    mut listener: L,
    handler: Arc<H>,
    limits: Limits,
    metrics: Option<(Arc<Metrics>, metrics::Listener)>,
    mut shutdown: watch::Receiver<bool>,
) {
    // What a connection over the limit receives before it is closed.
    let overloaded: Bytes = ApiError::new(
        ErrorCode::Overloaded,
        "too many open connections; retry later",
    )
    .to_http1_bytes()
    .into();
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let protocols = Arc::new(Protocols::new(limits));
    loop {
        let io = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(io) => io,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if let Some((metrics, which)) = &metrics {
                metrics.connection_refused(*which);
            }
            let overloaded = overloaded.clone();
            tokio::spawn(async move {
                let mut io = io;
                let _ = io.write_all(&overloaded).await;
                let _ = io.shutdown().await;
            });
            continue;
        };
        let service = PlaneService(handler.clone());
        let protocols = protocols.clone();
        let watcher = graceful.watcher();
        let open = metrics.clone().map(|(m, which)| Open::new(m, which));
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            protocols.serve(io, service, watcher, shutdown).await;
            drop(open);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(deadline = ?limits.drain_deadline, "drain deadline passed with requests still in flight");
    }
}
