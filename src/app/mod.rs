//! Wiring: builds the sidecar from a [`Config`] and shuts it down in order.
//!
//! * [`core`]: the store kept fresh from its source (writer thread, sync
//!   thread, cache), with no listener.
//! * this module: the standalone sidecar, the core behind its data plane,
//!   operator plane and Unix socket. `main` and the integration tests
//!   start it the same way, through [`start`]; tests bind port 0 and read
//!   the real addresses back.
//! * [`embed`]: the core inside a gateway's own process.

pub mod core;
pub mod embed;

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;

use self::core::Core;
use crate::config::secret::Env;
use crate::config::{Config, Http1Path};
use crate::model::clock::{SharedClock, SystemClock};
use crate::server::data::{DataPlane, PointersLimit};
use crate::server::{serve, Http1, Limits};
use crate::store::Store;
use crate::sync::status::Activity;
use crate::sync::status::SyncStatus;
use crate::telemetry::Listener;

/// Permissions of the data-plane Unix socket: owner and group may connect.
pub const UNIX_SOCKET_MODE: u32 = 0o660;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("config: admin.listen: {0}")]
    InsecureAdmin(#[from] crate::config::InsecureAdmin),
    #[error("server.unix_socket {0}: exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("config: source: {0}")]
    Source(#[from] crate::sync::configured::BuildError),
    #[error("cannot start the writer or sync thread: {0}")]
    Writer(#[source] std::io::Error),
    #[error("config: trust.keys: {0}")]
    Trust(String),
    #[error("config: report: cannot set up the node report: {0}")]
    Report(String),
    #[error("config: {0}")]
    NodeId(#[from] crate::config::BadNodeId),
}

impl StartError {
    /// True when the config is what is wrong (exit 78, as `check-config`
    /// says), not the machine (a port taken, no thread).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            StartError::InsecureAdmin(_)
                | StartError::Source(_)
                | StartError::Trust(_)
                | StartError::Report(_)
                | StartError::NodeId(_)
        )
    }
}

/// What a start checks of a config before it binds anything, and what
/// it notes without refusing: the one list both the start and
/// `check-config` run, so they never disagree.
pub fn preflight(config: &Config, env: &Env) -> Result<Vec<String>, StartError> {
    config.admin.token(env)?;
    config.node.resolve_id(env, config.server.listen.port())?;
    let t = &config.trust;
    crate::sync::key_watch::load(&t.keys, t.require_signatures)
        .map_err(|e| StartError::Trust(e.to_string()))?;
    crate::sync::configured::Configured::build(&config.source, env)?;
    crate::sync::report::sink_for(config, env, "preflight").map_err(StartError::Report)?;
    let mut notes = Vec::new();
    if let crate::config::Source::File(f) = &config.source.kind {
        if !f.path.exists() {
            notes.push(format!(
                "source.path {}: no such file yet; the sidecar starts, serves nothing and is not \
                 ready until it appears (or until the last-known-good cache loads)",
                f.path.display()
            ));
        }
    }
    Ok(notes)
}

/// How to start, beyond the config file.
#[derive(Debug, Clone)]
pub struct Options {
    pub clock: SharedClock,
    pub limits: Limits,
    /// Where the variables named by `*.token_env` are read (the process
    /// environment by default; tests inject their own).
    pub env: Env,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: Arc::new(SystemClock),
            limits: Limits::default(),
            env: Env::process(),
        }
    }
}

/// A running sidecar: the core and its planes.
#[derive(Debug)]
pub struct Sidecar {
    data_addr: SocketAddr,
    admin_addr: SocketAddr,
    core: Core,
    unix_socket: Option<PathBuf>,
    servers: Vec<JoinHandle<()>>,
}

impl Sidecar {
    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn store(&self) -> &Store {
        &self.core.store
    }

    pub fn status(&self) -> &Arc<SyncStatus> {
        &self.core.status
    }

    /// What the last-known-good cache writer has done.
    pub fn cache(&self) -> &Arc<Activity> {
        &self.core.cache
    }

    /// Applies the scheduled changes due now (by the sidecar's clock)
    /// without waiting for the timer; returns how many took effect. For
    /// tests that drive a manual clock.
    pub async fn tick_schedules(&self) -> usize {
        self.core.tick_schedules().await
    }

    /// Asks the source to look for changes now instead of at its next poll
    /// or retry (whatever its kind). A request already queued covers this
    /// one.
    pub fn check_source_now(&self) {
        self.core.check_source_now();
    }

    /// Stops accepting on every listener, drains in-flight requests within
    /// the drain deadline, stops the source and the writer, and flushes
    /// the last-known-good cache.
    pub async fn shutdown(self) {
        let _ = self.core.shutdown.send(true);
        for task in self.servers {
            let _ = task.await;
        }
        self.core.stop().await;
        if let Some(path) = &self.unix_socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Starts with the system clock and default limits.
pub async fn start(config: Config) -> Result<Sidecar, StartError> {
    start_with(config, Options::default()).await
}

pub async fn start_with(config: Config, options: Options) -> Result<Sidecar, StartError> {
    for note in preflight(&config, &options.env)? {
        tracing::warn!("{note}");
    }
    let admin_token = config.admin.token(&options.env)?;
    let data_listener = bind("data plane", config.server.listen).await?;
    let admin_listener = bind("operator plane", config.admin.listen).await?;
    let data_addr = local_addr("data plane", &data_listener)?;
    let admin_addr = local_addr("operator plane", &admin_listener)?;
    let unix_socket =
        Some(PathBuf::from(&config.server.unix_socket)).filter(|p| !p.as_os_str().is_empty());
    let unix_listener = match &unix_socket {
        Some(path) => Some(bind_unix(path)?),
        None => None,
    };

    let mut config = config;
    config.node.id = config.node.resolve_id(&options.env, data_addr.port())?;
    let core = Core::start(&config, &options).await?;
    let shutdown_rx = core.shutdown.subscribe();
    let data = Arc::new(DataPlane {
        store: core.store.clone(),
        metrics: core.metrics.clone(),
        project_header: config.server.project_header.clone(),
        environment_header: config.server.environment_header.clone(),
        pointers_limit: PointersLimit(config.server.max_pointers_header_bytes),
    });
    let admin = Arc::new(core.admin_plane(&config, admin_token));
    let data_limits = Limits {
        http1: match config.server.http1 {
            Http1Path::HotPath => Http1::HotPath,
            Http1Path::HyperOnly => Http1::HyperOnly,
        },
        ..options.limits
    };
    let mut servers = vec![
        tokio::spawn(serve(
            data_listener,
            data.clone(),
            data_limits,
            Some((core.metrics.clone(), Listener::Data)),
            shutdown_rx.clone(),
        )),
        tokio::spawn(serve(
            admin_listener,
            admin,
            options.limits,
            Some((core.metrics.clone(), Listener::Admin)),
            shutdown_rx.clone(),
        )),
    ];
    if let Some(listener) = unix_listener {
        servers.push(tokio::spawn(serve(
            listener,
            data,
            data_limits,
            Some((core.metrics.clone(), Listener::Unix)),
            shutdown_rx,
        )));
    }
    tracing::info!(
        %data_addr,
        %admin_addr,
        unix_socket = ?unix_socket,
        source = config.source.kind.kind().as_str(),
        node = %config.node.id,
        labels = ?config.node.labels,
        "env-sidecar listening"
    );
    Ok(Sidecar {
        data_addr,
        admin_addr,
        core,
        unix_socket,
        servers,
    })
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            what,
            addr: addr.to_string(),
            source,
        })
}

fn local_addr(what: &'static str, listener: &TcpListener) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        what,
        addr: "?".into(),
        source,
    })
}

/// Binds the Unix socket, removing a stale socket file left by a previous
/// run (but never a regular file), and sets its permissions.
fn bind_unix(path: &Path) -> Result<UnixListener, StartError> {
    let err = |source| StartError::Bind {
        what: "data plane (unix socket)",
        addr: path.display().to_string(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => return Err(StartError::NotASocket(path.to_owned())),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(UNIX_SOCKET_MODE))
        .map_err(err)?;
    Ok(listener)
}
