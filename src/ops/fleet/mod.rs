//! `env-sidecar fleet status` and `env-sidecar fleet wait`: has a change
//! reached the fleet? Both read the node reports every sidecar publishes
//! (`sync::report`) and compare them with the source, from Redis or from
//! a control plane ([`reader`]).
//!
//! * `status`: one line per node (id, labels, provenance, report age,
//!   digest equal to the source's or not, projects behind, rejections;
//!   with `--project`, the revision it serves), then `N nodes, M
//!   converged, K behind, J rejecting, L stale reports`. A report older
//!   than two of its node's heartbeats is stale; stale nodes count in none
//!   of the other three.
//! * `wait`: polls until at least `--min-fraction` of the nodes matching
//!   `--selector` whose report has not expired (a stale one included:
//!   silence is not serving) serve every target at its revision or later, printing progress as it changes (`41/100 nodes
//!   serve acme-chat@58`); exit 0 then, 1 at `--timeout` (listing the
//!   nodes behind or rejecting, and why), 2 when it cannot read.
//!   `publish --wait` calls it with what it published.
//! * **Lost nodes**: a node whose report expired within `--lost-after`
//!   (default 10m) stopped reporting; it may still be serving an old
//!   revision. `status` lists it (`lost=true`), and `wait` never says
//!   converged while one exists (its labels, where the store still has
//!   them, decide whether `--selector` covers it; a node of unknown
//!   labels always counts), unless `--ignore-lost`.

pub mod reader;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use self::reader::{Expired, ProjectState, ReadError, Reader, Target};
use super::input::quoted;
use crate::config::secret::Env;
use crate::model::clock::Clock;
use crate::model::timestamp::parse_rfc3339;
use crate::sync::report::{digest, Summary};

pub const OK: u8 = 0;
/// `wait`: the timeout passed first.
pub const TIMED_OUT: u8 = 1;
pub const UNREACHABLE: u8 = 2;

/// How often `wait` looks again.
const POLL: Duration = Duration::from_millis(200);

/// A node is stale when its report is older than this many heartbeats.
pub const STALE_HEARTBEATS: f64 = 2.0;

/// `label=value` selectors; a node must match them all.
pub type Selector = Vec<(String, String)>;

/// Parses `region=eu`.
pub fn parse_selector(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not label=value"))
}

fn matches(summary: &Summary, selector: &Selector) -> bool {
    selector
        .iter()
        .all(|(k, v)| summary.labels.get(k) == Some(v))
}

/// Seconds since `summary` was written (0 for a clock that runs behind).
fn report_age(summary: &Summary, now: SystemTime) -> f64 {
    parse_rfc3339(&summary.reported_at)
        .map(|at| now.duration_since(at).unwrap_or_default().as_secs_f64())
        .unwrap_or(f64::INFINITY)
}

fn is_stale(summary: &Summary, now: SystemTime) -> bool {
    report_age(summary, now) > summary.interval_seconds * STALE_HEARTBEATS
}

/// One node as `status` shows it.
#[derive(Debug, Serialize)]
pub struct NodeLine {
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub provenance: &'static str,
    pub report_age_seconds: f64,
    pub stale: bool,
    pub digest_equal: bool,
    /// Source projects it lacks or serves at a lower revision.
    pub behind: usize,
    /// Projects it serves that the source does not have (or has older).
    pub ahead: usize,
    pub rejected: usize,
    /// With `--project`: the revision it serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serves: Option<Option<u64>>,
    /// With `--project`: its rejection of that project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nack: Option<Option<String>>,
}

#[derive(Debug, Default, Serialize)]
pub struct Totals {
    pub nodes: usize,
    pub converged: usize,
    pub behind: usize,
    pub rejecting: usize,
    pub stale: usize,
    pub lost: usize,
}

/// The nodes of `expired` that stopped reporting within `lost_after` of
/// `now`, sorted by id.
fn lost(expired: Vec<Expired>, now: SystemTime, lost_after: Duration) -> Vec<Expired> {
    let mut lost: Vec<Expired> = expired
        .into_iter()
        .filter(|e| now.duration_since(e.last_seen).unwrap_or_default() <= lost_after)
        .collect();
    lost.sort_by(|a, b| a.node.cmp(&b.node));
    lost
}

/// Seconds since `e` last reported.
fn silent_for(e: &Expired, now: SystemTime) -> f64 {
    now.duration_since(e.last_seen)
        .unwrap_or_default()
        .as_secs_f64()
}

/// `key=value,…`, `-` for none, `?` when unknown.
fn labels_text(labels: Option<&BTreeMap<String, String>>) -> String {
    match labels {
        None => "?".to_owned(),
        Some(l) if l.is_empty() => "-".to_owned(),
        Some(l) => l
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// One line naming a lost node.
fn lost_line(e: &Expired, now: SystemTime) -> String {
    format!(
        "lost node={} labels={} last_seen={:.1}s",
        quoted(&e.node),
        labels_text(e.labels.as_ref()),
        silent_for(e, now)
    )
}

/// Says why the store cannot be read (the one rendering of a
/// [`ReadError`]); the exit status for it.
fn fail(out: &mut dyn Write, error: ReadError) -> u8 {
    let _ = writeln!(out, "error message={}", quoted(&error.to_string()));
    UNREACHABLE
}

/// `fleet status`.
pub async fn status(
    clock: &dyn Clock,
    target: &Target,
    query: &Status,
    env: &Env,
    out: &mut dyn Write,
) -> u8 {
    let (project, json) = (query.project.as_deref(), query.json);
    let mut reader = match Reader::connect(target, env).await {
        Ok(r) => r,
        Err(e) => return fail(out, e),
    };
    let now = clock.now();
    let (source, roster) = match (reader.source().await, reader.roster(now).await) {
        (Ok(s), Ok(n)) => (s, n),
        (Err(e), _) | (_, Err(e)) => return fail(out, e),
    };
    let mut summaries = roster.reporting;
    summaries.sort_by(|a, b| a.node.cmp(&b.node));
    let lost = lost(roster.expired, now, query.lost_after);
    let source_digest = digest(source.iter().map(|(id, r)| (id.as_str(), *r)));
    let ids: Vec<String> = summaries.iter().map(|s| s.node.clone()).collect();
    let per_project: Vec<Vec<ProjectState>> = match project {
        Some(p) => match reader.projects(&ids, &[p.to_owned()]).await {
            Ok(rows) => rows,
            Err(e) => return fail(out, e),
        },
        None => Vec::new(),
    };
    let mut lines = Vec::with_capacity(summaries.len());
    let mut totals = Totals {
        nodes: summaries.len() + lost.len(),
        lost: lost.len(),
        ..Totals::default()
    };
    for (i, s) in summaries.iter().enumerate() {
        let digest_equal = s.digest == source_digest;
        let (behind, ahead) = if digest_equal {
            (0, 0)
        } else {
            match reader.detail(&s.node).await {
                Ok((served, _)) => {
                    let behind = source
                        .iter()
                        .filter(|(id, r)| served.get(*id).map_or(true, |x| x.revision < **r))
                        .count();
                    let ahead = served
                        .iter()
                        .filter(|(id, x)| source.get(*id).map_or(true, |r| x.revision > *r))
                        .count();
                    (behind, ahead)
                }
                Err(e) => return fail(out, e),
            }
        };
        let stale = is_stale(s, now);
        if stale {
            totals.stale += 1;
        } else if digest_equal {
            totals.converged += 1;
        } else if s.rejected > 0 {
            totals.rejecting += 1;
        } else {
            totals.behind += 1;
        }
        let state = per_project.get(i).and_then(|row| row.first());
        lines.push(NodeLine {
            node: s.node.clone(),
            labels: s.labels.clone(),
            provenance: s.provenance.as_str(),
            report_age_seconds: report_age(s, now),
            stale,
            digest_equal,
            behind,
            ahead,
            rejected: s.rejected,
            serves: project.map(|_| state.and_then(|(s, _)| s.as_ref().map(|s| s.revision))),
            nack: project.map(|_| {
                state.and_then(|(_, n)| {
                    n.as_ref().map(|n| {
                        format!(
                            "{}:{}",
                            n.revision.map_or("?".to_owned(), |r| r.to_string()),
                            n.reason
                        )
                    })
                })
            }),
        });
    }
    if json {
        let lost: Vec<serde_json::Value> = lost
            .iter()
            .map(|e| {
                serde_json::json!({
                    "node": e.node,
                    "labels": e.labels,
                    "last_seen_seconds_ago": silent_for(e, now),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "source": {"projects": source.len(), "digest": source_digest},
            "project": project,
            "nodes": lines,
            "lost": lost,
            "summary": totals,
        });
        let _ = writeln!(out, "{doc}");
        return OK;
    }
    for l in &lines {
        let mut line = format!(
            "node={} labels={} provenance={} report_age={:.1}s digest={} behind={} rejected={}",
            quoted(&l.node),
            labels_text(Some(&l.labels)),
            l.provenance,
            l.report_age_seconds,
            if l.digest_equal { "equal" } else { "differs" },
            l.behind,
            l.rejected
        );
        if l.ahead > 0 {
            line.push_str(&format!(" ahead={}", l.ahead));
        }
        if let Some(serves) = &l.serves {
            line.push_str(&format!(
                " serves={}",
                serves.map_or("-".to_owned(), |r| r.to_string())
            ));
        }
        if let Some(Some(nack)) = &l.nack {
            line.push_str(&format!(" nack={nack}"));
        }
        if l.stale {
            line.push_str(" stale=true");
        }
        let _ = writeln!(out, "{line}");
    }
    for e in &lost {
        let _ = writeln!(out, "{}", lost_line(e, now));
    }
    let _ = writeln!(
        out,
        "{} nodes, {} converged, {} behind, {} rejecting, {} stale reports, {} lost",
        totals.nodes, totals.converged, totals.behind, totals.rejecting, totals.stale, totals.lost
    );
    OK
}

/// What `status` shows.
#[derive(Debug, Clone)]
pub struct Status {
    /// Also the revision each node serves of this project.
    pub project: Option<String>,
    /// One JSON document instead of lines.
    pub json: bool,
    pub lost_after: Duration,
}

/// What `wait` waits for.
#[derive(Debug, Clone)]
pub struct Wait {
    /// Every one of these `(project, revision)`, at that revision or later.
    pub targets: Vec<(String, u64)>,
    pub min_fraction: f64,
    pub timeout: Duration,
    pub selector: Selector,
    pub lost_after: Duration,
    /// Converged even while lost nodes exist.
    pub ignore_lost: bool,
}

/// `fleet wait`.
pub async fn wait(
    clock: &dyn Clock,
    target: &Target,
    what: &Wait,
    env: &Env,
    out: &mut dyn Write,
) -> u8 {
    let mut reader = match Reader::connect(target, env).await {
        Ok(r) => r,
        Err(e) => return fail(out, e),
    };
    let projects: Vec<String> = what.targets.iter().map(|(p, _)| p.clone()).collect();
    let goal = what
        .targets
        .iter()
        .map(|(p, r)| format!("{p}@{r}"))
        .collect::<Vec<_>>()
        .join(" ");
    let deadline = Instant::now() + what.timeout;
    let mut shown: Option<(usize, usize, usize)> = None;
    loop {
        let now = clock.now();
        let roster = match reader.roster(now).await {
            Ok(r) => r,
            Err(e) => return fail(out, e),
        };
        // Lost nodes the selector may cover (unknown labels: it may).
        let lost: Vec<Expired> = lost(roster.expired, now, what.lost_after)
            .into_iter()
            .filter(|e| {
                e.labels.as_ref().map_or(true, |labels| {
                    what.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
            })
            .collect();
        let blocking = if what.ignore_lost { 0 } else { lost.len() };
        let summaries = roster.reporting;
        let mut live: Vec<&Summary> = summaries
            .iter()
            .filter(|s| matches(s, &what.selector))
            .collect();
        live.sort_by(|a, b| a.node.cmp(&b.node));
        let ids: Vec<String> = live.iter().map(|s| s.node.clone()).collect();
        let rows = match reader.projects(&ids, &projects).await {
            Ok(rows) => rows,
            Err(e) => return fail(out, e),
        };
        let verdicts: Vec<NodeVerdict> = rows.iter().map(|row| judge(row, &what.targets)).collect();
        let serving = verdicts
            .iter()
            .filter(|v| matches!(v, NodeVerdict::Serves))
            .count();
        if shown != Some((serving, live.len(), lost.len())) {
            let mut line = format!("{serving}/{} nodes serve {goal}", live.len());
            if !lost.is_empty() {
                line.push_str(&format!(" ({} lost)", lost.len()));
            }
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            shown = Some((serving, live.len(), lost.len()));
        }
        let needed = (what.min_fraction * live.len() as f64).ceil() as usize;
        if !live.is_empty() && serving >= needed.max(1) && blocking == 0 {
            let _ = writeln!(
                out,
                "converged nodes={serving} of={} min_fraction={}",
                live.len(),
                what.min_fraction
            );
            return OK;
        }
        if Instant::now() >= deadline {
            let _ = writeln!(
                out,
                "timeout serving={serving} of={} needed={} lost={blocking} after={}",
                live.len(),
                needed.max(1),
                humantime::format_duration(what.timeout)
            );
            for (id, v) in ids.iter().zip(&verdicts) {
                match v {
                    NodeVerdict::Serves => {}
                    NodeVerdict::Behind { project, serves } => {
                        let _ = writeln!(
                            out,
                            "behind node={} project={} serves={}",
                            quoted(id),
                            quoted(project),
                            serves.map_or("-".to_owned(), |r| r.to_string())
                        );
                    }
                    NodeVerdict::Rejecting {
                        project,
                        revision,
                        reason,
                    } => {
                        let _ = writeln!(
                            out,
                            "rejecting node={} project={} revision={} reason={reason}",
                            quoted(id),
                            quoted(project),
                            revision.map_or("?".to_owned(), |r| r.to_string())
                        );
                    }
                }
            }
            if blocking > 0 {
                for e in &lost {
                    let _ = writeln!(out, "{}", lost_line(e, now));
                }
            }
            if live.is_empty() {
                let _ = writeln!(
                    out,
                    "no live node reports (selector and reports: see fleet status)"
                );
            }
            return TIMED_OUT;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Where one node stands against the targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeVerdict {
    Serves,
    /// The first target it does not serve yet, and what it serves.
    Behind {
        project: String,
        serves: Option<u64>,
    },
    /// It rejected a target at (or past) the revision waited for.
    Rejecting {
        project: String,
        revision: Option<u64>,
        reason: String,
    },
}

/// One node's `row` (one state per target) against `targets`.
pub fn judge(row: &[ProjectState], targets: &[(String, u64)]) -> NodeVerdict {
    for ((project, wanted), (served, nack)) in targets.iter().zip(row) {
        let serves = served.as_ref().map(|s| s.revision);
        if serves.is_some_and(|r| r >= *wanted) {
            continue;
        }
        if let Some(n) = nack
            .as_ref()
            .filter(|n| n.revision.map_or(true, |r| r >= *wanted))
        {
            return NodeVerdict::Rejecting {
                project: project.clone(),
                revision: n.revision,
                reason: n.reason.clone(),
            };
        }
        return NodeVerdict::Behind {
            project: project.clone(),
            serves,
        };
    }
    NodeVerdict::Serves
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::report::{Nack, Served};

    fn served(revision: u64) -> Option<Served> {
        Some(Served {
            revision,
            since: String::new(),
        })
    }

    #[test]
    fn a_node_serves_when_every_target_is_reached_and_says_why_not() {
        let targets = vec![("a".to_owned(), 5), ("b".to_owned(), 2)];
        assert_eq!(
            judge(&[(served(6), None), (served(2), None)], &targets),
            NodeVerdict::Serves
        );
        assert_eq!(
            judge(&[(served(4), None), (served(2), None)], &targets),
            NodeVerdict::Behind {
                project: "a".into(),
                serves: Some(4)
            }
        );
        assert_eq!(
            judge(&[(served(5), None), (None, None)], &targets),
            NodeVerdict::Behind {
                project: "b".into(),
                serves: None
            }
        );
        let nack = Some(Nack {
            revision: Some(5),
            reason: "bad_signature".into(),
        });
        assert_eq!(
            judge(&[(served(4), nack), (served(2), None)], &targets),
            NodeVerdict::Rejecting {
                project: "a".into(),
                revision: Some(5),
                reason: "bad_signature".into()
            }
        );
        // A rejection of an older revision is not the one waited for.
        let old = Some(Nack {
            revision: Some(3),
            reason: "invalid_color".into(),
        });
        assert!(matches!(
            judge(&[(served(2), old), (served(2), None)], &targets),
            NodeVerdict::Behind { .. }
        ));
    }

    #[test]
    fn selectors_parse() {
        assert_eq!(
            parse_selector("region=eu"),
            Ok(("region".into(), "eu".into()))
        );
        assert!(parse_selector("region").is_err());
    }
}
