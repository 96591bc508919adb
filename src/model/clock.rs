//! The two time rules more than one stage needs: when a cached read is due again,
//! and the Unix time that metrics export.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Whether something last read at `at` (never: None) is due again after `every`.
pub fn due(at: Option<Instant>, every: Duration, now: Instant) -> bool {
    at.is_none_or(|t| now.saturating_duration_since(t) >= every)
}

/// Seconds since the Unix epoch, as a float (for `*_timestamp_seconds` gauges).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_when_never_read_or_old_enough() {
        let now = Instant::now();
        let every = Duration::from_secs(10);
        assert!(due(None, every, now));
        assert!(!due(Some(now), every, now));
        assert!(due(Some(now), every, now + every));
        // A read "in the future" (a clock that went back) is not due.
        assert!(!due(Some(now + every), every, now));
        assert!(unix_now() > 1.6e9);
    }
}
