//! How the data lives in Redis, and how it is written: the keys under
//! one hash tag (`{P}:projects`, `{P}:changes`, `{P}:population`,
//! `{P}:positions`, the node reports), and the writes a publisher makes:
//! each batch of hash fields, stream entries and change positions in one
//! script, fenced on where the stream ended when the writer read Redis.

use redis::aio::ConnectionLike;

use crate::model::wire::published_revision;

/// The stream keeps about this many entries (`XADD … MAXLEN ~`); a
/// follower further behind takes a full load.
pub const STREAM_MAX_LEN: u64 = 100_000;

/// `{P}:projects`, `{P}:changes` and `{P}:population`, and the node
/// reports beside them (`{P}:nodes`, `{P}:node:<id>`): the braces are a
/// hash tag, so Redis Cluster keeps them all in one slot.
#[derive(Debug, Clone)]
pub struct RedisKeys {
    pub projects: String,
    pub changes: String,
    /// The population marker: the number of fields `projects` holds when
    /// its writer has written a complete population; absent while it has
    /// not (a Redis that came back empty, a repopulation under way). A
    /// reader removes a project for being absent from the hash only when
    /// the marker is there and matches the hash.
    pub population: String,
    /// A hash: project → `<revision> <stream id>`, the change at which
    /// its last write entered the stream (`-` for the revision of a
    /// removal or a tombstone). A node whose cursor is at or past that id
    /// serves that revision unless its report names the project as an
    /// exception; it outlives the stream's trimming.
    pub positions: String,
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
            population: format!("{{{prefix}}}:population"),
            positions: format!("{{{prefix}}}:positions"),
            nodes: format!("{{{prefix}}}:nodes"),
            prefix: prefix.to_owned(),
        }
    }

    /// The hash holding node `id`'s report (it expires with the node).
    pub fn node(&self, id: &str) -> String {
        format!("{{{}}}:node:{id}", self.prefix)
    }
}

/// One change for Redis: a project's document (JSON), or its removal.
#[derive(Debug, Clone)]
pub struct Change {
    pub project: String,
    pub document: Option<String>,
}

/// What a write says of the population (see [`RedisKeys::population`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Population {
    /// After this write the hash holds the writer's whole population: the
    /// marker is set to the hash's field count, in the same transaction.
    Complete,
    /// The writer is (re)populating: the marker is removed in the same
    /// transaction, until a write that completes it.
    Incomplete,
    /// The marker is left as it is.
    Untouched,
}

/// Writes a batch of changes in one script, so a reader sees all of them
/// or none: first the fence (when `ARGV[1]` is not empty, the stream must
/// still end at that entry, else nothing is written and the reply is a
/// `FENCED` error), then the marker removed (`ARGV[2]` = `incomplete`),
/// then for each change its hash field (set or deleted), its stream entry
/// (`XADD … MAXLEN ~ ARGV[3]`) and its change position, last the marker
/// set to the hash's field count (`complete`). Returns the entry ids.
/// KEYS: projects, changes, positions, population. ARGV: fence,
/// population, max length, then per change: project, `document` |
/// `removed`, the document | `1`, the revision | `-`.
const WRITE: &str = r#"
local fence = ARGV[1]
if fence ~= '' then
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  local at = '0-0'
  if last[1] then at = last[1][1] end
  if at ~= fence then
    return redis.error_reply('FENCED the stream ends at ' .. at .. ', not at ' .. fence ..
      ' where it was read: Redis changed in between')
  end
end
if ARGV[2] == 'incomplete' then redis.call('DEL', KEYS[4]) end
local ids = {}
for i = 4, #ARGV, 4 do
  local project, kind, value, revision = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if kind == 'document' then
    redis.call('HSET', KEYS[1], project, value)
  else
    redis.call('HDEL', KEYS[1], project)
  end
  local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'project', project, kind, value)
  redis.call('HSET', KEYS[3], project, revision .. ' ' .. id)
  ids[#ids + 1] = id
end
if ARGV[2] == 'complete' then redis.call('SET', KEYS[4], redis.call('HLEN', KEYS[1])) end
return ids
"#;

/// Where the stream ends: its last entry's id, `0-0` when it is empty or
/// absent. Read before the hash, it is the fence of the writes that
/// follow ([`write_changes_after`]).
pub async fn stream_end(
    con: &mut (impl ConnectionLike + Send),
    keys: &RedisKeys,
) -> redis::RedisResult<String> {
    let last: Vec<(String, redis::Value)> = redis::cmd("XREVRANGE")
        .arg(&keys.changes)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(con)
        .await?;
    Ok(last
        .into_iter()
        .next()
        .map_or_else(|| "0-0".to_owned(), |(id, _)| id))
}

/// True for the refusal of a fenced write: Redis no longer holds what the
/// writer read (flushed, failed over to a replica that was behind, or
/// written by another writer); nothing was written.
pub fn is_fenced(e: &redis::RedisError) -> bool {
    e.code() == Some("FENCED")
}

/// [`write_changes_after`] without a fence: for a writer that read
/// nothing first (the simulator, which is the only writer of its data).
pub async fn write_changes(
    con: &mut (impl ConnectionLike + Send),
    keys: &RedisKeys,
    changes: &[Change],
    population: Population,
) -> redis::RedisResult<Vec<String>> {
    write_changes_after(con, keys, changes, population, "").await
}

/// Writes `changes` in one script (see `WRITE`): for each, the hash
/// field (set or deleted), its stream entry and its change position, and
/// the population marker as `population` says; a reader sees all of them
/// or none. With `fence` (the stream's end as [`stream_end`] read it
/// before what the changes were judged against, or the last entry this
/// writer wrote since), Redis must still hold exactly that, or nothing is
/// written ([`is_fenced`]): so a flush or a failover between the read and
/// the write can never get a diff marked as a complete population.
/// Returns the stream entry ids, in order.
pub async fn write_changes_after(
    con: &mut (impl ConnectionLike + Send),
    keys: &RedisKeys,
    changes: &[Change],
    population: Population,
    fence: &str,
) -> redis::RedisResult<Vec<String>> {
    if changes.is_empty() && population == Population::Untouched {
        return Ok(Vec::new());
    }
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(WRITE)
        .arg(4)
        .arg(&keys.projects)
        .arg(&keys.changes)
        .arg(&keys.positions)
        .arg(&keys.population)
        .arg(fence)
        .arg(match population {
            Population::Complete => "complete",
            Population::Incomplete => "incomplete",
            Population::Untouched => "untouched",
        })
        .arg(STREAM_MAX_LEN);
    for change in changes {
        let revision = change
            .document
            .as_deref()
            .and_then(published_revision)
            .map_or("-".to_owned(), |r| r.to_string());
        cmd.arg(&change.project);
        match &change.document {
            Some(json) => cmd.arg("document").arg(json),
            None => cmd.arg("removed").arg("1"),
        };
        cmd.arg(revision);
    }
    cmd.query_async(con).await
}

/// The population marker and the hash's field count now: complete when
/// they match.
pub async fn population(
    con: &mut (impl ConnectionLike + Send),
    keys: &RedisKeys,
) -> redis::RedisResult<(Option<usize>, usize)> {
    let (marker, fields): (Option<usize>, usize) = redis::pipe()
        .get(&keys.population)
        .hlen(&keys.projects)
        .query_async(con)
        .await?;
    Ok((marker, fields))
}

/// Writes `document` (JSON) for project `id`: the hash field and the stream
/// entry in one script; returns the entry's id.
pub async fn write_project(
    con: &mut (impl ConnectionLike + Send),
    keys: &RedisKeys,
    id: &str,
    document: &str,
) -> redis::RedisResult<String> {
    let change = Change {
        project: id.to_owned(),
        document: Some(document.to_owned()),
    };
    let mut ids = write_changes(con, keys, &[change], Population::Complete).await?;
    Ok(ids.pop().unwrap_or_default())
}

/// Removes project `id`: the hash field and a `removed` stream entry in
/// one script.
pub async fn remove_project(
    con: &mut (impl ConnectionLike + Send),
    keys: &RedisKeys,
    id: &str,
) -> redis::RedisResult<String> {
    let change = Change {
        project: id.to_owned(),
        document: None,
    };
    let mut ids = write_changes(con, keys, &[change], Population::Complete).await?;
    Ok(ids.pop().unwrap_or_default())
}
