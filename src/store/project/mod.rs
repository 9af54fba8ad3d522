//! A project as served: its accepted document at rest, a slug index, and
//! every resolve answer pre-rendered to bytes.
//!
//! All the work happens in [`Project::build`], once per accepted revision (or
//! per scheduled change applied). Each answer is three parts (see
//! [`AnswerRef`]); the project renders its prefix and one tail per
//! environment into a single buffer, and both response headers are slices
//! of it. So a project's answers cost one allocation and hold no byte twice,
//! and resolving only looks up and lends: it never formats, parses or
//! allocates.
//!
//! The document itself is kept as its compact JSON text, compressed
//! ([`AtRest`]: one allocation, under half the size it had on the wire),
//! rather than as parsed maps and strings (dozens of allocations, a third
//! larger). Only introspection, scheduled changes and the cache need it,
//! and they read the text back ([`Project::reparse`]); resolving never
//! does.

mod parts;

pub use parts::{EnvironmentParts, Parts, PartsError, RENDER_FORMAT};

use std::io::Write;
use std::ops::Range;
use std::time::SystemTime;

use bytes::Bytes;
use http::HeaderValue;
use serde::Serialize;

use super::answer::{AnswerRef, Outcome};
use super::at_rest::{AtRest, AtRestError};
use super::pointers_struct::{PointersStruct, PointersStructs};
use crate::model::envelope::{self, EnvelopeError};
use crate::model::raw::RawDigest;
use crate::model::trust::Verified;
use crate::model::validate::{
    validate, ScheduleEntry, ValidProject, ValidationError, MAX_SLUG_LEN,
};
use crate::model::wire::{Content, Incoming, Pointers, WireEnvironment, WireProject};

/// One environment as served.
#[derive(Debug)]
struct ServedEnvironment {
    /// `"environment":{…},"pointers":{…}}`: the end of every answer this
    /// environment serves, with due scheduled changes merged in.
    tail: Bytes,
    /// The slug, a slice of `tail`: `x-resolved-environment`, and the key
    /// the slug index compares beyond its first 8 bytes.
    slug: HeaderValue,
    /// The pointers object, a slice of `tail` (ASCII only, see
    /// [`Rendered::tail`]): `x-resolved-pointers`, byte for byte the
    /// body's.
    pointers: HeaderValue,
}

impl ServedEnvironment {
    fn slug(&self) -> &str {
        std::str::from_utf8(self.slug.as_bytes()).unwrap_or_default()
    }

    /// The environment id, read from the tail where [`Rendered::tail`] put
    /// it (ids are `[A-Za-z0-9_-]`, written without escapes).
    fn id(&self) -> &str {
        let rest = self.tail.get(ID_AT.len()..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == b'"').unwrap_or(0);
        std::str::from_utf8(&rest[..end]).unwrap_or_default()
    }
}

/// How every tail starts, up to the environment id's first byte.
const ID_AT: &[u8] = br#""environment":{"id":""#;

/// Field order is layout: `repr(C)` keeps what a resolve reads (the slug
/// index, the environments, the fallback, the prefix and revision header)
/// together at the start, in the first two cache lines of the allocation;
/// the rest is for the writer and introspection.
#[derive(Debug)]
#[repr(C)]
pub struct Project {
    /// Every slug as an inline key, sorted, for a binary search that does
    /// not leave this array for slugs of up to 8 bytes (most of them).
    slug_index: SlugIndex,
    /// In serving order, as in the document.
    environments: Box<[ServedEnvironment]>,
    /// The gateway fallback's index in `environments`.
    fallback: usize,
    /// `{"project":…,"revision":…,`: the start of every answer.
    prefix: Bytes,
    /// The revision's digits, a slice of `prefix`: `x-snapshot-revision`.
    revision_header: HeaderValue,
    /// Each environment's pointers as a gRPC `Check`'s metadata struct,
    /// in the order of `environments`, when the writer renders them
    /// ([`PointersStructs::Prerendered`]); one buffer for all.
    pointers_structs: Option<Box<[Bytes]>>,
    id: Box<str>,
    revision: u64,
    /// [`WireProject::content_digest`] of the accepted document: tells
    /// the same revision again from a reused one.
    content: u64,
    /// The digest of the bytes the source filed this revision as, when
    /// the writer saw them (the cache keeps it): a full load skips the
    /// same bytes unread ([`Content::AsServed`]).
    raw: Option<RawDigest>,
    /// The accepted document at rest: as [`ValidProject::to_json`] wrote
    /// it, or, when it was signed, the envelope as its parts, read back
    /// exactly as received (so a restart from the cache verifies what
    /// arrived).
    document: AtRest,
    /// What the envelope was signed by, when it was signed.
    signature: Option<Box<Verified>>,
    published_at: Option<SystemTime>,
    /// Every scheduled entry, by instant (see [`ValidProject::schedule`]).
    schedule: Box<[ScheduleEntry]>,
    accepted_at: SystemTime,
    /// How many entries of `schedule` are in effect (a prefix).
    applied: usize,
}

impl Project {
    /// Builds the served form with every scheduled entry due at `now`
    /// applied.
    pub fn build(
        valid: &ValidProject,
        accepted_at: SystemTime,
        now: SystemTime,
        structs: PointersStructs,
    ) -> Project {
        let applied = valid.schedule().iter().take_while(|e| e.at <= now).count();
        Project::with_applied(valid, accepted_at, applied, structs)
    }

    /// Builds the served form with exactly the first `applied` schedule
    /// entries in effect.
    pub fn with_applied(
        valid: &ValidProject,
        accepted_at: SystemTime,
        applied: usize,
        structs: PointersStructs,
    ) -> Project {
        let applied = applied.min(valid.schedule().len());
        let envs = valid.environments();
        let fallback = envs.iter().position(|e| e.gateway_fallback).unwrap_or(0);

        // Rendered in a buffer the thread reuses, then copied once at its
        // exact size: no growing, no shrinking, one allocation.
        let (buffer, prefix, tails) = SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            let mut out = Rendered { bytes: scratch };
            let prefix = out.prefix(valid);
            let tails: Vec<TailRanges> = (0..envs.len())
                .map(|i| match valid.overlaid_pointers(i, applied) {
                    Some(overlaid) => out.tail(&envs[i], &overlaid),
                    None => out.tail(&envs[i], &envs[i].pointers),
                })
                .collect();
            (Bytes::copy_from_slice(out.bytes), prefix, tails)
        });
        let document = match valid.seal() {
            Some(sealed) => match envelope::payload_of(&sealed.envelope) {
                Some((span, payload)) => AtRest::envelope(&sealed.envelope, span, &payload),
                None => AtRest::new(&sealed.envelope),
            },
            None => SCRATCH.with_borrow_mut(|scratch| {
                scratch.clear();
                valid.write_json(scratch);
                AtRest::of_bytes(scratch)
            }),
        };

        let environments: Box<[ServedEnvironment]> = tails
            .into_iter()
            .map(|ranges| ServedEnvironment {
                tail: buffer.slice(ranges.tail),
                slug: header_value(buffer.slice(ranges.slug)),
                pointers: header_value(buffer.slice(ranges.pointers)),
            })
            .collect();
        let pointers_structs = match structs {
            PointersStructs::PerCheck => None,
            PointersStructs::Prerendered => Some(render_structs(&environments)),
        };
        let slug_index = SlugIndex::of(&environments);
        Project {
            id: valid.id().into(),
            revision: valid.revision(),
            content: valid.document().content_digest(),
            raw: None,
            document,
            signature: valid.seal().map(|s| Box::new(s.verified.clone())),
            published_at: valid.published_at(),
            schedule: valid.schedule().into(),
            accepted_at,
            applied,
            revision_header: header_value(buffer.slice(prefix.1)),
            prefix: buffer.slice(prefix.0),
            pointers_structs,
            environments,
            slug_index,
            fallback,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// [`WireProject::content_digest`] of the served document.
    pub fn content_digest(&self) -> u64 {
        self.content
    }

    /// The digest of the bytes this revision was filed as, when known.
    pub fn raw(&self) -> Option<RawDigest> {
        self.raw
    }

    /// Records the bytes this revision was filed as (`None`: not known).
    pub(in crate::store) fn set_raw(&mut self, raw: Option<RawDigest>) {
        self.raw = raw;
    }

    /// The accepted document at rest, what the cache stores: compact
    /// JSON (environments in serving order), or for a signed document the
    /// envelope as it was received. Decompressed on each call: the
    /// cache writer's and introspection's cost, never a resolve's.
    pub fn stored_text(&self) -> Result<String, AtRestError> {
        self.document.text()
    }

    /// What the document at rest takes in memory (compressed), in bytes.
    pub fn stored_len(&self) -> usize {
        self.document.compressed_len()
    }

    /// The stored document as the element it arrived as, for judging
    /// it again (a project rebuilt from the cache that cannot serve as
    /// it is). A text that no longer reads is unreadable, and refused.
    pub fn incoming(&self) -> Incoming {
        match self.document.text() {
            Ok(text) => Incoming::kept(&self.id, self.revision, &text),
            Err(e) => Incoming {
                id: self.id.to_string(),
                revision: Some(self.revision),
                content: Content::Unreadable(e.to_string()),
                raw: None,
            },
        }
    }

    /// Marks the project accepted at `now` (restored from the cache).
    pub(in crate::store) fn accepted_now(&mut self, now: SystemTime) {
        self.accepted_at = now;
    }

    /// Keeps only `keyids` as the keys that verified the envelope (the
    /// ones still trusted).
    pub(in crate::store) fn narrow_signers(&mut self, keyids: Vec<String>) {
        if let Some(verified) = &mut self.signature {
            verified.keyids = keyids;
        }
    }

    /// What the document was signed by, when it came signed.
    pub fn signature(&self) -> Option<&Verified> {
        self.signature.as_deref()
    }

    /// The accepted document read back and validated again (its seal
    /// kept, not checked again): for introspection and scheduled changes,
    /// never the hot path. It cannot fail for a document this type wrote;
    /// the error exists so that a bug here is reported instead of served.
    pub fn reparse(&self) -> Result<ValidProject, ReparseError> {
        let text = self.document.text()?;
        let Some(verified) = &self.signature else {
            let doc: WireProject = serde_json::from_str(&text)?;
            return Ok(validate(doc, &[])?);
        };
        let seal = envelope::parse(&text)?;
        let doc: WireProject = serde_json::from_slice(&seal.payload)?;
        Ok(validate(doc, &[])?.sealed(text.into_boxed_str(), (**verified).clone()))
    }

    /// `(environment id, slug)` of every environment, for the slug
    /// immutability check of the next revision.
    pub fn environment_keys(&self) -> Vec<(&str, &str)> {
        self.environments
            .iter()
            .map(|e| (e.id(), e.slug()))
            .collect()
    }

    /// `published_at` of the accepted document, if it had a readable one.
    pub fn published_at(&self) -> Option<SystemTime> {
        self.published_at
    }

    /// Every scheduled change, by instant; the first
    /// [`applied`](Self::applied) are in effect.
    pub fn schedule(&self) -> &[ScheduleEntry] {
        &self.schedule
    }

    pub fn accepted_at(&self) -> SystemTime {
        self.accepted_at
    }

    /// Number of schedule entries in effect.
    pub fn applied(&self) -> usize {
        self.applied
    }

    /// When the next scheduled change falls due, if any is left.
    pub fn next_due(&self) -> Option<SystemTime> {
        self.schedule.get(self.applied).map(|e| e.at)
    }

    /// Number of environments.
    pub fn environment_count(&self) -> usize {
        self.environments.len()
    }

    /// Makes this project's pointers structs as `structs` says (a
    /// project restored from the cache, for a writer that renders them).
    pub fn set_pointers_structs(&mut self, structs: PointersStructs) {
        self.pointers_structs = match structs {
            PointersStructs::PerCheck => None,
            PointersStructs::Prerendered => Some(render_structs(&self.environments)),
        };
    }

    /// How this project's pointers structs were made.
    pub fn pointers_structs(&self) -> PointersStructs {
        match self.pointers_structs {
            Some(_) => PointersStructs::Prerendered,
            None => PointersStructs::PerCheck,
        }
    }

    /// The answer for a slug already lower-cased and syntax-checked, or the
    /// fallback; `None` only in strict mode for a slug that is not here.
    #[inline]
    pub fn answer(&self, slug: Option<&[u8]>, strict: bool) -> Option<AnswerRef<'_>> {
        let (index, outcome) = match slug.map(|s| self.find(s)) {
            None => (self.fallback, Outcome::NotRequested),
            Some(Some(index)) => (index, Outcome::Exact),
            Some(None) if strict => return None,
            Some(None) => (self.fallback, Outcome::UnknownEnvironment),
        };
        let env = &self.environments[index];
        Some(AnswerRef {
            outcome,
            prefix: &self.prefix,
            tail: &env.tail,
            environment: &env.slug,
            revision: &self.revision_header,
            pointers: &env.pointers,
            pointers_struct: self.pointers_structs.as_ref().map(|s| &s[index]),
        })
    }

    #[inline]
    fn find(&self, slug: &[u8]) -> Option<usize> {
        let key = SlugKey::new(slug, 0);
        let start = self
            .slug_index
            .keys()
            .partition_point(|k| (k.prefix, k.len) < (key.prefix, key.len));
        for k in &self.slug_index.keys()[start..] {
            if (k.prefix, k.len) != (key.prefix, key.len) {
                break;
            }
            let index = usize::from(k.index);
            // Up to 8 bytes the key is the whole slug; beyond, compare.
            if slug.len() <= 8 || self.environments[index].slug.as_bytes() == slug {
                return Some(index);
            }
        }
        None
    }
}

/// The stored document could not be read back (a bug, never input).
#[derive(Debug, thiserror::Error)]
pub enum ReparseError {
    #[error("the stored document is not readable: {0}")]
    Unreadable(#[from] serde_json::Error),
    #[error("the stored document no longer validates: {0}")]
    Invalid(#[from] ValidationError),
    #[error("the stored envelope is not readable: {0}")]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    AtRest(#[from] AtRestError),
}

/// The sorted slug keys: in the project itself for up to
/// [`INLINE_SLUGS`] environments (most projects), so finding the slug costs
/// no cache miss beyond the project's own lines.
#[derive(Debug)]
enum SlugIndex {
    Inline {
        len: u8,
        keys: [SlugKey; INLINE_SLUGS],
    },
    Heap(Box<[SlugKey]>),
}

const INLINE_SLUGS: usize = 4;

impl SlugIndex {
    /// The index of `environments`' slugs.
    fn of(environments: &[ServedEnvironment]) -> SlugIndex {
        let mut keys: Vec<SlugKey> = environments
            .iter()
            .enumerate()
            .map(|(i, e)| SlugKey::new(e.slug.as_bytes(), i as u16))
            .collect();
        keys.sort_unstable_by(|a, b| {
            (a.prefix, a.len).cmp(&(b.prefix, b.len)).then_with(|| {
                environments[usize::from(a.index)]
                    .slug
                    .as_bytes()
                    .cmp(environments[usize::from(b.index)].slug.as_bytes())
            })
        });
        SlugIndex::new(keys)
    }

    fn new(keys: Vec<SlugKey>) -> SlugIndex {
        if keys.len() <= INLINE_SLUGS {
            let mut inline = [SlugKey::new(b"", 0); INLINE_SLUGS];
            inline[..keys.len()].copy_from_slice(&keys);
            SlugIndex::Inline {
                len: keys.len() as u8,
                keys: inline,
            }
        } else {
            SlugIndex::Heap(keys.into_boxed_slice())
        }
    }

    #[inline]
    fn keys(&self) -> &[SlugKey] {
        match self {
            SlugIndex::Inline { len, keys } => &keys[..usize::from(*len)],
            SlugIndex::Heap(keys) => keys,
        }
    }
}

/// A slug's first 8 bytes and length, packed for comparison in place.
#[derive(Debug, Clone, Copy)]
struct SlugKey {
    prefix: u64,
    len: u8,
    index: u16,
}

impl SlugKey {
    #[inline]
    fn new(slug: &[u8], index: u16) -> SlugKey {
        let mut bytes = [0u8; 8];
        let n = slug.len().min(8);
        bytes[..n].copy_from_slice(&slug[..n]);
        SlugKey {
            prefix: u64::from_be_bytes(bytes),
            len: slug.len().min(255) as u8,
            index,
        }
    }
}

const _: () = assert!(MAX_SLUG_LEN <= 64);

thread_local! {
    /// Where a thread renders a project's answers and writes its document
    /// before compressing it; it keeps the largest size it needed.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The answer parts of one project, rendered into one buffer.
struct Rendered<'a> {
    bytes: &'a mut Vec<u8>,
}

impl Rendered<'_> {
    /// Writes `{"project":…,"revision":…,`; returns its range and the
    /// range of the revision's digits.
    fn prefix(&mut self, valid: &ValidProject) -> (Range<usize>, Range<usize>) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(br#"{"project":"#);
        self.json(valid.id());
        self.bytes.extend_from_slice(br#","revision":"#);
        let digits = self.bytes.len();
        // Into a Vec: cannot fail.
        let _ = write!(self.bytes, "{}", valid.revision());
        let digits = digits..self.bytes.len();
        self.bytes.push(b',');
        (start..self.bytes.len(), digits)
    }

    /// Writes `"environment":{…},"pointers":{…}}`; returns its ranges.
    /// The pointers are written ASCII only (any other character as a JSON
    /// `\u` escape), so that the same bytes are a valid header value.
    fn tail(&mut self, env: &WireEnvironment, pointers: &Pointers) -> TailRanges {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&ID_AT[..ID_AT.len() - 1]);
        self.json(&env.id);
        // A validated slug is `[a-z0-9-]`: nothing to escape, and always a
        // valid header value.
        self.bytes.extend_from_slice(br#","slug":""#);
        let slug = self.bytes.len();
        self.bytes.extend_from_slice(env.slug.as_bytes());
        let slug = slug..self.bytes.len();
        self.bytes.extend_from_slice(br#"","name":"#);
        self.json(&env.name);
        self.bytes.extend_from_slice(br#","production":"#);
        self.json(&env.production);
        self.bytes.extend_from_slice(br#","color":"#);
        self.json(&env.color);
        self.bytes.extend_from_slice(br#"},"pointers":"#);
        let at = self.bytes.len();
        // Maps of strings into a Vec: cannot fail.
        let _ = pointers.serialize(&mut serde_json::Serializer::with_formatter(
            &mut *self.bytes,
            AsciiOnly,
        ));
        let pointers = at..self.bytes.len();
        self.bytes.push(b'}');
        TailRanges {
            tail: start..self.bytes.len(),
            slug,
            pointers,
        }
    }

    fn json(&mut self, value: &(impl Serialize + ?Sized)) {
        // Strings, booleans and maps of strings into a Vec: cannot fail.
        let _ = serde_json::to_writer(&mut *self.bytes, value);
    }
}

/// Every environment's pointers struct, encoded from its pointers text
/// into one buffer of the exact size.
fn render_structs(environments: &[ServedEnvironment]) -> Box<[Bytes]> {
    let measured: Vec<PointersStruct<'_>> = environments
        .iter()
        .map(|e| {
            PointersStruct::measure(std::str::from_utf8(e.pointers.as_bytes()).unwrap_or("{}"))
        })
        .collect();
    let mut out = Vec::with_capacity(measured.iter().map(PointersStruct::len).sum());
    let mut ends = Vec::with_capacity(measured.len());
    for m in &measured {
        m.put(&mut out);
        ends.push(out.len());
    }
    let out = Bytes::from(out);
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let part = out.slice(start..end);
            start = end;
            part
        })
        .collect()
}

/// Where one environment's parts are in the project's buffer.
struct TailRanges {
    tail: Range<usize>,
    slug: Range<usize>,
    pointers: Range<usize>,
}

/// Compact JSON with every non-ASCII character written as `\uXXXX` (a
/// surrogate pair beyond the BMP): the text means the same, and every
/// byte is printable ASCII, since serde_json already escapes `"`, `\`
/// and control characters, and validation admits no DEL or C1 control.
struct AsciiOnly;

impl serde_json::ser::Formatter for AsciiOnly {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (at, c) in fragment.char_indices().filter(|(_, c)| !c.is_ascii()) {
            writer.write_all(&fragment.as_bytes()[start..at])?;
            for unit in c.encode_utf16(&mut [0u16; 2]) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = at + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// A header value over bytes already checked (a validated slug, or
/// digits); empty if they somehow are not valid.
fn header_value(bytes: Bytes) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes).unwrap_or(HeaderValue::from_static(""))
}
