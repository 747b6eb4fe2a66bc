//! `flexnbd completions` and `flexnbd man`: shell completions and man pages
//! from the clap definition (also reachable as the hidden `generate`).
//!
//! A page is clap_mangen's NAME, DESCRIPTION, OPTIONS and SUBCOMMANDS, with
//! a SYNOPSIS of our own (clap_mangen's leaves out the values, `-s` instead
//! of `-s SOCK`) and hand-written EXIT STATUS, ENVIRONMENT, EXAMPLES and
//! SEE ALSO sections (their text in `generate/text.rs`) written with its
//! `roff` re-export (vhost-device's xtask does the same). clap_mangen's
//! EXTRA (the after-help line) and VERSION sections are left out: the title
//! line carries the version. The committed
//! copies in `man/` and `completions/` are checked against this output by
//! `tests/generated.rs`; `scripts/regenerate` refreshes them.

use std::io::Write;

use anyhow::{Context, Result};
use clap::{ArgAction, CommandFactory};
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};

use crate::cli::{Cli, CompletionsArgs, GenerateArgs, GenerateWhat, ManArgs, Shell};
use crate::exit::ExitCode;

mod text;

use text::{ENVIRONMENT, EnvVar, Extra, SEE_ALSO, extra};

/// `flexnbd generate man|completions`, the older spelling.
///
/// # Errors
///
/// As [`man`] and [`completions`].
pub fn run(args: GenerateArgs) -> Result<ExitCode> {
    match args.what {
        GenerateWhat::Man(args) => man(&args),
        GenerateWhat::Completions(args) => completions(args),
    }
}

/// Prints the completion script for a shell to stdout.
///
/// # Errors
///
/// Stdout is closed.
pub fn completions(args: CompletionsArgs) -> Result<ExitCode> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
        Shell::Elvish => clap_complete::Shell::Elvish,
        Shell::Powershell => clap_complete::Shell::PowerShell,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "flexnbd", &mut script);
    std::io::stdout().lock().write_all(&script)?;
    Ok(ExitCode::Success)
}

/// Writes every man page into a directory, or prints `flexnbd.1` to stdout.
///
/// # Errors
///
/// The directory cannot be created or written, or stdout is closed.
pub fn man(args: &ManArgs) -> Result<ExitCode> {
    let pages = man_pages();
    match &args.dir {
        None => {
            let (_, top) = pages.first().context("no man pages")?;
            std::io::stdout().lock().write_all(top.as_bytes())?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for (name, page) in &pages {
                std::fs::write(dir.join(name), page)
                    .with_context(|| format!("cannot write man pages to {}", dir.display()))?;
            }
        }
    }
    Ok(ExitCode::Success)
}

/// `flexnbd.1` then `flexnbd-<sub>.1` for every visible subcommand, as (file name, roff).
fn man_pages() -> Vec<(String, String)> {
    // As clap_mangen::generate_to: no `help` subcommand, and a built command so
    // that subcommands know their full names (`flexnbd serve`).
    let mut cli = Cli::command()
        .disable_help_subcommand(true)
        // The page's title carries the version; a commit in it (see build.rs)
        // would make every commit's pages differ.
        .version(env!("CARGO_PKG_VERSION"));
    cli.build();
    let subs: Vec<&str> = cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(clap::Command::get_name)
        .collect();
    let mut pages = vec![man_page(&cli, None, &subs)];
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.push(man_page(sub, Some(sub.get_name()), &subs));
    }
    pages
}

/// One page: clap_mangen's sections we keep, in man-pages(7) order, with ours.
fn man_page(cmd: &clap::Command, sub: Option<&str>, subs: &[&str]) -> (String, String) {
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("flexnbd {}", env!("CARGO_PKG_VERSION")))
        .manual("User Commands");
    let mut rendered = Vec::new();
    man.render(&mut rendered)
        .expect("rendering into memory cannot fail");
    let rendered = String::from_utf8_lossy(&rendered).into_owned();
    let (preamble, sections) = split_sections(&rendered);
    let section = |name: &str| {
        sections
            .iter()
            .find(|(heading, _)| heading == name)
            .map_or("", |(_, text)| text.as_str())
    };
    let mut page = preamble.to_owned();
    page.push_str(section("NAME"));
    page.push_str(&synopsis(cmd, sub));
    for name in ["DESCRIPTION", "OPTIONS", "SUBCOMMANDS"] {
        page.push_str(section(name));
    }
    page.push_str(&extra_sections(sub, subs));
    (man.get_filename(), page)
}

/// A rendered page cut at its `.SH` lines: the text before the first, then
/// (heading, the section's text including its `.SH` line) in order.
fn split_sections(page: &str) -> (&str, Vec<(String, String)>) {
    let start = page.find("\n.SH ").map_or(page.len(), |i| i + 1);
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in page[start..].split_inclusive('\n') {
        if let Some(heading) = line.strip_prefix(".SH ") {
            sections.push((heading.trim().trim_matches('"').to_owned(), String::new()));
        }
        if let Some((_, text)) = sections.last_mut() {
            text.push_str(line);
        }
    }
    (&page[..start], sections)
}

/// SYNOPSIS with every option's value: required options first, then the
/// optional ones in brackets, then the positional arguments.
fn synopsis(cmd: &clap::Command, sub: Option<&str>) -> String {
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"]);
    let Some(sub) = sub else {
        roff.text([
            bold("flexnbd"),
            roman(" [-v]... [-q] "),
            italic("COMMAND"),
            roman(" ["),
            italic("OPTIONS"),
            roman("]"),
        ]);
        roff.control("br", [])
            .text([bold("flexnbd"), roman(" -h|--help")]);
        roff.control("br", [])
            .text([bold("flexnbd"), roman(" -V|--version")]);
        return to_roff(&roff);
    };
    let shown =
        |a: &&clap::Arg| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version");
    let options: Vec<&clap::Arg> = cmd
        .get_arguments()
        .filter(shown)
        .filter(|a| !a.is_positional())
        .collect();
    let mut words: Vec<Vec<Inline>> = Vec::new();
    for required in [true, false] {
        for arg in options.iter().filter(|a| a.is_required_set() == required) {
            words.push(synopsis_option(arg));
        }
    }
    for arg in cmd.get_positionals().filter(shown) {
        let name = arg
            .get_value_names()
            .map_or_else(|| arg.get_id().to_string(), |v| v.join(" "));
        let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1);
        let mut word = vec![italic(name)];
        if many {
            word.push(roman("..."));
        }
        words.push(bracketed(word, !arg.is_required_set()));
    }
    let mut names = vec![format!("flexnbd {sub}")];
    if sub == "proxy" {
        names.push("flexnbd-proxy".to_owned());
    }
    for (i, name) in names.into_iter().enumerate() {
        if i > 0 {
            roff.control("br", []);
        }
        let mut line = vec![bold(name)];
        for word in &words {
            line.push(roman(" "));
            line.extend(word.iter().cloned());
        }
        roff.text(line);
    }
    to_roff(&roff)
}

/// One option in a SYNOPSIS: `-s SOCK`, `[-d]`, `[-v]...`, `[--cache[=CACHE_BYTES]]`.
fn synopsis_option(arg: &clap::Arg) -> Vec<Inline> {
    let value = arg
        .get_value_names()
        .map(|v| v.join(" "))
        .unwrap_or_default();
    let takes = arg.get_num_args().is_some_and(|n| n.takes_values());
    let optional_value = arg.get_num_args().is_some_and(|n| n.min_values() == 0);
    let mut word = match (arg.get_short(), arg.get_long()) {
        // A value that may be left out must be attached, so show the long form.
        (_, Some(long)) if takes && optional_value => vec![
            bold(format!("--{long}")),
            roman("[="),
            italic(value.clone()),
            roman("]"),
        ],
        (Some(short), _) => vec![bold(format!("-{short}"))],
        (None, Some(long)) => vec![bold(format!("--{long}"))],
        (None, None) => vec![],
    };
    if takes && !optional_value {
        word.push(roman(" "));
        word.push(italic(value));
    }
    let repeated = matches!(arg.get_action(), ArgAction::Count);
    let mut word = bracketed(word, !arg.is_required_set());
    if repeated {
        word.push(roman("..."));
    }
    word
}

fn bracketed(word: Vec<Inline>, optional: bool) -> Vec<Inline> {
    if optional {
        let mut w = vec![roman("[")];
        w.extend(word);
        w.push(roman("]"));
        w
    } else {
        word
    }
}

/// Roff text without the preamble that `render()` adds; apostrophes use the
/// Aq string that the page's own preamble (from clap_mangen) defines.
fn to_roff(roff: &Roff) -> String {
    roff.to_roff().replace('\'', "\\*(Aq")
}

/// EXIT STATUS, ENVIRONMENT, EXAMPLES and SEE ALSO as roff, for the
/// top-level page (`None`) or a subcommand's, among the visible `subs`.
fn extra_sections(sub: Option<&str>, subs: &[&str]) -> String {
    let Extra {
        examples,
        exit_status,
    } = extra(sub);
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in exit_status {
        roff.control("TP", [])
            .text([bold(*code)])
            .text([roman(*meaning)]);
    }
    let env: Vec<&EnvVar> = ENVIRONMENT
        .iter()
        .filter(|v| sub.is_none_or(|s| v.pages.contains(&s)))
        .collect();
    if !env.is_empty() {
        roff.control("SH", ["ENVIRONMENT"]);
        for var in env {
            roff.control("TP", [])
                .text([bold(var.name)])
                .text([roman(var.meaning)]);
        }
    }
    if !examples.is_empty() {
        roff.control("SH", ["EXAMPLES"]);
        for (what, lines) in examples {
            roff.control("PP", []).text([roman(*what)]);
            roff.control("RS", ["4"]).control("nf", []);
            for line in *lines {
                roff.text([roman(*line)]);
            }
            roff.control("fi", []).control("RE", []);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<String> = Vec::new();
    if sub.is_some() {
        refs.push("flexnbd(1)".to_owned());
    }
    refs.extend(
        subs.iter()
            .filter(|s| sub != Some(**s))
            .map(|s| format!("flexnbd-{s}(1)")),
    );
    refs.extend(SEE_ALSO.iter().map(|s| (*s).to_owned()));
    roff.text([roman(refs.join(", "))]);
    to_roff(&roff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(name: &str) -> String {
        man_pages()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no page {name}"))
            .1
    }

    #[test]
    fn every_page_gets_exit_status_examples_and_full_see_also() {
        let pages = man_pages();
        let names: Vec<String> = pages.iter().map(|(n, _)| n.clone()).collect();
        for (name, roff) in &pages {
            for section in [
                ".SH \"EXIT STATUS\"\n",
                ".SH EXAMPLES\n",
                ".SH \"SEE ALSO\"\n",
            ] {
                assert!(roff.contains(section), "{name} lacks {section}");
            }
            for stray in [".SH EXTRA", ".SH VERSION"] {
                assert!(!roff.contains(stray), "{name} has {stray}");
            }
            let see_also = roff
                .split(".SH \"SEE ALSO\"\n")
                .nth(1)
                .expect("a SEE ALSO section");
            let references = names
                .iter()
                .filter(|n| *n != name)
                .map(|other| format!("{}(1)", other.trim_end_matches(".1")))
                .chain(
                    ["nbd-client(8)", "qemu-nbd(8)", "nbdkit(1)", "nbdinfo(1)"].map(String::from),
                );
            for reference in references {
                let escaped = reference.replace('-', "\\-");
                assert!(see_also.contains(&escaped), "{name} lacks {reference}");
            }
        }
    }

    #[test]
    fn environment_is_documented_where_it_is_read() {
        let top = page("flexnbd.1");
        for var in ENVIRONMENT {
            let name = var.name;
            assert!(top.contains(name), "flexnbd.1 lacks {name}");
            for sub in var.pages {
                let page = page(&format!("flexnbd-{sub}.1"));
                assert!(page.contains(".SH ENVIRONMENT\n"), "flexnbd-{sub}.1");
                assert!(page.contains(name), "flexnbd-{sub}.1 lacks {name}");
            }
        }
        assert!(!page("flexnbd-read.1").contains(".SH ENVIRONMENT"));
    }

    #[test]
    fn synopsis_shows_values() {
        let synopsis = |name: &str| {
            let page = page(name);
            let (_, sections) = split_sections(&page);
            sections
                .into_iter()
                .find(|(h, _)| h == "SYNOPSIS")
                .map(|(_, text)| text)
                .expect("a SYNOPSIS")
        };
        let serve = synopsis("flexnbd-serve.1");
        for shown in [
            "\\fB\\-l\\fR \\fIADDR\\fR",
            "\\fB\\-f\\fR \\fIFILE\\fR",
            "[\\fB\\-s\\fR \\fISOCK\\fR]",
            "[\\fB\\-d\\fR]",
            "[\\fB\\-v\\fR]...",
            "[\\fIACL_ADDRESS\\fR...]",
        ] {
            assert!(serve.contains(shown), "{shown} not in {serve}");
        }
        // Required options come before the optional ones.
        assert!(serve.find("FILE") < serve.find("SOCK"), "{serve}");
        let proxy = synopsis("flexnbd-proxy.1");
        assert!(
            proxy.contains("[\\fB\\-\\-cache\\fR[=\\fICACHE_BYTES\\fR]]"),
            "{proxy}"
        );
        assert!(proxy.contains("\\fBflexnbd\\-proxy\\fR"), "{proxy}");
        assert!(synopsis("flexnbd.1").contains("\\fICOMMAND\\fR"));
    }
}
