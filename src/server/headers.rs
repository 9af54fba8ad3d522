//! The headers every resolve answer carries (§6 of the contract), set the
//! same way by the HTTP answers and the gRPC `Check` reply.

use http::{HeaderName, HeaderValue};

/// The slug of the environment that serves.
pub const RESOLVED_ENVIRONMENT: HeaderName = HeaderName::from_static("x-resolved-environment");
/// `exact` or `fallback`.
pub const RESOLUTION_OUTCOME: HeaderName = HeaderName::from_static("x-resolution-outcome");
/// The project's accepted revision.
pub const SNAPSHOT_REVISION: HeaderName = HeaderName::from_static("x-snapshot-revision");
/// The served pointers as compact JSON, byte for byte as in the body.
pub const RESOLVED_POINTERS: HeaderName = HeaderName::from_static("x-resolved-pointers");
/// Sent instead of [`RESOLVED_POINTERS`] when that would be too long.
pub const RESOLVED_POINTERS_OMITTED: HeaderName =
    HeaderName::from_static("x-resolved-pointers-omitted");

/// `server.max_pointers_header_bytes`: which of the two pointers headers
/// an answer carries. A comparison per answer; the value itself was
/// rendered by the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointersLimit(pub usize);

impl PointersLimit {
    /// `x-resolved-pointers` with the pointers when they fit, else
    /// `x-resolved-pointers-omitted: too_large`.
    pub fn header<'a>(&self, pointers: &'a HeaderValue) -> (HeaderName, &'a HeaderValue) {
        static TOO_LARGE: HeaderValue = HeaderValue::from_static("too_large");
        if pointers.len() <= self.0 {
            (RESOLVED_POINTERS, pointers)
        } else {
            (RESOLVED_POINTERS_OMITTED, &TOO_LARGE)
        }
    }
}
