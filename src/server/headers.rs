//! The headers every resolve answer carries (§6 of the contract), set the
//! same way by the HTTP answers and the gRPC `Check` reply.

use http::HeaderName;

/// The slug of the environment that serves.
pub const RESOLVED_ENVIRONMENT: HeaderName = HeaderName::from_static("x-resolved-environment");
/// `exact` or `fallback`.
pub const RESOLUTION_OUTCOME: HeaderName = HeaderName::from_static("x-resolution-outcome");
/// The project's accepted revision.
pub const SNAPSHOT_REVISION: HeaderName = HeaderName::from_static("x-snapshot-revision");
