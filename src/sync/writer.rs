//! The writer: the only place the store changes, on its own thread.
//!
//! Sources send fetched bodies here and wait for the outcome; the writer
//! parses them, applies them one at a time through [`StoreWriter`], logs
//! one line per outcome and per rejection, records rejection and
//! propagation metrics, tells the cache writer that something changed, and
//! runs the scheduler. Parsing, validating and rendering a large snapshot
//! takes a second or more, so all of it runs on a dedicated OS thread
//! (`env-sidecar-writer`), never on a runtime worker that serves requests.
//! Parsing here too (not on another thread) keeps a snapshot's transient
//! documents and the projects built from them in this thread's own
//! allocator arena: request threads never wait on its lock, and the trim
//! after a full snapshot finds the freed documents in one place.
//!
//! # Scheduled changes
//!
//! One min-heap of `(due instant, project id)` for the whole sidecar, fed
//! by every accepted document with scheduled changes still to come. The
//! thread waits for a command or until the earliest instant (re-reading the
//! wall clock at least every second, so a forward jump of the clock is
//! noticed), then publishes a new snapshot of each due project with its
//! overlays merged. Entries are checked against the project as served when
//! they pop, so a newer document (which brings its own entries) or a
//! removal needs no bookkeeping: stale entries find nothing to do. Applying
//! never goes backwards: a wall clock that jumps back cannot un-apply a
//! change.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, Notify};

use super::memory;
use crate::model::clock::SharedClock;
use crate::model::timestamp::format_rfc3339;
use crate::model::trust::Trust;
use crate::store::{ApplyError, ApplyReport, Contents, StoreWriter, Update};
use crate::telemetry::Metrics;

/// The longest the scheduler waits before looking at the wall clock again.
const MAX_SCHEDULER_SLEEP: Duration = Duration::from_secs(1);

/// Why an update was not applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Refused(#[from] ApplyError),
    #[error("the writer has stopped")]
    Stopped,
}

enum Command {
    /// Parse (on the writer thread) and apply; the job answers through
    /// its own channel.
    Apply {
        /// The origin's name, for `Debug`.
        origin: &'static str,
        job: Box<dyn FnOnce(&mut WriterThread) + Send>,
    },
    /// Apply whatever scheduled changes are due now (the clock may be a
    /// manual one); answers how many entries were applied.
    Tick(oneshot::Sender<usize>),
    /// Check documents against these keys from now on.
    Trust(Arc<Trust>),
}

/// Sends updates to the writer. Cheap to clone; the writer stops once
/// every handle is dropped.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
}

impl WriterHandle {
    /// Applies `update` and returns what it changed.
    pub async fn apply(&self, update: Update) -> Result<ApplyReport, WriteError> {
        let name = update.origin.as_str();
        let parsed = self
            .parse_and_apply(name, move || Ok::<_, std::convert::Infallible>(update))
            .await?;
        match parsed {
            Ok(applied) => Ok(applied?),
            Err(never) => match never {},
        }
    }

    /// Runs `parse` on the writer thread and applies the update it gives
    /// (`origin` names it until then): the outer error says the writer is
    /// gone, the middle one that the body did not parse (nothing changed),
    /// the inner one that the update was refused whole.
    pub async fn parse_and_apply<E: Send + 'static>(
        &self,
        origin: &'static str,
        parse: impl FnOnce() -> Result<Update, E> + Send + 'static,
    ) -> Result<Result<Result<ApplyReport, ApplyError>, E>, WriteError> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(move |writer: &mut WriterThread| {
            let result = parse().map(|update| writer.apply(update));
            let _ = reply.send(result);
        });
        self.tx
            .send(Command::Apply { origin, job })
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)
    }

    /// From now on, documents are checked against `trust` (the key files
    /// changed). Queued behind whatever was sent before.
    pub fn set_trust(&self, trust: Arc<Trust>) -> Result<(), WriteError> {
        self.tx
            .send(Command::Trust(trust))
            .map_err(|_| WriteError::Stopped)
    }

    /// Applies the scheduled changes due now, without waiting for the
    /// timer; returns how many entries took effect.
    pub async fn tick(&self) -> Result<usize, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Tick(reply))
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
            Command::Trust(_) => f.write_str("Trust"),
        }
    }
}

/// The writer's state.
pub struct WriterThread {
    store: StoreWriter,
    clock: SharedClock,
    persist: Option<Arc<Notify>>,
    /// Notified after every change or rejection, for the node report.
    report: Option<Arc<Notify>>,
    metrics: Arc<Metrics>,
    due: BinaryHeap<Reverse<(SystemTime, String)>>,
}

/// The running writer thread; [`Stopped::wait`] resolves once it ended.
#[derive(Debug)]
pub struct Stopped(oneshot::Receiver<()>);

impl Stopped {
    /// Waits until the thread has ended (all handles dropped, queue
    /// drained).
    pub async fn wait(self) {
        let _ = self.0.await;
    }
}

/// Who the writer tells about what it did.
#[derive(Debug, Default, Clone)]
pub struct Listeners {
    /// Notified after every change (except loading the cache itself), for
    /// the last-known-good cache.
    pub persist: Option<Arc<Notify>>,
    /// Notified after every change or rejection (the cache load
    /// included), for the node report.
    pub report: Option<Arc<Notify>>,
}

/// Starts the writer thread.
pub fn spawn(
    store: StoreWriter,
    clock: SharedClock,
    listeners: Listeners,
    metrics: Arc<Metrics>,
) -> std::io::Result<(WriterHandle, Stopped)> {
    let (tx, rx) = mpsc::channel::<Command>();
    let (done_tx, done_rx) = oneshot::channel();
    let writer = WriterThread {
        store,
        clock,
        persist: listeners.persist,
        report: listeners.report,
        metrics,
        due: BinaryHeap::new(),
    };
    std::thread::Builder::new()
        .name("env-sidecar-writer".into())
        .spawn(move || {
            writer.run(rx);
            let _ = done_tx.send(());
        })?;
    Ok((WriterHandle { tx }, Stopped(done_rx)))
}

impl WriterThread {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        loop {
            let wait = self.due.peek().map(|Reverse((at, _))| {
                at.duration_since(self.clock.now())
                    .unwrap_or_default()
                    .min(MAX_SCHEDULER_SLEEP)
            });
            let command = match wait {
                Some(wait) => rx.recv_timeout(wait),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match command {
                Ok(Command::Apply { job, .. }) => job(&mut self),
                Ok(Command::Tick(reply)) => {
                    let _ = reply.send(self.apply_due());
                }
                Ok(Command::Trust(trust)) => self.store.set_trust(trust),
                Err(RecvTimeoutError::Timeout) => {
                    self.apply_due();
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn apply(&mut self, update: Update) -> Result<ApplyReport, ApplyError> {
        let now = self.clock.now();
        let snapshot = matches!(update.contents, Contents::Snapshot(_));
        let (name, live, news) = (
            update.origin.as_str(),
            update.origin.is_live(),
            update.origin.is_news(),
        );
        let cursor = self.store.reader().cursor();
        let result = self.store.apply(update, now);
        if snapshot {
            // The whole parsed snapshot was just freed.
            memory::release();
        }
        log_outcome(name, &result);
        if let Ok(report) = &result {
            for r in &report.rejected {
                self.metrics.rejected(r.reason);
            }
            if live {
                for published in &report.published {
                    self.metrics.propagated(*published, now);
                }
            }
            if news && report.to_persist() {
                self.persist();
            }
            for (id, at) in &report.scheduled {
                self.due.push(Reverse((*at, id.clone())));
            }
            // The report carries the cursor: a node that moved on (even
            // over changes it already had) says so, or `fleet wait`
            // would find it behind a position it has passed.
            if let (Some(notify), true) = (
                &self.report,
                report.to_persist()
                    || !report.rejected.is_empty()
                    || report.stale > 0
                    || report.cursor != cursor,
            ) {
                notify.notify_one();
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
            self.persist();
        }
        applied
    }

    fn persist(&self) {
        if let Some(persist) = &self.persist {
            persist.notify_one();
        }
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
            if report.to_persist() || !report.rejected.is_empty() {
                tracing::info!(
                    origin,
                    added = report.added,
                    updated = report.updated,
                    removed = report.removed,
                    rejected = report.rejected.len(),
                    stale = report.stale,
                    resealed = report.resealed,
                    cursor = %report.cursor,
                    "update applied"
                );
            } else {
                tracing::debug!(
                    origin,
                    unchanged = report.unchanged,
                    stale = report.stale,
                    cursor = %report.cursor,
                    "update changed nothing"
                );
            }
        }
        Err(err) => tracing::error!(origin, error = %err, "update refused whole; nothing changed"),
    }
}
