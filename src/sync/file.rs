//! The file source: a snapshot body (`{"revision": N, "projects": [...]}`)
//! in a local file, read at start and re-read whenever its size,
//! modification time or inode changes (checked every `poll_interval`, or
//! at once when asked).
//!
//! File systems stamp modification times from a coarse clock (a few
//! milliseconds on ext4, a second or two on others), so a second write in
//! the same tick, of the same size, would look unchanged. A file modified
//! within [`SETTLE`] of its read is therefore read again at the next poll,
//! as git treats a "racily clean" file; a replace by rename is told apart
//! by its new inode whatever its time.
//!
//! A missing, unreadable or malformed file changes nothing that is served;
//! [`run`](super::run) logs each distinct problem once and retries.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{summary, Contact, Fetch, FetchError, Stepped, SyncContext, SyncError};
use crate::model::origin::{MassRemoval, Origin};
use crate::model::wire::{BodyReader, SnapshotBody};
use crate::store::{ApplyReport, Contents};
use crate::telemetry::{SyncKind, SyncResult};

/// How long after its modification time a file's fingerprint can still be
/// shared by a later write: longer than the timestamp tick of the file
/// systems a sidecar runs on (ext4, xfs, btrfs, tmpfs, overlayfs: a few
/// milliseconds). Each edit costs one read more, a poll later.
const SETTLE: Duration = Duration::from_secs(1);

/// What tells one version of the file from another without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    /// A replace by rename is a new inode, even at the same size and time.
    inode: (u64, u64),
}

impl Fingerprint {
    fn of(meta: &Metadata) -> Fingerprint {
        Fingerprint {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: (meta.dev(), meta.ino()),
        }
    }

    /// Whether any later write must change this fingerprint, for a file
    /// looked at, at `looked_at`: only if it was last modified more than
    /// [`SETTLE`] before. (Without a modification time, never.)
    fn settled(&self, looked_at: SystemTime) -> bool {
        self.modified
            .is_some_and(|modified| modified + SETTLE <= looked_at)
    }
}

/// The file as last read.
#[derive(Debug, Clone, Copy)]
struct Seen {
    fingerprint: Fingerprint,
    /// No later write can leave the fingerprint as it is; if not, the
    /// next poll reads the file again.
    settled: bool,
    /// What the bytes read hash to (none if they could not be read): a
    /// read again of the same bytes applies nothing.
    digest: Option<u64>,
    applied: bool,
}

/// A read of the file: the digest of what was read, if it could be, and
/// what came of it.
struct Outcome {
    digest: Option<u64>,
    result: Result<Read, SyncError>,
}

/// What a read of the file that succeeded came to.
enum Read {
    /// The same bytes as the read before, at the same fingerprint.
    Same,
    Applied(ApplyReport),
}

impl Read {
    /// What was applied: nothing, for the same bytes again.
    fn report(self) -> ApplyReport {
        match self {
            Read::Same => ApplyReport::default(),
            Read::Applied(report) => report,
        }
    }
}

/// Tells one content of the file from another (within one process).
fn digest_of(bytes: &[u8]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(bytes)
}

#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    poll_interval: Duration,
    /// The last read, and whether it applied.
    seen: Option<Seen>,
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

    /// Reads the file, then (unless its bytes hash to `same_as`) has the
    /// writer parse (on its thread) and apply what `to_update` makes of
    /// it, as news from `origin`. The read and the parse count as one
    /// `snapshot` sync request; the same bytes again as `not_modified`.
    async fn read_and_apply(
        &self,
        ctx: &SyncContext,
        origin: Origin,
        same_as: Option<u64>,
        to_update: impl FnOnce(SnapshotBody) -> Contents + Send + 'static,
    ) -> Outcome {
        let mut digest = None;
        let read = async {
            let bytes = tokio::fs::read(&self.path)
                .await
                .map_err(|source| FetchError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            let this = *digest.insert(digest_of(&bytes));
            if same_as == Some(this) {
                return Ok(Read::Same);
            }
            let reader = self.reader.on_every_core(!ctx.store.is_loaded());
            ctx.parse_and_apply(
                "the snapshot file",
                move || reader.snapshot(&bytes).map(to_update),
                origin,
            )
            .await
            .map(Read::Applied)
        };
        let count = |read: &Read| match read {
            Read::Same => SyncResult::NotModified,
            Read::Applied(_) => SyncResult::Ok,
        };
        let result = ctx.request(SyncKind::Snapshot, count, read).await;
        Outcome { digest, result }
    }

    /// The file's fingerprint now, and whether it is settled: taken
    /// before a read, so that any write after it changes the fingerprint.
    async fn look(&self, ctx: &SyncContext) -> Option<(Fingerprint, bool)> {
        let looked_at = ctx.clock.now();
        let meta = tokio::fs::metadata(&self.path).await.ok()?;
        let fingerprint = Fingerprint::of(&meta);
        Some((fingerprint, fingerprint.settled(looked_at)))
    }

    /// A step that found the file as it was: what is served is what the
    /// file says (if it `applied`), which counts as fresh contact.
    fn quiet(&self, applied: bool) -> Stepped {
        let contact = if applied {
            Contact::Unchanged
        } else {
            Contact::Nothing
        };
        Stepped {
            next: self.poll_interval,
            contact,
        }
    }

    /// Records a read of the file as `look` found it, and what came of it.
    fn remember(&mut self, look: Option<(Fingerprint, bool)>, outcome: &Outcome, applied: bool) {
        self.seen = look.map(|(fingerprint, settled)| Seen {
            fingerprint,
            settled,
            digest: outcome.digest,
            applied,
        });
    }
}

impl Fetch for FileSource {
    async fn step(&mut self, ctx: &SyncContext) -> Result<Stepped, SyncError> {
        let look = self.look(ctx).await;
        let unchanged = self
            .seen
            .filter(|seen| look.is_some_and(|(now, _)| now == seen.fingerprint));
        if let Some(seen) = unchanged.filter(|seen| seen.settled) {
            return Ok(self.quiet(seen.applied));
        }
        // A file read before and changed since is news as it happens.
        let origin = if self.applied_once {
            Origin::FileChange
        } else {
            Origin::File
        };
        let same_as = unchanged.and_then(|seen| seen.digest);
        let outcome = self
            .read_and_apply(ctx, origin, same_as, Contents::Snapshot)
            .await;
        let applied = match (&outcome.result, unchanged) {
            (Ok(Read::Same), Some(seen)) => seen.applied,
            (result, _) => result.is_ok(),
        };
        self.remember(look, &outcome, applied);
        self.applied_once |= applied;
        match outcome.result? {
            Read::Same => Ok(self.quiet(applied)),
            Read::Applied(report) => Ok(Stepped {
                next: self.poll_interval,
                contact: Contact::Reached(format!(
                    "read {}: {}",
                    self.path.display(),
                    summary(&report)
                )),
            }),
        }
    }

    async fn refresh_all(
        &mut self,
        ctx: &SyncContext,
        mass_removal: MassRemoval,
    ) -> Result<(ApplyReport, String), SyncError> {
        let look = self.look(ctx).await;
        let outcome = self
            .read_and_apply(ctx, Origin::Refresh(mass_removal), None, Contents::Snapshot)
            .await;
        self.remember(look, &outcome, outcome.result.is_ok());
        let report = outcome.result?.report();
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
            .read_and_apply(ctx, Origin::Refresh(mass_removal), None, to_update)
            .await
            .result?
            .report();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn modified_at(modified: Option<SystemTime>) -> Fingerprint {
        Fingerprint {
            len: 10,
            modified,
            inode: (1, 2),
        }
    }

    #[test]
    fn a_file_modified_within_the_settle_time_of_a_look_is_not_settled() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let file = modified_at(Some(t));
        assert!(!file.settled(t), "modified as it was looked at");
        assert!(!file.settled(t + SETTLE - Duration::from_millis(1)));
        assert!(file.settled(t + SETTLE));
        // A modification time after the look (a clock stepped back).
        assert!(!file.settled(t - Duration::from_secs(60)));
    }

    #[test]
    fn without_a_modification_time_a_file_is_never_settled() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(!modified_at(None).settled(now));
    }

    #[test]
    fn a_new_inode_is_a_new_fingerprint_at_the_same_size_and_time() {
        let t = Some(SystemTime::UNIX_EPOCH);
        let replaced = Fingerprint {
            inode: (1, 3),
            ..modified_at(t)
        };
        assert_ne!(modified_at(t), replaced);
    }
}
