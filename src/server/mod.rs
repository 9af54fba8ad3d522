//! HTTP serving: the accept loop shared by the data plane and the operator
//! plane, over TCP or a Unix socket, with connection limits and graceful,
//! bounded shutdown.
//!
//! Each plane is a [`Handler`]; this module knows nothing of routes.
//!
//! * [`data`]: the data plane (what gateways call).
//! * [`admin`]: the operator plane (metrics, health, status, refresh).
//! * [`error`]: every error answer, from one vocabulary of codes.
//! * [`query`]: query strings and identity headers.
//! * [`views`]: JSON views of domain state. [`body`]: response bodies.
//!
//! The presentation layer: it reads the store and the sync state; nothing
//! below it imports it.

pub mod admin;
pub mod body;
pub mod data;
pub mod error;
pub mod query;
pub mod views;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};

pub use body::Body;
use error::{ApiError, ErrorCode};

/// One plane's routes.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            drain_deadline: Duration::from_secs(10),
            max_connections: 1024,
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

/// Serves `handler` on `listener` until `shutdown` flips, then stops
/// accepting and lets in-flight requests finish within the drain deadline.
pub async fn serve<L: Listener, H: Handler>(
    mut listener: L,
    handler: Arc<H>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    // What a connection over the limit receives before it is closed.
    let overloaded: bytes::Bytes = ApiError::new(
        ErrorCode::Overloaded,
        "too many open connections; retry later",
    )
    .to_http1_bytes()
    .into();
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
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
            let overloaded = overloaded.clone();
            tokio::spawn(async move {
                let mut io = io;
                let _ = io.write_all(&overloaded).await;
                let _ = io.shutdown().await;
            });
            continue;
        };
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler.handle(req).await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
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
