//! # env-sidecar
//!
//! Answers "which environment, and which prompt / routing-rule / provider
//! versions, serve this request?" for an LLM gateway, from an in-memory
//! snapshot of every project's environments that readers consult without
//! locks and a single writer keeps fresh from its source.
//!
//! # Layers
//!
//! Each folder is a layer; a layer imports only the layers listed before
//! it, never one after it, and the modules inside a layer import each
//! other without cycles (checked in CI by `tests/it/layers.rs`):
//!
//! 0. [`lock`]: the poison-tolerant `Mutex` lock every layer uses;
//!    [`parallel`]: work split over the cores for loads before ready;
//!    [`protobuf`]: the wire format of the gRPC `Check` reply.
//! 1. [`model`]: wire types, validation, time, signed envelopes, keys and
//!    the one check of a signature. Pure: no I/O, no state.
//!    [`config`]: the TOML file and where secrets come from.
//! 2. [`telemetry`]: the contract's metrics, recorded without locks;
//!    [`redis_client`]: the Redis client the source, the reports and
//!    the commands share (connections, the data's layout, reads).
//! 3. [`store`]: every project as served, answers pre-rendered; the hot
//!    path's single entry ([`store::Store::resolve_with`]) and the one
//!    writer that validates and publishes updates.
//! 4. [`sync`]: sources (file, HTTP, Redis), the writer thread and the
//!    scheduler, forced refresh, status and provenance, readiness, the
//!    last-known-good cache, the trusted keys, the node report.
//! 5. [`server`]: the accept loop and limits, the data plane, the
//!    operator plane, error answers, JSON views.
//! 6. [`app`]: wiring and ordered shutdown; the embedded mode; the
//!    checks a start makes of its config ([`app::preflight`]).
//! 7. [`ops`]: the operator commands (`check-config`, `validate`,
//!    `publish`, `keygen`, `sign`, `fleet`, `health`); `check-config`
//!    runs the start's own checks.
//!
//! [`sim`] (the `sim` feature, on by default) is tooling: a generator and
//! a control-plane simulator for tests, benchmarks and demos. It may use
//! every layer; no layer uses it, and a build without the feature has
//! none of its code.
//!
//! The domain (model, store, sync) never imports presentation (server).
//! `docs/architecture.md` draws the picture.
//! The binary (`src/main.rs`) only parses flags, sets up logging, calls
//! [`app::start`] and waits for a signal.

#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod lock;
pub mod model;
pub mod ops;
pub mod parallel;
pub mod protobuf;
pub mod redis_client;
pub mod server;
#[cfg(feature = "sim")]
pub mod sim;
pub mod store;
pub mod sync;
pub mod telemetry;
