//! The operator commands of the binary, as library functions that write
//! to the given output and return the exit status: `check-config`,
//! `validate`, `publish`, `keygen`, `sign`, `fleet status`/`fleet wait`
//! `conformance` and `health` (one module each; their flags are in [`cli`], and
//! [`verdict`] is the judgement `validate` and `publish` share). `main`
//! only parses flags and calls them.
//!
//! The top layer beside `app`: they reuse the config checks, the store's
//! judgement of documents and the wire parsers, never their own copies.

pub mod check_config;
pub mod cli;
pub mod conformance;
pub mod fleet;
pub mod health;
pub mod input;
pub mod keygen;
pub mod publish;
pub mod retry;
pub mod sign;
pub mod target;
pub mod validate;
pub mod verdict;

/// Exit status for a bad config (EX_CONFIG). Bad flags exit 2 (clap's
/// usage error).
pub const EXIT_CONFIG: u8 = 78;
