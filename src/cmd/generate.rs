//! `flexnbd generate`: man pages and shell completions from the clap definition.
//!
//! The man pages are clap_mangen's rendering of the CLI plus hand-written
//! EXAMPLES, EXIT STATUS and SEE ALSO sections appended with its `roff`
//! re-export (vhost-device's xtask does the same). The committed copies in
//! `man/` and `completions/` are checked against this output by
//! `tests/generated.rs`; `scripts/regenerate` refreshes them.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_mangen::roff::{Roff, bold, roman};

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
            write_man_pages(&dir)
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

/// Writes `flexnbd.1` and `flexnbd-<sub>.1` for every visible subcommand.
fn write_man_pages(dir: &Path) -> std::io::Result<()> {
    // As clap_mangen::generate_to: no `help` subcommand, and a built command so
    // that subcommands know their full names (`flexnbd serve`).
    let mut cli = Cli::command().disable_help_subcommand(true);
    cli.build();
    write_man_page(&cli, dir)?;
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_man_page(sub, dir)?;
    }
    Ok(())
}

fn write_man_page(cmd: &clap::Command, dir: &Path) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("flexnbd {}", env!("CARGO_PKG_VERSION")))
        .manual("User Commands");
    let mut page = Vec::new();
    man.render(&mut page)?;
    let name = if cmd.get_name() == "flexnbd" {
        None
    } else {
        Some(cmd.get_name())
    };
    page.extend_from_slice(extra_sections(name).as_bytes());
    std::fs::write(dir.join(man.get_filename()), page)
}

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
                    &["$ flexnbd read -l 127.0.0.1 -p 10809 -F 1048576 -S 1048576 | sha256sum"],
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
                    &["$ flexnbd write -l 127.0.0.1 -p 10809 -F 1048576 -S 4096 < block.bin"],
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
                    "Migrate at most 50 MB/s and remove the source file once handed over:",
                    &["$ flexnbd mirror -s ctl.sock -l 10.0.0.2 -p 10809 -m 50000000 --unlink"],
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
                "Slow a running migration down to 10 MB/s:",
                &["$ flexnbd mirror-speed -s ctl.sock -m 10000000"],
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
                    &["$ flexnbd-proxy -l /run/vm1.nbd -C 10.0.0.1 -P 10809 --cache=65536"],
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

/// EXAMPLES, EXIT STATUS and SEE ALSO as roff, to append to a rendered page.
fn extra_sections(sub: Option<&str>) -> String {
    let Extra {
        examples,
        exit_status,
    } = extra(sub);
    let mut roff = Roff::new();
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
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in exit_status {
        roff.control("TP", [])
            .text([bold(*code)])
            .text([roman(*meaning)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<String> = ["serve", "read", "write", "acl", "status"]
        .iter()
        .filter(|s| sub != Some(**s))
        .map(|s| format!("flexnbd-{s}(1)"))
        .collect();
    if sub.is_some() {
        refs.insert(0, "flexnbd(1)".to_owned());
    }
    refs.extend(["nbdinfo(1)", "qemu-img(1)"].map(String::from));
    roff.text([roman(refs.join(", "))]);
    // to_roff leaves apostrophes alone (render() would repeat the page
    // preamble); use the Aq string that preamble defines.
    roff.to_roff().replace('\'', "\\*(Aq")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_gets_exit_status_and_see_also() {
        for sub in [
            None,
            Some("serve"),
            Some("read"),
            Some("status"),
            Some("other"),
        ] {
            let roff = extra_sections(sub);
            assert!(roff.contains(".SH \"EXIT STATUS\"\n"), "{roff}");
            assert!(roff.contains(".SH \"SEE ALSO\"\n"), "{roff}");
            assert!(!roff.contains('\''), "{roff}");
        }
        assert!(extra_sections(Some("serve")).contains(".SH EXAMPLES\n"));
    }
}
