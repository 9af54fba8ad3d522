//! Response bodies: bytes known up front, in up to three chunks sent in
//! order, and optionally trailers (gRPC's status).
//!
//! A resolve answer is stored in parts shared between answers (the
//! project's prefix, a static outcome, the environment's tail; see
//! `project`), so the response hands those parts to the connection as they
//! are instead of copying them into one buffer. Every other response is one
//! chunk.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Frame, SizeHint};

#[derive(Debug, Default)]
pub struct Body {
    chunks: [Bytes; 3],
    /// The next chunk to send.
    next: usize,
    /// Sent after the last chunk.
    trailers: Option<HeaderMap>,
}

impl Body {
    /// A one-chunk body.
    pub fn new(bytes: impl Into<Bytes>) -> Body {
        Body::chunks([bytes.into(), Bytes::new(), Bytes::new()])
    }

    /// A body of `chunks` sent in order (empty ones are skipped).
    pub fn chunks(chunks: [Bytes; 3]) -> Body {
        let mut body = Body {
            chunks,
            next: 0,
            trailers: None,
        };
        body.skip_empty();
        body
    }

    /// One chunk, then `trailers`.
    pub fn with_trailers(bytes: Bytes, trailers: HeaderMap) -> Body {
        Body {
            trailers: Some(trailers),
            ..Body::new(bytes)
        }
    }

    fn skip_empty(&mut self) {
        while self.next < self.chunks.len() && self.chunks[self.next].is_empty() {
            self.next += 1;
        }
    }

    fn remaining(&self) -> u64 {
        self.chunks[self.next.min(3)..]
            .iter()
            .map(|c| c.len() as u64)
            .sum()
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let Some(chunk) = this.chunks.get_mut(this.next) else {
            return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
        };
        let chunk = std::mem::take(chunk);
        this.next += 1;
        this.skip_empty();
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.chunks.len() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.trailers.is_some() {
            // Not exact: no content-length for a body that ends in trailers.
            let mut hint = SizeHint::new();
            hint.set_lower(self.remaining());
            return hint;
        }
        SizeHint::with_exact(self.remaining())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn collect(body: Body) -> (Vec<u8>, usize) {
        let mut body = body;
        let mut out = Vec::new();
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            out.extend_from_slice(&frame.unwrap().into_data().unwrap());
            frames += 1;
        }
        (out, frames)
    }

    #[tokio::test]
    async fn chunks_arrive_in_order_and_empty_ones_are_skipped() {
        let body = Body::chunks([
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cd"),
        ]);
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(4));
        assert!(!hyper::body::Body::is_end_stream(&body));
        assert_eq!(collect(body).await, (b"abcd".to_vec(), 2));
    }

    #[tokio::test]
    async fn trailers_follow_the_data() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let mut body = Body::with_trailers(Bytes::from_static(b"msg"), trailers);
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), None);
        let data = body.frame().await.unwrap().unwrap();
        assert_eq!(data.into_data().unwrap(), "msg");
        assert!(!hyper::body::Body::is_end_stream(&body));
        let t = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(t["grpc-status"], "0");
        assert!(body.frame().await.is_none());
        assert!(hyper::body::Body::is_end_stream(&body));
    }

    #[tokio::test]
    async fn empty_body_is_at_its_end_at_once() {
        let body = Body::new(Bytes::new());
        assert!(hyper::body::Body::is_end_stream(&body));
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(0));
        assert_eq!(collect(body).await, (Vec::new(), 0));
    }
}
