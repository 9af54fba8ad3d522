//! How the data lives in Redis, and how it is written: the keys under
//! one hash tag (`{P}:projects`, `{P}:changes`, `{P}:population`,
//! `{P}:positions`, the node reports), and the writes a publisher makes:
//! each project's hash field, stream entry and change position in one
//! `MULTI`/`EXEC`.

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

/// Sets the population marker to the hash's field count, atomically
/// (inside a `MULTI` too).
const MARK_COMPLETE: &str = "return redis.call('SET', KEYS[2], redis.call('HLEN', KEYS[1]))";

/// Adds a change's stream entry and records its id as the project's change
/// position, atomically (the id exists only once `XADD` ran).
/// KEYS: stream, positions. ARGV: max length, project, `document`|`removed`,
/// the document|`1`, the revision|`-`.
const ADD_CHANGE: &str = "local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', \
     'project', ARGV[2], ARGV[3], ARGV[4]) \
     redis.call('HSET', KEYS[2], ARGV[2], ARGV[5] .. ' ' .. id) return id";

/// Writes `changes` in one `MULTI`/`EXEC`: for each, the hash field (set
/// or deleted), its stream entry and its change position, and the
/// population marker as `population` says. A reader sees all of them or
/// none. Returns the stream entry ids, in order.
pub async fn write_changes(
    con: &mut (impl ConnectionLike + Send),
    keys: &RedisKeys,
    changes: &[Change],
    population: Population,
) -> redis::RedisResult<Vec<String>> {
    if changes.is_empty() && population == Population::Untouched {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    if population == Population::Incomplete {
        pipe.del(&keys.population).ignore();
    }
    for change in changes {
        match &change.document {
            Some(json) => pipe.hset(&keys.projects, &change.project, json).ignore(),
            None => pipe.hdel(&keys.projects, &change.project).ignore(),
        };
        let revision = change
            .document
            .as_deref()
            .and_then(published_revision)
            .map_or("-".to_owned(), |r| r.to_string());
        let entry = pipe
            .cmd("EVAL")
            .arg(ADD_CHANGE)
            .arg(2)
            .arg(&keys.changes)
            .arg(&keys.positions)
            .arg(STREAM_MAX_LEN)
            .arg(&change.project);
        match &change.document {
            Some(json) => entry.arg("document").arg(json),
            None => entry.arg("removed").arg("1"),
        };
        entry.arg(revision);
    }
    if population == Population::Complete {
        pipe.cmd("EVAL")
            .arg(MARK_COMPLETE)
            .arg(2)
            .arg(&keys.projects)
            .arg(&keys.population)
            .ignore();
    }
    pipe.query_async(con).await
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
/// entry in one `MULTI`/`EXEC`; returns the entry's id.
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
/// one `MULTI`/`EXEC`.
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
