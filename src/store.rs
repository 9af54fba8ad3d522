//! The store: every project's served snapshot, readable without locks, and
//! the one writer that applies updates to it.
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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::project::Project;
use crate::resolve::{self, Answer, AnswerRef, ResolveError};
use crate::validate::{validate, Reason, ValidationError};
use crate::wire::{ChangesBody, Incoming, SnapshotBody, Unreadable};

/// Mass removal is only guarded once at least this many projects are loaded.
pub const MASS_REMOVAL_MIN_LOADED: usize = 10;

/// Project id → that project's slot, held by value: a lookup is one hop
/// from the bucket to the project.
type Index = HashMap<Box<str>, Slot, foldhash::fast::RandomState>;

#[derive(Debug)]
struct Slot(ArcSwap<Project>);

/// A copy of the index sharing every project. The writer swaps it in when
/// the set of projects changes; replacements from then on go to the copy.
fn copy_index(index: &Index) -> Index {
    let mut copy = Index::with_capacity_and_hasher(index.len() + 16, Default::default());
    copy.extend(
        index
            .iter()
            .map(|(id, slot)| (id.clone(), Slot(ArcSwap::new(slot.0.load_full())))),
    );
    copy
}

#[derive(Debug, Default)]
struct Shared {
    index: ArcSwap<Index>,
    loaded: AtomicBool,
    /// Cursor of the last applied snapshot or change batch (0 = none).
    cursor: AtomicU64,
    projects: AtomicUsize,
    environments: AtomicUsize,
    /// Last rejection per project id. Touched by the writer and by
    /// introspection only, never by resolve.
    rejections: Mutex<HashMap<String, Rejection>>,
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

/// Write side of the store: exactly one exists per store.
#[derive(Debug)]
pub struct StoreWriter {
    shared: Arc<Shared>,
    max_removed_fraction: f64,
}

/// What a fetch brought.
#[derive(Debug)]
pub enum Update {
    /// A full snapshot: projects absent from it are removed.
    Snapshot(SnapshotBody),
    /// A change batch: upserts plus explicit removals.
    Changes(ChangesBody),
    /// One project fetched alone; `None` means the control plane says it
    /// no longer exists.
    Project {
        id: String,
        document: Option<Incoming>,
    },
}

/// How to apply an update.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// The wall-clock instant of the apply: acceptance time, and which
    /// scheduled changes are due.
    pub now: SystemTime,
    /// Operator override of the blast-radius guard.
    pub allow_mass_removal: bool,
}

/// What an applied update changed.
#[derive(Debug, Default, Clone)]
pub struct ApplyReport {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    /// Documents whose revision equals the served one.
    pub unchanged: usize,
    /// Documents older than the served revision, ignored.
    pub stale: usize,
    pub rejected: Vec<Rejection>,
    /// `published_at` of every accepted document that carried one.
    pub published: Vec<SystemTime>,
    /// Accepted projects with scheduled changes still to come, and when
    /// the next one is due (for the scheduler).
    pub scheduled: Vec<(String, SystemTime)>,
    /// Cursor after the update.
    pub cursor: u64,
}

impl ApplyReport {
    /// Projects added, updated or removed.
    pub fn changed(&self) -> usize {
        self.added + self.updated + self.removed
    }
}

/// What applying a project's due scheduled changes did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DueOutcome {
    /// Schedule entries newly in effect.
    pub applied: usize,
    /// When the next entry of this project falls due, if any.
    pub next_due: Option<SystemTime>,
}

/// An update refused as a whole: nothing was changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "refusing to remove {removing} of {loaded} projects (more than {max_fraction} of them); \
         force it with POST /admin/refresh?allow_mass_removal=true if it is intended"
    )]
    MassRemoval {
        removing: usize,
        loaded: usize,
        max_fraction: f64,
    },
}

impl Store {
    /// A new, empty (not ready) store and its only writer.
    pub fn new(max_removed_fraction: f64) -> (Store, StoreWriter) {
        let shared = Arc::new(Shared::default());
        (
            Store {
                shared: shared.clone(),
            },
            StoreWriter {
                shared,
                max_removed_fraction,
            },
        )
    }

    /// True once a full snapshot has been applied.
    #[inline]
    pub fn is_loaded(&self) -> bool {
        self.shared.loaded.load(Ordering::Acquire)
    }

    /// See [`resolve::resolve`].
    #[inline]
    pub fn resolve(
        &self,
        project: &str,
        environment: Option<&str>,
        strict: bool,
    ) -> Result<Answer, ResolveError> {
        resolve::resolve(self, project, environment, strict)
    }

    /// See [`resolve::resolve_with`]: the answer is lent to `f`, not copied.
    #[inline]
    pub fn resolve_with<R>(
        &self,
        project: &str,
        environment: Option<&str>,
        strict: bool,
        f: impl FnOnce(AnswerRef<'_>) -> R,
    ) -> Result<R, ResolveError> {
        resolve::resolve_with(self, project, environment, strict, f)
    }

    /// Runs `f` on the current snapshot of one project, without cloning it.
    #[inline]
    pub fn with_project<R>(&self, id: &str, f: impl FnOnce(Option<&Project>) -> R) -> R {
        let index = self.shared.index.load();
        match index.get(id) {
            Some(slot) => f(Some(&slot.0.load())),
            None => f(None),
        }
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

    /// Cursor of the last applied snapshot or change batch (0 before any).
    pub fn cursor(&self) -> u64 {
        self.shared.cursor.load(Ordering::Relaxed)
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

    fn rejections(&self) -> MutexGuard<'_, HashMap<String, Rejection>> {
        lock(&self.shared.rejections)
    }
}

/// A poisoned lock only means another thread panicked while holding it; the
/// map inside is still a valid map, so keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Per-update state: the index copy, made only if the set of projects changes.
struct Pending<'a> {
    current: &'a Index,
    next: Option<Index>,
}

impl Pending<'_> {
    fn get(&self, id: &str) -> Option<&Slot> {
        self.next.as_ref().unwrap_or(self.current).get(id)
    }

    fn edit(&mut self) -> &mut Index {
        let current = self.current;
        self.next.get_or_insert_with(|| copy_index(current))
    }
}

impl StoreWriter {
    /// A reader of this writer's store.
    pub fn reader(&self) -> Store {
        Store {
            shared: self.shared.clone(),
        }
    }

    /// Applies one fetch: validates every document, publishes the accepted
    /// ones project by project, records rejections, removes what the fetch
    /// removes. A fetch tripping the blast-radius guard changes nothing.
    pub fn apply(&mut self, update: Update, opts: ApplyOptions) -> Result<ApplyReport, ApplyError> {
        let current = self.shared.index.load_full();
        // For a full snapshot: the ids it holds (valid or not).
        let mut present: Option<HashSet<String>> = None;
        let (docs, removals, cursor) = match update {
            Update::Snapshot(body) => {
                let ids: HashSet<String> = body
                    .projects
                    .iter()
                    .map(|d| incoming_id(d).to_owned())
                    .collect();
                let removals: Vec<String> = current
                    .keys()
                    .filter(|id| !ids.contains(&***id))
                    .map(|id| id.to_string())
                    .collect();
                present = Some(ids);
                (body.projects, removals, Some(body.revision))
            }
            Update::Changes(body) => {
                let mut seen = HashSet::new();
                let removals = body
                    .removed
                    .into_iter()
                    .filter(|id| current.contains_key(id.as_str()) && seen.insert(id.clone()))
                    .collect();
                (body.projects, removals, Some(body.revision))
            }
            Update::Project { id, document } => match document {
                Some(doc) => (vec![doc], Vec::new(), None),
                None => {
                    let removals = if current.contains_key(id.as_str()) {
                        vec![id]
                    } else {
                        Vec::new()
                    };
                    (Vec::new(), removals, None)
                }
            },
        };
        self.check_blast_radius(removals.len(), current.len(), opts.allow_mass_removal)?;

        let mut report = ApplyReport::default();
        let mut pending = Pending {
            current: &current,
            next: None,
        };
        for doc in docs {
            self.upsert(doc, &opts, &mut pending, &mut report);
        }
        for id in &removals {
            if let Some(slot) = pending.edit().remove(id.as_str()) {
                self.count(-1, -(slot.0.load().environment_count() as isize));
                report.removed += 1;
            }
        }
        {
            let mut rejections = lock(&self.shared.rejections);
            for id in &removals {
                rejections.remove(id);
            }
            if let Some(present) = &present {
                // Rejections of projects the control plane no longer has are moot.
                rejections.retain(|id, _| present.contains(id));
            }
        }
        if let Some(next) = pending.next {
            self.shared.index.store(Arc::new(next));
        }
        if let Some(cursor) = cursor {
            self.shared.cursor.store(cursor, Ordering::Relaxed);
        }
        if present.is_some() {
            self.shared.loaded.store(true, Ordering::Release);
        }
        report.cursor = self.shared.cursor.load(Ordering::Relaxed);
        Ok(report)
    }

    /// Applies the scheduled changes of project `id` that are due at
    /// `now` and not yet in effect, by publishing a new snapshot of it.
    /// Never un-applies: if the wall clock went backwards, nothing changes.
    pub fn apply_due(&mut self, id: &str, now: SystemTime) -> DueOutcome {
        let index = self.shared.index.load();
        let Some(slot) = index.get(id) else {
            return DueOutcome::default();
        };
        let current = slot.0.load_full();
        let due = current
            .schedule()
            .iter()
            .take_while(|e| e.at <= now)
            .count();
        if due <= current.applied() {
            return DueOutcome {
                applied: 0,
                next_due: current.next_due(),
            };
        }
        let valid = match current.reparse() {
            Ok(valid) => valid,
            Err(e) => {
                // Cannot happen for a document the store wrote; if it does,
                // keep serving what is served and stop scheduling it.
                tracing::error!(project = id, error = %e, "scheduled change not applied");
                return DueOutcome::default();
            }
        };
        let next = Arc::new(Project::with_applied(&valid, current.accepted_at(), due));
        let outcome = DueOutcome {
            applied: due - current.applied(),
            next_due: next.next_due(),
        };
        slot.0.store(next);
        outcome
    }

    fn check_blast_radius(
        &self,
        removing: usize,
        loaded: usize,
        allowed: bool,
    ) -> Result<(), ApplyError> {
        if allowed || loaded < MASS_REMOVAL_MIN_LOADED {
            return Ok(());
        }
        if removing as f64 > self.max_removed_fraction * loaded as f64 {
            return Err(ApplyError::MassRemoval {
                removing,
                loaded,
                max_fraction: self.max_removed_fraction,
            });
        }
        Ok(())
    }

    fn upsert(
        &mut self,
        incoming: Incoming,
        opts: &ApplyOptions,
        pending: &mut Pending,
        report: &mut ApplyReport,
    ) {
        let (id, revision) = match &incoming {
            Ok(doc) => (doc.id.as_str(), Some(doc.revision)),
            Err(u) => (u.id.as_str(), u.revision),
        };
        let previous = pending.get(id).map(|s| s.0.load_full());
        if let (Some(prev), Some(revision)) = (&previous, revision) {
            if revision < prev.revision() {
                report.stale += 1;
                return;
            }
            if revision == prev.revision() {
                report.unchanged += 1;
                return;
            }
        }
        let doc = match incoming {
            Ok(doc) => doc,
            Err(Unreadable {
                id,
                revision,
                message,
            }) => {
                let error = ValidationError {
                    reason: Reason::Malformed,
                    message,
                };
                self.reject(id, revision, error, opts.now, report);
                return;
            }
        };
        let (id, revision) = (doc.id.clone(), doc.revision);
        let previous_keys = previous
            .as_ref()
            .map(|p| p.environment_keys())
            .unwrap_or_default();
        let valid = match validate(doc, &previous_keys) {
            Ok(valid) => valid,
            Err(error) => {
                self.reject(id, Some(revision), error, opts.now, report);
                return;
            }
        };
        if let Some(published) = valid.published_at() {
            report.published.push(published);
        }
        let project = Arc::new(Project::build(&valid, opts.now, opts.now));
        if let Some(due) = project.next_due() {
            report.scheduled.push((id.clone(), due));
        }
        let envs = project.environment_count() as isize;
        match (pending.get(&id), previous) {
            (Some(slot), Some(prev)) => {
                slot.0.store(project);
                self.count(0, envs - prev.environment_count() as isize);
                report.updated += 1;
            }
            _ => {
                pending
                    .edit()
                    .insert(id.as_str().into(), Slot(ArcSwap::new(project)));
                self.count(1, envs);
                report.added += 1;
            }
        }
        lock(&self.shared.rejections).remove(&id);
    }

    fn reject(
        &mut self,
        project: String,
        revision: Option<u64>,
        error: ValidationError,
        at: SystemTime,
        report: &mut ApplyReport,
    ) {
        let rejection = Rejection {
            project,
            revision,
            reason: error.reason,
            message: error.message,
            at,
        };
        lock(&self.shared.rejections).insert(rejection.project.clone(), rejection.clone());
        report.rejected.push(rejection);
    }

    fn count(&self, projects: isize, environments: isize) {
        add(&self.shared.projects, projects);
        add(&self.shared.environments, environments);
    }
}

fn add(counter: &AtomicUsize, delta: isize) {
    if delta >= 0 {
        counter.fetch_add(delta as usize, Ordering::Relaxed);
    } else {
        counter.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
    }
}

fn incoming_id(incoming: &Incoming) -> &str {
    match incoming {
        Ok(doc) => &doc.id,
        Err(u) => &u.id,
    }
}
