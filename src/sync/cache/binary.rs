//! The cache file since version 2: every project as served ([`Parts`]:
//! its answers rendered, its document compressed, who signed it), so a
//! restart rebuilds what it served without parsing, validating,
//! rendering or compressing anything.
//!
//! ```text
//! "env-sidecar-lkg\n"  magic, 16 bytes
//! u32 version (3)      u32 CRC-32 of everything after it
//! u32 length, meta     JSON: cursor, floors, this build and its render format
//! u32 count            then per project: u32 length, its record
//! ```
//!
//! All integers little-endian; a string or byte run is a `u32` length
//! then its bytes; an instant is `u64` seconds and `u32` nanoseconds
//! since the epoch; an optional value is a `0`/`1` byte then the value.
//! Version 3 ends each record with the digest of the bytes the project
//! was filed as (optional, 16 bytes: what a full reload skips unread);
//! a version 2 record, which has none, still reads.
//! Every read is bounded by what is left of its record: a file that
//! passed its checksum still cannot make the reader panic or allocate
//! more than its own size.
//!
//! The rendered answers are used only by the build that wrote them (same
//! version, same [`RENDER_FORMAT`]); another build restores the same
//! file from its documents, through every check a fetch goes through.

use std::io::Read;
use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{CacheError, Cached, State};
use crate::model::cursor::Cursor;
use crate::model::floor::Floor;
use crate::model::origin::Signers;
use crate::model::raw::RawDigest;
use crate::model::trust::Verified;
use crate::model::validate::ScheduleEntry;
use crate::model::wire::{Content, Incoming};
use crate::store::at_rest::AtRest;
use crate::store::project::{EnvironmentParts, Parts, RENDER_FORMAT};
use crate::store::{PointersStructs, Project};

pub const MAGIC: &[u8; 16] = b"env-sidecar-lkg\n";
pub const VERSION: u32 = 3;

/// The oldest version of this format that still reads.
const OLDEST: u32 = 2;

/// The build whose rendered answers a file may be restored from.
const BUILD: &str = env!("CARGO_PKG_VERSION");

/// What the file says besides the projects.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    cursor: Cursor,
    /// Floors of projects removed by signed tombstones: id → revision.
    removed: std::collections::BTreeMap<String, u64>,
    /// Floors of refused projects: id → (revision, signed_at in ns).
    refused: std::collections::BTreeMap<String, (u64, Option<u64>)>,
    build: String,
    render_format: u32,
}

/// Writes the file for `state` to `out`, a project at a time (no copy of
/// the whole file in memory). Returns the number of bytes written.
pub fn write_to(
    out: &mut (impl std::io::Write + ?Sized),
    state: State<'_>,
) -> std::io::Result<u64> {
    let meta = meta(state);
    let mut crc = crc32fast::Hasher::new();
    body(&meta, state, |part| {
        crc.update(part);
        Ok(())
    })?;
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    out.write_all(&crc.finalize().to_le_bytes())?;
    let mut written = (MAGIC.len() + 8) as u64;
    body(&meta, state, |part| {
        written += part.len() as u64;
        out.write_all(part)
    })?;
    Ok(written)
}

fn meta(state: State<'_>) -> Vec<u8> {
    let mut meta = Meta {
        cursor: state.cursor,
        removed: Default::default(),
        refused: Default::default(),
        build: BUILD.to_owned(),
        render_format: RENDER_FORMAT,
    };
    for (id, floor) in state.floors {
        match *floor {
            Floor::Removed(revision) => {
                meta.removed.insert(id.clone(), revision);
            }
            Floor::Refused {
                revision,
                signed_at,
            } => {
                meta.refused
                    .insert(id.clone(), (revision, signed_at.map(super::nanos)));
            }
        }
    }
    serde_json::to_vec(&meta).unwrap_or_default()
}

/// Hands the body's bytes to `f` in order.
fn body(
    meta: &[u8],
    state: State<'_>,
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    f(&(meta.len() as u32).to_le_bytes())?;
    f(meta)?;
    f(&(state.projects.len() as u32).to_le_bytes())?;
    let mut record = Vec::new();
    for project in state.projects {
        record.clear();
        put_parts(&mut record, &project.parts());
        f(&(record.len() as u32).to_le_bytes())?;
        f(&record)?;
    }
    Ok(())
}

fn put_parts(out: &mut Vec<u8>, p: &Parts) {
    put_bytes(out, p.id.as_bytes());
    put_u64(out, p.revision);
    put_u64(out, p.content);
    put_time(out, p.accepted_at);
    put_option(out, p.published_at.as_ref(), |out, t| put_time(out, *t));
    put_u32(out, p.applied);
    put_option(out, p.signature.as_ref(), |out, v| {
        put_u32(out, v.keyids.len() as u32);
        for keyid in &v.keyids {
            put_bytes(out, keyid.as_bytes());
        }
        put_time(out, v.signed_at);
        put_option(out, v.expires_at.as_ref(), |out, t| put_time(out, *t));
    });
    put_u32(out, p.schedule.len() as u32);
    for entry in &p.schedule {
        put_time(out, entry.at);
        put_u32(out, entry.environment as u32);
        put_u32(out, entry.entry as u32);
    }
    put_bytes(out, &p.document);
    put_bytes(out, &p.rendered);
    put_u32(out, p.prefix_len);
    put_u32(out, p.environments.len() as u32);
    for env in &p.environments {
        put_u32(out, env.tail_len);
        for r in [&env.slug, &env.pointers] {
            put_u32(out, r.start);
            put_u32(out, r.end);
        }
    }
    put_u32(out, p.fallback);
    put_option(out, p.raw.as_ref(), |out, raw| {
        out.extend_from_slice(&raw.to_bytes())
    });
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn put_time(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    put_u64(out, d.as_secs());
    put_u32(out, d.subsec_nanos());
}

fn put_option<T>(out: &mut Vec<u8>, v: Option<&T>, put: impl FnOnce(&mut Vec<u8>, &T)) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put(out, v);
        }
    }
}

/// Bytes of the file read at a time: the records are decoded a chunk at
/// a time, so the file is never in memory whole (reading 200 MB into
/// fresh memory cost more than decoding it).
const CHUNK: usize = 16 << 20;

/// A project restored from its record: the project, or its document with
/// the keys that had verified it.
type Kept = Result<Project, (Incoming, Option<Vec<String>>)>;

/// Checks and decodes a file that starts with [`MAGIC`], held in memory.
pub fn decode(path: &std::path::Path, bytes: &[u8]) -> Result<Cached, CacheError> {
    decode_from(path, bytes)
}

/// Checks and decodes a file that starts with [`MAGIC`], read from
/// `input` a chunk at a time. Nothing decoded is returned unless the
/// whole file passed its checksum; a file cut short, or one that stops
/// reading part of the way, is reported as failing its checksum when
/// what could be read does not match it.
pub fn decode_from(path: &std::path::Path, input: impl Read) -> Result<Cached, CacheError> {
    decode_in_chunks(path, input, CHUNK)
}

/// [`decode_from`], reading `chunk` bytes at a time.
pub(super) fn decode_in_chunks(
    path: &std::path::Path,
    input: impl Read,
    chunk: usize,
) -> Result<Cached, CacheError> {
    let mut file = Chunks::new(path, input, chunk);
    let decoded = decode_body(&mut file);
    let stored = file.stored;
    let computed = file.rest_checksum();
    match (stored, decoded) {
        (Some(stored), _) if stored != computed => Err(CacheError::Checksum {
            path: path.to_owned(),
            stored: format!("{stored:08x}"),
            computed,
        }),
        (_, decoded) => decoded,
    }
}

/// Everything after the header, decoded (the checksum not yet compared).
fn decode_body(file: &mut Chunks<impl Read>) -> Result<Cached, CacheError> {
    let head = file.take(MAGIC.len() + 8, "the header")?;
    let mut head = Reader(&head[MAGIC.len()..]);
    let (Some(version), Some(stored)) = (head.u32(), head.u32()) else {
        return Err(file.format("the header is cut short".into()));
    };
    if !(OLDEST..=VERSION).contains(&version) {
        return Err(CacheError::Version {
            path: file.path.to_owned(),
            found: version,
        });
    }
    file.checked_from_here(stored);
    let length = file.take(4, "the meta")?;
    let length = Reader(&length).u32().unwrap_or_default() as usize;
    let meta = file.take(length, "the meta")?;
    let meta: Meta =
        serde_json::from_slice(&meta).map_err(|e| file.format(format!("the meta: {e}")))?;
    let count = file.take(4, "the count")?;
    let count = Reader(&count).u32().unwrap_or_default() as usize;
    let rendered_here = meta.build == BUILD && meta.render_format == RENDER_FORMAT;
    // Read and rebuilt on every core, a chunk at a time: nothing is
    // served yet.
    let mut kept: Vec<Kept> = Vec::with_capacity(count.min(1 << 16));
    while kept.len() < count {
        let records = file.records(count - kept.len())?;
        let first = kept.len();
        let slices: Vec<&[u8]> = records.iter().map(|r| file.bytes(r.clone())).collect();
        let restored = crate::parallel::map(slices, true, |record| {
            restore(record, version, rendered_here)
        });
        for (i, k) in restored.into_iter().enumerate() {
            kept.push(
                k.ok_or_else(|| file.format(format!("project {} does not read", first + i)))?,
            );
        }
        file.consumed(records);
    }
    if !file.at_end()? {
        return Err(file.format("bytes after the last project".into()));
    }
    let (mut projects, mut documents) = (Vec::new(), Vec::new());
    let mut signers = Signers::new();
    for k in kept {
        match k {
            Ok(project) => projects.push(project),
            Err((incoming, keyids)) => {
                if let Some(keyids) = keyids {
                    signers.insert(incoming.id.clone(), keyids);
                }
                documents.push(incoming);
            }
        }
    }
    if !rendered_here {
        tracing::info!(
            path = %file.path.display(),
            written_by = %meta.build,
            render_format = meta.render_format,
            "the cache was written by another build: restored from its documents"
        );
    }
    Ok(Cached {
        cursor: meta.cursor,
        projects,
        documents,
        unattributed: Vec::new(),
        floors: floors(meta.removed, meta.refused),
        signers,
    })
}

/// One project's record rebuilt: as served if this build rendered it,
/// otherwise (or if its parts do not fit together) its document.
fn restore(record: &[u8], version: u32, rendered_here: bool) -> Option<Kept> {
    let parts = Reader(record).parts(version)?;
    let keyids = parts.signature.as_ref().map(|v| v.keyids.clone());
    if !rendered_here {
        let document = kept_document(&parts.id, parts.revision, &parts.document);
        return Some(Err((document, keyids)));
    }
    Some(
        Project::from_parts(parts, PointersStructs::PerCheck).map_err(|e| {
            tracing::warn!(error = %e, "a cached project is restored from its document");
            (kept_document(&e.id, e.revision, &e.document), keyids)
        }),
    )
}

/// The file read front to back, a chunk at a time into one buffer that
/// is reused, the checksum computed over what follows the header.
struct Chunks<'p, R> {
    path: &'p std::path::Path,
    input: R,
    /// Bytes read at a time (more when one record is longer).
    chunk: usize,
    buffer: Vec<u8>,
    /// Where the bytes not yet consumed start in `buffer`.
    start: usize,
    /// The checksum the header states, once read; bytes from then on
    /// count into `crc` as they are read.
    stored: Option<u32>,
    crc: crc32fast::Hasher,
}

impl<'p, R: Read> Chunks<'p, R> {
    fn new(path: &'p std::path::Path, input: R, chunk: usize) -> Self {
        Chunks {
            path,
            input,
            chunk,
            buffer: Vec::new(),
            start: 0,
            stored: None,
            crc: crc32fast::Hasher::new(),
        }
    }

    fn format(&self, message: String) -> CacheError {
        CacheError::Format {
            path: self.path.to_owned(),
            message,
        }
    }

    fn read_error(&self, source: std::io::Error) -> CacheError {
        CacheError::Read {
            path: self.path.to_owned(),
            source,
        }
    }

    /// From the next byte on, the file counts into the checksum, which
    /// the header states is `stored`.
    fn checked_from_here(&mut self, stored: u32) {
        self.stored = Some(stored);
        self.crc.update(&self.buffer[self.start..]);
    }

    /// Reads until at least `n` bytes are not yet consumed (or the file
    /// ends); whether there are.
    fn fill(&mut self, n: usize) -> Result<bool, CacheError> {
        if self.start > 0 && self.buffer.len() - self.start < n {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        while self.buffer.len() - self.start < n {
            let want = (n - (self.buffer.len() - self.start)).max(self.chunk) as u64;
            let before = self.buffer.len();
            let read = (&mut self.input)
                .take(want)
                .read_to_end(&mut self.buffer)
                .map_err(|e| self.read_error(e))?;
            if self.stored.is_some() {
                self.crc.update(&self.buffer[before..]);
            }
            if read == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The next `n` bytes, consumed; what they are is named in the error
    /// if the file ends first.
    fn take(&mut self, n: usize, what: &str) -> Result<Vec<u8>, CacheError> {
        if !self.fill(n)? {
            return Err(self.format(format!("{what} is cut short")));
        }
        let taken = self.buffer[self.start..self.start + n].to_vec();
        self.start += n;
        Ok(taken)
    }

    /// The records (each a `u32` length, then that many bytes) that the
    /// buffer holds whole, at most `max` of them, at least one: where each
    /// is in the buffer, for [`bytes`](Self::bytes).
    fn records(&mut self, max: usize) -> Result<Vec<Range<usize>>, CacheError> {
        // At least one record whole: its length, then all of it.
        if !self.fill(4)? {
            return Err(self.format("a project is cut short".into()));
        }
        let first = Reader(&self.buffer[self.start..]).u32().unwrap_or_default() as usize;
        if !self.fill(4 + first)? {
            return Err(self.format("a project is cut short".into()));
        }
        let mut records = Vec::new();
        let mut at = self.start;
        while records.len() < max {
            let mut r = Reader(&self.buffer[at..]);
            let Some(record) = r.bytes() else { break };
            records.push(at + 4..at + 4 + record.len());
            at += 4 + record.len();
        }
        Ok(records)
    }

    fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.buffer[range]
    }

    /// The `records` are decoded: the buffer may drop them.
    fn consumed(&mut self, records: Vec<Range<usize>>) {
        if let Some(last) = records.last() {
            self.start = last.end;
        }
    }

    /// Whether the file ends where consumed.
    fn at_end(&mut self) -> Result<bool, CacheError> {
        Ok(!self.fill(1)?)
    }

    /// Reads what is left of the file (a file that stops reading counts as
    /// ending there) and returns the checksum of everything after the
    /// header.
    fn rest_checksum(mut self) -> u32 {
        if self.stored.is_none() {
            return 0;
        }
        let mut chunk = vec![0; 64 << 10];
        loop {
            match self.input.read(&mut chunk) {
                Ok(0) | Err(_) => return self.crc.finalize(),
                Ok(n) => self.crc.update(&chunk[..n]),
            }
        }
    }
}

/// A kept document (compressed at rest) as the element it arrived as.
fn kept_document(id: &str, revision: u64, document: &[u8]) -> Incoming {
    match AtRest::from_stored(document.into()).text() {
        Ok(text) => Incoming::kept(id, revision, &text),
        Err(e) => Incoming {
            id: id.to_owned(),
            revision: Some(revision),
            content: Content::Unreadable(e.to_string()),
            raw: None,
        },
    }
}

pub(super) fn floors(
    removed: std::collections::BTreeMap<String, u64>,
    refused: std::collections::BTreeMap<String, (u64, Option<u64>)>,
) -> Vec<(String, Floor)> {
    removed
        .into_iter()
        .map(|(id, revision)| (id, Floor::Removed(revision)))
        .chain(refused.into_iter().map(|(id, (revision, signed_at))| {
            let signed_at = signed_at.map(|n| UNIX_EPOCH + Duration::from_nanos(n));
            (
                id,
                Floor::Refused {
                    revision,
                    signed_at,
                },
            )
        }))
        .collect()
}

/// Reads a record front to back; `None` once anything is cut short.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }

    fn time(&mut self) -> Option<SystemTime> {
        let secs = self.u64()?;
        let nanos = self.u32()?;
        (nanos < 1_000_000_000)
            .then(|| UNIX_EPOCH.checked_add(Duration::new(secs, nanos)))
            .flatten()
    }

    fn option<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.u8()? {
            0 => Some(None),
            1 => read(self).map(Some),
            _ => None,
        }
    }

    fn range(&mut self) -> Option<Range<u32>> {
        Some(self.u32()?..self.u32()?)
    }

    /// A count of items each at least `min` bytes long, checked against
    /// what is left (so it cannot ask for more memory than the file has).
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.checked_mul(min)? <= self.0.len()).then_some(n)
    }

    fn parts(&mut self, version: u32) -> Option<Parts> {
        let id = self.string()?;
        let revision = self.u64()?;
        let content = self.u64()?;
        let accepted_at = self.time()?;
        let published_at = self.option(Self::time)?;
        let applied = self.u32()?;
        let signature = self.option(|r| {
            let n = r.count(4)?;
            let keyids = (0..n).map(|_| r.string()).collect::<Option<Vec<_>>>()?;
            Some(Verified {
                keyids,
                signed_at: r.time()?,
                expires_at: r.option(Self::time)?,
            })
        })?;
        let n = self.count(20)?;
        let schedule = (0..n)
            .map(|_| {
                Some(ScheduleEntry {
                    at: self.time()?,
                    environment: self.u32()? as usize,
                    entry: self.u32()? as usize,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let document: Box<[u8]> = self.bytes()?.into();
        let rendered = Bytes::copy_from_slice(self.bytes()?);
        let prefix_len = self.u32()?;
        let n = self.count(20)?;
        let environments = (0..n)
            .map(|_| {
                Some(EnvironmentParts {
                    tail_len: self.u32()?,
                    slug: self.range()?,
                    pointers: self.range()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let fallback = self.u32()?;
        let raw = match version {
            2 => None,
            _ => self.option(|r| Some(RawDigest::from_bytes(r.take(16)?.try_into().ok()?)))?,
        };
        self.0.is_empty().then_some(Parts {
            id,
            revision,
            content,
            raw,
            accepted_at,
            published_at,
            applied,
            signature,
            schedule,
            document,
            rendered,
            prefix_len,
            environments,
            fallback,
        })
    }
}
