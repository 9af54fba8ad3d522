//! Log output: `tracing` events to stderr, as text lines or JSON objects
//! (`log.format`), at the configured level (`log.level`; `RUST_LOG` wins).
//! The same events either way: one per applied update, per rejection and
//! per sync problem; never one per resolve at `info`.

use tracing_subscriber::prelude::*;

use crate::config::{LogConfig, LogFormat};

/// Installs the process-wide subscriber (once; later calls do nothing).
pub fn init(log: &LogConfig) {
    let filter = log.filter();
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match log.format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}
