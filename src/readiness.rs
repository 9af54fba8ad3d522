//! Readiness: a snapshot is loaded (from the source or the disk cache) and,
//! when `max_staleness` is set, the source was reached recently enough.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::status::SyncStatus;
use crate::store::Store;

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
    pub fn check(&self) -> Result<(), String> {
        if !self.store.is_loaded() {
            return Err("no snapshot loaded yet".into());
        }
        if self.max_staleness.is_zero() {
            return Ok(());
        }
        match self.status.age(self.clock.now()) {
            Some(age) if age <= self.max_staleness => Ok(()),
            Some(age) => Err(format!(
                "last successful contact with the source was {}s ago (max_staleness {}s)",
                age.as_secs(),
                self.max_staleness.as_secs_f64()
            )),
            None => Err("the source has not been reached yet (max_staleness is set)".into()),
        }
    }
}
