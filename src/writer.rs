//! The writer task: the only place updates are applied to the store.
//!
//! Sources send fetched updates here over a channel and wait for the
//! outcome; the task applies them one at a time through [`StoreWriter`],
//! logs one line per outcome and per rejection, and owns the follow-up work
//! that must happen after an apply (later: cache persistence, schedules).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::store::{ApplyError, ApplyOptions, ApplyReport, StoreWriter, Update};
use crate::timestamp::format_rfc3339;

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

struct Command {
    update: Update,
    origin: &'static str,
    allow_mass_removal: bool,
    reply: oneshot::Sender<Result<ApplyReport, ApplyError>>,
}

/// Sends updates to the writer task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
}

impl WriterHandle {
    /// Applies `update` and returns what it changed. `origin` names the
    /// fetch in logs (`file`, `snapshot`, `changes`, `project`, `cache`).
    pub async fn apply(
        &self,
        update: Update,
        origin: &'static str,
        allow_mass_removal: bool,
    ) -> Result<ApplyReport, WriteError> {
        let (reply, answer) = oneshot::channel();
        let command = Command {
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
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Command")
            .field("origin", &self.origin)
            .finish()
    }
}

/// Starts the writer task. It ends when every handle is dropped.
/// `persist` is notified after every apply that changed something (except
/// loading the cache itself), for the last-known-good cache.
pub fn spawn(
    mut writer: StoreWriter,
    clock: SharedClock,
    persist: Option<Arc<Notify>>,
    metrics: Arc<Metrics>,
) -> (WriterHandle, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Command>(64);
    let task = tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            let opts = ApplyOptions {
                now: clock.now(),
                allow_mass_removal: cmd.allow_mass_removal,
            };
            let result = writer.apply(cmd.update, opts);
            log_outcome(cmd.origin, &result);
            if let Ok(report) = &result {
                for r in &report.rejected {
                    metrics.rejected(r.reason);
                }
                if cmd.origin != ORIGIN_CACHE {
                    for published in &report.published {
                        metrics.propagated(*published, opts.now);
                    }
                }
            }
            if let (Ok(report), Some(persist)) = (&result, &persist) {
                if report.changed() > 0 && cmd.origin != ORIGIN_CACHE {
                    persist.notify_one();
                }
            }
            let _ = cmd.reply.send(result);
        }
    });
    (WriterHandle { tx }, task)
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
