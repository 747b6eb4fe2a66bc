//! Busy-polling for the next request of a client at queue depth 1.
//!
//! A connection's reading thread that has answered everything sleeps in
//! `recv` until the next request. On a machine whose idle CPUs halt (a
//! virtual machine without guest halt-polling, as most are), waking it
//! takes an interrupt between CPUs: tens of microseconds, paid on every
//! request by a client that sends one request at a time and waits for its
//! reply (a database's synchronous writes, `fio --iodepth=1`). Polling the
//! socket for a little while after the reply, the thread finds the next
//! request without having slept. Measured on a two-CPU VM (`bench/run`,
//! randread-qd1-j1, fio 4 KiB random reads at queue depth 1): 7,882 IOPS
//! sleeping, 22,914 polling (docs/benchmark.md, bench/RESULTS.md).
//!
//! Polling costs CPU, so it is bounded:
//! - only a connection whose last [`QUALIFY`] waits each followed a single
//!   small request polls: a client that pipelines, or a migration source
//!   streaming large WRITEs, never does;
//! - a request found at the first look, right after the reply, shows a
//!   client with more in flight that sends one request at a time (fio at
//!   queue depth 16): the connection stops polling until it qualifies
//!   again. Polling for such a client only took CPU from it: fio 4 KiB
//!   random reads at queue depth 16, four interleaved rounds by hand,
//!   169,436-190,696 IOPS (server 88-94% of a CPU) polling, 182,854-198,873
//!   (86-90%) with this rule, 183,064-203,923 (82-87%) with
//!   `--busy-poll 0`;
//! - the time it polls adapts, as the kernel's haltpoll does: a wait that
//!   outlasted [`Limits::busy_poll`](super::Limits::busy_poll) (the client
//!   paused) halves it, down to nothing; a sleep short enough to have been
//!   caught doubles it again, up to that limit;
//! - at most [`PollSlots::max`] threads of the server poll at once: half
//!   the CPUs the process may run on, at most 4, none on one CPU; and a
//!   polling thread yields the CPU between looks, so that a client on the
//!   same CPU runs first;
//! - a connection counts again, when it first qualifies, the CPUs the
//!   process may run on, and the slots follow: a server pinned to one CPU
//!   after it started (`taskset -a -p`, a cpuset changed at run time) does
//!   not poll either, and one unpinned later does.
//!   There the request is only ever found after the client has yielded
//!   the CPU, so polling adds a round of scheduling to every request: fio
//!   4 KiB random reads at queue depth 1 on CPU 0, the server pinned there
//!   after it started, four interleaved rounds by hand: 105,381-113,337
//!   IOPS (median 108,565, p50 7.0-7.5 µs) polling, 111,780-115,127
//!   (median 114,676, p50 6.4-6.5 µs) not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Consecutive single small requests that make a connection poll.
pub(crate) const QUALIFY: u32 = 16;
/// Requests up to this size count as small: for larger ones the transfer,
/// not the wake-up, is the latency.
pub(crate) const SMALL_MAX: u32 = 64 << 10;
/// The shortest window worth polling; halving below it stops polling.
const MIN_WINDOW: Duration = Duration::from_micros(5);
/// The most threads that poll at once on any machine.
const MAX_SLOTS: usize = 4;

/// How many of the server's threads may poll at once.
#[derive(Debug)]
pub(crate) struct PollSlots {
    busy: AtomicUsize,
    /// Half the CPUs, at most [`MAX_SLOTS`]; counted again by each
    /// connection that qualifies, when `cpus_now` is set.
    max: AtomicUsize,
    /// The CPUs the process may run on now (`None`: the slots keep the
    /// number they were made for).
    cpus_now: Option<fn() -> usize>,
}

impl PollSlots {
    /// Slots for half of `cpus` CPUs, at most [`MAX_SLOTS`].
    pub(crate) fn for_cpus(cpus: usize) -> Self {
        PollSlots {
            busy: AtomicUsize::new(0),
            max: AtomicUsize::new(slots_for(cpus)),
            cpus_now: None,
        }
    }

    /// Slots for the CPUs this process may run on.
    pub(crate) fn for_this_machine() -> Self {
        PollSlots {
            cpus_now: Some(allowed_cpus),
            ..Self::for_cpus(allowed_cpus())
        }
    }

    /// Whether polling can pay now: counts the CPUs the process may run on
    /// again (a server pinned or unpinned since it started), and says
    /// whether that leaves any slot.
    fn pays(&self) -> bool {
        if let Some(cpus) = self.cpus_now {
            self.max.store(slots_for(cpus()), Ordering::Release);
        }
        self.max() > 0
    }

    /// How many threads may poll at once.
    fn max(&self) -> usize {
        self.max.load(Ordering::Acquire)
    }

    /// A slot, if one is free; given back when dropped.
    fn take(&self) -> Option<Slot<'_>> {
        self.busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max()).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self))
    }
}

/// Slots for `cpus` CPUs: half of them, at most [`MAX_SLOTS`].
fn slots_for(cpus: usize) -> usize {
    (cpus / 2).min(MAX_SLOTS)
}

/// The CPUs this process may run on (its affinity and CPU quota).
fn allowed_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// A taken [`PollSlots`] slot.
struct Slot<'a>(&'a PollSlots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One connection's polling state.
#[derive(Debug)]
pub(crate) struct BusyPoll {
    /// The longest it polls (zero: never).
    max: Duration,
    /// How long it polls now.
    window: Duration,
    /// Consecutive waits that followed a single small request.
    singles: u32,
    /// Requests read since the last wait, and whether all were small.
    batch: u32,
    batch_small: bool,
    /// The wait in progress: when it began and whether polling ended it.
    waiting: Option<(Instant, bool)>,
    /// Whether [`PollSlots::pays`] was asked (once, at the first qualified wait).
    asked: bool,
    /// Counts for the connection's closing log line.
    pub(crate) polls: u64,
    pub(crate) caught: u64,
}

impl BusyPoll {
    /// Polling for at most `max` (zero turns it off).
    pub(crate) fn new(max: Duration) -> Self {
        BusyPoll {
            max,
            window: max,
            singles: 0,
            batch: 0,
            batch_small: true,
            waiting: None,
            asked: false,
            polls: 0,
            caught: 0,
        }
    }

    /// A request of `len` bytes was read.
    pub(crate) fn request(&mut self, len: u32) {
        self.batch += 1;
        self.batch_small &= len <= SMALL_MAX;
    }

    /// Called with nothing left to read and every reply sent, before the
    /// thread sleeps for the next request: polls `ready` (which must not
    /// block) while this connection qualifies, its window is open and a
    /// slot is free.
    pub(crate) fn wait(&mut self, slots: &PollSlots, mut ready: impl FnMut() -> bool) {
        if self.batch == 1 && self.batch_small {
            self.singles = (self.singles + 1).min(QUALIFY);
        } else if self.batch > 0 {
            self.singles = 0;
        }
        self.batch = 0;
        self.batch_small = true;
        if self.max.is_zero() {
            return;
        }
        let start = Instant::now();
        self.waiting = Some((start, false));
        if self.singles < QUALIFY || self.window.is_zero() {
            return;
        }
        if !self.asked {
            self.asked = true;
            if !slots.pays() {
                self.max = Duration::ZERO;
                return;
            }
        }
        let Some(_slot) = slots.take() else {
            return;
        };
        self.polls += 1;
        let mut first = true;
        loop {
            if ready() {
                if first {
                    // Already there at the first look, right after the
                    // reply: the client sent it without waiting for that
                    // reply, so it has more in flight (fio at queue depth
                    // 16 sending one request at a time). It needs no
                    // polling, which would only take CPU from it.
                    self.singles = 0;
                }
                self.caught += 1;
                self.waiting = Some((start, true));
                return;
            }
            first = false;
            if start.elapsed() >= self.window {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// The next request has arrived: adapts the window to how long the
    /// wait was.
    pub(crate) fn arrived(&mut self) {
        if let Some((start, caught)) = self.waiting.take() {
            self.adapt(start.elapsed(), caught);
        }
    }

    /// Adapts the window to a wait of `waited` that polling ended or not.
    fn adapt(&mut self, waited: Duration, caught: bool) {
        if caught {
            return;
        }
        if waited <= self.max {
            // Slept, but polling longer would have caught it.
            self.window = (self.window * 2).clamp(MIN_WINDOW, self.max);
        } else {
            // The client paused: polling was (or would have been) wasted.
            self.window /= 2;
            if self.window < MIN_WINDOW {
                self.window = Duration::ZERO;
            }
        }
    }

    /// How long it polls now.
    #[cfg(test)]
    fn window(&self) -> Duration {
        self.window
    }

    /// [`BusyPoll::arrived`] after a wait said to have lasted `waited`.
    #[cfg(test)]
    fn arrived_after(&mut self, waited: Duration) {
        let (_, caught) = self.waiting.take().expect("no wait in progress");
        self.adapt(waited, caught);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_millis(5);

    /// Makes `poll` qualify: [`QUALIFY`] waits after single small requests;
    /// the last one polls and finds the request at its second look.
    fn qualify(poll: &mut BusyPoll, slots: &PollSlots) {
        for _ in 0..QUALIFY {
            poll.request(4096);
            let mut looks = 0;
            poll.wait(slots, || {
                looks += 1;
                looks > 1
            });
            poll.arrived();
        }
    }

    #[test]
    fn polls_only_after_single_small_requests() {
        let slots = PollSlots::for_cpus(2);
        let mut poll = BusyPoll::new(MAX);
        let mut looks = 0;
        for _ in 0..QUALIFY - 1 {
            poll.request(4096);
            poll.wait(&slots, || {
                looks += 1;
                true
            });
            poll.arrived();
        }
        assert_eq!(looks, 0, "polled before qualifying");
        poll.request(4096);
        poll.wait(&slots, || {
            looks += 1;
            true
        });
        assert_eq!((looks, poll.polls, poll.caught), (1, 1, 1));

        // Two requests read at once (a client pipelining): no more polling.
        poll.request(4096);
        poll.request(4096);
        poll.wait(&slots, || panic!("polled after a batch of two"));
        poll.arrived();
        // Nor after a large request.
        qualify(&mut poll, &slots);
        poll.request(SMALL_MAX + 1);
        poll.wait(&slots, || panic!("polled after a large request"));
    }

    #[test]
    fn a_missed_poll_gives_up_after_its_window() {
        let slots = PollSlots::for_cpus(2);
        let mut poll = BusyPoll::new(Duration::from_millis(2));
        qualify(&mut poll, &slots);
        poll.request(4096);
        let start = Instant::now();
        let mut looks = 0;
        poll.wait(&slots, || {
            looks += 1;
            false
        });
        let polled = start.elapsed();
        assert!(
            polled >= Duration::from_millis(2),
            "gave up after {polled:?}"
        );
        // At least one look (a loaded machine may run the loop only once).
        assert!(looks >= 1);
        assert_eq!(
            (poll.polls, poll.caught),
            (2, 1),
            "the last wait of qualify() polled and found"
        );
    }

    #[test]
    fn long_waits_close_the_window_and_short_sleeps_open_it() {
        let slots = PollSlots::for_cpus(2);
        let max = Duration::from_micros(40);
        let mut poll = BusyPoll::new(max);
        qualify(&mut poll, &slots);
        // The client pauses after each reply: the window halves to nothing.
        let mut windows = Vec::new();
        while !poll.window().is_zero() {
            poll.request(4096);
            poll.wait(&slots, || false);
            poll.arrived_after(max * 3);
            windows.push(poll.window());
            assert!(windows.len() < 10, "never closed: {windows:?}");
        }
        assert_eq!(windows[0], max / 2);
        // Closed: no polling at all.
        poll.request(4096);
        poll.wait(&slots, || panic!("polled with the window closed"));
        // A sleep that ended within the limit reopens it.
        poll.arrived_after(max / 2);
        assert_eq!(poll.window(), MIN_WINDOW);
        poll.request(4096);
        poll.wait(&slots, || false);
        poll.arrived_after(max);
        assert_eq!(poll.window(), MIN_WINDOW * 2);
    }

    #[test]
    fn slots_bound_the_threads_that_poll() {
        assert_eq!(PollSlots::for_cpus(1).max(), 0);
        assert_eq!(PollSlots::for_cpus(2).max(), 1);
        assert_eq!(PollSlots::for_cpus(64).max(), MAX_SLOTS);

        let slots = PollSlots::for_cpus(2);
        let mut first = BusyPoll::new(MAX);
        let mut second = BusyPoll::new(MAX);
        qualify(&mut first, &slots);
        qualify(&mut second, &slots);
        first.request(4096);
        second.request(4096);
        // While the first polls, the second finds no slot and sleeps.
        first.wait(&slots, || {
            second.wait(&slots, || panic!("two threads polled on two CPUs"));
            true
        });
        // The slot is free again.
        second.request(4096);
        let mut looked = false;
        second.wait(&slots, || {
            looked = true;
            true
        });
        assert!(looked);

        let none = PollSlots::for_cpus(1);
        let mut poll = BusyPoll::new(MAX);
        qualify(&mut poll, &none);
        poll.request(4096);
        poll.wait(&none, || panic!("polled on one CPU"));
    }

    #[test]
    fn slots_follow_the_cpus_the_server_may_run_on_now() {
        // Made for one CPU, then unpinned: polls.
        let unpinned = PollSlots {
            cpus_now: Some(|| 8),
            ..PollSlots::for_cpus(1)
        };
        let mut poll = BusyPoll::new(MAX);
        qualify(&mut poll, &unpinned);
        assert_eq!((poll.polls, poll.caught), (1, 1));
        assert_eq!(unpinned.max(), 4);
    }

    #[test]
    fn a_server_pinned_to_one_cpu_after_it_started_does_not_poll() {
        // Made for two CPUs, but the process may now run on one only.
        let pinned = PollSlots {
            cpus_now: Some(|| 1),
            ..PollSlots::for_cpus(2)
        };
        let mut poll = BusyPoll::new(MAX);
        qualify(&mut poll, &pinned);
        for _ in 0..QUALIFY {
            poll.request(4096);
            poll.wait(&pinned, || panic!("polled on one CPU"));
            poll.arrived();
        }
        assert_eq!(poll.polls, 0);

        // Still on two: it polls.
        let free = PollSlots {
            cpus_now: Some(|| 2),
            ..PollSlots::for_cpus(2)
        };
        let mut poll = BusyPoll::new(MAX);
        qualify(&mut poll, &free);
        assert_eq!((poll.polls, poll.caught), (1, 1));
    }

    #[test]
    fn a_request_already_there_at_the_first_look_stops_polling() {
        let slots = PollSlots::for_cpus(2);
        let mut poll = BusyPoll::new(MAX);
        qualify(&mut poll, &slots);
        poll.request(4096);
        poll.wait(&slots, || true);
        poll.arrived();
        assert_eq!((poll.polls, poll.caught), (2, 2));
        // The client pipelines: no polling until it qualifies again.
        for _ in 0..QUALIFY - 1 {
            poll.request(4096);
            poll.wait(&slots, || panic!("polled for a pipelining client"));
            poll.arrived();
        }
        // The sixteenth single request in a row qualifies it again.
        poll.request(4096);
        let mut looked = false;
        poll.wait(&slots, || {
            looked = true;
            true
        });
        assert!(looked);
        assert_eq!((poll.polls, poll.caught), (3, 3));
    }

    #[test]
    fn zero_turns_it_off() {
        let slots = PollSlots::for_cpus(2);
        let mut poll = BusyPoll::new(Duration::ZERO);
        for _ in 0..QUALIFY * 2 {
            poll.request(4096);
            poll.wait(&slots, || panic!("polled with --busy-poll 0"));
            poll.arrived();
        }
    }
}
