//! The hand-written parts of the man pages: each page's EXAMPLES and EXIT
//! STATUS, the ENVIRONMENT variables and the SEE ALSO list. Data only; the
//! roff is written by the parent module.

/// An environment variable a page documents: name, the pages it belongs on
/// (the top-level page lists every one), and what it does.
pub(super) struct EnvVar {
    pub(super) name: &'static str,
    pub(super) pages: &'static [&'static str],
    pub(super) meaning: &'static str,
}

/// Every environment variable flexnbd reads (`grep -rn env::var src`).
pub(super) const ENVIRONMENT: &[EnvVar] = &[
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
pub(super) const SEE_ALSO: &[&str] = &[
    "nbd-client(8)",
    "qemu-nbd(8)",
    "qemu-img(1)",
    "nbdkit(1)",
    "nbdinfo(1)",
];

/// A page's examples (what it does; command lines start with `$ `, other
/// lines are output) and exit statuses.
pub(super) struct Extra {
    pub(super) examples: &'static [(&'static str, &'static [&'static str])],
    pub(super) exit_status: &'static [(&'static str, &'static str)],
}

const USAGE_EXIT: (&str, &str) = (
    "2",
    "The command line is wrong; clap explains why on stderr.",
);

/// The hand-written sections for the top-level page (`None`) or one subcommand.
pub(super) fn extra(sub: Option<&str>) -> Extra {
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
