//! The committed man pages (`man/`) and shell completions (`completions/`)
//! are exactly what `flexnbd man` and `flexnbd completions` produce from the
//! CLI definition, and they look like man pages and completions.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::support::{TestEnv, flexnbd, have_tool, print_skip, stdout_ok, text, tool};

/// What to do when a committed file is out of date.
const FIX: &str = "run scripts/regenerate and commit the result";

/// `flexnbd completions <shell>` and the file it is committed as.
const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", "flexnbd.bash"),
    ("zsh", "_flexnbd"),
    ("fish", "flexnbd.fish"),
    ("elvish", "flexnbd.elv"),
    ("powershell", "_flexnbd.ps1"),
];

/// The visible subcommands, each of which gets a man page.
const SUBCOMMANDS: &[&str] = &[
    "serve",
    "listen",
    "read",
    "write",
    "acl",
    "status",
    "mirror",
    "mirror-speed",
    "break",
    "proxy",
    "completions",
    "man",
];

fn in_repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The names of the files in `dir` (an empty set if it does not exist).
fn file_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.expect("cannot list directory").file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Man pages freshly generated into a temporary directory.
fn fresh_man_pages() -> TestEnv {
    let env = TestEnv::new();
    flexnbd()
        .arg("man")
        .arg(env.path())
        .assert()
        .success()
        .stdout("");
    env
}

fn fresh_completion(shell: &str) -> Vec<u8> {
    stdout_ok(
        &format!("completions {shell}"),
        flexnbd().args(["completions", shell]),
    )
}

/// Compares `fresh` (name → bytes) with the committed files in `dir`.
#[track_caller]
fn assert_committed(dir: &str, fresh: &[(String, Vec<u8>)]) {
    let committed_dir = in_repo(dir);
    let mut problems = Vec::new();
    for (name, bytes) in fresh {
        match std::fs::read(committed_dir.join(name)) {
            Ok(committed) if committed == *bytes => {}
            Ok(_) => problems.push(format!("{dir}/{name} is out of date")),
            Err(_) => problems.push(format!("{dir}/{name} is missing")),
        }
    }
    let expected: BTreeSet<&str> = fresh.iter().map(|(n, _)| n.as_str()).collect();
    for name in file_names(&committed_dir) {
        if !expected.contains(name.as_str()) {
            problems.push(format!("{dir}/{name} is not generated any more"));
        }
    }
    assert!(problems.is_empty(), "{}\n{FIX}", problems.join("\n"));
}

#[test]
fn committed_man_pages_are_up_to_date() {
    let env = fresh_man_pages();
    let fresh: Vec<(String, Vec<u8>)> = file_names(env.path())
        .into_iter()
        .map(|name| {
            let bytes = env.read(&env.child(&name));
            (name, bytes)
        })
        .collect();
    assert!(!fresh.is_empty(), "man wrote nothing");
    assert_committed("man", &fresh);
}

#[test]
fn committed_completions_are_up_to_date() {
    let fresh: Vec<(String, Vec<u8>)> = COMPLETIONS
        .iter()
        .map(|(shell, file)| ((*file).to_owned(), fresh_completion(shell)))
        .collect();
    assert_committed("completions", &fresh);
}

#[test]
fn there_is_a_man_page_per_subcommand_naming_its_options() {
    let env = fresh_man_pages();
    let mut expected: BTreeSet<String> = SUBCOMMANDS
        .iter()
        .map(|s| format!("flexnbd-{s}.1"))
        .collect();
    expected.insert("flexnbd.1".to_owned());
    assert_eq!(file_names(env.path()), expected);

    let serve = text(&env.read(&env.child("flexnbd-serve.1")));
    // roff escapes dashes: \-\-addr.
    for option in [
        "addr",
        "port",
        "file",
        "sock",
        "default\\-deny",
        "killswitch",
    ] {
        assert!(
            serve.contains(&format!("\\-\\-{option}")),
            "flexnbd-serve.1 does not mention --{option}"
        );
    }
}

#[test]
fn man_pages_start_with_a_title() {
    let env = fresh_man_pages();
    for name in file_names(env.path()) {
        let page = text(&env.read(&env.child(&name)));
        // clap_mangen puts a two-line apostrophe definition (.ie/.el) before the title.
        let first = page
            .lines()
            .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
            .unwrap_or("");
        let title = name.trim_end_matches(".1");
        assert!(
            first.starts_with(&format!(".TH {title} 1")),
            "{name} does not start with a .TH title: {first:?}"
        );
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "EXIT STATUS",
            "EXAMPLES",
            "SEE ALSO",
        ] {
            assert!(
                page.lines()
                    .any(|l| l == format!(".SH {section}") || l == format!(".SH \"{section}\"")),
                "{name} has no {section} section"
            );
        }
    }
}

#[test]
fn man_pages_render_without_warnings() {
    // groff is optional: it is not one of the interop tools CI installs.
    if !have_tool("groff") {
        print_skip("groff not installed");
        return;
    }
    let env = fresh_man_pages();
    for name in file_names(env.path()) {
        let out = tool("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(env.child(&name))
            .output()
            .expect("cannot run groff");
        assert!(out.status.success(), "groff failed on {name}");
        assert_eq!(text(&out.stderr), "", "groff warns about {name}");
    }
}

#[test]
fn completions_know_every_subcommand() {
    for (shell, _) in COMPLETIONS {
        let script = text(&fresh_completion(shell));
        for sub in SUBCOMMANDS {
            assert!(
                script.contains(sub),
                "{shell} completion does not mention {sub}"
            );
        }
        assert!(script.contains("addr"), "{shell} completion lacks --addr");
    }
    assert!(text(&fresh_completion("zsh")).starts_with("#compdef flexnbd"));
    assert!(text(&fresh_completion("fish")).contains("complete -c flexnbd"));
}

#[test]
fn completions_and_man_reject_unknown_shell_and_unwritable_dir() {
    let out = flexnbd()
        .args(["completions", "tcsh"])
        .output()
        .expect("cannot run flexnbd");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid value 'tcsh'"));

    let env = TestEnv::new();
    let file = env.image("not-a-dir", 0);
    let out = flexnbd()
        .arg("man")
        .arg(file.join("man"))
        .output()
        .expect("cannot run flexnbd");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("flexnbd: "), "{stderr}");
    assert!(stderr.contains("not-a-dir"), "{stderr}");
}

#[test]
fn man_without_dir_prints_the_top_level_page() {
    let env = fresh_man_pages();
    let out = flexnbd().arg("man").output().expect("cannot run flexnbd");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), text(&env.read(&env.child("flexnbd.1"))));
}

#[test]
fn generate_is_a_hidden_alias_of_man_and_completions() {
    let env = fresh_man_pages();
    let old = TestEnv::new();
    flexnbd()
        .args(["generate", "man"])
        .arg(old.path())
        .assert()
        .success()
        .stdout("");
    for name in file_names(env.path()) {
        assert_eq!(
            env.read(&env.child(&name)),
            old.read(&old.child(&name)),
            "generate man wrote another {name}"
        );
    }
    let out = flexnbd()
        .args(["generate", "completions", "bash"])
        .output()
        .expect("cannot run flexnbd");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, fresh_completion("bash"));
}
