//! The sync machinery without any listener: the store, the writer thread
//! and its scheduler, the last-known-good cache, and the source on its
//! sync thread. The standalone sidecar puts its planes in front of it;
//! an embedding gateway uses it directly ([`super::embed`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use super::{Options, StartError};
use crate::config::host_name;
use crate::config::secret::Secret;
use crate::config::{Config, GrpcPointersStruct};
use crate::model::clock::SharedClock;
use crate::model::trust::Trust;
use crate::server::admin::{AdminPlane, StatusInfo};
use crate::store::{PointersStructs, Store, StoreWriter};
use crate::sync::cache::{self, CacheWriter};
use crate::sync::configured::Configured;
use crate::sync::key_watch::{KeyWatcher, TrustState};
use crate::sync::readiness::Readiness;
use crate::sync::refresh::Refresher;
use crate::sync::report::{Leaver, NodeIdentity, ReportState, Reporter};
use crate::sync::runtime::SyncRuntime;
use crate::sync::status::Activity;
use crate::sync::status::SyncStatus;
use crate::sync::writer::{self, WriterHandle};
use crate::sync::{self as sync, SourceCommand, SyncContext};
use crate::telemetry::Metrics;

/// How often histogram samples are folded into buckets between scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// A running store kept fresh from its source.
#[derive(Debug)]
pub struct Core {
    pub store: Store,
    pub status: Arc<SyncStatus>,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
    pub cache: Arc<Activity>,
    /// The keys in use, for status.
    pub trust: Arc<TrustState>,
    /// The node report's writes, for status.
    pub report: Arc<ReportState>,
    /// This node's id in the fleet.
    pub node: String,
    cache_path: Option<PathBuf>,
    commands: mpsc::Sender<SourceCommand>,
    /// Dropped first at shutdown so the writer ends.
    writer: WriterHandle,
    /// Flips once at shutdown; every task and listener watches it.
    pub shutdown: watch::Sender<bool>,
    background: Vec<JoinHandle<()>>,
    /// The node reporter, which hands back how to leave the fleet.
    reporter: Option<JoinHandle<Leaver>>,
    /// How long leaving the fleet may take.
    leave_timeout: Duration,
    sync_runtime: SyncRuntime,
}

/// The trust settings: the key files loaded (each problem warned of
/// once), the signature age and clock skew limits.
fn trust_of(t: &crate::config::TrustConfig) -> Result<Trust, StartError> {
    let loaded = sync::key_watch::load(&t.keys, t.require_signatures)
        .map_err(|e| StartError::Trust(e.to_string()))?;
    loaded.warn();
    let max_age = Some(t.max_signature_age).filter(|d| !d.is_zero());
    Ok(
        Trust::new(loaded.keys, t.require_signatures, max_age)
            .with_max_clock_skew(t.max_clock_skew),
    )
}

impl Core {
    /// Loads the cache (if any), then starts the writer, the source and
    /// the cache writer. Returns once the cache is loaded; the source's
    /// first fetch runs on.
    pub async fn start(config: &Config, options: &Options) -> Result<Core, StartError> {
        let clock = options.clock.clone();
        let metrics = Metrics::new();
        let t = &config.trust;
        let trust = trust_of(t)?;
        let (store, store_writer) = store_of(config, &trust);
        let trust_state = Arc::new(TrustState::new(&trust));
        let status = Arc::new(SyncStatus::default());
        let cache_path = Some(config.cache.path.clone()).filter(|p| !p.as_os_str().is_empty());
        let cache_state = Arc::new(Activity::default());
        let persist = cache_path.as_ref().map(|_| Arc::new(Notify::new()));
        let report_due = Arc::new(Notify::new());
        let listeners = writer::Listeners {
            persist: persist.clone(),
            report: Some(report_due.clone()),
        };
        let (writer, writer_stopped) =
            writer::spawn(store_writer, clock.clone(), listeners, metrics.clone())
                .map_err(StartError::Writer)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (commands, commands_rx) = mpsc::channel(16);

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
        let source = Configured::build(s, &options.env)?;
        let source_task =
            sync_runtime.spawn(sync::run(source, ctx, commands_rx, shutdown_rx.clone()));
        // Order matters at shutdown: the source stops, which drops its
        // writer handle; the writer drains and stops once the core's goes
        // too; then the cache flushes.
        let mut background = vec![source_task, tokio::spawn(writer_stopped.wait())];
        if let (Some(path), Some(dirty)) = (cache_path.clone(), persist) {
            let cache = CacheWriter {
                path,
                store: store.clone(),
                dirty,
                state: cache_state.clone(),
                clock: clock.clone(),
            };
            background.push(sync_runtime.spawn(cache.run(shutdown_rx.clone())));
        }
        let node = if config.node.id.is_empty() {
            host_name()
        } else {
            config.node.id.clone()
        };
        let report_state = Arc::new(ReportState::default());
        let reporter_task = match sync::report::sink_for(config, &options.env, &node)
            .map_err(StartError::Report)?
        {
            Some(sink) => {
                let reporter = Reporter {
                    sink,
                    identity: NodeIdentity {
                        node: node.clone(),
                        labels: config.node.labels.clone(),
                        source: s.kind.kind().as_str(),
                        started_at: clock.now(),
                    },
                    store: store.clone(),
                    status: status.clone(),
                    metrics: metrics.clone(),
                    clock: clock.clone(),
                    state: report_state.clone(),
                    due: report_due,
                    interval: config.report.interval,
                    min_interval: config.report.min_interval,
                };
                Some(sync_runtime.spawn(reporter.run(shutdown_rx.clone())))
            }
            None => None,
        };
        if !t.keys.is_empty() {
            let watcher = KeyWatcher {
                paths: t.keys.clone(),
                trust,
                writer: writer.clone(),
                state: trust_state.clone(),
                clock: clock.clone(),
                interval: s.poll_interval,
            };
            background.push(sync_runtime.spawn(watcher.run(shutdown_rx.clone())));
        }
        background.push(tokio::spawn(metrics_upkeep(metrics.clone(), shutdown_rx)));
        Ok(Core {
            store,
            status,
            metrics,
            clock,
            cache: cache_state,
            trust: trust_state,
            report: report_state,
            node,
            cache_path,
            commands,
            writer,
            shutdown,
            background,
            reporter: reporter_task,
            leave_timeout: s.kind.request_timeout(),
            sync_runtime,
        })
    }

    /// The operator plane over this core.
    pub fn admin_plane(&self, config: &Config, token: Option<Secret>) -> AdminPlane {
        AdminPlane {
            readiness: self.readiness(config.readiness.max_staleness),
            metrics: self.metrics.clone(),
            refresher: self.refresher(config.source.kind.request_timeout()),
            token,
            info: StatusInfo {
                source: config.source.kind.clone(),
                cache_path: self.cache_path.clone(),
                cache: self.cache.clone(),
                trust: self.trust.clone(),
                report: self.report.clone(),
                node: self.node.clone(),
                labels: config.node.labels.clone(),
            },
        }
    }

    pub fn readiness(&self, max_staleness: Duration) -> Readiness {
        Readiness {
            store: self.store.clone(),
            status: self.status.clone(),
            max_staleness,
            clock: self.clock.clone(),
        }
    }

    /// Forced refreshes, coalesced; `timeout` bounds the wait for one.
    pub fn refresher(&self, timeout: Duration) -> Refresher {
        Refresher::new(self.commands.clone(), timeout)
    }

    /// See `Sidecar::tick_schedules`.
    pub async fn tick_schedules(&self) -> usize {
        self.writer.tick().await.unwrap_or(0)
    }

    /// See `Sidecar::check_source_now`.
    pub fn check_source_now(&self) {
        let _ = self.commands.try_send(SourceCommand::CheckNow);
    }

    /// Stops the source and the writer (what is queued is applied),
    /// flushes the cache, and, as the last act, leaves the fleet (the
    /// node's report removed). Listeners must have been told already
    /// (through `shutdown`) and awaited: the node leaves after draining.
    pub async fn stop(self) {
        drop(self.writer);
        let _ = self.shutdown.send(true);
        for task in self.background {
            let _ = task.await;
        }
        if let Some(Ok(leaver)) = match self.reporter {
            Some(task) => Some(task.await),
            None => None,
        } {
            let timeout = self.leave_timeout;
            let _ = self
                .sync_runtime
                .spawn(async move { leaver.leave(timeout).await })
                .await;
        }
        self.sync_runtime.stop().await;
    }
}

async fn metrics_upkeep(metrics: Arc<Metrics>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(METRICS_UPKEEP) => metrics.upkeep(),
            _ = shutdown.changed() => return,
        }
    }
}

/// The store and its only writer, set up as `config` says.
fn store_of(config: &Config, trust: &Trust) -> (Store, StoreWriter) {
    let (store, mut writer) = Store::new(config.source.max_removed_fraction);
    writer.set_trust(Arc::new(trust.clone()));
    writer.set_pointers_structs(match config.server.grpc_pointers_struct {
        GrpcPointersStruct::PerCheck => PointersStructs::PerCheck,
        GrpcPointersStruct::Prerendered => PointersStructs::Prerendered,
    });
    (store, writer)
}

/// Loads the last-known-good cache, if there is a valid one. Never fails:
/// a missing or damaged cache is logged and the sidecar starts without it.
/// The writer reads and decodes it on its thread, as it parses every
/// fetched body.
async fn load_cache(path: &Path, writer: &WriterHandle, status: &SyncStatus) {
    let owned = path.to_owned();
    let projects = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = projects.clone();
    let decode = move || {
        let cached = cache::load(&owned)?;
        counted.store(cached.len(), std::sync::atomic::Ordering::Relaxed);
        Ok::<_, cache::CacheError>(cached.into_update())
    };
    match writer.parse_and_apply("cache", decode).await {
        Ok(Ok(Ok(report))) => {
            // The data is as fresh as the file: staleness counts from its write.
            if let Ok(written) = std::fs::metadata(path).and_then(|m| m.modified()) {
                status.baseline(written);
            }
            tracing::info!(
                path = %path.display(),
                projects = projects.load(std::sync::atomic::Ordering::Relaxed),
                accepted = report.added,
                cursor = %report.cursor,
                "serving from the last-known-good cache"
            );
            if !report.rejected.is_empty() {
                tracing::warn!(
                    refused = report.rejected.len(),
                    "the cache holds documents refused under the current trust settings: it does not stand in for the source, which is loaded in full"
                );
            }
        }
        Ok(Err(cache::CacheError::Read { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            tracing::info!(path = %path.display(), "no last-known-good cache yet");
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "last-known-good cache ignored"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "last-known-good cache not applied"),
        Err(e) => tracing::warn!(error = %e, "last-known-good cache not applied"),
    }
}
