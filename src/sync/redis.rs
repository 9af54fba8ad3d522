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
//! The cursor (a stream id `ms-seq`) is kept as one
//! ([`Cursor::Stream`]) in the store, the last-known-good cache, the
//! status and the node report. A cache written by an earlier version
//! holds it packed into a number; it is unpacked when the sidecar starts.
//!
//! The key layout and the writes ([`RedisKeys`], [`write_changes`]) are
//! shared with the publisher and the simulator.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, Value};

use super::refresh::{RefreshRequest, Scope};
use super::{summary, Contact, FetchError, Origin, Source, Stepped, SyncContext, SyncError};
use crate::config::secret::Secret;
use crate::config::RedisConfig;
use crate::model::cursor::Cursor;
pub use crate::model::cursor::StreamId;
#[cfg(test)]
use crate::model::wire::Content;
use crate::model::wire::{ChangesBody, Incoming, Reader, SnapshotBody};
use crate::store::{ApplyReport, Update};
use crate::telemetry::{SyncKind, SyncResult};

/// The stream keeps about this many entries (`XADD … MAXLEN ~`); a
/// follower further behind takes a full load.
pub const STREAM_MAX_LEN: u64 = 100_000;

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

// The scripts below are how a value's size is checked before the value
// is fetched: Redis 7.0 has no `HSCAN … NOVALUES`, and a stream entry no
// length-first read at all.

/// Reads a chunk of the projects hash without fetching any value over
/// the limit: `HSCAN` from `ARGV[1]`, `COUNT ARGV[2]`; each value of at
/// most `ARGV[3]` bytes comes back as it is, while the reply stays under
/// `ARGV[4]` bytes; any other as its length (an integer), to be fetched
/// alone or refused unread. A field name (a project id is at most 128
/// bytes) is cut to 256 bytes. Read-only, so it runs on replicas.
const SCAN_CHUNK: &str = r#"#!lua flags=no-writes
local reply = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local max, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local out, used = {reply[1]}, 0
local items = reply[2]
for i = 1, #items, 2 do
  local field, value = items[i], items[i + 1]
  if #field > 256 then field = string.sub(field, 1, 256) end
  out[#out + 1] = field
  if #value <= max and used + #value <= budget then
    used = used + #value
    out[#out + 1] = value
  else
    out[#out + 1] = #value
  end
end
return out
"#;

/// One hash value if it has at most `ARGV[2]` bytes; else its length (an
/// integer); nil when the field is absent.
const GET_BOUNDED: &str = r#"#!lua flags=no-writes
local len = redis.call('HSTRLEN', KEYS[1], ARGV[1])
if len == 0 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return false end
if len > tonumber(ARGV[2]) then return len end
return redis.call('HGET', KEYS[1], ARGV[1])
"#;

/// Fields per `HSCAN` chunk.
pub const SCAN_COUNT: usize = 256;

/// The most value bytes one chunk carries (values past it are fetched one
/// by one), so one reply never holds more than this and one document.
pub const CHUNK_BYTES: usize = 8 << 20;

/// A value read with its size checked first.
enum Bounded {
    Text(String),
    /// Over the limit (or the chunk's budget): its length in bytes.
    Length(usize),
}

fn bounded(value: Value) -> Option<Bounded> {
    match value {
        Value::Int(len) => Some(Bounded::Length(usize::try_from(len).unwrap_or(usize::MAX))),
        Value::Nil => None,
        other => Some(match owned_text(other) {
            Some(text) => Bounded::Text(text),
            None => Bounded::Text(String::new()),
        }),
    }
}

/// Every project in the hash, read in `HSCAN` chunks, each value checked
/// against `reader`'s limit before it is fetched: one over it is never
/// transferred, and is refused as `too_large`. Sorted by id.
pub async fn read_projects(
    con: &mut MultiplexedConnection,
    keys: &RedisKeys,
    reader: Reader,
) -> redis::RedisResult<Vec<Incoming>> {
    let mut out = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let reply: Value = read_only_script(SCAN_CHUNK, &keys.projects)
            .arg(&cursor)
            .arg(SCAN_COUNT)
            .arg(reader.max_document_bytes)
            .arg(CHUNK_BYTES.max(reader.max_document_bytes))
            .query_async(con)
            .await?;
        let Value::Array(mut items) = reply else {
            return Err(unexpected("HSCAN chunk"));
        };
        if items.is_empty() {
            return Err(unexpected("HSCAN chunk"));
        }
        let pairs = items.split_off(1);
        cursor = items.pop().and_then(owned_text).unwrap_or_default();
        let mut pairs = pairs.into_iter();
        while let (Some(field), Some(value)) = (pairs.next(), pairs.next()) {
            let id = owned_text(field).unwrap_or_default();
            let incoming = match bounded(value) {
                Some(Bounded::Text(json)) => reader.filed(&id, &json),
                Some(Bounded::Length(len)) if len > reader.max_document_bytes => {
                    Incoming::too_large(&id, len)
                }
                // Over the chunk's budget only: fetched alone.
                Some(Bounded::Length(_)) => match read_project(con, keys, &id, reader).await? {
                    Some(incoming) => incoming,
                    None => continue,
                },
                None => continue,
            };
            out.push(incoming);
        }
        if cursor == "0" || cursor.is_empty() {
            break;
        }
    }
    out.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    // HSCAN may return a field twice (the hash was resized meanwhile).
    out.dedup_by(|a, b| a.id == b.id);
    Ok(out)
}

/// Project `id`'s hash value, its size checked before it is fetched;
/// `None` when the field is absent.
pub async fn read_project(
    con: &mut MultiplexedConnection,
    keys: &RedisKeys,
    id: &str,
    reader: Reader,
) -> redis::RedisResult<Option<Incoming>> {
    let value: Value = read_only_script(GET_BOUNDED, &keys.projects)
        .arg(id)
        .arg(reader.max_document_bytes)
        .query_async(con)
        .await?;
    Ok(match bounded(value) {
        Some(Bounded::Text(json)) => Some(reader.filed(id, &json)),
        Some(Bounded::Length(len)) => Some(Incoming::too_large(id, len)),
        None => None,
    })
}

/// A chunk of the stream, newest first, from `ARGV[1]` (`+`, or an
/// exclusive `(id`), `COUNT ARGV[2]`: per entry its id, its `project`
/// and its `document` when it has at most `ARGV[3]` bytes (else the
/// length; nil for a removal).
const STREAM_BACK: &str = r#"#!lua flags=no-writes
local entries = redis.call('XREVRANGE', KEYS[1], ARGV[1], '-', 'COUNT', ARGV[2])
local max = tonumber(ARGV[3])
local out = {}
for _, e in ipairs(entries) do
  local fields, project, doc = e[2], false, false
  for i = 1, #fields, 2 do
    if fields[i] == 'project' then project = fields[i + 1]
    elseif fields[i] == 'document' then
      local v = fields[i + 1]
      if #v <= max then doc = v else doc = #v end
    end
  end
  out[#out + 1] = {e[1], project, doc}
end
return out
"#;

/// Reads the stream from its newest entry back, in chunks, each
/// document's size checked before it is fetched (for a publisher looking
/// for the last verifiable change of a project).
#[derive(Debug)]
pub struct StreamBackwards<'a> {
    keys: &'a RedisKeys,
    /// Where the next chunk starts; `None` once the start was reached.
    from: Option<String>,
}

impl<'a> StreamBackwards<'a> {
    pub fn new(keys: &'a RedisKeys) -> StreamBackwards<'a> {
        StreamBackwards {
            keys,
            from: Some("+".to_owned()),
        }
    }

    /// The next chunk, newest first: `(project, document)`; a removal, or
    /// a document over `max_document_bytes`, has none. `None` at the
    /// start of the stream.
    pub async fn next(
        &mut self,
        con: &mut MultiplexedConnection,
        max_document_bytes: usize,
    ) -> redis::RedisResult<Option<Vec<(String, Option<String>)>>> {
        let Some(from) = self.from.take() else {
            return Ok(None);
        };
        let reply: Value = read_only_script(STREAM_BACK, &self.keys.changes)
            .arg(&from)
            .arg(SCAN_COUNT)
            .arg(max_document_bytes)
            .query_async(con)
            .await?;
        let Value::Array(entries) = reply else {
            return Err(unexpected("XREVRANGE chunk"));
        };
        let mut out = Vec::with_capacity(entries.len());
        let mut last = None;
        for entry in entries {
            let Value::Array(mut parts) = entry else {
                continue;
            };
            let document = parts.pop().and_then(owned_text_only);
            let project = parts.pop().and_then(owned_text_only);
            last = parts.pop().and_then(owned_text);
            if let Some(project) = project {
                out.push((project, document));
            }
        }
        self.from = (out.len() >= SCAN_COUNT)
            .then(|| last.map(|id| format!("({id}")))
            .flatten();
        Ok(Some(out))
    }
}

/// A string reply, not a length or a nil.
fn owned_text_only(v: Value) -> Option<String> {
    match v {
        Value::Int(_) | Value::Nil => None,
        other => owned_text(other),
    }
}

/// `EVAL_RO script 1 key`: the script sent whole each time (a few
/// hundred bytes), so a follower needs no `SCRIPT LOAD` and a user with
/// read commands and `eval_ro` is enough (`+@read +eval_ro`); read-only,
/// so it runs on replicas.
fn read_only_script(script: &str, key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL_RO");
    cmd.arg(script).arg(1).arg(key);
    cmd
}

fn unexpected(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply",
        what.to_owned(),
    ))
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

/// `XINFO STREAM` without the entries it carries (its first and last
/// entry come whole, documents and all): the ids only, as a flat list of
/// `name, value`; nil when the stream does not exist.
const STREAM_INFO: &str = r#"#!lua flags=no-writes
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local out = {}
for i = 1, #info, 2 do
  local k, v = info[i], info[i + 1]
  if k == 'first-entry' or k == 'last-entry' then
    if v then out[#out + 1] = k; out[#out + 1] = v[1] end
  elseif k == 'last-generated-id' then
    out[#out + 1] = k; out[#out + 1] = v
  end
end
return out
"#;

async fn stream_state(
    con: &mut MultiplexedConnection,
    keys: &RedisKeys,
) -> redis::RedisResult<StreamState> {
    let info: Value = read_only_script(STREAM_INFO, &keys.changes)
        .query_async(con)
        .await?;
    let Value::Array(items) = info else {
        return Ok(StreamState::Missing);
    };
    let pairs: Vec<(String, Value)> = items
        .chunks(2)
        .filter_map(|c| Some((text(c.first()?)?, c.get(1)?.clone())))
        .collect();
    let id = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| text(v))
            .and_then(|t| StreamId::parse(&t))
    };
    Ok(StreamState::Present {
        first: id("first-entry"),
        last_generated: id("last-generated-id").unwrap_or_default(),
    })
}

/// A string reply, taken without copying its bytes.
fn owned_text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::VerbatimString { text, .. } => Some(text),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
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
    /// How large one document may be.
    reader: Reader,
}

/// Stream entries one `XREAD` takes at most.
pub const XREAD_COUNT: usize = 512;

impl RedisSource {
    pub fn new(client: Client, config: &RedisConfig, reader: Reader) -> RedisSource {
        RedisSource {
            reader,
            client,
            keys: RedisKeys::new(&config.key_prefix),
            request_timeout: config.timing.request_timeout,
            long_poll_wait: config.timing.long_poll_wait,
            backoff_max: config.timing.backoff_max,
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
        let load = self.load_all(ctx, origin, allow);
        ctx.request(SyncKind::Snapshot, |_| SyncResult::Ok, load)
            .await
    }

    /// [`full_load`](Self::full_load), uncounted.
    async fn load_all(
        &mut self,
        ctx: &SyncContext,
        origin: Origin,
        allow: bool,
    ) -> Result<(ApplyReport, StreamId), SyncError> {
        let mut con = self.con().await?;
        let read = async {
            // The stream's last generated id, read before the hash (a
            // write in between is then replayed: harmless). For a stream
            // emptied by trimming this is newer than its (gone) last
            // entry; taking `0-0` there would find the cursor lost again
            // on the next check and reload in a loop.
            let tip = match stream_state(&mut con, &self.keys).await? {
                StreamState::Missing => StreamId::default(),
                StreamState::Present { last_generated, .. } => last_generated,
            };
            let all = read_projects(&mut con, &self.keys, self.reader).await?;
            Ok::<_, redis::RedisError>((tip, all))
        };
        let (tip, all) = match read.await {
            Ok(v) => v,
            Err(e) => return self.failed(e),
        };
        let cursor = Cursor::Stream(tip);
        let parse = move || {
            Ok(Update::Snapshot(SnapshotBody {
                cursor,
                projects: all,
                unattributed: Vec::new(),
            }))
        };
        let report = ctx
            .parse_and_apply("redis hash", parse, origin, allow)
            .await?;
        self.cursor = Some(tip);
        Ok((report, tip))
    }

    /// True when entries after `cursor` may be gone (trimmed, deleted, or
    /// a Redis that came back empty). A request of its own: counted as
    /// `changes`, an error when it cannot be made.
    async fn cursor_lost(
        &mut self,
        ctx: &SyncContext,
        cursor: StreamId,
    ) -> Result<bool, SyncError> {
        let check = async {
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
        };
        ctx.request(SyncKind::Changes, |_| SyncResult::Ok, check)
            .await
    }

    /// One `XREAD BLOCK`, applied; `None` when nothing came.
    async fn follow(
        &mut self,
        ctx: &SyncContext,
        cursor: StreamId,
    ) -> Result<Option<(ApplyReport, StreamId)>, SyncError> {
        let count = |got: &Option<_>| match got {
            Some(_) => SyncResult::Ok,
            None => SyncResult::NotModified,
        };
        let read = self.read_changes(ctx, cursor);
        ctx.request(SyncKind::Changes, count, read).await
    }

    /// [`follow`](Self::follow), uncounted.
    async fn read_changes(
        &mut self,
        ctx: &SyncContext,
        cursor: StreamId,
    ) -> Result<Option<(ApplyReport, StreamId)>, SyncError> {
        let mut con = self.con().await?;
        let reply: Value = match redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(self.long_poll_wait.as_millis() as u64)
            .arg("COUNT")
            .arg(XREAD_COUNT)
            .arg("STREAMS")
            .arg(&self.keys.changes)
            .arg(cursor.to_string())
            .query_async(&mut con)
            .await
        {
            Ok(v) => v,
            Err(e) => return self.failed(e),
        };
        let entries = stream_entries(reply, self.reader.max_document_bytes);
        let Some(last) = entries.last().map(|(id, _, _)| *id) else {
            return Ok(None);
        };
        let cursor = Cursor::Stream(last);
        let reader = self.reader;
        let parse = move || Ok(Update::Changes(changes(cursor, entries, reader)));
        let report = ctx
            .parse_and_apply("stream entries", parse, Origin::Changes, false)
            .await?;
        self.cursor = Some(last);
        Ok(Some((report, last)))
    }
}

/// What one stream entry says of its project.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// `document`: the JSON written to the hash.
    Document(String),
    /// `document`, over the size limit: its length (never decoded).
    TooLarge(usize),
    /// `removed`.
    Removed,
    /// Neither field readable (not UTF-8, missing): never taken as a
    /// removal.
    Unreadable(&'static str),
}

/// The entries of an `XREAD` reply: `(id, project, entry)`. A `document`
/// longer than `max_document_bytes` is only measured.
fn stream_entries(reply: Value, max_document_bytes: usize) -> Vec<(StreamId, String, Entry)> {
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
            let Value::Array(mut parts) = entry else {
                continue;
            };
            let (Some(Value::Array(fields)), Some(id)) = (
                parts.pop(),
                parts
                    .pop()
                    .and_then(owned_text)
                    .and_then(|t| StreamId::parse(&t)),
            ) else {
                continue;
            };
            let mut project = None;
            let mut change = Entry::Unreadable("neither a document nor a removal");
            let mut fields = fields.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                match text(&name).as_deref() {
                    Some("project") => project = owned_text(value),
                    Some("removed") => change = Entry::Removed,
                    Some("document") if change != Entry::Removed => {
                        change = match value {
                            Value::BulkString(b) if b.len() > max_document_bytes => {
                                Entry::TooLarge(b.len())
                            }
                            other => owned_text(other).map_or(
                                Entry::Unreadable("a document that is not UTF-8 text"),
                                Entry::Document,
                            ),
                        }
                    }
                    _ => {}
                }
            }
            if let Some(project) = project {
                out.push((id, project, change));
            }
        }
    }
    out
}

/// A change batch from stream entries: per project, the last entry wins
/// (a removal after a write removes; a write after a removal writes).
fn changes(cursor: Cursor, entries: Vec<(StreamId, String, Entry)>, reader: Reader) -> ChangesBody {
    let mut last: Vec<(String, Entry)> = Vec::new();
    for (_, project, entry) in entries {
        last.retain(|(id, _)| *id != project);
        last.push((project, entry));
    }
    let mut body = ChangesBody {
        cursor,
        ..ChangesBody::default()
    };
    for (id, entry) in last {
        match entry {
            Entry::Document(json) => body.projects.push(reader.filed(&id, &json)),
            Entry::TooLarge(len) => body.projects.push(Incoming::too_large(id, len)),
            Entry::Removed => body.removed.push(id),
            Entry::Unreadable(why) => body.projects.push(Incoming::unreadable(
                id,
                None,
                format!("a stream entry with {why}"),
            )),
        }
    }
    body
}

impl Source for RedisSource {
    fn first_delay(&mut self, ctx: &SyncContext) -> Duration {
        if ctx.store.is_loaded() {
            // Loaded from the cache: carry on from its cursor (checked
            // against the stream before the first read).
            self.cursor = match ctx.store.cursor() {
                Cursor::Stream(id) => Some(id),
                // An earlier version's cache: the id packed in a number.
                Cursor::Revision(packed) => Some(StreamId::unpack_legacy(packed)),
                Cursor::None => None,
            };
        }
        Duration::ZERO
    }

    async fn step(&mut self, ctx: &SyncContext) -> Result<Stepped, SyncError> {
        let kept = match self.cursor {
            Some(cursor) => (!self.cursor_lost(ctx, cursor).await?).then_some(cursor),
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
                let fetch = async {
                    let mut con = self.con().await?;
                    match read_project(&mut con, &self.keys, id, self.reader).await {
                        Ok(value) => Ok(value),
                        Err(e) => self.failed(e),
                    }
                };
                ctx.refresh_project(id, allow, fetch).await
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
    fn the_last_entry_of_a_project_wins() {
        let entry =
            |id: u64, project: &str, e: Entry| (StreamId { ms: id, seq: 0 }, project.to_owned(), e);
        let body = changes(
            Cursor::Revision(9),
            vec![
                entry(1, "a", Entry::Document("{}".into())),
                entry(2, "a", Entry::Removed),
                entry(3, "b", Entry::Removed),
                entry(4, "b", Entry::Document("not json".into())),
                entry(5, "c", Entry::Unreadable("x")),
            ],
            Reader::default(),
        );
        assert_eq!(body.removed, ["a"]);
        assert_eq!(body.projects.len(), 2);
        assert_eq!(body.projects[0].id, "b");
        assert!(matches!(body.projects[0].content, Content::Unreadable(_)));
        // An entry that is neither a document nor a removal is not a
        // removal: it is refused as unreadable.
        assert_eq!(body.projects[1].id, "c");
        assert!(matches!(body.projects[1].content, Content::Unreadable(_)));
    }

    #[test]
    fn a_stream_document_over_the_limit_is_measured_not_decoded() {
        let bulk = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("{p}:changes"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![
                        bulk("project"),
                        bulk("a"),
                        bulk("document"),
                        bulk(&"x".repeat(11)),
                    ]),
                ]),
                Value::Array(vec![
                    bulk("2-0"),
                    Value::Array(vec![
                        bulk("project"),
                        bulk("b"),
                        bulk("document"),
                        Value::BulkString(vec![0xff]),
                    ]),
                ]),
            ]),
        ])]);
        let entries = stream_entries(reply, 10);
        assert_eq!(entries[0].2, Entry::TooLarge(11));
        assert!(matches!(entries[1].2, Entry::Unreadable(_)));
    }
}
