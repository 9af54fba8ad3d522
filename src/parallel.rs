//! Work split over the machine's cores, in order: for the loads that
//! happen before a sidecar is ready (a cold start, a restart from the
//! cache), when the request threads have nothing to do yet and a large
//! snapshot is the only thing between the node and traffic. Layer 0: it
//! imports nothing of the crate.
//!
//! Small inputs run on the calling thread: below [`MIN_PARALLEL`] items
//! the threads cost more than they save.

use std::num::NonZeroUsize;

/// Below this many items, [`map`] runs on the calling thread.
pub const MIN_PARALLEL: usize = 2048;

/// How many threads a parallel [`map`] uses: one per core.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// `items` mapped with `f`, in order. With `parallel` and at least
/// [`MIN_PARALLEL`] items, contiguous runs of them are mapped on one
/// scoped thread per core; otherwise on the calling thread. A panic in
/// `f` is a panic of the caller, as in a sequential map.
pub fn map<T, U, F>(items: Vec<T>, parallel: bool, f: F) -> Vec<U>
where
    T: Send,
    U: Send,
    F: Fn(T) -> U + Sync,
{
    let threads = threads();
    if !parallel || threads == 1 || items.len() < MIN_PARALLEL {
        return items.into_iter().map(f).collect();
    }
    let per_thread = items.len().div_ceil(threads);
    let mut parts: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut rest = items;
    while rest.len() > per_thread {
        let tail = rest.split_off(per_thread);
        parts.push(rest);
        rest = tail;
    }
    parts.push(rest);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || part.into_iter().map(f).collect::<Vec<U>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(mapped) => mapped,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_is_kept_whatever_the_split() {
        for n in [0, 1, MIN_PARALLEL - 1, MIN_PARALLEL, 10_007] {
            let items: Vec<usize> = (0..n).collect();
            let mapped = map(items, true, |i| i * 2);
            assert_eq!(mapped, (0..n).map(|i| i * 2).collect::<Vec<_>>(), "{n}");
        }
    }

    #[test]
    fn large_inputs_use_several_threads_small_ones_the_caller() {
        let ids = |n: usize, parallel: bool| {
            let seen = map((0..n).collect::<Vec<_>>(), parallel, |_| {
                std::thread::current().id()
            });
            seen.into_iter()
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        assert_eq!(ids(100, true), 1);
        assert_eq!(ids(10_000, false), 1);
        if threads() > 1 {
            assert_eq!(ids(10_000, true), threads());
        }
    }
}
