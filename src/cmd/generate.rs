//! `flexnbd generate`: man pages and shell completions from the clap definition.

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::{Cli, GenerateArgs, GenerateWhat, Shell};
use crate::exit::ExitCode;

/// Writes man pages into a directory or prints a completion script.
///
/// # Errors
///
/// The directory cannot be written, or stdout is closed.
pub fn run(args: GenerateArgs) -> Result<ExitCode> {
    match args.what {
        GenerateWhat::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("cannot write man pages to {}", dir.display()))?;
        }
        GenerateWhat::Completions { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
                Shell::Elvish => clap_complete::Shell::Elvish,
                Shell::Powershell => clap_complete::Shell::PowerShell,
            };
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "flexnbd",
                &mut std::io::stdout(),
            );
        }
    }
    Ok(ExitCode::Success)
}
