//! The Redis source: follows a `{P}:projects` hash and a `{P}:changes`
//! stream that a publisher (`env-sidecar publish`, the control plane, the
//! simulator) writes in one `MULTI`/`EXEC` per change. For fleets: every
//! sidecar follows Redis (or a replica) instead of the control plane.
//!
//! * Full load: the stream's last generated id becomes the cursor (`0-0`
//!   when the stream is missing), then the whole hash is applied as a full
//!   snapshot (absent projects removed, blast-radius guard). The last
//!   generated id rather than the last entry's: they are the same while
//!   entries remain, and for a stream trimmed empty the last entry's (`0-0`)
//!   would look lost again at once and reload in a loop.
//! * Follow: `XREAD BLOCK <long_poll_wait> STREAMS {P}:changes <cursor>`;
//!   each batch is a change batch, the cursor the last entry's id.
//! * Before every `XREAD` (so on start and after every reconnect too) the
//!   stream is checked: missing, its first entry newer than the cursor, or
//!   empty while its last generated id is newer: entries may have been
//!   lost, so a full load again (the Redis form of `410`).
//!
//! The cursor (a stream id `ms-seq`) travels in the store's `u64` cursor,
//! packed as `ms · 2²⁰ + seq` ([`StreamId::pack`]), so the last-known-good
//! cache and the status carry it like the HTTP cursor.
//!
//! The key layout and the writes ([`RedisKeys`], [`write_changes`]) are
//! shared with the publisher and the simulator.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, Value};
use tokio::time::Instant;

use super::refresh::{RefreshRequest, Scope};
use super::{summary, Contact, FetchError, Origin, Source, Stepped, SyncContext, SyncError};
use crate::config::secret::Secret;
use crate::model::wire::{parse_project, ChangesBody, Content, Incoming, SnapshotBody};
use crate::store::{ApplyReport, Update};
use crate::telemetry::{SyncKind, SyncResult};

/// The stream keeps about this many entries (`XADD … MAXLEN ~`); a
/// follower further behind takes a full load.
pub const STREAM_MAX_LEN: u64 = 100_000;

/// A stream entry id, `ms-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub fn parse(text: &str) -> Option<StreamId> {
        let (ms, seq) = text.split_once('-')?;
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// Into the store's `u64` cursor; `None` past 2⁴⁴ ms or 2²⁰ entries in
    /// one millisecond (then the cursor is not kept: a full load after a
    /// restart, which is harmless).
    pub fn pack(self) -> Option<u64> {
        (self.ms < 1 << 44 && self.seq < 1 << 20).then_some(self.ms << 20 | self.seq)
    }

    pub fn unpack(cursor: u64) -> StreamId {
        StreamId {
            ms: cursor >> 20,
            seq: cursor & ((1 << 20) - 1),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// `{P}:projects` and `{P}:changes`, and the node reports beside them
/// (`{P}:nodes`, `{P}:node:<id>`): the braces are a hash tag, so Redis
/// Cluster keeps them all in one slot.
#[derive(Debug, Clone)]
pub struct RedisKeys {
    pub projects: String,
    pub changes: String,
    /// A sorted set: node id → time of its last report (ms since the
    /// epoch).
    pub nodes: String,
    prefix: String,
}

impl RedisKeys {
    pub fn new(prefix: &str) -> RedisKeys {
        RedisKeys {
            projects: format!("{{{prefix}}}:projects"),
            changes: format!("{{{prefix}}}:changes"),
            nodes: format!("{{{prefix}}}:nodes"),
            prefix: prefix.to_owned(),
        }
    }

    /// The hash holding node `id`'s report (it expires with the node).
    pub fn node(&self, id: &str) -> String {
        format!("{{{}}}:node:{id}", self.prefix)
    }
}

/// A Redis client for `url` (`redis://` or `rediss://`), with the password
/// from a secret (never from the URL) and, for TLS, an optional CA bundle
/// to trust instead of the system's.
pub fn client(
    url: &str,
    password: Option<&Secret>,
    ca_pem: Option<Vec<u8>>,
) -> redis::RedisResult<Client> {
    let mut info = url.into_connection_info()?;
    if let Some(password) = password {
        let settings = info
            .redis_settings()
            .clone()
            .set_password(password.expose());
        info = info.set_redis_settings(settings);
    }
    match ca_pem {
        Some(root_cert) => Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        ),
        None => Client::open(info),
    }
}

/// Connects, with `response_timeout` on every command (longer than any
/// `XREAD BLOCK`).
pub async fn connect(
    client: &Client,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// One change for Redis: a project's document (JSON), or its removal.
#[derive(Debug, Clone)]
pub struct Change {
    pub project: String,
    pub document: Option<String>,
}

/// Writes `changes` in one `MULTI`/`EXEC`: for each, the hash field (set
/// or deleted) and its stream entry. A reader sees all of them or none (a
/// full load in the middle of a republish cannot see half a snapshot).
/// Returns the stream entry ids, in order.
pub async fn write_changes(
    con: &mut MultiplexedConnection,
    keys: &RedisKeys,
    changes: &[Change],
) -> redis::RedisResult<Vec<String>> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    for change in changes {
        match &change.document {
            Some(json) => pipe.hset(&keys.projects, &change.project, json).ignore(),
            None => pipe.hdel(&keys.projects, &change.project).ignore(),
        };
        let entry = pipe
            .cmd("XADD")
            .arg(&keys.changes)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAX_LEN)
            .arg("*")
            .arg("project")
            .arg(&change.project);
        match &change.document {
            Some(json) => entry.arg("document").arg(json),
            None => entry.arg("removed").arg("1"),
        };
    }
    pipe.query_async(con).await
}

/// Writes `document` (JSON) for project `id`: the hash field and the stream
/// entry in one `MULTI`/`EXEC`; returns the entry's id.
pub async fn write_project(
    con: &mut MultiplexedConnection,
    keys: &RedisKeys,
    id: &str,
    document: &str,
) -> redis::RedisResult<String> {
    let change = Change {
        project: id.to_owned(),
        document: Some(document.to_owned()),
    };
    let mut ids = write_changes(con, keys, &[change]).await?;
    Ok(ids.pop().unwrap_or_default())
}

/// Removes project `id`: the hash field and a `removed` stream entry in
/// one `MULTI`/`EXEC`.
pub async fn remove_project(
    con: &mut MultiplexedConnection,
    keys: &RedisKeys,
    id: &str,
) -> redis::RedisResult<String> {
    let change = Change {
        project: id.to_owned(),
        document: None,
    };
    let mut ids = write_changes(con, keys, &[change]).await?;
    Ok(ids.pop().unwrap_or_default())
}

/// Every project document in the hash, `(id, JSON)`.
pub async fn read_all(
    con: &mut MultiplexedConnection,
    keys: &RedisKeys,
) -> redis::RedisResult<Vec<(String, String)>> {
    let all: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&keys.projects)
        .query_async(con)
        .await?;
    let mut all: Vec<_> = all.into_iter().collect();
    all.sort_unstable();
    Ok(all)
}

/// A hash value (a document or a signed envelope) as an incoming
/// document, attributed to its field.
pub fn incoming(id: &str, json: &str) -> Incoming {
    match parse_project(json.as_bytes()) {
        Ok(incoming) if incoming.id == id => incoming,
        // A document under another project's field: a signed one may not
        // be moved to another id, and a plain one is as suspect.
        Ok(incoming) => Incoming {
            content: Content::Unreadable(format!(
                "the document under field {id:?} has id {:?}",
                incoming.id.chars().take(128).collect::<String>()
            )),
            id: id.to_owned(),
            ..incoming
        },
        Err(e) => Incoming::unreadable(id, None, e.to_string()),
    }
}

/// What `XINFO STREAM` says about the stream, as far as the cursor cares.
#[derive(Debug)]
enum StreamState {
    Missing,
    /// The ids of the first remaining entry (if any) and of the last
    /// entry ever generated.
    Present {
        first: Option<StreamId>,
        last_generated: StreamId,
    },
}

async fn stream_state(
    con: &mut MultiplexedConnection,
    keys: &RedisKeys,
) -> redis::RedisResult<StreamState> {
    let info: Value = match redis::cmd("XINFO")
        .arg("STREAM")
        .arg(&keys.changes)
        .query_async(con)
        .await
    {
        Ok(v) => v,
        Err(e) if e.to_string().contains("no such key") => return Ok(StreamState::Missing),
        Err(e) => return Err(e),
    };
    let pairs: Vec<(String, Value)> = match info {
        Value::Map(pairs) => pairs
            .into_iter()
            .filter_map(|(k, v)| Some((text(&k)?, v)))
            .collect(),
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|c| Some((text(c.first()?)?, c.get(1)?.clone())))
            .collect(),
        _ => Vec::new(),
    };
    let field = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let last_generated = field("last-generated-id")
        .and_then(text)
        .and_then(|t| StreamId::parse(&t))
        .unwrap_or_default();
    let first = match field("first-entry") {
        Some(Value::Array(entry)) => entry
            .first()
            .and_then(text)
            .and_then(|t| StreamId::parse(&t)),
        _ => None,
    };
    Ok(StreamState::Present {
        first,
        last_generated,
    })
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The Redis source's state.
#[derive(Debug)]
pub struct RedisSource {
    client: Client,
    keys: RedisKeys,
    request_timeout: Duration,
    long_poll_wait: Duration,
    backoff_max: Duration,
    con: Option<MultiplexedConnection>,
    /// `None`: a full load is needed.
    cursor: Option<StreamId>,
}

impl RedisSource {
    pub fn new(
        client: Client,
        key_prefix: &str,
        request_timeout: Duration,
        long_poll_wait: Duration,
        backoff_max: Duration,
    ) -> RedisSource {
        RedisSource {
            client,
            keys: RedisKeys::new(key_prefix),
            request_timeout,
            long_poll_wait,
            backoff_max,
            con: None,
            cursor: None,
        }
    }

    /// The connection, made now if there is none.
    async fn con(&mut self) -> Result<MultiplexedConnection, FetchError> {
        if let Some(con) = &self.con {
            return Ok(con.clone());
        }
        let con = connect(
            &self.client,
            self.request_timeout,
            self.long_poll_wait + self.request_timeout,
        )
        .await
        .map_err(FetchError::Redis)?;
        self.con = Some(con.clone());
        // A new connection may be to a new (failed-over, emptied) Redis.
        Ok(con)
    }

    /// Forgets the connection after an error: the next step reconnects.
    fn failed<T>(&mut self, e: redis::RedisError) -> Result<T, SyncError> {
        self.con = None;
        Err(FetchError::Redis(e).into())
    }

    /// Takes the stream's tip as the cursor, then applies the whole hash as
    /// a full snapshot.
    async fn full_load(
        &mut self,
        ctx: &SyncContext,
        origin: Origin,
        allow: bool,
    ) -> Result<(ApplyReport, StreamId), SyncError> {
        let started = Instant::now();
        let mut con = self.con().await.inspect_err(|_| {
            ctx.metrics
                .sync_request(SyncKind::Snapshot, SyncResult::Error, started.elapsed());
        })?;
        let tip = async {
            // The stream's last generated id, read before the hash (a
            // write in between is then replayed: harmless). For a stream
            // emptied by trimming this is newer than its (gone) last
            // entry; taking `0-0` there would find the cursor lost again
            // on the next check and reload in a loop.
            let tip = match stream_state(&mut con, &self.keys).await? {
                StreamState::Missing => StreamId::default(),
                StreamState::Present { last_generated, .. } => last_generated,
            };
            let all = read_all(&mut con, &self.keys).await?;
            Ok::<_, redis::RedisError>((tip, all))
        }
        .await;
        let (tip, all) = match tip {
            Ok(v) => v,
            Err(e) => {
                ctx.metrics
                    .sync_request(SyncKind::Snapshot, SyncResult::Error, started.elapsed());
                return self.failed(e);
            }
        };
        let revision = tip.pack().unwrap_or(0);
        let parse = move || {
            let projects = all.iter().map(|(id, json)| incoming(id, json)).collect();
            Ok(Update::Snapshot(SnapshotBody { revision, projects }))
        };
        let report = ctx
            .parse_and_apply(
                SyncKind::Snapshot,
                started,
                "redis hash",
                parse,
                origin,
                allow,
            )
            .await?;
        self.cursor = Some(tip);
        Ok((report, tip))
    }

    /// True when entries after `cursor` may be gone (trimmed, deleted, or
    /// a Redis that came back empty).
    async fn cursor_lost(&mut self, cursor: StreamId) -> Result<bool, SyncError> {
        let mut con = self.con().await?;
        match stream_state(&mut con, &self.keys).await {
            Ok(StreamState::Missing) => Ok(true),
            Ok(StreamState::Present {
                first: Some(first), ..
            }) => Ok(first > cursor),
            Ok(StreamState::Present {
                first: None,
                last_generated,
            }) => Ok(last_generated > cursor),
            Err(e) => self.failed(e),
        }
    }

    /// One `XREAD BLOCK`, applied; `None` when nothing came.
    async fn follow(
        &mut self,
        ctx: &SyncContext,
        cursor: StreamId,
    ) -> Result<Option<(ApplyReport, StreamId)>, SyncError> {
        let started = Instant::now();
        let mut con = self.con().await?;
        let reply: Value = match redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(self.long_poll_wait.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.changes)
            .arg(cursor.to_string())
            .query_async(&mut con)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                ctx.metrics
                    .sync_request(SyncKind::Changes, SyncResult::Error, started.elapsed());
                return self.failed(e);
            }
        };
        let entries = stream_entries(reply);
        let Some(last) = entries.last().map(|(id, _)| *id) else {
            ctx.metrics.sync_request(
                SyncKind::Changes,
                SyncResult::NotModified,
                started.elapsed(),
            );
            return Ok(None);
        };
        let revision = last.pack().unwrap_or(0);
        let parse = move || Ok(Update::Changes(changes(revision, entries)));
        let report = ctx
            .parse_and_apply(
                SyncKind::Changes,
                started,
                "stream entries",
                parse,
                Origin::Changes,
                false,
            )
            .await?;
        self.cursor = Some(last);
        Ok(Some((report, last)))
    }
}

/// The entries of an `XREAD` reply: `(id, fields)`.
fn stream_entries(reply: Value) -> Vec<(StreamId, Vec<(String, String)>)> {
    let streams = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect::<Vec<_>>(),
        Value::Map(streams) => streams.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(entries) = stream else {
            continue;
        };
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let (Some(id), Some(Value::Array(fields))) =
                (parts.first().and_then(text), parts.get(1))
            else {
                continue;
            };
            let Some(id) = StreamId::parse(&id) else {
                continue;
            };
            let fields = fields
                .chunks(2)
                .filter_map(|c| Some((text(c.first()?)?, text(c.get(1)?)?)))
                .collect();
            out.push((id, fields));
        }
    }
    out
}

/// A change batch from stream entries: per project, the last entry wins
/// (a removal after a write removes; a write after a removal writes).
fn changes(revision: u64, entries: Vec<(StreamId, Vec<(String, String)>)>) -> ChangesBody {
    let mut last: Vec<(String, Option<String>)> = Vec::new();
    for (_, fields) in entries {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let Some(project) = field("project") else {
            continue;
        };
        let document = if field("removed").is_some() {
            None
        } else {
            field("document")
        };
        last.retain(|(id, _)| *id != project);
        last.push((project, document));
    }
    let mut body = ChangesBody {
        revision,
        projects: Vec::new(),
        removed: Vec::new(),
    };
    for (id, document) in last {
        match document {
            Some(json) => body.projects.push(incoming(&id, &json)),
            None => body.removed.push(id),
        }
    }
    body
}

impl Source for RedisSource {
    fn first_delay(&mut self, ctx: &SyncContext) -> Duration {
        if ctx.store.is_loaded() && ctx.store.cursor() > 0 {
            // Loaded from the cache: carry on from its cursor (checked
            // against the stream before the first read).
            self.cursor = Some(StreamId::unpack(ctx.store.cursor()));
        }
        Duration::ZERO
    }

    async fn step(&mut self, ctx: &SyncContext) -> Result<Stepped, SyncError> {
        let kept = match self.cursor {
            Some(cursor) => (!self.cursor_lost(cursor).await?).then_some(cursor),
            None => None,
        };
        let cursor = match kept {
            Some(cursor) => cursor,
            None => {
                let lost = self.cursor;
                let why = if lost.is_some() {
                    "entries after the cursor are gone; "
                } else {
                    ""
                };
                let (report, tip) = self.full_load(ctx, Origin::Snapshot, false).await?;
                return Ok(Stepped {
                    next: Duration::ZERO,
                    contact: Contact::Reached(format!(
                        "{why}full load at {tip}: {}",
                        summary(&report)
                    )),
                });
            }
        };
        match self.follow(ctx, cursor).await? {
            Some((report, last)) => Ok(Stepped {
                next: Duration::ZERO,
                contact: Contact::Reached(format!("changes up to {last}: {}", summary(&report))),
            }),
            None => Ok(Stepped {
                next: Duration::ZERO,
                contact: Contact::Reached(format!("no changes after {cursor}")),
            }),
        }
    }

    async fn refresh(
        &mut self,
        ctx: &SyncContext,
        request: &RefreshRequest,
    ) -> Result<(ApplyReport, String), SyncError> {
        let allow = request.allow_mass_removal;
        match &request.scope {
            Scope::All => {
                let (report, tip) = self.full_load(ctx, Origin::Refresh, allow).await?;
                let message = format!("forced full load at {tip}: {}", summary(&report));
                Ok((report, message))
            }
            Scope::Project(id) => {
                let started = Instant::now();
                let mut con = self.con().await?;
                let value: Option<String> = match redis::cmd("HGET")
                    .arg(&self.keys.projects)
                    .arg(id)
                    .query_async(&mut con)
                    .await
                {
                    Ok(v) => v,
                    Err(e) => {
                        ctx.metrics.sync_request(
                            SyncKind::Project,
                            SyncResult::Error,
                            started.elapsed(),
                        );
                        return self.failed(e);
                    }
                };
                ctx.metrics
                    .sync_request(SyncKind::Project, SyncResult::Ok, started.elapsed());
                let update = Update::Project {
                    id: id.clone(),
                    document: value.map(|json| incoming(id, &json)),
                };
                let report = ctx.apply(update, Origin::Refresh, allow).await?;
                let message = format!("forced project {id}: {}", summary(&report));
                Ok((report, message))
            }
        }
    }

    fn backoff_max(&self) -> Duration {
        self.backoff_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_parse_order_and_pack() {
        let a = StreamId::parse("1700000000000-0").unwrap();
        let b = StreamId::parse("1700000000000-7").unwrap();
        let c = StreamId::parse("1700000000001-0").unwrap();
        assert!(a < b && b < c);
        for id in [a, b, c, StreamId::default()] {
            assert_eq!(StreamId::unpack(id.pack().unwrap()), id);
        }
        assert_eq!(b.to_string(), "1700000000000-7");
        assert!(StreamId {
            ms: 1,
            seq: 1 << 20
        }
        .pack()
        .is_none());
        assert!(StreamId::parse("x-1").is_none() && StreamId::parse("17").is_none());
    }

    #[test]
    fn the_last_entry_of_a_project_wins() {
        let entry = |id: u64, fields: &[(&str, &str)]| {
            (
                StreamId { ms: id, seq: 0 },
                fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let body = changes(
            9,
            vec![
                entry(1, &[("project", "a"), ("document", "{}")]),
                entry(2, &[("project", "a"), ("removed", "1")]),
                entry(3, &[("project", "b"), ("removed", "1")]),
                entry(4, &[("project", "b"), ("document", "not json")]),
            ],
        );
        assert_eq!(body.removed, ["a"]);
        assert_eq!(body.projects.len(), 1);
        assert_eq!(body.projects[0].id, "b");
        assert!(matches!(body.projects[0].content, Content::Unreadable(_)));
    }
}
