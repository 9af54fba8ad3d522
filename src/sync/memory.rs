//! Handing memory back to the operating system after a large update.
//!
//! Applying a full snapshot holds the fetched body and every parsed
//! document at once; when it is done most of that is free again, but the
//! allocator keeps the pages resident for later use, so a sidecar that
//! loaded 10 000 projects would sit at its peak instead of its working
//! set. The library does not choose the allocator (the binary does) and
//! contains no unsafe code, so the binary registers how to give free pages
//! back ([`set_release`]) and the writer calls [`release`] after every full
//! snapshot it applies. Without a registered function, `release` does
//! nothing.

use std::sync::OnceLock;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Registers the function that returns free memory to the system (glibc:
/// `malloc_trim(0)`). Only the first registration counts.
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Returns free memory to the system, if the binary said how. Costs a walk
/// of the allocator's free lists (a few milliseconds at 10 000 projects):
/// for after large updates, never per request.
pub fn release() {
    if let Some(release) = RELEASE.get() {
        release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn count() {
        CALLS.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn release_calls_the_registered_function() {
        set_release(count);
        release();
        release();
        assert_eq!(CALLS.load(Ordering::SeqCst), 2);
    }
}
