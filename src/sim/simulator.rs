//! A control-plane simulator that speaks the sync protocol exactly:
//! `GET /v1/snapshot` (with ETag / 304), `GET /v1/changes?after=N&wait=S`
//! (long poll, 410 for a cursor older than its change log), and
//! `GET /v1/projects/{id}`.
//!
//! It serves documents it is given (any JSON, valid or not, so tests can
//! publish broken ones) or a generated population, can mutate random
//! projects at a rate, and injects faults: error statuses, added latency,
//! malformed bodies, requests that hang, and going down (listener closed)
//! for a while. It counts what it was asked, so tests can prove coalescing
//! and the absence of busy loops. The `control-plane-sim` binary is a thin
//! shell over this module.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, ETAG, IF_NONE_MATCH};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::generate::{self, Rng};
use super::nodes::{NodeBoard, MAX_REPORT_BYTES};
use crate::model::keys::SigningKey;
use crate::model::wire::WireProject;
use crate::server::error::json_response;
use crate::server::{serve, Body, Handler, Limits, Reply};

/// Faults applied to every request, drawn independently per request.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Fraction of requests answered with `error_status`.
    pub error_rate: f64,
    pub error_status: u16,
    /// Added before every answer.
    pub latency: Duration,
    /// Fraction of 200 answers whose body is cut short (invalid JSON).
    pub malformed_rate: f64,
    /// Fraction of requests that get no answer until hanging is turned off.
    pub hang_rate: f64,
    /// A rule of the protocol it breaks on every request: the broken
    /// control planes the sidecar and `conformance` must catch.
    pub breach: Option<Breach>,
}

/// A protocol rule a control plane written by someone else might break
/// (docs/control-plane.md names each rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breach {
    /// Change batches list their documents under `changes`, naming
    /// neither `projects` nor `removed`.
    MisspeltBatch,
    /// A long poll that times out with nothing new answers `204`.
    NoContentPoll,
    /// A cursor it cannot serve (too old, or ahead of it after a restart
    /// without its change log) gets an empty batch at its own revision,
    /// not `410`.
    NoGone,
    /// The snapshot has no `ETag`, and `If-None-Match` is ignored.
    NoEtag,
    /// `GET /v1/projects/{id}` of a project it does not hold answers
    /// `200` with `null`.
    NoNotFound,
    /// A long poll is answered at once, its `wait` ignored.
    NoWait,
}

impl Breach {
    pub const ALL: [Breach; 6] = [
        Breach::MisspeltBatch,
        Breach::NoContentPoll,
        Breach::NoGone,
        Breach::NoEtag,
        Breach::NoNotFound,
        Breach::NoWait,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Breach::MisspeltBatch => "misspelt-batch",
            Breach::NoContentPoll => "no-content-poll",
            Breach::NoGone => "no-gone",
            Breach::NoEtag => "no-etag",
            Breach::NoNotFound => "no-not-found",
            Breach::NoWait => "no-wait",
        }
    }
}

impl std::str::FromStr for Breach {
    type Err = String;

    fn from_str(s: &str) -> Result<Breach, String> {
        Breach::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Breach::ALL.iter().map(|b| b.as_str()).collect();
                format!("unknown breach {s:?}; one of {}", known.join(", "))
            })
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            error_status: 503,
            latency: Duration::ZERO,
            malformed_rate: 0.0,
            hang_rate: 0.0,
            breach: None,
        }
    }
}

/// Requests served, by kind.
#[derive(Debug, Default)]
pub struct Counters {
    pub snapshot: AtomicU64,
    pub changes: AtomicU64,
    pub project: AtomicU64,
    pub not_modified: AtomicU64,
    pub gone: AtomicU64,
    pub unauthorized: AtomicU64,
    pub faulted: AtomicU64,
}

#[derive(Debug, Default)]
struct World {
    revision: u64,
    /// id → (project revision as published, document JSON).
    projects: BTreeMap<String, (u64, Arc<str>)>,
    /// (global revision, project id) of every change still remembered.
    log: VecDeque<(u64, String)>,
    /// Changes after a cursor below this are forgotten: answer 410.
    oldest: u64,
    log_capacity: usize,
    /// id → (revision published, `None` for a removal; the global
    /// revision of that change): `GET /v1/positions`.
    positions: BTreeMap<String, (Option<u64>, u64)>,
}

#[derive(Debug)]
struct Inner {
    world: Mutex<World>,
    revision: watch::Sender<u64>,
    faults: Mutex<Faults>,
    hang_released: watch::Sender<u64>,
    token: Option<String>,
    rng: Mutex<Rng>,
    counters: Counters,
    last_authorization: Mutex<Option<String>>,
    last_if_none_match: Mutex<Option<String>>,
    addr: Mutex<SocketAddr>,
    shutdown: watch::Sender<bool>,
    epoch: watch::Sender<u64>,
    /// Every change, in order, to the Redis writer (when mirroring).
    mirror: Mutex<Option<mpsc::UnboundedSender<Mirrored>>>,
    /// Signs every document published (and makes removals signed
    /// tombstones) when set.
    signer: Mutex<Option<Arc<SigningKey>>>,
    /// The node reports sidecars sent.
    nodes: NodeBoard,
}

/// Writes the simulator's whole population to Redis again, in chunks
/// (the marker removed first, set by the last chunk), and drops the
/// fields it does not have.
async fn repopulate(
    con: &mut crate::redis_client::Conn,
    keys: &crate::redis_client::RedisKeys,
    inner: &Inner,
) -> redis::RedisResult<()> {
    use crate::redis_client::{write_changes, Change, Population};
    let world: Vec<Change> = lock(&inner.world)
        .projects
        .iter()
        .map(|(id, (_, text))| Change {
            project: id.clone(),
            document: Some(text.to_string()),
        })
        .collect();
    let held: Vec<String> = redis::cmd("HKEYS")
        .arg(&keys.projects)
        .query_async(con)
        .await?;
    let mut changes = world;
    let known: std::collections::HashSet<&str> =
        changes.iter().map(|c| c.project.as_str()).collect();
    let gone: Vec<Change> = held
        .iter()
        .filter(|id| !known.contains(id.as_str()))
        .map(|id| Change {
            project: id.clone(),
            document: None,
        })
        .collect();
    changes.extend(gone);
    write_changes(con, keys, &[], Population::Incomplete).await?;
    let chunks: Vec<&[Change]> = changes.chunks(500).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let population = if last {
            Population::Complete
        } else {
            Population::Untouched
        };
        write_changes(con, keys, chunk, population).await?;
    }
    if chunks.is_empty() {
        write_changes(con, keys, &[], Population::Complete).await?;
    }
    Ok(())
}

/// The changes of one publish call, for Redis (written as one batch).
type Mirrored = Vec<crate::redis_client::Change>;

/// A running simulator. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

use crate::lock::lock;

impl Simulator {
    /// Starts serving on `listen` (port 0 for any). `token`: when set,
    /// requests without `Authorization: Bearer <token>` get 401.
    pub async fn start(listen: SocketAddr, token: Option<String>) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            world: Mutex::new(World {
                log_capacity: 100_000,
                positions: BTreeMap::new(),
                ..World::default()
            }),
            revision: watch::channel(0).0,
            faults: Mutex::new(Faults::default()),
            hang_released: watch::channel(0).0,
            token,
            rng: Mutex::new(Rng(seed())),
            counters: Counters::default(),
            last_authorization: Mutex::new(None),
            last_if_none_match: Mutex::new(None),
            addr: Mutex::new(addr),
            shutdown: watch::channel(false).0,
            epoch: watch::channel(0).0,
            mirror: Mutex::new(None),
            signer: Mutex::new(None),
            nodes: NodeBoard::default(),
        });
        let sim = Simulator { inner };
        tokio::spawn(sim.clone().serve_loop(listener));
        Ok(sim)
    }

    pub fn addr(&self) -> SocketAddr {
        *lock(&self.inner.addr)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Total requests of every kind.
    pub fn requests(&self) -> u64 {
        let c = &self.inner.counters;
        c.snapshot.load(Ordering::SeqCst)
            + c.changes.load(Ordering::SeqCst)
            + c.project.load(Ordering::SeqCst)
    }

    pub fn last_authorization(&self) -> Option<String> {
        lock(&self.inner.last_authorization).clone()
    }

    pub fn last_if_none_match(&self) -> Option<String> {
        lock(&self.inner.last_if_none_match).clone()
    }

    /// The node reports sidecars sent it.
    pub fn nodes(&self) -> &NodeBoard {
        &self.inner.nodes
    }

    pub fn revision(&self) -> u64 {
        lock(&self.inner.world).revision
    }

    /// Publishes documents (any JSON with an `"id"`) as one change each.
    pub fn publish(&self, docs: impl IntoIterator<Item = serde_json::Value>) -> u64 {
        let docs: Vec<(String, u64, String)> = docs
            .into_iter()
            .map(|d| {
                let id = d["id"].as_str().unwrap_or_default().to_owned();
                let rev = d["revision"].as_u64().unwrap_or(0);
                (id, rev, d.to_string())
            })
            .collect();
        self.publish_raw(docs)
    }

    /// From now on, signs every document it publishes with `key` (a
    /// document that does not read is published as it is), and publishes
    /// a removal as a signed tombstone at the next revision.
    pub fn sign_with(&self, key: Arc<SigningKey>) {
        *lock(&self.inner.signer) = Some(key);
    }

    /// Publishes `(id, project revision, document text)` triples.
    pub fn publish_raw(&self, docs: Vec<(String, u64, String)>) -> u64 {
        let docs = match lock(&self.inner.signer).clone() {
            Some(key) => {
                let now = SystemTime::now();
                docs.into_iter()
                    .map(|(id, rev, text)| {
                        let text = match serde_json::from_str::<WireProject>(&text) {
                            Ok(doc) => key.seal_document(&doc, now, None),
                            Err(_) => text,
                        };
                        (id, rev, text)
                    })
                    .collect()
            }
            None => docs,
        };
        self.publish_texts(docs)
    }

    /// Publishes the texts exactly as given.
    fn publish_texts(&self, docs: Vec<(String, u64, String)>) -> u64 {
        let mirror = lock(&self.inner.mirror).clone();
        let mut batch = Vec::new();
        let mut world = lock(&self.inner.world);
        for (id, rev, text) in docs {
            world.revision += 1;
            let at = world.revision;
            if mirror.is_some() {
                batch.push(crate::redis_client::Change {
                    project: id.clone(),
                    document: Some(text.clone()),
                });
            }
            let published = crate::model::wire::published_revision(&text);
            world.positions.insert(id.clone(), (published, at));
            world.projects.insert(id.clone(), (rev, text.into()));
            world.push_log(at, id);
        }
        if let Some(mirror) = &mirror {
            let _ = mirror.send(batch);
        }
        let revision = world.revision;
        drop(world);
        self.inner.revision.send_replace(revision);
        revision
    }

    /// Removes projects (one change each); signing, it publishes a signed
    /// tombstone of each instead.
    pub fn remove<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> u64 {
        if let Some(key) = lock(&self.inner.signer).clone() {
            let now = SystemTime::now();
            let tombstones: Vec<(String, u64, String)> = {
                let world = lock(&self.inner.world);
                ids.into_iter()
                    .filter_map(|id| {
                        let (rev, _) = world.projects.get(id)?;
                        let next = rev + 1;
                        Some((id.to_owned(), next, key.seal_tombstone(id, next, now)))
                    })
                    .collect()
            };
            return self.publish_texts(tombstones);
        }
        let mirror = lock(&self.inner.mirror).clone();
        let mut batch = Vec::new();
        let mut world = lock(&self.inner.world);
        for id in ids {
            if world.projects.remove(id).is_some() {
                batch.push(crate::redis_client::Change {
                    project: id.to_owned(),
                    document: None,
                });
                world.revision += 1;
                let at = world.revision;
                world.positions.insert(id.to_owned(), (None, at));
                world.push_log(at, id.to_owned());
            }
        }
        let revision = world.revision;
        drop(world);
        if let Some(mirror) = &mirror {
            let _ = mirror.send(batch);
        }
        self.inner.revision.send_replace(revision);
        revision
    }

    /// From now on, writes every change to Redis too (hash and stream, one
    /// `MULTI`/`EXEC` per publish call, in order), as a publisher for a
    /// fleet that follows Redis would. Returns once connected; `written`
    /// counts the changes written so far.
    pub async fn mirror_to_redis(
        &self,
        url: &str,
        password: Option<&crate::config::secret::Secret>,
        key_prefix: &str,
    ) -> redis::RedisResult<Arc<AtomicU64>> {
        use crate::redis_client::{self as redis_source, Population};
        let timeout = Duration::from_secs(5);
        let connector = redis_source::Connector::new(redis_source::connection::Settings {
            url,
            password: password.cloned(),
            tls: &crate::config::TlsFiles::default(),
            read_from: None,
            connect_timeout: timeout,
            response_timeout: timeout,
        })
        .map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "bad Redis settings",
                e.to_string(),
            ))
        })?;
        let connector = Arc::new(connector);
        // Connected once here, so a bad address fails the call.
        let first = connector.connect(redis_source::Role::Write).await?;
        let mut writer = redis_source::Lazy::new(connector, redis_source::Role::Write);
        let keys = redis_source::RedisKeys::new(key_prefix);
        let (tx, mut rx) = mpsc::unbounded_channel::<Mirrored>();
        *lock(&self.inner.mirror) = Some(tx);
        let written = Arc::new(AtomicU64::new(0));
        let count = written.clone();
        let inner = self.inner.clone();
        drop(first);
        tokio::spawn(async move {
            // A write failed: the next one writes everything.
            let mut dirty = false;
            while let Some(batch) = rx.recv().await {
                let result = async {
                    let mut con = writer.get().await?;
                    // A Redis that lost data (restarted empty, flushed,
                    // evicted, failed over to a replica that was behind)
                    // gets the whole population again, as a control plane
                    // following docs/control-plane.md does.
                    let whole = dirty
                        || match redis_source::population(&mut con, &keys).await? {
                            (Some(marker), fields) => marker != fields,
                            (None, _) => true,
                        };
                    if whole {
                        repopulate(&mut con, &keys, &inner).await
                    } else {
                        redis_source::write_changes(&mut con, &keys, &batch, Population::Complete)
                            .await
                            .map(|_| ())
                    }
                }
                .await;
                match result {
                    Ok(()) => {
                        dirty = false;
                        count.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        // Reconnect (perhaps to a new primary) next time.
                        writer.reset();
                        dirty = true;
                        tracing::warn!(changes = batch.len(), error = %e, "simulator: Redis write failed")
                    }
                }
            }
        });
        Ok(written)
    }

    /// Forgets the change log: any older cursor now gets 410.
    pub fn compact(&self) {
        let mut world = lock(&self.inner.world);
        world.log.clear();
        world.oldest = world.revision;
    }

    /// Loads `n` generated projects (revision 1 each).
    pub fn generate(&self, n: usize) {
        let docs = (0..n)
            .map(|i| {
                let p = generate::project(i, 1, None);
                (
                    p.id.clone(),
                    1,
                    serde_json::to_string(&p).unwrap_or_default(),
                )
            })
            .collect();
        self.publish_raw(docs);
        // A fresh population is a baseline, not a history of changes.
        self.compact();
    }

    /// Loads every project of a snapshot body (`{"revision", "projects"}`).
    pub fn load_snapshot(&self, body: &[u8]) -> Result<usize, String> {
        #[derive(serde::Deserialize)]
        struct Body {
            projects: Vec<serde_json::Value>,
        }
        let body: Body = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let n = body.projects.len();
        self.publish(body.projects);
        self.compact();
        Ok(n)
    }

    /// Publishes a new revision of `count` random generated projects among
    /// the first `population`, stamped with `published_at` = now.
    pub fn mutate(&self, population: usize, count: usize) {
        let picks: Vec<usize> = {
            let mut rng = lock(&self.inner.rng);
            (0..count).map(|_| rng.below(population)).collect()
        };
        let now = SystemTime::now();
        let docs = {
            let world = lock(&self.inner.world);
            picks
                .into_iter()
                .map(|i| {
                    let id = generate::project_id(i);
                    let rev = world.projects.get(&id).map_or(1, |(r, _)| r + 1);
                    let doc = generate::project(i, rev, Some(now));
                    (id, rev, serde_json::to_string(&doc).unwrap_or_default())
                })
                .collect()
        };
        self.publish_raw(docs);
    }

    /// Runs `mutate` every 100 ms so that `per_second` revisions are
    /// published each second, until the simulator stops.
    pub fn spawn_mutator(&self, population: usize, per_second: f64) -> tokio::task::JoinHandle<()> {
        let sim = self.clone();
        let mut stop = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut owed = 0.0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                owed += per_second / 10.0;
                let n = owed.floor();
                owed -= n;
                if n >= 1.0 {
                    sim.mutate(population, n as usize);
                }
            }
        })
    }

    /// A restart without the change log, at `revision` (below the one it
    /// had, as a control plane restored from an older backup): every
    /// cursor it handed out is ahead of it now.
    pub fn restart_without_history(&self, revision: u64) {
        let mut world = lock(&self.inner.world);
        world.revision = revision;
        world.log.clear();
        world.oldest = revision;
        drop(world);
        self.inner.revision.send_replace(revision);
    }

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.inner.faults) = faults;
        self.inner.hang_released.send_modify(|n| *n += 1);
    }

    pub fn faults(&self) -> Faults {
        lock(&self.inner.faults).clone()
    }

    /// Closes the listener (connection refused) for `duration`, then listens
    /// on the same address again.
    pub fn go_down(&self, duration: Duration) {
        let sim = self.clone();
        tokio::spawn(async move {
            let addr = sim.addr();
            sim.inner.epoch.send_modify(|e| *e += 1);
            tokio::time::sleep(duration).await;
            for _ in 0..50 {
                match TcpListener::bind(addr).await {
                    Ok(listener) => {
                        tokio::spawn(sim.clone().serve_loop(listener));
                        return;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            tracing::error!(%addr, "simulator could not listen again");
        });
    }

    /// Stops serving for good.
    pub fn stop(&self) {
        self.inner.shutdown.send_replace(true);
        self.inner.epoch.send_modify(|e| *e += 1);
    }

    async fn serve_loop(self, listener: TcpListener) {
        // One serving "epoch": it ends when the simulator goes down or stops.
        let mut epoch = self.inner.epoch.subscribe();
        epoch.mark_unchanged();
        let (stop_tx, stop_rx) = watch::channel(false);
        let limits = Limits {
            drain_deadline: Duration::from_millis(100),
            ..Limits::default()
        };
        let server = tokio::spawn(serve(
            listener,
            Arc::new(self.clone()),
            limits,
            None,
            stop_rx,
        ));
        let _ = epoch.changed().await;
        let _ = stop_tx.send(true);
        let _ = server.await;
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        let inner = &self.inner;
        if let Some(refused) = self.authorize(&req) {
            return refused;
        }
        let path = req.uri().path().to_owned();
        if path == "/v1/nodes" || path.starts_with("/v1/nodes/") {
            let method = req.method().clone();
            let query = req.uri().query().unwrap_or("").to_owned();
            let body = http_body_util::Limited::new(req.into_body(), MAX_REPORT_BYTES);
            return match http_body_util::BodyExt::collect(body).await {
                Ok(body) => inner.nodes.answer(&method, &path, &query, &body.to_bytes()),
                Err(_) => text(StatusCode::PAYLOAD_TOO_LARGE, "report too large"),
            };
        }
        if path == "/v1/positions" {
            return self.positions();
        }
        let kind = if path == "/v1/snapshot" {
            &inner.counters.snapshot
        } else if path == "/v1/changes" {
            &inner.counters.changes
        } else if path.starts_with("/v1/projects/") {
            &inner.counters.project
        } else {
            return text(StatusCode::NOT_FOUND, "no such route");
        };
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only");
        }
        kind.fetch_add(1, Ordering::SeqCst);

        let faults = self.faults();
        let (error, malformed, hang) = {
            let mut rng = lock(&inner.rng);
            let mut roll = |p: f64| p > 0.0 && (rng.next_u64() as f64 / u64::MAX as f64) < p;
            (
                roll(faults.error_rate),
                roll(faults.malformed_rate),
                roll(faults.hang_rate),
            )
        };
        if hang {
            inner.counters.faulted.fetch_add(1, Ordering::SeqCst);
            self.hang().await;
        }
        if !faults.latency.is_zero() {
            tokio::time::sleep(faults.latency).await;
        }
        if error {
            inner.counters.faulted.fetch_add(1, Ordering::SeqCst);
            let status = StatusCode::from_u16(faults.error_status)
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return text(status, "simulated failure");
        }
        let response = match path.as_str() {
            "/v1/snapshot" => self.snapshot(&req),
            "/v1/changes" => self.changes(req.uri().query().unwrap_or("")).await,
            _ => self.project(&path["/v1/projects/".len()..]),
        };
        if malformed && response.status() == StatusCode::OK {
            inner.counters.faulted.fetch_add(1, Ordering::SeqCst);
            return json_response(
                StatusCode::OK,
                &b"{\"revision\": 1, \"projects\": [{\"id\": \"trunc"[..],
            );
        }
        response
    }

    /// Records the request's `Authorization`; the `401` when a token is
    /// required and it is not that token.
    fn authorize(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        let inner = &self.inner;
        let sent = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        *lock(&inner.last_authorization) = sent.clone();
        let token = inner.token.as_ref()?;
        if sent.as_deref() == Some(format!("Bearer {token}").as_str()) {
            return None;
        }
        inner.counters.unauthorized.fetch_add(1, Ordering::SeqCst);
        Some(text(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))
    }

    async fn hang(&self) {
        let mut released = self.inner.hang_released.subscribe();
        loop {
            if self.faults().hang_rate <= 0.0 {
                return;
            }
            tokio::select! {
                _ = released.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(3600)) => return,
            }
        }
    }

    fn snapshot(&self, req: &Request<Incoming>) -> Response<Body> {
        let if_none_match = req
            .headers()
            .get(IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        *lock(&self.inner.last_if_none_match) = if_none_match.clone();
        let world = lock(&self.inner.world);
        let etag = format!("\"{}\"", world.revision);
        let breach = self.faults().breach;
        if breach == Some(Breach::NoEtag) {
            let docs: Vec<&str> = world.projects.values().map(|(_, d)| &**d).collect();
            let body = format!(
                "{{\"revision\":{},\"projects\":[{}]}}",
                world.revision,
                docs.join(",")
            );
            return json_response(StatusCode::OK, body);
        }
        if if_none_match.as_deref() == Some(etag.as_str()) {
            self.inner
                .counters
                .not_modified
                .fetch_add(1, Ordering::SeqCst);
            let mut r = Response::new(Body::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            if let Ok(v) = HeaderValue::from_str(&etag) {
                r.headers_mut().insert(ETAG, v);
            }
            return r;
        }
        let docs: Vec<&str> = world.projects.values().map(|(_, d)| &**d).collect();
        let body = format!(
            "{{\"revision\":{},\"projects\":[{}]}}",
            world.revision,
            docs.join(",")
        );
        drop(world);
        let mut r = json_response(StatusCode::OK, body);
        if let Ok(v) = HeaderValue::from_str(&etag) {
            r.headers_mut().insert(ETAG, v);
        }
        r
    }

    async fn changes(&self, query: &str) -> Response<Body> {
        let mut after = None;
        let mut wait = 0.0f64;
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("after", v)) => after = v.parse::<u64>().ok(),
                Some(("wait", v)) => wait = v.parse::<f64>().unwrap_or(0.0),
                _ => {}
            }
        }
        let Some(after) = after else {
            return text(StatusCode::BAD_REQUEST, "after=N is required");
        };
        let wait = match self.faults().breach {
            Some(Breach::NoWait) => Duration::ZERO,
            _ => Duration::from_secs_f64(wait.clamp(0.0, 300.0)),
        };
        let mut revisions = self.inner.revision.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                // Read at the answer: a poll waiting since before the
                // breach was set breaks it too.
                let breach = self.faults().breach;
                let world = lock(&self.inner.world);
                if after < world.oldest || after > world.revision {
                    if breach == Some(Breach::NoGone) {
                        return json_response(StatusCode::OK, world.changes_after(u64::MAX));
                    }
                    self.inner.counters.gone.fetch_add(1, Ordering::SeqCst);
                    return text(StatusCode::GONE, "cursor too old; take a full snapshot");
                }
                if world.revision > after || tokio::time::Instant::now() >= deadline {
                    if world.revision == after && breach == Some(Breach::NoContentPoll) {
                        let mut r = Response::new(Body::new(Bytes::new()));
                        *r.status_mut() = StatusCode::NO_CONTENT;
                        return r;
                    }
                    let body = world.changes_after(after);
                    if breach == Some(Breach::MisspeltBatch) {
                        let body = body.replacen("\"projects\":", "\"changes\":", 1).replacen(
                            "\"removed\":",
                            "\"deleted\":",
                            1,
                        );
                        return json_response(StatusCode::OK, body);
                    }
                    return json_response(StatusCode::OK, body);
                }
            }
            tokio::select! {
                _ = revisions.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// `GET /v1/positions`: where each project's last change sits in the
    /// change log (the revision of the change), for the fleet commands.
    fn positions(&self) -> Response<Body> {
        let world = lock(&self.inner.world);
        let positions: serde_json::Map<String, serde_json::Value> = world
            .positions
            .iter()
            .map(|(id, (revision, at))| {
                (
                    id.clone(),
                    serde_json::json!({"revision": revision, "at": at}),
                )
            })
            .collect();
        let body = serde_json::json!({"revision": world.revision, "positions": positions});
        drop(world);
        json_response(StatusCode::OK, body.to_string())
    }

    fn project(&self, id: &str) -> Response<Body> {
        let world = lock(&self.inner.world);
        match world.projects.get(id) {
            Some((_, doc)) => json_response(StatusCode::OK, doc.to_string()),
            None if self.faults().breach == Some(Breach::NoNotFound) => {
                json_response(StatusCode::OK, "null")
            }
            None => text(StatusCode::NOT_FOUND, "no such project"),
        }
    }
}

impl World {
    fn push_log(&mut self, at: u64, id: String) {
        self.log.push_back((at, id));
        while self.log.len() > self.log_capacity {
            if let Some((rev, _)) = self.log.pop_front() {
                self.oldest = rev;
            }
        }
    }

    fn changes_after(&self, after: u64) -> String {
        let ids: BTreeSet<&str> = self
            .log
            .iter()
            .filter(|(rev, _)| *rev > after)
            .map(|(_, id)| id.as_str())
            .collect();
        let mut projects = Vec::new();
        let mut removed = Vec::new();
        for id in ids {
            match self.projects.get(id) {
                Some((_, doc)) => projects.push(&**doc),
                None => removed.push(serde_json::to_string(id).unwrap_or_default()),
            }
        }
        format!(
            "{{\"revision\":{},\"projects\":[{}],\"removed\":[{}]}}",
            self.revision,
            projects.join(","),
            removed.join(",")
        )
    }
}

impl Handler for Simulator {
    fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Reply {
        let this = self.clone();
        Reply::later(async move { this.answer(req).await })
    }
}

/// A seed that differs between runs and processes.
fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::from_static(message.as_bytes())));
    *r.status_mut() = status;
    r
}
