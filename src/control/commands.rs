//! The commands: what each one asks of the server, and the reply text it sends.
//!
//! The reply texts are flexnbd-c's, byte for byte; the server side answers
//! with typed results ([`crate::mirror`]'s errors and outcomes) and only
//! this module words them. Pure apart from the calls to the target and
//! logging: no socket I/O.

use log::{info, warn};

use super::protocol::{Reply, Request};
use crate::mirror::{
    BpsError, Broken, Controller, ErrorKind, MirrorRequest, NotMirroring, RequestError, StartError,
    parse_bps,
};
use crate::net::AclEntry;
use crate::status::Status;

/// What the control socket can ask of a running server.
///
/// Implemented by the NBD server (and by fakes in tests). Methods run on the
/// control thread, one at a time; they may block, and the control socket
/// serves nobody else meanwhile.
pub trait Controlled: Send + Sync + 'static {
    /// A snapshot of the server's state for the `status` command.
    fn status(&self) -> Status;

    /// Replaces the access control list with `entries` (possibly none).
    ///
    /// The start-up default-deny setting is kept, and connected clients
    /// should be audited against the new list.
    fn set_acl(&self, entries: Vec<AclEntry>);

    /// Starts a migration and tells how its first connection attempt went.
    ///
    /// May block until that attempt has an outcome (about 20 s at most).
    ///
    /// # Errors
    ///
    /// Why no migration is running ([`StartError::Unsupported`] unless implemented).
    fn start_mirror(&self, request: MirrorRequest) -> Result<(), StartError> {
        let _ = request;
        Err(StartError::Unsupported)
    }

    /// Changes the bandwidth limit of the running migration (bytes per second).
    ///
    /// # Errors
    ///
    /// [`NotMirroring`] (always, unless implemented).
    fn set_mirror_max_bps(&self, max_bps: u64) -> Result<(), NotMirroring> {
        let _ = max_bps;
        Err(NotMirroring)
    }

    /// Stops the running migration, waits until it has stopped, and tells how it had ended.
    ///
    /// # Errors
    ///
    /// [`NotMirroring`] (always, unless implemented).
    fn break_mirror(&self) -> Result<Broken, NotMirroring> {
        Err(NotMirroring)
    }
}

/// The NBD server with its migration controller: what `serve` and `listen` put behind the socket.
impl Controlled for Controller {
    fn status(&self) -> Status {
        Controller::status(self)
    }

    fn set_acl(&self, entries: Vec<AclEntry>) {
        Controller::set_acl(self, entries);
    }

    fn start_mirror(&self, request: MirrorRequest) -> Result<(), StartError> {
        Controller::start_mirror(self, request)
    }

    fn set_mirror_max_bps(&self, max_bps: u64) -> Result<(), NotMirroring> {
        Controller::set_mirror_max_bps(self, max_bps)
    }

    fn break_mirror(&self) -> Result<Broken, NotMirroring> {
        Controller::break_mirror(self)
    }
}

/// Runs one request against `target` and returns the reply to send.
///
/// Pure apart from the calls to `target` and logging: no socket I/O.
pub fn dispatch(target: &dyn Controlled, request: &Request) -> Reply {
    let Some(command) = request.command() else {
        info!("control request without a command");
        return Reply::missing_command();
    };
    // Arguments that are not UTF-8 cannot be valid for any command; keep
    // them printable for error replies.
    let args: Vec<String> = request
        .args()
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    match command {
        b"status" => {
            info!("status command received");
            Reply::ok(target.status().to_string())
        }
        b"acl" => {
            info!("acl command received");
            acl(target, &args)
        }
        b"mirror" => {
            info!("mirror command received");
            match MirrorRequest::parse(&args) {
                Ok(request) => started(target.start_mirror(request)),
                Err(e) => Reply::error(request_error(e)),
            }
        }
        b"mirror_max_bps" => {
            info!("mirror_max_bps command received");
            if target.status().migration.is_none() {
                Reply::error("Not currently mirroring")
            } else if args.len() != 1 {
                Reply::error("Bad format")
            } else {
                match parse_bps(&args[0]) {
                    Ok(bps) => match target.set_mirror_max_bps(bps) {
                        Ok(()) => Reply::ok("updated"),
                        Err(NotMirroring) => Reply::error("Not currently mirroring"),
                    },
                    Err(e) => Reply::error(bps_error(e)),
                }
            }
        }
        b"break" => {
            info!("break command received");
            match target.break_mirror() {
                Ok(Broken::Stopped) => Reply::ok("mirror stopped"),
                Ok(Broken::Completed) => Reply::error("mirror completed"),
                Err(NotMirroring) => Reply::error("not mirroring"),
            }
        }
        _ => {
            warn!(
                "unknown control command '{}'",
                String::from_utf8_lossy(command).escape_debug()
            );
            Reply::unknown_command()
        }
    }
}

/// `acl`: all entries must parse, or nothing changes.
fn acl(target: &dyn Controlled, args: &[String]) -> Reply {
    let mut entries = Vec::with_capacity(args.len());
    for arg in args {
        match arg.parse::<AclEntry>() {
            Ok(entry) => entries.push(entry),
            Err(_) => {
                warn!("bad acl spec '{}'", arg.escape_debug());
                return Reply::error(format!("bad spec: {arg}"));
            }
        }
    }
    let count = entries.len();
    target.set_acl(entries);
    info!("acl set ({count} entries)");
    Reply::ok("updated")
}

/// flexnbd-c's reply to a `mirror` command, from how its first attempt went.
fn started(result: Result<(), StartError>) -> Reply {
    let e = match result {
        Ok(()) => return Reply::ok("Mirror started"),
        Err(e) => e,
    };
    Reply::error(match e {
        StartError::Unsupported => "mirroring is not supported here".to_owned(),
        StartError::AlreadyRunning => "mirror already running".to_owned(),
        StartError::ShuttingDown => "shutting down".to_owned(),
        StartError::Setup(source) => format!("cannot start mirror: {source}"),
        StartError::NoTlsCredentials(e) => e.to_string(),
        StartError::Failed(why) => match why.kind() {
            ErrorKind::Connect => "Mirror failed to connect",
            ErrorKind::NoHello => "Remote server failed to respond",
            ErrorKind::SizeMismatch => "Remote size does not match local size",
            ErrorKind::Verify => "Remote server cannot verify (no flexnbd hash extension)",
            _ => "Mirror was rejected",
        }
        .to_owned(),
        StartError::Abandoned => "Mirroring abandoned".to_owned(),
        StartError::NoOutcome => "Mirror failed to initialise".to_owned(),
    })
}

/// flexnbd-c's reply text for bad `mirror` arguments.
fn request_error(e: RequestError) -> &'static str {
    match e {
        RequestError::TooFewArgs => "mirror takes at least two parameters",
        RequestError::BadAddress => "bad IP address",
        RequestError::BadPort => "bad IP port number",
        RequestError::BadAction => "action must be 'exit' or 'nothing'",
        RequestError::BadBind => "bad bind address",
        RequestError::Bps(e) => bps_error(e),
        RequestError::TooManyArgs => "unrecognised parameters to mirror",
    }
}

/// flexnbd-c's reply text for a bad bandwidth limit.
fn bps_error(e: BpsError) -> &'static str {
    match e {
        BpsError::OutOfRange => "max_bps out of range",
        BpsError::NotANumber => "max_bps couldn't be parsed",
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;

    use super::*;
    use crate::mirror::MirrorError;
    use crate::status::MigrationStatus;

    /// A server whose migration commands answer what the test scripted.
    struct Scripted {
        start: Mutex<Option<StartError>>,
        broken: Broken,
        bps: Mutex<Option<u64>>,
    }

    impl Controlled for Scripted {
        fn status(&self) -> Status {
            Status {
                migration: Some(MigrationStatus::default()),
                ..Status::default()
            }
        }

        fn set_acl(&self, _: Vec<AclEntry>) {}

        fn start_mirror(&self, _: MirrorRequest) -> Result<(), StartError> {
            self.start.lock().unwrap().take().map_or(Ok(()), Err)
        }

        fn set_mirror_max_bps(&self, max_bps: u64) -> Result<(), NotMirroring> {
            *self.bps.lock().unwrap() = Some(max_bps);
            Ok(())
        }

        fn break_mirror(&self) -> Result<Broken, NotMirroring> {
            Ok(self.broken)
        }
    }

    fn reply(target: &dyn Controlled, lines: &[&str]) -> String {
        let request = Request::from_lines(lines.iter().map(|l| l.as_bytes().to_vec()).collect());
        dispatch(target, &request).to_string()
    }

    #[test]
    fn mirror_outcomes_get_flexnbd_c_replies() {
        let failed = |kind| StartError::Failed(MirrorError::new(kind, "why"));
        let cases = [
            (None, "0: Mirror started"),
            (
                Some(StartError::AlreadyRunning),
                "1: mirror already running",
            ),
            (Some(StartError::ShuttingDown), "1: shutting down"),
            (
                Some(StartError::Setup(io::ErrorKind::OutOfMemory.into())),
                "1: cannot start mirror: out of memory",
            ),
            (
                Some(failed(ErrorKind::Connect)),
                "1: Mirror failed to connect",
            ),
            (
                Some(failed(ErrorKind::NoHello)),
                "1: Remote server failed to respond",
            ),
            (Some(failed(ErrorKind::Rejected)), "1: Mirror was rejected"),
            (
                Some(failed(ErrorKind::SizeMismatch)),
                "1: Remote size does not match local size",
            ),
            (Some(StartError::Abandoned), "1: Mirroring abandoned"),
            (
                Some(StartError::NoOutcome),
                "1: Mirror failed to initialise",
            ),
        ];
        for (start, want) in cases {
            let target = Scripted {
                start: Mutex::new(start),
                broken: Broken::Stopped,
                bps: Mutex::new(None),
            };
            assert_eq!(reply(&target, &["mirror", "127.0.0.1", "1"]), want);
        }
    }

    #[test]
    fn break_and_speed_replies() {
        let mut target = Scripted {
            start: Mutex::new(None),
            broken: Broken::Stopped,
            bps: Mutex::new(None),
        };
        assert_eq!(reply(&target, &["break"]), "0: mirror stopped");
        assert_eq!(reply(&target, &["mirror_max_bps", "7"]), "0: updated");
        assert_eq!(*target.bps.lock().unwrap(), Some(7));
        assert_eq!(reply(&target, &["mirror_max_bps"]), "1: Bad format");
        assert_eq!(
            reply(&target, &["mirror_max_bps", "x"]),
            "1: max_bps couldn't be parsed"
        );
        target.broken = Broken::Completed;
        assert_eq!(reply(&target, &["break"]), "1: mirror completed");
    }
}
