//! Wiring: builds the store, the writer task, the source, the cache writer
//! and every listener from a [`Config`], and shuts them down in order.
//!
//! `main` and the integration tests start the sidecar the same way, through
//! [`start`]; tests bind port 0 and read the real addresses back.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::config::secret::Env;
use crate::config::{Config, SourceKind};
use crate::model::clock::{SharedClock, SystemClock};
use crate::server::admin::{AdminPlane, StatusInfo};
use crate::server::data::DataPlane;
use crate::server::{serve, Limits};
use crate::store::{Store, Update};
use crate::sync::cache::{self, CacheState, CacheWriter};
use crate::sync::file::FileSource;
use crate::sync::http::{ControlPlane, HttpSource};
use crate::sync::readiness::Readiness;
use crate::sync::refresh::Refresher;
use crate::sync::runtime::SyncRuntime;
use crate::sync::status::SyncStatus;
use crate::sync::writer::{self, WriterHandle};
use crate::sync::{self as sync, Origin, SourceCommand, SyncContext};
use crate::telemetry::Metrics;

/// Permissions of the data-plane Unix socket: owner and group may connect.
pub const UNIX_SOCKET_MODE: u32 = 0o660;

/// How often histogram samples are folded into buckets between scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error(
        "refusing to serve the operator plane on {0} without a token: set the variable named by \
         admin.token_env, or listen on a loopback address"
    )]
    InsecureAdmin(SocketAddr),
    #[error("server.unix_socket {0}: exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("cannot set up the HTTP client for the control plane: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("cannot start the writer or sync thread: {0}")]
    Writer(#[source] std::io::Error),
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

/// A running sidecar.
#[derive(Debug)]
pub struct Sidecar {
    data_addr: SocketAddr,
    admin_addr: SocketAddr,
    store: Store,
    status: Arc<SyncStatus>,
    commands: mpsc::Sender<SourceCommand>,
    cache: Arc<CacheState>,
    /// For `tick_schedules`; dropped first at shutdown so the writer ends.
    writer: WriterHandle,
    unix_socket: Option<PathBuf>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    /// Where the source and the cache writer run.
    sync_runtime: SyncRuntime,
}

impl Sidecar {
    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn status(&self) -> &Arc<SyncStatus> {
        &self.status
    }

    /// What the last-known-good cache writer has done.
    pub fn cache(&self) -> &Arc<CacheState> {
        &self.cache
    }

    /// Applies the scheduled changes due now (by the sidecar's clock)
    /// without waiting for the timer; returns how many took effect. For
    /// tests that drive a manual clock.
    pub async fn tick_schedules(&self) -> usize {
        self.writer.tick().await.unwrap_or(0)
    }

    /// Asks the source to look for changes now instead of at its next poll
    /// or retry (whatever its kind). A request already queued covers this
    /// one.
    pub fn check_source_now(&self) {
        let _ = self.commands.try_send(SourceCommand::CheckNow);
    }

    /// Stops accepting on every listener, drains in-flight requests within
    /// the drain deadline, stops the source and the writer, and flushes
    /// the last-known-good cache.
    pub async fn shutdown(self) {
        drop(self.writer);
        let _ = self.shutdown.send(true);
        for task in self.servers {
            let _ = task.await;
        }
        for task in self.background {
            let _ = task.await;
        }
        self.sync_runtime.stop().await;
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
    let admin_token = options.env.secret(&config.admin.token_env);
    if admin_token.is_none() && !config.admin.listen.ip().is_loopback() {
        return Err(StartError::InsecureAdmin(config.admin.listen));
    }
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

    let clock = options.clock.clone();
    let metrics = Metrics::new();
    let (store, store_writer) = Store::new(config.source.max_removed_fraction);
    let status = Arc::new(SyncStatus::default());
    let cache_path = Some(config.cache.path.clone()).filter(|p| !p.as_os_str().is_empty());
    let cache_state = Arc::new(CacheState::default());
    let persist = cache_path.as_ref().map(|_| Arc::new(Notify::new()));
    let (writer, writer_stopped) = writer::spawn(
        store_writer,
        clock.clone(),
        persist.clone(),
        metrics.clone(),
    )
    .map_err(StartError::Writer)?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (commands, commands_rx) = mpsc::channel(16);
    let refresher = Refresher::new(commands.clone(), config.source.request_timeout);

    if let Some(path) = &cache_path {
        for stale in cache::remove_stale_temp_files(path) {
            tracing::info!(path = %stale.display(), "removed a temporary cache file left by an earlier process");
        }
        load_cache(path, &writer, &status).await;
    }

    let sync_runtime = SyncRuntime::start().map_err(StartError::Writer)?;
    let ctx = SyncContext {
        store: store.clone(),
        writer: writer.clone(),
        status: status.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
    };
    let s = &config.source;
    let source_task = match s.kind {
        SourceKind::File => {
            let source = FileSource::new(s.path.clone(), s.poll_interval);
            sync_runtime.spawn(sync::run(source, ctx, commands_rx, shutdown_rx.clone()))
        }
        SourceKind::Http => {
            let token = options.env.secret(&s.token_env);
            let control_plane =
                ControlPlane::new(&s.url, token, s.request_timeout, s.long_poll_wait)
                    .map_err(StartError::HttpClient)?;
            let source = HttpSource::new(control_plane, s.mode, s.poll_interval, s.backoff_max);
            sync_runtime.spawn(sync::run(source, ctx, commands_rx, shutdown_rx.clone()))
        }
    };
    // Order matters at shutdown: the source stops, which drops the last
    // writer handle but the sidecar's; the writer drains and stops once
    // that one goes too, then the cache flushes.
    let mut background = vec![source_task, tokio::spawn(writer_stopped.wait())];
    if let (Some(path), Some(dirty)) = (cache_path.clone(), persist) {
        let cache = CacheWriter {
            path,
            store: store.clone(),
            dirty,
            state: cache_state.clone(),
        };
        background.push(sync_runtime.spawn(cache.run(shutdown_rx.clone())));
    }
    background.push(tokio::spawn(metrics_upkeep(
        metrics.clone(),
        shutdown_rx.clone(),
    )));

    let data = Arc::new(DataPlane {
        store: store.clone(),
        metrics: metrics.clone(),
        project_header: config.server.project_header.clone(),
        environment_header: config.server.environment_header.clone(),
    });
    let admin = Arc::new(AdminPlane {
        readiness: Readiness {
            store: store.clone(),
            status: status.clone(),
            max_staleness: config.readiness.max_staleness,
            clock: clock.clone(),
        },
        metrics: metrics.clone(),
        refresher,
        token: admin_token,
        info: StatusInfo {
            source_kind: config.source.kind,
            source_url: config.source.url.clone(),
            source_path: config.source.path.clone(),
            mode: config.source.mode,
            cache_path,
            cache: cache_state.clone(),
        },
    });
    let mut servers = vec![
        tokio::spawn(serve(
            data_listener,
            data.clone(),
            options.limits,
            shutdown_rx.clone(),
        )),
        tokio::spawn(serve(
            admin_listener,
            admin,
            options.limits,
            shutdown_rx.clone(),
        )),
    ];
    if let Some(listener) = unix_listener {
        servers.push(tokio::spawn(serve(
            listener,
            data,
            options.limits,
            shutdown_rx,
        )));
    }
    tracing::info!(
        %data_addr,
        %admin_addr,
        unix_socket = ?unix_socket,
        source = config.source.kind.as_str(),
        "env-sidecar listening"
    );
    Ok(Sidecar {
        data_addr,
        admin_addr,
        store,
        status,
        commands,
        cache: cache_state,
        writer,
        unix_socket,
        shutdown,
        servers,
        background,
        sync_runtime,
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

async fn metrics_upkeep(metrics: Arc<Metrics>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(METRICS_UPKEEP) => metrics.upkeep(),
            _ = shutdown.changed() => return,
        }
    }
}

/// Loads the last-known-good cache, if there is a valid one. Never fails:
/// a missing or damaged cache is logged and the sidecar starts without it.
/// The writer decodes it on its thread, as it parses every fetched body.
async fn load_cache(path: &Path, writer: &WriterHandle, status: &SyncStatus) {
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "no last-known-good cache yet");
            return;
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "last-known-good cache ignored: unreadable");
            return;
        }
    };
    let owned = path.to_owned();
    let projects = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = projects.clone();
    let decode = move || {
        let body = cache::decode(&owned, &bytes)?;
        counted.store(body.projects.len(), std::sync::atomic::Ordering::Relaxed);
        Ok::<_, cache::CacheError>(Update::Snapshot(body))
    };
    match writer.parse_and_apply(decode, Origin::Cache, true).await {
        Ok(Ok(Ok(report))) => {
            // The data is as fresh as the file: staleness counts from its write.
            if let Ok(written) = std::fs::metadata(path).and_then(|m| m.modified()) {
                status.baseline(written);
            }
            tracing::info!(
                path = %path.display(),
                projects = projects.load(std::sync::atomic::Ordering::Relaxed),
                accepted = report.added,
                cursor = report.cursor,
                "serving from the last-known-good cache"
            );
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "last-known-good cache ignored"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "last-known-good cache not applied"),
        Err(e) => tracing::warn!(error = %e, "last-known-good cache not applied"),
    }
}
