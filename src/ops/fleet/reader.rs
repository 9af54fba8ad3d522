//! Where the fleet commands read: the node reports and the source they
//! are compared with, from Redis (`{P}:nodes`, `{P}:node:<id>` and the
//! `{P}:projects` hash) or from a control plane (`GET /v1/nodes` and
//! `GET /v1/snapshot`, as the simulator answers them).
//!
//! The source is read the way a sidecar starting fresh would judge it
//! (`ops::verdict::published`: every rule, signatures not checked), so a
//! document no node can serve does not count as something nodes are
//! behind on.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::secret::Env;
use crate::model::timestamp::parse_rfc3339;
use crate::model::trust::Trust;
use crate::model::wire::{self, parse_snapshot};
use crate::ops::target::{RedisTarget, TargetError};
use crate::ops::verdict::published;
use crate::sync::redis::{self as redis_source, Conn, RedisKeys};
use crate::sync::report::redis::{
    parse_nack, parse_served, read_all_fields, read_fields, read_summaries,
};
use crate::sync::report::{Nack, NodeReport, Served, Summary, EXPIRY_HEARTBEATS};

/// Where to read.
#[derive(Debug, Clone)]
pub enum Target {
    Redis(RedisTarget),
    ControlPlane { url: String, token_env: String },
}

/// A connection to the reports and the source.
pub enum Reader {
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

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reader::Redis { keys, .. } => write!(f, "Reader::Redis({})", keys.nodes),
            Reader::Http { base, .. } => write!(f, "Reader::Http({base})"),
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

/// One node's state for one project.
pub type ProjectState = (Option<Served>, Option<Nack>);

const TIMEOUT: Duration = Duration::from_secs(5);

impl Reader {
    pub async fn connect(target: &Target, env: &Env) -> Result<Reader, ReadError> {
        match target {
            Target::Redis(target) => Ok(Reader::Redis {
                con: target.connect(env).await?,
                keys: target.keys(),
            }),
            Target::ControlPlane { url, token_env } => {
                let client = reqwest::Client::builder()
                    .timeout(TIMEOUT)
                    .build()
                    .map_err(|e| control_plane("an HTTP client")(e.to_string()))?;
                Ok(Reader::Http {
                    client,
                    base: url.trim_end_matches('/').to_owned(),
                    token: env.secret(token_env).map(|s| s.expose().to_owned()),
                    last: Vec::new(),
                })
            }
        }
    }

    /// Project → revision, of what a sidecar would serve from the source.
    pub async fn source(&mut self) -> Result<BTreeMap<String, u64>, ReadError> {
        let docs = match self {
            Reader::Redis { con, keys } => {
                redis_source::read_projects(con, keys, wire::Reader::default())
                    .await
                    .map_err(redis(keys.projects.clone()))?
            }
            Reader::Http { .. } => {
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

    /// Every node the store lists as of `now`: the reports not expired,
    /// and the nodes whose report expired (lost, if recent enough).
    pub async fn roster(&mut self, now: SystemTime) -> Result<Roster, ReadError> {
        match self {
            Reader::Redis { con, keys } => {
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
            Reader::Http { .. } => {
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
                if let Reader::Http { last, .. } = self {
                    *last = reporting;
                }
                Ok(roster)
            }
        }
    }

    /// What each of `nodes` serves and rejected of each of `projects`
    /// (after [`summaries`](Self::summaries) for a control plane).
    pub async fn projects(
        &mut self,
        nodes: &[String],
        projects: &[String],
    ) -> Result<Vec<Vec<ProjectState>>, ReadError> {
        match self {
            Reader::Redis { con, keys } => {
                let mut fields = Vec::with_capacity(projects.len() * 2);
                for p in projects {
                    fields.push(format!("p:{p}"));
                    fields.push(format!("r:{p}"));
                }
                let rows = read_fields(con, keys, nodes, &fields)
                    .await
                    .map_err(redis("the node reports"))?;
                Ok(rows
                    .into_iter()
                    .map(|row| {
                        row.chunks(2)
                            .map(|pair| {
                                let get = |i: usize| pair.get(i).cloned().flatten();
                                (
                                    get(0).as_deref().and_then(parse_served),
                                    get(1).as_deref().and_then(parse_nack),
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                    .map(|mut row| {
                        row.resize(projects.len(), (None, None));
                        row
                    })
                    .collect())
            }
            Reader::Http { last, .. } => Ok(nodes
                .iter()
                .map(|id| {
                    let report = last.iter().find(|r| r.summary.node == *id);
                    projects
                        .iter()
                        .map(|p| {
                            (
                                report.and_then(|r| r.served.get(p).cloned()),
                                report.and_then(|r| r.rejections.get(p).cloned()),
                            )
                        })
                        .collect()
                })
                .collect()),
        }
    }

    /// Everything node `id` serves, and its rejections.
    pub async fn detail(
        &mut self,
        id: &str,
    ) -> Result<(BTreeMap<String, Served>, BTreeMap<String, Nack>), ReadError> {
        match self {
            Reader::Redis { con, keys } => {
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
            Reader::Http { last, .. } => Ok(last
                .iter()
                .find(|r| r.summary.node == id)
                .map(|r| (r.served.clone(), r.rejections.clone()))
                .unwrap_or_default()),
        }
    }

    async fn get(&self, path: &str) -> Result<Vec<u8>, ReadError> {
        let Reader::Http {
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
