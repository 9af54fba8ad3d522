//! The data model: project documents as the control plane sends them, the
//! rules that make one valid, and time.
//!
//! The bottom layer. It owns no state, does no I/O and imports nothing
//! else of the crate; every other layer builds on it.
//!
//! * [`wire`]: documents and fetch bodies as sent (untrusted), and the
//!   compact pointer maps.
//! * [`validate`]: every data-model rule; the only way to a `ValidProject`.
//! * [`rejection`]: why a document is rejected (the reason vocabulary).
//! * [`raw`]: the digest of an element's bytes as filed (reloads skip
//!   what is served unread).
//! * [`envelope`]: signed envelopes (DSSE) read and written.
//! * [`keys`]: Ed25519 key files; signing.
//! * [`trust`]: which keys are believed, and the one check of a seal.
//! * [`cursor`]: where a sidecar is in its source's history.
//! * [`origin`]: where an update came from, and what that permits.
//! * [`floor`]: how a project that is not served may come back.
//! * [`timestamp`]: RFC 3339 in and out.
//! * [`clock`]: the wall clock, injectable so tests never sleep.

pub mod clock;
pub mod cursor;
pub mod envelope;
pub mod floor;
pub mod keys;
pub mod origin;
pub mod raw;
pub mod rejection;
pub mod timestamp;
pub mod trust;
pub mod validate;
pub mod wire;
