//! `flexnbd completions` and `flexnbd man`: shell completions and man pages
//! from the clap definition (also reachable as the hidden `generate`).
//!
//! A page is clap_mangen's NAME, DESCRIPTION, OPTIONS and SUBCOMMANDS, with
//! a SYNOPSIS of our own (clap_mangen's leaves out the values, `-s` instead
//! of `-s SOCK`) and hand-written EXIT STATUS, ENVIRONMENT, EXAMPLES and
//! SEE ALSO sections written with its `roff` re-export (vhost-device's xtask
//! does the same). clap_mangen's EXTRA (the after-help line) and VERSION
//! sections are left out: the title line carries the version. The committed
//! copies in `man/` and `completions/` are checked against this output by
//! `tests/generated.rs`; `scripts/regenerate` refreshes them.

use std::io::Write;

use anyhow::{Context, Result};
use clap::{ArgAction, CommandFactory};
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};

use crate::cli::{Cli, CompletionsArgs, GenerateArgs, GenerateWhat, ManArgs, Shell};
use crate::exit::ExitCode;

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

/// An environment variable a page documents: name, the pages it belongs on
/// (the top-level page lists every one), and what it does.
struct EnvVar {
    name: &'static str,
    pages: &'static [&'static str],
    meaning: &'static str,
}

/// Every environment variable flexnbd reads (`grep -rn env::var src`).
const ENVIRONMENT: &[EnvVar] = &[
    EnvVar {
        name: "FLEXNBD_MS_REQUEST_LIMIT_SECS",
        pages: &["serve", "mirror"],
        meaning: "How long a migration's transfer may go without a reply from the \
                  destination before the attempt is dropped and retried: seconds, \
                  fractions allowed, 0 for no limit; default 60. Read by the source's \
                  flexnbd serve at each attempt, so set it where serve runs, not for \
                  flexnbd mirror. Anything else is ignored with a warning.",
    },
    EnvVar {
        name: "FLEXNBD_UPSTREAM_TIMEOUT",
        pages: &["proxy"],
        meaning: "How long a request to the upstream server may make no progress \
                  before the proxy drops that connection, reconnects and resends what \
                  was in flight: whole seconds greater than 0; default 30. Anything \
                  else is ignored with a warning.",
    },
];

/// Other man pages worth reading, after flexnbd's own.
const SEE_ALSO: &[&str] = &[
    "nbd-client(8)",
    "qemu-nbd(8)",
    "qemu-img(1)",
    "nbdkit(1)",
    "nbdinfo(1)",
];

/// A page's examples (what it does; command lines start with `$ `, other
/// lines are output) and exit statuses.
struct Extra {
    examples: &'static [(&'static str, &'static [&'static str])],
    exit_status: &'static [(&'static str, &'static str)],
}

const USAGE_EXIT: (&str, &str) = (
    "2",
    "The command line is wrong; clap explains why on stderr.",
);

/// The hand-written sections for the top-level page (`None`) or one subcommand.
fn extra(sub: Option<&str>) -> Extra {
    match sub {
        None => Extra {
            examples: &[
                (
                    "Serve a scratch image on the NBD port with a control socket:",
                    &[
                        "$ truncate -s 1G /tmp/disk.img",
                        "$ flexnbd serve -l 127.0.0.1 -p 10809 -f /tmp/disk.img -s /tmp/flexnbd.sock",
                    ],
                ),
                (
                    "From another terminal, look at it with the libnbd and qemu tools and ask for its status:",
                    &[
                        "$ nbdinfo nbd://127.0.0.1:10809",
                        "$ qemu-img info nbd://127.0.0.1:10809",
                        "$ flexnbd status -s /tmp/flexnbd.sock",
                    ],
                ),
            ],
            exit_status: &[
                (
                    "0",
                    "Success. A server exits 0 when it is stopped while it has control of its data.",
                ),
                (
                    "1",
                    "Failure. The reason is printed on stderr as one line starting with \
                     \"flexnbd: \". A server exits 1 when it is stopped without control of its \
                     data.",
                ),
                USAGE_EXIT,
                (
                    "9, 10",
                    "Passed through from the control socket replies 9: missing command and \
                     10: unknown command.",
                ),
                (
                    "128+N",
                    "Not an exit status: a client command stopped by signal N (SIGINT, \
                     SIGTERM) dies of it, which a shell reports as 128+N, e.g. 130 for Ctrl-C.",
                ),
            ],
        },
        Some("serve") => Extra {
            examples: &[
                (
                    "Serve disk.img to everyone on 127.0.0.1 port 10809, with a control socket:",
                    &["$ flexnbd serve -l 127.0.0.1 -p 10809 -f disk.img -s ctl.sock"],
                ),
                (
                    "Serve on every IPv4 address, only to one subnet and one host:",
                    &["$ flexnbd serve -l 0 -p 10809 -f disk.img 10.0.0.0/8 192.168.1.7"],
                ),
                (
                    "Serve to C flexnbd peers, which speak only the old-style handshake:",
                    &["$ flexnbd serve --oldstyle -l 127.0.0.1 -p 4777 -f disk.img"],
                ),
            ],
            exit_status: &[
                ("0", "Stopped by SIGINT, SIGTERM or SIGQUIT."),
                (
                    "1",
                    "The server could not start (the file cannot be opened, the address is in \
                     use, the control socket cannot be created) or failed while serving.",
                ),
                USAGE_EXIT,
            ],
        },
        Some("read") => Extra {
            examples: &[
                (
                    "Copy the first 4 KiB of the export into a file:",
                    &["$ flexnbd read -l 127.0.0.1 -p 10809 -F 0 -S 4096 > block.bin"],
                ),
                (
                    "Checksum 1 MiB starting at 1 MiB:",
                    &["$ flexnbd read -l 127.0.0.1 -p 10809 -F 1M -S 1M | sha256sum"],
                ),
            ],
            exit_status: &[
                (
                    "0",
                    "All SIZE bytes were written to stdout, or stdout was closed early (for \
                     example by head).",
                ),
                (
                    "1",
                    "The server could not be reached or refused the handshake, the range lies \
                     outside the export, or the server answered with an error.",
                ),
                USAGE_EXIT,
            ],
        },
        Some("write") => Extra {
            examples: &[
                (
                    "Write five bytes at the start of the export:",
                    &["$ printf hello | flexnbd write -l 127.0.0.1 -p 10809 -F 0 -S 5"],
                ),
                (
                    "Write a block from a file at offset 1 MiB:",
                    &["$ flexnbd write -l 127.0.0.1 -p 10809 -F 1M -S 4K < block.bin"],
                ),
            ],
            exit_status: &[
                ("0", "The server acknowledged the write."),
                (
                    "1",
                    "Stdin ended before SIZE bytes, the server could not be reached or refused \
                     the handshake, the range lies outside the export, the export is read-only \
                     (checked before stdin is read), or the server answered with an error.",
                ),
                USAGE_EXIT,
            ],
        },
        Some("acl") => Extra {
            examples: &[
                (
                    "Allow only localhost and one subnet:",
                    &["$ flexnbd acl -s ctl.sock 127.0.0.1 10.0.0.0/8"],
                ),
                (
                    "Set an empty list (everyone, unless the server runs with --default-deny):",
                    &["$ flexnbd acl -s ctl.sock"],
                ),
            ],
            exit_status: &[
                (
                    "0",
                    "The server replied 0: updated; updated is printed on stdout.",
                ),
                (
                    "1",
                    "An entry was bad (the server replies 1: bad spec: ENTRY, printed on stderr, \
                     and keeps the old list), or the control socket could not be reached.",
                ),
                USAGE_EXIT,
            ],
        },
        Some("status") => Extra {
            examples: &[
                (
                    "Print the status line (keys in the order of the C flexnbd):",
                    &[
                        "$ flexnbd status -s ctl.sock",
                        "pid=1234 size=1073741824 is_mirroring=false clients_allowed=true num_clients=0 has_control=true",
                    ],
                ),
                (
                    "The same as one JSON object:",
                    &[
                        "$ flexnbd status -s ctl.sock --json",
                        r#"{"pid":1234,"size":1073741824,"is_mirroring":false,"clients_allowed":true,"num_clients":0,"has_control":true}"#,
                    ],
                ),
            ],
            exit_status: &[
                ("0", "The status was printed on stdout."),
                (
                    "1",
                    "The control socket could not be reached or its reply could not be read.",
                ),
                USAGE_EXIT,
            ],
        },
        Some("listen") => Extra {
            examples: &[
                (
                    "Receive a migration into a fresh sparse file of the source's size:",
                    &[
                        "$ truncate -s 1G /srv/disk.img",
                        "$ flexnbd listen -l 0 -p 10809 -f /srv/disk.img -s /run/dest.sock",
                    ],
                ),
                (
                    "Receive from a C flexnbd source, which speaks only the old-style handshake:",
                    &["$ flexnbd listen --oldstyle -l 0 -p 4777 -f /srv/disk.img"],
                ),
            ],
            exit_status: &[
                (
                    "0",
                    "The source sent DISCONNECT: the migration is complete and this copy now \
                     has control.",
                ),
                (
                    "1",
                    "Stopped by a signal before the migration completed (the partial data is \
                     left in FILE), or the server could not start.",
                ),
                USAGE_EXIT,
            ],
        },
        Some("mirror") => Extra {
            examples: &[
                (
                    "Migrate the server behind ctl.sock to a listen on 10.0.0.2, following it:",
                    &["$ flexnbd mirror -s ctl.sock -l 10.0.0.2 -p 10809 --wait"],
                ),
                (
                    "Migrate at most 50 MiB/s and remove the source file once handed over:",
                    &["$ flexnbd mirror -s ctl.sock -l 10.0.0.2 -p 10809 -m 50M --unlink"],
                ),
            ],
            exit_status: &[
                (
                    "0",
                    "Without --wait: the destination accepted us (Mirror started). With \
                     --wait: the migration completed and the destination has control.",
                ),
                (
                    "1",
                    "The destination could not be reached, rejected us, or has another size \
                     (the reply is printed on stderr); with --wait, the migration was stopped \
                     or the source went away before the handover.",
                ),
                USAGE_EXIT,
            ],
        },
        Some("mirror-speed") => Extra {
            examples: &[(
                "Slow a running migration down to 10 MiB/s, then pause it:",
                &[
                    "$ flexnbd mirror-speed -s ctl.sock -m 10M",
                    "$ flexnbd mirror-speed -s ctl.sock -m 0",
                ],
            )],
            exit_status: &[
                ("0", "The limit was changed (updated is printed)."),
                (
                    "1",
                    "No migration is running, or the control socket could not be reached.",
                ),
                USAGE_EXIT,
            ],
        },
        Some("break") => Extra {
            examples: &[(
                "Stop a running migration; the source keeps serving:",
                &["$ flexnbd break -s ctl.sock"],
            )],
            exit_status: &[
                (
                    "0",
                    "The migration was stopped (mirror stopped is printed).",
                ),
                (
                    "1",
                    "No migration was running, it had already completed, or the control \
                     socket could not be reached.",
                ),
                USAGE_EXIT,
            ],
        },
        Some("proxy") => Extra {
            examples: &[
                (
                    "Give a VM a connection that survives its server's migration:",
                    &["$ flexnbd proxy -l 127.0.0.1 -p 10810 -C 10.0.0.1 -P 10809"],
                ),
                (
                    "The same on a UNIX socket, with a 64 KiB read-ahead cache, under the C name:",
                    &["$ flexnbd-proxy -l /run/vm1.nbd -C 10.0.0.1 -P 10809 --cache=64K"],
                ),
            ],
            exit_status: &[
                ("0", "Stopped by SIGINT, SIGTERM or SIGQUIT."),
                (
                    "1",
                    "The first connection to the upstream server failed, or the listening \
                     socket could not be made.",
                ),
                USAGE_EXIT,
            ],
        },
        Some("completions") => Extra {
            examples: &[
                (
                    "Install the bash completions system-wide (zsh: _flexnbd on $fpath; fish: \
                     flexnbd.fish in ~/.config/fish/completions):",
                    &[
                        "$ flexnbd completions bash > /usr/share/bash-completion/completions/flexnbd",
                    ],
                ),
                (
                    "Try them in the running shell:",
                    &["$ source <(flexnbd completions bash)"],
                ),
            ],
            exit_status: &[
                ("0", "The script was printed."),
                ("1", "Stdout could not be written."),
                USAGE_EXIT,
            ],
        },
        Some("man") => Extra {
            examples: &[
                (
                    "Install every page for the local system:",
                    &["$ flexnbd man /usr/local/share/man/man1"],
                ),
                (
                    "Read this program's top-level page without installing it:",
                    &["$ flexnbd man | man -l -"],
                ),
            ],
            exit_status: &[
                ("0", "The pages were written."),
                (
                    "1",
                    "DIR could not be created or written, or stdout could not be written.",
                ),
                USAGE_EXIT,
            ],
        },
        Some(_) => Extra {
            examples: &[],
            exit_status: &[
                ("0", "Success."),
                ("1", "Failure; the reason is printed on stderr."),
                USAGE_EXIT,
            ],
        },
    }
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
