//! Forced refresh (`POST /admin/refresh`): the operator asks the source to
//! fetch now and waits for the outcome.
//!
//! Concurrent requests for the same thing coalesce: the first starts one
//! fetch (in its own task, so a caller that hangs up cancels nothing) and
//! every caller that arrives while it runs waits for the same outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::server::views::RejectionView;
use crate::store::ApplyReport;

/// What to fetch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A full snapshot (without `If-None-Match`), or a re-read of the file.
    All,
    /// One project.
    Project(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefreshRequest {
    pub scope: Scope,
    /// Lets this fetch past the blast-radius guard.
    pub allow_mass_removal: bool,
}

/// The answer of `POST /admin/refresh`.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshOutcome {
    /// `updated`, `not_modified`, `rejected` or `error`.
    pub result: &'static str,
    /// Snapshot cursor (scope all) or project revision (scope project)
    /// before and after; `null` where there was none.
    pub revision_before: Option<u64>,
    pub revision_after: Option<u64>,
    /// Projects added, updated or removed.
    pub changed: usize,
    pub rejected: Vec<RejectionView>,
    pub error: Option<String>,
}

impl RefreshOutcome {
    /// From an apply: `updated` if anything changed, else `rejected` if a
    /// document was rejected, else `not_modified`.
    pub fn applied(
        report: &ApplyReport,
        before: Option<u64>,
        after: Option<u64>,
    ) -> RefreshOutcome {
        let result = if report.changed() > 0 {
            "updated"
        } else if !report.rejected.is_empty() {
            "rejected"
        } else {
            "not_modified"
        };
        RefreshOutcome {
            result,
            revision_before: before,
            revision_after: after,
            changed: report.changed(),
            rejected: report.rejected.iter().map(RejectionView::from).collect(),
            error: None,
        }
    }

    /// The fetch was refused whole (the blast-radius guard).
    pub fn refused(message: String, revision: Option<u64>) -> RefreshOutcome {
        RefreshOutcome {
            result: "rejected",
            error: Some(message),
            ..RefreshOutcome::failed(String::new(), revision)
        }
    }

    /// The fetch failed.
    pub fn failed(message: String, revision: Option<u64>) -> RefreshOutcome {
        RefreshOutcome {
            result: "error",
            revision_before: revision,
            revision_after: revision,
            changed: 0,
            rejected: Vec::new(),
            error: Some(message),
        }
    }
}

/// A refresh for the source to carry out.
pub type RefreshJob = (RefreshRequest, oneshot::Sender<RefreshOutcome>);

type Flight = watch::Receiver<Option<Arc<RefreshOutcome>>>;

/// The operator plane's side: coalesces and forwards to the source.
#[derive(Debug)]
pub struct Refresher {
    jobs: mpsc::Sender<RefreshJob>,
    inflight: Arc<Mutex<HashMap<RefreshRequest, Flight>>>,
    /// How long a caller waits for the outcome.
    timeout: Duration,
}

impl Refresher {
    /// A refresher and the receiving end the source listens on.
    pub fn new(timeout: Duration) -> (Refresher, mpsc::Receiver<RefreshJob>) {
        let (jobs, rx) = mpsc::channel(16);
        (
            Refresher {
                jobs,
                inflight: Arc::default(),
                timeout,
            },
            rx,
        )
    }

    pub async fn refresh(&self, request: RefreshRequest) -> Arc<RefreshOutcome> {
        let mut flight = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get(&request) {
                Some(flight) => flight.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(request.clone(), rx.clone());
                    tokio::spawn(fly(
                        self.jobs.clone(),
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
    jobs: mpsc::Sender<RefreshJob>,
    inflight: Arc<Mutex<HashMap<RefreshRequest, Flight>>>,
    request: RefreshRequest,
    done: watch::Sender<Option<Arc<RefreshOutcome>>>,
    timeout: Duration,
) {
    let (reply, answer) = oneshot::channel();
    let outcome = match jobs.send((request.clone(), reply)).await {
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
    inflight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&request);
    done.send_replace(Some(Arc::new(outcome)));
}
