//! The status snapshot reported by the `status` control command.
//!
//! `Display` gives flexnbd-c's line byte for byte: `key=value` pairs, each
//! followed by one space (so the line ends in a space), keys in flexnbd-c's
//! order, new keys only appended. [`Status::to_json`] gives the same as one
//! JSON object. `FromStr` parses the line back (used by tests and by
//! `mirror --wait`).

use std::fmt;
use std::str::FromStr;

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
    /// `connecting`, `copying`, `converging`, `handover` or `retrying` (appended key).
    pub phase: Option<String>,
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
    /// How the last migration ended, once one has: `done`, `stopped` or `failed` (appended key).
    pub last_migration: Option<String>,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid={} size={} is_mirroring={} clients_allowed={} num_clients={} has_control={} ",
            self.pid,
            self.size,
            self.migration.is_some(),
            self.clients_allowed,
            self.num_clients,
            self.has_control
        )?;
        if let Some(m) = &self.migration {
            write!(
                f,
                "migration_speed={} migration_duration={} migration_seconds_left={} migration_bytes_left={} ",
                m.speed, m.duration, m.seconds_left, m.bytes_left
            )?;
            if let Some(limit) = m.speed_limit {
                write!(f, "migration_speed_limit={limit} ")?;
            }
            if let Some(sent) = m.bytes_sent {
                write!(f, "migration_bytes_sent={sent} ")?;
            }
            if let Some(retries) = m.retries {
                write!(f, "migration_retries={retries} ")?;
            }
            if let Some(phase) = &m.phase {
                write!(f, "migration_phase={phase} ")?;
            }
        }
        if let Some(last) = &self.last_migration {
            write!(f, "last_migration={last} ")?;
        }
        Ok(())
    }
}

impl Status {
    /// The status as one JSON object with the same keys as the line.
    pub fn to_json(&self) -> String {
        let mut s = format!(
            "{{\"pid\":{},\"size\":{},\"is_mirroring\":{},\"clients_allowed\":{},\"num_clients\":{},\"has_control\":{}",
            self.pid,
            self.size,
            self.migration.is_some(),
            self.clients_allowed,
            self.num_clients,
            self.has_control
        );
        if let Some(m) = &self.migration {
            s.push_str(&format!(
                ",\"migration_speed\":{},\"migration_duration\":{},\"migration_seconds_left\":{},\"migration_bytes_left\":{}",
                m.speed, m.duration, m.seconds_left, m.bytes_left
            ));
            if let Some(limit) = m.speed_limit {
                s.push_str(&format!(",\"migration_speed_limit\":{limit}"));
            }
            if let Some(sent) = m.bytes_sent {
                s.push_str(&format!(",\"migration_bytes_sent\":{sent}"));
            }
            if let Some(retries) = m.retries {
                s.push_str(&format!(",\"migration_retries\":{retries}"));
            }
            if let Some(phase) = &m.phase {
                s.push_str(&format!(",\"migration_phase\":{}", json_string(phase)));
            }
        }
        if let Some(last) = &self.last_migration {
            s.push_str(&format!(",\"last_migration\":{}", json_string(last)));
        }
        s.push('}');
        s
    }
}

/// `text` as a JSON string. Our server's values are plain words, but
/// `status --json` prints whatever line the server sent.
// Regression: fuzz/corpus/status (a control character in last_migration).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
                "migration_phase" => m.phase = Some(value.to_owned()),
                "last_migration" => st.last_migration = Some(value.to_owned()),
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
        };
        assert_eq!(
            st.to_string(),
            "pid=29537 size=67108864 is_mirroring=true clients_allowed=true num_clients=0 has_control=true migration_speed=2796202 migration_duration=2 migration_seconds_left=17 migration_bytes_left=50331648 migration_speed_limit=1000000 "
        );
        assert_eq!(st.to_string().parse::<Status>().unwrap(), st);
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
                phase: Some("handover".into()),
                ..Default::default()
            }),
            last_migration: Some("stopped".into()),
        };
        let line = st.to_string();
        assert!(line.ends_with(
            "migration_bytes_left=5 migration_bytes_sent=4124 migration_retries=2 migration_phase=handover last_migration=stopped "
        ));
        assert_eq!(line.parse::<Status>().unwrap(), st);
        assert!(
            st.to_json()
                .ends_with(r#""migration_phase":"handover","last_migration":"stopped"}"#)
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
    }
}
