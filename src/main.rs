//! The `flexnbd` binary: parse the command line, run the subcommand, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

use flexnbd::cli::{Cli, Command, ProxyCli};

fn main() -> ExitCode {
    // Run as `flexnbd-proxy` (a symlink), the arguments are the proxy's.
    let cli = match std::env::args_os().next() {
        Some(argv0) if flexnbd::proxy::invoked_as_proxy(&argv0) => {
            let proxy = ProxyCli::parse();
            Cli {
                global: proxy.global,
                command: Command::Proxy(proxy.args),
            }
        }
        _ => Cli::parse(),
    };
    match flexnbd::cmd::run(cli) {
        Ok(code) => code.into(),
        Err(err) => {
            // A closed stdout (e.g. `flexnbd read ... | head`) is not a failure.
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("flexnbd: {err:#}");
            flexnbd::exit::ExitCode::Failure.into()
        }
    }
}
