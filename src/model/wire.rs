//! Wire types: project documents and fetch bodies exactly as the control
//! plane (or the snapshot file) sends them, before any validation.
//!
//! Nothing here is trusted. The store never holds these types directly; the
//! `validate` module turns a [`WireProject`] into a `ValidProject` once.
//! Unknown fields are ignored (forward compatibility) and missing optional
//! fields take their defaults (`false`, empty).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::cursor::Cursor;
use super::envelope::{self, Seal, Stamps, PROJECT_TYPE, TOMBSTONE_TYPE};
use super::raw::RawDigest;

/// The three pointer maps an environment carries. Sorted by key, so every
/// rendering of a project is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct Pointers {
    #[serde(default, deserialize_with = "null_as_default")]
    pub prompts: PointerMap,
    #[serde(default, deserialize_with = "null_as_default")]
    pub routing_rules: PointerMap,
    #[serde(default, deserialize_with = "null_as_default")]
    pub providers: PointerMap,
}

/// The pointer kinds, in the order they are rendered.
pub const POINTER_KINDS: [&str; 3] = ["prompts", "routing_rules", "providers"];

impl Pointers {
    pub fn len(&self) -> usize {
        self.prompts.len() + self.routing_rules.len() + self.providers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The map for a kind name, if it is one of [`POINTER_KINDS`].
    pub fn kind_mut(&mut self, kind: &str) -> Option<&mut PointerMap> {
        match kind {
            "prompts" => Some(&mut self.prompts),
            "routing_rules" => Some(&mut self.routing_rules),
            "providers" => Some(&mut self.providers),
            _ => None,
        }
    }

    /// Every `(kind, key, value)` triple.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str, &str)> {
        self.prompts
            .iter()
            .map(|(k, v)| ("prompts", k, v))
            .chain(
                self.routing_rules
                    .iter()
                    .map(|(k, v)| ("routing_rules", k, v)),
            )
            .chain(self.providers.iter().map(|(k, v)| ("providers", k, v)))
    }
}

/// Key → version, sorted by key. Every key and value lives in one string
/// (`key₀ value₀ key₁ value₁ …`, no separators) with the end offsets of
/// each beside it: two allocations per map however many entries it has.
/// A map of strings boxed one by one cost two allocations and 32 bytes of
/// pointers per entry, and pointers are most of a loaded snapshot.
/// Duplicate keys in a document: the last one wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PointerMap {
    text: Box<str>,
    /// Per entry: where its key ends and where its value ends in `text`.
    ends: Box<[(u32, u32)]>,
}

/// A pointer map whose text would not fit 32-bit offsets (over 4 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a pointer map larger than 4 GiB")]
pub struct PointerMapTooLarge;

impl PointerMap {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn entry(&self, i: usize) -> (&str, &str) {
        let start = if i == 0 {
            0
        } else {
            self.ends[i - 1].1 as usize
        };
        let (key_end, value_end) = self.ends[i];
        (
            &self.text[start..key_end as usize],
            &self.text[key_end as usize..value_end as usize],
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            let (k, v) = self.entry(mid);
            match k.cmp(key) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Some(v),
            }
        }
        None
    }

    /// Sets `key` to `value`, replacing any previous value (rebuilds the
    /// map: for the writer's overlays, never on the hot path).
    pub fn insert(&mut self, key: impl Into<Box<str>>, value: impl Into<Box<str>>) {
        self.extend([(key, value)]);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        (0..self.len()).map(|i| self.entry(i))
    }

    /// Builds a map from entries in any order; of equal keys the last wins.
    fn build<K: AsRef<str>, V: AsRef<str>>(
        mut entries: Vec<(K, V)>,
    ) -> Result<PointerMap, PointerMapTooLarge> {
        // Stable sort, then keep the last of equal keys.
        entries.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        let mut kept: Vec<(K, V)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match kept.last_mut() {
                Some(last) if last.0.as_ref() == entry.0.as_ref() => *last = entry,
                _ => kept.push(entry),
            }
        }
        let size: usize = kept
            .iter()
            .map(|(k, v)| k.as_ref().len() + v.as_ref().len())
            .sum();
        if u32::try_from(size).is_err() {
            return Err(PointerMapTooLarge);
        }
        let mut text = String::with_capacity(size);
        let mut ends = Vec::with_capacity(kept.len());
        for (k, v) in &kept {
            text.push_str(k.as_ref());
            let key_end = text.len() as u32;
            text.push_str(v.as_ref());
            ends.push((key_end, text.len() as u32));
        }
        Ok(PointerMap {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        })
    }
}

impl<K: Into<Box<str>>, V: Into<Box<str>>> Extend<(K, V)> for PointerMap {
    /// Adds entries (a later one replaces an earlier one of the same key).
    /// Overlays are validated to 128-character keys and values, so they
    /// cannot reach the 4 GiB limit; a map that would is left unchanged.
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, entries: I) {
        let mut all: Vec<(Box<str>, Box<str>)> =
            self.iter().map(|(k, v)| (k.into(), v.into())).collect();
        all.extend(entries.into_iter().map(|(k, v)| (k.into(), v.into())));
        if let Ok(map) = PointerMap::build(all) {
            *self = map;
        }
    }
}

impl<K: Into<Box<str>>, V: Into<Box<str>>> FromIterator<(K, V)> for PointerMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let mut map = PointerMap::default();
        map.extend(entries);
        map
    }
}

impl Serialize for PointerMap {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = ser.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for PointerMap {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PointerMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of pointer keys to versions")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<PointerMap, A::Error> {
                let mut entries: Vec<(String, String)> =
                    Vec::with_capacity(access.size_hint().unwrap_or(0).min(4096));
                while let Some(entry) = access.next_entry::<String, String>()? {
                    entries.push(entry);
                }
                PointerMap::build(entries).map_err(serde::de::Error::custom)
            }
        }
        de.deserialize_map(Visitor)
    }
}

/// A release awaiting approval. Informational only: never served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct Pending {
    pub kind: String,
    pub key: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// A pointer overlay that takes effect at `at`. `pointers` is kept as a
/// free-form map of kind → key → value so validation can refuse kinds that
/// are not one of the three pointer maps (instead of silently dropping them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct Scheduled {
    pub at: String,
    #[serde(default)]
    pub pointers: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct WireEnvironment {
    pub id: String,
    pub slug: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub color: String,
    #[serde(default)]
    pub system: bool,
    #[serde(default)]
    pub default_publish_target: bool,
    #[serde(default)]
    pub production: bool,
    #[serde(default)]
    pub gateway_fallback: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub pointers: Pointers,
    #[serde(default, deserialize_with = "null_as_default")]
    pub pending: Vec<Pending>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub scheduled: Vec<Scheduled>,
}

/// One project document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireProject {
    pub id: String,
    pub revision: u64,
    pub environments: Vec<WireEnvironment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<String>,
    /// When it was signed (RFC 3339): required inside a signed envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<String>,
    /// After this instant (RFC 3339) a signed document is not accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl WireProject {
    /// A digest of the document's content, signature times aside, its
    /// environments in the order given (put them in serving order first,
    /// [`crate::model::validate::serving_order`], as every served document
    /// is): equal for the same document however it was spelt, so a
    /// reused revision is told from the same document again without
    /// reading the served one back. The fields as [`Self::same_content`]
    /// compares them, hashed in place.
    pub fn content_digest(&self) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        // A fixed seed: digests are compared within one process only.
        let mut hasher = foldhash::quality::FixedState::with_seed(0).build_hasher();
        self.id.hash(&mut hasher);
        self.revision.hash(&mut hasher);
        self.environments.hash(&mut hasher);
        self.published_at.hash(&mut hasher);
        hasher.finish()
    }

    /// The same document, signature times aside (a re-signed copy of a
    /// revision differs only in those).
    pub fn same_content(&self, other: &WireProject) -> bool {
        let unstamped = |d: &WireProject| WireProject {
            signed_at: None,
            expires_at: None,
            ..d.clone()
        };
        unstamped(self) == unstamped(other)
    }
}

/// A project element of a fetch, as far as it could be read, attributed
/// to its project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The project's id: where the element was filed (a Redis hash
    /// field, the URL it was fetched from), else what the document says.
    /// For a sealed element, an unverified reading of its payload, used
    /// only to find the served project and to name a rejection;
    /// [`Incoming::open`] checks the payload says the same.
    pub id: String,
    /// Its revision, when that much could be read (for a sealed element:
    /// an unverified reading, for messages only).
    pub revision: Option<u64>,
    pub content: Content,
    /// The digest of the element's bytes as its source filed them (a
    /// Redis value), when it came from one: kept by the project it
    /// becomes, so a later full load can skip the same bytes unread.
    pub raw: Option<RawDigest>,
}

/// What a project element is: a plain document, or a signed envelope not
/// yet read (or an element refused before either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A plain (unsigned) document.
    Document(Box<WireProject>),
    /// A signed envelope. Nothing in it is checked yet (the writer does
    /// that, [`super::trust`]), and its payload is read
    /// ([`Incoming::open`]) only once a trusted signature over its bytes
    /// verified.
    Sealed(Box<Seal>),
    /// Not readable as a project document (wrong types, missing fields,
    /// an envelope that does not parse): rejected like an invalid
    /// document, so it never blocks its siblings.
    Unreadable(String),
    /// Larger than the source's `max_document_bytes` (its size in bytes):
    /// refused without being read.
    TooLarge(usize),
    /// Byte for byte the element the served project was accepted from
    /// (its [`RawDigest`] when the fetch looked): not read again. The
    /// writer counts it unchanged, or, when what is served changed since
    /// the fetch looked, has it fetched again.
    AsServed(RawDigest),
}

/// A sealed element with its payload read: a document or a signed
/// removal, of the element's own id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub id: String,
    /// The revision the payload names.
    pub revision: u64,
    pub payload: Payload,
    pub seal: Box<Seal>,
}

/// What a signed payload holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Document(Box<WireProject>),
    /// A signed removal of the project at the element's revision.
    Tombstone(Tombstone),
}

/// A sealed payload that does not read as one the sidecar takes: why,
/// and the revision it seemed to name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unopened {
    pub revision: Option<u64>,
    pub message: String,
}

/// The times a signed removal carries.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tombstone {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl Incoming {
    /// An unsigned document.
    pub fn document(doc: WireProject) -> Incoming {
        Incoming {
            id: doc.id.clone(),
            revision: Some(doc.revision),
            content: Content::Document(Box::new(doc)),
            raw: None,
        }
    }

    /// An element that could not be read as a document.
    pub fn unreadable(
        id: impl Into<String>,
        revision: Option<u64>,
        message: impl Into<String>,
    ) -> Incoming {
        Incoming {
            id: id.into(),
            revision,
            content: Content::Unreadable(message.into()),
            raw: None,
        }
    }

    /// An element of `bytes` bytes, over the limit, filed under `id`.
    /// A document this sidecar kept (its cache), filed under project
    /// `id` at `revision`: read as any element is, with no size limit
    /// (it was accepted under the limit of its day). One that does not
    /// read is [`Content::Unreadable`], for the writer to refuse.
    pub fn kept(id: &str, revision: u64, text: &str) -> Incoming {
        let reader = BodyReader {
            max_document_bytes: usize::MAX,
            parallel: false,
        };
        let why = match reader.element(text) {
            Ok(Element::Attributed(incoming)) => return incoming,
            Ok(Element::Unattributed(why)) => why,
            Err(e) => e.to_string(),
        };
        Incoming {
            id: id.to_owned(),
            revision: Some(revision),
            content: Content::Unreadable(why),
            raw: None,
        }
    }

    pub fn too_large(id: impl Into<String>, bytes: usize) -> Incoming {
        Incoming {
            id: id.into(),
            revision: None,
            content: Content::TooLarge(bytes),
            raw: None,
        }
    }

    /// A signed envelope filed under `id` (`revision`: what its payload
    /// seems to say, unverified).
    fn sealed(id: impl Into<String>, revision: Option<u64>, seal: Seal) -> Incoming {
        Incoming {
            id: id.into(),
            revision,
            content: Content::Sealed(Box::new(seal)),
            raw: None,
        }
    }

    /// The plain document, if it is one.
    pub fn as_document(&self) -> Option<&WireProject> {
        match &self.content {
            Content::Document(doc) => Some(doc),
            _ => None,
        }
    }

    /// The envelope, if it is one.
    pub fn seal(&self) -> Option<&Seal> {
        match &self.content {
            Content::Sealed(seal) => Some(seal),
            _ => None,
        }
    }

    /// Reads a sealed element's payload (call it once its signature has
    /// verified): a document or a tombstone of the element's own id;
    /// anything else (not a payload type this sidecar reads, not
    /// readable, another id) is [`Unopened`] with the reason said. `None`
    /// for an element that is not sealed.
    pub fn open(self) -> Option<Result<Opened, Unopened>> {
        match self.content {
            Content::Sealed(seal) => Some(open(self.id, self.revision, seal)),
            _ => None,
        }
    }
}

impl Opened {
    /// The signature times of the payload.
    pub fn stamps(&self) -> Stamps<'_> {
        match &self.payload {
            Payload::Document(doc) => Stamps {
                signed_at: doc.signed_at.as_deref(),
                expires_at: doc.expires_at.as_deref(),
            },
            Payload::Tombstone(t) => Stamps {
                signed_at: t.signed_at.as_deref(),
                expires_at: t.expires_at.as_deref(),
            },
        }
    }
}

/// The body is not JSON of the expected shape: the whole fetch is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed body: {0}")]
pub struct MalformedBody(pub String);

/// `GET /v1/snapshot` and the snapshot file: `{"revision": N, "projects": [...]}`.
#[derive(Debug, Default)]
pub struct SnapshotBody {
    /// Where this snapshot is in the source's history (its `revision`,
    /// or for Redis the stream id it was read at).
    pub cursor: Cursor,
    pub projects: Vec<Incoming>,
    /// Why each element that could not be attributed to a project (a
    /// signed envelope whose payload names no readable id, or one too
    /// large to read) was set aside. While any is, the snapshot is
    /// partial: no project is removed for being absent from it.
    pub unattributed: Vec<String>,
    /// The source says it may not hold every project (a Redis being
    /// repopulated, or that lost data): nothing is removed for being
    /// absent, and an empty one does not make the sidecar ready.
    pub partial: bool,
}

/// `GET /v1/changes`: `{"revision": M, "projects": [...], "removed": [...]}`.
#[derive(Debug, Default)]
pub struct ChangesBody {
    /// Where the source is after these changes.
    pub cursor: Cursor,
    pub projects: Vec<Incoming>,
    pub removed: Vec<String>,
    /// As in [`SnapshotBody::unattributed`].
    pub unattributed: Vec<String>,
}

#[derive(Deserialize)]
struct RawSnapshot<'a> {
    revision: u64,
    #[serde(borrow)]
    projects: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawChanges<'a> {
    revision: u64,
    #[serde(borrow, default)]
    projects: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    removed: Option<Vec<String>>,
}

/// Just enough of a project to attribute an element to it.
#[derive(Deserialize)]
struct ProjectIdentity {
    id: String,
    #[serde(default)]
    revision: Option<u64>,
}

/// The payload of a signed removal.
#[derive(Deserialize)]
struct RawTombstone {
    id: String,
    revision: u64,
    #[serde(flatten)]
    stamps: Tombstone,
}

/// The largest document a source hands over by default (§11
/// `source.max_document_bytes`).
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 4 << 20;

/// Reads fetch bodies and elements, refusing any element (a document or
/// an envelope, as received) larger than `max_document_bytes` unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyReader {
    pub max_document_bytes: usize,
    /// A large list is read on every core ([`crate::parallel`]): for a
    /// load before the sidecar is ready.
    pub parallel: bool,
}

impl Default for BodyReader {
    fn default() -> BodyReader {
        BodyReader {
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
            parallel: false,
        }
    }
}

impl BodyReader {
    /// The same reader, reading large lists on every core when
    /// `parallel`.
    pub fn on_every_core(self, parallel: bool) -> BodyReader {
        BodyReader { parallel, ..self }
    }
}

/// What reading one element of a list gave.
enum Element {
    Attributed(Incoming),
    /// Why it cannot be said which project it is.
    Unattributed(String),
}

impl BodyReader {
    pub fn snapshot(&self, body: &[u8]) -> Result<SnapshotBody, MalformedBody> {
        let raw: RawSnapshot =
            serde_json::from_slice(body).map_err(|e| MalformedBody(e.to_string()))?;
        let (projects, unattributed) = self.elements(&raw.projects)?;
        Ok(SnapshotBody {
            cursor: Cursor::Revision(raw.revision),
            projects,
            unattributed,
            partial: false,
        })
    }

    pub fn changes(&self, body: &[u8]) -> Result<ChangesBody, MalformedBody> {
        let raw: RawChanges =
            serde_json::from_slice(body).map_err(|e| MalformedBody(e.to_string()))?;
        // A misspelt batch (`"changes": [...]`) must not pass for an
        // empty one: the cursor would move past what it meant to say.
        if raw.projects.is_none() && raw.removed.is_none() {
            return Err(MalformedBody(
                "a change batch names `projects` and `removed` (each may be empty); \
                 this one names neither"
                    .to_owned(),
            ));
        }
        let (projects, unattributed) = self.elements(&raw.projects.unwrap_or_default())?;
        Ok(ChangesBody {
            cursor: Cursor::Revision(raw.revision),
            projects,
            removed: raw.removed.unwrap_or_default(),
            unattributed,
        })
    }

    /// Reads each element of a `projects` list on its own: an unreadable
    /// element is an unreadable [`Incoming`] for that project, not a
    /// failed fetch. A plain element without a readable id makes the body
    /// malformed; an envelope that cannot be attributed is set aside.
    pub fn elements(
        &self,
        raw: &[&RawValue],
    ) -> Result<(Vec<Incoming>, Vec<String>), MalformedBody> {
        let mut projects = Vec::with_capacity(raw.len());
        let mut unattributed = Vec::new();
        let read = crate::parallel::map(raw.to_vec(), self.parallel, |r| self.element(r.get()));
        for (i, element) in read.into_iter().enumerate() {
            match element? {
                Element::Attributed(incoming) => projects.push(incoming),
                Element::Unattributed(why) => {
                    unattributed.push(format!("element {i}: {why}"));
                }
            }
        }
        Ok((projects, unattributed))
    }

    /// `GET /v1/projects/{id}`: a single document or envelope, filed
    /// under `id`.
    pub fn project(&self, id: &str, body: &[u8]) -> Result<Incoming, MalformedBody> {
        let text = std::str::from_utf8(body).map_err(|e| MalformedBody(e.to_string()))?;
        if body.len() > self.max_document_bytes {
            return Ok(Incoming::too_large(id, body.len()));
        }
        let raw: &RawValue =
            serde_json::from_str(text).map_err(|e| MalformedBody(e.to_string()))?;
        Ok(self.filed(id, raw.get()))
    }

    /// A value stored under `id` (a Redis hash field or stream entry, a
    /// project URL): a document or an envelope, attributed to `id`
    /// whatever it says (a payload naming another id is refused when the
    /// envelope is opened; a plain one at once).
    pub fn filed(&self, id: &str, json: &str) -> Incoming {
        self.filed_unless(id, json, None)
    }

    /// [`filed`](Self::filed), unless the element is byte for byte the
    /// one whose digest is `served` (what the project served under `id`
    /// was accepted from): then [`Content::AsServed`], not read. Either
    /// way the element carries its digest.
    pub fn filed_unless(&self, id: &str, json: &str, served: Option<RawDigest>) -> Incoming {
        let digest = RawDigest::of(json.as_bytes());
        if served == Some(digest) {
            return Incoming {
                id: id.to_owned(),
                revision: None,
                content: Content::AsServed(digest),
                raw: Some(digest),
            };
        }
        Incoming {
            raw: Some(digest),
            ..self.read_filed(id, json)
        }
    }

    fn read_filed(&self, id: &str, json: &str) -> Incoming {
        if json.len() > self.max_document_bytes {
            return Incoming::too_large(id, json.len());
        }
        if envelope::is_envelope(json) {
            return match envelope::parse(json) {
                Ok(seal) => Incoming::sealed(id, None, seal),
                Err(e) => Incoming::unreadable(id, None, e.to_string()),
            };
        }
        match serde_json::from_str::<WireProject>(json) {
            Ok(doc) if doc.id == id => Incoming::document(doc),
            Ok(doc) => Incoming::unreadable(id, Some(doc.revision), other_id(id, &doc.id)),
            Err(e) => Incoming::unreadable(id, None, e.to_string()),
        }
    }

    /// One element of a list, attributed by what it says.
    fn element(&self, json: &str) -> Result<Element, MalformedBody> {
        let sealed = envelope::is_envelope(json);
        if json.len() > self.max_document_bytes {
            // A plain document names its id in the open; an envelope's is
            // inside a payload that is not decoded at this size.
            return Ok(match (sealed, identity(json, "a project element")) {
                (false, Ok(who)) => Element::Attributed(Incoming::too_large(who.id, json.len())),
                _ => Element::Unattributed(format!(
                    "{} bytes, over source.max_document_bytes ({})",
                    json.len(),
                    self.max_document_bytes
                )),
            });
        }
        if !sealed {
            return parse_plain(json).map(Element::Attributed);
        }
        let seal = match envelope::parse(json) {
            Ok(seal) => seal,
            Err(e) => return Ok(Element::Unattributed(e.to_string())),
        };
        // Unverified: only to find the project and name a rejection.
        let payload = std::str::from_utf8(&seal.payload).unwrap_or_default();
        Ok(match identity(payload, "a signed payload") {
            Ok(who) => Element::Attributed(Incoming::sealed(who.id, who.revision, seal)),
            Err(e) => Element::Unattributed(e.0),
        })
    }
}

pub fn parse_snapshot(body: &[u8]) -> Result<SnapshotBody, MalformedBody> {
    BodyReader::default().snapshot(body)
}

pub fn parse_changes(body: &[u8]) -> Result<ChangesBody, MalformedBody> {
    BodyReader::default().changes(body)
}

/// A single document or envelope, as the tools read one from a file: a
/// sealed element is attributed to the id its payload names.
pub fn parse_element(json: &str) -> Result<Incoming, MalformedBody> {
    match BodyReader::default().element(json)? {
        Element::Attributed(incoming) => Ok(incoming),
        Element::Unattributed(why) => Err(MalformedBody(why)),
    }
}

/// [`Incoming::open`] of an envelope filed under `id` (`claimed`: the
/// revision its payload seemed to name before).
pub fn open(id: String, claimed: Option<u64>, seal: Box<Seal>) -> Result<Opened, Unopened> {
    let payload = std::str::from_utf8(&seal.payload).unwrap_or_default();
    let unopened = |message: String| Unopened {
        revision: claimed,
        message,
    };
    let (read_id, revision, payload) = match seal.payload_type.as_str() {
        PROJECT_TYPE => match serde_json::from_str::<WireProject>(payload) {
            Ok(doc) => (
                doc.id.clone(),
                doc.revision,
                Payload::Document(Box::new(doc)),
            ),
            Err(e) => {
                return Err(unopened(format!(
                    "the signed payload is not a project document: {e}"
                )))
            }
        },
        TOMBSTONE_TYPE => match serde_json::from_str::<RawTombstone>(payload) {
            Ok(t) => (t.id, t.revision, Payload::Tombstone(t.stamps)),
            Err(e) => {
                return Err(unopened(format!(
                    "the signed payload is not a tombstone: {e}"
                )))
            }
        },
        other => {
            return Err(unopened(format!(
                "a payload of type {:?}",
                other.chars().take(64).collect::<String>()
            )))
        }
    };
    if read_id != id {
        return Err(Unopened {
            revision: Some(revision),
            message: other_id(&id, &read_id),
        });
    }
    Ok(Opened {
        id,
        revision,
        payload,
        seal,
    })
}

/// The revision an unverified payload claims, to name its rejection (it
/// decides nothing: the payload is refused either way).
pub fn claimed_revision(seal: &Seal) -> Option<u64> {
    let payload = std::str::from_utf8(&seal.payload).ok()?;
    identity(payload, "a signed payload").ok()?.revision
}

/// The revision a published text (a document, or an envelope of one)
/// puts in service, as its writer records the change position: `None`
/// for a signed tombstone or a text that does not read (nothing is served
/// from it). Decides nothing about trust: a reader still checks it.
pub fn published_revision(text: &str) -> Option<u64> {
    if !envelope::is_envelope(text) {
        return identity(text, "a document").ok()?.revision;
    }
    let seal = envelope::parse(text).ok()?;
    if seal.payload_type == envelope::TOMBSTONE_TYPE {
        return None;
    }
    claimed_revision(&seal)
}

/// The message for a document filed under one id that names another.
fn other_id(filed: &str, named: &str) -> String {
    format!(
        "filed under {filed:?}, the document names the id {:?}: a document may not be moved to another project",
        named.chars().take(128).collect::<String>()
    )
}

fn parse_plain(json: &str) -> Result<Incoming, MalformedBody> {
    match serde_json::from_str::<WireProject>(json) {
        Ok(doc) => Ok(Incoming::document(doc)),
        Err(err) => unreadable(json, err),
    }
}

/// An element that did not read: attributed to its id when it has one.
fn unreadable(json: &str, err: serde_json::Error) -> Result<Incoming, MalformedBody> {
    let who = identity(json, "a project element")
        .map_err(|_| MalformedBody(format!("a project element has no readable \"id\": {err}")))?;
    Ok(Incoming::unreadable(who.id, who.revision, err.to_string()))
}

// Without an id an element cannot be attributed to a project, so the
// fetch as a whole is not of the expected shape.
fn identity(json: &str, what: &str) -> Result<ProjectIdentity, MalformedBody> {
    serde_json::from_str::<ProjectIdentity>(json)
        .map_err(|e| MalformedBody(format!("{what} has no readable \"id\": {e}")))
}

fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_project_is_attributed_not_fatal() {
        let body = br#"{"revision": 3, "projects": [
            {"id": "good", "revision": 1, "environments": []},
            {"id": "bad", "revision": 2, "environments": "nope"}
        ]}"#;
        let snap = parse_snapshot(body).unwrap();
        assert_eq!(snap.cursor, Cursor::Revision(3));
        assert!(snap.projects[0].as_document().is_some());
        let bad = &snap.projects[1];
        assert!(matches!(bad.content, Content::Unreadable(_)));
        assert_eq!(bad.id, "bad");
        assert_eq!(bad.revision, Some(2));
    }

    #[test]
    fn element_without_id_rejects_the_whole_body() {
        assert!(parse_snapshot(br#"{"revision": 1, "projects": [{"x": 1}]}"#).is_err());
        assert!(parse_snapshot(br#"{"revision": 1, "projects": [7]}"#).is_err());
    }

    #[test]
    fn wrong_top_level_shape_is_malformed() {
        for body in [
            &b"not json"[..],
            b"{}",
            b"[]",
            br#"{"revision": -1, "projects": []}"#,
            b"",
        ] {
            assert!(parse_snapshot(body).is_err());
        }
        assert!(parse_changes(br#"{"revision": 1, "removed": "x"}"#).is_err());
    }

    #[test]
    fn pointer_maps_sort_keep_the_last_duplicate_and_round_trip() {
        let map: PointerMap = serde_json::from_str(r#"{"b": "2", "a": "1", "b": "3"}"#).unwrap();
        assert_eq!(map.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "3")]);
        assert_eq!(map.get("b"), Some("3"));
        assert_eq!(map.get("c"), None);
        assert_eq!(serde_json::to_string(&map).unwrap(), r#"{"a":"1","b":"3"}"#);
        let mut m = map.clone();
        m.extend([("a", "9"), ("c", "4")]);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"a":"9","b":"3","c":"4"}"#
        );
        assert!(serde_json::from_str::<PointerMap>(r#"{"a": 1}"#).is_err());
    }

    /// The content digest ignores spelling and signature times, and
    /// nothing else.
    #[test]
    fn the_content_digest_tells_other_content_from_another_spelling() {
        let read = |text: &str| serde_json::from_str::<WireProject>(text).unwrap();
        let env = |slug: &str, v: &str| {
            format!(
                r##"{{"id":"e-{slug}","slug":"{slug}","name":"N","color":"#000000","pointers":{{"prompts":{{"b":"1","a":"{v}"}}}}}}"##
            )
        };
        let doc = |v: &str, extra: &str| {
            read(&format!(
                r#"{{"id":"p","revision":3{extra},"environments":[{},{}]}}"#,
                env("prod", v),
                env("staging", "1")
            ))
        };
        let base = doc("1", "");
        let respelt = read(&format!(
            "{{ \"environments\": [ {}, {} ], \"revision\": 3, \"id\": \"p\", \"unknown\": 1 }}",
            env("prod", "1"),
            env("staging", "1")
        ));
        assert_eq!(base.content_digest(), respelt.content_digest());
        let stamped = doc(
            "1",
            r#","signed_at":"2026-12-01T00:00:00Z","expires_at":"2027-01-01T00:00:00Z""#,
        );
        assert_eq!(base.content_digest(), stamped.content_digest());
        assert!(base.same_content(&stamped));
        for other in [
            doc("2", ""),
            doc("1", r#","published_at":"2026-12-01T00:00:00Z""#),
        ] {
            assert_ne!(base.content_digest(), other.content_digest());
            assert!(!base.same_content(&other));
        }
    }

    #[test]
    fn a_batch_names_projects_or_removed_and_the_other_defaults_to_empty() {
        for body in [
            &br#"{"revision": 9, "projects": []}"#[..],
            br#"{"revision": 9, "removed": []}"#,
            br#"{"revision": 9, "projects": [], "removed": []}"#,
        ] {
            let c = parse_changes(body).unwrap();
            assert_eq!(c.cursor, Cursor::Revision(9));
            assert!(c.projects.is_empty() && c.removed.is_empty());
        }
        for body in [
            &br#"{"revision": 9}"#[..],
            br#"{"revision": 9, "changes": [{"id": "a", "revision": 2}]}"#,
        ] {
            let err = parse_changes(body).unwrap_err();
            assert!(err.0.contains("names neither"), "{err}");
        }
    }

    #[test]
    fn pointer_map_insert_replaces_or_adds_in_order() {
        let mut map: PointerMap = [("m", "1"), ("é", "x")].into_iter().collect();
        map.insert("a", "0");
        map.insert("m", "2");
        let entries: Vec<_> = map.iter().collect();
        assert_eq!(entries, [("a", "0"), ("m", "2"), ("é", "x")]);
        assert_eq!(map.get("m"), Some("2"));
        assert_eq!(map.get("b"), None);
        assert!(PointerMap::default().is_empty());
    }

    /// An envelope of `payload` (unsigned: reading never checks).
    fn envelope(payload: &str) -> String {
        envelope::encode(PROJECT_TYPE, payload.as_bytes(), &[])
    }

    #[test]
    fn one_bad_envelope_in_a_snapshot_is_that_element_alone() {
        let good = r#"{"id": "good", "revision": 1, "environments": []}"#;
        let forged = envelope(r#"{"id": "forged", "revision": 2, "environments": []}"#);
        let body = format!(
            r#"{{"revision": 3, "projects": [{good}, {forged},
                {{"payloadType": "x", "payload": "!!", "signatures": []}},
                {}]}}"#,
            envelope("not json")
        );
        let snap = parse_snapshot(body.as_bytes()).unwrap();
        assert_eq!(snap.projects.len(), 2);
        assert_eq!(snap.projects[1].id, "forged");
        assert_eq!(snap.projects[1].revision, Some(2));
        assert!(matches!(snap.projects[1].content, Content::Sealed(_)));
        assert_eq!(snap.unattributed.len(), 2, "{:?}", snap.unattributed);
        assert!(snap.unattributed[0].starts_with("element 2: "));
    }

    #[test]
    fn an_element_over_the_limit_is_refused_unread_and_attributed_when_plain() {
        let reader = BodyReader {
            max_document_bytes: 64,
            ..BodyReader::default()
        };
        let long = format!(
            r#"{{"id": "big", "revision": 1, "environments": [], "pad": "{}"}}"#,
            "x".repeat(100)
        );
        let sealed = envelope(&long);
        let body = format!(r#"{{"revision": 1, "projects": [{long}, {sealed}]}}"#);
        let snap = reader.snapshot(body.as_bytes()).unwrap();
        assert_eq!(snap.projects.len(), 1);
        assert_eq!(snap.projects[0].id, "big");
        assert_eq!(snap.projects[0].content, Content::TooLarge(long.len()));
        assert_eq!(snap.unattributed.len(), 1);
        assert_eq!(
            reader.filed("big", &sealed).content,
            Content::TooLarge(sealed.len())
        );
    }

    #[test]
    fn opening_says_why_a_payload_does_not_serve() {
        let reader = BodyReader::default();
        // A repeated field: the parse error, not a missing signed_at.
        let twice = envelope(r#"{"id": "a", "revision": 1, "revision": 2, "environments": []}"#);
        let Some(Err(Unopened { message: why, .. })) = reader.filed("a", &twice).open() else {
            panic!("read");
        };
        assert!(why.contains("duplicate field"), "{why}");
        // Filed under another project's id.
        let other = envelope(r#"{"id": "b", "revision": 1, "environments": []}"#);
        let Some(Err(Unopened {
            message: why,
            revision,
        })) = reader.filed("a", &other).open()
        else {
            panic!("read");
        };
        assert_eq!(revision, Some(1));
        assert!(
            why.contains(r#"filed under "a""#) && why.contains(r#""b""#),
            "{why}"
        );
        let plain = reader.filed("a", r#"{"id": "b", "revision": 1, "environments": []}"#);
        assert!(matches!(plain.content, Content::Unreadable(ref m) if m.contains("filed under")));
        // A plain element is not opened; a good envelope opens to its payload.
        assert_eq!(plain.open(), None);
        let good = envelope(r#"{"id": "a", "revision": 4, "environments": []}"#);
        let opened = reader.filed("a", &good).open().unwrap().unwrap();
        assert_eq!((opened.id.as_str(), opened.revision), ("a", 4));
        assert!(matches!(opened.payload, Payload::Document(_)));
    }
}
