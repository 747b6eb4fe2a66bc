//! systemd glue: the socket-activated listener and service notifications.
//!
//! - Socket activation (`sd_listen_fds(3)`): when `LISTEN_PID` is this
//!   process and `LISTEN_FDS` is 1, fd 3 is the listening socket, TCP or
//!   UNIX stream. [`take_listener`] checks it is one and listening, and
//!   unsets `LISTEN_FDS` and `LISTEN_PID` so that no child takes it too.
//!   The `listenfd` crate adopts the descriptor (the one unsafe step) and
//!   unsets the variables; `LISTEN_FDNAMES` stays, meaningless without them.
//! - Notifications (`sd_notify(3)`): `READY=1`, `STATUS=...` and
//!   `STOPPING=1` datagrams to `$NOTIFY_SOCKET`, through the `sd-notify`
//!   crate. Without the variable they are no-ops.
//!
//! Notifications never fail the caller: one that cannot be sent is logged
//! at debug level.

use std::net::TcpListener;
use std::os::unix::net::UnixListener;

use listenfd::ListenFd;
use sd_notify::NotifyState;

/// A listening socket passed by the service manager.
#[derive(Debug)]
pub enum Activated {
    /// A TCP socket (IPv4 or IPv6).
    Tcp(TcpListener),
    /// A UNIX stream socket.
    Unix(UnixListener),
}

/// Why the passed socket cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// Not exactly one socket was passed.
    #[error("socket activation passed {0} sockets (LISTEN_FDS); flexnbd serves one")]
    Count(String),
    /// fd 3 is not a stream socket of a family we serve.
    #[error(
        "socket activation: fd 3 is not a TCP or UNIX stream socket (use ListenStream= in the .socket unit)"
    )]
    NotStream,
    /// fd 3 is a stream socket nobody called `listen(2)` on.
    #[error("socket activation: fd 3 is a stream socket but not listening")]
    NotListening,
}

/// The listening socket passed to this process, if any; `None` when the
/// variables are absent or meant for another process (`LISTEN_PID`).
///
/// Call it before any other thread starts: it changes the environment.
///
/// # Errors
///
/// Variables meant for us that pass no usable socket.
pub fn take_listener() -> Result<Option<Activated>, ActivationError> {
    let Some(count) = std::env::var_os("LISTEN_FDS") else {
        return Ok(None);
    };
    if !for_us(
        std::env::var("LISTEN_PID").ok().as_deref(),
        std::process::id(),
    ) {
        return Ok(None);
    }
    let mut fds = ListenFd::from_env();
    if fds.len() != 1 {
        return Err(ActivationError::Count(count.to_string_lossy().into_owned()));
    }
    let activated = match fds.take_tcp_listener(0) {
        Ok(Some(l)) => Activated::Tcp(l),
        Ok(None) => return Err(ActivationError::NotStream),
        Err(_) => match fds.take_unix_listener(0) {
            Ok(Some(l)) => Activated::Unix(l),
            Ok(None) | Err(_) => return Err(ActivationError::NotStream),
        },
    };
    let listening = match &activated {
        Activated::Tcp(l) => rustix::net::sockopt::socket_acceptconn(l),
        Activated::Unix(l) => rustix::net::sockopt::socket_acceptconn(l),
    };
    if !listening.unwrap_or(false) {
        return Err(ActivationError::NotListening);
    }
    Ok(Some(activated))
}

/// Whether `LISTEN_PID` names process `pid` (systemd always sets it).
fn for_us(listen_pid: Option<&str>, pid: u32) -> bool {
    listen_pid.and_then(|p| p.trim().parse::<u32>().ok()) == Some(pid)
}

/// Whether a service manager listens for notifications (`NOTIFY_SOCKET` is set).
pub fn notifying() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// `READY=1` with a status line: start-up is finished.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STATUS=...`: a line for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `STOPPING=1` with a status line: shutting down.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        log::debug!("cannot notify the service manager: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_is_for_the_process_named_in_listen_pid() {
        assert!(for_us(Some("42"), 42));
        assert!(!for_us(Some("43"), 42));
        assert!(!for_us(Some(""), 42));
        assert!(!for_us(Some("x"), 42));
        assert!(!for_us(None, 42));
    }
}
