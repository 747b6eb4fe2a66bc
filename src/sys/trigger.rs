//! A one-shot stop signal that threads can wait on and `poll` can watch.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

/// Set once, never cleared. Waiters are woken through a condition variable
/// and poll loops through the read end of a pipe that becomes readable.
#[derive(Debug)]
pub struct Trigger {
    set: Mutex<bool>,
    cv: Condvar,
    read: OwnedFd,
    write: OwnedFd,
}

impl Trigger {
    /// A trigger that is not set.
    ///
    /// # Errors
    ///
    /// The pipe could not be created.
    pub fn new() -> io::Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok(Trigger {
            set: Mutex::new(false),
            cv: Condvar::new(),
            read,
            write,
        })
    }

    /// Sets the trigger and wakes every waiter. Idempotent.
    pub fn trigger(&self) {
        let mut set = self.set.lock().unwrap_or_else(PoisonError::into_inner);
        if !*set {
            *set = true;
            // The pipe stays readable from now on; one byte is enough.
            let _ = rustix::io::write(&self.write, &[1]);
            self.cv.notify_all();
        }
    }

    /// Whether the trigger is set.
    pub fn is_triggered(&self) -> bool {
        *self.set.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the trigger is set or `timeout` passes; returns whether it is set.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let set = self.set.lock().unwrap_or_else(PoisonError::into_inner);
        let (set, _) = self
            .cv
            .wait_timeout_while(set, timeout, |set| !*set)
            .unwrap_or_else(PoisonError::into_inner);
        *set
    }

    /// A descriptor that becomes readable once the trigger is set, for `poll`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn wakes_waiters_and_pollers() {
        let t = Arc::new(Trigger::new().unwrap());
        assert!(!t.wait_timeout(Duration::from_millis(1)));
        let t2 = Arc::clone(&t);
        let waiter = std::thread::spawn(move || t2.wait_timeout(Duration::from_secs(10)));
        t.trigger();
        t.trigger();
        assert!(waiter.join().unwrap());
        let fd = t.fd();
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let n = rustix::event::poll(&mut fds, None).unwrap();
        assert_eq!(n, 1);
        assert!(t.is_triggered());
    }
}
