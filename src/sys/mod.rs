//! Small operating-system helpers every layer may use: a stop signal that
//! threads and `poll` can wait on, a poison-tolerant lock, the monotonic
//! clock, a rate limit for log lines and a shared byte budget. Nothing here knows about NBD.

use std::sync::{Mutex, MutexGuard, PoisonError};

mod budget;
pub mod fault;
mod rate;
mod trigger;

pub use budget::ByteBudget;
pub use rate::{RateLimit, Verdict};
pub use trigger::Trigger;

/// Locks `m`, taking the data even if another thread panicked while holding
/// it: every structure behind our locks stays consistent between statements,
/// so a panic elsewhere must not take the whole server down with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The monotonic clock in milliseconds (never 0, so 0 can mean "not set").
pub fn monotonic_ms() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    (secs * 1000 + nanos / 1_000_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_ms_moves_forward_and_is_never_zero() {
        let a = monotonic_ms();
        let b = monotonic_ms();
        assert!(a > 0 && b >= a);
    }

    #[test]
    fn lock_survives_a_poisoned_mutex() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
