//! The write side of the store: validating fetched documents and
//! publishing them, project by project, with the blast-radius guard.
//!
//! [`StoreWriter`] is not `Clone`: exactly one exists per store, owned by
//! the writer (see `sync::writer`), and it runs off the request threads.
//! Everything it decides from (last accepted revision and slugs) lives in
//! the served snapshot itself.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::project::Project;
use super::{copy_index, lock, Index, Rejection, Shared, Slot, MASS_REMOVAL_MIN_LOADED};
use crate::model::validate::{validate, Reason, ValidProject, ValidationError};
use crate::model::wire::{ChangesBody, Incoming, SnapshotBody, Unreadable};

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
    pub(super) fn new(shared: Arc<Shared>, max_removed_fraction: f64) -> StoreWriter {
        StoreWriter {
            shared,
            max_removed_fraction,
        }
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
        let id = incoming_id(&incoming).to_owned();
        let previous = pending.get(&id).map(|s| s.0.load_full());
        let valid = match judge(incoming, previous.as_deref()) {
            Judged::Stale => {
                report.stale += 1;
                return;
            }
            Judged::Unchanged => {
                report.unchanged += 1;
                return;
            }
            Judged::Rejected { revision, error } => {
                self.reject(id, revision, error, opts.now, report);
                return;
            }
            Judged::Valid(valid) => valid,
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

/// What the store makes of one incoming document, given the project as
/// served (if any): the one judgement both the writer and `env-sidecar
/// validate` use.
#[derive(Debug)]
pub enum Judged {
    /// Older than the served revision: ignored.
    Stale,
    /// The served revision again: a no-op.
    Unchanged,
    /// Breaks a rule (or could not be read as a document at all).
    Rejected {
        revision: Option<u64>,
        error: ValidationError,
    },
    /// Would be accepted.
    Valid(ValidProject),
}

/// Judges `incoming` against `previous`, the project as served: revision
/// order first, then every rule of the data model, slug immutability
/// included.
pub fn judge(incoming: Incoming, previous: Option<&Project>) -> Judged {
    let revision = match &incoming {
        Ok(doc) => Some(doc.revision),
        Err(u) => u.revision,
    };
    if let (Some(prev), Some(revision)) = (previous, revision) {
        if revision < prev.revision() {
            return Judged::Stale;
        }
        if revision == prev.revision() {
            return Judged::Unchanged;
        }
    }
    let doc = match incoming {
        Ok(doc) => doc,
        Err(Unreadable {
            revision, message, ..
        }) => {
            return Judged::Rejected {
                revision,
                error: ValidationError {
                    reason: Reason::Malformed,
                    message,
                },
            }
        }
    };
    let revision = doc.revision;
    let previous_keys = previous.map(|p| p.environment_keys()).unwrap_or_default();
    match validate(doc, &previous_keys) {
        Ok(valid) => Judged::Valid(valid),
        Err(error) => Judged::Rejected {
            revision: Some(revision),
            error,
        },
    }
}

fn incoming_id(incoming: &Incoming) -> &str {
    match incoming {
        Ok(doc) => &doc.id,
        Err(u) => &u.id,
    }
}
