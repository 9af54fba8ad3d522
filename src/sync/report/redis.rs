//! Reports in Redis, beside the data and under the same hash tag:
//!
//! * `{P}:node:<id>`, a hash per node: field `report` (the [`Summary`] as
//!   JSON), and one field per exception: `r:<project>` = `<revision>
//!   <reason>` for a rejection (`-` for an unknown revision), `a:<project>`
//!   = `<kept> <source>` for a project the source holds older. A node
//!   serving everything as published has one field, a few hundred bytes.
//!   Nodes of the older layout also wrote `p:<project>` = `<revision>
//!   <since>` for every project served; readers still take those. It
//!   expires three heartbeats after the last write, so a dead node
//!   disappears on its own.
//! * `{P}:nodes`, a sorted set: node id → time of its last report (ms), so
//!   a reader finds the nodes without scanning the key space. An entry
//!   whose hash has expired is a node that stopped reporting (listed as
//!   lost by the fleet commands); entries older than
//!   [`LOST_RETENTION`] are pruned by the other writers. A node that stops
//!   gracefully removes both as its last act ([`RedisSink::leave`]): it
//!   left, it is not lost.
//!
//! The sidecar writes only what changed since its last write (and the
//! summary): a `PEXPIRE` (which also tells whether the hash is still
//! there) and one `HSET`, plus a `ZADD` once a heartbeat; a full rewrite
//! happens on the first write, after an error, and when its hash expired
//! meanwhile (a node paused past its TTL). A rewrite writes over the hash
//! (summary last) and then drops the fields no longer meant (an exception
//! resolved, an older layout's `p:` fields): a reader never finds the
//! node missing, at worst an extra exception for a moment. No `MULTI`: a store
//! that refuses writes (an ACL, a read-only replica) then answers each
//! command with its own `NOPERM` / `READONLY`, which the reporter shows. The readers (`env-sidecar fleet`) use
//! [`read_summaries`] and [`read_fields`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::aio::ConnectionLike;
use ::redis::RedisError;

use super::{
    Ahead, Nack, NodeReport, ReportError, Served, Summary, EXPIRY_HEARTBEATS, LOST_RETENTION,
};
use crate::redis_client::{Connector, Lazy, RedisKeys, Role};

/// Fields per `HSET` of a full write.
const CHUNK: usize = 1000;

/// Writes one node's report.
pub struct RedisSink {
    /// To the primary (reports follow it through a failover).
    con: Lazy,
    keys: RedisKeys,
    node_key: String,
    node: String,
    /// Three heartbeats.
    ttl: Duration,
    /// Shown in status: the URL without credentials.
    target: String,
    /// Every field as last written; empty: write everything next time.
    written: HashMap<String, String>,
    /// When the index (`{P}:nodes`) entry was last refreshed, ms.
    indexed_ms: u64,
}

impl std::fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSink")
            .field("target", &self.target)
            .field("node_key", &self.node_key)
            .finish()
    }
}

impl RedisSink {
    pub fn new(
        connector: Arc<Connector>,
        key_prefix: &str,
        node: &str,
        interval: Duration,
    ) -> RedisSink {
        let target = connector.url().to_owned();
        let keys = RedisKeys::new(key_prefix);
        RedisSink {
            node_key: keys.node(node),
            keys,
            node: node.to_owned(),
            ttl: interval * EXPIRY_HEARTBEATS,
            target,
            con: Lazy::new(connector, Role::Write),
            written: HashMap::new(),
            indexed_ms: 0,
        }
    }

    pub fn target(&self) -> String {
        format!("redis {} ({})", self.target, self.node_key)
    }

    /// Writes `report` as of `now` (the reporter's clock).
    pub async fn write(&mut self, report: &NodeReport, now: SystemTime) -> Result<(), ReportError> {
        let fields = fields(report);
        let result = self.write_fields(fields, now).await;
        if result.is_err() {
            // Reconnect (perhaps to a new primary), and write everything,
            // next time.
            self.con.reset();
            self.written.clear();
        }
        result
    }

    /// The delta when the last write is known and the hash still exists,
    /// else everything.
    async fn write_fields(
        &mut self,
        fields: HashMap<String, String>,
        now: SystemTime,
    ) -> Result<(), ReportError> {
        let mut con = self.con.get().await.map_err(classify)?;
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        if !self.written.is_empty() && self.write_delta(&mut con, &fields, now_ms).await? {
            self.written = fields;
            return Ok(());
        }
        self.write_all(&mut con, &fields, now_ms).await?;
        self.written = fields;
        self.indexed_ms = now_ms;
        Ok(())
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    /// Only what changed since the last write. PEXPIRE first: `false`
    /// when it finds the hash expired (a node paused past its TTL), so
    /// the fields written would start a partial one and a full write must
    /// follow at once.
    async fn write_delta(
        &mut self,
        con: &mut (impl ConnectionLike + Send),
        fields: &HashMap<String, String>,
        now_ms: u64,
    ) -> Result<bool, ReportError> {
        let ttl_ms = self.ttl_ms();
        let mut pipe = ::redis::pipe();
        pipe.cmd("PEXPIRE").arg(&self.node_key).arg(ttl_ms);
        let changed: Vec<(&String, &String)> = fields
            .iter()
            .filter(|(k, v)| self.written.get(*k) != Some(*v))
            .collect();
        let gone: Vec<&String> = self
            .written
            .keys()
            .filter(|k| !fields.contains_key(*k))
            .collect();
        if !changed.is_empty() {
            let cmd = pipe.cmd("HSET").arg(&self.node_key);
            for (k, v) in &changed {
                cmd.arg(k).arg(v);
            }
            cmd.ignore();
        }
        if !gone.is_empty() {
            pipe.cmd("HDEL").arg(&self.node_key).arg(&gone).ignore();
        }
        // The index entry is refreshed once a heartbeat, not on every
        // change: it only has to outlive the pruning of stale ones.
        let index = now_ms.saturating_sub(self.indexed_ms) >= ttl_ms / 3;
        if index {
            pipe.cmd("ZADD")
                .arg(&self.keys.nodes)
                .arg(now_ms)
                .arg(&self.node)
                .ignore();
        }
        let (existed,): (i64,) = pipe.query_async(con).await.map_err(classify)?;
        if existed == 1 && index {
            self.indexed_ms = now_ms;
        }
        Ok(existed == 1)
    }

    /// Everything, written over what is there (never deleted first: a
    /// reader must not find the node gone for a moment), the summary
    /// last, then the fields of projects no longer served dropped, the
    /// index entry refreshed and stale entries of the index pruned.
    async fn write_all(
        &self,
        con: &mut (impl ConnectionLike + Send),
        fields: &HashMap<String, String>,
        now_ms: u64,
    ) -> Result<(), ReportError> {
        let ttl_ms = self.ttl_ms();
        let existing: Vec<String> = ::redis::cmd("HKEYS")
            .arg(&self.node_key)
            .query_async(con)
            .await
            .map_err(classify)?;
        let mut pipe = ::redis::pipe();
        let mut all: Vec<(&String, &String)> =
            fields.iter().filter(|(k, _)| *k != "report").collect();
        if let Some(summary) = fields.get_key_value("report") {
            all.push(summary);
        }
        for chunk in all.chunks(CHUNK) {
            let cmd = pipe.cmd("HSET").arg(&self.node_key);
            for (k, v) in chunk {
                cmd.arg(k).arg(v);
            }
            cmd.ignore();
        }
        let stale: Vec<&String> = existing
            .iter()
            .filter(|k| !fields.contains_key(*k))
            .collect();
        if !stale.is_empty() {
            pipe.cmd("HDEL").arg(&self.node_key).arg(&stale).ignore();
        }
        pipe.cmd("PEXPIRE").arg(&self.node_key).arg(ttl_ms).ignore();
        pipe.cmd("ZADD")
            .arg(&self.keys.nodes)
            .arg(now_ms)
            .arg(&self.node)
            .ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&self.keys.nodes)
            .arg("-inf")
            .arg(format!(
                "({}",
                now_ms.saturating_sub(ttl_ms.max(LOST_RETENTION.as_millis() as u64))
            ))
            .ignore();
        let () = pipe.query_async(con).await.map_err(classify)?;
        Ok(())
    }
}

/// A node leaving the fleet: its hash and its index entry removed,
/// unless the hash is another process's report under the same id (a node
/// restarted faster than this one stopped), told by `started_at`.
/// KEYS: the node's hash, the index. ARGV: node id, `started_at`.
/// Returns 1 when it left, 0 when the report was another process's.
const LEAVE: &str = r#"
local report = redis.call('HGET', KEYS[1], 'report')
if report then
  local ok, summary = pcall(cjson.decode, report)
  if ok and type(summary) == 'table' and summary['started_at'] ~= ARGV[2] then
    return 0
  end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"#;

impl RedisSink {
    /// Leaves the fleet (see `LEAVE`): the last act of a node that stops
    /// gracefully. `Ok(false)` when the report was another process's.
    pub async fn leave(&mut self, started_at: &str) -> Result<bool, ReportError> {
        let mut con = self.con.get().await.map_err(classify)?;
        let left: i64 = ::redis::cmd("EVAL")
            .arg(LEAVE)
            .arg(2)
            .arg(&self.node_key)
            .arg(&self.keys.nodes)
            .arg(&self.node)
            .arg(started_at)
            .query_async(&mut con)
            .await
            .map_err(classify)?;
        Ok(left == 1)
    }
}

/// The hash fields of a report.
pub fn fields(report: &NodeReport) -> HashMap<String, String> {
    let mut out = HashMap::with_capacity(
        report.served.len() + report.rejections.len() + report.ahead_of_source.len() + 1,
    );
    // Plain data: cannot fail.
    out.insert(
        "report".to_owned(),
        serde_json::to_string(&report.summary).unwrap_or_default(),
    );
    for (id, s) in &report.served {
        out.insert(format!("p:{id}"), format!("{} {}", s.revision, s.since));
    }
    for (id, n) in &report.rejections {
        let revision = n.revision.map_or("-".to_owned(), |r| r.to_string());
        out.insert(format!("r:{id}"), format!("{revision} {}", n.reason));
    }
    for (id, a) in &report.ahead_of_source {
        out.insert(format!("a:{id}"), format!("{} {}", a.keeps, a.source));
    }
    out
}

/// An `a:` field's value.
pub fn parse_ahead(value: &str) -> Option<Ahead> {
    let (keeps, source) = value.split_once(' ')?;
    Some(Ahead {
        keeps: keeps.parse().ok()?,
        source: source.parse().ok()?,
    })
}

/// A `p:` field's value.
pub fn parse_served(value: &str) -> Option<Served> {
    let (revision, since) = value.split_once(' ')?;
    Some(Served {
        revision: revision.parse().ok()?,
        since: since.to_owned(),
    })
}

/// An `r:` field's value.
pub fn parse_nack(value: &str) -> Option<Nack> {
    let (revision, reason) = value.split_once(' ')?;
    Some(Nack {
        revision: revision.parse().ok(),
        reason: reason.to_owned(),
    })
}

/// READONLY (a replica), NOPERM (an ACL), NOAUTH / WRONGPASS: refused;
/// anything else failed.
fn classify(e: RedisError) -> ReportError {
    // A pipeline's error lists every command's; the first says it all.
    let text: String = e.to_string().chars().take(160).collect();
    match e.code() {
        Some("READONLY" | "NOPERM" | "NOAUTH" | "WRONGPASS") => ReportError::Refused(text),
        _ => ReportError::Failed(text),
    }
}

/// The nodes a store lists: those reporting, and those whose report
/// expired (with when they last reported).
#[derive(Debug, Default)]
pub struct Listed {
    pub reporting: Vec<Summary>,
    /// Node id and the time of its last report, ms since the epoch.
    pub expired: Vec<(String, u64)>,
}

/// Every node's summary, and the nodes whose hash has expired.
pub async fn read_summaries(
    con: &mut (impl ConnectionLike + Send),
    keys: &RedisKeys,
) -> Result<Listed, RedisError> {
    let ids: Vec<(String, f64)> = ::redis::cmd("ZRANGE")
        .arg(&keys.nodes)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(con)
        .await?;
    if ids.is_empty() {
        return Ok(Listed::default());
    }
    let mut pipe = ::redis::pipe();
    for (id, _) in &ids {
        pipe.cmd("HGET").arg(keys.node(id)).arg("report");
    }
    let values: Vec<Option<String>> = pipe.query_async(con).await?;
    let mut listed = Listed::default();
    for ((id, seen), value) in ids.into_iter().zip(values) {
        match value.and_then(|v| serde_json::from_str(&v).ok()) {
            Some(summary) => listed.reporting.push(summary),
            None => listed.expired.push((id, seen.max(0.0) as u64)),
        }
    }
    Ok(listed)
}

/// `fields` of each of `nodes`' hashes (`None` where absent).
pub async fn read_fields(
    con: &mut (impl ConnectionLike + Send),
    keys: &RedisKeys,
    nodes: &[String],
    fields: &[String],
) -> Result<Vec<Vec<Option<String>>>, RedisError> {
    if nodes.is_empty() || fields.is_empty() {
        return Ok(vec![Vec::new(); nodes.len()]);
    }
    let mut pipe = ::redis::pipe();
    for id in nodes {
        pipe.cmd("HMGET").arg(keys.node(id)).arg(fields);
    }
    pipe.query_async(con).await
}

/// Every field of node `id`'s hash.
pub async fn read_all_fields(
    con: &mut (impl ConnectionLike + Send),
    keys: &RedisKeys,
    id: &str,
) -> Result<HashMap<String, String>, RedisError> {
    ::redis::cmd("HGETALL")
        .arg(keys.node(id))
        .query_async(con)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        assert_eq!(
            parse_served("57 2026-12-02T10:00:00Z"),
            Some(Served {
                revision: 57,
                since: "2026-12-02T10:00:00Z".into()
            })
        );
        assert_eq!(
            parse_nack("- unsigned"),
            Some(Nack {
                revision: None,
                reason: "unsigned".into()
            })
        );
        assert_eq!(
            parse_ahead("9 7"),
            Some(Ahead {
                keeps: 9,
                source: 7
            })
        );
        assert_eq!(parse_ahead("9"), None);
        assert_eq!(parse_served("x y"), None);
        assert_eq!(parse_served("57"), None);
    }
}
