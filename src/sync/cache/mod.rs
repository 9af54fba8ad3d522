//! The last-known-good cache: the whole served state (every project as
//! served, and the sync cursor) on local disk, so a restart serves at
//! once even when the control plane is down.
//!
//! Since version 2 the file keeps each project as served, answers
//! rendered ([`binary`]): a restart by the same build rebuilds them
//! without parsing, validating, rendering or compressing, and the writer
//! still judges each one ([`Judge::restored`](crate::store::Judge::restored)):
//! a project whose recorded signer is no longer trusted, that expired,
//! or whose scheduled change fell due meanwhile is judged again from its
//! document, like any fetched one. A file of another build is restored
//! from its documents. The file is checked whole (magic, version,
//! CRC-32) before anything in it is used.
//!
//! Version 1 (written before): JSON, `{"format":
//! "env-sidecar-last-known-good", "version": 1, "crc32": "<hex>", "body":
//! {"cursor": N, "projects": [...], "removed": {"id": revision, ...}}}`
//! where the CRC-32 covers the exact bytes of `body`. A signed project is
//! kept as the envelope it arrived in, and `signers` names, for each, the
//! trusted keys that verified it: a restart believes that record while
//! one of those keys is still trusted (the cache is the sidecar's own
//! disk; whoever can write it is outside what signatures protect
//! against), and verifies the signature again otherwise; `removed` holds
//! the revision floor of each project a signed tombstone removed, and
//! `refused` (`{"id": [revision, signed_at in ns since the epoch or
//! null]}`) that of each project whose document was accepted before and
//! could no longer be served at a restart ([`Floor`]), so a replayed
//! older document stays refused across restarts while a signed copy of a
//! refused revision may still serve. Such a file still loads, through
//! the same validation as any fetch; the next write replaces it with
//! version 2.
//!
//! Written atomically: a temp file in the same directory, fsync, rename
//! over the old file, fsync the directory. A load that fails any check
//! (unreadable, truncated, wrong format or version, checksum mismatch)
//! is an error the caller logs and ignores: the cache can never stop the
//! sidecar from starting.

pub mod binary;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{watch, Notify};

use super::status::Activity;
use crate::model::clock::SharedClock;
use crate::model::cursor::Cursor;
use crate::model::floor::Floor;
use crate::model::origin::{CacheRecord, Origin, Signers};
use crate::model::wire::{BodyReader, Incoming, SnapshotBody};
use crate::store::{Contents, Project, Store, Update};

pub const FORMAT: &str = "env-sidecar-last-known-good";
/// The version of the JSON files written before [`binary`].
pub const VERSION: u32 = 1;

/// A burst of accepted changes within this window costs one write.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a last-known-good file: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path} has version {found}, this build reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("{path} fails its checksum (stored {stored}, computed {computed:08x}): truncated or corrupt")]
    Checksum {
        path: PathBuf,
        stored: String,
        computed: u32,
    },
}

#[derive(Deserialize)]
struct FileIn<'a> {
    format: String,
    version: u32,
    crc32: String,
    #[serde(borrow)]
    body: &'a RawValue,
}

#[derive(Deserialize)]
struct BodyIn<'a> {
    /// A number (a revision; in files of earlier versions also a packed
    /// Redis stream id) or a stream id string.
    cursor: Cursor,
    #[serde(borrow)]
    projects: Vec<&'a RawValue>,
    /// The floors of projects a signed tombstone removed
    /// ([`Floor::Removed`]): id → revision. Absent in files written
    /// before signed tombstones.
    #[serde(default)]
    removed: std::collections::BTreeMap<String, u64>,
    /// The floors of projects whose cached document was refused
    /// ([`Floor::Refused`]): id → (revision, signing time). Absent in
    /// files written before refused floors were told apart.
    #[serde(default)]
    refused: std::collections::BTreeMap<String, (u64, Option<u64>)>,
    /// Absent in files written before restarts believed them.
    #[serde(default)]
    signers: std::collections::HashMap<String, Vec<String>>,
}

/// What a cache file holds.
#[derive(Debug)]
pub struct Cached {
    pub cursor: Cursor,
    /// Projects rebuilt as this build served them.
    pub projects: Vec<Project>,
    /// Documents to judge as fetched ones are (a file of another build
    /// or version, or parts that did not fit).
    pub documents: Vec<Incoming>,
    /// Elements of a version 1 file that named no project.
    pub unattributed: Vec<String>,
    /// Floors of projects not served.
    pub floors: Vec<(String, Floor)>,
    /// The trusted keys that had verified each signed document of
    /// `documents` (a rebuilt project carries its own).
    pub signers: Signers,
}

impl Cached {
    /// How many projects it holds.
    pub fn len(&self) -> usize {
        self.projects.len() + self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each project's id and revision (as far as it reads).
    pub fn revisions(&self) -> Vec<(String, Option<u64>)> {
        self.projects
            .iter()
            .map(|p| (p.id().to_owned(), Some(p.revision())))
            .chain(self.documents.iter().map(|d| (d.id.clone(), d.revision)))
            .collect()
    }

    /// The update that reloads it.
    pub fn into_update(self) -> Update {
        let record = CacheRecord {
            signers: self.signers,
            floors: self.floors,
        };
        let contents = if self.projects.is_empty() {
            Contents::Snapshot(SnapshotBody {
                cursor: self.cursor,
                projects: self.documents,
                unattributed: self.unattributed,
                partial: false,
            })
        } else {
            Contents::Restored {
                cursor: self.cursor,
                projects: self.projects,
                documents: self.documents,
            }
        };
        Update::new(Origin::Cache(record), contents)
    }
}

/// What the cache keeps of a store: its cursor, its projects, and the
/// revision floors of the projects it does not serve.
#[derive(Debug, Clone, Copy)]
pub struct State<'a> {
    pub cursor: Cursor,
    pub projects: &'a [Arc<Project>],
    pub floors: &'a [(String, Floor)],
}

/// Renders the cache file for `state` (in memory: for tests and
/// benchmarks; the cache writer streams it with [`write_to`]).
pub fn encode(state: State<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = write_to(&mut out, state);
    out
}

/// Writes the cache file for `state` to `out` (version 2, [`binary`]),
/// a project at a time: no copy of the whole file is ever built in memory
/// (it would be as large as the snapshot, and the allocator keeps such
/// peaks resident long after). Returns the number of bytes written.
pub fn write_to(out: &mut (impl Write + ?Sized), state: State<'_>) -> std::io::Result<u64> {
    binary::write_to(out, state)
}

/// Checks and decodes a cache file, of either version.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Cached, CacheError> {
    if bytes.starts_with(binary::MAGIC) {
        return binary::decode(path, bytes);
    }
    decode_json(path, bytes)
}

/// A version 1 file.
fn decode_json(path: &Path, bytes: &[u8]) -> Result<Cached, CacheError> {
    let format_error = |message: String| CacheError::Format {
        path: path.to_owned(),
        message,
    };
    let file: FileIn = serde_json::from_slice(bytes).map_err(|e| format_error(e.to_string()))?;
    if file.format != FORMAT {
        return Err(format_error(format!("format is {:?}", file.format)));
    }
    if file.version != VERSION {
        return Err(CacheError::Version {
            path: path.to_owned(),
            found: file.version,
        });
    }
    let computed = crc32fast::hash(file.body.get().as_bytes());
    if u32::from_str_radix(&file.crc32, 16).ok() != Some(computed) {
        return Err(CacheError::Checksum {
            path: path.to_owned(),
            stored: file.crc32,
            computed,
        });
    }
    let body: BodyIn =
        serde_json::from_str(file.body.get()).map_err(|e| format_error(e.to_string()))?;
    // The snapshot parser's own element parser: cached documents take the
    // same path as fetched ones.
    // Read at start, before anything is served: on every core.
    let (projects, unattributed) = BodyReader::default()
        .on_every_core(true)
        .elements(&body.projects)
        .map_err(|e| format_error(e.to_string()))?;
    Ok(Cached {
        cursor: body.cursor,
        projects: Vec::new(),
        documents: projects,
        unattributed,
        floors: binary::floors(body.removed, body.refused),
        signers: body.signers,
    })
}

/// `at` in nanoseconds since the epoch: exactly, so that a refused
/// envelope's own `signed_at` never reads back earlier than it was.
fn nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Reads and decodes the cache file: a version 2 file a chunk at a time
/// (never whole in memory), a version 1 file whole.
pub fn load(path: &Path) -> Result<Cached, CacheError> {
    let unreadable = |source| CacheError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let mut start = Vec::with_capacity(binary::MAGIC.len());
    (&mut file)
        .take(binary::MAGIC.len() as u64)
        .read_to_end(&mut start)
        .map_err(unreadable)?;
    if start == binary::MAGIC {
        return binary::decode_from(path, start.as_slice().chain(file));
    }
    file.read_to_end(&mut start).map_err(unreadable)?;
    decode(path, &start)
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Writes the file `write` produces to `path` atomically and durably: a
/// temporary file in the same directory, fsync, rename, fsync the
/// directory. On any error the temporary file is removed and `path` is
/// untouched.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), CacheError> {
    let err = |source| CacheError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(err)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!("{}{}", temp_prefix(&file_name), std::process::id()));
    let result = (|| {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        write(&mut f)?;
        let f = f
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// How the temporary files of `file_name` start: `.{file_name}.tmp.`,
/// followed by the writer's process id.
fn temp_prefix(file_name: &str) -> String {
    format!(".{file_name}.tmp.")
}

/// Removes temporary files that an earlier process left beside the cache
/// when it died mid-write (a crash-looping pod would otherwise fill its
/// volume): only files in the cache's directory whose name is the cache's
/// own temp prefix followed by a process id. Returns what was removed.
pub fn remove_stale_temp_files(path: &Path) -> Vec<PathBuf> {
    let Some(file_name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let prefix = temp_prefix(&file_name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
            let stale = entry.path();
            match std::fs::remove_file(&stale) {
                Ok(()) => removed.push(stale),
                Err(e) => {
                    tracing::warn!(path = %stale.display(), error = %e, "cannot remove a stale cache temp file")
                }
            }
        }
    }
    removed
}

/// Persists the store whenever the writer reports accepted changes,
/// debounced, and once more at shutdown if anything is still unwritten.
#[derive(Debug)]
pub struct CacheWriter {
    pub path: PathBuf,
    pub store: Store,
    /// Notified by the writer task after every apply that changed something.
    pub dirty: Arc<Notify>,
    pub state: Arc<Activity>,
    pub clock: SharedClock,
}

impl CacheWriter {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.dirty.notified() => {}
                _ = shutdown.changed() => return self.flush_if_dirty().await,
            }
            // Let a burst finish; whatever lands meanwhile is in this write.
            tokio::select! {
                _ = tokio::time::sleep(DEBOUNCE) => {}
                _ = shutdown.changed() => {}
            }
            self.write_now().await;
            if *shutdown.borrow() {
                return self.flush_if_dirty().await;
            }
        }
    }

    async fn flush_if_dirty(&self) {
        // `notified()` consumes a stored permit if the writer left one.
        let pending = tokio::time::timeout(Duration::ZERO, self.dirty.notified())
            .await
            .is_ok();
        if pending {
            self.write_now().await;
        }
    }

    /// Writes the current state now (off the async threads).
    pub async fn write_now(&self) {
        let (store, path) = (self.store.clone(), self.path.clone());
        let result = tokio::task::spawn_blocking(move || {
            let projects = store.projects();
            let floors = store.floors();
            let state = State {
                cursor: store.cursor(),
                projects: &projects,
                floors: &floors,
            };
            let mut bytes = 0;
            write_atomic_with(&path, |f| {
                bytes = write_to(f, state)?;
                Ok(())
            })
            .map(|()| (projects.len(), bytes))
        })
        .await;
        let now = self.clock.now();
        match result {
            Ok(Ok((projects, bytes))) => {
                tracing::debug!(path = %self.path.display(), projects, bytes, "last-known-good cache written");
                self.state
                    .success(now, format!("{projects} projects, {bytes} bytes"));
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "last-known-good cache not written; the previous file stays");
                self.state.error(now, e.to_string());
            }
            Err(e) => self.state.error(now, format!("cache task failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::raw::RawDigest;
    use crate::store::Contents;

    /// Project `i` at revision 3: prod (fallback) and staging.
    fn project(i: usize) -> String {
        let env = |slug: &str, flags: &str| {
            format!(
                r##"{{"id":"p{i}-{slug}","slug":"{slug}","name":"{slug}","color":"#16a34a","system":true,{flags}"pointers":{{"prompts":{{"a":"v{i}"}}}}}}"##
            )
        };
        format!(
            r#"{{"id":"p{i}","revision":3,"environments":[{},{}]}}"#,
            env("prod", r#""gateway_fallback":true,"position":0,"#),
            env("staging", r#""default_publish_target":true,"position":1,"#)
        )
    }

    /// A store serving `n` projects, each filed under its id as a Redis
    /// hash holds it (so each knows the digest of its bytes).
    fn store_with(n: usize) -> Store {
        let (store, mut writer) = Store::new(0.5);
        let reader = crate::model::wire::BodyReader::default();
        let body = crate::model::wire::SnapshotBody {
            cursor: Cursor::Revision(42),
            projects: (0..n)
                .map(|i| reader.filed(&format!("p{i}"), &project(i)))
                .collect(),
            ..Default::default()
        };
        assert!(body.projects.iter().all(|p| p.as_document().is_some()));
        let update = Update::new(Origin::Snapshot, Contents::Snapshot(body));
        writer.apply(update, std::time::SystemTime::now()).unwrap();
        store
    }

    /// A cache file of `n` projects, as this build writes it.
    fn file_with(n: usize) -> Vec<u8> {
        encode(State {
            cursor: Cursor::Revision(7),
            projects: &store_with(n).projects(),
            floors: &[],
        })
    }

    /// A version 1 file (JSON) with `body`, as earlier versions wrote it.
    fn json_file(body: &str) -> String {
        format!(
            r#"{{"format":"{FORMAT}","version":{VERSION},"crc32":"{:08x}","body":{body}}}"#,
            crc32fast::hash(body.as_bytes())
        )
    }

    #[test]
    fn a_stream_cursor_is_kept_as_one_and_an_old_packed_one_still_reads() {
        let id = crate::model::cursor::StreamId::parse("1796300713335-2").unwrap();
        let bytes = encode(State {
            cursor: Cursor::Stream(id),
            projects: &[],
            floors: &[],
        });
        assert!(String::from_utf8_lossy(&bytes).contains(r#""cursor":"1796300713335-2""#));
        let cached = decode(Path::new("c"), &bytes).unwrap();
        assert_eq!(cached.cursor, Cursor::Stream(id));
        // Written by an earlier version: the id packed into a number.
        let packed = (1796300713335u64 << 20) | 2;
        let old = json_file(&format!(
            r#"{{"cursor":{packed},"projects":[],"removed":{{}}}}"#
        ));
        let cached = decode(Path::new("c"), old.as_bytes()).unwrap();
        assert_eq!(cached.cursor, Cursor::Revision(packed));
        assert_eq!(crate::model::cursor::StreamId::unpack_legacy(packed), id);
    }

    #[test]
    fn round_trips_cursor_projects_and_floors() {
        let store = store_with(5);
        let projects = store.projects();
        // A refused envelope's signing time to the nanosecond, one of an
        // unsigned document, and removals.
        let signed_at = UNIX_EPOCH + Duration::new(1_800_000_000, 123_456_789);
        let floors = [
            (
                "a-refused".to_owned(),
                Floor::Refused {
                    revision: 5,
                    signed_at: Some(signed_at),
                },
            ),
            (
                "b-refused".to_owned(),
                Floor::Refused {
                    revision: 6,
                    signed_at: None,
                },
            ),
            ("gone".to_owned(), Floor::Removed(7)),
            ("x\"y".to_owned(), Floor::Removed(9)),
        ];
        let state = State {
            cursor: store.cursor(),
            projects: &projects,
            floors: &floors,
        };
        let bytes = encode(state);
        let mut streamed = Vec::new();
        let reported = write_to(&mut streamed, state).unwrap();
        assert_eq!((streamed.len() as u64, &streamed), (reported, &bytes));
        let cached = decode(Path::new("x"), &bytes).unwrap();
        assert_eq!(cached.cursor, Cursor::Revision(42));
        assert!(cached.documents.is_empty(), "this build's file: rebuilt");
        let parts = |p: &[Arc<Project>]| p.iter().map(|p| p.parts()).collect::<Vec<_>>();
        let rebuilt: Vec<Arc<Project>> = cached.projects.into_iter().map(Arc::new).collect();
        assert_eq!(parts(&rebuilt), parts(&projects));
        let mut read = cached.floors;
        read.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(read, floors);
    }

    #[test]
    fn a_file_of_an_earlier_version_reads_every_floor_as_a_removal() {
        let old = json_file(r#"{"cursor":3,"projects":[],"removed":{"a":4}}"#);
        let cached = decode(Path::new("c"), old.as_bytes()).unwrap();
        assert_eq!(cached.floors, [("a".to_owned(), Floor::Removed(4))]);
    }

    #[test]
    fn a_file_of_an_earlier_version_gives_its_documents_to_judge() {
        let old = json_file(&format!(
            r#"{{"cursor":3,"projects":[{},{}],"removed":{{}}}}"#,
            project(1),
            project(2)
        ));
        let cached = decode(Path::new("c"), old.as_bytes()).unwrap();
        assert!(cached.projects.is_empty());
        assert_eq!(
            cached.revisions(),
            [("p1".to_owned(), Some(3)), ("p2".to_owned(), Some(3))]
        );
        assert!(matches!(
            cached.into_update().contents,
            Contents::Snapshot(_)
        ));
    }

    #[test]
    fn every_kind_of_damage_is_detected() {
        let good = file_with(3);
        let path = Path::new("x");
        // Truncated anywhere.
        for cut in [0, 1, 20, good.len() / 2, good.len() - 3] {
            assert!(decode(path, &good[..cut]).is_err(), "cut at {cut}");
        }
        // A changed byte anywhere after the header.
        for at in [24, 60, good.len() / 2, good.len() - 1] {
            let mut flipped = good.clone();
            flipped[at] ^= 0x20;
            assert!(
                matches!(decode(path, &flipped), Err(CacheError::Checksum { .. })),
                "byte {at}"
            );
        }
        let mut wrong_version = good.clone();
        wrong_version[16..20].copy_from_slice(&4u32.to_le_bytes());
        assert!(matches!(
            decode(path, &wrong_version),
            Err(CacheError::Version { found: 4, .. })
        ));
        let text = json_file(r#"{"cursor":3,"projects":[]}"#);
        let wrong_format = text.replacen(FORMAT, "something-else", 1);
        assert!(matches!(
            decode(path, wrong_format.as_bytes()),
            Err(CacheError::Format { .. })
        ));
        assert!(decode(path, b"\x00\xff garbage").is_err());
    }

    /// A file of this build as version 2 wrote it: each record without
    /// its last `trailer` bytes (the digest of the filed bytes).
    fn as_version_2(file: &[u8], trailer: usize) -> Vec<u8> {
        let u32_at = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        let meta = 24 + 4 + u32_at(24);
        let mut body = file[24..meta + 4].to_vec();
        let mut at = meta + 4;
        for _ in 0..u32_at(meta) {
            let len = u32_at(at);
            body.extend_from_slice(&((len - trailer) as u32).to_le_bytes());
            body.extend_from_slice(&file[at + 4..at + 4 + len - trailer]);
            at += 4 + len;
        }
        assert_eq!(at, file.len());
        let mut v2 = file[..16].to_vec();
        v2.extend_from_slice(&2u32.to_le_bytes());
        v2.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        v2.extend_from_slice(&body);
        v2
    }

    #[test]
    fn the_digest_of_the_filed_bytes_is_kept_and_a_version_2_file_still_reads() {
        let path = Path::new("x");
        let good = file_with(3);
        let raws = |c: Cached| c.projects.iter().map(|p| p.raw()).collect::<Vec<_>>();
        let kept = raws(decode(path, &good).unwrap());
        let filed: Vec<_> = (0..3)
            .map(|i| Some(RawDigest::of(project(i).as_bytes())))
            .collect();
        assert_eq!(kept, filed);
        let old = decode(path, &as_version_2(&good, 17)).unwrap();
        assert_eq!(old.projects.len(), 3);
        assert_eq!(raws(old), [None, None, None]);
        // Cut one byte more and the records no longer read.
        assert!(decode(path, &as_version_2(&good, 18)).is_err());
    }

    /// Read a few bytes at a time, records straddle every chunk boundary:
    /// the same projects, and the same damage found.
    #[test]
    fn a_file_read_in_chunks_of_any_size_decodes_the_same() {
        let good = file_with(4);
        let path = Path::new("x");
        let parts = |c: Cached| c.projects.iter().map(|p| p.parts()).collect::<Vec<_>>();
        let whole = parts(decode(path, &good).unwrap());
        assert_eq!(whole.len(), 4);
        for chunk in [1, 3, 64, 700, good.len()] {
            let read = binary::decode_in_chunks(path, good.as_slice(), chunk).unwrap();
            assert_eq!(parts(read), whole, "chunks of {chunk}");
            for at in [30, good.len() / 2, good.len() - 1] {
                let mut flipped = good.clone();
                flipped[at] ^= 0x20;
                assert!(
                    matches!(
                        binary::decode_in_chunks(path, flipped.as_slice(), chunk),
                        Err(CacheError::Checksum { .. })
                    ),
                    "byte {at}, chunks of {chunk}"
                );
            }
            for cut in [good.len() / 3, good.len() - 1] {
                assert!(
                    matches!(
                        binary::decode_in_chunks(path, &good[..cut], chunk),
                        Err(CacheError::Checksum { .. })
                    ),
                    "cut at {cut}, chunks of {chunk}"
                );
            }
            let mut longer = good.clone();
            longer.push(0);
            assert!(binary::decode_in_chunks(path, longer.as_slice(), chunk).is_err());
        }
        // And from a file, as a restart reads it.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lkg");
        std::fs::write(&file, &good).unwrap();
        assert_eq!(parts(load(&file).unwrap()), whole);
        assert!(matches!(
            load(&dir.path().join("absent")),
            Err(CacheError::Read { .. })
        ));
    }

    /// Counts and lengths a file claims, made right by its checksum, do
    /// not make the reader panic or reach past the file.
    #[test]
    fn lying_lengths_are_refused_not_followed() {
        let good = file_with(2);
        for at in (24..good.len()).step_by(3) {
            for value in [0u8, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[at] = value;
                let crc = crc32fast::hash(&bad[24..]);
                bad[20..24].copy_from_slice(&crc.to_le_bytes());
                // Either an error, or projects that fit (a byte in a
                // rendered answer or a document is just different data).
                if let Ok(cached) = decode(Path::new("x"), &bad) {
                    assert!(cached.len() <= 2);
                }
            }
        }
    }

    #[test]
    fn only_the_caches_own_stale_temp_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lkg.json");
        let keep = [
            "lkg.json",
            ".lkg.json.tmp.",
            ".lkg.json.tmp.12x",
            ".other.json.tmp.12",
            "lkg.json.tmp.12",
        ];
        for name in keep
            .iter()
            .chain(&[".lkg.json.tmp.12", ".lkg.json.tmp.999999"])
        {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join(".lkg.json.tmp.77")).unwrap();
        let mut removed = remove_stale_temp_files(&path);
        removed.sort();
        assert_eq!(
            removed,
            [
                dir.path().join(".lkg.json.tmp.12"),
                dir.path().join(".lkg.json.tmp.999999")
            ]
        );
        for name in keep {
            assert!(dir.path().join(name).exists(), "{name} was removed");
        }
        assert!(dir.path().join(".lkg.json.tmp.77").is_dir());
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/lkg.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
