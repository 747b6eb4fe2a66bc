//! The command line as a user sees it: help, version, usage errors (exit 2,
//! clap's message on stderr, nothing on stdout) and flexnbd-c's option forms.

use crate::support::{TestEnv, flexnbd, free_port, text};

/// Every visible subcommand with the options its help must show, as
/// `(short, long)`; `""` when an option has no short form.
const OPTIONS: &[(&str, &[(&str, &str)])] = &[
    ("", &[]),
    (
        "serve",
        &[
            ("-l", "--addr"),
            ("-p", "--port"),
            ("-f", "--file"),
            ("-s", "--sock"),
            ("-d", "--default-deny"),
            ("-k", "--killswitch"),
            ("-r", "--read-only"),
            ("", "--oldstyle"),
            ("", "--max-clients"),
        ],
    ),
    (
        "read",
        &[
            ("-l", "--addr"),
            ("-p", "--port"),
            ("-F", "--from"),
            ("-S", "--size"),
            ("-b", "--bind"),
        ],
    ),
    (
        "write",
        &[
            ("-l", "--addr"),
            ("-p", "--port"),
            ("-F", "--from"),
            ("-S", "--size"),
            ("-b", "--bind"),
        ],
    ),
    (
        "listen",
        &[
            ("-l", "--addr"),
            ("-p", "--port"),
            ("-f", "--file"),
            ("-s", "--sock"),
            ("-d", "--default-deny"),
            ("", "--oldstyle"),
        ],
    ),
    ("acl", &[("-s", "--sock")]),
    ("status", &[("-s", "--sock"), ("", "--json")]),
    (
        "mirror",
        &[
            ("-l", "--addr"),
            ("-p", "--port"),
            ("-s", "--sock"),
            ("-u", "--unlink"),
            ("-b", "--bind"),
            ("-m", "--max-speed"),
            ("-w", "--wait"),
            ("", "--no-progress"),
        ],
    ),
    ("mirror-speed", &[("-s", "--sock"), ("-m", "--max-speed")]),
    ("break", &[("-s", "--sock")]),
    (
        "proxy",
        &[
            ("-l", "--addr"),
            ("-p", "--port"),
            ("-C", "--conn-addr"),
            ("-P", "--conn-port"),
            ("-b", "--bind"),
            ("", "--cache"),
            ("", "--oldstyle"),
        ],
    ),
    ("completions", &[]),
    ("man", &[]),
];

/// Options every command and subcommand has.
const COMMON: &[(&str, &str)] = &[
    ("-v", "--verbose"),
    ("-q", "--quiet"),
    ("-h", "--help"),
    ("-V", "--version"),
];

/// Runs flexnbd with `args` and returns (exit code, stdout, stderr).
#[track_caller]
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = flexnbd().args(args).output().expect("cannot run flexnbd");
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn help_lists_every_option_with_its_short_form() {
    for (sub, options) in OPTIONS {
        for flag in ["--help", "-h"] {
            let args: Vec<&str> = [*sub, flag].into_iter().filter(|a| !a.is_empty()).collect();
            let (code, stdout, stderr) = run(&args);
            assert_eq!(code, Some(0), "flexnbd {args:?}: stderr:\n{stderr}");
            assert_eq!(stderr, "", "flexnbd {args:?} wrote to stderr");
            assert!(
                stdout.contains("Usage: flexnbd"),
                "flexnbd {args:?}:\n{stdout}"
            );
            for (short, long) in options.iter().chain(COMMON) {
                let shown = if short.is_empty() {
                    format!(" {long}")
                } else {
                    format!("{short}, {long}")
                };
                assert!(
                    stdout.contains(&shown),
                    "flexnbd {args:?} does not show '{shown}':\n{stdout}"
                );
            }
        }
    }
}

#[test]
fn top_level_help_lists_the_subcommands_but_not_generate() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for (sub, _) in OPTIONS.iter().filter(|(s, _)| !s.is_empty()) {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(sub)),
            "top-level help does not list {sub}:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("generate"),
        "the hidden subcommand shows:\n{stdout}"
    );
}

/// What `--version` should show after the program name: the package version,
/// and the commit when this test runs in a git checkout of the package.
fn expected_version() -> String {
    let version = env!("CARGO_PKG_VERSION");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| text(&o.stdout).trim().to_owned())
    };
    let top = git(&["rev-parse", "--show-toplevel"]).and_then(|t| std::fs::canonicalize(t).ok());
    let here = std::fs::canonicalize(env!("CARGO_MANIFEST_DIR")).ok();
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) if top.is_some() && top == here => format!("{version} ({commit})"),
        _ => version.to_owned(),
    }
}

#[test]
fn version_prints_name_version_and_commit() {
    let version = expected_version();
    for args in [&["--version"][..], &["-V"]] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, Some(0), "flexnbd {args:?}: {stderr}");
        assert_eq!(stdout, format!("flexnbd {version}\n"), "flexnbd {args:?}");
        assert_eq!(stderr, "");
    }
    // Subcommands take --version too (clap names them flexnbd-serve etc.).
    let (code, stdout, _) = run(&["serve", "--version"]);
    assert_eq!(code, Some(0));
    assert_eq!(stdout, format!("flexnbd-serve {version}\n"));
}

#[test]
fn help_subcommand_matches_long_help() {
    for sub in ["serve", "read", "write", "acl", "status"] {
        let (code, via_help, _) = run(&["help", sub]);
        assert_eq!(code, Some(0), "flexnbd help {sub}");
        let (_, via_flag, _) = run(&[sub, "--help"]);
        assert_eq!(
            via_help, via_flag,
            "flexnbd help {sub} differs from {sub} --help"
        );
    }
    let (code, stdout, _) = run(&["help"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("serve"));
}

/// Asserts that `args` is a usage error: exit 2, nothing on stdout, and clap's
/// `error:` message on stderr containing every one of `expected`.
#[track_caller]
fn assert_usage_error(args: &[&str], expected: &[&str]) {
    let (code, stdout, stderr) = run(args);
    assert_eq!(code, Some(2), "flexnbd {args:?}: stderr:\n{stderr}");
    assert_eq!(stdout, "", "flexnbd {args:?} wrote to stdout");
    assert!(
        stderr.starts_with("error: "),
        "flexnbd {args:?}: not a clap error:\n{stderr}"
    );
    for e in expected {
        assert!(
            stderr.contains(e),
            "flexnbd {args:?}: stderr lacks '{e}':\n{stderr}"
        );
    }
    assert!(
        stderr.contains("For more information, try '--help'."),
        "flexnbd {args:?}:\n{stderr}"
    );
}

#[test]
fn missing_file_is_a_usage_error() {
    assert_usage_error(
        &["serve", "-l", "127.0.0.1", "-p", "4777"],
        &["required arguments were not provided", "--file <FILE>"],
    );
}

#[test]
fn missing_addr_is_a_usage_error() {
    assert_usage_error(
        &["serve", "-p", "4777", "-f", "disk.img"],
        &["required arguments were not provided", "--addr <ADDR>"],
    );
}

#[test]
fn missing_range_and_sock_are_usage_errors() {
    assert_usage_error(
        &["read", "-l", "127.0.0.1", "-p", "4777"],
        &["--from <OFFSET>", "--size <SIZE>"],
    );
    // --port is optional since --addr may be a URI; with an IP it is still required.
    assert_usage_error(&["write", "-F", "0", "-S", "1"], &["--addr <ADDR>"]);
    assert_usage_error(
        &["write", "-l", "127.0.0.1", "-F", "0", "-S", "1"],
        &["--port is required"],
    );
    assert_usage_error(&["status"], &["--sock <SOCK>"]);
    assert_usage_error(&["acl", "127.0.0.1"], &["--sock <SOCK>"]);
}

#[test]
fn bad_port_is_a_usage_error() {
    assert_usage_error(
        &["serve", "-l", "127.0.0.1", "-p", "70000", "-f", "disk.img"],
        &["invalid value '70000' for '--port <PORT>'"],
    );
    assert_usage_error(
        &[
            "read",
            "-l",
            "127.0.0.1",
            "-p",
            "http",
            "-F",
            "0",
            "-S",
            "1",
        ],
        &["invalid value 'http' for '--port <PORT>'"],
    );
}

#[test]
fn host_name_is_a_usage_error() {
    assert_usage_error(
        &["serve", "-l", "localhost", "-p", "4777", "-f", "disk.img"],
        &["invalid value 'localhost' for '--addr <ADDR>'"],
    );
    assert_usage_error(
        &[
            "read",
            "-l",
            "127.0.0.1",
            "-p",
            "1",
            "-F",
            "0",
            "-S",
            "1",
            "-b",
            "example.com",
        ],
        &["invalid value 'example.com' for '--bind <BIND_ADDR>'"],
    );
}

#[test]
fn bad_acl_entry_is_a_usage_error() {
    let serve = ["serve", "-l", "127.0.0.1", "-p", "4777", "-f", "disk.img"];
    for entry in ["10.0.0.0/0", "10.0.0.0/33", "::1/129", "not-an-address"] {
        let args: Vec<&str> = serve.iter().copied().chain([entry]).collect();
        assert_usage_error(&args, &[&format!("invalid value '{entry}'")]);
    }
}

#[test]
fn bad_numbers_are_usage_errors() {
    assert_usage_error(
        &["read", "-l", "127.0.0.1", "-p", "1", "-F", "-1", "-S", "1"],
        &["-1"],
    );
    assert_usage_error(
        &[
            "serve",
            "-l",
            "127.0.0.1",
            "-p",
            "1",
            "-f",
            "d",
            "--max-clients",
            "0",
        ],
        &["invalid value '0' for '--max-clients <N>'"],
    );
}

#[test]
fn listen_max_clients_needs_serve_after_handover() {
    let listen: Vec<&str> = "listen -l 127.0.0.1 -p 1 -f d --max-clients 5"
        .split(' ')
        .collect();
    assert_usage_error(&listen, &["--serve-after-handover"]);
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    assert_usage_error(&["frobnicate"], &["unrecognized subcommand 'frobnicate'"]);
    // Subcommand names are exact, as in flexnbd-c.
    assert_usage_error(&["Serve"], &["unrecognized subcommand 'Serve'"]);
}

#[test]
fn unknown_option_is_a_usage_error() {
    assert_usage_error(
        &[
            "serve",
            "-l",
            "127.0.0.1",
            "-p",
            "4777",
            "-f",
            "d",
            "--frobnicate",
        ],
        &["unexpected argument '--frobnicate'"],
    );
    assert_usage_error(
        &["status", "-s", "ctl", "-x"],
        &["unexpected argument '-x'"],
    );
}

#[test]
fn no_subcommand_is_a_usage_error_with_help_on_stderr() {
    let (code, stdout, stderr) = run(&[]);
    assert_eq!(code, Some(2));
    assert_eq!(stdout, "");
    assert!(stderr.contains("Usage: flexnbd"), "{stderr}");
}

#[test]
fn verbose_and_quiet_last_one_wins_as_flexnbd_c() {
    use clap::Parser;
    for (args, verbose, quiet) in [
        (&["-v", "-q"][..], 0, true),
        (&["-q", "-v"][..], 1, false),
        (&["-q", "-vv"][..], 2, false),
        (&["--verbose", "--quiet", "-v"][..], 1, false),
    ] {
        let argv = ["flexnbd", "status", "-s", "ctl"].iter().chain(args);
        let cli = flexnbd::cli::Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{args:?} should parse: {e}"));
        assert_eq!(
            (cli.global.verbose, cli.global.quiet),
            (verbose, quiet),
            "{args:?}"
        );
    }
}

/// Runs `args` where it cannot get far (nothing to connect to, a file that
/// cannot exist) and asserts that the command line was accepted: the command
/// failed at run time (exit 1) rather than with a usage error.
#[track_caller]
fn assert_parses(args: &[&str]) {
    let (code, stdout, stderr) = run(args);
    assert_eq!(
        code,
        Some(1),
        "flexnbd {args:?} was not accepted as a command line:\n{stderr}"
    );
    assert!(!stderr.starts_with("error:"), "flexnbd {args:?}: {stderr}");
    assert_eq!(stdout, "", "flexnbd {args:?} wrote to stdout");
}

/// A file in `env` that `serve` cannot open (its directory does not exist),
/// and a free port: a `serve` line with them parses, then fails (exit 1).
fn unopenable_file_and_port(env: &TestEnv) -> (String, String) {
    let file = env.child("no-such-dir/disk.img");
    let file = file.to_str().expect("utf-8 temp path").to_owned();
    (file, free_port().to_string())
}

// Regression: flexnbd-c declares --killswitch as taking a value, so in
// `--killswitch --quiet` the --quiet was swallowed. Here both are flags.
#[test]
fn killswitch_then_quiet_keeps_both() {
    let env = TestEnv::new();
    let (file, port) = unopenable_file_and_port(&env);
    let (file, port) = (file.as_str(), port.as_str());
    let serve = ["serve", "-l", "127.0.0.1", "-p", port, "-f", file];

    let args: Vec<&str> = serve
        .iter()
        .copied()
        .chain(["--killswitch", "--quiet"])
        .collect();
    assert_parses(&args);

    // Proof that --quiet was taken as an option, not as --killswitch's value.
    use clap::Parser;
    let cli = flexnbd::cli::Cli::try_parse_from(["flexnbd"].iter().chain(&args))
        .unwrap_or_else(|e| panic!("{args:?} should parse: {e}"));
    assert!(cli.global.quiet, "--quiet was swallowed");
    let flexnbd::cli::Command::Serve(serve) = cli.command else {
        panic!("not serve: {:?}", cli.command)
    };
    assert!(serve.killswitch, "--killswitch lost");
}

#[test]
fn flexnbd_c_option_forms_are_accepted() {
    let env = TestEnv::new();
    let (file, port) = unopenable_file_and_port(&env);
    let (file, port) = (file.as_str(), port.as_str());
    let attached_port = format!("-p{port}");
    let equals_port = format!("--port={port}");
    let attached_file = format!("-f{file}");

    // Attached short values, bundled flags, ACL entries before and after options
    // (GNU getopt permutes argv).
    assert_parses(&[
        "serve",
        "10.0.0.0/8",
        "-l127.0.0.1",
        &attached_port,
        &attached_file,
        "-dk",
        "::1",
        "-s",
        "ctl.sock",
    ]);
    // --opt=value, and an address in brackets as flexnbd-c takes it.
    assert_parses(&[
        "serve",
        "--addr=127.0.0.1",
        &equals_port,
        "--file",
        file,
        "--default-deny",
    ]);
    assert_parses(&[
        "serve",
        "-l",
        "[127.0.0.1]",
        "-p",
        port,
        "-f",
        file,
        "-v",
        "-v",
    ]);

    let sock = env.child("no-such.sock");
    let sock = sock.to_str().expect("utf-8 temp path");
    assert_parses(&["status", "-s", sock]);
    assert_parses(&["acl", "--sock", sock, "127.0.0.1", "10.0.0.0/8"]);
    assert_parses(&["acl", "-s", sock]);
}

#[test]
fn sizes_and_rates_take_suffixes() {
    let port = free_port();
    let env = TestEnv::new();
    let sock = env.child("no-such.sock");
    let sock = sock.to_str().expect("utf-8 temp path");
    // Nothing listens on `port` or `sock`: the command line was accepted if it fails at run time.
    for line in [
        format!("read -l 127.0.0.1 -p {port} -F 1M -S 4K"),
        format!("write -l 127.0.0.1 -p {port} -F 0 -S 1G"),
        format!("mirror-speed -s {sock} -m 100M"),
        format!("mirror -s {sock} -l 127.0.0.1 -p {port} -m 1.5GiB"),
        format!("proxy -l 127.0.0.1 -p 0 -C 127.0.0.1 -P {port} --cache=64K"),
    ] {
        assert_parses(&line.split(' ').collect::<Vec<_>>());
    }
}

#[test]
fn a_bad_size_is_a_one_line_usage_error() {
    for (line, shown) in [
        (
            "read -l 127.0.0.1 -p 1 -F 0 -S 1X",
            "invalid value '1X' for '--size <SIZE>': not a size: a number of bytes, \
             optionally followed by K, M, G, T, P or E (powers of 1024), e.g. 512M\n",
        ),
        (
            "read -l 127.0.0.1 -p 1 -F lots -S 1",
            "invalid value 'lots' for '--from <OFFSET>': not a size",
        ),
        (
            "mirror-speed -s ctl -m 16E",
            "invalid value '16E' for '--max-speed <BPS>': too large: at most 16E - 1 bytes\n",
        ),
        (
            "proxy -l 127.0.0.1 -p 1 -C 127.0.0.1 -P 1 --cache=1Q",
            "invalid value '1Q' for '--cache[=<CACHE_BYTES>]': not a size",
        ),
    ] {
        let args: Vec<&str> = line.split(' ').collect();
        assert_usage_error(&args, &[shown]);
        let (_, _, stderr) = run(&args);
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{stderr}"
        );
    }
}

#[test]
fn busy_poll_takes_zero_to_a_millisecond() {
    let env = TestEnv::new();
    let (file, port) = unopenable_file_and_port(&env);
    for mode in ["serve", "listen"] {
        for value in ["0", "0us", "50us", "1ms"] {
            let line = format!("{mode} -l 127.0.0.1 -p {port} -f {file} --busy-poll {value}");
            assert_parses(&line.split(' ').collect::<Vec<_>>());
        }
    }
    for (value, shown) in [
        ("2ms", "at most 1ms"),
        ("1s", "at most 1ms"),
        ("fast", "fast"),
    ] {
        let line = format!("serve -l 127.0.0.1 -p 1 -f d --busy-poll {value}");
        let wrong = format!("invalid value '{value}' for '--busy-poll <DURATION>'");
        assert_usage_error(&line.split(' ').collect::<Vec<_>>(), &[&wrong, shown]);
    }
}
