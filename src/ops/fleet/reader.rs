//! Where the fleet commands read: the node reports, and the change
//! positions they are compared with, from Redis (`{P}:nodes`,
//! `{P}:node:<id>`, `{P}:positions`) or from a control plane (`GET
//! /v1/nodes`, `GET /v1/positions`, as the simulator answers them).
//!
//! The source's revisions come from the positions (every project's last
//! write). A source written by a publisher that records no positions is
//! read whole instead, the way a sidecar starting fresh would judge it
//! (`ops::verdict::published`: every rule, signatures not checked), so a
//! document no node can serve does not count as something nodes are
//! behind on.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::secret::Env;
use crate::model::cursor::{Cursor, Position};
use crate::model::timestamp::parse_rfc3339;
use crate::model::trust::Trust;
use crate::model::wire::{self, parse_snapshot};
use crate::ops::target::{RedisTarget, TargetError};
use crate::ops::verdict::published;
use crate::redis_client::{self as redis_source, Conn, RedisKeys};
use crate::sync::report::redis::{
    parse_ahead, parse_nack, parse_served, read_all_fields, read_fields, read_summaries,
};
use crate::sync::report::{Ahead, Layout, Nack, NodeReport, Served, Summary, EXPIRY_HEARTBEATS};

/// A store the fleet commands read.
#[derive(Debug, Clone)]
pub enum Store {
    Redis(RedisTarget),
    ControlPlane { url: String, token_env: String },
}

/// Where to read.
#[derive(Debug, Clone)]
pub struct Target {
    /// The node reports.
    pub reports: Store,
    /// The change positions and the source's revisions, when they are not
    /// where the reports are: the source of sidecars that report elsewhere
    /// (`report.redis_url`).
    pub positions: Option<Store>,
}

impl Target {
    /// Reports and positions in one store.
    pub fn one(store: Store) -> Target {
        Target {
            reports: store,
            positions: None,
        }
    }
}

/// The reports, and the positions when they are elsewhere.
#[derive(Debug)]
pub struct ReportReader {
    reports: Link,
    positions: Option<Link>,
}

impl ReportReader {
    pub async fn connect(target: &Target, env: &Env) -> Result<ReportReader, ReadError> {
        let reports = Link::connect(&target.reports, env).await?;
        let positions = match &target.positions {
            Some(store) => Some(Link::connect(store, env).await?),
            None => None,
        };
        Ok(ReportReader { reports, positions })
    }

    fn positions_link(&mut self) -> &mut Link {
        self.positions.as_mut().unwrap_or(&mut self.reports)
    }

    /// Project → revision, of what the source publishes (from its
    /// positions, or its documents when it records none).
    pub async fn source(
        &mut self,
        positions: &Positions,
    ) -> Result<BTreeMap<String, u64>, ReadError> {
        self.positions_link().source(positions).await
    }

    /// The change positions of `projects` (all of them for `None`).
    pub async fn positions(&mut self, projects: Option<&[String]>) -> Result<Positions, ReadError> {
        self.positions_link().positions(projects).await
    }

    /// Every node the store lists as of `now`.
    pub async fn roster(&mut self, now: SystemTime) -> Result<Roster, ReadError> {
        self.reports.roster(now).await
    }

    /// What each of `nodes` reports of each of `projects`.
    pub async fn projects(
        &mut self,
        nodes: &[&Summary],
        projects: &[String],
    ) -> Result<Vec<Vec<ProjectState>>, ReadError> {
        self.reports.projects(nodes, projects).await
    }

    /// Everything node `id` serves, and its rejections (older layout).
    pub async fn detail(
        &mut self,
        id: &str,
    ) -> Result<(BTreeMap<String, Served>, BTreeMap<String, Nack>), ReadError> {
        self.reports.detail(id).await
    }
}

/// A connection to one store.
enum Link {
    Redis {
        con: Conn,
        keys: RedisKeys,
    },
    Http {
        client: reqwest::Client,
        base: String,
        token: Option<String>,
        /// The reports of the last `summaries()` call.
        last: Vec<NodeReport>,
    },
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Link::Redis { keys, .. } => write!(f, "Link::Redis({})", keys.nodes),
            Link::Http { base, .. } => write!(f, "Link::Http({base})"),
        }
    }
}

/// Why the fleet's store could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Connect(#[from] TargetError),
    #[error("cannot read {what}: {source}")]
    Redis {
        what: String,
        #[source]
        source: redis::RedisError,
    },
    /// A control plane that could not be reached or answered wrong.
    #[error("{what}: {detail}")]
    ControlPlane { what: String, detail: String },
}

impl crate::ops::retry::MaybeTransient for ReadError {
    fn redis_error(&self) -> Option<&redis::RedisError> {
        match self {
            ReadError::Connect(TargetError::Connect(e)) | ReadError::Redis { source: e, .. } => {
                Some(e)
            }
            _ => None,
        }
    }
}

fn redis(what: impl Into<String>) -> impl FnOnce(redis::RedisError) -> ReadError {
    let what = what.into();
    move |source| ReadError::Redis { what, source }
}

fn control_plane(what: impl Into<String>) -> impl FnOnce(String) -> ReadError {
    let what = what.into();
    move |detail| ReadError::ControlPlane { what, detail }
}

/// The nodes a store lists.
#[derive(Debug, Default)]
pub struct Roster {
    /// Reports not yet expired.
    pub reporting: Vec<Summary>,
    /// Nodes that stopped reporting: their report expired.
    pub expired: Vec<Expired>,
}

/// A node whose report expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub node: String,
    /// When it last reported.
    pub last_seen: SystemTime,
    /// Its labels, where the store still has them (a control plane that
    /// keeps expired reports; Redis does not).
    pub labels: Option<BTreeMap<String, String>>,
}

/// True when `summary` is older than [`EXPIRY_HEARTBEATS`] of its node's
/// heartbeats.
pub fn has_expired(summary: &Summary, now: SystemTime) -> bool {
    let Ok(at) = parse_rfc3339(&summary.reported_at) else {
        return true;
    };
    let age = now.duration_since(at).unwrap_or_default().as_secs_f64();
    age > summary.interval_seconds * f64::from(EXPIRY_HEARTBEATS)
}

/// One node's report of one project: what it serves (older layout
/// only) and its exceptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectState {
    pub served: Option<Served>,
    pub nack: Option<Nack>,
    pub ahead: Option<Ahead>,
}

/// Project → where its last write sits in the change log.
pub type Positions = BTreeMap<String, Position>;

/// True when `summary` may name exceptions (or is of the older layout):
/// only those nodes' projects are read.
fn has_fields(summary: &Summary) -> bool {
    summary.layout == Layout::PerProject || summary.rejected > 0 || summary.ahead > 0
}

/// Fields per `HSCAN` of the positions.
const SCAN_COUNT: usize = 1000;

const TIMEOUT: Duration = Duration::from_secs(5);

impl Link {
    async fn connect(store: &Store, env: &Env) -> Result<Link, ReadError> {
        match store {
            Store::Redis(target) => Ok(Link::Redis {
                con: target.connect(env).await?,
                keys: target.keys(),
            }),
            Store::ControlPlane { url, token_env } => {
                let client = reqwest::Client::builder()
                    .timeout(TIMEOUT)
                    .build()
                    .map_err(|e| control_plane("an HTTP client")(e.to_string()))?;
                Ok(Link::Http {
                    client,
                    base: url.trim_end_matches('/').to_owned(),
                    token: env.secret(token_env).map(|s| s.expose().to_owned()),
                    last: Vec::new(),
                })
            }
        }
    }

    /// Project → revision, of what the source publishes: from the
    /// positions (`positions`, as read by `positions`),
    /// or, when its publisher records none, from the documents themselves.
    pub async fn source(
        &mut self,
        positions: &Positions,
    ) -> Result<BTreeMap<String, u64>, ReadError> {
        if !positions.is_empty() {
            return Ok(positions
                .iter()
                .filter_map(|(id, p)| Some((id.clone(), p.revision?)))
                .collect());
        }
        let docs = match self {
            Link::Redis { con, keys } => {
                redis_source::read_projects(con, keys, wire::BodyReader::default(), &|_| None)
                    .await
                    .map_err(redis(keys.projects.clone()))?
            }
            Link::Http { .. } => {
                let body = self.get("/v1/snapshot").await?;
                parse_snapshot(&body)
                    .map_err(|e| control_plane("GET /v1/snapshot")(e.to_string()))?
                    .projects
            }
        };
        Ok(published(docs, &[], &Trust::skip_signatures())
            .projects()
            .iter()
            .map(|p| (p.id().to_owned(), p.revision()))
            .collect())
    }

    /// The change positions of `projects` (all of them for `None`); a
    /// project without one is absent.
    pub async fn positions(&mut self, projects: Option<&[String]>) -> Result<Positions, ReadError> {
        match self {
            Link::Redis { con, keys } => {
                let what = redis(keys.positions.clone());
                let pairs: Vec<(String, String)> = match projects {
                    Some([]) => Vec::new(),
                    Some(ids) => {
                        let values: Vec<Option<String>> = ::redis::cmd("HMGET")
                            .arg(&keys.positions)
                            .arg(ids)
                            .query_async(con)
                            .await
                            .map_err(what)?;
                        ids.iter()
                            .zip(values)
                            .filter_map(|(id, v)| Some((id.clone(), v?)))
                            .collect()
                    }
                    None => {
                        let mut all = Vec::new();
                        let mut cursor = 0u64;
                        loop {
                            let (next, chunk): (u64, Vec<(String, String)>) = ::redis::cmd("HSCAN")
                                .arg(&keys.positions)
                                .arg(cursor)
                                .arg("COUNT")
                                .arg(SCAN_COUNT)
                                .query_async(con)
                                .await
                                .map_err(redis(keys.positions.clone()))?;
                            all.extend(chunk);
                            if next == 0 {
                                break all;
                            }
                            cursor = next;
                        }
                    }
                };
                Ok(pairs
                    .into_iter()
                    .filter_map(|(id, v)| Some((id, Position::parse(&v)?)))
                    .collect())
            }
            Link::Http { .. } => {
                let body = match self.get("/v1/positions").await {
                    Ok(body) => body,
                    // A control plane that records none.
                    Err(ReadError::ControlPlane { detail, .. }) if detail.contains("404") => {
                        return Ok(Positions::new())
                    }
                    Err(e) => return Err(e),
                };
                let all =
                    parse_positions(&body).map_err(|e| control_plane("GET /v1/positions")(e))?;
                Ok(match projects {
                    None => all,
                    Some(ids) => all.into_iter().filter(|(id, _)| ids.contains(id)).collect(),
                })
            }
        }
    }

    /// Every node the store lists as of `now`: the reports not expired,
    /// and the nodes whose report expired (lost, if recent enough).
    pub async fn roster(&mut self, now: SystemTime) -> Result<Roster, ReadError> {
        match self {
            Link::Redis { con, keys } => {
                let listed = read_summaries(con, keys)
                    .await
                    .map_err(redis("the node reports"))?;
                Ok(Roster {
                    reporting: listed.reporting,
                    expired: listed
                        .expired
                        .into_iter()
                        .map(|(node, ms)| Expired {
                            node,
                            last_seen: UNIX_EPOCH + Duration::from_millis(ms),
                            labels: None,
                        })
                        .collect(),
                })
            }
            Link::Http { .. } => {
                let body = self.get("/v1/nodes").await?;
                #[derive(serde::Deserialize)]
                struct Nodes {
                    nodes: Vec<NodeReport>,
                }
                let nodes: Nodes = serde_json::from_slice(&body).map_err(|e| {
                    control_plane("GET /v1/nodes")(format!("not a list of node reports: {e}"))
                })?;
                // A control plane may keep reports past their expiry: the
                // report's own age decides.
                let (reporting, expired): (Vec<NodeReport>, Vec<NodeReport>) = nodes
                    .nodes
                    .into_iter()
                    .partition(|n| !has_expired(&n.summary, now));
                let roster = Roster {
                    reporting: reporting.iter().map(|n| n.summary.clone()).collect(),
                    expired: expired
                        .into_iter()
                        .map(|n| Expired {
                            last_seen: parse_rfc3339(&n.summary.reported_at).unwrap_or(UNIX_EPOCH),
                            node: n.summary.node,
                            labels: Some(n.summary.labels),
                        })
                        .collect(),
                };
                if let Link::Http { last, .. } = self {
                    *last = reporting;
                }
                Ok(roster)
            }
        }
    }

    /// What each of `nodes` reports of each of `projects`: read only for
    /// nodes of the older layout or with exceptions (the others report
    /// nothing per project).
    pub async fn projects(
        &mut self,
        nodes: &[&Summary],
        projects: &[String],
    ) -> Result<Vec<Vec<ProjectState>>, ReadError> {
        let empty = vec![ProjectState::default(); projects.len()];
        let wanted: Vec<String> = nodes
            .iter()
            .filter(|s| has_fields(s))
            .map(|s| s.node.clone())
            .collect();
        let mut found: BTreeMap<String, Vec<ProjectState>> = match self {
            Link::Redis { con, keys } => {
                let mut fields = Vec::with_capacity(projects.len() * 3);
                for p in projects {
                    fields.push(format!("p:{p}"));
                    fields.push(format!("r:{p}"));
                    fields.push(format!("a:{p}"));
                }
                let rows = read_fields(con, keys, &wanted, &fields)
                    .await
                    .map_err(redis("the node reports"))?;
                wanted
                    .into_iter()
                    .zip(rows)
                    .map(|(id, row)| {
                        let mut states: Vec<ProjectState> = row
                            .chunks(3)
                            .map(|f| {
                                let get = |i: usize| f.get(i).cloned().flatten();
                                ProjectState {
                                    served: get(0).as_deref().and_then(parse_served),
                                    nack: get(1).as_deref().and_then(parse_nack),
                                    ahead: get(2).as_deref().and_then(parse_ahead),
                                }
                            })
                            .collect();
                        states.resize(projects.len(), ProjectState::default());
                        (id, states)
                    })
                    .collect()
            }
            Link::Http { last, .. } => wanted
                .into_iter()
                .map(|id| {
                    let report = last.iter().find(|r| r.summary.node == id);
                    let states = projects
                        .iter()
                        .map(|p| ProjectState {
                            served: report.and_then(|r| r.served.get(p).cloned()),
                            nack: report.and_then(|r| r.rejections.get(p).cloned()),
                            ahead: report.and_then(|r| r.ahead_of_source.get(p).copied()),
                        })
                        .collect();
                    (id, states)
                })
                .collect(),
        };
        Ok(nodes
            .iter()
            .map(|s| found.remove(&s.node).unwrap_or_else(|| empty.clone()))
            .collect())
    }

    /// Everything node `id` serves, and its rejections (a node of the
    /// older layout).
    pub async fn detail(
        &mut self,
        id: &str,
    ) -> Result<(BTreeMap<String, Served>, BTreeMap<String, Nack>), ReadError> {
        match self {
            Link::Redis { con, keys } => {
                let fields = read_all_fields(con, keys, id)
                    .await
                    .map_err(redis(format!("node {id}'s report")))?;
                let mut served = BTreeMap::new();
                let mut nacks = BTreeMap::new();
                for (k, v) in fields {
                    if let Some(p) = k.strip_prefix("p:") {
                        if let Some(s) = parse_served(&v) {
                            served.insert(p.to_owned(), s);
                        }
                    } else if let Some(p) = k.strip_prefix("r:") {
                        if let Some(n) = parse_nack(&v) {
                            nacks.insert(p.to_owned(), n);
                        }
                    }
                }
                Ok((served, nacks))
            }
            Link::Http { last, .. } => Ok(last
                .iter()
                .find(|r| r.summary.node == id)
                .map(|r| (r.served.clone(), r.rejections.clone()))
                .unwrap_or_default()),
        }
    }

    async fn get(&self, path: &str) -> Result<Vec<u8>, ReadError> {
        let Link::Http {
            client,
            base,
            token,
            ..
        } = self
        else {
            return Err(control_plane(path)("not a control plane".into()));
        };
        let mut req = client.get(format!("{base}{path}"));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| control_plane("cannot reach the control plane")(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(control_plane(format!("GET {path}"))(format!(
                "status {}",
                resp.status()
            )));
        }
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| control_plane(format!("GET {path}"))(e.to_string()))
    }
}

/// `{"positions": {"P": {"revision": 57, "at": 12}}}` (`revision` null for
/// a removal), as `GET /v1/positions` answers.
pub fn parse_positions(body: &[u8]) -> Result<Positions, String> {
    #[derive(serde::Deserialize)]
    struct Entry {
        revision: Option<u64>,
        at: Cursor,
    }
    #[derive(serde::Deserialize)]
    struct Body {
        positions: BTreeMap<String, Entry>,
    }
    let body: Body = serde_json::from_slice(body).map_err(|e| format!("not positions: {e}"))?;
    Ok(body
        .positions
        .into_iter()
        .map(|(id, e)| {
            (
                id,
                Position {
                    revision: e.revision,
                    at: e.at,
                },
            )
        })
        .collect())
}
