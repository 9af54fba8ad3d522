//! Readiness: a snapshot is loaded (from the source or the disk cache) and,
//! when `max_staleness` is set, the source was reached recently enough.

use std::sync::Arc;
use std::time::Duration;

use super::status::SyncStatus;
use crate::model::clock::SharedClock;
use crate::store::Store;

/// Why the sidecar is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("no snapshot loaded yet")]
    NoSnapshot,
    #[error("the source has not been reached yet (max_staleness is set)")]
    NeverReached,
    #[error("last successful contact with the source was {}s ago (max_staleness {}s)", .age.as_secs(), .max.as_secs_f64())]
    Stale { age: Duration, max: Duration },
}

#[derive(Debug, Clone)]
pub struct Readiness {
    pub store: Store,
    pub status: Arc<SyncStatus>,
    /// Zero: never unready once loaded.
    pub max_staleness: Duration,
    pub clock: SharedClock,
}

impl Readiness {
    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), NotReady> {
        if !self.store.is_loaded() {
            return Err(NotReady::NoSnapshot);
        }
        if self.max_staleness.is_zero() {
            return Ok(());
        }
        match self.status.age(self.clock.now()) {
            Some(age) if age <= self.max_staleness => Ok(()),
            Some(age) => Err(NotReady::Stale {
                age,
                max: self.max_staleness,
            }),
            None => Err(NotReady::NeverReached),
        }
    }
}
