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
//!   serve acme-chat@58`); exit 0 then, 3 at `--timeout` (listing the
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

use self::reader::{Expired, Positions, ProjectState, ReadError, ReportReader, Target};
use super::input::quoted;
use super::retry::RetryFor;
use crate::config::secret::Env;
use crate::model::clock::Clock;
use crate::model::cursor::{Cursor, Position};
use crate::model::timestamp::parse_rfc3339;
use crate::sync::report::{digest, Layout, Served, Summary};

pub const OK: u8 = 0;
pub const UNREACHABLE: u8 = 2;
/// `wait` (and `publish --wait`): the timeout passed before the fleet
/// served it. Apart from `publish`'s 1 (refused, nothing written), so a
/// pipeline tells "not written" from "written, not yet everywhere".
pub const TIMED_OUT: u8 = 3;

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
    /// With `--project`: the revision it serves (see [`Serving`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serves: Option<String>,
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

/// Everything `status` reads, in one go (retried whole after a
/// failover's failure).
struct StatusRead {
    positions: Positions,
    source: BTreeMap<String, u64>,
    /// Reporting nodes, sorted by id.
    summaries: Vec<Summary>,
    expired: Vec<Expired>,
    /// With `--project`: each node's state of it, in `summaries` order.
    per_project: Vec<Vec<ProjectState>>,
    /// Older-layout nodes whose digest differs: what each serves.
    details: BTreeMap<String, BTreeMap<String, Served>>,
}

async fn read_status(
    target: &Target,
    query: &Status,
    env: &Env,
    now: SystemTime,
) -> Result<StatusRead, ReadError> {
    let mut reader = ReportReader::connect(target, env).await?;
    let positions = reader.positions(None).await?;
    let source = reader.source(&positions).await?;
    let roster = reader.roster(now).await?;
    let mut summaries = roster.reporting;
    summaries.sort_by(|a, b| a.node.cmp(&b.node));
    let nodes: Vec<&Summary> = summaries.iter().collect();
    let per_project = match &query.project {
        Some(p) => reader.projects(&nodes, std::slice::from_ref(p)).await?,
        None => Vec::new(),
    };
    let source_digest = digest(source.iter().map(|(id, r)| (id.as_str(), *r)));
    let mut details = BTreeMap::new();
    for s in &summaries {
        if s.layout == Layout::PerProject && s.digest != source_digest {
            details.insert(s.node.clone(), reader.detail(&s.node).await?.0);
        }
    }
    Ok(StatusRead {
        positions,
        source,
        summaries,
        expired: roster.expired,
        per_project,
        details,
    })
}

/// Reads with `read` until it succeeds, fails for good, or a failover's
/// failures outlast `retry` (saying what it waits for on `note`).
async fn retrying<T, Fut>(
    retry: RetryFor,
    note: &mut dyn Write,
    mut read: impl FnMut() -> Fut,
) -> Result<T, ReadError>
where
    Fut: std::future::Future<Output = Result<T, ReadError>>,
{
    let mut retrier = retry.retrier();
    loop {
        match read().await {
            Ok(v) => return Ok(v),
            Err(e) if retrier.again(&e, note).await => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `fleet status`.
pub async fn status(
    clock: &dyn Clock,
    target: &Target,
    query: &Status,
    env: &Env,
    out: &mut dyn Write,
    note: &mut dyn Write,
) -> u8 {
    let now = clock.now();
    match retrying(query.retry, note, || read_status(target, query, env, now)).await {
        Ok(read) => render_status(&judge_status(read, query, now), query.json, out),
        Err(e) => fail(out, e),
    }
}

/// What `status` shows, judged from what it read.
struct StatusView {
    project: Option<String>,
    source_projects: usize,
    source_digest: String,
    lines: Vec<NodeLine>,
    lost: Vec<Expired>,
    totals: Totals,
    now: SystemTime,
}

fn judge_status(read: StatusRead, query: &Status, now: SystemTime) -> StatusView {
    let project = query.project.as_deref();
    // Every position's cursor, sorted: the changes a node has not taken
    // are those past its cursor, found by one binary search per node.
    let mut changes: Vec<(u64, u64)> = read.positions.values().map(|p| p.at.order()).collect();
    changes.sort_unstable();
    let lost = lost(read.expired, now, query.lost_after);
    let source_digest = digest(read.source.iter().map(|(id, r)| (id.as_str(), *r)));
    let mut totals = Totals {
        nodes: read.summaries.len() + lost.len(),
        lost: lost.len(),
        ..Totals::default()
    };
    let mut lines = Vec::with_capacity(read.summaries.len());
    for (i, s) in read.summaries.iter().enumerate() {
        let digest_equal = s.digest == source_digest;
        let (behind, ahead) = match (digest_equal, read.details.get(&s.node)) {
            (true, _) => (0, 0),
            (false, Some(served)) => per_project_distance(served, &read.source),
            (false, None) => {
                let at = Cursor::parse(&s.cursor).unwrap_or_default().order();
                let taken = changes.partition_point(|c| *c <= at);
                (changes.len() - taken, s.ahead)
            }
        };
        let stale = is_stale(s, now);
        totals.count(stale, digest_equal, s.rejected);
        let state = read.per_project.get(i).and_then(|row| row.first());
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
            serves: project.map(|p| {
                let state = state.cloned().unwrap_or_default();
                serving(s, state, read.positions.get(p)).to_string()
            }),
            nack: project.map(|_| state.and_then(|st| st.nack.as_ref().map(nack_text))),
        });
    }
    StatusView {
        project: query.project.clone(),
        source_projects: read.source.len(),
        source_digest,
        lines,
        lost,
        totals,
        now,
    }
}

/// Behind and ahead of an older-layout node, from everything it serves.
fn per_project_distance(
    served: &BTreeMap<String, Served>,
    source: &BTreeMap<String, u64>,
) -> (usize, usize) {
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

/// `57:unsigned`, `?:invalid_document`.
fn nack_text(n: &crate::sync::report::Nack) -> String {
    format!(
        "{}:{}",
        n.revision.map_or("?".to_owned(), |r| r.to_string()),
        n.reason
    )
}

fn render_status(view: &StatusView, json: bool, out: &mut dyn Write) -> u8 {
    let now = view.now;
    if json {
        let lost: Vec<serde_json::Value> = view
            .lost
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
            "source": {"projects": view.source_projects, "digest": view.source_digest},
            "project": view.project,
            "nodes": view.lines,
            "lost": lost,
            "summary": view.totals,
        });
        let _ = writeln!(out, "{doc}");
        return OK;
    }
    for l in &view.lines {
        let _ = writeln!(out, "{}", l.text());
    }
    for e in &view.lost {
        let _ = writeln!(out, "{}", lost_line(e, now));
    }
    let t = &view.totals;
    let _ = writeln!(
        out,
        "{} nodes, {} converged, {} behind, {} rejecting, {} stale reports, {} lost",
        t.nodes, t.converged, t.behind, t.rejecting, t.stale, t.lost
    );
    OK
}

impl NodeLine {
    /// The line `status` prints for the node.
    fn text(&self) -> String {
        let mut line = format!(
            "node={} labels={} provenance={} report_age={:.1}s digest={} behind={} rejected={}",
            quoted(&self.node),
            labels_text(Some(&self.labels)),
            self.provenance,
            self.report_age_seconds,
            if self.digest_equal {
                "equal"
            } else {
                "differs"
            },
            self.behind,
            self.rejected
        );
        if self.ahead > 0 {
            line.push_str(&format!(" ahead={}", self.ahead));
        }
        if let Some(serves) = &self.serves {
            line.push_str(&format!(" serves={serves}"));
        }
        if let Some(Some(nack)) = &self.nack {
            line.push_str(&format!(" nack={nack}"));
        }
        if self.stale {
            line.push_str(" stale=true");
        }
        line
    }
}

impl Totals {
    fn count(&mut self, stale: bool, digest_equal: bool, rejected: usize) {
        if stale {
            self.stale += 1;
        } else if digest_equal {
            self.converged += 1;
        } else if rejected > 0 {
            self.rejecting += 1;
        } else {
            self.behind += 1;
        }
    }
}

/// What `status` shows.
#[derive(Debug, Clone)]
pub struct Status {
    /// Also the revision each node serves of this project.
    pub project: Option<String>,
    /// One JSON document instead of lines.
    pub json: bool,
    pub lost_after: Duration,
    /// How long a failover's failures are retried.
    pub retry: RetryFor,
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
    /// How long a failover's failures are retried.
    pub retry: RetryFor,
}

/// What one round of `wait` read.
struct Round {
    /// Live nodes the selector matches, sorted by id.
    live: Vec<Summary>,
    /// Lost nodes the selector may cover (unknown labels: it may).
    lost: Vec<Expired>,
    positions: Positions,
    /// Each live node's state of each target.
    rows: Vec<Vec<ProjectState>>,
}

async fn read_round(
    reader: &mut ReportReader,
    what: &Wait,
    now: SystemTime,
) -> Result<Round, ReadError> {
    let projects: Vec<String> = what.targets.iter().map(|(p, _)| p.clone()).collect();
    let roster = reader.roster(now).await?;
    let lost: Vec<Expired> = lost(roster.expired, now, what.lost_after)
        .into_iter()
        .filter(|e| {
            e.labels.as_ref().map_or(true, |labels| {
                what.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
        })
        .collect();
    let mut live: Vec<Summary> = roster
        .reporting
        .into_iter()
        .filter(|s| matches(s, &what.selector))
        .collect();
    live.sort_by(|a, b| a.node.cmp(&b.node));
    let positions = reader.positions(Some(&projects)).await?;
    let nodes: Vec<&Summary> = live.iter().collect();
    let rows = reader.projects(&nodes, &projects).await?;
    Ok(Round {
        live,
        lost,
        positions,
        rows,
    })
}

/// `fleet wait`.
pub async fn wait(
    clock: &dyn Clock,
    target: &Target,
    what: &Wait,
    env: &Env,
    out: &mut dyn Write,
    note: &mut dyn Write,
) -> u8 {
    let goal = goal_text(&what.targets);
    let deadline = Instant::now() + what.timeout;
    let mut shown: Option<(usize, usize, usize)> = None;
    let mut reader: Option<ReportReader> = None;
    let mut retrier = what.retry.retrier();
    loop {
        let now = clock.now();
        // After a failure the next round connects again (perhaps to a
        // new primary).
        let round = match next_round(reader.take(), target, env, what, now).await {
            Ok((kept, round)) => {
                reader = Some(kept);
                round
            }
            Err(e) if retrier.again(&e, note).await => continue,
            Err(e) => return fail(out, e),
        };
        let verdicts: Vec<NodeVerdict> = round
            .live
            .iter()
            .zip(&round.rows)
            .map(|(s, row)| judge(s, row, &what.targets, &round.positions))
            .collect();
        let serving = verdicts
            .iter()
            .filter(|v| matches!(v, NodeVerdict::Serves))
            .count();
        let now_shown = (serving, round.live.len(), round.lost.len());
        if shown != Some(now_shown) {
            let mut line = format!("{serving}/{} nodes serve {goal}", round.live.len());
            if !round.lost.is_empty() {
                line.push_str(&format!(" ({} lost)", round.lost.len()));
            }
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            shown = Some(now_shown);
        }
        let blocking = if what.ignore_lost {
            0
        } else {
            round.lost.len()
        };
        let needed = ((what.min_fraction * round.live.len() as f64).ceil() as usize).max(1);
        if !round.live.is_empty() && serving >= needed && blocking == 0 {
            let _ = writeln!(
                out,
                "converged nodes={serving} of={} min_fraction={}",
                round.live.len(),
                what.min_fraction
            );
            return OK;
        }
        if Instant::now() >= deadline {
            let _ = writeln!(
                out,
                "timeout serving={serving} of={} needed={needed} lost={blocking} after={}",
                round.live.len(),
                humantime::format_duration(what.timeout)
            );
            report_laggards(&round, &verdicts, blocking > 0, now, out);
            return TIMED_OUT;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `acme@58 globex@12`, the first three targets and how many more.
fn goal_text(targets: &[(String, u64)]) -> String {
    let mut text = targets
        .iter()
        .take(3)
        .map(|(p, r)| format!("{p}@{r}"))
        .collect::<Vec<_>>()
        .join(" ");
    if targets.len() > 3 {
        text.push_str(&format!(" and {} more", targets.len() - 3));
    }
    text
}

/// One round on `reader`, or on a new connection when there is none;
/// hands the reader back with it.
async fn next_round(
    reader: Option<ReportReader>,
    target: &Target,
    env: &Env,
    what: &Wait,
    now: SystemTime,
) -> Result<(ReportReader, Round), ReadError> {
    let mut reader = match reader {
        Some(reader) => reader,
        None => ReportReader::connect(target, env).await?,
    };
    let round = read_round(&mut reader, what, now).await?;
    Ok((reader, round))
}

/// The lines a timed-out `wait` ends with: every node not serving the
/// targets and why, and the lost nodes when they block.
fn report_laggards(
    round: &Round,
    verdicts: &[NodeVerdict],
    lost_block: bool,
    now: SystemTime,
    out: &mut dyn Write,
) {
    for (v, node) in verdicts.iter().zip(&round.live) {
        let id = quoted(&node.node);
        let line = match v {
            NodeVerdict::Serves => continue,
            NodeVerdict::Behind { project, serving } => {
                let mut line = format!(
                    "behind node={id} project={} serves={serving}",
                    quoted(project)
                );
                if node.layout == Layout::Exceptions {
                    line.push_str(&format!(" cursor={}", node.cursor));
                }
                line
            }
            NodeVerdict::Held { project, why } => {
                format!(
                    "held node={id} project={} reason={}",
                    quoted(project),
                    quoted(why)
                )
            }
            NodeVerdict::Rejecting {
                project,
                revision,
                reason,
            } => format!(
                "rejecting node={id} project={} revision={} reason={reason}",
                quoted(project),
                revision.map_or("?".to_owned(), |r| r.to_string())
            ),
        };
        let _ = writeln!(out, "{line}");
    }
    if lost_block {
        for e in &round.lost {
            let _ = writeln!(out, "{}", lost_line(e, now));
        }
    }
    if round.live.is_empty() {
        let _ = writeln!(
            out,
            "no live node reports (selector and reports: see fleet status)"
        );
    }
}

/// Where one node stands against the targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeVerdict {
    Serves,
    /// The first target it does not serve yet, and what it serves.
    Behind {
        project: String,
        serving: Serving,
    },
    /// It rejected a target at (or past) the revision waited for.
    Rejecting {
        project: String,
        revision: Option<u64>,
        reason: String,
    },
    /// Behind on a target while the blast-radius guard refuses what the
    /// source has, and why.
    Held {
        project: String,
        why: String,
    },
}

/// What a node serves of one project, as far as its report tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// This revision.
    Revision(u64),
    /// Nothing.
    Nothing,
    /// Something older than this revision: its cursor has not reached the
    /// change that published it (`<57`).
    Before(u64),
    /// Its cursor has not reached the project's last change, which
    /// published no revision (a removal), or the source records no
    /// position for it (`?`).
    Unknown,
}

impl std::fmt::Display for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Serving::Revision(r) => write!(f, "{r}"),
            Serving::Nothing => f.write_str("-"),
            Serving::Before(r) => write!(f, "<{r}"),
            Serving::Unknown => f.write_str("?"),
        }
    }
}

/// What node `summary` serves of a project, from its `state` and the
/// project's `position`: a node of the exceptions layout serves the
/// position's revision once its cursor reached it, unless it names the
/// project as an exception.
pub fn serving(summary: &Summary, state: ProjectState, position: Option<&Position>) -> Serving {
    if summary.layout == Layout::PerProject {
        return state
            .served
            .map_or(Serving::Nothing, |s| Serving::Revision(s.revision));
    }
    let cursor = Cursor::parse(&summary.cursor).unwrap_or_default();
    let published = position.and_then(|p| Some((p.revision?, p.at)));
    let taken = |r: u64| match &state.nack {
        // A rejection of this revision (or of an unreadable one): the
        // node serves what it had, which the report does not say.
        Some(n) if n.revision.map_or(true, |nr| nr >= r) => Serving::Before(r),
        _ => Serving::Revision(r),
    };
    match (state.ahead, published) {
        (Some(a), _) => Serving::Revision(a.keeps),
        (None, Some((r, at))) if cursor.reached(&at) => taken(r),
        (None, Some((r, _))) => Serving::Before(r),
        (None, None) => match position {
            Some(p) if cursor.reached(&p.at) => Serving::Nothing,
            _ => Serving::Unknown,
        },
    }
}

/// One node (`summary`, and its `row`: one state per target) against
/// `targets`, given the targets' change `positions`.
pub fn judge(
    summary: &Summary,
    row: &[ProjectState],
    targets: &[(String, u64)],
    positions: &Positions,
) -> NodeVerdict {
    for ((project, wanted), state) in targets.iter().zip(row) {
        let nack = state
            .nack
            .as_ref()
            .filter(|n| n.revision.map_or(true, |r| r >= *wanted))
            .cloned();
        let serving = serving(summary, state.clone(), positions.get(project));
        if matches!(serving, Serving::Revision(r) if r >= *wanted) {
            continue;
        }
        if let Some(n) = nack {
            return NodeVerdict::Rejecting {
                project: project.clone(),
                revision: n.revision,
                reason: n.reason,
            };
        }
        if let Some(why) = &summary.held {
            return NodeVerdict::Held {
                project: project.clone(),
                why: why.clone(),
            };
        }
        return NodeVerdict::Behind {
            project: project.clone(),
            serving,
        };
    }
    NodeVerdict::Serves
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::report::{Nack, Served};
    use std::collections::BTreeMap;

    fn summary(layout: Layout, cursor: &str) -> Summary {
        Summary {
            layout,
            node: "n1".into(),
            labels: BTreeMap::new(),
            version: "0".into(),
            source: "redis".into(),
            provenance: crate::sync::status::Provenance::Live,
            cursor: cursor.into(),
            snapshot_age_seconds: None,
            started_at: String::new(),
            reported_at: String::new(),
            interval_seconds: 10.0,
            digest: String::new(),
            projects: 2,
            rejected: 0,
            ahead: 0,
            held: None,
        }
    }

    fn served(revision: u64) -> ProjectState {
        ProjectState {
            served: Some(Served {
                revision,
                since: String::new(),
            }),
            ..ProjectState::default()
        }
    }

    fn nack(revision: u64, reason: &str) -> ProjectState {
        ProjectState {
            nack: Some(Nack {
                revision: Some(revision),
                reason: reason.into(),
            }),
            ..ProjectState::default()
        }
    }

    fn positions(entries: &[(&str, u64, &str)]) -> Positions {
        entries
            .iter()
            .map(|(id, r, at)| {
                let position = Position::parse(&format!("{r} {at}")).unwrap();
                (id.to_string(), position)
            })
            .collect()
    }

    #[test]
    fn a_node_of_the_older_layout_serves_what_it_lists() {
        let node = summary(Layout::PerProject, "none");
        let targets = vec![("a".to_owned(), 5), ("b".to_owned(), 2)];
        let none = Positions::new();
        assert_eq!(
            judge(&node, &[served(6), served(2)], &targets, &none),
            NodeVerdict::Serves
        );
        assert_eq!(
            judge(&node, &[served(4), served(2)], &targets, &none),
            NodeVerdict::Behind {
                project: "a".into(),
                serving: Serving::Revision(4)
            }
        );
        assert_eq!(
            judge(
                &node,
                &[served(5), ProjectState::default()],
                &targets,
                &none
            ),
            NodeVerdict::Behind {
                project: "b".into(),
                serving: Serving::Nothing
            }
        );
        let mut rejecting = nack(5, "bad_signature");
        rejecting.served = served(4).served;
        assert_eq!(
            judge(&node, &[rejecting, served(2)], &targets, &none),
            NodeVerdict::Rejecting {
                project: "a".into(),
                revision: Some(5),
                reason: "bad_signature".into()
            }
        );
        // A rejection of an older revision is not the one waited for.
        let mut old = nack(3, "invalid_color");
        old.served = served(2).served;
        assert!(matches!(
            judge(&node, &[old, served(2)], &targets, &none),
            NodeVerdict::Behind { .. }
        ));
    }

    #[test]
    fn a_node_serves_a_revision_once_its_cursor_reached_its_position() {
        let targets = vec![("a".to_owned(), 5)];
        let at = positions(&[("a", 5, "1700000000000-4")]);
        let clean = [ProjectState::default()];
        let node = |cursor: &str| summary(Layout::Exceptions, cursor);
        assert_eq!(
            judge(&node("1700000000000-4"), &clean, &targets, &at),
            NodeVerdict::Serves
        );
        assert_eq!(
            judge(&node("1700000000000-3"), &clean, &targets, &at),
            NodeVerdict::Behind {
                project: "a".into(),
                serving: Serving::Before(5)
            }
        );
        // A later revision published: a node past it serves it too.
        let later = positions(&[("a", 7, "1700000000009-0")]);
        assert_eq!(
            judge(&node("1700000000009-0"), &clean, &targets, &later),
            NodeVerdict::Serves
        );
        // Not yet published at that revision: nobody serves it.
        let older = positions(&[("a", 4, "1700000000000-1")]);
        assert!(matches!(
            judge(&node("1700000000009-0"), &clean, &targets, &older),
            NodeVerdict::Behind { .. }
        ));
        // No position at all: unknown, never served.
        assert_eq!(
            judge(
                &node("1700000000009-0"),
                &clean,
                &targets,
                &Positions::new()
            ),
            NodeVerdict::Behind {
                project: "a".into(),
                serving: Serving::Unknown
            }
        );
        // Past the position but naming the project: rejecting, not serving.
        assert_eq!(
            judge(
                &node("1700000000009-0"),
                &[nack(5, "unsigned")],
                &targets,
                &at
            ),
            NodeVerdict::Rejecting {
                project: "a".into(),
                revision: Some(5),
                reason: "unsigned".into()
            }
        );
        // Keeping a newer revision than the source: serves that one.
        let kept = ProjectState {
            ahead: Some(crate::sync::report::Ahead {
                keeps: 6,
                source: 5,
            }),
            ..ProjectState::default()
        };
        assert_eq!(
            judge(&node("1700000000000-0"), &[kept], &targets, &at),
            NodeVerdict::Serves
        );
        // Held back by the guard: named with why.
        let mut held = node("1700000000000-0");
        held.held = Some("refusing to remove 9 of 10 projects".into());
        assert_eq!(
            judge(&held, &clean, &targets, &at),
            NodeVerdict::Held {
                project: "a".into(),
                why: "refusing to remove 9 of 10 projects".into()
            }
        );
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
