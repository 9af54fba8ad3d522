//! `conformance --control-plane URL`: drives a control plane through the
//! sync protocol as a sidecar would, with the sidecar's own client and
//! parsers ([`crate::sync::http::ControlPlane`]).
//!
//! It only reads: a control plane's state is never changed, so a change
//! batch is asked for just behind the snapshot's revision, and `410` for a
//! cursor ahead of it (one a restart without the change log would leave).

use std::io::Write;
use std::time::Duration;

use super::{documents, fail, pass, report, Finding, Verdict, UNREACHABLE};
use crate::config::secret::Secret;
use crate::model::wire::BodyReader;
use crate::sync;
use crate::sync::error::{describe as chain, FetchError};
use crate::sync::http::{ChangesFetch, ControlPlane, SnapshotFetch};

const REQUESTS: &str = "docs/control-plane.md#requests-and-answers";
const RULES: &str = "docs/control-plane.md#rules-a-control-plane-keeps";

/// An id no control plane holds (ids are at most 128 characters of
/// `A-Z a-z 0-9 _ -`; this one is valid and unlikely).
const NO_SUCH_PROJECT: &str = "env-sidecar-conformance-no-such-project";

/// How far ahead of the control plane the checker puts its cursor.
const AHEAD: u64 = 1_000_000_000;

/// What the command was asked.
#[derive(Debug)]
pub struct Conformance {
    pub url: String,
    pub token: Option<Secret>,
    /// How long the empty long poll waits.
    pub wait: Duration,
    pub request_timeout: Duration,
}

/// Runs every check, one line each on `out`, then a summary; returns the
/// exit status.
pub async fn run(args: &Conformance, out: &mut dyn Write) -> u8 {
    let control_plane = match ControlPlane::new(
        &args.url,
        args.token.clone(),
        args.request_timeout,
        args.wait,
        BodyReader::default(),
    ) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "error: cannot build a client: {e}");
            return UNREACHABLE;
        }
    };
    let findings = match check(&control_plane).await {
        Ok(findings) => findings,
        Err(e) => {
            let _ = writeln!(out, "error: {}: {}", args.url, chain(&e));
            return UNREACHABLE;
        }
    };
    report(&findings, out)
}

/// Every check in order. `Err` only when the snapshot cannot be fetched
/// at all (nothing else can be judged then).
pub async fn check(control_plane: &ControlPlane) -> Result<Vec<Finding>, FetchError> {
    let mut findings = Vec::new();
    let fetched = control_plane.snapshot(None).await;
    let (body, etag) = match fetched {
        Ok(SnapshotFetch::Body { body, etag }) => (body, etag),
        Ok(SnapshotFetch::NotModified) => {
            findings.push(fail(
                "snapshot",
                REQUESTS,
                "answered 304 to a request without If-None-Match",
            ));
            return Ok(findings);
        }
        Err(e @ (FetchError::Transport(_) | FetchError::Timeout(_))) => return Err(e),
        Err(e) => {
            findings.push(fail("snapshot", REQUESTS, chain(&e)));
            return Ok(findings);
        }
    };
    let snapshot = match control_plane.reader().snapshot(&body) {
        Ok(s) => s,
        Err(e) => {
            findings.push(fail("snapshot", REQUESTS, e.to_string()));
            return Ok(findings);
        }
    };
    let revision = match snapshot.cursor {
        crate::model::cursor::Cursor::Revision(r) => r,
        _ => 0,
    };
    let ids: Vec<String> = snapshot.projects.iter().map(|p| p.id.clone()).collect();
    findings.push(documents("snapshot", Some(revision), snapshot.projects));
    findings.push(check_etag(control_plane, etag.as_deref(), revision).await);
    findings.push(empty_poll(control_plane, revision).await);
    findings.push(batch_behind(control_plane, revision).await);
    findings.push(cursor_ahead(control_plane, revision).await);
    findings.extend(projects(control_plane, ids.first().map(String::as_str)).await);
    Ok(findings)
}

/// `ETag: "N"` on the snapshot, and `304` for `If-None-Match` with it.
async fn check_etag(control_plane: &ControlPlane, etag: Option<&str>, revision: u64) -> Finding {
    const CHECK: &str = "etag";
    let Some(etag) = etag else {
        return fail(
            CHECK,
            REQUESTS,
            format!("the snapshot has no ETag (expected \"{revision}\"); poll mode refetches it whole every time"),
        );
    };
    match control_plane.snapshot(Some(etag)).await {
        Ok(SnapshotFetch::NotModified) => {
            pass(CHECK, format!("ETag {etag}, 304 for If-None-Match"))
        }
        Ok(SnapshotFetch::Body { .. }) => fail(
            CHECK,
            REQUESTS,
            format!("If-None-Match: {etag} (its own ETag) answered 200, not 304"),
        ),
        Err(e) => fail(
            CHECK,
            REQUESTS,
            format!("If-None-Match: {etag}: {}", chain(&e)),
        ),
    }
}

/// A long poll after the snapshot's revision: `200` with empty lists and
/// the same revision when nothing changed, after holding the poll (at
/// least half its `wait`), or a batch above it.
async fn empty_poll(control_plane: &ControlPlane, revision: u64) -> Finding {
    const CHECK: &str = "long poll";
    let started = std::time::Instant::now();
    let body = match control_plane.changes(revision, false).await {
        Ok(ChangesFetch::Body(body)) => body,
        Ok(ChangesFetch::Gone) => {
            return fail(
                CHECK,
                REQUESTS,
                format!("changes after the snapshot's own revision {revision} answered 410"),
            )
        }
        Err(e) => return fail(CHECK, RULES, chain(&e)),
    };
    let batch = match control_plane.reader().changes(&body) {
        Ok(batch) => batch,
        Err(e) => return fail(CHECK, RULES, e.to_string()),
    };
    let at = cursor_of(&batch.cursor);
    let empty = batch.projects.is_empty() && batch.removed.is_empty();
    let (waited, wait) = (started.elapsed(), control_plane.wait(false));
    match (at, empty) {
        (at, true) if at == revision && !sync::held(waited, wait) => fail(
            CHECK,
            RULES,
            format!(
                "after={revision}&wait={}: answered empty at once ({} ms): a long poll holds until something changes or the wait passes",
                wait.as_secs_f64(),
                waited.as_millis()
            ),
        ),
        (at, true) if at == revision => pass(
            CHECK,
            format!("after={revision}: 200, empty lists, revision {revision}"),
        ),
        (at, false) if at > revision => pass(
            CHECK,
            format!("after={revision}: a batch at revision {at} (it changed meanwhile)"),
        ),
        (at, _) if at < revision => fail(
            CHECK,
            RULES,
            format!("after={revision} answered revision {at}: cursors only grow"),
        ),
        (at, true) => fail(
            CHECK,
            RULES,
            format!("after={revision} answered an empty batch at revision {at}: nothing changed, so the revision stays {revision}"),
        ),
        (at, false) => fail(
            CHECK,
            RULES,
            format!("after={revision} answered changes at the same revision {at}: changes move the revision"),
        ),
    }
}

/// Changes after the revision just before the snapshot's: a batch of the
/// right shape at the snapshot's revision or later, or `410`.
async fn batch_behind(control_plane: &ControlPlane, revision: u64) -> Finding {
    const CHECK: &str = "change batch";
    let Some(after) = revision.checked_sub(1) else {
        return Finding {
            check: CHECK,
            verdict: Verdict::Skipped("the snapshot is at revision 0".into()),
        };
    };
    let body = match control_plane.changes(after, true).await {
        Ok(ChangesFetch::Body(body)) => body,
        Ok(ChangesFetch::Gone) => {
            return Finding {
                check: CHECK,
                verdict: Verdict::Skipped(format!(
                    "after={after} answered 410: its change log does not reach back one revision"
                )),
            }
        }
        Err(e) => return fail(CHECK, RULES, chain(&e)),
    };
    let batch = match control_plane.reader().changes(&body) {
        Ok(batch) => batch,
        Err(e) => return fail(CHECK, RULES, e.to_string()),
    };
    let at = cursor_of(&batch.cursor);
    if at < revision {
        return fail(
            CHECK,
            RULES,
            format!("after={after} answered revision {at}, below the snapshot's {revision}"),
        );
    }
    if batch.projects.is_empty() && batch.removed.is_empty() {
        // Revision `revision` is a change after `after`: a batch that
        // moves the cursor over it naming nothing has lost it (as one that
        // forgot its log and answers 200 instead of 410 would).
        return fail(
            CHECK,
            REQUESTS,
            format!(
                "after={after} answered revision {at} naming no change; a batch names what \
                 changed after the cursor, or the answer is 410 when that is forgotten"
            ),
        );
    }
    let removed = batch.removed.len();
    let finding = documents(CHECK, Some(at), batch.projects);
    match finding.verdict {
        Verdict::Pass(detail) => pass(CHECK, format!("after={after}: {detail}, {removed} removed")),
        _ => finding,
    }
}

/// A cursor the control plane never gave (ahead of it, as after a
/// restart without its change log) gets `410`.
async fn cursor_ahead(control_plane: &ControlPlane, revision: u64) -> Finding {
    const CHECK: &str = "410";
    let ahead = revision.saturating_add(AHEAD);
    match control_plane.changes(ahead, true).await {
        Ok(ChangesFetch::Gone) => pass(CHECK, format!("after={ahead} (ahead of it): 410")),
        Ok(ChangesFetch::Body(body)) => {
            let at = control_plane
                .reader()
                .changes(&body)
                .map(|b| cursor_of(&b.cursor).to_string())
                .unwrap_or_else(|e| e.to_string());
            fail(
                CHECK,
                REQUESTS,
                format!("after={ahead}, a cursor it never gave, answered 200 at revision {at}; answer 410 so the sidecar takes a full snapshot"),
            )
        }
        Err(e) => fail(CHECK, REQUESTS, format!("after={ahead}: {}", chain(&e))),
    }
}

/// `GET /v1/projects/{id}`: a project it holds, and one it does not.
async fn projects(control_plane: &ControlPlane, held: Option<&str>) -> Vec<Finding> {
    const CHECK: &str = "project";
    const MISSING: &str = "unknown project";
    let mut findings = Vec::new();
    match held {
        None => findings.push(Finding {
            check: CHECK,
            verdict: Verdict::Skipped("the snapshot holds no project".into()),
        }),
        Some(id) => findings.push(match control_plane.project(id).await {
            Ok(Some(p)) if p.id == id => {
                let finding = documents(CHECK, p.revision, vec![p]);
                match finding.verdict {
                    Verdict::Pass(_) => {
                        pass(CHECK, format!("/v1/projects/{id}: 200, its document"))
                    }
                    _ => finding,
                }
            }
            Ok(Some(p)) => fail(
                CHECK,
                REQUESTS,
                format!("/v1/projects/{id} answered the document of {:?}", p.id),
            ),
            Ok(None) => fail(
                CHECK,
                REQUESTS,
                format!("/v1/projects/{id} answered 404 for a project of the snapshot"),
            ),
            Err(e) => fail(CHECK, REQUESTS, format!("/v1/projects/{id}: {}", chain(&e))),
        }),
    }
    findings.push(match control_plane.project(NO_SUCH_PROJECT).await {
        Ok(None) => pass(MISSING, format!("/v1/projects/{NO_SUCH_PROJECT}: 404")),
        Ok(Some(_)) => fail(
            MISSING,
            REQUESTS,
            format!(
                "/v1/projects/{NO_SUCH_PROJECT} answered 200; a project it does not hold is 404"
            ),
        ),
        Err(e) => fail(
            MISSING,
            REQUESTS,
            format!(
                "/v1/projects/{NO_SUCH_PROJECT}: {}; a project it does not hold is 404",
                chain(&e)
            ),
        ),
    });
    findings
}

fn cursor_of(cursor: &crate::model::cursor::Cursor) -> u64 {
    match cursor {
        crate::model::cursor::Cursor::Revision(r) => *r,
        _ => 0,
    }
}
