//! # env-sidecar
//!
//! Answers "which environment, and which prompt / routing-rule / provider
//! versions, serve this request?" for an LLM gateway, from an in-memory
//! snapshot of every project's environments that readers consult without
//! locks and a single writer keeps fresh from its source.
//!
//! # Layout
//!
//! Data flows top to bottom: a source fetches, the writer validates and
//! publishes, the servers read.
//!
//! * [`wire`]: project documents and fetch bodies as sent (untrusted).
//! * [`validate`]: every data-model rule; the only way to a `ValidProject`.
//! * [`project`]: a project as served, answers pre-rendered to bytes.
//! * [`store`]: lock-free per-project snapshots, and the one writer.
//! * [`resolve`]: the hot path: syntax check, two loads, a lookup.
//! * [`writer`]: the task that owns the writer: applies updates, runs the
//!   scheduler for scheduled cutovers, records rejections and propagation.
//! * [`source`]: where snapshots come from (`file`, `http`, with backoff).
//! * [`cache`]: the last-known-good file: atomic, checksummed, debounced.
//! * [`memory`]: gives freed memory back after large updates.
//! * [`refresh`]: forced refreshes, coalesced, carried out by the source.
//! * [`status`], [`readiness`]: what the source last did; are we ready.
//! * [`server`]: the accept loop and limits, the data plane, the operator
//!   plane, the error shape.
//! * [`metrics`], [`histogram`]: the contract's metrics; the resolve path
//!   records into fixed atomic buckets.
//! * [`secret`]: tokens from the environment, compared in constant time.
//! * [`config`]: the TOML file and its checks.
//! * [`app`]: wiring and ordered shutdown; [`clock`], [`timestamp`]: time.
//! * [`generate`], [`simulator`]: synthetic projects and a control plane
//!   speaking the sync protocol (tests, benches, demos).
//!
//! The binary (`src/main.rs`) only parses flags, sets up logging, calls
//! [`app::start`] and waits for a signal.

#![forbid(unsafe_code)]

pub mod app;
pub mod cache;
pub mod clock;
pub mod config;
pub mod generate;
pub mod histogram;
pub mod memory;
pub mod metrics;
pub mod project;
pub mod readiness;
pub mod refresh;
pub mod resolve;
pub mod secret;
pub mod server;
pub mod simulator;
pub mod source;
pub mod status;
pub mod store;
pub mod timestamp;
pub mod validate;
pub mod wire;
pub mod writer;
