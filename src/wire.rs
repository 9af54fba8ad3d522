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

/// The three pointer maps an environment carries. Sorted by key, so every
/// rendering of a project is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// Key → version, sorted by key, in one flat vector. These maps hold a
/// handful of entries; a `BTreeMap` would spend a ~500-byte node on each,
/// which dominated the memory of a loaded snapshot. Duplicate keys in a
/// document: the last one wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PointerMap(Vec<(Box<str>, Box<str>)>);

impl PointerMap {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    /// Sets `key` to `value`, replacing any previous value.
    pub fn insert(&mut self, key: impl Into<Box<str>>, value: impl Into<Box<str>>) {
        let (key, value) = (key.into(), value.into());
        match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }
}

impl<K: Into<Box<str>>, V: Into<Box<str>>> Extend<(K, V)> for PointerMap {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, entries: I) {
        for (k, v) in entries {
            self.insert(k, v);
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
        let mut map = ser.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(&**k, &**v)?;
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
                let mut entries: Vec<(Box<str>, Box<str>)> =
                    Vec::with_capacity(access.size_hint().unwrap_or(0));
                while let Some((k, v)) = access.next_entry::<String, String>()? {
                    entries.push((k.into_boxed_str(), v.into_boxed_str()));
                }
                // Stable sort, then keep the last of equal keys.
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                let mut deduped: Vec<(Box<str>, Box<str>)> = Vec::with_capacity(entries.len());
                for entry in entries {
                    match deduped.last_mut() {
                        Some(last) if last.0 == entry.0 => *last = entry,
                        _ => deduped.push(entry),
                    }
                }
                Ok(PointerMap(deduped))
            }
        }
        de.deserialize_map(Visitor)
    }
}

/// A release awaiting approval. Informational only: never served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheduled {
    pub at: String,
    #[serde(default)]
    pub pointers: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// A project element of a fetch that could not even be read as a project
/// document (wrong types, missing required fields). It is rejected like an
/// invalid document, so it never blocks its siblings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub id: String,
    pub revision: Option<u64>,
    pub message: String,
}

/// A project element of a fetch: readable, or rejected at the wire level.
pub type Incoming = Result<WireProject, Unreadable>;

/// The body is not JSON of the expected shape: the whole fetch is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed body: {0}")]
pub struct MalformedBody(pub String);

/// `GET /v1/snapshot` and the snapshot file: `{"revision": N, "projects": [...]}`.
#[derive(Debug)]
pub struct SnapshotBody {
    pub revision: u64,
    pub projects: Vec<Incoming>,
}

/// `GET /v1/changes`: `{"revision": M, "projects": [...], "removed": [...]}`.
#[derive(Debug)]
pub struct ChangesBody {
    pub revision: u64,
    pub projects: Vec<Incoming>,
    pub removed: Vec<String>,
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
    projects: Vec<&'a RawValue>,
    #[serde(default)]
    removed: Vec<String>,
}

/// Just enough of a project to attribute a rejection to it.
#[derive(Deserialize)]
struct ProjectIdentity {
    id: String,
    #[serde(default)]
    revision: Option<u64>,
}

pub fn parse_snapshot(body: &[u8]) -> Result<SnapshotBody, MalformedBody> {
    let raw: RawSnapshot =
        serde_json::from_slice(body).map_err(|e| MalformedBody(e.to_string()))?;
    Ok(SnapshotBody {
        revision: raw.revision,
        projects: parse_projects(&raw.projects)?,
    })
}

pub fn parse_changes(body: &[u8]) -> Result<ChangesBody, MalformedBody> {
    let raw: RawChanges = serde_json::from_slice(body).map_err(|e| MalformedBody(e.to_string()))?;
    Ok(ChangesBody {
        revision: raw.revision,
        projects: parse_projects(&raw.projects)?,
        removed: raw.removed,
    })
}

/// `GET /v1/projects/{id}`: a single document.
pub fn parse_project(body: &[u8]) -> Result<Incoming, MalformedBody> {
    let raw: &RawValue = serde_json::from_slice(body).map_err(|e| MalformedBody(e.to_string()))?;
    parse_one(raw)
}

fn parse_projects(raw: &[&RawValue]) -> Result<Vec<Incoming>, MalformedBody> {
    raw.iter().map(|r| parse_one(r)).collect()
}

fn parse_one(raw: &RawValue) -> Result<Incoming, MalformedBody> {
    match serde_json::from_str::<WireProject>(raw.get()) {
        Ok(doc) => Ok(Ok(doc)),
        Err(err) => match serde_json::from_str::<ProjectIdentity>(raw.get()) {
            Ok(who) => Ok(Err(Unreadable {
                id: who.id,
                revision: who.revision,
                message: err.to_string(),
            })),
            // Without an id the element cannot be attributed to a project,
            // so the fetch as a whole is not of the expected shape.
            Err(_) => Err(MalformedBody(format!(
                "a project element has no readable \"id\": {err}"
            ))),
        },
    }
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
        assert_eq!(snap.revision, 3);
        assert!(snap.projects[0].is_ok());
        let bad = snap.projects[1].as_ref().unwrap_err();
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

    #[test]
    fn changes_default_to_empty_lists() {
        let c = parse_changes(br#"{"revision": 9}"#).unwrap();
        assert_eq!(c.revision, 9);
        assert!(c.projects.is_empty() && c.removed.is_empty());
    }
}
