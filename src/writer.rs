//! The writer task: the only place the store changes.
//!
//! Sources send fetched updates here over a channel and wait for the
//! outcome; the task applies them one at a time through [`StoreWriter`],
//! logs one line per outcome and per rejection, records rejection and
//! propagation metrics, tells the cache writer that something changed, and
//! runs the scheduler.
//!
//! # Scheduled changes
//!
//! One min-heap of `(due instant, project id)` for the whole sidecar, fed
//! by every accepted document with scheduled changes still to come. The
//! task sleeps until the earliest instant (re-reading the wall clock at
//! least every second, so a forward jump of the clock is noticed), then
//! publishes a new snapshot of each due project with its overlays merged.
//! Entries are checked against the project as served when they pop, so a
//! newer document (which brings its own entries) or a removal needs no
//! bookkeeping: stale entries find nothing to do. Applying never goes
//! backwards: a wall clock that jumps back cannot un-apply a change.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::store::{ApplyError, ApplyOptions, ApplyReport, StoreWriter, Update};
use crate::timestamp::format_rfc3339;

/// The longest the scheduler sleeps before looking at the wall clock again.
const MAX_SCHEDULER_SLEEP: Duration = Duration::from_secs(1);

/// Why an update was not applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Refused(#[from] ApplyError),
    #[error("the writer task has stopped")]
    Stopped,
}

/// The origin of updates loaded from the last-known-good cache.
pub const ORIGIN_CACHE: &str = "cache";

enum Command {
    Apply {
        update: Update,
        origin: &'static str,
        allow_mass_removal: bool,
        reply: oneshot::Sender<Result<ApplyReport, ApplyError>>,
    },
    /// Apply whatever scheduled changes are due now (the clock may be a
    /// manual one); answers how many entries were applied.
    Tick(oneshot::Sender<usize>),
}

/// Sends updates to the writer task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
}

impl WriterHandle {
    /// Applies `update` and returns what it changed. `origin` names the
    /// fetch in logs (`file`, `snapshot`, `changes`, `refresh`, `cache`).
    pub async fn apply(
        &self,
        update: Update,
        origin: &'static str,
        allow_mass_removal: bool,
    ) -> Result<ApplyReport, WriteError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Apply {
            update,
            origin,
            allow_mass_removal,
            reply,
        };
        self.tx
            .send(command)
            .await
            .map_err(|_| WriteError::Stopped)?;
        Ok(answer.await.map_err(|_| WriteError::Stopped)??)
    }

    /// Applies the scheduled changes due now, without waiting for the
    /// timer; returns how many entries took effect.
    pub async fn tick(&self) -> Result<usize, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Tick(reply))
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Apply { origin, .. } => {
                f.debug_struct("Apply").field("origin", origin).finish()
            }
            Command::Tick(_) => f.write_str("Tick"),
        }
    }
}

/// The writer task's state.
struct Writer {
    store: StoreWriter,
    clock: SharedClock,
    persist: Option<Arc<Notify>>,
    metrics: Arc<Metrics>,
    due: BinaryHeap<Reverse<(SystemTime, String)>>,
}

/// Starts the writer task. It ends when every handle is dropped.
/// `persist` is notified after every change (except loading the cache
/// itself), for the last-known-good cache.
pub fn spawn(
    store: StoreWriter,
    clock: SharedClock,
    persist: Option<Arc<Notify>>,
    metrics: Arc<Metrics>,
) -> (WriterHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<Command>(64);
    let writer = Writer {
        store,
        clock,
        persist,
        metrics,
        due: BinaryHeap::new(),
    };
    (WriterHandle { tx }, tokio::spawn(writer.run(rx)))
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            let sleep = self.due.peek().map(|Reverse((at, _))| {
                at.duration_since(self.clock.now())
                    .unwrap_or_default()
                    .min(MAX_SCHEDULER_SLEEP)
            });
            let command = tokio::select! {
                command = rx.recv() => match command {
                    Some(c) => c,
                    None => return,
                },
                _ = sleep_for(sleep) => {
                    self.apply_due();
                    continue;
                }
            };
            match command {
                Command::Apply {
                    update,
                    origin,
                    allow_mass_removal,
                    reply,
                } => {
                    let result = self.apply(update, origin, allow_mass_removal);
                    let _ = reply.send(result);
                }
                Command::Tick(reply) => {
                    let _ = reply.send(self.apply_due());
                }
            }
        }
    }

    fn apply(
        &mut self,
        update: Update,
        origin: &'static str,
        allow: bool,
    ) -> Result<ApplyReport, ApplyError> {
        let now = self.clock.now();
        let snapshot = matches!(update, Update::Snapshot(_));
        let result = self.store.apply(
            update,
            ApplyOptions {
                now,
                allow_mass_removal: allow,
            },
        );
        if snapshot {
            // The whole parsed snapshot was just freed.
            crate::memory::release();
        }
        log_outcome(origin, &result);
        if let Ok(report) = &result {
            for r in &report.rejected {
                self.metrics.rejected(r.reason);
            }
            if origin != ORIGIN_CACHE {
                for published in &report.published {
                    self.metrics.propagated(*published, now);
                }
                if report.changed() > 0 {
                    if let Some(persist) = &self.persist {
                        persist.notify_one();
                    }
                }
            }
            for (id, at) in &report.scheduled {
                self.due.push(Reverse((*at, id.clone())));
            }
        }
        result
    }

    /// Publishes every project whose next scheduled change is due.
    fn apply_due(&mut self) -> usize {
        let now = self.clock.now();
        let mut applied = 0;
        while let Some(Reverse((at, _))) = self.due.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, id))) = self.due.pop() else {
                break;
            };
            let outcome = self.store.apply_due(&id, now);
            if outcome.applied > 0 {
                applied += outcome.applied;
                tracing::info!(project = %id, entries = outcome.applied, "scheduled change applied");
            }
            if let Some(next) = outcome.next_due {
                self.due.push(Reverse((next, id)));
            }
        }
        if applied > 0 {
            self.metrics.scheduled_applied(applied as u64);
            if let Some(persist) = &self.persist {
                persist.notify_one();
            }
        }
        applied
    }
}

async fn sleep_for(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn log_outcome(origin: &'static str, result: &Result<ApplyReport, ApplyError>) {
    match result {
        Ok(report) => {
            for r in &report.rejected {
                tracing::warn!(
                    origin,
                    project = %r.project,
                    revision = ?r.revision,
                    reason = r.reason.as_str(),
                    at = %format_rfc3339(r.at),
                    message = %r.message,
                    "project document rejected; last good revision keeps serving"
                );
            }
            if report.changed() > 0 || !report.rejected.is_empty() {
                tracing::info!(
                    origin,
                    added = report.added,
                    updated = report.updated,
                    removed = report.removed,
                    rejected = report.rejected.len(),
                    stale = report.stale,
                    cursor = report.cursor,
                    "update applied"
                );
            } else {
                tracing::debug!(
                    origin,
                    unchanged = report.unchanged,
                    stale = report.stale,
                    cursor = report.cursor,
                    "update changed nothing"
                );
            }
        }
        Err(err) => tracing::error!(origin, error = %err, "update refused whole; nothing changed"),
    }
}
