//! What a migration's progress honestly is, from successive `status` snapshots.
//!
//! The source's `status` keeps flexnbd-c's definitions: `migration_speed`
//! is the average of the whole attempt and `migration_seconds_left` divides
//! by it (plus one), so right after a `mirror-speed` change, while paused,
//! or after a `break`, they say things that are not so. [`Progress`] turns
//! the snapshots `mirror --wait` takes into a [`Report`] that says:
//!
//! - the **state**: the phase, or `paused` (a limit of 0), or how it ended
//!   (`stopped`, `done`, `failed`);
//! - the **rate** over the last [`WINDOW`] of samples, measured on
//!   `migration_bytes_copied` (what the limit counts), never above the limit
//!   in force, and unknown until the samples span [`MIN_SPAN`];
//! - **remaining**: bytes still to send (never copied, written again since
//!   they were copied, or sent and not acknowledged): `migration_bytes_left`;
//! - the **ETA**: remaining ÷ rate, unknown when the rate is unknown or zero.
//!
//! It is pure: the caller gives each snapshot with the instant it was taken.
//! The plain lines and the bar of `mirror --wait` both show a [`Report`], and
//! `status --json` adds the fields one snapshot can give ([`json_members`]).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::status::{MigrationStatus, Outcome, Phase, Status};

/// The rate is measured over the samples of this last stretch of time.
pub const WINDOW: Duration = Duration::from_secs(5);
/// No rate is given until the samples span this long: fewer say little.
pub const MIN_SPAN: Duration = Duration::from_secs(1);

/// What a migration is doing, as the progress output names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Running, in this phase (copying when the server shows none, as flexnbd-c).
    Running(Phase),
    /// The speed limit is 0: nothing is sent until it is raised.
    Paused,
    /// `break` or a signal stopped it before the handover.
    Stopped,
    /// It handed over: the destination has the data.
    Done,
    /// Its first attempt failed.
    Failed,
    /// No migration has run.
    Idle,
}

impl State {
    /// The word shown.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running(phase) => phase.as_str(),
            State::Paused => "paused",
            State::Stopped => "stopped",
            State::Done => "done",
            State::Failed => "failed",
            State::Idle => "idle",
        }
    }

    /// The migration has ended (or never ran): nothing more will move.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Stopped | State::Done | State::Failed | State::Idle
        )
    }

    fn of(status: &Status) -> State {
        match (&status.migration, status.last_migration) {
            (Some(m), _) => State::running(m),
            (None, Some(Outcome::Done)) => State::Done,
            (None, Some(Outcome::Stopped)) => State::Stopped,
            (None, Some(Outcome::Failed)) => State::Failed,
            (None, None) => State::Idle,
        }
    }

    fn running(m: &MigrationStatus) -> State {
        match m.phase.unwrap_or(Phase::Copying) {
            Phase::Copying | Phase::Converging if m.speed_limit == Some(0) => State::Paused,
            phase => State::Running(phase),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The progress of a migration at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// What it is doing.
    pub state: State,
    /// The export size in bytes.
    pub size: u64,
    /// Bytes still to send (the last known count once it has ended; 0 when done).
    pub remaining: u64,
    /// Bytes per second over the recent window, at most the limit; `None`
    /// until measured, and after the end.
    pub rate: Option<u64>,
    /// Seconds until it is done at `rate`; `None` when unknown (no rate, a
    /// zero rate, paused, ended).
    pub eta: Option<u64>,
    /// The limit the rate is held to (`migration_speed_limit`; 0 pauses).
    pub limit: Option<u64>,
    /// `migration_bytes_sent` (0 when the server does not show it).
    pub sent: u64,
    /// `migration_retries` (0 when the server does not show it).
    pub retries: u64,
}

impl Report {
    /// Bytes of the file that need not be sent again (for a bar's position).
    pub fn done(&self) -> u64 {
        self.size.saturating_sub(self.remaining)
    }
}

/// One plain line, numbers in bytes so that scripts can read them.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Report {
            state,
            size,
            remaining,
            sent,
            retries,
            ..
        } = *self;
        let done = self.done();
        write!(f, "{state} {done}/{size} bytes, ")?;
        match state {
            State::Done => {}
            State::Stopped | State::Failed | State::Idle => {
                write!(f, "{remaining} bytes left unsent, ")?;
            }
            _ => {
                match self.rate {
                    Some(rate) => write!(f, "{rate} bytes/s")?,
                    None => f.write_str("rate unknown")?,
                }
                if let Some(limit) = self.limit {
                    write!(f, " (limit {limit})")?;
                }
                write!(f, ", {remaining} bytes left to send, eta ")?;
                match self.eta {
                    Some(secs) => write!(f, "{secs} s, ")?,
                    None => f.write_str("unknown, ")?,
                }
            }
        }
        write!(f, "{sent} bytes sent, {retries} retries")
    }
}

/// The same report for people, in binary units and a short ETA, as a bar
/// shows it in two parts that each fit an 80-column terminal: the
/// [`Human::title`] (the state and the limit) and the rest ([`Display`](fmt::Display)).
pub struct Human<'a>(pub &'a Report);

impl Human<'_> {
    /// The state, with the limit while it applies: `copying (cap 20.00 MiB/s)`.
    pub fn title(&self) -> String {
        let r = self.0;
        match r.limit {
            Some(limit) if limit > 0 && !r.state.is_final() => {
                format!("{} (cap {}/s)", r.state, indicatif::HumanBytes(limit))
            }
            _ => r.state.to_string(),
        }
    }
}

impl fmt::Display for Human<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use indicatif::HumanBytes;
        let r = self.0;
        if !r.state.is_final() {
            match r.rate {
                Some(rate) => write!(f, "{}/s", HumanBytes(rate))?,
                None => f.write_str("rate unknown")?,
            }
            f.write_str(", eta ")?;
            match r.eta {
                Some(secs) => write!(f, "{}, ", Eta(secs))?,
                None => f.write_str("unknown, ")?,
            }
        }
        let left = match r.state {
            State::Stopped | State::Failed | State::Idle => "unsent",
            _ => "to send",
        };
        write!(
            f,
            "{} {left}, {} sent, {} retries",
            HumanBytes(r.remaining),
            HumanBytes(r.sent),
            r.retries
        )
    }
}

/// Seconds as `1h 02m`, `3m 05s` or `42s`.
struct Eta(u64);

impl fmt::Display for Eta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s) = (self.0 / 3600, self.0 / 60 % 60, self.0 % 60);
        if h > 0 {
            write!(f, "{h}h {m:02}m")
        } else if m > 0 {
            write!(f, "{m}m {s:02}s")
        } else {
            write!(f, "{s}s")
        }
    }
}

/// Successive snapshots of one migration, and what they say.
#[derive(Debug, Default)]
pub struct Progress {
    /// `(when, bytes copied)`: the window's samples, oldest first; the
    /// first may be older than the window (the baseline it is measured from).
    samples: VecDeque<(Instant, u64)>,
    last: Option<Report>,
}

impl Progress {
    /// No samples yet.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Takes the snapshot `status` taken at `at` and reports.
    pub fn update(&mut self, status: &Status, at: Instant) -> Report {
        let state = State::of(status);
        let Some(m) = &status.migration else {
            let report = self.ended(state, status.size);
            self.samples.clear();
            return report;
        };
        // A server without the counter (flexnbd-c): what is no longer left.
        let copied = m
            .bytes_copied
            .unwrap_or_else(|| status.size.saturating_sub(m.bytes_left));
        if self.samples.back().is_some_and(|&(_, c)| c > copied) {
            // A new attempt starts counting again.
            self.samples.clear();
        }
        self.samples.push_back((at, copied));
        // Keep one sample at or before the window's start as the baseline.
        while self
            .samples
            .get(1)
            .is_some_and(|&(t, _)| at.saturating_duration_since(t) >= WINDOW)
        {
            self.samples.pop_front();
        }
        let rate = self.samples.front().and_then(|&(t, c)| {
            let span = at.saturating_duration_since(t);
            (span >= MIN_SPAN).then(|| per_second(copied - c, span))
        });
        let rate = match (state, m.speed_limit) {
            (State::Paused, _) => Some(0),
            (_, Some(limit)) => rate.map(|r| r.min(limit)),
            (_, None) => rate,
        };
        let remaining = m.bytes_left;
        let eta = match rate {
            _ if remaining == 0 && state != State::Paused => Some(0),
            Some(r) if r > 0 => Some(remaining.div_ceil(r)),
            _ => None,
        };
        let report = Report {
            state,
            size: status.size,
            remaining,
            rate,
            eta,
            limit: m.speed_limit,
            sent: m.bytes_sent.unwrap_or(0),
            retries: m.retries.unwrap_or(0),
        };
        self.last = Some(report);
        report
    }

    /// The source went away after the handover began: it handed over.
    pub fn handed_over(&mut self, size: u64) -> Report {
        self.samples.clear();
        self.ended(State::Done, size)
    }

    /// The report once it ended as `state`: the last counts known, no rate.
    fn ended(&mut self, state: State, size: u64) -> Report {
        let last = self.last.unwrap_or(Report {
            state,
            size,
            remaining: size,
            rate: None,
            eta: None,
            limit: None,
            sent: 0,
            retries: 0,
        });
        let report = Report {
            state,
            size,
            remaining: if state == State::Done {
                0
            } else {
                last.remaining
            },
            rate: None,
            eta: None,
            ..last
        };
        self.last = Some(report);
        report
    }
}

/// `bytes` over `span`, in whole bytes per second.
fn per_second(bytes: u64, span: Duration) -> u64 {
    let millis = span.as_millis().max(1);
    u64::try_from(u128::from(bytes) * 1000 / millis).unwrap_or(u64::MAX)
}

/// The fields one snapshot can give, as JSON members to append for
/// `status --json`, each with a leading comma: `"state"` once a migration
/// has run, and `"bytes_remaining"` while one runs (no rate: that needs
/// successive snapshots). Nothing for a server that never migrated, whose
/// JSON stays its status line's.
pub fn json_members(status: &Status) -> String {
    match (State::of(status), &status.migration) {
        (State::Idle, _) => String::new(),
        (state, Some(m)) => format!(
            ",\"state\":\"{state}\",\"bytes_remaining\":{}",
            m.bytes_left
        ),
        (state, None) => format!(",\"state\":\"{state}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn running(copied: u64, left: u64, limit: Option<u64>) -> Status {
        Status {
            size: 64 * MIB,
            migration: Some(MigrationStatus {
                bytes_left: left,
                speed_limit: limit,
                bytes_copied: Some(copied),
                phase: Some(Phase::Copying),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ended(outcome: Outcome) -> Status {
        Status {
            size: 64 * MIB,
            last_migration: Some(outcome),
            ..Default::default()
        }
    }

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    /// A model fed unlimited samples `(seconds, copied, left)`, and its start.
    fn fed(samples: &[(f64, u64, u64)]) -> (Progress, Instant) {
        let (mut p, t0) = (Progress::new(), Instant::now());
        for &(at, copied, left) in samples {
            p.update(&running(copied, left, None), secs(t0, at));
        }
        (p, t0)
    }

    #[test]
    fn the_first_sample_has_no_rate_and_no_eta() {
        let mut p = Progress::new();
        let r = p.update(&running(0, 64 * MIB, None), Instant::now());
        assert_eq!(
            (r.state, r.rate, r.eta),
            (State::Running(Phase::Copying), None, None)
        );
        let line = r.to_string();
        assert!(
            line.contains("rate unknown") && line.contains("eta unknown"),
            "{line}"
        );
        assert!(!line.contains("eta 0"), "{line}");
    }

    #[test]
    fn the_rate_is_measured_over_the_window() {
        let (mut p, t0) = fed(&[(0.0, 0, 64 * MIB)]);
        let r = p.update(&running(10 * MIB, 54 * MIB, None), secs(t0, 0.5));
        assert_eq!(r.rate, None, "half a second says little");
        let r = p.update(&running(20 * MIB, 44 * MIB, None), secs(t0, 1.0));
        assert_eq!(r.rate, Some(20 * MIB));
        assert_eq!(r.eta, Some(3), "44 MiB at 20 MiB/s, rounded up");
        assert_eq!(r.done(), 20 * MIB);
    }

    #[test]
    fn a_zero_rate_gives_an_unknown_eta() {
        let (mut p, t0) = fed(&[(0.0, MIB, 63 * MIB)]);
        let r = p.update(&running(MIB, 63 * MIB, None), secs(t0, 2.0));
        assert_eq!((r.rate, r.eta), (Some(0), None));
        assert!(
            r.to_string()
                .contains("0 bytes/s, 66060288 bytes left to send, eta unknown")
        );
    }

    #[test]
    fn paused_is_shown_as_such_with_no_eta() {
        let mut p = Progress::new();
        let t0 = Instant::now();
        p.update(&running(0, 64 * MIB, Some(50 * MIB)), t0);
        p.update(&running(30 * MIB, 34 * MIB, Some(50 * MIB)), secs(t0, 1.0));
        // Paused while the window still holds the fast samples.
        let r = p.update(&running(32 * MIB, 32 * MIB, Some(0)), secs(t0, 1.5));
        assert_eq!((r.state, r.rate, r.eta), (State::Paused, Some(0), None));
        let line = r.to_string();
        assert!(
            line.starts_with("paused ") && line.contains("eta unknown"),
            "{line}"
        );
        assert!(Human(&r).to_string().contains("eta unknown"));
        assert_eq!(Human(&r).title(), "paused");
        // Resumed: the window's rate again, under the new limit.
        let r = p.update(&running(40 * MIB, 24 * MIB, Some(MIB)), secs(t0, 3.0));
        assert_eq!(
            (r.state, r.rate),
            (State::Running(Phase::Copying), Some(MIB))
        );
    }

    #[test]
    fn after_a_speed_change_the_rate_follows_the_recent_window() {
        let mut p = Progress::new();
        let t0 = Instant::now();
        // 10 s at 50 MiB/s, then the limit drops to 20 MiB/s.
        for i in 0..=10 {
            p.update(
                &running(i * 50 * MIB, 1 << 40, Some(50 * MIB)),
                secs(t0, i as f64),
            );
        }
        let mut r = p.update(&running(520 * MIB, 1 << 40, Some(20 * MIB)), secs(t0, 11.0));
        assert_eq!(r.rate, Some(20 * MIB), "clamped to the new limit at once");
        for i in 12..=20 {
            r = p.update(
                &running(520 * MIB + (i - 11) * 20 * MIB, 1 << 40, Some(20 * MIB)),
                secs(t0, i as f64),
            );
        }
        assert_eq!(
            r.rate,
            Some(20 * MIB),
            "the window holds only the slow samples"
        );
        // Lifted: the rate is what the window saw, not the whole run's average.
        for i in 21..=26 {
            r = p.update(
                &running(700 * MIB + (i - 20) * 100 * MIB, 1 << 40, None),
                secs(t0, i as f64),
            );
        }
        assert_eq!(r.rate, Some(100 * MIB));
    }

    #[test]
    fn the_rate_never_shows_above_the_limit() {
        let mut p = Progress::new();
        let t0 = Instant::now();
        // The first transfers go in a burst: 16 MiB in one second at 10 MB/s.
        p.update(&running(0, 64 * MIB, Some(10_000_000)), t0);
        let r = p.update(
            &running(16 * MIB, 48 * MIB, Some(10_000_000)),
            secs(t0, 1.0),
        );
        assert_eq!(r.rate, Some(10_000_000));
        assert_eq!(Human(&r).title(), "copying (cap 9.54 MiB/s)");
        assert!(
            r.to_string().contains("10000000 bytes/s (limit 10000000)"),
            "{r}"
        );
    }

    #[test]
    fn a_new_attempt_restarts_the_window() {
        let (mut p, t0) = fed(&[(0.0, 0, 64 * MIB), (2.0, 40 * MIB, 24 * MIB)]);
        let r = p.update(&running(0, 64 * MIB, None), secs(t0, 3.0));
        assert_eq!(r.rate, None);
    }

    #[test]
    fn stopped_keeps_what_was_left_and_shows_no_eta() {
        let (mut p, t0) = fed(&[(0.0, 0, 64 * MIB), (1.0, 10 * MIB, 54 * MIB)]);
        let r = p.update(&ended(Outcome::Stopped), secs(t0, 2.0));
        assert_eq!((r.state, r.rate, r.eta), (State::Stopped, None, None));
        assert_eq!(r.remaining, 54 * MIB);
        let line = r.to_string();
        assert!(
            line.starts_with("stopped 10485760/67108864 bytes, 56623104 bytes left unsent"),
            "{line}"
        );
        assert!(!line.contains("eta"), "{line}");
        let human = Human(&r).to_string();
        assert!(
            human.contains("54.00 MiB unsent") && !human.contains("eta"),
            "{human}"
        );
        assert!(p.update(&ended(Outcome::Failed), secs(t0, 3.0)).state == State::Failed);
    }

    #[test]
    fn done_has_nothing_left() {
        let (mut p, t0) = fed(&[(0.0, 0, 64 * MIB)]);
        let r = p.update(&ended(Outcome::Done), secs(t0, 1.0));
        assert_eq!((r.state, r.remaining, r.done()), (State::Done, 0, 64 * MIB));
        assert!(
            r.to_string()
                .starts_with("done 67108864/67108864 bytes, 0 bytes sent")
        );
        let r = Progress::new().handed_over(64 * MIB);
        assert_eq!((r.state, r.remaining), (State::Done, 0));
    }

    #[test]
    fn phases_and_the_json_members() {
        let mut st = running(0, 5, None);
        for phase in Phase::ALL {
            st.migration.as_mut().unwrap().phase = Some(phase);
            let r = Progress::new().update(&st, Instant::now());
            assert_eq!(r.state, State::Running(phase));
            assert!(r.to_string().starts_with(&format!("{phase} ")), "{r}");
        }
        st.migration.as_mut().unwrap().phase = None;
        assert_eq!(
            Progress::new().update(&st, Instant::now()).state,
            State::Running(Phase::Copying),
            "flexnbd-c shows no phase"
        );
        assert_eq!(
            json_members(&st),
            r#","state":"copying","bytes_remaining":5"#
        );
        assert_eq!(
            json_members(&ended(Outcome::Stopped)),
            r#","state":"stopped""#
        );
        assert_eq!(json_members(&Status::default()), "");
        assert_eq!(Eta(3725).to_string(), "1h 02m");
        assert_eq!(Eta(185).to_string(), "3m 05s");
        assert_eq!(Eta(42).to_string(), "42s");
    }
}
