//! The served report: where this node is in the source's change log and
//! what it does not serve as published, written where the fleet commands
//! read it, so an operator can tell whether a revision has reached every
//! gateway node.
//!
//! A report names the node (id, labels, version), says where what it
//! serves came from ([`Provenance`]), its cursor (a stream id, or the
//! control plane's revision) and snapshot age, a digest (SHA-256 over the
//! sorted `project revision` pairs it serves, [`digest`]), and its
//! **exceptions**: every project it does not serve as the source
//! published it, with reason and revision — rejected (a NACK: invalid,
//! unsigned, a bad signature…), or ahead (the source holds an older
//! revision than the node keeps) — and, while the blast-radius guard
//! refuses what the source has, why (`held`). Nothing per project
//! otherwise: its size is constant plus its exceptions. A reader answers
//! "does node N serve P at R?" from the change position at which P@R was
//! published (`{P}:positions` in Redis, `GET /v1/positions` from a
//! control plane): N's cursor is at or past it and P is not among N's
//! exceptions.
//!
//! Reports of the older layout ([`Layout::PerProject`]: every project
//! served, with its revision) are still read, so a fleet upgrades node by
//! node.
//!
//! [`Reporter`] writes it on its own task (the sync thread), never on a
//! request thread and never in the way of sync: after changes or a cursor
//! that moved (at most once per `min_interval`: a burst is one write),
//! when the source is first reached, and on a heartbeat (`interval`). A
//! sink that refuses or fails is a warning and a metric, retried with
//! backoff; serving and syncing go on. Sinks: [`redis`](mod@redis) (beside
//! the data, with a TTL) and [`http`] (`POST /v1/nodes/{id}/status` to the
//! control plane).

pub mod http;
pub mod redis;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::status::{Activity, Provenance, SyncStatus};
use crate::model::clock::SharedClock;
use crate::model::timestamp::format_rfc3339;
use crate::store::Store;
use crate::telemetry::{Metrics, ReportResult};

/// A report expires this many heartbeats after it was written: its node
/// stopped reporting.
pub const EXPIRY_HEARTBEATS: u32 = 3;

/// How long a store remembers a node whose report expired, so fleet
/// commands can list it as lost (`--lost-after` sees no further back).
pub const LOST_RETENTION: Duration = Duration::from_secs(3600);

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node: String,
    pub labels: BTreeMap<String, String>,
    /// `file`, `http` or `redis`.
    pub source: &'static str,
    pub started_at: SystemTime,
}

/// How a report says what its node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Written by nodes before the exceptions layout (no `layout` field):
    /// every project served, with its revision.
    #[default]
    PerProject,
    /// The cursor and the exceptions only.
    Exceptions,
}

/// The report without its exceptions: enough to tell whether the node is
/// converged (its digest against the source's, its cursor against the
/// change positions) and how it is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    #[serde(default)]
    pub layout: Layout,
    pub node: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub version: String,
    pub source: String,
    pub provenance: Provenance,
    /// The source cursor (a Redis stream id, or the control plane's
    /// revision).
    pub cursor: String,
    pub snapshot_age_seconds: Option<f64>,
    pub started_at: String,
    pub reported_at: String,
    /// The heartbeat: a report older than two of these is stale.
    pub interval_seconds: f64,
    /// See [`digest`].
    pub digest: String,
    /// Projects served.
    pub projects: usize,
    /// Projects whose last document was rejected.
    pub rejected: usize,
    /// Projects whose source holds an older revision than this node keeps.
    #[serde(default)]
    pub ahead: usize,
    /// Why the blast-radius guard refuses what the source has, while it
    /// does: the node serves what it had, and its cursor stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// One project as served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    pub revision: u64,
    /// When this revision started serving here (RFC 3339).
    pub since: String,
}

/// One rejected document: the NACK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    pub revision: Option<u64>,
    pub reason: String,
}

/// A project the node keeps at a newer revision than the source holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ahead {
    /// What the node keeps (serves, or removed at by a signed tombstone).
    pub keeps: u64,
    /// What the source holds.
    pub source: u64,
}

/// The whole report (the HTTP body; Redis keeps the parts as fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    #[serde(flatten)]
    pub summary: Summary,
    /// [`Layout::PerProject`] reports only: every project served.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub served: BTreeMap<String, Served>,
    #[serde(default)]
    pub rejections: BTreeMap<String, Nack>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ahead_of_source: BTreeMap<String, Ahead>,
}

/// SHA-256 over `project \n revision \n` of every pair, in id order: the
/// same for a node and for the source exactly when they hold the same
/// revisions.
pub fn digest<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    let mut pairs: Vec<(&str, u64)> = pairs.into_iter().collect();
    pairs.sort_unstable();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (id, revision) in pairs {
        ctx.update(id.as_bytes());
        ctx.update(b"\n");
        ctx.update(revision.to_string().as_bytes());
        ctx.update(b"\n");
    }
    let hex: String = ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The report of what `store` serves now.
pub fn build(
    identity: &NodeIdentity,
    store: &Store,
    status: &SyncStatus,
    cursor: String,
    interval: Duration,
    now: SystemTime,
) -> NodeReport {
    let projects = store.projects();
    let rejections: BTreeMap<String, Nack> = store
        .all_rejections()
        .into_iter()
        .map(|r| {
            (
                r.project,
                Nack {
                    revision: r.revision,
                    reason: r.reason.as_str().to_owned(),
                },
            )
        })
        .collect();
    let ahead_of_source: BTreeMap<String, Ahead> = store
        .all_ahead()
        .into_iter()
        .map(|(id, keeps, source)| (id, Ahead { keeps, source }))
        .collect();
    NodeReport {
        summary: Summary {
            layout: Layout::Exceptions,
            node: identity.node.clone(),
            labels: identity.labels.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            source: identity.source.to_owned(),
            provenance: Provenance::of(store, status),
            cursor,
            snapshot_age_seconds: status.age(now).map(|a| a.as_secs_f64()),
            started_at: format_rfc3339(identity.started_at),
            reported_at: format_rfc3339(now),
            interval_seconds: interval.as_secs_f64(),
            digest: digest(projects.iter().map(|p| (p.id(), p.revision()))),
            projects: projects.len(),
            rejected: rejections.len(),
            ahead: ahead_of_source.len(),
            held: status.held(),
        },
        served: BTreeMap::new(),
        rejections,
        ahead_of_source,
    }
}

/// Why a report was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The store will not take it (a read-only replica, an ACL, a 403).
    #[error("the report store refuses the write: {0}")]
    Refused(String),
    #[error("the report write failed: {0}")]
    Failed(String),
}

/// Where reports go.
#[derive(Debug)]
pub enum Sink {
    Redis(Box<redis::RedisSink>),
    Http(http::HttpSink),
}

impl Sink {
    async fn write(&mut self, report: &NodeReport, now: SystemTime) -> Result<(), ReportError> {
        match self {
            Sink::Redis(sink) => sink.write(report, now).await,
            Sink::Http(sink) => sink.write(report).await,
        }
    }

    /// Removes this node's report where it is kept (see
    /// [`redis::RedisSink::leave`], [`http::HttpSink::leave`]); `Ok(false)`
    /// when the report there was another process's of the same id.
    async fn leave(&mut self, started_at: &str) -> Result<bool, ReportError> {
        match self {
            Sink::Redis(sink) => sink.leave(started_at).await,
            Sink::Http(sink) => sink.leave(started_at).await,
        }
    }

    /// Where, for status (never a password).
    pub fn target(&self) -> String {
        match self {
            Sink::Redis(sink) => sink.target(),
            Sink::Http(sink) => sink.target(),
        }
    }

    /// Where leaving the fleet writes (a `DELETE` over HTTP).
    pub fn leave_target(&self) -> String {
        match self {
            Sink::Redis(sink) => sink.target(),
            Sink::Http(sink) => sink.leave_target(),
        }
    }
}

/// What the reporter has done, for `/admin/status`.
#[derive(Debug, Default)]
pub struct ReportState {
    /// Where reports go; `None` when nothing is reported.
    target: Mutex<Option<String>>,
    /// Its writes.
    pub writes: Activity,
}

impl ReportState {
    pub fn target(&self) -> Option<String> {
        crate::lock::lock(&self.target).clone()
    }
}

/// The backoff after a failed write: 1 s doubling, at most the heartbeat.
const RETRY_BASE: Duration = Duration::from_secs(1);

/// Writes this node's report.
pub struct Reporter {
    pub sink: Sink,
    pub identity: NodeIdentity,
    pub store: Store,
    pub status: Arc<SyncStatus>,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
    pub state: Arc<ReportState>,
    /// Notified by the writer after every change or rejection.
    pub due: Arc<Notify>,
    pub interval: Duration,
    pub min_interval: Duration,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("node", &self.identity.node)
            .field("sink", &self.sink.target())
            .finish()
    }
}

/// What a stopped reporter hands back: the node leaves the fleet with it
/// once the sidecar has drained ([`Leaver::leave`]).
#[derive(Debug)]
pub struct Leaver {
    sink: Sink,
    identity: NodeIdentity,
    state: Arc<ReportState>,
    clock: SharedClock,
}

impl Leaver {
    /// The node's last act when it stops gracefully: its report and its
    /// index entry are removed, so the fleet commands do not count it
    /// (a node that vanishes without this is lost, not left). Bounded by
    /// `timeout`; a failure is logged, never fatal.
    pub async fn leave(mut self, timeout: Duration) {
        let started_at = format_rfc3339(self.identity.started_at);
        let node = self.identity.node.clone();
        let target = self.sink.leave_target();
        let result = tokio::time::timeout(timeout, self.sink.leave(&started_at)).await;
        let now = self.clock.now();
        match result {
            Ok(Ok(true)) => {
                tracing::info!(%node, %target, "left the fleet: node report removed");
                self.state.writes.success(now, "left the fleet");
            }
            Ok(Ok(false)) => tracing::info!(
                %node,
                "not leaving: the report under this node id is another process's now"
            ),
            Ok(Err(e)) => {
                tracing::warn!(%node, %target, error = %e, "could not leave the fleet; the node will show as lost");
                self.state.writes.error(now, e.to_string());
            }
            Err(_) => {
                tracing::warn!(%node, %target, ?timeout, "leaving the fleet timed out; the node will show as lost");
            }
        }
    }
}

impl Reporter {
    /// Writes reports until `shutdown` flips; hands back what the node
    /// leaves the fleet with.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Leaver {
        let leaver = |r: Reporter| Leaver {
            sink: r.sink,
            identity: r.identity,
            state: r.state,
            clock: r.clock,
        };
        *crate::lock::lock(&self.state.target) = Some(self.sink.target());
        let mut last: Option<Instant> = None;
        let mut dirty = true;
        let mut failures: u32 = 0;
        let mut failing: Option<String> = None;
        loop {
            let now = Instant::now();
            let next = match (last, dirty, failures) {
                (None, _, _) => now,
                (Some(at), _, n) if n > 0 => {
                    at + (RETRY_BASE * 2u32.saturating_pow(n - 1)).min(self.interval)
                }
                (Some(at), true, _) => (at + self.min_interval).max(now),
                (Some(at), false, _) => at + self.interval,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.due.notified() => {
                    dirty = true;
                    continue;
                }
                _ = self.status.first_contact(), if !self.status.confirmed() => {
                    dirty = true;
                    continue;
                }
                _ = shutdown.changed() => return leaver(self),
            }
            let wall = self.clock.now();
            let report = build(
                &self.identity,
                &self.store,
                &self.status,
                self.store.cursor().to_string(),
                self.interval,
                wall,
            );
            last = Some(Instant::now());
            match self.sink.write(&report, wall).await {
                Ok(()) => {
                    self.metrics.report_written(ReportResult::Ok);
                    if let Some(was) = failing.take() {
                        tracing::info!(was = %was, "node report written again");
                    }
                    failures = 0;
                    dirty = false;
                    self.state.writes.success(
                        wall,
                        format!(
                            "{} projects, {} rejected, {}",
                            report.summary.projects,
                            report.summary.rejected,
                            report.summary.provenance.as_str()
                        ),
                    );
                }
                Err(e) => {
                    let result = match e {
                        ReportError::Refused(_) => ReportResult::Refused,
                        ReportError::Failed(_) => ReportResult::Error,
                    };
                    self.metrics.report_written(result);
                    failures = failures.saturating_add(1);
                    let text = e.to_string();
                    if failing.as_deref() != Some(text.as_str()) {
                        tracing::warn!(error = %text, target = %self.sink.target(), "node report not written; serving and sync go on");
                    }
                    failing = Some(text.clone());
                    self.state.writes.error(wall, text);
                }
            }
        }
    }
}

/// The sink `config` asks for, if any: the Redis source reports to its
/// Redis (or `report.redis_url`), the HTTP source to its control plane,
/// the file source only to `report.redis_url`.
pub fn sink_for(
    config: &crate::config::Config,
    env: &crate::config::secret::Env,
    node: &str,
) -> Result<Option<Sink>, String> {
    use crate::config::ReportsTo;
    use crate::redis_client::connection::{Connector, Settings};
    if !config.report.enabled {
        return Ok(None);
    }
    match config.report.to(&config.source.kind) {
        Some(ReportsTo::Redis(target)) => {
            let timeout = target.timing.request_timeout;
            let connector = Connector::new(Settings {
                url: &target.url,
                password: env.secret(&target.token_env),
                tls: &target.tls,
                read_from: None,
                connect_timeout: timeout,
                response_timeout: timeout,
            })
            .map_err(|e| e.to_string())?;
            Ok(Some(Sink::Redis(Box::new(redis::RedisSink::new(
                Arc::new(connector),
                &target.key_prefix,
                node,
                config.report.interval,
            )))))
        }
        Some(ReportsTo::ControlPlane(h)) => {
            let sink = http::HttpSink::new(
                &h.url,
                node,
                env.secret(&h.token_env),
                h.timing.request_timeout,
            )
            .map_err(|e| e.to_string())?;
            Ok(Some(Sink::Http(sink)))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_of_the_sorted_pairs() {
        let a = digest([("b", 2), ("a", 1)]);
        assert_eq!(a, digest([("a", 1), ("b", 2)]));
        assert_ne!(a, digest([("a", 1), ("b", 3)]));
        assert_ne!(a, digest([("a", 1)]));
        assert_ne!(digest([("a", 12)]), digest([("a1", 2)]));
        // The digest of nothing is SHA-256 of nothing.
        assert_eq!(
            digest([]),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
