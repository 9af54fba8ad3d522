//! Sources: where snapshots come from. Each source runs as one task, fetches,
//! parses into wire types, and hands updates to the writer task; it never
//! touches the store directly.
//!
//! * [`file`](mod@file): a JSON snapshot file, re-read when it changes (the default).
//! * [`http`]: a control plane, in `watch` or `poll` mode.
//! * [`backoff`]: exponential backoff with full jitter, for retries.

pub mod backoff;
pub mod file;
pub mod http;
