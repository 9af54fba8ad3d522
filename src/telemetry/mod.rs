//! Telemetry: the contract's Prometheus metrics, the lock-free histogram
//! the resolve path records into, and log output.
//!
//! Depends only on the model (for the rejection reasons) and the config
//! (for the log settings). Every label
//! value comes from a fixed vocabulary defined here; nothing a request or
//! a document controls ever becomes a label. Recording never allocates or
//! takes a lock.

pub mod histogram;
pub mod logging;
pub mod metrics;

pub use metrics::{
    Api, Gauges, Listener, Metrics, RefreshLabel, ReportResult, ResolveOutcome, SyncKind,
    SyncResult,
};
