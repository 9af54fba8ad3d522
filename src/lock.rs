//! Locks that outlive a panic: the one way the crate takes a `Mutex`.
//!
//! A poisoned lock only means another thread panicked while holding it;
//! what is inside (a map of rejections, a status line) is still valid, so
//! the sidecar keeps going rather than panicking in turn. Layer 0: it
//! imports nothing of the crate, and every layer may use it.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the value over from a thread that panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_gives_its_value() {
        let m = std::sync::Arc::new(Mutex::new(7));
        let held = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), 7);
    }
}
