//! Prometheus metrics. Names, types and labels are part of the contract.
//!
//! Each sidecar owns its own recorder (not a process-global one), and every
//! metric handle with every label combination is registered once here, at
//! start: recording on the resolve path is a few relaxed atomic adds (the
//! resolve histogram is an [`AtomicHistogram`] with fixed buckets), never
//! a registry lookup or an allocation. Labels come from fixed
//! vocabularies only; nothing a request or a document controls becomes a
//! label. Gauges are refreshed when `/metrics` is scraped.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use super::histogram::AtomicHistogram;
use crate::model::validate::Reason;

pub const RESOLVE_REQUESTS: &str = "env_sidecar_resolve_requests_total";
pub const RESOLVE_DURATION: &str = "env_sidecar_resolve_duration_seconds";
pub const SYNC_REQUESTS: &str = "env_sidecar_sync_requests_total";
pub const SYNC_DURATION: &str = "env_sidecar_sync_duration_seconds";
pub const PROJECT_REJECTIONS: &str = "env_sidecar_project_rejections_total";
pub const SNAPSHOT_REVISION: &str = "env_sidecar_snapshot_revision";
pub const SNAPSHOT_AGE: &str = "env_sidecar_snapshot_age_seconds";
pub const PROJECTS: &str = "env_sidecar_projects";
pub const ENVIRONMENTS: &str = "env_sidecar_environments";
pub const ADMIN_REFRESH: &str = "env_sidecar_admin_refresh_total";
pub const PROPAGATION_DELAY: &str = "env_sidecar_propagation_delay_seconds";
pub const SCHEDULED_APPLIED: &str = "env_sidecar_scheduled_changes_applied_total";
pub const BUILD_INFO: &str = "env_sidecar_build_info";
/// Additions to the contract's metrics (what the shipped alerts need).
pub const UPDATES_REFUSED: &str = "env_sidecar_updates_refused_total";
pub const CONNECTIONS_REFUSED: &str = "env_sidecar_connections_refused_total";
pub const OPEN_CONNECTIONS: &str = "env_sidecar_open_connections";
/// Fleet convergence: where what is served comes from, and the node
/// report's writes.
pub const SERVING_PROVENANCE: &str = "env_sidecar_serving_provenance";
pub const REPORT_WRITES: &str = "env_sidecar_report_writes_total";

/// Every metric name, for tests and docs.
pub const ALL: [&str; 18] = [
    RESOLVE_REQUESTS,
    RESOLVE_DURATION,
    SYNC_REQUESTS,
    SYNC_DURATION,
    PROJECT_REJECTIONS,
    SNAPSHOT_REVISION,
    SNAPSHOT_AGE,
    PROJECTS,
    ENVIRONMENTS,
    ADMIN_REFRESH,
    PROPAGATION_DELAY,
    SCHEDULED_APPLIED,
    BUILD_INFO,
    UPDATES_REFUSED,
    CONNECTIONS_REFUSED,
    OPEN_CONNECTIONS,
    SERVING_PROVENANCE,
    REPORT_WRITES,
];

/// The `provenance` label of `env_sidecar_serving_provenance`.
pub const PROVENANCES: [&str; 3] = ["live", "cache", "never_synced"];

/// The `result` label of `env_sidecar_report_writes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportResult {
    Ok = 0,
    /// The store refused it (read-only replica, ACL, 401/403).
    Refused = 1,
    Error = 2,
}

const REPORT_RESULTS: [&str; 3] = ["ok", "refused", "error"];

/// The `listener` label of the connection metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Data = 0,
    Admin = 1,
    Unix = 2,
}

const LISTENERS: [&str; 3] = ["data", "admin", "unix"];

const RESOLVE_DURATION_HELP: &str = "Time to resolve one request inside the sidecar.";

/// Resolve buckets: the path is sub-millisecond, so start at 1 µs.
static RESOLVE_BUCKETS: [f64; 14] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 1e-1,
];
const SYNC_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0,
];
/// Propagation buckets: fine between 1 ms and 250 ms, where a healthy
/// watch or Redis follower lands (the fleet bench reads its percentiles
/// from these), coarse above.
const PROPAGATION_BUCKETS: [f64; 20] = [
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
    1.0, 2.5, 5.0, 30.0, 120.0,
];

/// The `outcome` label of `env_sidecar_resolve_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveOutcome {
    Exact = 0,
    Fallback = 1,
    UnknownProject = 2,
    UnknownEnvironment = 3,
    InvalidRequest = 4,
    NotReady = 5,
}

/// The `api` label of `env_sidecar_resolve_requests_total`: which
/// interface asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `GET /v1/resolve`.
    Resolve = 0,
    /// Items of `POST /v1/resolve/batch`.
    Batch = 1,
    /// `/v1/authz` (HTTP forward-auth).
    AuthzHttp = 2,
    /// Envoy ext_authz `Check` over gRPC.
    AuthzGrpc = 3,
}

const APIS: [&str; 4] = ["resolve", "batch", "authz_http", "authz_grpc"];

const RESOLVE_OUTCOMES: [&str; 6] = [
    "exact",
    "fallback",
    "unknown_project",
    "unknown_environment",
    "invalid_request",
    "not_ready",
];

/// The `kind` label of the sync metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    Snapshot = 0,
    Changes = 1,
    Project = 2,
}

const SYNC_KINDS: [&str; 3] = ["snapshot", "changes", "project"];

/// The `result` label of `env_sidecar_sync_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncResult {
    Ok = 0,
    NotModified = 1,
    Error = 2,
}

const SYNC_RESULTS: [&str; 3] = ["ok", "not_modified", "error"];

/// The `result` label of `env_sidecar_admin_refresh_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshLabel {
    Updated = 0,
    NotModified = 1,
    Rejected = 2,
    Error = 3,
    /// Refused before it ran: no or a wrong admin token.
    Unauthorized = 4,
}

const REFRESH_RESULTS: [&str; 5] = [
    "updated",
    "not_modified",
    "rejected",
    "error",
    "unauthorized",
];

/// What the gauges show, read by the caller at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Cursor (snapshot revision) of the last applied fetch.
    pub revision: f64,
    /// Seconds since the last successful contact with the source (0
    /// before any).
    pub age_seconds: f64,
    pub projects: usize,
    pub environments: usize,
    /// One of [`PROVENANCES`].
    pub provenance: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    handle: PrometheusHandle,
    /// By api, then outcome.
    resolve: [[Counter; 6]; 4],
    /// Atomic buckets, not the exporter's queue (see `histogram`).
    resolve_duration: AtomicHistogram,
    sync: [[Counter; 3]; 3],
    sync_duration: [Histogram; 3],
    rejections: Vec<(Reason, Counter)>,
    refresh: [Counter; 5],
    propagation: Histogram,
    scheduled: Counter,
    revision: Gauge,
    age: Gauge,
    projects: Gauge,
    environments: Gauge,
    /// Fetches refused whole by the blast-radius guard.
    mass_removal_refused: Counter,
    connections_refused: [Counter; 3],
    open_connections: [Gauge; 3],
    provenance: [Gauge; 3],
    report_writes: [Counter; 3],
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let recorder = build_recorder();
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &metadata())
        };
        let histogram = |name: &'static str, labels: Vec<Label>| {
            recorder.register_histogram(&Key::from_parts(name, labels), &metadata())
        };
        let gauge =
            |name: &'static str| recorder.register_gauge(&Key::from_name(name), &metadata());
        describe(&recorder);

        let resolve = APIS.map(|api| {
            RESOLVE_OUTCOMES.map(|o| {
                counter(
                    RESOLVE_REQUESTS,
                    vec![Label::new("outcome", o), Label::new("api", api)],
                )
            })
        });
        let sync = SYNC_KINDS.map(|k| {
            SYNC_RESULTS.map(|r| {
                counter(
                    SYNC_REQUESTS,
                    vec![Label::new("kind", k), Label::new("result", r)],
                )
            })
        });
        let sync_duration =
            SYNC_KINDS.map(|k| histogram(SYNC_DURATION, vec![Label::new("kind", k)]));
        let rejections = Reason::ALL
            .iter()
            .map(|r| {
                (
                    *r,
                    counter(PROJECT_REJECTIONS, vec![Label::new("reason", r.as_str())]),
                )
            })
            .collect();
        let refresh =
            REFRESH_RESULTS.map(|r| counter(ADMIN_REFRESH, vec![Label::new("result", r)]));
        let build_info = recorder.register_gauge(
            &Key::from_parts(
                BUILD_INFO,
                vec![Label::new("version", env!("CARGO_PKG_VERSION"))],
            ),
            &metadata(),
        );
        build_info.set(1.0);
        let metrics = Metrics {
            resolve,
            resolve_duration: AtomicHistogram::new(&RESOLVE_BUCKETS),
            sync,
            sync_duration,
            rejections,
            refresh,
            propagation: histogram(PROPAGATION_DELAY, vec![]),
            scheduled: counter(SCHEDULED_APPLIED, vec![]),
            revision: gauge(SNAPSHOT_REVISION),
            age: gauge(SNAPSHOT_AGE),
            projects: gauge(PROJECTS),
            environments: gauge(ENVIRONMENTS),
            mass_removal_refused: counter(
                UPDATES_REFUSED,
                vec![Label::new("reason", "mass_removal")],
            ),
            connections_refused: LISTENERS
                .map(|l| counter(CONNECTIONS_REFUSED, vec![Label::new("listener", l)])),
            open_connections: LISTENERS.map(|l| {
                recorder.register_gauge(
                    &Key::from_parts(OPEN_CONNECTIONS, vec![Label::new("listener", l)]),
                    &metadata(),
                )
            }),
            provenance: PROVENANCES.map(|p| {
                recorder.register_gauge(
                    &Key::from_parts(SERVING_PROVENANCE, vec![Label::new("provenance", p)]),
                    &metadata(),
                )
            }),
            report_writes: REPORT_RESULTS
                .map(|r| counter(REPORT_WRITES, vec![Label::new("result", r)])),
            handle: recorder.handle(),
        };
        Arc::new(metrics)
    }

    /// One resolve answered (hot path: an atomic add and a histogram push).
    #[inline]
    pub fn resolved(&self, api: Api, outcome: ResolveOutcome, took: Duration) {
        self.resolve[api as usize][outcome as usize].increment(1);
        self.resolve_duration.record(took);
    }

    pub fn sync_request(&self, kind: SyncKind, result: SyncResult, took: Duration) {
        self.sync[kind as usize][result as usize].increment(1);
        self.sync_duration[kind as usize].record(took.as_secs_f64());
    }

    pub fn rejected(&self, reason: Reason) {
        if let Some((_, c)) = self.rejections.iter().find(|(r, _)| *r == reason) {
            c.increment(1);
        }
    }

    pub fn refreshed(&self, result: RefreshLabel) {
        self.refresh[result as usize].increment(1);
    }

    /// A document published at `published` is served as of `now`.
    pub fn propagated(&self, published: SystemTime, now: SystemTime) {
        let delay = now.duration_since(published).unwrap_or_default();
        self.propagation.record(delay.as_secs_f64());
    }

    /// A fetch refused whole by the blast-radius guard.
    pub fn mass_removal_refused(&self) {
        self.mass_removal_refused.increment(1);
    }

    /// A connection over the limit was answered `503 overloaded`.
    pub fn connection_refused(&self, listener: Listener) {
        self.connections_refused[listener as usize].increment(1);
    }

    /// A connection opened (`+1`) or closed (`-1`).
    pub fn connection_opened(&self, listener: Listener, delta: f64) {
        self.open_connections[listener as usize].increment(delta);
    }

    /// A node report write and how it went.
    pub fn report_written(&self, result: ReportResult) {
        self.report_writes[result as usize].increment(1);
    }

    pub fn scheduled_applied(&self, n: u64) {
        self.scheduled.increment(n);
    }

    /// Drains histogram samples into their buckets (call periodically so
    /// memory stays bounded between scrapes).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The exposition, with the gauges set to `gauges` first.
    pub fn render(&self, gauges: Gauges) -> String {
        self.revision.set(gauges.revision);
        self.projects.set(gauges.projects as f64);
        self.environments.set(gauges.environments as f64);
        self.age.set(gauges.age_seconds);
        for (gauge, label) in self.provenance.iter().zip(PROVENANCES) {
            gauge.set(if label == gauges.provenance { 1.0 } else { 0.0 });
        }
        let mut text = self.handle.render();
        self.resolve_duration
            .render(RESOLVE_DURATION, RESOLVE_DURATION_HELP, &mut text);
        text
    }
}

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()))
}

fn build_recorder() -> PrometheusRecorder {
    let builder = PrometheusBuilder::new();
    let with_buckets = builder
        .set_buckets_for_metric(Matcher::Full(SYNC_DURATION.into()), &SYNC_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(PROPAGATION_DELAY.into()),
                &PROPAGATION_BUCKETS,
            )
        });
    match with_buckets {
        Ok(b) => b.build_recorder(),
        // Only fails on an empty bucket list, which the constants are not.
        Err(_) => PrometheusBuilder::new().build_recorder(),
    }
}

fn describe(recorder: &PrometheusRecorder) {
    let c = |name: &'static str, unit: Option<Unit>, help: &'static str| {
        recorder.describe_counter(KeyName::from(name), unit, SharedString::from(help))
    };
    let g = |name: &'static str, unit: Option<Unit>, help: &'static str| {
        recorder.describe_gauge(KeyName::from(name), unit, SharedString::from(help))
    };
    let h = |name: &'static str, help: &'static str| {
        recorder.describe_histogram(
            KeyName::from(name),
            Some(Unit::Seconds),
            SharedString::from(help),
        )
    };
    c(
        RESOLVE_REQUESTS,
        None,
        "Resolve requests by outcome and api (batch items count one each).",
    );

    c(
        SYNC_REQUESTS,
        None,
        "Requests to the source by kind and result.",
    );
    h(
        SYNC_DURATION,
        "Duration of requests to the source, by kind (long polls include the wait).",
    );
    c(
        PROJECT_REJECTIONS,
        None,
        "Project documents rejected, by reason.",
    );
    g(
        SNAPSHOT_REVISION,
        None,
        "Cursor (snapshot revision) of the last applied fetch.",
    );
    g(
        SNAPSHOT_AGE,
        Some(Unit::Seconds),
        "Time since the last successful contact with the source.",
    );
    g(PROJECTS, None, "Projects served.");
    g(
        ENVIRONMENTS,
        None,
        "Environments served, over all projects.",
    );
    c(ADMIN_REFRESH, None, "Forced refreshes by result.");
    h(
        PROPAGATION_DELAY,
        "Delay from publication at the control plane to being served here.",
    );
    c(
        SCHEDULED_APPLIED,
        None,
        "Scheduled pointer changes applied when due.",
    );
    g(
        BUILD_INFO,
        None,
        "Always 1; the version label names the build.",
    );
    c(
        UPDATES_REFUSED,
        None,
        "Fetches refused whole, by reason (mass_removal: the blast-radius guard).",
    );
    c(
        CONNECTIONS_REFUSED,
        None,
        "Connections over the limit, answered 503 overloaded and closed, by listener.",
    );
    g(OPEN_CONNECTIONS, None, "Open connections, by listener.");
    g(
        SERVING_PROVENANCE,
        None,
        "1 for where what is served comes from: live (confirmed by the source since start), cache (the last-known-good file only), never_synced.",
    );
    c(
        REPORT_WRITES,
        None,
        "Node report writes by result (refused: a read-only or ACL-limited store).",
    );
}
