//! `flexnbd proxy` (or `flexnbd-proxy`): relay one client at a time to an
//! upstream NBD server, hiding its failures and migrations.

use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::SignalThread;
use crate::cli::{GlobalArgs, ProxyArgs};
use crate::exit::ExitCode;
use crate::nbd::Listener;
use crate::net::parse_ip;
use crate::proxy::{MAX_CACHE, Proxy, ProxyConfig, upstream_timeout};

/// Runs the proxy until SIGINT, SIGTERM or SIGQUIT (then exits 0).
///
/// # Errors
///
/// Bad listen address, the first upstream connection fails (unlike the C
/// flexnbd-proxy, which exits 0 there), or the listening socket cannot be made.
pub fn run(args: ProxyArgs, global: GlobalArgs) -> Result<ExitCode> {
    let usage = <crate::cli::ProxyCli as clap::CommandFactory>::command;
    let server = super::server(
        args.conn_addr,
        args.conn_port,
        ["--conn-addr", "--conn-port"],
        usage,
    );
    let upstream_tls = super::tls::upstream(
        args.upstream_tls,
        args.tls.tls_certificates.clone(),
        &server,
        usage,
    );
    // A host name's first address: the proxy reconnects to that one.
    let upstream = super::targets(&server)?.remove(0);
    super::init_logging(global, &upstream.to_string());
    let listen = if args.addr.starts_with('/') {
        Listen::Unix(PathBuf::from(&args.addr))
    } else {
        let ip = parse_ip(&args.addr)?;
        let Some(port) = args.port else {
            // A usage error (exit 2), like every other missing option.
            let mut cmd = <crate::cli::ProxyCli as clap::CommandFactory>::command();
            cmd.error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--port is required when --addr is an IP address (not a UNIX socket path)",
            )
            .exit();
        };
        Listen::Tcp(SocketAddr::new(ip, port))
    };
    let cache = args.cache.map(|c| {
        if c > MAX_CACHE {
            log::warn!("cache of {c} bytes capped at {MAX_CACHE}");
        }
        c.min(MAX_CACHE)
    });
    let config = ProxyConfig {
        upstream: upstream.clone(),
        export_name: server.export_name.clone(),
        bind: args.bind,
        cache: cache.filter(|&c| c > 0),
        oldstyle: args.oldstyle,
        timeout: upstream_timeout(),
        tls: super::tls::server_offer(&args.tls, args.oldstyle, usage)?,
        upstream_tls,
    };
    let proxy = Proxy::connect(config).with_context(|| {
        format!("couldn't connect to upstream server {upstream} during initialization")
    })?;
    let listener = match listen {
        Listen::Tcp(addr) => {
            Listener::Tcp(Listener::bind_tcp(addr).with_context(|| format!("cannot bind {addr}"))?)
        }
        Listen::Unix(path) => {
            let l = UnixListener::bind(&path)
                .with_context(|| format!("cannot listen on {}", path.display()))?;
            Listener::Unix(l, path)
        }
    };

    let signal_proxy = proxy.clone();
    let signal_thread = SignalThread::start(SignalThread::install()?, move |sig| {
        log::info!("Exit signalled ({sig})");
        signal_proxy.shutdown();
    })?;
    let result = proxy.run(listener).context("the proxy's listener failed");
    signal_thread.finish();
    result?;
    Ok(ExitCode::Success)
}

enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}
