//! Reading what a publisher wrote, every value's size checked before it
//! is fetched: the projects hash in `HSCAN` chunks, one project, the
//! stream's first and last ids, the stream backwards (for a publisher),
//! and the entries of an `XREAD` reply.

use redis::aio::ConnectionLike;
use redis::Value;

use super::layout::RedisKeys;
use crate::model::cursor::Cursor;
pub use crate::model::cursor::StreamId;
use crate::model::raw::RawDigest;
use crate::model::wire::{BodyReader, ChangesBody, Incoming};

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

/// What a full read skips unread: the digest of the bytes the project
/// served under an id was accepted from ([`BodyReader::filed_unless`]).
pub type Served<'a> = &'a (dyn Fn(&str) -> Option<RawDigest> + Sync);

/// Every project in the hash, read in `HSCAN` chunks, each value checked
/// against `reader`'s limit before it is fetched: one over it is never
/// transferred, and is refused as `too_large`; one byte for byte as
/// `served` is not read ([`Content::AsServed`]). Sorted by id.
///
/// [`Content::AsServed`]: crate::model::wire::Content::AsServed
pub async fn read_projects(
    con: &mut (impl ConnectionLike + Send),
    keys: &RedisKeys,
    reader: BodyReader,
    served: Served<'_>,
) -> redis::RedisResult<Vec<Incoming>> {
    let mut out = Vec::new();
    // Values read, parsed a batch at a time (on every core when the
    // reader says so) so that only a batch of raw text is held at once.
    let mut batch: Vec<(String, String)> = Vec::new();
    let parse = |batch: Vec<(String, String)>, out: &mut Vec<Incoming>| {
        out.extend(crate::parallel::map(
            batch,
            reader.parallel,
            |(id, json)| reader.filed_unless(&id, &json, served(&id)),
        ));
    };
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
            match bounded(value) {
                Some(Bounded::Text(json)) => batch.push((id, json)),
                Some(Bounded::Length(len)) if len > reader.max_document_bytes => {
                    out.push(Incoming::too_large(&id, len));
                }
                // Over the chunk's budget only: fetched alone.
                Some(Bounded::Length(_)) => {
                    if let Some(incoming) = read_project(con, keys, &id, reader).await? {
                        out.push(incoming);
                    }
                }
                None => {}
            }
        }
        if batch.len() >= crate::parallel::MIN_PARALLEL {
            parse(std::mem::take(&mut batch), &mut out);
        }
        if cursor == "0" || cursor.is_empty() {
            break;
        }
    }
    parse(batch, &mut out);
    out.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    // HSCAN may return a field twice (the hash was resized meanwhile).
    out.dedup_by(|a, b| a.id == b.id);
    Ok(out)
}

/// Project `id`'s hash value, its size checked before it is fetched;
/// `None` when the field is absent.
pub async fn read_project(
    con: &mut (impl ConnectionLike + Send),
    keys: &RedisKeys,
    id: &str,
    reader: BodyReader,
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
/// for the last verifiable change of a project, and for `conformance`).
#[derive(Debug)]
pub struct StreamBackwards<'a> {
    keys: &'a RedisKeys,
    /// Where the next chunk starts; `None` once the start was reached.
    from: Option<String>,
}

/// One stream entry, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub id: String,
    /// Its `project` field; `None` when it has none (a writer's mistake).
    pub project: Option<String>,
    pub change: EntryChange,
}

/// What a stream entry says of its project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryChange {
    /// The `document` written to the hash.
    Document(String),
    /// A `document` over the reader's `max_document_bytes`: its length.
    TooLarge(usize),
    /// No `document` (a `removed` entry).
    Removed,
}

impl<'a> StreamBackwards<'a> {
    pub fn new(keys: &'a RedisKeys) -> StreamBackwards<'a> {
        StreamBackwards {
            keys,
            from: Some("+".to_owned()),
        }
    }

    /// The next chunk, newest first. `None` at the start of the stream.
    pub async fn next(
        &mut self,
        con: &mut (impl ConnectionLike + Send),
        max_document_bytes: usize,
    ) -> redis::RedisResult<Option<Vec<StreamEntry>>> {
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
        for entry in entries {
            let Value::Array(mut parts) = entry else {
                continue;
            };
            let change = match parts.pop() {
                Some(Value::Int(len)) => EntryChange::TooLarge(len as usize),
                Some(Value::Nil) | None => EntryChange::Removed,
                Some(other) => {
                    owned_text(other).map_or(EntryChange::Removed, EntryChange::Document)
                }
            };
            let project = parts.pop().and_then(owned_text_only);
            let Some(id) = parts.pop().and_then(owned_text) else {
                continue;
            };
            out.push(StreamEntry {
                id,
                project,
                change,
            });
        }
        self.from = (out.len() >= SCAN_COUNT)
            .then(|| out.last().map(|e| format!("({}", e.id)))
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
pub fn read_only_script(script: &str, key: &str) -> redis::Cmd {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    Missing,
    /// The ids of the first remaining entry (if any) and of the last
    /// entry ever generated, and how many entries it holds.
    Present {
        first: Option<StreamId>,
        last_generated: StreamId,
        length: u64,
    },
}

impl StreamState {
    /// Entries the stream holds (none when it is missing).
    pub fn length(&self) -> u64 {
        match self {
            StreamState::Missing => 0,
            StreamState::Present { length, .. } => *length,
        }
    }
}

/// `XINFO STREAM` without the entries it carries (its first and last
/// entry come whole, documents and all): the ids and the length only, as
/// a flat list of `name, value`; nil when the stream does not exist.
/// Building those entries is what makes it cost: it is the thorough
/// check, made on start, after a reconnect and when the cheap one
/// ([`read_after`]) sees entries gone.
const STREAM_INFO: &str = r#"#!lua flags=no-writes
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local out = {}
for i = 1, #info, 2 do
  local k, v = info[i], info[i + 1]
  if k == 'first-entry' or k == 'last-entry' then
    if v then out[#out + 1] = k; out[#out + 1] = v[1] end
  elseif k == 'last-generated-id' or k == 'length' then
    out[#out + 1] = k; out[#out + 1] = v
  end
end
return out
"#;

pub async fn stream_state(
    con: &mut (impl ConnectionLike + Send),
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
    let length = pairs
        .iter()
        .find(|(k, _)| k == "length")
        .and_then(|(_, v)| text(v))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    Ok(StreamState::Present {
        first: id("first-entry"),
        last_generated: id("last-generated-id").unwrap_or_default(),
        length,
    })
}

/// What one blocking read brought, and what was true right after it.
#[derive(Debug)]
pub struct Delivery {
    /// The entries after the cursor (see [`stream_entries`]).
    pub entries: Vec<(StreamId, String, Entry)>,
    /// `XLEN` right after the read: with the entries read, it tells
    /// whether entries may have gone (see [`Delivery::continues`]).
    pub length: u64,
    /// The population marker and the hash's field count, when asked.
    pub population: Option<(Option<usize>, usize)>,
}

impl Delivery {
    /// True when nothing suggests that entries after the cursor are gone:
    /// the stream holds at least the `known` entries it held before and
    /// the ones just read, and the read was not a full batch of `count`
    /// (a follower that far behind may have been trimmed past). A stream
    /// deleted and recreated while the read blocked holds only what was
    /// just read, fewer than before plus that. When false, the thorough
    /// check ([`stream_state`]) decides.
    pub fn continues(&self, known: Option<u64>, count: usize) -> bool {
        let read = self.entries.len() as u64;
        match known {
            None => false,
            Some(_) if self.entries.len() >= count => false,
            Some(known) => self.length >= known + read,
        }
    }
}

/// `XREAD BLOCK block COUNT count STREAMS changes cursor`, pipelined with
/// `XLEN` (and, when `population` is set, the marker and `HLEN`) on the
/// same connection: one round trip, answered as soon as the read wakes,
/// and nothing but numbers beside the entries. This is what a follower
/// costs Redis per delivery.
pub async fn read_after(
    con: &mut (impl ConnectionLike + Send),
    keys: &RedisKeys,
    cursor: StreamId,
    block: std::time::Duration,
    count: usize,
    population: bool,
    max_document_bytes: usize,
) -> redis::RedisResult<Delivery> {
    let mut pipe = redis::pipe();
    pipe.cmd("XREAD")
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(&keys.changes)
        .arg(cursor.to_string())
        .cmd("XLEN")
        .arg(&keys.changes);
    if population {
        pipe.get(&keys.population).hlen(&keys.projects);
    }
    let mut replies: Vec<Value> = pipe.query_async(con).await?;
    fn number<T: std::str::FromStr>(v: Option<Value>) -> Option<T> {
        v.and_then(|v| text(&v)).and_then(|t| t.parse().ok())
    }
    let counted = if population {
        let fields: Option<usize> = number(replies.pop());
        let marker: Option<usize> = number(replies.pop());
        Some((marker, fields.unwrap_or(0)))
    } else {
        None
    };
    let length: u64 = number(replies.pop()).unwrap_or(0);
    let reply = replies.pop().unwrap_or(Value::Nil);
    Ok(Delivery {
        entries: stream_entries(reply, max_document_bytes),
        length,
        population: counted,
    })
}

/// A string reply, taken without copying its bytes.
pub fn owned_text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::VerbatimString { text, .. } => Some(text),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// What one stream entry says of its project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
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
pub fn stream_entries(reply: Value, max_document_bytes: usize) -> Vec<(StreamId, String, Entry)> {
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
pub fn changes(
    cursor: Cursor,
    entries: Vec<(StreamId, String, Entry)>,
    reader: BodyReader,
) -> ChangesBody {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::wire::Content;

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
            BodyReader::default(),
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
