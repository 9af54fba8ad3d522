//! Sync status: what the source last achieved and last failed at, for
//! readiness (staleness), `/admin/status` and the age gauge.
//!
//! Written by the source task, read by the operator plane; never touched by
//! the resolve path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::store::Store;

/// Where what a sidecar serves comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// The source confirmed it since this process started.
    Live,
    /// The last-known-good cache, the source not reached since start.
    Cache,
    /// Nothing is loaded yet.
    NeverSynced,
}

impl Provenance {
    pub const ALL: [Provenance; 3] = [Provenance::Live, Provenance::Cache, Provenance::NeverSynced];

    pub fn as_str(self) -> &'static str {
        match self {
            Provenance::Live => "live",
            Provenance::Cache => "cache",
            Provenance::NeverSynced => "never_synced",
        }
    }

    /// What `store`, synced as `status` says, serves.
    pub fn of(store: &Store, status: &SyncStatus) -> Provenance {
        if !store.is_loaded() {
            Provenance::NeverSynced
        } else if status.confirmed() {
            Provenance::Live
        } else {
            Provenance::Cache
        }
    }
}

/// A timestamped message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: SystemTime,
    pub message: String,
}

/// What a background task (the source, the cache writer, the reporter,
/// the key watcher) did last: how often it succeeded, its last success and
/// its last error. The one holder of such a record; the operator plane
/// shows it.
#[derive(Debug, Default)]
pub struct Activity {
    log: Mutex<ActivityLog>,
}

/// A copy of an [`Activity`]'s record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ActivityLog {
    pub successes: u64,
    pub last_success: Option<Event>,
    pub last_error: Option<Event>,
}

impl Activity {
    pub fn success(&self, at: SystemTime, message: impl Into<String>) {
        let mut log = crate::lock::lock(&self.log);
        log.successes += 1;
        log.last_success = Some(Event {
            at,
            message: message.into(),
        });
    }

    pub fn error(&self, at: SystemTime, message: impl Into<String>) {
        crate::lock::lock(&self.log).last_error = Some(Event {
            at,
            message: message.into(),
        });
    }

    /// What failed before is over (the next good read of key files).
    pub fn clear_error(&self) {
        crate::lock::lock(&self.log).last_error = None;
    }

    pub fn log(&self) -> ActivityLog {
        crate::lock::lock(&self.log).clone()
    }
}

#[derive(Debug, Default)]
pub struct SyncStatus {
    /// Millis since the epoch of the last successful contact (0 = never);
    /// an atomic so readiness checks take no lock.
    last_contact_ms: AtomicU64,
    events: Activity,
    /// The source was reached since start (not only the cache loaded).
    confirmed: AtomicBool,
    /// Notified once, when `confirmed` turns true.
    first_contact: Notify,
    /// Why the blast-radius guard holds back what the source has, while
    /// it does (the node's report says so).
    held: std::sync::Mutex<Option<String>>,
    /// Since when, and why, the source's population is incomplete (a
    /// Redis without a matching marker): nothing is removed for being
    /// absent meanwhile.
    incomplete: std::sync::Mutex<Option<Event>>,
}

impl SyncStatus {
    /// The source was reached and what is served is confirmed by it
    /// (called on every success; only the first one wakes anybody).
    pub fn confirm(&self) {
        if !self.confirmed.swap(true, Ordering::AcqRel) {
            self.first_contact.notify_one();
        }
    }

    /// True once the source was reached since start.
    pub fn confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Acquire)
    }

    /// Resolves once the source is first reached (at once if it was).
    pub async fn first_contact(&self) {
        if !self.confirmed() {
            self.first_contact.notified().await;
        }
    }

    /// The source reached its data (even if nothing changed).
    pub fn success(&self, at: SystemTime, message: impl Into<String>) {
        self.confirm();
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_contact_ms.fetch_max(ms, Ordering::Relaxed);
        self.events.success(at, message);
    }

    /// Moves the staleness baseline without recording an event: data loaded
    /// from the disk cache is as fresh as the cache file, and an unchanged
    /// snapshot file that was read fine is as fresh as the last check.
    pub fn baseline(&self, at: SystemTime) {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_contact_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// The guard refused what the source has (`Some(why)`), or the
    /// source was applied again (`None`).
    pub fn hold(&self, why: Option<String>) {
        *crate::lock::lock(&self.held) = why;
    }

    /// Why the guard holds the node back, while it does.
    pub fn held(&self) -> Option<String> {
        crate::lock::lock(&self.held).clone()
    }

    /// The source's population was found incomplete (`Some(why)`), or
    /// complete (`None`). An incomplete one keeps the time it was first
    /// found so.
    pub fn population(&self, at: SystemTime, incomplete: Option<String>) {
        let mut current = crate::lock::lock(&self.incomplete);
        *current = incomplete.map(|message| Event {
            at: current.as_ref().map_or(at, |e| e.at),
            message,
        });
    }

    /// Since when and why the population is incomplete, while it is.
    pub fn incomplete(&self) -> Option<Event> {
        crate::lock::lock(&self.incomplete).clone()
    }

    /// The source failed to fetch, or what it fetched was refused whole.
    pub fn error(&self, at: SystemTime, message: impl Into<String>) {
        self.events.error(at, message);
    }

    pub fn events(&self) -> ActivityLog {
        self.events.log()
    }

    /// Time of the last successful contact with the source.
    pub fn last_contact(&self) -> Option<SystemTime> {
        match self.last_contact_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    /// How long since the last successful contact, if there was one.
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        self.last_contact()
            .map(|t| now.duration_since(t).unwrap_or_default())
    }
}
