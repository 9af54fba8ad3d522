//! The file source: a snapshot body (`{"revision": N, "projects": [...]}`)
//! in a local file, read at start and re-read whenever its size or
//! modification time changes (checked every `poll_interval`, or at once
//! when asked).
//!
//! A missing, unreadable or malformed file changes nothing that is served;
//! [`run`](super::run) logs each distinct problem once and retries.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{summary, Contact, Fetch, FetchError, Stepped, SyncContext, SyncError};
use crate::model::origin::{MassRemoval, Origin};
use crate::model::wire::{BodyReader, SnapshotBody};
use crate::store::{ApplyReport, Contents};
use crate::telemetry::{SyncKind, SyncResult};

/// Size and modification time: enough to notice an edit or a replace.
type Fingerprint = (u64, Option<SystemTime>);

#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    poll_interval: Duration,
    /// The fingerprint of the last read, and whether it applied.
    seen: Option<(Fingerprint, bool)>,
    /// The file was read and applied once: what a later read brings is
    /// a change seen as it happens.
    applied_once: bool,
    reader: BodyReader,
}

impl FileSource {
    pub fn new(path: PathBuf, poll_interval: Duration, reader: BodyReader) -> FileSource {
        FileSource {
            path,
            poll_interval,
            seen: None,
            applied_once: false,
            reader,
        }
    }

    /// Reads the file, then has the writer parse (on its thread) and apply
    /// what `to_update` makes of it, as news from `origin`. The read and
    /// the parse count as one `snapshot` sync request.
    async fn read_and_apply(
        &self,
        ctx: &SyncContext,
        origin: Origin,
        to_update: impl FnOnce(SnapshotBody) -> Contents + Send + 'static,
    ) -> Result<ApplyReport, SyncError> {
        let read = async {
            let bytes = tokio::fs::read(&self.path)
                .await
                .map_err(|source| FetchError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            let reader = self.reader.on_every_core(!ctx.store.is_loaded());
            ctx.parse_and_apply(
                "the snapshot file",
                move || reader.snapshot(&bytes).map(to_update),
                origin,
            )
            .await
        };
        ctx.request(SyncKind::Snapshot, |_| SyncResult::Ok, read)
            .await
    }

    async fn fingerprint(&self) -> Option<Fingerprint> {
        let meta = tokio::fs::metadata(&self.path).await.ok()?;
        Some((meta.len(), meta.modified().ok()))
    }
}

impl Fetch for FileSource {
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
        // A file read before and changed since is news as it happens.
        let origin = if self.applied_once {
            Origin::FileChange
        } else {
            Origin::File
        };
        let result = self.read_and_apply(ctx, origin, Contents::Snapshot).await;
        self.seen = fingerprint.map(|f| (f, result.is_ok()));
        self.applied_once |= result.is_ok();
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

    async fn refresh_all(
        &mut self,
        ctx: &SyncContext,
        mass_removal: MassRemoval,
    ) -> Result<(ApplyReport, String), SyncError> {
        let fingerprint = self.fingerprint().await;
        let result = self
            .read_and_apply(ctx, Origin::Refresh(mass_removal), Contents::Snapshot)
            .await;
        self.seen = fingerprint.map(|f| (f, result.is_ok()));
        let report = result?;
        let message = format!("re-read {}: {}", self.path.display(), summary(&report));
        Ok((report, message))
    }

    async fn refresh_project(
        &mut self,
        ctx: &SyncContext,
        id: &str,
        mass_removal: MassRemoval,
    ) -> Result<(ApplyReport, String), SyncError> {
        let wanted = id.to_owned();
        let to_update = move |body: SnapshotBody| {
            let document = body.projects.into_iter().find(|p| p.id == wanted);
            Contents::Project {
                id: wanted,
                document,
            }
        };
        let report = self
            .read_and_apply(ctx, Origin::Refresh(mass_removal), to_update)
            .await?;
        let message = format!("re-read {id} from {}", self.path.display());
        Ok((report, message))
    }

    fn check_now(&mut self) {
        self.seen = None;
    }

    fn backoff_max(&self) -> Duration {
        // A broken file is looked at again at least as often as a good one.
        self.poll_interval
    }
}
