//! The mirror's typed outcomes: why an attempt failed, why a migration did
//! not start, and how `break` went.
//!
//! The control socket turns these into flexnbd-c's reply texts; the
//! messages here are for logs.

use std::io;

/// What kind of failure ended a migration attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The destination could not be reached.
    Connect,
    /// The destination sent no NBD hello in time.
    NoHello,
    /// The destination's handshake was refused or unusable.
    Rejected,
    /// The destination's export is not the size of ours.
    SizeMismatch,
    /// The destination answered with an error, a wrong handle, or a reply nobody asked for.
    Reply,
    /// The destination answered nothing within the request limit.
    Timeout,
    /// Sending to or receiving from the destination failed, or it closed the connection.
    Connection,
    /// The served file could not be read or removed.
    Local,
    /// A consistency check failed: data left dirty after the last cycle.
    Internal,
    /// `--verify`: the destination cannot be verified (no hash extension),
    /// or its hashes still differ from ours after every repair round.
    Verify,
}

/// Why a migration attempt failed: a kind to branch on, and a message for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MirrorError {
    kind: ErrorKind,
    message: String,
}

impl MirrorError {
    /// An error of `kind` described by `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> MirrorError {
        MirrorError {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl From<crate::client::ClientError> for MirrorError {
    fn from(e: crate::client::ClientError) -> MirrorError {
        use crate::client::ErrorKind as Client;
        let kind = match e.kind() {
            Client::Connect => ErrorKind::Connect,
            Client::NoHello => ErrorKind::NoHello,
            Client::Timeout => ErrorKind::Timeout,
            Client::Io => ErrorKind::Connection,
            Client::Reply | Client::Protocol => ErrorKind::Reply,
            Client::Rejected | Client::InvalidRequest => ErrorKind::Rejected,
        };
        // Client errors leave their cause to `source()`: keep it in the message.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        MirrorError::new(kind, message)
    }
}

/// Why a `mirror` command started no migration.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// This server cannot migrate (a stand-in without a mirror).
    #[error("migration is not supported here")]
    Unsupported,
    /// Another migration is running.
    #[error("a migration is already running")]
    AlreadyRunning,
    /// The server is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// TLS was asked for and the server has no credentials.
    #[error(transparent)]
    NoTlsCredentials(super::NoTlsCredentials),
    /// The migration's thread or its stop trigger could not be created.
    #[error("cannot start the migration")]
    Setup(#[source] io::Error),
    /// The first attempt failed before the destination was accepted; it is not retried.
    #[error("the first attempt failed")]
    Failed(#[source] MirrorError),
    /// `break` or a signal came before the destination was accepted.
    #[error("the migration was abandoned before it started")]
    Abandoned,
    /// The migration's thread ended without telling how its first attempt went.
    #[error("the migration ended without an outcome")]
    NoOutcome,
}

/// No migration is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no migration is running")]
pub struct NotMirroring;

/// How a migration stopped by `break` had ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// It was abandoned before the handover.
    Stopped,
    /// It had already handed over; `break` came too late.
    Completed,
}
