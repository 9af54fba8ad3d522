//! The HTTP source: follows a control plane (the sync protocol).
//!
//! * `watch`: a full `GET /v1/snapshot`, then long polls of
//!   `GET /v1/changes?after=<cursor>&wait=<s>`; `410` means the cursor is too
//!   old, so take a full snapshot again.
//! * `poll`: `GET /v1/snapshot` every `poll_interval` with `If-None-Match`;
//!   `304` changes nothing.
//!
//! Every request carries the bearer token (never logged) and a timeout.
//! Bodies are parsed off the request threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, ETAG, IF_NONE_MATCH};
use http::{HeaderValue, StatusCode};
use tokio::time::Instant;

use super::backoff::{self, Backoff};
use super::{summary, Contact, Fetch, FetchError, QuietPace, Stepped, SyncContext, SyncError};
use crate::config::secret::Secret;
use crate::config::SyncMode;
use crate::model::cursor::Cursor;
use crate::model::origin::{MassRemoval, Origin};
use crate::model::wire::{BodyReader, Incoming};
use crate::store::{ApplyReport, Contents};
use crate::telemetry::{SyncKind, SyncResult};

/// What RFC 3986 requires encoded in a path segment: everything but
/// `pchar` (unreserved, sub-delims, `:` and `@`). A valid project or
/// node id needs none of it: a control plane reads the segment as the id.
pub const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// What `GET /v1/snapshot` brought: the body is parsed by the writer.
#[derive(Debug)]
pub enum SnapshotFetch {
    Body {
        body: Bytes,
        etag: Option<String>,
    },
    /// `304`: the ETag still matches.
    NotModified,
}

/// What `GET /v1/changes` brought: the body is parsed by the writer.
#[derive(Debug)]
pub enum ChangesFetch {
    Body(Bytes),
    /// `410`: the cursor is older than the control plane remembers.
    Gone,
}

/// Talks the sync protocol to one control plane.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    http: reqwest::Client,
    base: String,
    token: Option<Secret>,
    pub request_timeout: Duration,
    pub long_poll_wait: Duration,
    reader: BodyReader,
}

impl ControlPlane {
    pub fn new(
        base: &str,
        token: Option<Secret>,
        request_timeout: Duration,
        long_poll_wait: Duration,
        reader: BodyReader,
    ) -> Result<ControlPlane, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(request_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(ControlPlane {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            request_timeout,
            long_poll_wait,
            reader,
        })
    }

    /// How bodies and documents are read.
    pub fn reader(&self) -> BodyReader {
        self.reader
    }

    /// `GET /v1/snapshot`, conditional on `etag` when given.
    pub async fn snapshot(&self, etag: Option<&str>) -> Result<SnapshotFetch, FetchError> {
        let timeout = self.request_timeout;
        let mut req = self.get("/v1/snapshot", timeout);
        if let Some(tag) = etag {
            req = req.header(IF_NONE_MATCH, tag);
        }
        let resp = send(req, timeout).await?;
        match resp.status() {
            StatusCode::NOT_MODIFIED => Ok(SnapshotFetch::NotModified),
            StatusCode::OK => {
                let etag = resp
                    .headers()
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = body(resp, timeout).await?;
                Ok(SnapshotFetch::Body { body, etag })
            }
            other => Err(FetchError::Status(other)),
        }
    }

    /// What a long poll asks the control plane to wait: `long_poll_wait`,
    /// or nothing when `at_once` (a check that answers without waiting).
    pub fn wait(&self, at_once: bool) -> Duration {
        if at_once {
            Duration::ZERO
        } else {
            self.long_poll_wait
        }
    }

    /// `GET /v1/changes?after=N&wait=S`, S being [`wait`](Self::wait).
    pub async fn changes(&self, after: u64, at_once: bool) -> Result<ChangesFetch, FetchError> {
        let long_poll = self.wait(at_once);
        let wait = long_poll.as_secs_f64();
        let path = format!("/v1/changes?after={after}&wait={wait}");
        let timeout = long_poll + self.request_timeout;
        let resp = send(self.get(&path, timeout), timeout).await?;
        match resp.status() {
            StatusCode::GONE => Ok(ChangesFetch::Gone),
            StatusCode::OK => Ok(ChangesFetch::Body(body(resp, timeout).await?)),
            status @ (StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) => {
                Err(FetchError::EmptyPoll(status))
            }
            other => Err(FetchError::Status(other)),
        }
    }

    /// `GET /v1/projects/{id}`: `None` when the control plane says 404.
    pub async fn project(&self, id: &str) -> Result<Option<Incoming>, FetchError> {
        let path = format!(
            "/v1/projects/{}",
            percent_encoding::utf8_percent_encode(id, PATH_SEGMENT)
        );
        let timeout = self.request_timeout;
        let resp = send(self.get(&path, timeout), timeout).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                // Read no further than one document may be.
                let max = self.reader.max_document_bytes;
                let mut resp = resp;
                let mut bytes = Vec::new();
                while let Some(chunk) = resp.chunk().await.map_err(|e| transport(e, timeout))? {
                    if bytes.len() + chunk.len() > max {
                        let announced = resp.content_length().unwrap_or(0) as usize;
                        let seen = bytes.len() + chunk.len();
                        return Ok(Some(Incoming::too_large(id, seen.max(announced))));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                let parsed =
                    self.reader
                        .project(id, &bytes)
                        .map_err(|source| FetchError::Malformed {
                            what: "project document",
                            source,
                        })?;
                Ok(Some(parsed))
            }
            other => Err(FetchError::Status(other)),
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

async fn send(
    req: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, FetchError> {
    req.send().await.map_err(|e| transport(e, timeout))
}

async fn body(resp: reqwest::Response, timeout: Duration) -> Result<Bytes, FetchError> {
    resp.bytes().await.map_err(|e| transport(e, timeout))
}

fn transport(e: reqwest::Error, timeout: Duration) -> FetchError {
    if e.is_timeout() {
        return FetchError::Timeout(timeout);
    }
    // The URL is ours and may carry nothing secret, but it is noise.
    FetchError::Transport(e.without_url())
}

/// The revision a control plane's body carries.
fn revision_of(cursor: Cursor) -> u64 {
    match cursor {
        Cursor::Revision(r) => r,
        Cursor::None | Cursor::Stream(_) => 0,
    }
}

/// What one long poll came to.
enum Polled {
    /// The batch was applied; the cursor moved to its revision.
    Applied(ApplyReport),
    /// `410`: the cursor is too old; a full snapshot is next.
    Gone,
    /// The batch's revision (the second field) is below the cursor: it
    /// was applied, and a full snapshot is next.
    WentBack(ApplyReport, u64),
}

/// The sync loop's state for one control plane.
#[derive(Debug)]
pub struct HttpSource {
    control_plane: ControlPlane,
    mode: SyncMode,
    poll_interval: Duration,
    backoff_max: Duration,
    /// Cursor for `changes`; `None` means a full snapshot is needed.
    cursor: Option<u64>,
    /// ETag of the last applied snapshot (poll mode).
    etag: Option<String>,
    /// Full snapshots the changes asked for in a row (a `410`, or a batch
    /// below the cursor): a control plane that keeps asking for one right
    /// after a snapshot gets backoff, not a tight loop.
    gone_streak: u32,
    /// The first long poll after a start from the cache asks without
    /// waiting: the control plane is reached (and what is served is
    /// confirmed live) at once, not after `long_poll_wait`.
    reached: bool,
    /// Paces long polls answered empty before their wait.
    quiet: QuietPace,
}

impl HttpSource {
    pub fn new(
        control_plane: ControlPlane,
        mode: SyncMode,
        poll_interval: Duration,
        backoff_max: Duration,
    ) -> HttpSource {
        HttpSource {
            control_plane,
            mode,
            poll_interval,
            backoff_max,
            cursor: None,
            etag: None,
            gone_streak: 0,
            reached: false,
            quiet: QuietPace::default(),
        }
    }

    /// A full snapshot (conditional on the ETag in poll mode), applied;
    /// `None` when not modified.
    async fn full(
        &mut self,
        ctx: &SyncContext,
        origin: Origin,
        conditional: bool,
    ) -> Result<Option<(ApplyReport, u64)>, SyncError> {
        let etag = if conditional { self.etag.clone() } else { None };
        let control_plane = &self.control_plane;
        let fetch = async {
            let (body, etag) = match control_plane.snapshot(etag.as_deref()).await? {
                SnapshotFetch::Body { body, etag } => (body, etag),
                SnapshotFetch::NotModified => return Ok(None),
            };
            let revision = Arc::new(AtomicU64::new(0));
            let seen = revision.clone();
            let reader = control_plane.reader().on_every_core(!ctx.store.is_loaded());
            let parse = move || {
                let body = reader.snapshot(&body)?;
                seen.store(revision_of(body.cursor), Ordering::Relaxed);
                Ok(Contents::Snapshot(body))
            };
            let report = ctx.parse_and_apply("snapshot", parse, origin).await?;
            Ok(Some((report, revision.load(Ordering::Relaxed), etag)))
        };
        let count = |got: &Option<_>| match got {
            Some(_) => SyncResult::Ok,
            None => SyncResult::NotModified,
        };
        let Some((report, revision, etag)) = ctx.request(SyncKind::Snapshot, count, fetch).await?
        else {
            return Ok(None);
        };
        self.cursor = Some(revision);
        self.etag = etag;
        Ok(Some((report, revision)))
    }

    /// One long poll of changes after `cursor`, applied.
    async fn changes(&mut self, ctx: &SyncContext, cursor: u64) -> Result<Polled, SyncError> {
        let control_plane = &self.control_plane;
        let at_once = !self.reached;
        let fetch = async {
            let body = match control_plane.changes(cursor, at_once).await? {
                ChangesFetch::Body(body) => body,
                ChangesFetch::Gone => return Ok(None),
            };
            let revision = Arc::new(AtomicU64::new(cursor));
            let seen = revision.clone();
            let reader = control_plane.reader();
            let parse = move || {
                let body = reader.changes(&body)?;
                seen.store(revision_of(body.cursor), Ordering::Relaxed);
                Ok(Contents::Changes(body))
            };
            let report = ctx
                .parse_and_apply("change batch", parse, Origin::Changes)
                .await?;
            Ok(Some((report, revision.load(Ordering::Relaxed))))
        };
        // A 410 is counted as an error: the cursor was not taken.
        let count = |got: &Option<_>| match got {
            Some(_) => SyncResult::Ok,
            None => SyncResult::Error,
        };
        let fetched = ctx.request(SyncKind::Changes, count, fetch).await?;
        self.reached = true;
        let Some((report, revision)) = fetched else {
            self.cursor = None;
            return Ok(Polled::Gone);
        };
        if revision < cursor {
            // Cursors only grow: the control plane lost its history (a
            // restart without its change log). What the batch held is
            // applied like any other; the full snapshot that follows
            // brings the rest.
            tracing::warn!(
                cursor,
                revision,
                "the control plane went back: a change batch at revision {revision} \
                 answered cursor {cursor}; taking a full snapshot"
            );
            self.cursor = None;
            return Ok(Polled::WentBack(report, revision));
        }
        self.cursor = Some(revision);
        Ok(Polled::Applied(report))
    }
}

impl Fetch for HttpSource {
    fn first_delay(&mut self, ctx: &SyncContext) -> Duration {
        if let (true, Cursor::Revision(revision)) = (ctx.store.is_loaded(), ctx.store.cursor()) {
            // Loaded from the cache: carry on from its cursor.
            self.cursor = Some(revision);
            if self.mode == SyncMode::Poll {
                // A fleet restarted together must not poll in lockstep.
                return Backoff::new(backoff::BASE, self.poll_interval).uniform(self.poll_interval);
            }
        }
        Duration::ZERO
    }

    async fn step(&mut self, ctx: &SyncContext) -> Result<Stepped, SyncError> {
        if let (SyncMode::Watch, Some(cursor)) = (self.mode, self.cursor) {
            let (started, wait) = (Instant::now(), self.control_plane.wait(!self.reached));
            return match self.changes(ctx, cursor).await? {
                Polled::Applied(report) => {
                    self.gone_streak = 0;
                    let quiet = self.cursor == Some(cursor);
                    Ok(Stepped {
                        next: if quiet {
                            self.quiet.next(started, wait, "a long poll")
                        } else {
                            Duration::ZERO
                        },
                        contact: Contact::Reached(format!(
                            "changes after {cursor}: {}",
                            summary(&report)
                        )),
                    })
                }
                Polled::WentBack(report, revision) => {
                    self.gone_streak += 1;
                    if self.gone_streak > 1 {
                        return Err(FetchError::WentBackAgain { cursor, revision }.into());
                    }
                    Ok(Stepped {
                        next: Duration::ZERO,
                        contact: Contact::Reached(format!(
                            "the control plane went back (changes after {cursor} at revision \
                             {revision}: {}); taking a full snapshot",
                            summary(&report)
                        )),
                    })
                }
                Polled::Gone => {
                    self.gone_streak += 1;
                    if self.gone_streak > 1 {
                        return Err(FetchError::GoneAgain.into());
                    }
                    Ok(Stepped {
                        next: Duration::ZERO,
                        contact: Contact::Reached(format!(
                            "cursor {cursor} too old (410); taking a full snapshot"
                        )),
                    })
                }
            };
        }
        let poll = self.mode == SyncMode::Poll;
        let next = if poll {
            self.poll_interval
        } else {
            Duration::ZERO
        };
        let message = match self.full(ctx, Origin::Snapshot, poll).await? {
            Some((report, revision)) => format!("snapshot {revision}: {}", summary(&report)),
            None => "snapshot not modified".to_owned(),
        };
        Ok(Stepped {
            next,
            contact: Contact::Reached(message),
        })
    }

    async fn refresh_all(
        &mut self,
        ctx: &SyncContext,
        mass_removal: MassRemoval,
    ) -> Result<(ApplyReport, String), SyncError> {
        match self.full(ctx, Origin::Refresh(mass_removal), false).await? {
            Some((report, revision)) => {
                self.gone_streak = 0;
                let message = format!("forced snapshot {revision}: {}", summary(&report));
                Ok((report, message))
            }
            // Asked without If-None-Match: a 304 is the control plane's bug.
            None => Err(FetchError::Status(StatusCode::NOT_MODIFIED).into()),
        }
    }

    async fn refresh_project(
        &mut self,
        ctx: &SyncContext,
        id: &str,
        mass_removal: MassRemoval,
    ) -> Result<(ApplyReport, String), SyncError> {
        let fetch = async { Ok(self.control_plane.project(id).await?) };
        ctx.refresh_project(id, mass_removal, fetch).await
    }

    fn backoff_max(&self) -> Duration {
        self.backoff_max
    }
}
