//! The HTTP source: follows a control plane (§5 of the protocol).
//!
//! * `watch`: a full `GET /v1/snapshot`, then long polls of
//!   `GET /v1/changes?after=<cursor>&wait=<s>`; `410` means the cursor is too
//!   old, so take a full snapshot again.
//! * `poll`: `GET /v1/snapshot` every `poll_interval` with `If-None-Match`;
//!   `304` changes nothing.
//!
//! Every request carries the bearer token (never logged) and a timeout.
//! Failures, including a fetch the writer refuses whole, back off
//! exponentially with full jitter; success resets the backoff. The sidecar
//! keeps serving whatever it has throughout.

use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, ETAG, IF_NONE_MATCH};
use http::{HeaderValue, StatusCode};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::backoff::{self, Backoff};
use crate::clock::SharedClock;
use crate::config::SyncMode;
use crate::metrics::{Metrics, SyncKind, SyncResult};
use crate::refresh::{RefreshJob, RefreshOutcome, RefreshRequest, Scope};
use crate::secret::Secret;
use crate::status::SyncStatus;
use crate::store::{ApplyReport, Store, Update};
use crate::wire::{
    parse_changes, parse_project, parse_snapshot, ChangesBody, Incoming, SnapshotBody,
};
use crate::writer::{WriteError, WriterHandle};

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Transport(String),
    #[error("request timed out")]
    Timeout,
    #[error("control plane answered {0}")]
    Status(u16),
    #[error("{0}")]
    Malformed(String),
    #[error(transparent)]
    Refused(#[from] WriteError),
}

/// What a fetch brought back.
#[derive(Debug)]
pub enum Fetched<T> {
    Body(T),
    NotModified,
    /// `410`: the cursor is too old.
    Gone,
}

/// Talks §5 to one control plane.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    http: reqwest::Client,
    base: String,
    token: Option<Secret>,
    pub request_timeout: Duration,
    pub long_poll_wait: Duration,
}

impl ControlPlane {
    pub fn new(
        base: &str,
        token: Option<Secret>,
        request_timeout: Duration,
        long_poll_wait: Duration,
    ) -> Result<ControlPlane, FetchError> {
        let http = reqwest::Client::builder()
            .connect_timeout(request_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        Ok(ControlPlane {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            request_timeout,
            long_poll_wait,
        })
    }

    /// `GET /v1/snapshot`, conditional on `etag` when given. Returns the body
    /// and the new ETag.
    pub async fn snapshot(
        &self,
        etag: Option<&str>,
    ) -> Result<Fetched<(crate::wire::SnapshotBody, Option<String>)>, FetchError> {
        let mut req = self.get("/v1/snapshot", self.request_timeout);
        if let Some(tag) = etag {
            req = req.header(IF_NONE_MATCH, tag);
        }
        let resp = send(req).await?;
        match resp.status() {
            StatusCode::NOT_MODIFIED => Ok(Fetched::NotModified),
            StatusCode::OK => {
                let tag = resp
                    .headers()
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let bytes = body(resp).await?;
                // Large snapshots take a while to parse: keep it off the
                // threads that serve requests.
                let parsed = tokio::task::spawn_blocking(move || parse_snapshot(&bytes))
                    .await
                    .map_err(|e| FetchError::Malformed(e.to_string()))?
                    .map_err(|e| FetchError::Malformed(format!("snapshot: {e}")))?;
                Ok(Fetched::Body((parsed, tag)))
            }
            other => Err(FetchError::Status(other.as_u16())),
        }
    }

    /// `GET /v1/changes?after=N&wait=S`.
    pub async fn changes(
        &self,
        after: u64,
    ) -> Result<Fetched<crate::wire::ChangesBody>, FetchError> {
        let wait = self.long_poll_wait.as_secs_f64();
        let path = format!("/v1/changes?after={after}&wait={wait}");
        let resp = send(self.get(&path, self.long_poll_wait + self.request_timeout)).await?;
        match resp.status() {
            StatusCode::GONE => Ok(Fetched::Gone),
            StatusCode::OK => {
                let bytes = body(resp).await?;
                let parsed = parse_changes(&bytes)
                    .map_err(|e| FetchError::Malformed(format!("changes: {e}")))?;
                Ok(Fetched::Body(parsed))
            }
            other => Err(FetchError::Status(other.as_u16())),
        }
    }

    /// `GET /v1/projects/{id}`: `None` when the control plane says 404.
    pub async fn project(&self, id: &str) -> Result<Option<Incoming>, FetchError> {
        let path = format!(
            "/v1/projects/{}",
            percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
        );
        let resp = send(self.get(&path, self.request_timeout)).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let bytes = body(resp).await?;
                let parsed = parse_project(&bytes)
                    .map_err(|e| FetchError::Malformed(format!("project: {e}")))?;
                Ok(Some(parsed))
            }
            other => Err(FetchError::Status(other.as_u16())),
        }
    }

    fn get(&self, path: &str, timeout: Duration) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(timeout);
        if let Some(token) = &self.token {
            if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
                value.set_sensitive(true);
                req = req.header(AUTHORIZATION, value);
            }
        }
        req
    }
}

async fn send(req: reqwest::RequestBuilder) -> Result<reqwest::Response, FetchError> {
    req.send().await.map_err(transport)
}

async fn body(resp: reqwest::Response) -> Result<bytes::Bytes, FetchError> {
    resp.bytes().await.map_err(transport)
}

fn transport(e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        return FetchError::Timeout;
    }
    // Without the URL (it is ours), with the causes: "error sending
    // request" alone does not tell an operator "connection refused".
    let e = e.without_url();
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    FetchError::Transport(message)
}

/// The sync loop.
#[derive(Debug)]
pub struct HttpSource {
    pub control_plane: ControlPlane,
    pub mode: SyncMode,
    pub poll_interval: Duration,
    pub backoff_max: Duration,
    pub store: Store,
    pub writer: WriterHandle,
    pub status: Arc<SyncStatus>,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
}

/// Where the loop stands.
#[derive(Debug, Default)]
struct Position {
    /// Cursor for `changes`; `None` means a full snapshot is needed.
    cursor: Option<u64>,
    /// ETag of the last applied snapshot (poll mode).
    etag: Option<String>,
    /// 410s in a row: a control plane that keeps answering 410 right after
    /// a snapshot gets backoff, not a tight loop.
    gone_streak: u32,
}

enum Event {
    Step(Result<Duration, FetchError>),
    Job(RefreshJob),
    Shutdown,
}

impl HttpSource {
    /// Runs until `shutdown` flips. Refresh jobs are served at once, even
    /// in the middle of a long poll (which is abandoned and restarted).
    pub async fn run(
        self,
        mut jobs: mpsc::Receiver<RefreshJob>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = Backoff::new(backoff::BASE, self.backoff_max, backoff::seed());
        let mut pos = Position::default();
        let mut next = Instant::now();
        if self.store.is_loaded() && self.store.cursor() > 0 {
            // Loaded from the cache: carry on from its cursor.
            pos.cursor = Some(self.store.cursor());
            if self.mode == SyncMode::Poll {
                // A fleet restarted together must not poll in lockstep.
                next += backoff.uniform(self.poll_interval);
            }
        }
        loop {
            let event = tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    tokio::select! {
                        r = self.step(&mut pos) => Event::Step(r),
                        Some(job) = jobs.recv() => Event::Job(job),
                        _ = shutdown.changed() => Event::Shutdown,
                    }
                }
                Some(job) = jobs.recv() => Event::Job(job),
                _ = shutdown.changed() => Event::Shutdown,
            };
            match event {
                Event::Shutdown => return,
                Event::Job((request, reply)) => {
                    let outcome = self.forced(&mut pos, request).await;
                    let _ = reply.send(outcome);
                }
                Event::Step(Ok(wait)) => {
                    backoff.reset();
                    next = Instant::now() + wait;
                }
                Event::Step(Err(e)) => {
                    let delay = backoff.next_delay();
                    self.status.error(self.clock.now(), e.to_string());
                    tracing::warn!(error = %e, failures = backoff.failures(), retry_in = ?delay, "sync failed; serving the last good snapshot");
                    next = Instant::now() + delay;
                }
            }
        }
    }

    /// One fetch and apply. Returns how long to wait before the next.
    async fn step(&self, pos: &mut Position) -> Result<Duration, FetchError> {
        match (self.mode, pos.cursor) {
            (SyncMode::Watch, Some(cursor)) => match self.changes(cursor).await? {
                Fetched::Body(body) => {
                    let revision = body.revision;
                    let report = self.apply(Update::Changes(body), "changes", false).await?;
                    pos.cursor = Some(revision);
                    pos.gone_streak = 0;
                    self.contact(format!("changes after {cursor}: {}", summary(&report)));
                    Ok(Duration::ZERO)
                }
                Fetched::Gone => {
                    pos.cursor = None;
                    pos.gone_streak += 1;
                    self.contact(format!(
                        "cursor {cursor} too old (410); taking a full snapshot"
                    ));
                    if pos.gone_streak > 1 {
                        return Err(FetchError::Status(410));
                    }
                    Ok(Duration::ZERO)
                }
                Fetched::NotModified => Err(FetchError::Status(304)),
            },
            (mode, _) => {
                let poll = mode == SyncMode::Poll;
                let next = if poll {
                    self.poll_interval
                } else {
                    Duration::ZERO
                };
                match self
                    .snapshot(if poll { pos.etag.as_deref() } else { None })
                    .await?
                {
                    Fetched::Body((body, tag)) => {
                        let revision = body.revision;
                        let report = self
                            .apply(Update::Snapshot(body), "snapshot", false)
                            .await?;
                        pos.cursor = Some(revision);
                        pos.etag = tag;
                        self.contact(format!("snapshot {revision}: {}", summary(&report)));
                        Ok(next)
                    }
                    Fetched::NotModified => {
                        self.contact("snapshot not modified");
                        Ok(next)
                    }
                    Fetched::Gone => Err(FetchError::Status(410)),
                }
            }
        }
    }

    /// A forced refresh: a full snapshot without `If-None-Match`, or one
    /// project.
    async fn forced(&self, pos: &mut Position, request: RefreshRequest) -> RefreshOutcome {
        let allow = request.allow_mass_removal;
        match request.scope {
            Scope::All => {
                let before = Some(self.store.cursor());
                let fetched = match self.snapshot(None).await {
                    Ok(Fetched::Body(b)) => b,
                    Ok(_) => return self.refresh_failed(FetchError::Status(304), before),
                    Err(e) => return self.refresh_failed(e, before),
                };
                let (body, tag) = fetched;
                let revision = body.revision;
                match self.apply(Update::Snapshot(body), "refresh", allow).await {
                    Ok(report) => {
                        pos.cursor = Some(revision);
                        pos.etag = tag;
                        pos.gone_streak = 0;
                        self.contact(format!("forced snapshot {revision}: {}", summary(&report)));
                        RefreshOutcome::applied(&report, before, Some(self.store.cursor()))
                    }
                    Err(e) => self.refresh_failed(e, before),
                }
            }
            Scope::Project(id) => {
                let before = self.store.project(&id).map(|p| p.revision());
                let started = Instant::now();
                let fetched = self.control_plane.project(&id).await;
                let result = if fetched.is_ok() {
                    SyncResult::Ok
                } else {
                    SyncResult::Error
                };
                self.metrics
                    .sync_request(SyncKind::Project, result, started.elapsed());
                let document = match fetched {
                    Ok(d) => d,
                    Err(e) => return self.refresh_failed(e, before),
                };
                match self
                    .apply(
                        Update::Project {
                            id: id.clone(),
                            document,
                        },
                        "refresh",
                        allow,
                    )
                    .await
                {
                    Ok(report) => {
                        self.contact(format!("forced project {id}: {}", summary(&report)));
                        RefreshOutcome::applied(
                            &report,
                            before,
                            self.store.project(&id).map(|p| p.revision()),
                        )
                    }
                    Err(e) => self.refresh_failed(e, before),
                }
            }
        }
    }

    fn refresh_failed(&self, e: FetchError, revision: Option<u64>) -> RefreshOutcome {
        self.status.error(self.clock.now(), e.to_string());
        match e {
            FetchError::Refused(WriteError::Refused(refusal)) => {
                RefreshOutcome::refused(refusal.to_string(), revision)
            }
            other => RefreshOutcome::failed(other.to_string(), revision),
        }
    }

    async fn snapshot(
        &self,
        etag: Option<&str>,
    ) -> Result<Fetched<(SnapshotBody, Option<String>)>, FetchError> {
        let started = Instant::now();
        let fetched = self.control_plane.snapshot(etag).await;
        self.metrics
            .sync_request(SyncKind::Snapshot, sync_result(&fetched), started.elapsed());
        fetched
    }

    async fn changes(&self, after: u64) -> Result<Fetched<ChangesBody>, FetchError> {
        let started = Instant::now();
        let fetched = self.control_plane.changes(after).await;
        self.metrics
            .sync_request(SyncKind::Changes, sync_result(&fetched), started.elapsed());
        fetched
    }

    async fn apply(
        &self,
        update: Update,
        origin: &'static str,
        allow: bool,
    ) -> Result<ApplyReport, FetchError> {
        Ok(self.writer.apply(update, origin, allow).await?)
    }

    fn contact(&self, message: impl Into<String>) {
        self.status.success(self.clock.now(), message);
    }
}

fn sync_result<T>(fetched: &Result<Fetched<T>, FetchError>) -> SyncResult {
    match fetched {
        Ok(Fetched::Body(_)) => SyncResult::Ok,
        Ok(Fetched::NotModified) => SyncResult::NotModified,
        Ok(Fetched::Gone) | Err(_) => SyncResult::Error,
    }
}

fn summary(report: &ApplyReport) -> String {
    format!(
        "{} changed, {} rejected",
        report.changed(),
        report.rejected.len()
    )
}
