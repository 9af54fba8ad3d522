//! An I/O stream with some bytes already read from it put back in front:
//! the accept loop reads the first bytes of a connection to tell HTTP/2
//! (its preface) from HTTP/1.1, then hands the whole stream to hyper.
//!
//! It can also hide the stream's vectored writes, which the HTTP/2
//! connections do: h2 sends a DATA frame of 256 bytes or more as a
//! separate buffer and flushes it on its own when the stream writes
//! vectored, but copies frames up to 1 KiB into its write buffer
//! otherwise, so the replies of many streams (a resolve answer, a gRPC
//! `Check` with its pointers struct: 300 to 700 bytes) leave in one
//! write. Measured: half the write calls per `Check` (docs/performance.md).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug)]
pub struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
    /// Whether vectored writes are offered (when `inner` has them).
    vectored: Writes,
}

/// How a [`Prefixed`] stream offers its writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// As the inner stream does (vectored when it can).
    AsInner,
    /// One buffer at a time: the writer gathers small pieces itself.
    Contiguous,
}

impl<T> Prefixed<T> {
    pub fn new(prefix: Bytes, inner: T, vectored: Writes) -> Prefixed<T> {
        Prefixed {
            prefix,
            inner,
            vectored,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored == Writes::AsInner && self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn the_prefix_comes_first_then_the_stream() {
        let inner: &[u8] = b" world";
        let mut io = Prefixed::new(Bytes::from_static(b"hello"), inner, Writes::AsInner);
        let mut out = String::new();
        io.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[tokio::test]
    async fn contiguous_writes_hide_the_streams_vectored_writes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, _) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let client = client.unwrap();
        assert!(client.is_write_vectored(), "a TCP stream writes vectored");
        let io = Prefixed::new(Bytes::new(), client, Writes::AsInner);
        assert!(io.is_write_vectored());
        let io = Prefixed::new(Bytes::new(), io.inner, Writes::Contiguous);
        assert!(!io.is_write_vectored());
    }
}
