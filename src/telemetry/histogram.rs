//! A fixed-bucket histogram made of atomics, for the resolve path.
//!
//! The exporter's own histograms queue every sample and fold them in at
//! upkeep; at a hundred thousand resolves a second that is an allocation
//! now and then on the hot path and a multi-millisecond drain on a worker
//! thread every few seconds (it showed as p99 latency under load). Here a
//! sample is a binary search over a dozen bounds and two relaxed atomic
//! adds; rendering reads the counters. Same exposition format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug)]
pub struct AtomicHistogram {
    /// Upper bounds in nanoseconds, ascending.
    bounds_nanos: Box<[u64]>,
    bounds_seconds: &'static [f64],
    /// One counter per bound, plus one for `+Inf`.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds_seconds: &'static [f64]) -> AtomicHistogram {
        AtomicHistogram {
            bounds_nanos: bounds_seconds
                .iter()
                .map(|s| (s * 1e9).round() as u64)
                .collect(),
            bounds_seconds,
            counts: (0..=bounds_seconds.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn record(&self, value: Duration) {
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.bounds_nanos.partition_point(|b| *b < nanos);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Appends the exposition (HELP, TYPE, cumulative buckets, sum, count).
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (bound, count) in self.bounds_seconds.iter().zip(self.counts.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds_seconds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inclusive() {
        static BOUNDS: [f64; 3] = [0.000001, 0.00001, 0.0001];
        let h = AtomicHistogram::new(&BOUNDS);
        for nanos in [500, 1_000, 5_000, 50_000, 2_000_000] {
            h.record(Duration::from_nanos(nanos));
        }
        let mut out = String::new();
        h.render("x_seconds", "help", &mut out);
        assert!(
            out.contains("x_seconds_bucket{le=\"0.000001\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_bucket{le=\"0.00001\"} 3\n"));
        assert!(out.contains("x_seconds_bucket{le=\"0.0001\"} 4\n"));
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 5\n"));
        assert!(out.contains("x_seconds_count 5\n"));
        assert!(out.contains("x_seconds_sum 0.0020565\n"), "{out}");
    }
}
