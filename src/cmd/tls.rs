//! The TLS options of the subcommands, checked (usage errors exit 2, as
//! clap's own) and turned into the library's settings.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cli::{ClientTlsArgs, ServerTlsArgs, TlsModeArg};
use crate::client::ClientTls;
use crate::mirror::OutgoingTls;
use crate::nbd::handshake::TlsOffer;
use crate::nbd::tls::{ServerTls, TlsMode};
use crate::uri::{Host, NbdUri, Transport};

fn usage_error(
    usage: impl FnOnce() -> clap::Command,
    kind: clap::error::ErrorKind,
    message: &str,
) -> ! {
    usage().error(kind, message).exit()
}

/// What a server (`serve`, `listen`, `proxy`) offers its clients. The
/// credentials are read once here, so a server never starts with a
/// directory it cannot use.
///
/// # Errors
///
/// The directory's files cannot be read or do not fit together.
pub(crate) fn server_offer(
    args: &ServerTlsArgs,
    oldstyle: bool,
    usage: impl FnOnce() -> clap::Command,
) -> Result<Option<TlsOffer>> {
    use clap::error::ErrorKind::{ArgumentConflict, MissingRequiredArgument};
    let mode = match args.tls {
        TlsModeArg::Off => {
            if args.tls_verify_peer {
                usage_error(
                    usage,
                    MissingRequiredArgument,
                    "--tls-verify-peer needs --tls on or --tls require",
                );
            }
            return Ok(None);
        }
        TlsModeArg::On => TlsMode::On,
        TlsModeArg::Require => TlsMode::Require,
    };
    if oldstyle {
        usage_error(
            usage,
            ArgumentConflict,
            "--tls cannot be used with --oldstyle: the old-style handshake has no STARTTLS",
        );
    }
    let Some(dir) = &args.tls_certificates else {
        usage_error(
            usage,
            MissingRequiredArgument,
            "--tls on and --tls require need --tls-certificates DIR",
        );
    };
    let credentials = ServerTls::new(dir, args.tls_verify_peer)
        .with_context(|| format!("cannot use the TLS certificates in {}", dir.display()))?;
    Ok(Some(TlsOffer { mode, credentials }))
}

/// The TLS of the connections a server makes (migrations, the proxy's upstream).
/// `--mirror-tls` without `--tls-certificates` is a usage error: every
/// migration would fail, found only when one starts.
pub(crate) fn outgoing(
    args: &ServerTlsArgs,
    always: bool,
    usage: impl FnOnce() -> clap::Command,
) -> OutgoingTls {
    if always && args.tls_certificates.is_none() {
        usage_error(
            usage,
            clap::error::ErrorKind::MissingRequiredArgument,
            "--mirror-tls needs --tls-certificates DIR",
        );
    }
    OutgoingTls {
        certificates: args.tls_certificates.clone(),
        always,
    }
}

/// The TLS settings of `read` and `write`: `--tls`, an `nbds://` URI, or
/// any other TLS option ask for it (a certificate directory given and
/// silently unused would send the data in clear); the URI's
/// `tls-certificates` and `tls-hostname` give way to the options.
pub(crate) fn client(
    args: &ClientTlsArgs,
    server: &NbdUri,
    usage: impl FnOnce() -> clap::Command,
) -> Option<ClientTls> {
    let asked = args.tls || args.tls_certificates.is_some() || args.tls_hostname.is_some();
    settings(
        asked,
        args.tls_certificates.clone(),
        args.tls_hostname.clone(),
        server,
        usage,
    )
}

/// The TLS settings of the proxy's upstream: `--upstream-tls` or an
/// `nbds://` upstream ask for it, with the proxy's `--tls-certificates`.
pub(crate) fn upstream(
    asked: bool,
    dir: Option<PathBuf>,
    server: &NbdUri,
    usage: impl FnOnce() -> clap::Command,
) -> Option<ClientTls> {
    settings(asked, dir, None, server, usage)
}

/// TLS towards `server` if `asked` or its URI is `nbds://`. The server's
/// certificate is checked for `hostname`, else the URI's `tls-hostname`,
/// else the host name connected to (an IP address is checked as itself).
fn settings(
    asked: bool,
    dir: Option<PathBuf>,
    hostname: Option<String>,
    server: &NbdUri,
    usage: impl FnOnce() -> clap::Command,
) -> Option<ClientTls> {
    if !asked && server.tls.is_none() {
        return None;
    }
    let uri = server.tls.clone().unwrap_or_default();
    let Some(dir) = dir.or(uri.certificates) else {
        usage_error(
            usage,
            clap::error::ErrorKind::MissingRequiredArgument,
            "TLS needs --tls-certificates DIR (or tls-certificates=DIR in the nbds:// URI)",
        );
    };
    let name = hostname.or(uri.hostname).or(match &server.transport {
        Transport::Tcp {
            host: Host::Name(name),
            ..
        } => Some(name.clone()),
        _ => None,
    });
    Some(ClientTls::new(&dir, name))
}
