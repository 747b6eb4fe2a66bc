//! The status snapshot reported by the `status` control command.
//!
//! `Display` gives flexnbd-c's line byte for byte: `key=value` pairs, each
//! followed by one space (so the line ends in a space), keys in flexnbd-c's
//! order, new keys only appended. [`Status::to_json`] gives the same as one
//! JSON object. `FromStr` parses the line back (used by tests and by
//! `mirror --wait`).
//!
//! The snapshot is plain data shared by the layers that fill it in
//! (`server`, `mirror`) and those that report it (`control`, `cmd`), so it
//! sits below all of them and imports nothing from the crate.

use std::fmt;
use std::str::FromStr;

/// Where a migration is, as `migration_phase` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting to the destination.
    Connecting,
    /// Sending the file and what clients write meanwhile.
    Copying,
    /// Little is left; client writes are mirrored before they are acknowledged.
    Converging,
    /// Clients are stopped and the last data is sent.
    Handover,
    /// Waiting before another attempt.
    Retrying,
    /// Comparing hashes with the destination's before copying (incremental).
    Comparing,
    /// Comparing hashes with the destination's before the handover (`--verify`).
    Verifying,
}

impl Phase {
    /// Every phase, in the order a migration goes through them.
    pub const ALL: [Phase; 7] = [
        Phase::Connecting,
        Phase::Copying,
        Phase::Converging,
        Phase::Handover,
        Phase::Retrying,
        Phase::Comparing,
        Phase::Verifying,
    ];

    /// The word shown in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::Copying => "copying",
            Phase::Converging => "converging",
            Phase::Handover => "handover",
            Phase::Retrying => "retrying",
            Phase::Comparing => "comparing",
            Phase::Verifying => "verifying",
        }
    }
}

/// How the last migration ended, as `last_migration` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It handed over (or, with action `nothing`, copied everything).
    Done,
    /// `break` or a signal abandoned it.
    Stopped,
    /// Its first attempt failed before the destination was accepted.
    Failed,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 3] = [Outcome::Done, Outcome::Stopped, Outcome::Failed];

    /// The word shown in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Stopped => "stopped",
            Outcome::Failed => "failed",
        }
    }
}

/// Display and parsing by the status word, for an enum with `ALL` and `as_str`.
macro_rules! status_word {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = ParseStatusError;

            fn from_str(word: &str) -> Result<Self, Self::Err> {
                <$t>::ALL
                    .into_iter()
                    .find(|v| v.as_str() == word)
                    .ok_or_else(|| ParseStatusError(word.to_owned()))
            }
        }
    };
}

status_word!(Phase);
status_word!(Outcome);

/// Progress of a running migration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrationStatus {
    /// Bytes per second since the current attempt started.
    pub speed: u64,
    /// Whole seconds since the current attempt started.
    pub duration: u64,
    /// Estimated seconds until the migration completes.
    pub seconds_left: u64,
    /// Bytes still to send.
    pub bytes_left: u64,
    /// The bandwidth limit in bytes per second, if one is set.
    pub speed_limit: Option<u64>,
    /// Bytes sent to the destination, headers included, over all attempts (appended key).
    pub bytes_sent: Option<u64>,
    /// Attempts that failed and were retried (appended key).
    pub retries: Option<u64>,
    /// Where the migration is (appended key).
    pub phase: Option<Phase>,
    /// Bytes of the file the destination acknowledged in the current
    /// attempt, counted as the speed limit counts them (appended key): the
    /// counter a rate over a recent window is measured on.
    pub bytes_copied: Option<u64>,
    /// With `--verify`: whether the destination's hashes matched ours (appended key).
    pub verified: Option<bool>,
}

/// A server's state as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// The server's process id.
    pub pid: u32,
    /// The export size in bytes.
    pub size: u64,
    /// New NBD connections are accepted (false during a migration's handover).
    pub clients_allowed: bool,
    /// NBD clients currently connected.
    pub num_clients: u64,
    /// The server has control of the data (false for `listen` before the handover).
    pub has_control: bool,
    /// The migration in progress, if any (`is_mirroring=true`).
    pub migration: Option<MigrationStatus>,
    /// How the last migration ended, once one has (appended key).
    pub last_migration: Option<Outcome>,
    /// The last migration was verified (`last_migration_verified=true`, appended key, only when true).
    pub last_verified: bool,
}

/// A value on the status line: a number, a flag, or a word (quoted in JSON).
#[derive(Debug, Clone, Copy)]
enum Value {
    Num(u64),
    Flag(bool),
    Word(&'static str),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Num(n) => write!(f, "{n}"),
            Value::Flag(b) => write!(f, "{b}"),
            Value::Word(w) => f.write_str(w),
        }
    }
}

impl Status {
    /// The keys and values in flexnbd-c's order, appended keys last: the
    /// one list both the line and the JSON are made from.
    fn pairs(&self) -> Vec<(&'static str, Value)> {
        let mut pairs = vec![
            ("pid", Value::Num(u64::from(self.pid))),
            ("size", Value::Num(self.size)),
            ("is_mirroring", Value::Flag(self.migration.is_some())),
            ("clients_allowed", Value::Flag(self.clients_allowed)),
            ("num_clients", Value::Num(self.num_clients)),
            ("has_control", Value::Flag(self.has_control)),
        ];
        if let Some(m) = &self.migration {
            pairs.extend([
                ("migration_speed", Value::Num(m.speed)),
                ("migration_duration", Value::Num(m.duration)),
                ("migration_seconds_left", Value::Num(m.seconds_left)),
                ("migration_bytes_left", Value::Num(m.bytes_left)),
            ]);
            let optional = [
                ("migration_speed_limit", m.speed_limit.map(Value::Num)),
                ("migration_bytes_sent", m.bytes_sent.map(Value::Num)),
                ("migration_retries", m.retries.map(Value::Num)),
                ("migration_phase", m.phase.map(|p| Value::Word(p.as_str()))),
                ("migration_bytes_copied", m.bytes_copied.map(Value::Num)),
                ("migration_verified", m.verified.map(Value::Flag)),
            ];
            pairs.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
        }
        if let Some(last) = self.last_migration {
            pairs.push(("last_migration", Value::Word(last.as_str())));
        }
        if self.last_verified {
            pairs.push(("last_migration_verified", Value::Flag(true)));
        }
        pairs
    }

    /// The status as one JSON object with the same keys as the line.
    pub fn to_json(&self) -> String {
        // Keys and words are fixed lower-case ASCII: nothing to escape.
        let members: Vec<String> = self
            .pairs()
            .into_iter()
            .map(|(key, value)| match value {
                Value::Word(w) => format!("\"{key}\":\"{w}\""),
                _ => format!("\"{key}\":{value}"),
            })
            .collect();
        format!("{{{}}}", members.join(","))
    }
}

impl fmt::Display for Status {
    /// `key=value` pairs, each followed by one space, as flexnbd-c prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.pairs()
            .into_iter()
            .try_for_each(|(key, value)| write!(f, "{key}={value} "))
    }
}

/// Why a status line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad status line: {0}")]
pub struct ParseStatusError(String);

impl FromStr for Status {
    type Err = ParseStatusError;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let mut st = Status::default();
        let mut mirroring = false;
        let mut m = MigrationStatus::default();
        for pair in line.split_whitespace() {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| ParseStatusError(pair.to_owned()))?;
            let bad = || ParseStatusError(pair.to_owned());
            let num = || value.parse::<u64>().map_err(|_| bad());
            let flag = || value.parse::<bool>().map_err(|_| bad());
            match key {
                "pid" => st.pid = value.parse().map_err(|_| bad())?,
                "size" => st.size = num()?,
                "is_mirroring" => mirroring = flag()?,
                "clients_allowed" => st.clients_allowed = flag()?,
                "num_clients" => st.num_clients = num()?,
                "has_control" => st.has_control = flag()?,
                "migration_speed" => m.speed = num()?,
                "migration_duration" => m.duration = num()?,
                "migration_seconds_left" => m.seconds_left = num()?,
                "migration_bytes_left" => m.bytes_left = num()?,
                "migration_speed_limit" => m.speed_limit = Some(num()?),
                "migration_bytes_sent" => m.bytes_sent = Some(num()?),
                "migration_retries" => m.retries = Some(num()?),
                "migration_phase" => m.phase = Some(value.parse().map_err(|_| bad())?),
                "migration_bytes_copied" => m.bytes_copied = Some(num()?),
                "migration_verified" => m.verified = Some(flag()?),
                "last_migration_verified" => st.last_verified = flag()?,
                "last_migration" => st.last_migration = Some(value.parse().map_err(|_| bad())?),
                _ => {} // keys appended by newer versions
            }
        }
        st.migration = mirroring.then_some(m);
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_matches_flexnbd_c_byte_for_byte() {
        let st = Status {
            pid: 29537,
            size: 67108864,
            clients_allowed: true,
            num_clients: 0,
            has_control: true,
            migration: Some(MigrationStatus {
                speed: 2796202,
                duration: 2,
                seconds_left: 17,
                bytes_left: 50331648,
                speed_limit: Some(1000000),
                ..Default::default()
            }),
            last_migration: None,
            last_verified: false,
        };
        assert_eq!(
            st.to_string(),
            "pid=29537 size=67108864 is_mirroring=true clients_allowed=true num_clients=0 has_control=true migration_speed=2796202 migration_duration=2 migration_seconds_left=17 migration_bytes_left=50331648 migration_speed_limit=1000000 "
        );
        assert_eq!(st.to_string().parse::<Status>().unwrap(), st);
        assert_eq!(
            st.to_json(),
            r#"{"pid":29537,"size":67108864,"is_mirroring":true,"clients_allowed":true,"num_clients":0,"has_control":true,"migration_speed":2796202,"migration_duration":2,"migration_seconds_left":17,"migration_bytes_left":50331648,"migration_speed_limit":1000000}"#
        );
    }

    #[test]
    fn appended_keys_follow_flexnbd_c_keys() {
        let st = Status {
            pid: 1,
            size: 4096,
            clients_allowed: false,
            num_clients: 0,
            has_control: true,
            migration: Some(MigrationStatus {
                bytes_left: 5,
                bytes_sent: Some(4124),
                retries: Some(2),
                phase: Some(Phase::Handover),
                bytes_copied: Some(4096),
                verified: Some(false),
                ..Default::default()
            }),
            last_migration: Some(Outcome::Stopped),
            last_verified: true,
        };
        let line = st.to_string();
        assert!(line.ends_with(
            "migration_bytes_left=5 migration_bytes_sent=4124 migration_retries=2 migration_phase=handover migration_bytes_copied=4096 migration_verified=false last_migration=stopped last_migration_verified=true "
        ));
        assert_eq!(line.parse::<Status>().unwrap(), st);
        assert!(
            st.to_json()
                .ends_with(r#""migration_phase":"handover","migration_bytes_copied":4096,"migration_verified":false,"last_migration":"stopped","last_migration_verified":true}"#)
        );
    }

    #[test]
    fn idle_line_and_json() {
        let st = Status {
            pid: 7,
            size: 1024,
            clients_allowed: true,
            has_control: false,
            ..Default::default()
        };
        assert_eq!(
            st.to_string(),
            "pid=7 size=1024 is_mirroring=false clients_allowed=true num_clients=0 has_control=false "
        );
        assert_eq!(
            st.to_json(),
            r#"{"pid":7,"size":1024,"is_mirroring":false,"clients_allowed":true,"num_clients":0,"has_control":false}"#
        );
        assert!("pid=x".parse::<Status>().is_err());
        assert!("garbage".parse::<Status>().is_err());
        assert!("last_migration=maybe".parse::<Status>().is_err());
        assert!("migration_phase=Copying".parse::<Status>().is_err());
    }

    #[test]
    fn words_round_trip() {
        for phase in Phase::ALL {
            assert_eq!(phase.to_string().parse::<Phase>(), Ok(phase));
        }
        for outcome in Outcome::ALL {
            assert_eq!(outcome.as_str().parse::<Outcome>(), Ok(outcome));
        }
        assert_eq!(Phase::Converging.to_string(), "converging");
        assert_eq!(Outcome::Done.to_string(), "done");
    }
}
