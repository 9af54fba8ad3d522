//! The file source: a snapshot body (`{"revision": N, "projects": [...]}`)
//! in a local file, read at start and re-read whenever its size or
//! modification time changes (checked every `poll_interval`, or at once
//! when asked).
//!
//! A missing, unreadable or malformed file changes nothing that is served;
//! [`run`](super::run) logs each distinct problem once and retries.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::refresh::{RefreshRequest, Scope};
use super::{summary, Contact, FetchError, Origin, Source, Stepped, SyncContext, SyncError};
use crate::model::wire::{parse_snapshot, SnapshotBody};
use crate::store::{ApplyReport, Update};
use crate::telemetry::{SyncKind, SyncResult};

/// Size and modification time: enough to notice an edit or a replace.
type Fingerprint = (u64, Option<SystemTime>);

#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    poll_interval: Duration,
    /// The fingerprint of the last read, and whether it applied.
    seen: Option<(Fingerprint, bool)>,
}

impl FileSource {
    pub fn new(path: PathBuf, poll_interval: Duration) -> FileSource {
        FileSource {
            path,
            poll_interval,
            seen: None,
        }
    }

    /// Reads and parses the file (counted as a `snapshot` sync request),
    /// off the threads that serve requests.
    async fn read(&self, ctx: &SyncContext) -> Result<SnapshotBody, FetchError> {
        let started = Instant::now();
        let result = async {
            let bytes = tokio::fs::read(&self.path)
                .await
                .map_err(|source| FetchError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            tokio::task::spawn_blocking(move || parse_snapshot(&bytes))
                .await
                .map_err(|source| FetchError::Parse {
                    what: "snapshot file",
                    source,
                })?
                .map_err(|source| FetchError::Malformed {
                    what: "the snapshot file",
                    source,
                })
        }
        .await;
        let outcome = if result.is_ok() {
            SyncResult::Ok
        } else {
            SyncResult::Error
        };
        ctx.metrics
            .sync_request(SyncKind::Snapshot, outcome, started.elapsed());
        result
    }

    async fn read_and_apply(
        &self,
        ctx: &SyncContext,
        origin: Origin,
        allow_mass_removal: bool,
    ) -> Result<ApplyReport, SyncError> {
        let body = self.read(ctx).await?;
        ctx.apply(Update::Snapshot(body), origin, allow_mass_removal)
            .await
    }

    async fn fingerprint(&self) -> Option<Fingerprint> {
        let meta = tokio::fs::metadata(&self.path).await.ok()?;
        Some((meta.len(), meta.modified().ok()))
    }
}

impl Source for FileSource {
    async fn step(&mut self, ctx: &SyncContext) -> Result<Stepped, SyncError> {
        let fingerprint = self.fingerprint().await;
        if let (Some(now), Some((seen, applied))) = (fingerprint, self.seen) {
            if now == seen {
                // Unchanged: what is served is what the file says (if it
                // read fine), which counts as fresh contact.
                let contact = if applied {
                    Contact::Unchanged
                } else {
                    Contact::Nothing
                };
                return Ok(Stepped {
                    next: self.poll_interval,
                    contact,
                });
            }
        }
        let result = self.read_and_apply(ctx, Origin::File, false).await;
        self.seen = fingerprint.map(|f| (f, result.is_ok()));
        let report = result?;
        Ok(Stepped {
            next: self.poll_interval,
            contact: Contact::Reached(format!(
                "read {}: {}",
                self.path.display(),
                summary(&report)
            )),
        })
    }

    async fn refresh(
        &mut self,
        ctx: &SyncContext,
        request: &RefreshRequest,
    ) -> Result<(ApplyReport, String), SyncError> {
        let allow = request.allow_mass_removal;
        let fingerprint = self.fingerprint().await;
        match &request.scope {
            Scope::All => {
                let result = self.read_and_apply(ctx, Origin::Refresh, allow).await;
                self.seen = fingerprint.map(|f| (f, result.is_ok()));
                let report = result?;
                let message = format!("re-read {}: {}", self.path.display(), summary(&report));
                Ok((report, message))
            }
            Scope::Project(id) => {
                let body = self.read(ctx).await?;
                let document = body.projects.into_iter().find(|p| match p {
                    Ok(doc) => doc.id == *id,
                    Err(u) => u.id == *id,
                });
                let update = Update::Project {
                    id: id.clone(),
                    document,
                };
                let report = ctx.apply(update, Origin::Refresh, allow).await?;
                let message = format!("re-read {id} from {}", self.path.display());
                Ok((report, message))
            }
        }
    }

    fn check_now(&mut self) {
        self.seen = None;
    }

    fn backoff_max(&self) -> Duration {
        // A broken file is looked at again at least as often as a good one.
        self.poll_interval
    }
}
