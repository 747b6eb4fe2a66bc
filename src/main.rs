//! The `flexnbd` binary: parse the command line, run the subcommand, map the outcome to an exit code.

use std::process::ExitCode;

use flexnbd::cli::Cli;

fn main() -> ExitCode {
    // Run as `flexnbd-proxy` (a symlink), the arguments are the proxy's.
    match flexnbd::cmd::run(Cli::parse_invoked()) {
        Ok(code) => code.into(),
        Err(err) => {
            // A closed stdout (e.g. `flexnbd read ... | head`) is not a failure.
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            flexnbd::logging::print_error(&format!("{err:#}"));
            flexnbd::exit::ExitCode::Failure.into()
        }
    }
}
