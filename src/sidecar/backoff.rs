//! A kinder rate when AWS is failing: while most reads of a cycle fail with a
//! fault that passes by itself (throttling, 5xx, timeouts, broken connections),
//! the next cycle waits longer, doubling up to a bound, so the whole sweep slows
//! down instead of going on at its steady rate; the first cycle whose reads mostly
//! succeed brings the interval back. Nothing published shrinks meanwhile: failed
//! reads keep their services' last known targets whatever the pace.

use std::time::Duration;

/// Longest the extra wait grows to, for any interval.
const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

/// How many cycles in a row failed, and the wait it gives.
#[derive(Debug, Clone)]
pub struct Backoff {
    interval: Duration,
    failing: u32,
}

impl Backoff {
    pub fn new(interval: Duration) -> Self {
        Backoff {
            interval,
            failing: 0,
        }
    }

    /// The time from this cycle's start to the next one's, given whether the
    /// cycle was mostly failing: the interval, or after `n` failing cycles in a
    /// row the interval times 2^n, at most 8 intervals and at most 10 minutes
    /// (never less than the interval).
    pub fn next(&mut self, failing: bool) -> Duration {
        if !failing {
            self.failing = 0;
            return self.interval;
        }
        self.failing = (self.failing + 1).min(16);
        let cap = (self.interval * 8).min(MAX_WAIT).max(self.interval);
        self.interval
            .saturating_mul(1 << self.failing.min(3))
            .min(cap)
    }

    /// Failing cycles in a row.
    pub fn failing(&self) -> u32 {
        self.failing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_while_failing_and_comes_back_at_once() {
        let mut b = Backoff::new(Duration::from_secs(1));
        assert_eq!(b.next(false), Duration::from_secs(1));
        let waits: Vec<u64> = (0..5).map(|_| b.next(true).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 8, 8]);
        assert_eq!(b.failing(), 5);
        assert_eq!(b.next(false), Duration::from_secs(1));
        assert_eq!(b.failing(), 0);
    }

    #[test]
    fn long_intervals_wait_at_most_ten_minutes_more() {
        let mut b = Backoff::new(Duration::from_secs(300));
        assert_eq!(b.next(true), Duration::from_secs(600));
        assert_eq!(b.next(true), Duration::from_secs(600));
        let mut b = Backoff::new(Duration::from_secs(3600));
        assert_eq!(
            b.next(true),
            Duration::from_secs(3600),
            "never below the interval"
        );
    }
}
