//! Model-based test of signed documents: random sequences of what a
//! publisher and an attacker do to a sidecar that requires signatures
//! (publish a revision, re-sign the served one, replay any envelope ever
//! made, write unsigned documents and removals, sign tombstones, add and
//! remove trusted keys, let time pass beyond expiries, restart from the
//! last-known-good cache), through the real store, writer checks and
//! cache codec; and sequences that start with signatures not required,
//! the publisher writing plain documents, until the operator switches
//! `require_signatures` on. After every step:
//!
//! * the revision served of a project is never lower than any revision
//!   ever served of it, across restarts too;
//! * an accepted project leaves only through a signed tombstone, or at a
//!   restart because its kept document is no longer believed (its key was
//!   removed, it expired, it is unsigned and signatures are now
//!   required): nothing an attacker writes removes it;
//! * nothing unsigned is served while signatures are required and the
//!   sidecar has restarted since they were;
//! * the kept envelope of a served revision is never replaced by one
//!   signed earlier;
//! * the switch never blanks a project: once the publisher re-signs the
//!   newest revision it made with a trusted key, that revision serves
//!   (unless a tombstone removed it, or something newer was served).

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use env_sidecar::model::keys::{self, PublicKey, SigningKey};
use env_sidecar::model::origin::Origin;
use env_sidecar::model::trust::Trust;
use env_sidecar::model::wire::{parse_element, ChangesBody, Incoming, WireProject};
use env_sidecar::store::{Contents, Store, StoreWriter, Update};
use env_sidecar::sync::cache;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const IDS: usize = 3;
const KEYS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// The publisher signs project `id` at a revision `step` above the
    /// newest it made, expiring `expires` seconds later (if any).
    Publish {
        id: usize,
        step: u64,
        expires: Option<u64>,
    },
    /// The publisher re-signs the newest revision of `id` it made.
    Resign { id: usize },
    /// The attacker writes back the `nth` envelope ever made (modulo).
    Replay { nth: usize },
    /// The attacker writes an unsigned document of `id` at `revision`.
    Unsigned { id: usize, revision: u64 },
    /// The attacker removes `id` without a signature.
    UnsignedRemove { id: usize },
    /// The publisher removes `id` with a signed tombstone.
    Tombstone { id: usize },
    /// Key `k` becomes trusted (and the publisher signs with it).
    AddKey { k: usize },
    /// Key `k` is no longer trusted.
    RemoveKey { k: usize },
    /// Time passes.
    Wait { secs: u64 },
    /// The sidecar restarts from its cache.
    Restart,
    /// The publisher writes a plain document of `id` at a revision `step`
    /// above the newest it made (what it does before signing).
    PublishPlain { id: usize, step: u64 },
    /// The operator turns `require_signatures` on.
    Require,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..IDS, 1u64..3, prop::option::of(1u64..120))
            .prop_map(|(id, step, expires)| Op::Publish { id, step, expires }),
        2 => (0..IDS).prop_map(|id| Op::Resign { id }),
        4 => any::<usize>().prop_map(|nth| Op::Replay { nth }),
        1 => (0..IDS, 0u64..12).prop_map(|(id, revision)| Op::Unsigned { id, revision }),
        1 => (0..IDS).prop_map(|id| Op::UnsignedRemove { id }),
        1 => (0..IDS).prop_map(|id| Op::Tombstone { id }),
        1 => (0..KEYS).prop_map(|k| Op::AddKey { k }),
        1 => (0..KEYS).prop_map(|k| Op::RemoveKey { k }),
        2 => (1u64..90).prop_map(|secs| Op::Wait { secs }),
        2 => Just(Op::Restart),
        1 => (0..IDS, 1u64..3).prop_map(|(id, step)| Op::PublishPlain { id, step }),
        1 => Just(Op::Require),
    ]
}

/// The world: keys, what the publisher made, the sidecar, the clock.
struct World {
    signers: Vec<SigningKey>,
    publics: Vec<PublicKey>,
    trusted: Vec<bool>,
    /// The key the publisher signs with now.
    signing: usize,
    now: SystemTime,
    /// Every envelope ever made, in order.
    made: Vec<String>,
    /// Which of them are tombstones, by index: of which project.
    tombstones: BTreeMap<usize, String>,
    /// The newest revision the publisher made of each project, and
    /// whether it was a tombstone's.
    newest: BTreeMap<usize, u64>,
    tombstoned: std::collections::BTreeSet<usize>,
    /// Signatures are required; since the last restart too.
    required: bool,
    required_since_restart: bool,
    store: Store,
    writer: StoreWriter,
    /// The highest revision ever served of each project.
    max_served: BTreeMap<String, u64>,
}

fn id(i: usize) -> String {
    format!("p{i}")
}

impl World {
    /// A sidecar requiring signatures from the start (`required`), or
    /// serving plain documents until [`Op::Require`].
    fn new(required: bool) -> World {
        let (signers, publics): (Vec<SigningKey>, Vec<PublicKey>) = (0..KEYS)
            .map(|k| {
                let (private, public) = keys::generate(Some(&format!("k{k}"))).unwrap();
                (keys::parse_private(&private).unwrap(), public)
            })
            .unzip();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (store, writer) = Store::new(1.0);
        let mut world = World {
            signers,
            publics,
            trusted: vec![true, false, false],
            signing: 0,
            now,
            made: Vec::new(),
            tombstones: BTreeMap::new(),
            newest: BTreeMap::new(),
            tombstoned: Default::default(),
            required,
            required_since_restart: required,
            store,
            writer,
            max_served: BTreeMap::new(),
        };
        world.writer.set_trust(Arc::new(world.trust()));
        world
    }

    fn trust(&self) -> Trust {
        let keys = self
            .publics
            .iter()
            .zip(&self.trusted)
            .filter(|(_, t)| **t)
            .map(|(k, _)| k.clone())
            .collect();
        Trust::new(keys, self.required, None)
    }

    fn document(&self, i: usize, revision: u64) -> WireProject {
        serde_json::from_value(common::project(&id(i), revision)).unwrap()
    }

    /// Hands one element (or a removal) to the writer, as a change batch.
    fn change(&mut self, element: Option<Incoming>, removed: Option<String>) {
        let body = ChangesBody {
            projects: element.into_iter().collect(),
            removed: removed.into_iter().collect(),
            ..ChangesBody::default()
        };
        let update = Update::new(Origin::Changes, Contents::Changes(body));
        let _ = self.writer.apply(update, self.now);
    }

    fn envelope(&mut self, text: String) {
        self.made.push(text.clone());
        let incoming = parse_element(&text).unwrap();
        self.change(Some(incoming), None);
    }

    fn restart(&mut self) {
        let projects = self.store.projects();
        let floors = self.store.floors();
        let bytes = cache::encode(cache::State {
            cursor: self.store.cursor(),
            projects: &projects,
            floors: &floors,
        });
        let cached = cache::decode(Path::new("model.cache"), &bytes).unwrap();
        let (store, mut writer) = Store::new(1.0);
        writer.set_trust(Arc::new(self.trust()));
        writer.apply(cached.into_update(), self.now).unwrap();
        self.store = store;
        self.writer = writer;
        self.required_since_restart = self.required;
    }

    /// Makes the publisher's next revision of `i`.
    fn next_revision(&mut self, i: usize, step: u64) -> u64 {
        let revision = self.newest.get(&i).copied().unwrap_or(0) + step;
        self.newest.insert(i, revision);
        self.tombstoned.remove(&i);
        revision
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Publish {
                id: i,
                step,
                expires,
            } => {
                let revision = self.next_revision(i, step);
                let expires = expires.map(|s| self.now + Duration::from_secs(s));
                let text = self.signers[self.signing].seal_document(
                    &self.document(i, revision),
                    self.now,
                    expires,
                );
                self.envelope(text);
            }
            Op::Resign { id: i } => {
                if let Some(&revision) = self.newest.get(&i) {
                    let text = self.signers[self.signing].seal_document(
                        &self.document(i, revision),
                        self.now,
                        None,
                    );
                    self.envelope(text);
                }
            }
            Op::Replay { nth } => {
                if !self.made.is_empty() {
                    let text = self.made[nth % self.made.len()].clone();
                    self.change(Some(parse_element(&text).unwrap()), None);
                }
            }
            Op::Unsigned { id: i, revision } => {
                let doc = self.document(i, revision);
                self.change(Some(Incoming::document(doc)), None);
            }
            Op::UnsignedRemove { id: i } => self.change(None, Some(id(i))),
            Op::Tombstone { id: i } => {
                let revision = self.next_revision(i, 1);
                self.tombstoned.insert(i);
                let text = self.signers[self.signing].seal_tombstone(&id(i), revision, self.now);
                self.tombstones.insert(self.made.len(), id(i));
                self.envelope(text);
            }
            Op::AddKey { k } => {
                self.trusted[k] = true;
                self.signing = k;
                self.writer.set_trust(Arc::new(self.trust()));
            }
            Op::RemoveKey { k } => {
                self.trusted[k] = false;
                if let Some(other) = self.trusted.iter().position(|t| *t) {
                    self.signing = other;
                }
                self.writer.set_trust(Arc::new(self.trust()));
            }
            Op::Wait { secs } => self.now += Duration::from_secs(secs),
            Op::Restart => self.restart(),
            Op::PublishPlain { id: i, step } => {
                let revision = self.next_revision(i, step);
                let doc = self.document(i, revision);
                self.change(Some(Incoming::document(doc)), None);
            }
            Op::Require => {
                self.required = true;
                self.writer.set_trust(Arc::new(self.trust()));
            }
        }
        // Advance a little so each envelope is signed later than the last.
        self.now += Duration::from_millis(10);
    }

    /// The project whose tombstone `Replay { nth }` writes back, if it
    /// writes back a tombstone.
    fn replayed_tombstone(&self, nth: usize) -> Option<&str> {
        let n = nth.checked_rem(self.made.len())?;
        self.tombstones.get(&n).map(String::as_str)
    }

    /// `(revision, signed_at, believed at a restart, expired)` of each
    /// served project (a plain one: no `signed_at`, believed while
    /// signatures are not required).
    fn served(&self) -> BTreeMap<String, (u64, Option<SystemTime>, bool, bool)> {
        let trusted: Vec<&str> = self
            .publics
            .iter()
            .zip(&self.trusted)
            .filter(|(_, t)| **t)
            .map(|(k, _)| k.keyid.as_str())
            .collect();
        self.store
            .projects()
            .iter()
            .map(|p| {
                let Some(s) = p.signature() else {
                    assert!(
                        !self.required_since_restart,
                        "{} is served unsigned while signatures are required",
                        p.id()
                    );
                    return (
                        p.id().to_owned(),
                        (p.revision(), None, !self.required, false),
                    );
                };
                (
                    p.id().to_owned(),
                    (
                        p.revision(),
                        Some(s.signed_at),
                        s.keyids.iter().any(|k| trusted.contains(&k.as_str())),
                        s.expires_at.is_some_and(|e| e <= self.now),
                    ),
                )
            })
            .collect()
    }
}

/// Runs `ops` on a sidecar requiring signatures, checking the rules
/// after each; the world they leave.
fn check(ops: &[Op]) -> World {
    check_from(true, ops)
}

/// [`check`], signatures required from the start or not.
fn check_from(required: bool, ops: &[Op]) -> World {
    let mut world = World::new(required);
    let mut before = world.served();
    for (n, op) in ops.iter().enumerate() {
        world.step(op);
        let after = world.served();
        for (p, (revision, signed_at, _, _)) in &after {
            let max = world.max_served.entry(p.clone()).or_insert(0);
            assert!(
                *revision >= *max,
                "step {n} {op:?}: {p} served at {revision} after {max}"
            );
            *max = *revision;
            if let Some((was, Some(was_at), _, _)) = before.get(p) {
                assert!(
                    !(revision == was && signed_at.map_or(true, |at| at < *was_at)),
                    "step {n} {op:?}: {p}'s kept envelope replaced by an older one"
                );
            }
        }
        // Signed outranks unsigned: the publisher's newest revision,
        // re-signed with a trusted key, serves.
        if let Op::Resign { id: i } = *op {
            let p = id(i);
            let newest = world.newest.get(&i).copied();
            let trusted = world.trusted[world.signing];
            let above = world.max_served.get(&p).copied().unwrap_or(0);
            if let (Some(newest), true, false) = (newest, trusted, world.tombstoned.contains(&i)) {
                if above <= newest {
                    assert_eq!(
                        after.get(&p).map(|s| s.0),
                        Some(newest),
                        "step {n} {op:?}: {p} re-signed at {newest} does not serve"
                    );
                }
            }
        }
        for (p, (_, _, was_trusted, was_expired)) in &before {
            if after.contains_key(p) {
                continue;
            }
            // A tombstone signed while its key was not trusted, written
            // back once it is, removes as validly as a new one.
            let tombstoned = match *op {
                Op::Tombstone { id: i } => id(i) == *p,
                Op::Replay { nth } => world.replayed_tombstone(nth) == Some(p.as_str()),
                _ => false,
            };
            // At a restart, a document whose key is gone or which expired
            // is checked again and may no longer be served.
            let restart_dropped =
                matches!(op, Op::Restart) && (!was_trusted || *was_expired || world.required);
            // Before signatures are required, an unsigned removal is one,
            // and the project may come back at any revision (no floor is
            // kept for a plain removal).
            let plain_era = !world.required;
            assert!(
                tombstoned || restart_dropped || plain_era,
                "step {n} {op:?}: {p} left without a signed tombstone"
            );
            if plain_era && !tombstoned {
                world.max_served.remove(p);
            }
        }
        before = after;
    }
    world
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn served_revisions_never_go_back_and_only_signed_tombstones_remove(
        required in prop::bool::weighted(0.7),
        ops in prop::collection::vec(op(), 1..40)
    ) {
        check_from(required, &ops);
    }
}

/// The operator's direct switch: plain documents served and cached,
/// `require_signatures` on, a restart (everything cached is refused),
/// then the same revisions signed: they serve again.
#[test]
fn switching_signatures_on_then_signing_the_same_revisions_serves_them_again() {
    let world = check_from(
        false,
        &[
            Op::PublishPlain { id: 0, step: 1 },
            Op::PublishPlain { id: 1, step: 2 },
            Op::Require,
            Op::Restart,
            Op::Resign { id: 0 },
            Op::Resign { id: 1 },
        ],
    );
    let served = world.served();
    assert_eq!(served.get("p0").map(|s| s.0), Some(1));
    assert_eq!(served.get("p1").map(|s| s.0), Some(2));
}

/// The staged migration: a key trusted and the same revisions published
/// signed while plain ones still serve, then the switch and a restart.
#[test]
fn signing_first_then_requiring_keeps_every_project() {
    let world = check_from(
        false,
        &[
            Op::PublishPlain { id: 0, step: 1 },
            Op::Resign { id: 0 },
            Op::Require,
            Op::Restart,
        ],
    );
    assert_eq!(world.served().get("p0").map(|s| s.0), Some(1));
}

#[test]
fn a_rotation_with_a_replay_and_a_restart_keeps_every_project() {
    check(&[
        Op::Publish {
            id: 0,
            step: 1,
            expires: None,
        },
        Op::AddKey { k: 1 },
        Op::Resign { id: 0 },
        Op::Replay { nth: 0 },
        Op::RemoveKey { k: 0 },
        Op::Restart,
    ]);
}

#[test]
fn an_expired_revision_dropped_at_a_restart_still_holds_its_floor() {
    check(&[
        Op::Publish {
            id: 0,
            step: 1,
            expires: None,
        },
        Op::Publish {
            id: 0,
            step: 1,
            expires: Some(30),
        },
        Op::Wait { secs: 60 },
        Op::Restart,
        Op::Replay { nth: 0 },
    ]);
}

#[test]
fn a_revision_whose_key_was_removed_still_holds_its_floor() {
    check(&[
        Op::Publish {
            id: 0,
            step: 1,
            expires: None,
        },
        Op::AddKey { k: 1 },
        Op::Publish {
            id: 0,
            step: 1,
            expires: None,
        },
        Op::RemoveKey { k: 1 },
        Op::Restart,
        Op::Replay { nth: 0 },
    ]);
}

/// Found by the property in CI: a tombstone signed with a key the sidecar
/// did not trust yet is refused, and removes the project once that key
/// is trusted and the tombstone is written back.
#[test]
fn a_tombstone_signed_before_its_key_was_trusted_removes_once_it_is() {
    let world = check(&[
        Op::RemoveKey { k: 0 },
        Op::AddKey { k: 1 },
        Op::Publish {
            id: 1,
            step: 1,
            expires: None,
        },
        Op::RemoveKey { k: 1 },
        Op::Tombstone { id: 1 },
        Op::AddKey { k: 1 },
        Op::Replay { nth: 1 },
    ]);
    assert!(!world.served().contains_key("p1"));
}
