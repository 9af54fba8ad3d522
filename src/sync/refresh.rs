//! Forced refresh (`POST /admin/refresh`): the operator asks the source to
//! fetch now and waits for the outcome.
//!
//! Concurrent requests for the same thing coalesce: the first starts one
//! fetch (in its own task, so a caller that hangs up cancels nothing) and
//! every caller that arrives while it runs waits for the same outcome.

use crate::model::origin::MassRemoval;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::SourceCommand;
use crate::model::cursor::Cursor;
use crate::store::{ApplyReport, Rejection};
use crate::telemetry::RefreshLabel;

/// What to fetch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A full snapshot (without `If-None-Match`), a re-read of the file, or
    /// a full load from Redis.
    All,
    /// One project.
    Project(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefreshRequest {
    pub scope: Scope,
    /// `Allowed` lets this fetch past the blast-radius guard.
    pub mass_removal: MassRemoval,
}

/// How a forced refresh went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshResult {
    /// Something was added, updated or removed.
    Updated,
    NotModified,
    /// Documents were rejected and nothing changed, or the fetch was
    /// refused whole.
    Rejected,
    /// The fetch failed.
    Error,
}

impl RefreshResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshResult::Updated => "updated",
            RefreshResult::NotModified => "not_modified",
            RefreshResult::Rejected => "rejected",
            RefreshResult::Error => "error",
        }
    }
}

impl From<RefreshResult> for RefreshLabel {
    fn from(r: RefreshResult) -> RefreshLabel {
        match r {
            RefreshResult::Updated => RefreshLabel::Updated,
            RefreshResult::NotModified => RefreshLabel::NotModified,
            RefreshResult::Rejected => RefreshLabel::Rejected,
            RefreshResult::Error => RefreshLabel::Error,
        }
    }
}

/// Where a refresh found what it refreshes, and where it left it: the
/// store's cursor (scope all), or the project's revision (scope project).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Cursor(Cursor),
    Revision(u64),
}

/// As the answer spells it: a cursor as a cursor does, a revision as a
/// number.
impl serde::Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self {
            Position::Cursor(cursor) => cursor.serialize(ser),
            Position::Revision(revision) => ser.serialize_u64(*revision),
        }
    }
}

/// The outcome of `POST /admin/refresh` (the server renders it).
#[derive(Debug, Clone)]
pub struct RefreshOutcome {
    pub result: RefreshResult,
    /// Before and after; `None` where there was none (a project not
    /// served).
    pub revision_before: Option<Position>,
    pub revision_after: Option<Position>,
    /// Projects added, updated or removed.
    pub changed: usize,
    pub rejected: Vec<Rejection>,
    /// Why the fetch failed or was refused, rendered for people.
    pub error: Option<String>,
}

impl RefreshOutcome {
    /// From an apply: `updated` if anything changed, else `rejected` if a
    /// document was rejected, else `not_modified`.
    pub fn applied(
        report: &ApplyReport,
        before: Option<Position>,
        after: Option<Position>,
    ) -> RefreshOutcome {
        let result = if report.changed() > 0 {
            RefreshResult::Updated
        } else if !report.rejected.is_empty() {
            RefreshResult::Rejected
        } else {
            RefreshResult::NotModified
        };
        RefreshOutcome {
            result,
            revision_before: before,
            revision_after: after,
            changed: report.changed(),
            rejected: report.rejected.clone(),
            error: None,
        }
    }

    /// The fetch was refused whole (the blast-radius guard).
    pub fn refused(message: String, revision: Option<Position>) -> RefreshOutcome {
        RefreshOutcome {
            result: RefreshResult::Rejected,
            ..RefreshOutcome::failed(message, revision)
        }
    }

    /// The fetch failed.
    pub fn failed(message: String, revision: Option<Position>) -> RefreshOutcome {
        RefreshOutcome {
            result: RefreshResult::Error,
            revision_before: revision,
            revision_after: revision,
            changed: 0,
            rejected: Vec::new(),
            error: Some(message),
        }
    }
}

type Flight = watch::Receiver<Option<Arc<RefreshOutcome>>>;

/// The operator plane's side: coalesces and forwards to the source.
#[derive(Debug)]
pub struct Refresher {
    commands: mpsc::Sender<SourceCommand>,
    inflight: Arc<Mutex<HashMap<RefreshRequest, Flight>>>,
    /// How long a caller waits for the outcome.
    timeout: Duration,
}

impl Refresher {
    /// A refresher that hands its fetches to the source listening on
    /// `commands`.
    pub fn new(commands: mpsc::Sender<SourceCommand>, timeout: Duration) -> Refresher {
        Refresher {
            commands,
            inflight: Arc::default(),
            timeout,
        }
    }

    pub async fn refresh(&self, request: RefreshRequest) -> Arc<RefreshOutcome> {
        let mut flight = {
            let mut inflight = crate::lock::lock(&self.inflight);
            match inflight.get(&request) {
                Some(flight) => flight.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(request.clone(), rx.clone());
                    tokio::spawn(fly(
                        self.commands.clone(),
                        self.inflight.clone(),
                        request,
                        tx,
                        self.timeout,
                    ));
                    rx
                }
            }
        };
        loop {
            if let Some(outcome) = flight.borrow_and_update().clone() {
                return outcome;
            }
            if flight.changed().await.is_err() {
                return Arc::new(RefreshOutcome::failed(
                    "the refresh was abandoned".into(),
                    None,
                ));
            }
        }
    }
}

async fn fly(
    commands: mpsc::Sender<SourceCommand>,
    inflight: Arc<Mutex<HashMap<RefreshRequest, Flight>>>,
    request: RefreshRequest,
    done: watch::Sender<Option<Arc<RefreshOutcome>>>,
    timeout: Duration,
) {
    let (reply, answer) = oneshot::channel();
    let command = SourceCommand::Refresh(request.clone(), reply);
    let outcome = match commands.send(command).await {
        Err(_) => RefreshOutcome::failed("the source has stopped".into(), None),
        Ok(()) => match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => RefreshOutcome::failed("the source dropped the refresh".into(), None),
            Err(_) => RefreshOutcome::failed(
                format!("no outcome within {timeout:?}; the fetch may still complete"),
                None,
            ),
        },
    };
    // Leave the table first: a request arriving from now on starts a new fetch.
    crate::lock::lock(&inflight).remove(&request);
    done.send_replace(Some(Arc::new(outcome)));
}
