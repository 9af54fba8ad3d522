//! The Redis a command talks to (`publish`, `fleet`), named by flags
//! (`--redis URL`, `--password-env`, `--tls-*-file`) or taken from a
//! sidecar's config (`--config`: its `[source]` Redis settings), and
//! connected through the same layer as the sidecar, so every deployment
//! the sidecar follows (a cluster, sentinels, a socket, TLS with a client
//! certificate) works for the commands too. Commands always talk to the
//! primary.

use std::time::Duration;

use crate::config::secret::Env;
use crate::config::TlsFiles;
use crate::redis_client::connection::{ConnectorError, Settings};
use crate::redis_client::{Conn, Connector, RedisKeys, Role};

/// Where a command's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub url: String,
    pub key_prefix: String,
    /// The variable holding the password.
    pub password_env: String,
    pub tls: TlsFiles,
}

/// Requests of a command wait at most this long. Every request is
/// bounded in size (a chunk of the hash, a transaction of at most 1 000
/// changes and 8 MiB), so this is plenty; and a request stuck on a node
/// that died (a cluster's client retries inside it until this passes)
/// gives way to the command's own retry, which connects again and finds
/// the new primary (see `ops::retry`).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why the target could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Settings(#[from] ConnectorError),
    #[error("cannot reach Redis: {0}")]
    Connect(#[source] redis::RedisError),
}

impl RedisTarget {
    pub fn keys(&self) -> RedisKeys {
        RedisKeys::new(&self.key_prefix)
    }

    /// A connection to the primary.
    pub async fn connect(&self, env: &Env) -> Result<Conn, TargetError> {
        let connector = Connector::new(Settings {
            url: &self.url,
            password: env.secret(&self.password_env),
            tls: &self.tls,
            read_from: None,
            connect_timeout: Duration::from_secs(5),
            response_timeout: TIMEOUT,
        })?;
        connector
            .connect(Role::Write)
            .await
            .map_err(TargetError::Connect)
    }
}
