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

use tokio::sync::{watch, Notify};

use crate::clock::SharedClock;
use crate::status::SyncStatus;
use crate::store::{ApplyReport, Update};
use crate::wire::parse_snapshot;
use crate::writer::{WriteError, WriterHandle};

/// Size and modification time: enough to notice an edit or a replace.
type Fingerprint = (u64, Option<SystemTime>);

#[derive(Debug)]
pub struct FileSource {
    pub path: PathBuf,
    pub poll_interval: Duration,
    pub writer: WriterHandle,
    pub status: Arc<SyncStatus>,
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
    /// Runs until `shutdown` flips; `check_now` forces an immediate check.
    pub async fn run(self, check_now: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
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
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll_interval) => {}
                _ = check_now.notified() => seen = None,
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Reads, parses and applies the file now.
    pub async fn read_and_apply(&self, allow_mass_removal: bool) -> Result<ApplyReport, FileError> {
        let path = self.path.display().to_string();
        let result: Result<ApplyReport, FileError> = async {
            let bytes = tokio::fs::read(&self.path)
                .await
                .map_err(|e| FileError::Read {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            let body = parse_snapshot(&bytes).map_err(|e| FileError::Malformed {
                path: path.clone(),
                message: e.to_string(),
            })?;
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

    async fn fingerprint(&self) -> Option<Fingerprint> {
        let meta = tokio::fs::metadata(&self.path).await.ok()?;
        Some((meta.len(), meta.modified().ok()))
    }
}
