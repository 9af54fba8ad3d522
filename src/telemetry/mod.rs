//! Telemetry: the contract's Prometheus metrics and the lock-free
//! histogram the resolve path records into.
//!
//! Depends only on the model (for the rejection reasons). Every label
//! value comes from a fixed vocabulary defined here; nothing a request or
//! a document controls ever becomes a label. Recording never allocates or
//! takes a lock.

pub mod histogram;
pub mod metrics;

pub use metrics::{Api, Gauges, Metrics, RefreshLabel, ResolveOutcome, SyncKind, SyncResult};
