//! The write side of the store: validating fetched documents and
//! publishing them, project by project, with the blast-radius guard.
//!
//! [`StoreWriter`] is not `Clone`: exactly one exists per store, owned by
//! the writer (see `sync::writer`), and it runs off the request threads.
//! It decides from the served snapshot (each project's revision, slugs,
//! content digest and signature) and from what `Shared` keeps beside it:
//! the revision floors of projects not served, the last rejections, and
//! the projects whose source is behind.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::pointers_struct::PointersStructs;
use super::project::Project;
use super::{copy_index, Index, Rejection, Shared, Slot};
use crate::lock::lock;
use crate::model::cursor::Cursor;
use crate::model::envelope::{Seal, TOMBSTONE_TYPE};
use crate::model::floor::Floor;
use crate::model::origin::{MassRemoval, Origin};
use crate::model::timestamp::parse_rfc3339;
use crate::model::trust::{Trust, Verified};
use crate::model::validate::{serving_order, validate, Reason, ValidProject, ValidationError};
use crate::model::wire::{
    claimed_revision, open, ChangesBody, Content, Incoming, Opened, Payload, SnapshotBody,
    WireProject,
};

/// Write side of the store: exactly one exists per store.
#[derive(Debug)]
pub struct StoreWriter {
    shared: Arc<Shared>,
    max_removed_fraction: f64,
    /// The keys documents are checked against; swapped when a key file
    /// changes.
    trust: Arc<Trust>,
    /// Whether projects are rendered with their gRPC pointers structs.
    structs: PointersStructs,
}

/// One fetch's worth of news for the writer: what it holds, and where it
/// came from (which decides how it is judged: see [`Origin`]).
#[derive(Debug)]
pub struct Update {
    pub origin: Origin,
    pub contents: Contents,
}

impl Update {
    pub fn new(origin: Origin, contents: Contents) -> Update {
        Update { origin, contents }
    }
}

/// What a fetch brought.
#[derive(Debug)]
pub enum Contents {
    /// A full snapshot: projects absent from it are removed. From the
    /// cache ([`Origin::Cache`]) an envelope whose recorded signer is
    /// still trusted is believed without checking its signature again
    /// (the sidecar's own disk); any other is verified. Expiry is checked
    /// again; `max_signature_age` and the clock skew are not (these are
    /// not news from the source). A cached document that fails its check
    /// is not served, and still sets its project's floor.
    Snapshot(SnapshotBody),
    /// A change batch: upserts plus explicit removals.
    Changes(ChangesBody),
    /// One project fetched alone; `None` means the control plane says it
    /// no longer exists.
    Project {
        id: String,
        document: Option<Incoming>,
    },
    /// The cache's projects rebuilt as this build served them
    /// ([`Project::from_parts`]), at the cache's cursor: a full snapshot
    /// from the cache. Each serves as it is when [`Judge::restored`] says
    /// so; any other goes through judgement from its stored document, as
    /// a [`Contents::Snapshot`] from the cache would, and so do
    /// `documents` (the cache's documents that could not be rebuilt).
    Restored {
        cursor: Cursor,
        projects: Vec<Project>,
        documents: Vec<Incoming>,
    },
}

/// What an applied update changed.
#[derive(Debug, Default, Clone)]
pub struct ApplyReport {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    /// Documents whose revision equals the served one.
    pub unchanged: usize,
    /// Documents older than the served revision (or than the revision a
    /// signed tombstone removed), ignored.
    pub stale: usize,
    /// The served revision again in a newer envelope (re-signed): what is
    /// served is the same, what the cache keeps changes.
    pub resealed: usize,
    pub rejected: Vec<Rejection>,
    /// Elements that could not be attributed to any project, and why.
    pub unattributed: Vec<String>,
    /// Projects whose element was skipped as byte for byte what was
    /// served ([`Content::AsServed`]), while what is served changed
    /// before the writer got to it: for the source to fetch again.
    pub reread: Vec<String>,
    /// `published_at` of every accepted document that carried one.
    pub published: Vec<SystemTime>,
    /// Accepted projects with scheduled changes still to come, and when
    /// the next one is due (for the scheduler).
    pub scheduled: Vec<(String, SystemTime)>,
    /// Cursor after the update.
    pub cursor: Cursor,
}

impl ApplyReport {
    /// Adds what a later update of the same fetch changed (a project
    /// fetched again); the cursor stays this report's.
    pub fn absorb(&mut self, other: ApplyReport) {
        self.added += other.added;
        self.updated += other.updated;
        self.removed += other.removed;
        self.unchanged += other.unchanged;
        self.stale += other.stale;
        self.resealed += other.resealed;
        self.rejected.extend(other.rejected);
        self.unattributed.extend(other.unattributed);
        self.reread.extend(other.reread);
        self.published.extend(other.published);
        self.scheduled.extend(other.scheduled);
    }

    /// Projects added, updated or removed.
    pub fn changed(&self) -> usize {
        self.added + self.updated + self.removed
    }

    /// True when what the cache keeps changed.
    pub fn to_persist(&self) -> bool {
        self.changed() > 0 || self.resealed > 0
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
        "refusing to remove {removing} of {loaded} projects (more than {max_fraction} of them)"
    )]
    MassRemoval {
        removing: usize,
        loaded: usize,
        max_fraction: f64,
    },
}

/// Per-update state: the index copy, made only if the set of projects changes.
struct IndexEdit<'a> {
    current: &'a Index,
    next: Option<Index>,
}

/// One apply under way: the index it edits and the report it fills.
struct Batch<'a> {
    edit: IndexEdit<'a>,
    report: ApplyReport,
    judge: Judge<'a>,
}

impl IndexEdit<'_> {
    fn get(&self, id: &str) -> Option<&Slot> {
        self.next.as_ref().unwrap_or(self.current).get(id)
    }

    fn edit(&mut self) -> &mut Index {
        let current = self.current;
        self.next.get_or_insert_with(|| copy_index(current))
    }
}

impl StoreWriter {
    pub(super) fn new(shared: Arc<Shared>, max_removed_fraction: f64) -> StoreWriter {
        StoreWriter {
            shared,
            max_removed_fraction,
            trust: Arc::new(Trust::default()),
            structs: PointersStructs::default(),
        }
    }

    /// From now on, projects are rendered with their gRPC pointers
    /// structs encoded as `structs` says. Set before the first load:
    /// projects already served keep how they were rendered until their
    /// next revision.
    pub fn set_pointers_structs(&mut self, structs: PointersStructs) {
        self.structs = structs;
    }

    /// From now on, documents are checked against `trust`. What is served
    /// stays: a key removed no longer admits new documents, and a restart
    /// (which checks the cache again) drops what only it had signed.
    pub fn set_trust(&mut self, trust: Arc<Trust>) {
        self.trust = trust;
    }

    pub fn trust(&self) -> &Arc<Trust> {
        &self.trust
    }

    /// A reader of this writer's store.
    pub fn reader(&self) -> super::Store {
        super::Store {
            shared: self.shared.clone(),
        }
    }

    /// Applies one fetch: validates every document, publishes the accepted
    /// ones project by project, records rejections, removes what the fetch
    /// removes. A fetch tripping the blast-radius guard changes nothing.
    pub fn apply(&mut self, update: Update, now: SystemTime) -> Result<ApplyReport, ApplyError> {
        let current = self.shared.index.load_full();
        let Update { origin, contents } = update;
        if let Origin::Cache(record) = &origin {
            self.restore_floors(&record.floors);
        }
        let intake = Intake::of(contents, &current);
        let documents = intake.docs.len() + intake.restored.len() + intake.unattributed.len();
        // Without required signatures an unsigned removal is a removal;
        // with them it is refused (and shown), and the project keeps
        // serving: only a signed tombstone removes.
        let (mut removals, refused) = if self.trust.require_signatures {
            (Vec::new(), intake.unsigned)
        } else {
            (
                intake.unsigned.into_iter().map(|(id, _)| id).collect(),
                Vec::new(),
            )
        };
        let trust = self.trust.clone();
        let judge = Judge {
            trust: &trust,
            now,
            origin: &origin,
        };
        let tombstoned = self.tombstones_removing(&judge, &intake.docs, &current);
        removals.retain(|id| !tombstoned.contains(id));
        self.check_blast_radius(
            removals.len() + tombstoned.len(),
            current.len(),
            origin.mass_removal(),
        )?;

        let mut batch = Batch {
            edit: IndexEdit {
                current: &current,
                next: None,
            },
            report: ApplyReport {
                unattributed: intake.unattributed,
                ..ApplyReport::default()
            },
            judge,
        };
        let mut docs = intake.docs;
        docs.extend(self.restore_all(&mut batch, intake.restored, now));
        self.judge_all(&mut batch, docs, now);
        for id in &removals {
            self.remove(id, &mut batch);
        }
        for (id, cause) in &refused {
            self.refuse_removal(id, *cause, &mut batch);
        }
        if let Some(mut present) = intake.present {
            // Rejections of projects the control plane no longer has are
            // moot, unless the project is kept because its removal was
            // refused (or could not be decided).
            present.extend(refused.into_iter().map(|(id, _)| id));
            if batch.report.unattributed.is_empty() {
                lock(&self.shared.rejections).retain(|id, _| present.contains(id));
            }
        }
        // Loaded (ready) once a full snapshot from the source is applied,
        // or the cache's serves something (or held nothing): a sidecar
        // serving nothing because everything its cache held was refused
        // is not ready until its source has answered.
        let serves = !batch.edit.next.as_ref().unwrap_or(&current).is_empty();
        let loaded = intake.loads && (origin.is_news() || serves || documents == 0);
        let from_cache = !origin.is_news();
        Ok(self.publish(batch, intake.cursor, loaded, from_cache))
    }

    /// Commits every project rebuilt from the cache that
    /// [`Judge::restored`] lets serve as it is; returns the documents of
    /// the others, to judge as any.
    fn restore_all(
        &mut self,
        batch: &mut Batch<'_>,
        restored: Vec<Project>,
        now: SystemTime,
    ) -> Vec<Incoming> {
        let mut documents = Vec::new();
        for project in restored {
            let id = project.id().to_owned();
            let (previous, floor) = self.served(batch, &id);
            match batch.judge.restored(project, previous.as_deref(), floor) {
                Ok(mut project) => {
                    // Accepted by this process now, as a document from the
                    // cache is (docs/operations.md).
                    project.accepted_now(now);
                    if project.pointers_structs() != self.structs {
                        project.set_pointers_structs(self.structs);
                    }
                    self.commit(batch, id, previous, Judged::Valid(project))
                }
                Err(document) => documents.push(document),
            }
        }
        documents
    }

    /// Judges and commits every document of a batch. Before the store is
    /// first loaded (a cold start, a restart from the cache) nothing is
    /// served yet and the request threads are idle: a large batch is
    /// judged and rendered on every core.
    fn judge_all(&mut self, batch: &mut Batch<'_>, docs: Vec<Incoming>, now: SystemTime) {
        let parallel = !self.shared.loaded.load(Ordering::Acquire)
            && docs.len() >= crate::parallel::MIN_PARALLEL
            && all_distinct(&docs);
        if parallel {
            let structs = self.structs;
            let inputs: Vec<_> = docs
                .into_iter()
                .map(|doc| {
                    let (previous, floor) = self.served(batch, &doc.id);
                    (doc, previous, floor)
                })
                .collect();
            let prepared = crate::parallel::map(inputs, true, |(doc, previous, floor)| {
                let id = doc.id.clone();
                let prepared = prepare(&batch.judge, doc, previous.as_deref(), floor, now, structs);
                (id, previous, prepared)
            });
            for (id, previous, prepared) in prepared {
                self.commit(batch, id, previous, prepared);
            }
        } else {
            // One at a time: a batch may name a project twice, and the
            // second judging must see the first.
            for doc in docs {
                let id = doc.id.clone();
                let (previous, floor) = self.served(batch, &id);
                let prepared = prepare(
                    &batch.judge,
                    doc,
                    previous.as_deref(),
                    floor,
                    now,
                    self.structs,
                );
                self.commit(batch, id, previous, prepared);
            }
        }
    }

    /// Makes a judged batch what is served: the store marked loaded
    /// (ready) when `loaded`, the index swapped, the cursor taken unless
    /// the cache's own documents were refused (under the trust settings
    /// now: signatures required, a key removed, so the cache no longer
    /// stands in for the source and the source loads in full). Returns
    /// the report.
    fn publish(
        &mut self,
        mut batch: Batch<'_>,
        cursor: Option<Cursor>,
        loaded: bool,
        from_cache: bool,
    ) -> ApplyReport {
        let refused_cache = from_cache && !batch.report.rejected.is_empty();
        if loaded {
            self.shared.loaded.store(true, Ordering::Release);
        }
        if let Some(next) = batch.edit.next {
            self.shared.index.store(Arc::new(next));
        }
        let mut held = lock(&self.shared.cursor);
        if let (Some(new), false) = (cursor, refused_cache) {
            *held = new;
        }
        batch.report.cursor = *held;
        batch.report
    }

    /// Records that `id` keeps serving although the update asked for it
    /// to go without a signed tombstone.
    fn refuse_removal(&mut self, id: &str, cause: RemovalCause, batch: &mut Batch) {
        let Some(served) = batch.edit.get(id).map(|s| s.0.load().revision()) else {
            return;
        };
        let error = ValidationError {
            reason: Reason::Unsigned,
            message: format!(
                "the project {}, but trust.require_signatures only lets a signed tombstone remove it: it keeps serving revision {served}",
                cause.as_str()
            ),
        };
        self.reject(
            id.to_owned(),
            None,
            error,
            batch.judge.now,
            &mut batch.report,
        );
    }

    /// Seeds the floors of projects not served (from
    /// the cache, before its snapshot is applied).
    pub fn restore_floors(&mut self, floors: &[(String, Floor)]) {
        let mut marks = lock(&self.shared.floors);
        for (id, floor) in floors {
            raise(&mut marks, id, *floor);
        }
    }

    /// The served projects that the signed tombstones among `docs` would
    /// remove (checked in full, so a forged tombstone never counts
    /// against the blast-radius guard).
    fn tombstones_removing(
        &self,
        judge: &Judge<'_>,
        docs: &[Incoming],
        current: &Index,
    ) -> HashSet<String> {
        docs.iter()
            .filter(|d| d.seal().is_some_and(|s| s.payload_type == TOMBSTONE_TYPE))
            .filter_map(|d| {
                let served = current.get(d.id.as_str())?.0.load_full();
                matches!(
                    judge.judge(d.clone(), Some(&served), None),
                    Judged::Removal { .. }
                )
                .then(|| d.id.clone())
            })
            .collect()
    }

    fn remove(&mut self, id: &str, batch: &mut Batch) {
        if let Some(slot) = batch.edit.edit().remove(id) {
            self.count(-1, -(slot.0.load().environment_count() as isize));
            batch.report.removed += 1;
        }
        lock(&self.shared.rejections).remove(id);
        lock(&self.shared.ahead).remove(id);
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
        let mut next = Project::with_applied(&valid, current.accepted_at(), due, self.structs);
        // The same bytes from the source: a later full load skips them.
        next.set_raw(current.raw());
        let next = Arc::new(next);
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
        allowed: MassRemoval,
    ) -> Result<(), ApplyError> {
        if allowed == MassRemoval::Guarded
            && super::is_mass_removal(removing, loaded, self.max_removed_fraction)
        {
            return Err(ApplyError::MassRemoval {
                removing,
                loaded,
                max_fraction: self.max_removed_fraction,
            });
        }
        Ok(())
    }

    /// The project `id` as served, or else its floor.
    fn served(&self, batch: &Batch, id: &str) -> (Option<Arc<Project>>, Option<Floor>) {
        let previous = batch.edit.get(id).map(|s| s.0.load_full());
        let floor = match previous {
            Some(_) => None,
            None => lock(&self.shared.floors).get(id).copied(),
        };
        (previous, floor)
    }

    /// Records what judging one document gave: publishes its served
    /// form, or its rejection, removal, or nothing.
    fn commit(
        &mut self,
        batch: &mut Batch,
        id: String,
        previous: Option<Arc<Project>>,
        prepared: Judged<Project>,
    ) {
        if !matches!(prepared, Judged::Stale { .. }) {
            // Anything not older from the source: it is no longer behind.
            let mut ahead = lock(&self.shared.ahead);
            if !ahead.is_empty() {
                ahead.remove(&id);
            }
        }
        match prepared {
            Judged::Stale { revision } => self.ignore_stale(batch, id, previous, revision),
            Judged::OlderEnvelope => {
                batch.report.stale += 1;
                tracing::debug!(
                    project = %id,
                    "envelope ignored: the served revision, signed before the served copy"
                );
            }
            Judged::Unchanged => batch.report.unchanged += 1,
            Judged::Reread => batch.report.reread.push(id),
            Judged::Rejected {
                revision,
                error,
                signed_at,
            } => {
                // A document this sidecar accepted before (its cache) that
                // it can no longer serve (unsigned while signatures are
                // required, its key was removed, it expired) still holds
                // the project's floor: nothing older may come back in its
                // place, and of its revision only a signed copy.
                if let (false, Some(revision)) = (batch.judge.origin.is_news(), revision) {
                    let floor = Floor::Refused {
                        revision,
                        signed_at,
                    };
                    raise(&mut lock(&self.shared.floors), &id, floor);
                }
                self.reject(id, revision, error, batch.judge.now, &mut batch.report);
            }
            Judged::Removal { revision } => {
                self.remove(&id, batch);
                raise(
                    &mut lock(&self.shared.floors),
                    &id,
                    Floor::Removed(revision),
                );
            }
            Judged::Resealed(project) => self.reseal(batch, id, previous, project),
            Judged::Valid(project) => self.accept(batch, id, previous, project),
        }
    }

    /// Counted apart from rejections (a replay after a full load is
    /// routine, not the writer's mistake) and logged at debug; from the
    /// source, the project is recorded as behind this node.
    fn ignore_stale(
        &mut self,
        batch: &mut Batch,
        id: String,
        previous: Option<Arc<Project>>,
        revision: Option<u64>,
    ) {
        batch.report.stale += 1;
        tracing::debug!(
            project = %id,
            revision = ?revision,
            served = ?previous.as_ref().map(|p| p.revision()),
            "stale document ignored: older than the served revision"
        );
        if let (true, Some(revision)) = (batch.judge.origin.is_news(), revision) {
            lock(&self.shared.ahead).insert(id, revision);
        }
    }

    /// The served revision in a newer envelope: the slot takes it, and a
    /// rejection of this revision or older is moot.
    fn reseal(
        &mut self,
        batch: &mut Batch,
        id: String,
        previous: Option<Arc<Project>>,
        project: Project,
    ) {
        let (Some(slot), Some(prev)) = (batch.edit.get(&id), previous) else {
            return;
        };
        slot.0.store(Arc::new(project));
        batch.report.resealed += 1;
        let mut rejections = lock(&self.shared.rejections);
        if rejections
            .get(&id)
            .is_some_and(|r| r.revision <= Some(prev.revision()))
        {
            rejections.remove(&id);
        }
    }

    /// An accepted revision (or a new project): into its slot, counted,
    /// its schedule and publication time reported, its floor and its
    /// rejection gone.
    fn accept(
        &mut self,
        batch: &mut Batch,
        id: String,
        previous: Option<Arc<Project>>,
        project: Project,
    ) {
        if let Some(published) = project.published_at() {
            batch.report.published.push(published);
        }
        let project = Arc::new(project);
        if let Some(due) = project.next_due() {
            batch.report.scheduled.push((id.clone(), due));
        }
        let envs = project.environment_count() as isize;
        match (batch.edit.get(&id), previous) {
            (Some(slot), Some(prev)) => {
                slot.0.store(project);
                self.count(0, envs - prev.environment_count() as isize);
                batch.report.updated += 1;
            }
            _ => {
                batch
                    .edit
                    .edit()
                    .insert(id.as_str().into(), Slot(ArcSwap::new(project)));
                self.count(1, envs);
                batch.report.added += 1;
                lock(&self.shared.floors).remove(&id);
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

/// Raises `id`'s floor to `floor` (never lowers it: see [`Floor::max`]).
fn raise(floors: &mut HashMap<String, Floor>, id: &str, floor: Floor) {
    floors
        .entry(id.to_owned())
        .and_modify(|kept| *kept = kept.max(floor))
        .or_insert(floor);
}

/// Why an update asks for a project to go, without a signed tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RemovalCause {
    /// Absent from a full snapshot.
    Absent,
    /// Listed in `removed` of a change batch.
    Listed,
    /// The source says it no longer exists (a 404, an absent hash field).
    Gone,
}

/// What an update brings, sorted out: the documents to judge, where the
/// source is after it, and what it removes without a signature.
struct Intake {
    docs: Vec<Incoming>,
    /// Projects rebuilt from the cache, not judged yet.
    restored: Vec<Project>,
    cursor: Option<Cursor>,
    /// For a complete full snapshot: the ids it holds (valid or not).
    present: Option<HashSet<String>>,
    /// Applying it makes the store loaded (ready): a complete snapshot, or
    /// a partial one that brought projects.
    loads: bool,
    unsigned: Vec<(String, RemovalCause)>,
    unattributed: Vec<String>,
}

impl Intake {
    fn of(contents: Contents, current: &Index) -> Intake {
        match contents {
            Contents::Snapshot(body) => {
                let ids: HashSet<String> = body.projects.iter().map(|d| d.id.clone()).collect();
                // An element that could not be attributed may be any
                // project's, and a partial snapshot may lack some: absence
                // proves nothing then.
                let unsigned = if body.unattributed.is_empty() && !body.partial {
                    current
                        .keys()
                        .filter(|id| !ids.contains(&***id))
                        .map(|id| (id.to_string(), RemovalCause::Absent))
                        .collect()
                } else {
                    Vec::new()
                };
                let loads = !body.partial || !body.projects.is_empty();
                Intake {
                    restored: Vec::new(),
                    docs: body.projects,
                    cursor: Some(body.cursor),
                    present: (!body.partial).then_some(ids),
                    loads,
                    unsigned,
                    unattributed: body.unattributed,
                }
            }
            Contents::Changes(body) => {
                let mut seen = HashSet::new();
                let unsigned = body
                    .removed
                    .into_iter()
                    .filter(|id| current.contains_key(id.as_str()) && seen.insert(id.clone()))
                    .map(|id| (id, RemovalCause::Listed))
                    .collect();
                Intake {
                    restored: Vec::new(),
                    docs: body.projects,
                    cursor: Some(body.cursor),
                    present: None,
                    loads: false,
                    unsigned,
                    unattributed: body.unattributed,
                }
            }
            Contents::Project { id, document } => {
                let gone = document.is_none() && current.contains_key(id.as_str());
                Intake {
                    restored: Vec::new(),
                    docs: document.into_iter().collect(),
                    cursor: None,
                    present: None,
                    loads: false,
                    unsigned: if gone {
                        vec![(id, RemovalCause::Gone)]
                    } else {
                        Vec::new()
                    },
                    unattributed: Vec::new(),
                }
            }
            Contents::Restored {
                cursor,
                projects,
                documents,
            } => Intake::restored(cursor, projects, documents, current),
        }
    }

    /// The cache's projects: a full snapshot, part of it rebuilt.
    fn restored(
        cursor: Cursor,
        projects: Vec<Project>,
        documents: Vec<Incoming>,
        current: &Index,
    ) -> Intake {
        let ids: HashSet<String> = projects
            .iter()
            .map(|p| p.id().to_owned())
            .chain(documents.iter().map(|d| d.id.clone()))
            .collect();
        let unsigned = current
            .keys()
            .filter(|id| !ids.contains(&***id))
            .map(|id| (id.to_string(), RemovalCause::Absent))
            .collect();
        Intake {
            docs: documents,
            restored: projects,
            cursor: Some(cursor),
            present: Some(ids),
            loads: true,
            unsigned,
            unattributed: Vec::new(),
        }
    }
}

impl RemovalCause {
    fn as_str(self) -> &'static str {
        match self {
            RemovalCause::Absent => "is absent from a full snapshot",
            RemovalCause::Listed => "is listed as removed",
            RemovalCause::Gone => "is gone at the source",
        }
    }
}

fn add(counter: &AtomicUsize, delta: isize) {
    if delta >= 0 {
        counter.fetch_add(delta as usize, Ordering::Relaxed);
    } else {
        counter.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
    }
}

/// What the store makes of one incoming document, given the project as
/// served (if any): the one judgement the writer, `env-sidecar validate`
/// and `publish` share. `T` is what would be served: the validated
/// document as judged ([`Judge::judge`]), the served form once the
/// writer has rendered it ([`prepare`]: `Judged<Project>`).
#[derive(Debug)]
pub enum Judged<T = ValidProject> {
    /// Older than the served revision (or than the revision a signed
    /// tombstone removed): ignored. `revision`: the one the source holds.
    Stale { revision: Option<u64> },
    /// The served revision in an envelope signed before the served one:
    /// ignored (a replay never brings back a key rotated out). Not stale:
    /// the source holds the served revision.
    OlderEnvelope,
    /// The served revision again: a no-op.
    Unchanged,
    /// The served revision again, the same document in a newer, believed
    /// envelope (re-signed: a key rotation, a fresher signature).
    Resealed(T),
    /// Breaks a rule, could not be read as a document at all, or its
    /// signature is not believed. `signed_at`: its signing time when its
    /// signature was believed and only its times are refused.
    Rejected {
        revision: Option<u64>,
        error: ValidationError,
        signed_at: Option<SystemTime>,
    },
    /// Would be accepted.
    Valid(T),
    /// A believed signed tombstone: the project goes, and no revision up
    /// to this one may bring it back.
    Removal { revision: u64 },
    /// Skipped unread as byte for byte what was served when it was
    /// fetched ([`Content::AsServed`]), but what is served changed since:
    /// nothing to judge until it is fetched again.
    Reread,
}

/// Judges `incoming` against `previous` and `floor` (see
/// [`Judge::judge`]) and renders what would be served: the part of an
/// upsert that touches no shared state, so a large load runs it on every
/// core ([`crate::parallel`]). A reseal keeps the served copy's
/// acceptance time and schedule position.
pub fn prepare(
    judge: &Judge<'_>,
    incoming: Incoming,
    previous: Option<&Project>,
    floor: Option<Floor>,
    now: SystemTime,
    structs: PointersStructs,
) -> Judged<Project> {
    let raw = incoming.raw;
    match judge.judge(incoming, previous, floor) {
        Judged::Stale { revision } => Judged::Stale { revision },
        Judged::OlderEnvelope => Judged::OlderEnvelope,
        Judged::Unchanged => Judged::Unchanged,
        Judged::Rejected {
            revision,
            error,
            signed_at,
        } => Judged::Rejected {
            revision,
            error,
            signed_at,
        },
        Judged::Removal { revision } => Judged::Removal { revision },
        Judged::Reread => Judged::Reread,
        // Only a served project is resealed.
        Judged::Resealed(valid) => match previous {
            Some(prev) => {
                let mut project =
                    Project::with_applied(&valid, prev.accepted_at(), prev.applied(), structs);
                project.set_raw(raw);
                Judged::Resealed(project)
            }
            None => Judged::Unchanged,
        },
        Judged::Valid(valid) => {
            let mut project = Project::build(&valid, now, now, structs);
            project.set_raw(raw);
            Judged::Valid(project)
        }
    }
}

/// True when no project is named twice in `docs`.
fn all_distinct(docs: &[Incoming]) -> bool {
    let mut seen = HashSet::with_capacity(docs.len());
    docs.iter().all(|d| seen.insert(d.id.as_str()))
}

/// What judging a document needs besides the document.
#[derive(Debug, Clone, Copy)]
pub struct Judge<'a> {
    pub trust: &'a Trust,
    /// Expiry and signature age are judged as of this instant.
    pub now: SystemTime,
    /// Where the document came from: from the source `max_signature_age`
    /// and `max_clock_skew` apply; from the sidecar's own cache, who had
    /// verified each envelope.
    pub origin: &'a Origin,
}

impl Judge<'_> {
    /// Whether a project rebuilt from this build's cache serves as it is:
    /// it came from the cache, nothing is served or refused in its place
    /// at or above its revision, no scheduled change fell due while the
    /// sidecar was down, and it is unsigned while signatures are not
    /// required, or signed by a key it recorded that is still trusted
    /// ([`Trust::still_trusted`]) and not expired: what [`Judge::judge`]
    /// decides for a cached document, without reading it. The project
    /// (its signers narrowed to the keys still trusted), or its stored
    /// document, for [`Judge::judge`] to decide.
    pub fn restored(
        &self,
        mut project: Project,
        previous: Option<&Project>,
        floor: Option<Floor>,
    ) -> Result<Project, Incoming> {
        let serves = matches!(self.origin, Origin::Cache(_))
            && previous.is_none()
            && floor.map_or(true, |f| f.revision() < project.revision())
            && project.next_due().map_or(true, |due| due > self.now)
            && match project.signature() {
                None => !self.trust.require_signatures,
                Some(verified) => {
                    verified.expires_at.map_or(true, |e| e > self.now)
                        && self.trust.still_trusted(&verified.keyids).is_some()
                }
            };
        if !serves {
            return Err(project.incoming());
        }
        if let Some(keyids) = project
            .signature()
            .and_then(|v| self.trust.still_trusted(&v.keyids))
        {
            project.narrow_signers(keyids);
        }
        Ok(project)
    }

    /// Judges `incoming` against `previous`, the project as served, and
    /// `floor`, the revision floor of a project not served (a
    /// signed tombstone removed it, or its cached document could no
    /// longer be served).
    ///
    /// A signed envelope byte for byte as served is a no-op; any other is
    /// verified over its raw payload first, and only then read (nothing
    /// an attacker wrote is parsed before a trusted key vouches for it),
    /// its times checked, then its revision ordered. A plain document is
    /// ordered by revision first (nothing older is even checked), then
    /// refused if signatures are required. Last, every rule of the data
    /// model, slug immutability included.
    pub fn judge(
        &self,
        incoming: Incoming,
        previous: Option<&Project>,
        floor: Option<Floor>,
    ) -> Judged {
        let Incoming {
            id,
            revision,
            content,
            raw: _,
        } = incoming;
        match content {
            // The bytes the served project was accepted from: whatever
            // they were judged then, they are judged the same now (a
            // signed envelope as served is a no-op, a plain document at
            // the served revision and content too).
            Content::AsServed(digest) => match previous {
                Some(served) if served.raw() == Some(digest) => Judged::Unchanged,
                _ => Judged::Reread,
            },
            Content::TooLarge(bytes) => Judged::Rejected {
                revision,
                error: ValidationError {
                    reason: Reason::TooLarge,
                    message: format!(
                        "{bytes} bytes, over source.max_document_bytes: refused unread"
                    ),
                },
                signed_at: None,
            },
            Content::Sealed(seal) => self.judge_sealed(id, revision, seal, previous, floor),
            Content::Document(doc) => self.judge_plain(revision, Ok(doc), previous, floor),
            Content::Unreadable(message) => {
                self.judge_plain(revision, Err(message), previous, floor)
            }
        }
    }

    /// A plain element: the document, or why it did not read.
    fn judge_plain(
        &self,
        revision: Option<u64>,
        doc: Result<Box<WireProject>, String>,
        previous: Option<&Project>,
        floor: Option<Floor>,
    ) -> Judged {
        // A plain copy never outranks what is served or refused at its
        // revision: equal is a no-op.
        let bar = previous
            .map(Project::revision)
            .or(floor.map(Floor::revision));
        let rejected = |error| Judged::Rejected {
            revision,
            error,
            signed_at: None,
        };
        if let (Some(bar), Some(revision)) = (bar, revision) {
            if revision < bar {
                return Judged::Stale {
                    revision: Some(revision),
                };
            }
            if revision == bar {
                return match (previous, floor, doc) {
                    // The same document again is a no-op; other content
                    // under the served revision is refused, loudly.
                    (Some(prev), _, Ok(mut doc)) => {
                        serving_order(&mut doc.environments);
                        if doc.content_digest() == prev.content_digest() {
                            Judged::Unchanged
                        } else {
                            rejected(reused(format!(
                                "revision {revision} is served with other content; a changed \
                                 document needs a higher revision"
                            )))
                        }
                    }
                    (None, Some(Floor::Removed(_)), Ok(_)) => rejected(reused(format!(
                        "revision {revision} removed this project; a document that brings \
                         it back needs a higher revision"
                    ))),
                    // Refused before at this revision, or unreadable at the
                    // served one: nothing new.
                    _ => Judged::Unchanged,
                };
            }
        }
        // What could not be read at all (an envelope that does not parse
        // among it) says why, signatures required or not.
        let doc = match doc {
            Ok(doc) => doc,
            Err(message) => {
                return rejected(ValidationError {
                    reason: Reason::Malformed,
                    message,
                })
            }
        };
        if self.trust.require_signatures {
            return rejected(ValidationError {
                reason: Reason::Unsigned,
                message: "the document is not signed, and trust.require_signatures is on".into(),
            });
        }
        self.validated(*doc, previous, None)
    }

    /// A signed envelope filed under `id` (`hint`: the revision its
    /// payload seems to name, unverified).
    fn judge_sealed(
        &self,
        id: String,
        hint: Option<u64>,
        seal: Box<Seal>,
        previous: Option<&Project>,
        floor: Option<Floor>,
    ) -> Judged {
        if previous.is_some_and(|p| p.stored_text().is_ok_and(|t| *t == *seal.envelope)) {
            return Judged::Unchanged;
        }
        let (opened, verified) = match self.believe(id, hint, seal) {
            Ok(believed) => believed,
            Err(Unbelieved {
                revision,
                error,
                signed_at,
            }) => {
                return Judged::Rejected {
                    revision,
                    error,
                    signed_at,
                }
            }
        };
        let revision = opened.revision;
        let stale = Judged::Stale {
            revision: Some(revision),
        };
        match (previous, floor) {
            (Some(prev), _) if revision < prev.revision() => return stale,
            (Some(prev), _) if revision == prev.revision() => {
                return resealed(opened, prev, verified)
            }
            (None, Some(floor)) if revision < floor.revision() => return stale,
            // Signed outranks refused: a copy signed after what was
            // refused serves again (see `Floor`); a tombstone's own
            // revision never does.
            (None, Some(floor))
                if revision == floor.revision() && !floor.admits(verified.signed_at) =>
            {
                return match (floor, &opened.payload) {
                    (Floor::Removed(_), Payload::Tombstone(_)) => Judged::Unchanged,
                    (Floor::Removed(_), Payload::Document(_)) => Judged::Rejected {
                        revision: Some(revision),
                        error: reused(format!(
                            "revision {revision} removed this project; a document that brings \
                             it back needs a higher revision"
                        )),
                        signed_at: None,
                    },
                    (Floor::Refused { .. }, _) => stale,
                };
            }
            _ => {}
        }
        match opened.payload {
            Payload::Document(doc) => {
                self.validated(*doc, previous, Some((opened.seal.envelope, verified)))
            }
            Payload::Tombstone(_) => Judged::Removal { revision },
        }
    }

    /// Whether an envelope is believed, in order: a trusted signature over
    /// its bytes (or, from the cache, the signer it recorded, still
    /// trusted), then its payload read, then its times. The opened
    /// envelope and what verified it, or the rejection.
    fn believe(
        &self,
        id: String,
        hint: Option<u64>,
        seal: Box<Seal>,
    ) -> Result<(Opened, Verified), Unbelieved> {
        let recorded = self.origin.signers().and_then(|s| s.get(&id));
        let believed = recorded.and_then(|keyids| self.trust.recorded(&seal, keyids));
        let keyids = match believed.map_or_else(|| self.trust.verify(&seal), Ok) {
            Ok(keyids) => keyids,
            Err(error) => {
                return Err(Unbelieved {
                    revision: hint.or_else(|| claimed_revision(&seal)),
                    error,
                    signed_at: None,
                })
            }
        };
        let opened = match open(id, hint, seal) {
            Ok(opened) => opened,
            Err(unopened) => {
                return Err(Unbelieved {
                    revision: unopened.revision,
                    error: ValidationError {
                        reason: Reason::Malformed,
                        message: unopened.message,
                    },
                    signed_at: None,
                })
            }
        };
        match self
            .trust
            .stamps(keyids, opened.stamps(), self.now, self.origin)
        {
            Ok(verified) => Ok((opened, verified)),
            Err(error) => Err(Unbelieved {
                revision: Some(opened.revision),
                error,
                signed_at: opened
                    .stamps()
                    .signed_at
                    .and_then(|t| parse_rfc3339(t).ok()),
            }),
        }
    }

    /// Every rule of the data model, against the project as served.
    fn validated(
        &self,
        doc: WireProject,
        previous: Option<&Project>,
        seal: Option<(Box<str>, Verified)>,
    ) -> Judged {
        let revision = Some(doc.revision);
        let previous_keys = previous.map(|p| p.environment_keys()).unwrap_or_default();
        match validate(doc, &previous_keys) {
            Ok(valid) => Judged::Valid(match seal {
                Some((envelope, verified)) => valid.sealed(envelope, verified),
                None => valid,
            }),
            Err(error) => Judged::Rejected {
                revision,
                error,
                signed_at: None,
            },
        }
    }
}

/// Why an envelope is not believed (see [`Judge::believe`]): a
/// rejection, as [`Judged::Rejected`] words it.
struct Unbelieved {
    revision: Option<u64>,
    error: ValidationError,
    signed_at: Option<SystemTime>,
}

/// The served revision again, in a believed envelope other than the one
/// served. A re-signed copy of the same document replaces the kept
/// envelope only when it is newer (a later `signed_at` than the served
/// one's, which a plain served document has none of): an older envelope
/// of the same revision is ignored, so a replayed one can never bring
/// back a key that was rotated out. Everything else under the served
/// revision is refused as `revision_reused`, where its writer sees it:
/// other content, a removal (a tombstone removes a revision below its
/// own), and a copy signed at the very instant of the served one.
fn resealed(opened: Opened, prev: &Project, verified: Verified) -> Judged {
    let revision = prev.revision();
    let refused = |message: String| Judged::Rejected {
        revision: Some(revision),
        error: reused(message),
        signed_at: Some(verified.signed_at),
    };
    let doc = match opened.payload {
        Payload::Document(doc) => doc,
        Payload::Tombstone(_) => {
            return refused(format!(
                "a removal at revision {revision}, the served revision; a tombstone's revision \
                 is above the revision it removes"
            ))
        }
    };
    let valid = match validate(*doc, &prev.environment_keys()) {
        Ok(valid) => valid,
        Err(error) => {
            return Judged::Rejected {
                revision: Some(revision),
                error,
                signed_at: Some(verified.signed_at),
            }
        }
    };
    if valid.document().content_digest() != prev.content_digest() {
        return refused(format!(
            "revision {revision} is served with other content; a re-signed copy carries the \
             same document, and a changed one needs a higher revision"
        ));
    }
    match prev.signature().map(|served| served.signed_at) {
        Some(served) if verified.signed_at < served => Judged::OlderEnvelope,
        Some(served) if verified.signed_at == served => refused(format!(
            "a re-signed copy of revision {revision} signed at the same instant as the served \
             copy ({}); a reseal is signed later",
            crate::model::timestamp::format_rfc3339(served)
        )),
        _ => Judged::Resealed(valid.sealed(opened.seal.envelope, verified)),
    }
}

/// A `revision_reused` refusal.
fn reused(message: String) -> ValidationError {
    ValidationError {
        reason: Reason::RevisionReused,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::raw::RawDigest;
    use crate::model::wire::parse_snapshot;
    use crate::store::{PointersStruct, Store};

    fn apply(writer: &mut StoreWriter, body: &str) -> ApplyReport {
        let contents = Contents::Snapshot(parse_snapshot(body.as_bytes()).unwrap());
        let update = Update::new(Origin::Refresh(MassRemoval::Allowed), contents);
        writer.apply(update, SystemTime::now()).unwrap()
    }

    fn doc(id: &str) -> String {
        let env = |id: &str, slug: &str, fallback: bool| {
            format!(
                r##"{{"id":"{id}","slug":"{slug}","name":"n","color":"#000000","system":true,"gateway_fallback":{fallback},"default_publish_target":{fallback}}}"##
            )
        };
        format!(
            r#"{{"id":"{id}","revision":1,"environments":[{},{}]}}"#,
            env("e1", "prod", true),
            env("e2", "staging", false)
        )
    }

    #[test]
    fn a_snapshot_with_an_unattributed_element_removes_nothing_by_absence() {
        let (store, mut writer) = Store::new(1.0);
        apply(
            &mut writer,
            &format!(r#"{{"revision":1,"projects":[{},{}]}}"#, doc("a"), doc("b")),
        );
        assert_eq!(store.project_count(), 2);
        let unreadable = r#"{"payloadType":"t","payload":"!!","signatures":[]}"#;
        let report = apply(
            &mut writer,
            &format!(r#"{{"revision":2,"projects":[{},{unreadable}]}}"#, doc("a")),
        );
        assert_eq!(report.unattributed.len(), 1);
        assert_eq!(report.removed, 0);
        assert!(store.project("b").is_some(), "b may be the unreadable one");
        apply(
            &mut writer,
            &format!(r#"{{"revision":3,"projects":[{}]}}"#, doc("a")),
        );
        assert!(store.project("b").is_none());
    }

    /// Applies `elements` as a full load filed under their ids (a Redis
    /// hash), each skipped unread when byte for byte what `store` serves,
    /// as the Redis source reads them.
    fn apply_filed(
        store: &Store,
        writer: &mut StoreWriter,
        elements: &[(&str, &str)],
    ) -> ApplyReport {
        let reader = crate::model::wire::BodyReader::default();
        let projects = elements
            .iter()
            .map(|(id, json)| reader.filed_unless(id, json, served_raw(store, id)))
            .collect();
        apply_incoming(writer, projects)
    }

    fn apply_incoming(writer: &mut StoreWriter, projects: Vec<Incoming>) -> ApplyReport {
        let body = SnapshotBody {
            cursor: Cursor::Revision(1),
            projects,
            ..SnapshotBody::default()
        };
        let update = Update::new(
            Origin::Refresh(MassRemoval::Allowed),
            Contents::Snapshot(body),
        );
        writer.apply(update, SystemTime::now()).unwrap()
    }

    fn served_raw(store: &Store, id: &str) -> Option<RawDigest> {
        store.project(id).and_then(|p| p.raw())
    }

    #[test]
    fn a_full_load_skips_unread_what_is_served_byte_for_byte() {
        let (store, mut writer) = Store::new(1.0);
        let (a, b) = (doc("a"), doc("b"));
        assert_eq!(
            apply_filed(&store, &mut writer, &[("a", &a), ("b", &b)]).added,
            2
        );
        let served = store.project("a").unwrap();
        assert_eq!(served.raw(), Some(RawDigest::of(a.as_bytes())));
        let reader = crate::model::wire::BodyReader::default();
        let skipped = reader.filed_unless("a", &a, served.raw());
        assert!(
            matches!(skipped.content, Content::AsServed(_)),
            "{skipped:?}"
        );

        let again = apply_filed(&store, &mut writer, &[("a", &a), ("b", &b)]);
        assert_eq!((again.unchanged, again.changed()), (2, 0));
        assert!(Arc::ptr_eq(&served, &store.project("a").unwrap()));

        // Other bytes are read and judged: the same content spelt
        // otherwise is unchanged, other content under the served
        // revision refused, loudly, as ever.
        let respelt = a.replacen(':', ": ", 1);
        let read = apply_filed(&store, &mut writer, &[("a", &respelt), ("b", &b)]);
        assert_eq!((read.unchanged, read.rejected.len()), (2, 0));
        let reused = a.replace(r#""name":"n""#, r#""name":"m""#);
        assert_ne!(reused, a);
        let refused = apply_filed(&store, &mut writer, &[("a", &reused), ("b", &b)]);
        assert_eq!(refused.rejected.len(), 1, "{refused:?}");
        assert_eq!(refused.rejected[0].reason, Reason::RevisionReused);
        assert!(Arc::ptr_eq(&served, &store.project("a").unwrap()));
    }

    #[test]
    fn an_element_skipped_as_served_is_fetched_again_when_what_is_served_changed() {
        let (store, mut writer) = Store::new(1.0);
        let first = doc("a");
        apply_filed(&store, &mut writer, &[("a", &first)]);
        let skipped = |id: &str, digest: RawDigest| Incoming {
            id: id.to_owned(),
            revision: None,
            content: Content::AsServed(digest),
            raw: Some(digest),
        };
        let old = RawDigest::of(first.as_bytes());
        // Revision 2 served since the fetch skipped revision 1's bytes.
        let second = first.replace(r#""revision":1"#, r#""revision":2"#);
        assert_eq!(
            apply_filed(&store, &mut writer, &[("a", &second)]).updated,
            1
        );
        let report = apply_incoming(&mut writer, vec![skipped("a", old), skipped("c", old)]);
        assert_eq!(report.reread, ["a", "c"]);
        assert_eq!((report.changed(), report.unchanged), (0, 0));
        assert_eq!(store.project("a").unwrap().revision(), 2);
        assert!(store.project("c").is_none());
    }

    /// The struct bytes each answer lends, per environment, or `None`.
    fn lent_structs(store: &Store, slugs: &[&str]) -> Vec<Option<(Vec<u8>, Vec<u8>)>> {
        slugs
            .iter()
            .map(|slug| {
                store
                    .resolve_with("a", Some(slug), true, |a| {
                        let mut measured = Vec::new();
                        PointersStruct::measure(a.pointers_json()).put(&mut measured);
                        a.pointers_struct.map(|b| (b.to_vec(), measured))
                    })
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn prerendered_pointers_structs_are_what_the_encoder_writes_and_follow_changes() {
        let now = SystemTime::now();
        let later =
            crate::model::timestamp::format_rfc3339(now + std::time::Duration::from_secs(60));
        let scheduled = doc("a").replace(
            r#""gateway_fallback":true"#,
            &format!(
                r#""gateway_fallback":true,"pointers":{{"prompts":{{"s\"um":"1"}},"providers":{{"é":"2"}}}},"scheduled":[{{"at":"{later}","pointers":{{"prompts":{{"s\"um":"3"}}}}}}]"#
            ),
        );
        let body = format!(r#"{{"revision":1,"projects":[{scheduled}]}}"#);

        let (store, mut writer) = Store::new(1.0);
        apply(&mut writer, &body);
        assert_eq!(
            store.project("a").unwrap().pointers_structs(),
            PointersStructs::PerCheck
        );
        assert_eq!(lent_structs(&store, &["prod", "staging"]), [None, None]);

        let (store, mut writer) = Store::new(1.0);
        writer.set_pointers_structs(PointersStructs::Prerendered);
        apply(&mut writer, &body);
        let before = lent_structs(&store, &["prod", "staging"]);
        for (rendered, measured) in before.iter().map(|s| s.as_ref().unwrap()) {
            assert_eq!(rendered, measured);
        }
        writer.apply_due("a", now + std::time::Duration::from_secs(60));
        let after = lent_structs(&store, &["prod", "staging"]);
        for (rendered, measured) in after.iter().map(|s| s.as_ref().unwrap()) {
            assert_eq!(rendered, measured);
        }
        assert_ne!(before[0], after[0], "the due change is in the prod struct");
        assert_eq!(before[1], after[1]);
    }
}
