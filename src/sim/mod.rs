//! Tooling: synthetic projects and a control plane that speaks the sync
//! protocol, for tests, benchmarks and demos.
//!
//! Compiled only with the `sim` cargo feature (on by default, so `cargo
//! test`, `cargo bench` and `cargo run --bin control-plane-sim` need no
//! flags; the Dockerfile and an embedding gateway build without it).
//! Tooling may import production code; production never imports this.
//!
//! * [`generate`]: deterministic synthetic project documents.
//! * [`simulator`]: the control-plane simulator.
//! * [`nodes`]: the node reports it keeps for fleet commands.

pub mod generate;
pub mod nodes;
pub mod simulator;
