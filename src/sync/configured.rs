//! The source a config names: built from its typed `[source]` and driven
//! as one [`Fetch`]. The only place in the sync layer that dispatches on
//! the kind of source; the sync loop sees a source, a cursor and a
//! status. (Config checks, status views and the operator commands read
//! the kind too, to say what it is.)

use crate::model::origin::MassRemoval;
use std::sync::Arc;
use std::time::Duration;

use super::file::FileSource;
use super::http::{ControlPlane, HttpSource};
use super::redis::RedisSource;
use super::{Fetch, Stepped, SyncContext, SyncError};
use crate::config::secret::Env;
use crate::config::{Source, SourceConfig};
use crate::model::wire::BodyReader;
use crate::redis_client::connection::Settings;
use crate::redis_client::Connector;
use crate::store::ApplyReport;

/// Why the configured source could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot set up the HTTP client for the control plane: {0}")]
    Http(#[source] reqwest::Error),
    #[error("cannot set up the Redis client: {0}")]
    Redis(String),
}

/// One of the sources.
#[derive(Debug)]
pub enum Configured {
    File(FileSource),
    Http(HttpSource),
    Redis(Box<RedisSource>),
}

impl Configured {
    /// The source `config` names, with its secrets from `env`.
    pub fn build(config: &SourceConfig, env: &Env) -> Result<Configured, BuildError> {
        let reader = BodyReader {
            max_document_bytes: config.max_document_bytes,
            parallel: false,
        };
        Ok(match &config.kind {
            Source::File(f) => Configured::File(FileSource::new(
                f.path.clone(),
                config.poll_interval,
                reader,
            )),
            Source::Http(h) => {
                let token = env.secret(&h.token_env);
                let control_plane = ControlPlane::new(
                    &h.url,
                    token,
                    h.timing.request_timeout,
                    h.timing.long_poll_wait,
                    reader,
                )
                .map_err(BuildError::Http)?;
                Configured::Http(HttpSource::new(
                    control_plane,
                    h.mode,
                    config.poll_interval,
                    h.timing.backoff_max,
                ))
            }
            Source::Redis(r) => {
                let connector = Connector::new(Settings {
                    url: &r.url,
                    password: env.secret(&r.token_env),
                    tls: &r.tls,
                    read_from: r.read_from,
                    connect_timeout: r.timing.request_timeout,
                    // Longer than any XREAD BLOCK.
                    response_timeout: r.timing.long_poll_wait + r.timing.request_timeout,
                })
                .map_err(|e| BuildError::Redis(e.to_string()))?;
                Configured::Redis(Box::new(RedisSource::new(Arc::new(connector), r, reader)))
            }
        })
    }
}

impl Fetch for Configured {
    fn first_delay(&mut self, ctx: &SyncContext) -> Duration {
        match self {
            Configured::File(s) => s.first_delay(ctx),
            Configured::Http(s) => s.first_delay(ctx),
            Configured::Redis(s) => s.first_delay(ctx),
        }
    }

    async fn step(&mut self, ctx: &SyncContext) -> Result<Stepped, SyncError> {
        match self {
            Configured::File(s) => s.step(ctx).await,
            Configured::Http(s) => s.step(ctx).await,
            Configured::Redis(s) => s.step(ctx).await,
        }
    }

    async fn refresh_all(
        &mut self,
        ctx: &SyncContext,
        allow: MassRemoval,
    ) -> Result<(ApplyReport, String), SyncError> {
        match self {
            Configured::File(s) => s.refresh_all(ctx, allow).await,
            Configured::Http(s) => s.refresh_all(ctx, allow).await,
            Configured::Redis(s) => s.refresh_all(ctx, allow).await,
        }
    }

    async fn refresh_project(
        &mut self,
        ctx: &SyncContext,
        id: &str,
        allow: MassRemoval,
    ) -> Result<(ApplyReport, String), SyncError> {
        match self {
            Configured::File(s) => s.refresh_project(ctx, id, allow).await,
            Configured::Http(s) => s.refresh_project(ctx, id, allow).await,
            Configured::Redis(s) => s.refresh_project(ctx, id, allow).await,
        }
    }

    fn check_now(&mut self) {
        match self {
            Configured::File(s) => s.check_now(),
            Configured::Http(s) => s.check_now(),
            Configured::Redis(s) => s.check_now(),
        }
    }

    fn backoff_max(&self) -> Duration {
        match self {
            Configured::File(s) => s.backoff_max(),
            Configured::Http(s) => s.backoff_max(),
            Configured::Redis(s) => s.backoff_max(),
        }
    }
}
