//! Exponential backoff with full jitter: after the n-th consecutive failure
//! wait a uniformly random time in `[0, min(max, base * 2^n)]`, so a fleet
//! that failed together does not retry together. Reset on success.

use std::time::Duration;

/// First retry window.
pub const BASE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// Jitter seeded from the process's entropy: sidecars that failed
    /// together draw different delays.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff::seeded(base, max, fastrand::u64(..))
    }

    /// Reproducible jitter, for tests.
    pub fn seeded(base: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            failures: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Records a failure and returns how long to wait before retrying.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.window();
        self.failures = self.failures.saturating_add(1);
        self.uniform(cap)
    }

    /// The window the next delay is drawn from.
    pub fn window(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Uniform in `[0, upto]`.
    pub fn uniform(&mut self, upto: Duration) -> Duration {
        let nanos = upto.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(self.rng.u64(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_double_up_to_the_cap_and_reset() {
        let mut b = Backoff::seeded(Duration::from_millis(100), Duration::from_secs(1), 7);
        let mut windows = Vec::new();
        for _ in 0..6 {
            let window = b.window();
            let delay = b.next_delay();
            assert!(delay <= window, "{delay:?} > {window:?}");
            windows.push(window.as_millis());
        }
        assert_eq!(windows, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.window(), Duration::from_millis(100));
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn delays_are_jittered_across_the_whole_window() {
        let mut b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(1), 1);
        let delays: Vec<_> = (0..200).map(|_| b.next_delay()).collect();
        assert!(delays.iter().any(|d| *d < Duration::from_millis(250)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(750)));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::seeded(Duration::from_millis(100), Duration::from_secs(30), 3);
        for _ in 0..200 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }
}
