//! A shared budget of bytes: threads take a share before they hold memory
//! for a peer and give it back after; a thread that would go over waits.

use std::sync::{Condvar, Mutex, PoisonError};

use super::lock;

/// A counting budget of bytes with a limit.
#[derive(Debug)]
pub struct ByteBudget {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        ByteBudget {
            limit,
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Takes `n` bytes, waiting while that would go over the limit. A share
    /// larger than the whole budget is let through alone, once nothing else
    /// is held, so no request can wait for ever on its own size.
    pub fn acquire(&self, n: u64) {
        let mut used = lock(&self.used);
        while *used > 0 && used.saturating_add(n) > self.limit {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *used += n;
    }

    /// Gives back `n` bytes taken with [`ByteBudget::acquire`].
    pub fn release(&self, n: u64) {
        if n == 0 {
            return;
        }
        let mut used = lock(&self.used);
        *used = used.saturating_sub(n);
        self.freed.notify_all();
    }

    /// The bytes held now.
    pub fn used(&self) -> u64 {
        *lock(&self.used)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_taker_over_the_limit_waits_for_a_release() {
        let b = Arc::new(ByteBudget::new(100));
        b.acquire(60);
        b.acquire(40);
        assert_eq!(b.used(), 100);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let b = b.clone();
            std::thread::spawn(move || {
                b.acquire(10);
                tx.send(()).unwrap();
            })
        };
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "went over"
        );
        b.release(40);
        rx.recv_timeout(Duration::from_secs(10)).expect("not woken");
        waiter.join().unwrap();
        assert_eq!(b.used(), 70);
    }

    #[test]
    fn a_share_larger_than_the_budget_goes_alone() {
        let b = ByteBudget::new(10);
        b.acquire(1000);
        assert_eq!(b.used(), 1000);
        b.release(1000);
        assert_eq!(b.used(), 0);
    }
}
