//! Response bodies: bytes known up front, in up to three parts sent in
//! order, and optionally trailers (gRPC's status).
//!
//! A resolve answer is stored in parts shared between answers (the
//! project's prefix, a static outcome, the environment's tail; see
//! `project`), so the response hands those parts to the connection as they
//! are: no buffer of its own, no allocation. The parts travel as one frame
//! ([`Chunks`], a [`Buf`] over all three): one pass through hyper's body
//! machinery rather than three (docs/performance.md has what that saves,
//! measured by `cargo bench --bench instructions`). Every other response
//! is one part.
//!
//! HTTP/1.1 connections write flattened (`serve` turns hyper's vectored
//! writes off): the head and the body are copied into the connection's
//! write buffer and leave in one `write`, which costs fewer instructions
//! than queueing the parts for `writev`. That buffer keeps its capacity
//! while the connection lives, so a body larger than [`MAX_FRAME`] is
//! handed over in frames of at most that size (slices, not copies): a
//! keep-alive connection that once fetched a 10 MB project list does not
//! hold 10 MB ever after.

use std::convert::Infallible;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use hyper::body::{Frame, SizeHint};

/// The largest data frame a body yields.
pub const MAX_FRAME: usize = 16 * 1024;

#[derive(Debug, Default)]
pub struct Body {
    /// Taken when sent.
    data: Option<Chunks>,
    /// Sent after the data.
    /// Boxed: only gRPC answers have trailers, and a smaller `Body` is
    /// cheaper to move through hyper on every answer.
    trailers: Option<Box<HeaderMap>>,
}

impl Body {
    /// A one-part body.
    pub fn new(bytes: impl Into<Bytes>) -> Body {
        Body::chunks([bytes.into(), Bytes::new(), Bytes::new()])
    }

    /// A body of `parts` sent in order (empty ones are skipped), as one
    /// frame.
    pub fn chunks(parts: [Bytes; 3]) -> Body {
        let data = Chunks::new(parts);
        Body {
            data: data.has_remaining().then_some(data),
            trailers: None,
        }
    }

    /// One part, then `trailers`.
    pub fn with_trailers(bytes: Bytes, trailers: HeaderMap) -> Body {
        Body {
            trailers: Some(Box::new(trailers)),
            ..Body::new(bytes)
        }
    }

    /// The data as its parts, in order; `None` for a body that ends in
    /// trailers (the HTTP/1.1 hot path writes only whole, trailer-less
    /// answers).
    pub fn parts(&self) -> Option<impl Iterator<Item = &[u8]> + Clone> {
        let parts = self.data.as_ref().map_or(&[][..], |d| &d.parts[d.at..]);
        self.trailers
            .is_none()
            .then(|| parts.iter().map(|p| p.as_ref()))
    }

    fn remaining(&self) -> u64 {
        self.data.as_ref().map_or(0, |d| d.remaining() as u64)
    }
}

impl hyper::body::Body for Body {
    type Data = Chunks;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Chunks>, Infallible>>> {
        let this = self.get_mut();
        if let Some(data) = &mut this.data {
            if data.remaining() > MAX_FRAME {
                return Poll::Ready(Some(Ok(Frame::data(data.split_to(MAX_FRAME)))));
            }
        }
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(*t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
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

/// Up to three byte strings read as one buffer, in order, without copying
/// them together.
#[derive(Debug, Default)]
pub struct Chunks {
    parts: [Bytes; 3],
    /// The part being read: the first non-empty one left (3 at the end).
    at: usize,
    /// Bytes left over all parts (hyper asks often).
    remaining: usize,
}

impl Chunks {
    fn new(parts: [Bytes; 3]) -> Chunks {
        let remaining = parts.iter().map(Bytes::len).sum();
        let mut chunks = Chunks {
            parts,
            at: 0,
            remaining,
        };
        chunks.skip_empty();
        chunks
    }

    fn skip_empty(&mut self) {
        while self.at < self.parts.len() && self.parts[self.at].is_empty() {
            self.at += 1;
        }
    }

    /// The first `n` bytes (or all, if fewer) as chunks of their own:
    /// reference-counted slices of the parts, no copy.
    fn split_to(&mut self, n: usize) -> Chunks {
        let mut front: [Bytes; 3] = Default::default();
        let mut left = n;
        for slot in &mut front {
            let Some(part) = self.parts.get_mut(self.at) else {
                break;
            };
            if left == 0 {
                break;
            }
            let take = left.min(part.len());
            *slot = part.split_to(take);
            left -= take;
            self.remaining -= take;
            self.skip_empty();
        }
        Chunks::new(front)
    }
}

impl Buf for Chunks {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.get(self.at).map_or(&[], |p| p.as_ref())
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(part) = self.parts.get_mut(self.at) else {
                panic!("advanced past the end of the body");
            };
            let n = cnt.min(part.len());
            part.advance(n);
            cnt -= n;
            self.remaining -= n;
            self.skip_empty();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for part in self.parts[self.at.min(3)..]
            .iter()
            .filter(|p| !p.is_empty())
        {
            let Some(slot) = dst.get_mut(n) else { break };
            *slot = IoSlice::new(part);
            n += 1;
        }
        n
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
            let mut data = frame.unwrap().into_data().unwrap();
            while data.has_remaining() {
                let n = data.chunk().len();
                out.extend_from_slice(data.chunk());
                data.advance(n);
            }
            frames += 1;
        }
        (out, frames)
    }

    #[tokio::test]
    async fn parts_arrive_in_order_as_one_frame_and_empty_ones_are_skipped() {
        let body = Body::chunks([
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cd"),
        ]);
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(4));
        assert!(!hyper::body::Body::is_end_stream(&body));
        assert_eq!(collect(body).await, (b"abcd".to_vec(), 1));
    }

    #[tokio::test]
    async fn a_large_body_arrives_in_frames_of_at_most_max_frame_bytes() {
        let big: Vec<u8> = (0..MAX_FRAME * 2 + 100).map(|i| i as u8).collect();
        let body = Body::chunks([
            Bytes::from_static(b"head-"),
            Bytes::from(big.clone()),
            Bytes::from_static(b"-tail"),
        ]);
        assert_eq!(
            hyper::body::Body::size_hint(&body).exact(),
            Some(big.len() as u64 + 10)
        );
        let mut body = body;
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            let mut data = frame.unwrap().into_data().unwrap();
            sizes.push(data.remaining());
            while data.has_remaining() {
                let n = data.chunk().len();
                out.extend_from_slice(data.chunk());
                data.advance(n);
            }
        }
        assert_eq!(sizes, vec![MAX_FRAME, MAX_FRAME, 110]);
        let mut expected = b"head-".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"-tail");
        assert_eq!(out, expected);
        assert!(hyper::body::Body::is_end_stream(&body));
    }

    #[test]
    fn a_partial_advance_crosses_parts_and_vectored_reads_see_what_is_left() {
        let mut data = Chunks::new([
            Bytes::new(),
            Bytes::from_static(b"abc"),
            Bytes::from_static(b"de"),
        ]);
        assert_eq!(data.remaining(), 5);
        assert_eq!(data.chunk(), b"abc");
        data.advance(2);
        assert_eq!(data.chunk(), b"c");
        {
            let mut slices = [IoSlice::new(&[]); 4];
            assert_eq!(data.chunks_vectored(&mut slices), 2);
            assert_eq!((&*slices[0], &*slices[1]), (&b"c"[..], &b"de"[..]));
        }
        data.advance(2);
        assert_eq!((data.remaining(), data.chunk()), (1, &b"e"[..]));
        {
            let mut one = [IoSlice::new(&[])];
            assert_eq!(data.chunks_vectored(&mut one), 1);
        }
        data.advance(1);
        assert!(!data.has_remaining());
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(data.chunks_vectored(&mut slices), 0);
        assert_eq!(data.copy_to_bytes(0), Bytes::new());
    }

    #[tokio::test]
    async fn trailers_follow_the_data() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let mut body = Body::with_trailers(Bytes::from_static(b"msg"), trailers);
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), None);
        let mut data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(data.copy_to_bytes(3), "msg");
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
