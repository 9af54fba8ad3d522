//! The store: every project's served snapshot, readable without locks, the
//! one way to resolve a request against it, and the one writer that
//! applies updates to it.
//!
//! * this module: the shared state and the read side ([`Store`]), with
//!   the hot path's single entry, [`Store::resolve_with`];
//! * [`project`]: a project as served, its answers pre-rendered;
//! * [`at_rest`]: a project's accepted document, kept compressed;
//! * [`answer`]: the answer types a resolve lends;
//! * [`pointers`]: one pointer read back out of an answer (embedders);
//! * [`pointers_struct`]: the pointers as a gRPC `Check`'s metadata
//!   struct, encoded per `Check` or rendered by the writer;
//! * [`apply`]: [`StoreWriter`], which validates and publishes updates.
//!
//! The store never does I/O and never imports the layers above it (sync,
//! server): it is told what changed and answers what is served.
//!
//! # Structure, and why
//!
//! `ArcSwap<Index>` where `Index` maps a project id to a `Slot` (held by
//! value), and each slot is an `ArcSwap<Project>`. A reader does two lock-free loads (the
//! index, then the slot) and holds both guards for the whole answer, so an
//! answer always comes from exactly one accepted revision.
//!
//! * Replacing a project (the common update) is one `store` into its slot:
//!   work proportional to that project, whatever the number of projects.
//! * Adding or removing projects swaps a new index, copied from the old one
//!   once per fetch: O(projects) pointer copies, paid only when the set of
//!   projects changes.
//! * `dashmap` was the other candidate. Its shards are `RwLock`s: a reader
//!   takes a read lock and waits whenever the writer is inserting into the
//!   same shard. Here readers never wait for the writer, at all.
//!
//! Only [`StoreWriter`] can change anything, and there is exactly one per
//! store (it is not `Clone`), owned by the writer task. Everything the
//! writer needs to decide (last accepted document per project for slug
//! immutability and revision order) lives in the served snapshot itself.

pub mod answer;
pub mod apply;
pub mod at_rest;
pub mod pointers;
pub mod pointers_struct;
pub mod project;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::lock::lock;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use compact_str::CompactString;

use crate::model::cursor::Cursor;
use crate::model::floor::Floor;
use crate::model::validate::{is_valid_id, lower_slug, Reason, MAX_SLUG_LEN};
pub use answer::{Answer, AnswerRef, Outcome, ResolveError, StructBytes};
pub use apply::{
    ApplyError, ApplyReport, Contents, DueOutcome, Judge, Judged, StoreWriter, Update,
};
pub use pointers::{PointerIter, PointerKind};
pub use pointers_struct::{PointersStruct, PointersStructs};
pub use project::Project;

/// Mass removal is only guarded once at least this many projects are loaded.
pub const MASS_REMOVAL_MIN_LOADED: usize = 10;

/// The blast-radius rule (DESIGN §4), for the writer and for `publish`
/// alike: removing `removing` of `loaded` projects is a mass removal when
/// at least [`MASS_REMOVAL_MIN_LOADED`] are loaded and more than
/// `max_fraction` of them would go.
pub fn is_mass_removal(removing: usize, loaded: usize, max_fraction: f64) -> bool {
    loaded >= MASS_REMOVAL_MIN_LOADED && removing as f64 > max_fraction * loaded as f64
}

/// Project id → that project's slot, held by value: a lookup is one hop
/// from the bucket to the project.
pub(super) type Index = HashMap<CompactString, Slot, foldhash::fast::RandomState>;

#[derive(Debug)]
pub(super) struct Slot(pub(super) ArcSwap<Project>);

/// A copy of the index sharing every project. The writer swaps it in when
/// the set of projects changes; replacements from then on go to the copy.
pub(super) fn copy_index(index: &Index) -> Index {
    let mut copy = Index::with_capacity_and_hasher(index.len() + 16, Default::default());
    copy.extend(
        index
            .iter()
            .map(|(id, slot)| (id.clone(), Slot(ArcSwap::new(slot.0.load_full())))),
    );
    copy
}

#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) index: ArcSwap<Index>,
    pub(super) loaded: AtomicBool,
    /// Cursor of the last applied snapshot or change batch.
    pub(super) cursor: Mutex<Cursor>,
    pub(super) projects: AtomicUsize,
    pub(super) environments: AtomicUsize,
    /// Last rejection per project id. Touched by the writer and by
    /// introspection only, never by resolve.
    pub(super) rejections: Mutex<HashMap<String, Rejection>>,
    /// The floor ([`Floor`]) of each project not served that was
    /// accepted before: removed by a signed tombstone (at its revision),
    /// or whose cached document could no longer be served at a restart
    /// (at that document's revision). No document up to it brings the
    /// project back (a replayed old envelope is stale). Writer and cache
    /// only, never resolve. A served project's floor is its revision.
    pub(super) floors: Mutex<HashMap<String, Floor>>,
    /// Projects whose source holds an older revision than this node serves
    /// (or than its floor): id → the source's revision. Kept until the
    /// source sends anything not older, or the project goes. Writer and
    /// reports only.
    pub(super) ahead: Mutex<HashMap<String, u64>>,
}

/// A rejected document, kept for introspection until a newer revision of
/// the project is accepted or the project goes away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub project: String,
    pub revision: Option<u64>,
    pub reason: Reason,
    pub message: String,
    pub at: SystemTime,
}

/// Read side of the store. Cheap to clone; every clone sees the same data.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl Store {
    /// A new, empty (not ready) store and its only writer.
    pub fn new(max_removed_fraction: f64) -> (Store, StoreWriter) {
        let shared = Arc::new(Shared::default());
        (
            Store {
                shared: shared.clone(),
            },
            StoreWriter::new(shared, max_removed_fraction),
        )
    }

    /// True once a full snapshot has been applied.
    #[inline]
    pub fn is_loaded(&self) -> bool {
        self.shared.loaded.load(Ordering::Acquire)
    }

    /// Resolves a request against the current snapshot and lends the
    /// answer to `f`: the hot path, and its only entry. A syntax check, two
    /// lock-free loads (index, then project) whose guards live for the
    /// whole call, a hash lookup and a binary search; no lock against the
    /// writer, no parsing, no allocation. `environment` is the slug as the
    /// client sent it (any ASCII case); `None` means not requested. Take
    /// [`AnswerRef::owned`] in `f` for an answer that outlives the call.
    #[inline]
    pub fn resolve_with<R>(
        &self,
        project: &str,
        environment: Option<&str>,
        strict: bool,
        f: impl FnOnce(AnswerRef<'_>) -> R,
    ) -> Result<R, ResolveError> {
        if !is_valid_id(project) {
            return Err(ResolveError::InvalidProject);
        }
        let mut buf = [0u8; MAX_SLUG_LEN];
        let slug = match environment {
            None => None,
            Some(raw) => Some(lower_slug(raw, &mut buf).ok_or(ResolveError::InvalidEnvironment)?),
        };
        if !self.is_loaded() {
            return Err(ResolveError::NotReady);
        }
        let index = self.shared.index.load();
        let slot = index.get(project).ok_or(ResolveError::UnknownProject)?;
        let served = slot.0.load();
        served
            .answer(slug, strict)
            .map(f)
            .ok_or(ResolveError::UnknownEnvironment)
    }

    /// The current snapshot of one project, owned.
    pub fn project(&self, id: &str) -> Option<Arc<Project>> {
        self.shared
            .index
            .load()
            .get(id)
            .map(|slot| slot.0.load_full())
    }

    /// Every project, sorted by id.
    pub fn projects(&self) -> Vec<Arc<Project>> {
        let index = self.shared.index.load_full();
        let mut all: Vec<Arc<Project>> = index.values().map(|s| s.0.load_full()).collect();
        all.sort_unstable_by(|a, b| a.id().cmp(b.id()));
        all
    }

    pub fn project_count(&self) -> usize {
        self.shared.projects.load(Ordering::Relaxed)
    }

    pub fn environment_count(&self) -> usize {
        self.shared.environments.load(Ordering::Relaxed)
    }

    /// Cursor of the last applied snapshot or change batch.
    pub fn cursor(&self) -> Cursor {
        *lock(&self.shared.cursor)
    }

    /// The earliest scheduled change still to come, over all projects
    /// (a scan: for status pages, not the hot path).
    pub fn next_scheduled(&self) -> Option<(String, SystemTime)> {
        let index = self.shared.index.load();
        index
            .values()
            .filter_map(|slot| {
                let p = slot.0.load();
                p.next_due().map(|at| (p.id().to_owned(), at))
            })
            .min_by_key(|(_, at)| *at)
    }

    pub fn rejection(&self, id: &str) -> Option<Rejection> {
        self.rejections().get(id).cloned()
    }

    /// All kept rejections, sorted by project id.
    pub fn all_rejections(&self) -> Vec<Rejection> {
        let mut all: Vec<Rejection> = self.rejections().values().cloned().collect();
        all.sort_by(|a, b| a.project.cmp(&b.project));
        all
    }

    /// The revision floor of project `id` when it is not served (a signed
    /// tombstone removed it, or its cached document could not be served).
    pub fn floor_revision(&self, id: &str) -> Option<u64> {
        self.floor(id).map(Floor::revision)
    }

    /// The floor of project `id` when it is not served (see [`Floor`]).
    pub fn floor(&self, id: &str) -> Option<Floor> {
        lock(&self.shared.floors).get(id).copied()
    }

    /// The floors of projects not served, sorted by id (what the cache
    /// keeps).
    pub fn floors(&self) -> Vec<(String, Floor)> {
        let mut all: Vec<(String, Floor)> = lock(&self.shared.floors)
            .iter()
            .map(|(id, floor)| (id.clone(), *floor))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The projects whose source holds an older revision than this node
    /// keeps, sorted by id: `(id, revision kept, the source's revision)`.
    pub fn all_ahead(&self) -> Vec<(String, u64, u64)> {
        let ahead: Vec<(String, u64)> = lock(&self.shared.ahead)
            .iter()
            .map(|(id, source)| (id.clone(), *source))
            .collect();
        let mut all: Vec<(String, u64, u64)> = ahead
            .into_iter()
            .filter_map(|(id, source)| {
                let kept = self
                    .project(&id)
                    .map(|p| p.revision())
                    .or_else(|| self.floor_revision(&id))?;
                Some((id, kept, source))
            })
            .collect();
        all.sort();
        all
    }

    fn rejections(&self) -> MutexGuard<'_, HashMap<String, Rejection>> {
        lock(&self.shared.rejections)
    }
}
