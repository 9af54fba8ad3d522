//! The data model: project documents as the control plane sends them, the
//! rules that make one valid, and time.
//!
//! The bottom layer. It owns no state, does no I/O and imports nothing
//! else of the crate; every other layer builds on it.
//!
//! * [`wire`]: documents and fetch bodies as sent (untrusted), and the
//!   compact pointer maps.
//! * [`validate`]: every data-model rule; the only way to a `ValidProject`.
//! * [`timestamp`]: RFC 3339 in and out.
//! * [`clock`]: the wall clock, injectable so tests never sleep.

pub mod clock;
pub mod timestamp;
pub mod validate;
pub mod wire;
