//! A token bucket for log lines a peer can cause, so that a client sending
//! bad requests as fast as it can cannot flood the log.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lock;

/// Lets a burst of events through, then one per interval; counts the rest.
#[derive(Debug)]
pub struct RateLimit {
    burst: u32,
    every: Duration,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: u32,
    refilled: Instant,
    /// Suppressed since the last event let through.
    suppressed: u64,
    /// Suppressed in all.
    total_suppressed: u64,
}

/// What [`RateLimit::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` events were dropped since the last one logged.
    Allow {
        /// Events dropped since the last one let through.
        suppressed: u64,
    },
    /// Drop it (it is counted).
    Suppress,
}

impl RateLimit {
    /// `burst` events at once, then one every `every`.
    pub fn new(burst: u32, every: Duration) -> Self {
        RateLimit {
            burst,
            every,
            state: Mutex::new(Bucket {
                tokens: burst,
                refilled: Instant::now(),
                suppressed: 0,
                total_suppressed: 0,
            }),
        }
    }

    /// Decides for one event happening now.
    pub fn check(&self) -> Verdict {
        self.check_at(Instant::now())
    }

    /// Decides for one event happening at `now`.
    pub fn check_at(&self, now: Instant) -> Verdict {
        let mut b = lock(&self.state);
        let elapsed = now.saturating_duration_since(b.refilled);
        if !self.every.is_zero() && elapsed >= self.every {
            let periods = elapsed.as_nanos() / self.every.as_nanos().max(1);
            let add = u32::try_from(periods).unwrap_or(u32::MAX);
            b.tokens = b.tokens.saturating_add(add).min(self.burst);
            b.refilled = now;
        }
        if b.tokens > 0 {
            b.tokens -= 1;
            Verdict::Allow {
                suppressed: std::mem::take(&mut b.suppressed),
            }
        } else {
            b.suppressed += 1;
            b.total_suppressed += 1;
            Verdict::Suppress
        }
    }

    /// Events dropped since the last one let through (for a closing summary).
    pub fn pending_suppressed(&self) -> u64 {
        lock(&self.state).suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval_with_counts() {
        let limit = RateLimit::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limit.check_at(t0), Verdict::Allow { suppressed: 0 });
        }
        for _ in 0..100 {
            assert_eq!(limit.check_at(t0), Verdict::Suppress);
        }
        assert_eq!(limit.pending_suppressed(), 100);
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(limit.check_at(t1), Verdict::Allow { suppressed: 100 });
        assert_eq!(limit.check_at(t1), Verdict::Suppress);
        assert_eq!(limit.pending_suppressed(), 1);
        // A long quiet spell refills the burst, never beyond it.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(matches!(limit.check_at(t2), Verdict::Allow { .. }));
        }
        assert_eq!(limit.check_at(t2), Verdict::Suppress);
    }
}
