//! Process exit codes.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; a server that had control when it stopped |
//! | 1 | failure; a server without control when it stopped (listen before the handover, serve while mirroring) |
//! | 2 | usage error: clap exits with it itself, so no variant here produces it |
//! | 9, 10 | control-socket replies `9: missing command`, `10: unknown command`, passed through |
//!
//! A client command (`read`, `write`, `acl`, `status`, `mirror --wait`)
//! installs no signal handler: SIGINT kills it, and the shell reports
//! 128 + the signal number (130) without any code from here.

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything worked.
    Success,
    /// Something failed; the error has been printed.
    Failure,
    /// A numeric status passed through from a control-socket reply.
    Code(u8),
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(match code {
            ExitCode::Success => 0,
            ExitCode::Failure => 1,
            ExitCode::Code(c) => c,
        })
    }
}
