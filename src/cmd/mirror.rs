//! `flexnbd mirror`: start a migration, and with `--wait` follow it to the end.
//!
//! Without `--wait` this is flexnbd-c's client: it sends the `mirror`
//! command, prints the reply (`Mirror started`) and exits with its code.
//! With `--wait` it then polls the server's `status` until the migration
//! ends: a progress bar on a terminal, otherwise a plain progress line at
//! once, every few seconds, on each change of state and at the end; what
//! both say comes from [`super::progress`]. It exits 0 once the source has
//! handed over (the destination has control), and 1 if the migration is
//! stopped or the source goes away before the handover.

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{GlobalArgs, MirrorArgs};
use crate::control::client;
use crate::exit::ExitCode;
use crate::status::{Phase, Status};

use super::progress::{Human, Progress, Report, State};

/// How often `--wait` asks for the status.
const POLL: Duration = Duration::from_millis(100);
/// How often a plain progress line is printed when stderr is not a terminal
/// (and at once when the state changes).
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// The first connection attempt can take 15 s to connect plus 5 s for the hello.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `mirror`.
///
/// # Errors
///
/// The control socket cannot be reached, or (`--wait`) the migration did
/// not complete.
pub fn run(args: MirrorArgs, global: GlobalArgs) -> Result<ExitCode> {
    super::init_logging(global, "");
    let ([addr, port], ip) = super::mirror_destination(args.addr, args.port, args.tls)?;
    let mut lines = vec![
        addr,
        port,
        if args.unlink { "unlink" } else { "exit" }.to_owned(),
    ];
    match (args.bind, args.max_speed) {
        (Some(bind), _) => lines.push(bind.to_string()),
        // The protocol has no way to skip BIND: binding to the unspecified
        // address of the target's family (port 0) is the same as not binding.
        (None, Some(_)) => lines.push(match ip {
            Some(IpAddr::V6(_)) => "::".to_owned(),
            // A UNIX socket ignores BIND.
            _ => "0.0.0.0".to_owned(),
        }),
        (None, None) => {}
    }
    if let Some(bps) = args.max_speed {
        lines.push(bps.to_string());
    }
    // Our option words, after flexnbd-c's arguments (which they leave unchanged without them).
    let words = [
        (args.verify, "verify"),
        (args.incremental, "incremental"),
        (args.no_incremental, "no-incremental"),
    ];
    lines.extend(
        words
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, w)| (*w).to_owned()),
    );
    let reply = client::request(&args.sock, "mirror", &lines, Some(START_TIMEOUT))?;
    let code = super::report(&reply)?;
    if !args.wait || reply.code != 0 {
        return Ok(code);
    }
    follow(&args.sock, !args.no_progress)
}

/// Polls `status` until the migration ends; returns success once it handed over.
fn follow(sock: &Path, progress: bool) -> Result<ExitCode> {
    let bar = (progress && std::io::stderr().is_terminal()).then(new_bar);
    let plain = progress && bar.is_none();
    let mut model = Progress::new();
    let mut last: Option<Report> = None;
    // The first plain line goes out at once, so even a short migration
    // shows one, and so does one for each new state (paused, resumed...).
    let mut last_line: Option<(Instant, State)> = None;
    let started = Instant::now();
    // `--verify`: the source said the destination's hashes matched ours.
    let mut verified = false;
    loop {
        let reply =
            match client::request::<&str>(sock, "status", &[], Some(client::DEFAULT_TIMEOUT)) {
                Ok(reply) => reply,
                Err(e) => {
                    // The source closes its control socket once it has handed over.
                    if let Some(r) = last.filter(|r| r.state == State::Running(Phase::Handover)) {
                        let done = model.handed_over(r.size);
                        show_end(bar.as_ref(), plain, &done, verified);
                        return finish(started, verified);
                    }
                    if let Some(bar) = &bar {
                        bar.abandon();
                    }
                    bail!("the source went away before the handover: {e}");
                }
            };
        if reply.code != 0 {
            bail!("status failed: {}", reply.text);
        }
        let status = Status::from_str(&reply.text)?;
        verified |= status.last_verified
            || status.migration.as_ref().and_then(|m| m.verified) == Some(true);
        let report = model.update(&status, Instant::now());
        if report.state.is_final() {
            show_end(bar.as_ref(), plain, &report, verified);
            match report.state {
                State::Done => return finish(started, verified),
                State::Stopped => bail!("the migration was stopped before the handover"),
                State::Failed => bail!("the migration failed"),
                _ => bail!("no migration is running on {}", sock.display()),
            }
        }
        if let Some(bar) = &bar {
            show_bar(bar, &report);
        } else if plain
            && last_line.is_none_or(|(t, s)| t.elapsed() >= PLAIN_EVERY || s != report.state)
        {
            last_line = Some((Instant::now(), report.state));
            let _ = writeln!(std::io::stderr().lock(), "mirror: {report}");
        }
        last = Some(report);
        std::thread::sleep(POLL);
    }
}

fn new_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            // Two lines, so that an 80-column terminal need not wrap them:
            // the state and the limit, the bar of bytes that need not be
            // sent again, then the rate, the estimate and what is left
            // (all from `progress`, not indicatif's own estimates, which
            // average over the bar's life and know nothing of the limit).
            "{spinner} {prefix:10} [{wide_bar}] {bytes}/{total_bytes}\n  {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    crate::logging::set_progress_bar(Some(bar.clone()));
    bar
}

fn show_bar(bar: &ProgressBar, report: &Report) {
    bar.set_length(report.size);
    bar.set_position(report.done());
    bar.set_prefix(Human(report).title());
    bar.set_message(Human(report).to_string());
}

/// Shows how the migration ended: the bar's last frame, or a last plain line.
fn show_end(bar: Option<&ProgressBar>, plain: bool, report: &Report, verified: bool) {
    if let Some(bar) = bar {
        show_bar(bar, report);
        if report.state == State::Done {
            bar.set_prefix(if verified { "verified" } else { "handed over" });
            bar.finish_with_message(if verified {
                "the destination has control; its copy matches ours"
            } else {
                "the destination has control"
            });
        } else {
            bar.abandon();
        }
    } else if plain {
        let tail = if verified && report.state == State::Done {
            " (verified)"
        } else {
            ""
        };
        let _ = writeln!(std::io::stderr().lock(), "mirror: {report}{tail}");
    }
}

fn finish(started: Instant, verified: bool) -> Result<ExitCode> {
    writeln!(
        std::io::stdout().lock(),
        "Migration complete{} in {:.1} s",
        if verified { " and verified" } else { "" },
        started.elapsed().as_secs_f64()
    )?;
    Ok(ExitCode::Success)
}
