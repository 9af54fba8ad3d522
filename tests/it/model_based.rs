//! Model-based test: random sequences of fetches (valid, invalid, stale,
//! slug-changing, unreadable documents; removals; mass removals) applied to
//! the store; after every step the served state must equal a simple
//! reference model: the last valid accepted revision of each project.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use env_sidecar::model::origin::{MassRemoval, Origin};
use env_sidecar::model::wire::{ChangesBody, Incoming, SnapshotBody, WireProject};
use env_sidecar::store::{Contents, Store, StoreWriter, Update};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::json;

const IDS: usize = 14;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    Valid,
    /// Breaks a field rule.
    Invalid,
    /// Renames environment `<id>_qa` from `qa` to `quality`.
    Renamed,
    /// Not readable as a project document at all.
    Unreadable,
}

#[derive(Debug, Clone)]
enum Op {
    Changes {
        docs: Vec<(usize, u64, Variant)>,
        removed: Vec<usize>,
    },
    Snapshot {
        docs: Vec<(usize, u64, Variant)>,
        allow: bool,
    },
    Project {
        id: usize,
        doc: Option<(u64, Variant)>,
    },
}

fn variant() -> impl Strategy<Value = Variant> {
    prop_oneof![6 => Just(Variant::Valid), 2 => Just(Variant::Invalid), 1 => Just(Variant::Renamed), 1 => Just(Variant::Unreadable)]
}

fn doc() -> impl Strategy<Value = (usize, u64, Variant)> {
    (0..IDS, 1u64..8, variant())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (prop::collection::vec(doc(), 0..6), prop::collection::vec(0..IDS, 0..4))
            .prop_map(|(docs, removed)| Op::Changes { docs, removed }),
        2 => (prop::collection::vec(doc(), 0..IDS + 2), any::<bool>()).prop_map(|(docs, allow)| Op::Snapshot { docs, allow }),
        1 => (0..IDS, prop::option::of((1u64..8, variant()))).prop_map(|(id, doc)| Op::Project { id, doc }),
    ]
}

fn id(i: usize) -> String {
    format!("p{i}")
}

/// A document; `stamp` (which step and position produced it) goes into a
/// pointer so the test can tell which of two same-revision documents serves.
fn incoming(i: usize, revision: u64, v: Variant, stamp: &str) -> Incoming {
    let mut doc = common::project(&id(i), revision);
    doc["environments"][1]["pointers"]["routing_rules"] = json!({"default": stamp});
    match v {
        Variant::Valid => {}
        Variant::Invalid => doc["environments"][0]["color"] = json!("BAD"),
        Variant::Renamed => doc["environments"][1]["slug"] = json!("quality"),
        Variant::Unreadable => return Incoming::unreadable(id(i), Some(revision), "unreadable"),
    }
    Incoming::document(serde_json::from_value::<WireProject>(doc).unwrap())
}

/// The reference: id → (revision, slug of the `<id>_qa` environment, stamp
/// of the document that serves).
#[derive(Debug, Default, Clone, PartialEq)]
struct Model(BTreeMap<String, (u64, &'static str, String)>);

impl Model {
    fn apply(
        &mut self,
        docs: &[(usize, u64, Variant)],
        removals: Vec<String>,
        allow: bool,
        step: usize,
    ) {
        let loaded = self.0.len();
        if !allow && loaded >= 10 && removals.len() as f64 > 0.5 * loaded as f64 {
            return; // refused whole
        }
        for (pos, &(i, revision, v)) in docs.iter().enumerate() {
            let key = id(i);
            let current = self.0.get(&key).map(|(r, s, _)| (*r, *s));
            if current.is_some_and(|(r, _)| revision <= r) {
                continue; // stale or equal
            }
            let slug = match v {
                Variant::Invalid | Variant::Unreadable => continue,
                Variant::Valid => "qa",
                Variant::Renamed => "quality",
            };
            if current.is_some_and(|(_, s)| s != slug) {
                continue; // slug change refused
            }
            self.0
                .insert(key, (revision, slug, format!("s{step}-{pos}")));
        }
        for r in removals {
            self.0.remove(&r);
        }
    }
}

fn observed(store: &Store) -> Model {
    let mut m = Model::default();
    for p in store.projects() {
        let keys = p.environment_keys();
        let (_, served) = keys.iter().find(|(id, _)| id.ends_with("_qa")).unwrap();
        let slug = if *served == "qa" { "qa" } else { "quality" };
        // What is served carries the same revision.
        let answer = store
            .resolve_with(p.id(), Some(slug), true, |a| a.owned())
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&answer.body()).unwrap();
        assert_eq!(body["revision"], p.revision());
        assert_eq!(
            body["pointers"]["prompts"]["summarize"],
            format!("qa-r{}", p.revision())
        );
        let stamp = body["pointers"]["routing_rules"]["default"]
            .as_str()
            .unwrap()
            .to_owned();
        m.0.insert(p.id().to_owned(), (p.revision(), slug, stamp));
    }
    m
}

fn step(writer: &mut StoreWriter, model: &mut Model, op: &Op, n: usize) {
    let stamp = |pos: usize| format!("s{n}-{pos}");
    let apply = |writer: &mut StoreWriter, origin, contents| {
        let _ = writer.apply(Update::new(origin, contents), SystemTime::now());
    };
    match op {
        Op::Changes { docs, removed } => {
            let present: Vec<String> = removed.iter().map(|&i| id(i)).collect();
            let mut seen = HashSet::new();
            let removals = present
                .iter()
                .filter(|r| model.0.contains_key(*r) && seen.insert((*r).clone()))
                .cloned()
                .collect();
            model.apply(docs, removals, false, n);
            let body = ChangesBody {
                cursor: env_sidecar::model::cursor::Cursor::Revision(1),
                projects: docs
                    .iter()
                    .enumerate()
                    .map(|(pos, &(i, r, v))| incoming(i, r, v, &stamp(pos)))
                    .collect(),
                removed: present,
                ..ChangesBody::default()
            };
            apply(writer, Origin::Changes, Contents::Changes(body));
        }
        Op::Snapshot { docs, allow } => {
            let ids: HashSet<String> = docs.iter().map(|&(i, _, _)| id(i)).collect();
            let removals = model
                .0
                .keys()
                .filter(|k| !ids.contains(*k))
                .cloned()
                .collect();
            model.apply(docs, removals, *allow, n);
            let projects = docs
                .iter()
                .enumerate()
                .map(|(pos, &(i, r, v))| incoming(i, r, v, &stamp(pos)))
                .collect();
            let body = SnapshotBody {
                cursor: env_sidecar::model::cursor::Cursor::Revision(1),
                projects,
                ..SnapshotBody::default()
            };
            let origin = if *allow {
                Origin::Refresh(MassRemoval::Allowed)
            } else {
                Origin::Snapshot
            };
            apply(writer, origin, Contents::Snapshot(body));
        }
        Op::Project { id: i, doc } => {
            match doc {
                Some((r, v)) => model.apply(&[(*i, *r, *v)], Vec::new(), false, n),
                None => {
                    let removals = if model.0.contains_key(&id(*i)) {
                        vec![id(*i)]
                    } else {
                        Vec::new()
                    };
                    model.apply(&[], removals, false, n);
                }
            }
            let document = doc.map(|(r, v)| incoming(*i, r, v, &stamp(0)));
            let contents = Contents::Project {
                id: id(*i),
                document,
            };
            apply(writer, Origin::Refresh(MassRemoval::Guarded), contents);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Failures are saved beside this file (model_based.proptest-regressions,
        // committed) and replayed first on every run.
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_store_serves_exactly_what_the_model_says(ops in prop::collection::vec(op(), 1..40)) {
        let (store, mut writer) = Store::new(0.5);
        // A sync always starts with a snapshot (here an empty one).
        let empty = SnapshotBody::default();
        writer.apply(Update::new(Origin::Snapshot, Contents::Snapshot(empty)), SystemTime::now()).unwrap();
        let mut model = Model::default();
        for (n, op) in ops.iter().enumerate() {
            step(&mut writer, &mut model, op, n);
            prop_assert_eq!(observed(&store), model.clone(), "after step {}: {:?}", n, op);
            prop_assert_eq!(store.project_count(), model.0.len());
        }
    }
}
