//! Embedded mode: the sidecar inside a Rust gateway's own process.
//!
//! [`embed`] starts the same source, validation, cache and scheduler as the
//! standalone sidecar, with no data-plane listener (the operator plane is
//! optional), and hands back a [`Store`]: a cheap, cloneable handle whose
//! [`resolve_with`](Store::resolve_with) lends the pre-rendered answer
//! (body parts, headers) and the pointers, with no HTTP hop, no lock
//! against the writer and no allocation.
//!
//! ```no_run
//! # async fn gateway() -> Result<(), Box<dyn std::error::Error>> {
//! use env_sidecar::app::embed::{embed, EmbedOptions};
//! use env_sidecar::config::Config;
//! use env_sidecar::store::PointerKind;
//!
//! let config = Config::load(std::path::Path::new("config/sidecar.toml"), true)?;
//! let embedded = embed(config, EmbedOptions::default()).await?;
//! let store = embedded.store().clone();
//! // On every request:
//! let prompt = store.resolve_with("acme-chat", Some("staging"), false, |answer| {
//!     answer
//!         .pointer(PointerKind::Prompts, "summarize")
//!         .map(|v| v.into_owned())
//! })?;
//! # let _ = prompt;
//! // Or every version at once, as the proxies forward them upstream: the
//! // `x-resolved-pointers` value (compact JSON, printable ASCII), a
//! // reference-count bump. Mind your upstream's header limits: the HTTP
//! // data plane leaves it out above `server.max_pointers_header_bytes`.
//! let pointers: http::HeaderValue =
//!     store.resolve_with("acme-chat", Some("staging"), false, |a| a.pointers.clone())?;
//! # let _ = pointers;
//! embedded.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::core::Core;
use super::{bind, local_addr, Options, StartError};
use crate::config::Config;
use crate::server::serve;
use crate::store::Store;
use crate::sync::readiness::{NotReady, Readiness};
use crate::sync::status::SyncStatus;
use crate::telemetry::Listener;

/// How to embed, beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct EmbedOptions {
    /// Clock, limits and where secrets are read: as for the sidecar.
    pub options: Options,
    /// Serve the operator plane (`/metrics`, `/readyz`, `/admin/*`) on
    /// `admin.listen`, as the sidecar does. Off by default: the gateway has
    /// its own health and metrics endpoints.
    pub operator_plane: bool,
}

/// The sidecar's machinery running inside this process.
#[derive(Debug)]
pub struct Embedded {
    core: Core,
    readiness: Readiness,
    admin: Option<(SocketAddr, JoinHandle<()>)>,
}

/// Starts the source, the writer and its scheduler, and the cache, inside
/// this process; loads the last-known-good cache before it returns.
pub async fn embed(config: Config, embed: EmbedOptions) -> Result<Embedded, StartError> {
    let options = embed.options;
    for note in super::preflight(&config, &options.env)? {
        tracing::warn!("{note}");
    }
    let (admin_token, admin_listener) = if embed.operator_plane {
        let token = config.admin.token(&options.env)?;
        (
            token,
            Some(bind("operator plane", config.admin.listen).await?),
        )
    } else {
        (None, None)
    };
    let core = Core::start(&config, &options).await?;
    let readiness = core.readiness(config.readiness.max_staleness);
    let admin = match admin_listener {
        Some(listener) => {
            let addr = local_addr("operator plane", &listener)?;
            let plane = Arc::new(core.admin_plane(&config, admin_token));
            let task = tokio::spawn(serve(
                listener,
                plane,
                options.limits,
                Some((core.metrics.clone(), Listener::Admin)),
                core.shutdown.subscribe(),
            ));
            Some((addr, task))
        }
        None => None,
    };
    Ok(Embedded {
        core,
        readiness,
        admin,
    })
}

impl Embedded {
    /// The handle to resolve with: clone it into every request handler.
    pub fn store(&self) -> &Store {
        &self.core.store
    }

    /// `Ok` once a snapshot is loaded (and fresh enough, when
    /// `readiness.max_staleness` is set): what `/readyz` would answer.
    pub fn ready(&self) -> Result<(), NotReady> {
        self.readiness.check()
    }

    /// What the source last did.
    pub fn status(&self) -> &Arc<SyncStatus> {
        &self.core.status
    }

    /// The operator plane's address, when it was asked for.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(addr, _)| *addr)
    }

    /// Looks at the source now instead of at its next poll.
    pub fn check_source_now(&self) {
        self.core.check_source_now();
    }

    /// Stops the source and the writer, flushes the cache, and stops the
    /// operator plane if it runs.
    pub async fn shutdown(self) {
        let _ = self.core.shutdown.send(true);
        if let Some((_, task)) = self.admin {
            let _ = task.await;
        }
        self.core.stop().await;
    }
}
