//! The file source: a snapshot body (`{"revision": N, "projects": [...]}`)
//! in a local file, read at start and re-read whenever its size or
//! modification time changes (checked every `poll_interval`, or at once
//! when asked).
//!
//! A missing, unreadable or malformed file is logged and changes nothing
//! that is served; each distinct problem is logged once, not every poll.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use crate::clock::SharedClock;
use crate::metrics::{Metrics, SyncKind, SyncResult};
use crate::refresh::{RefreshJob, RefreshOutcome, RefreshRequest, Scope};
use crate::status::SyncStatus;
use crate::store::{ApplyReport, Store, Update};
use crate::wire::{parse_snapshot, SnapshotBody};
use crate::writer::{WriteError, WriterHandle};

/// Size and modification time: enough to notice an edit or a replace.
type Fingerprint = (u64, Option<SystemTime>);

#[derive(Debug)]
pub struct FileSource {
    pub path: PathBuf,
    pub poll_interval: Duration,
    pub writer: WriterHandle,
    pub status: Arc<SyncStatus>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
}

/// Why a read of the file did not apply.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Malformed { path: String, message: String },
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl FileSource {
    /// Runs until `shutdown` flips; `check_now` forces an immediate check;
    /// refresh jobs re-read the file at once.
    pub async fn run(
        self,
        check_now: Arc<Notify>,
        mut jobs: mpsc::Receiver<RefreshJob>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut seen: Option<Fingerprint> = None;
        let mut last_problem: Option<String> = None;
        loop {
            let fingerprint = self.fingerprint().await;
            if fingerprint.is_none() || fingerprint != seen {
                match self.read_and_apply(false).await {
                    Ok(_) => last_problem = None,
                    Err(e) => {
                        let text = e.to_string();
                        if last_problem.as_deref() != Some(text.as_str()) {
                            tracing::warn!(path = %self.path.display(), error = %text, "snapshot file not applied; serving what was loaded before");
                        }
                        last_problem = Some(text);
                    }
                }
                seen = fingerprint;
            } else if last_problem.is_none() {
                // Unchanged and last read fine: what we serve is what the
                // file says, so this counts as fresh contact (staleness).
                self.status.baseline(self.clock.now());
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll_interval) => {}
                _ = check_now.notified() => seen = None,
                Some((request, reply)) = jobs.recv() => {
                    let _ = reply.send(self.forced(request).await);
                    seen = self.fingerprint().await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// A forced refresh: re-read the file now, whole or for one project.
    pub async fn forced(&self, request: RefreshRequest) -> RefreshOutcome {
        let allow = request.allow_mass_removal;
        match request.scope {
            Scope::All => {
                let before = Some(self.store.cursor());
                match self.read_and_apply(allow).await {
                    Ok(report) => {
                        RefreshOutcome::applied(&report, before, Some(self.store.cursor()))
                    }
                    Err(FileError::Write(WriteError::Refused(e))) => {
                        RefreshOutcome::refused(e.to_string(), before)
                    }
                    Err(e) => RefreshOutcome::failed(e.to_string(), before),
                }
            }
            Scope::Project(id) => {
                let before = self.store.project(&id).map(|p| p.revision());
                let body = match self.read().await {
                    Ok(body) => body,
                    Err(e) => {
                        self.status.error(self.clock.now(), e.to_string());
                        return RefreshOutcome::failed(e.to_string(), before);
                    }
                };
                let document = body.projects.into_iter().find(|p| match p {
                    Ok(doc) => doc.id == id,
                    Err(u) => u.id == id,
                });
                let update = Update::Project {
                    id: id.clone(),
                    document,
                };
                match self.writer.apply(update, "refresh", allow).await {
                    Ok(report) => {
                        self.status.success(
                            self.clock.now(),
                            format!("re-read {id} from {}", self.path.display()),
                        );
                        RefreshOutcome::applied(
                            &report,
                            before,
                            self.store.project(&id).map(|p| p.revision()),
                        )
                    }
                    Err(WriteError::Refused(e)) => RefreshOutcome::refused(e.to_string(), before),
                    Err(e) => RefreshOutcome::failed(e.to_string(), before),
                }
            }
        }
    }

    /// Reads, parses and applies the file now.
    pub async fn read_and_apply(&self, allow_mass_removal: bool) -> Result<ApplyReport, FileError> {
        let path = self.path.display().to_string();
        let result: Result<ApplyReport, FileError> = async {
            let body = self.read().await?;
            Ok(self
                .writer
                .apply(Update::Snapshot(body), "file", allow_mass_removal)
                .await?)
        }
        .await;
        let now = self.clock.now();
        match &result {
            Ok(report) => self.status.success(
                now,
                format!(
                    "read {path}: {} changed, {} rejected",
                    report.changed(),
                    report.rejected.len()
                ),
            ),
            Err(e) => self.status.error(now, e.to_string()),
        }
        result
    }

    /// Reads and parses the file (counted as a `snapshot` sync request).
    async fn read(&self) -> Result<SnapshotBody, FileError> {
        let path = self.path.display().to_string();
        let started = Instant::now();
        let result = async {
            let bytes = tokio::fs::read(&self.path)
                .await
                .map_err(|e| FileError::Read {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            // Large snapshots take a while to parse: keep it off the
            // threads that serve requests.
            tokio::task::spawn_blocking(move || parse_snapshot(&bytes))
                .await
                .map_err(|e| e.to_string())
                .and_then(|parsed| parsed.map_err(|e| e.to_string()))
                .map_err(|message| FileError::Malformed {
                    path: path.clone(),
                    message,
                })
        }
        .await;
        let outcome = if result.is_ok() {
            SyncResult::Ok
        } else {
            SyncResult::Error
        };
        self.metrics
            .sync_request(SyncKind::Snapshot, outcome, started.elapsed());
        result
    }

    async fn fingerprint(&self) -> Option<Fingerprint> {
        let meta = tokio::fs::metadata(&self.path).await.ok()?;
        Some((meta.len(), meta.modified().ok()))
    }
}
