//! Process exit codes.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; a server that had control when it stopped |
//! | 1 | failure; a server without control when it stopped (listen before the handover, serve while mirroring) |
//! | 2 | usage error (clap's code) |
//! | 9, 10 | control-socket replies `9: missing command`, `10: unknown command`, passed through |
//! | 130 | interrupted before finishing (client commands) |

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything worked.
    Success,
    /// Something failed; the error has been printed.
    Failure,
    /// The command line was wrong.
    Usage,
    /// Stopped by a signal.
    Interrupted,
    /// A numeric status passed through from a control-socket reply.
    Code(u8),
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(match code {
            ExitCode::Success => 0,
            ExitCode::Failure => 1,
            ExitCode::Usage => 2,
            ExitCode::Interrupted => 130,
            ExitCode::Code(c) => c,
        })
    }
}
