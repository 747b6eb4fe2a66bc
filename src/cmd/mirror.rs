//! `flexnbd mirror`: start a migration, and with `--wait` follow it to the end.
//!
//! Without `--wait` this is flexnbd-c's client: it sends the `mirror`
//! command, prints the reply (`Mirror started`) and exits with its code.
//! With `--wait` it then polls the server's `status` until the migration
//! ends: a progress bar on a terminal, a plain progress line every few
//! seconds otherwise. It exits 0 once the source has handed over (the
//! destination has control), and 1 if the migration is stopped or the
//! source goes away before the handover.

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
use crate::status::{Outcome, Phase, Status};

/// How often `--wait` asks for the status.
const POLL: Duration = Duration::from_millis(100);
/// How often a plain progress line is printed when stderr is not a terminal.
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
    crate::logging::init(crate::logging::level_for(global.verbose, global.quiet), "");
    let mut lines = vec![
        args.addr.to_string(),
        args.port.to_string(),
        if args.unlink { "unlink" } else { "exit" }.to_owned(),
    ];
    match (args.bind, args.max_speed) {
        (Some(bind), _) => lines.push(bind.to_string()),
        // The protocol has no way to skip BIND: binding to the unspecified
        // address of the target's family (port 0) is the same as not binding.
        (None, Some(_)) => lines.push(match args.addr {
            IpAddr::V4(_) => "0.0.0.0".to_owned(),
            IpAddr::V6(_) => "::".to_owned(),
        }),
        (None, None) => {}
    }
    if let Some(bps) = args.max_speed {
        lines.push(bps.to_string());
    }
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
    let mut last_phase: Option<Phase> = None;
    // The first plain line goes out at once, so even a short migration shows one.
    let mut last_line: Option<Instant> = None;
    let started = Instant::now();
    loop {
        let reply =
            match client::request::<&str>(sock, "status", &[], Some(client::DEFAULT_TIMEOUT)) {
                Ok(reply) => reply,
                Err(e) => {
                    // The source closes its control socket once it has handed over.
                    if last_phase == Some(Phase::Handover) {
                        return finish(bar.as_ref(), started);
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
        let Some(m) = status.migration else {
            return match status.last_migration {
                Some(Outcome::Done) => finish(bar.as_ref(), started),
                other => {
                    if let Some(bar) = &bar {
                        bar.abandon();
                    }
                    match other {
                        Some(Outcome::Stopped) => {
                            bail!("the migration was stopped before the handover")
                        }
                        Some(Outcome::Failed) => bail!("the migration failed"),
                        Some(Outcome::Done) | None => {
                            bail!("no migration is running on {}", sock.display())
                        }
                    }
                }
            };
        };
        let done = status.size.saturating_sub(m.bytes_left);
        let phase = m.phase.map_or("", Phase::as_str);
        let retries = m.retries.unwrap_or(0);
        let sent = m.bytes_sent.unwrap_or(0);
        if let Some(bar) = &bar {
            bar.set_length(status.size);
            bar.set_position(done);
            bar.set_prefix(phase);
            bar.set_message(format!(
                "{} dirty, {} sent, {retries} retries",
                indicatif::HumanBytes(m.bytes_left),
                indicatif::HumanBytes(sent)
            ));
        } else if plain && last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
            last_line = Some(Instant::now());
            let _ = writeln!(
                std::io::stderr().lock(),
                "mirror: {phase} {done}/{} bytes, {} bytes/s, {} bytes left, eta {} s, {sent} bytes sent, {retries} retries",
                status.size,
                m.speed,
                m.bytes_left,
                m.seconds_left
            );
        }
        last_phase = m.phase;
        std::thread::sleep(POLL);
    }
}

fn new_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            // Two lines, so that an 80-column terminal need not wrap them:
            // the phase and the bar of bytes on the destination, then the
            // rate, the estimate and what is left.
            "{spinner} {prefix:10} [{wide_bar}] {bytes}/{total_bytes}\n  {bytes_per_sec}, eta {eta}, {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    crate::logging::set_progress_bar(Some(bar.clone()));
    bar
}

fn finish(bar: Option<&ProgressBar>, started: Instant) -> Result<ExitCode> {
    if let Some(bar) = bar {
        if let Some(len) = bar.length() {
            bar.set_position(len);
        }
        bar.set_prefix("handed over");
        bar.finish_with_message("the destination has control");
    }
    writeln!(
        std::io::stdout().lock(),
        "Migration complete in {:.1} s",
        started.elapsed().as_secs_f64()
    )?;
    Ok(ExitCode::Success)
}
