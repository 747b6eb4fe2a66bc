//! What a migration is asked to do, and the parser of the `mirror` command's arguments.
//!
//! Parsing checks the arguments in flexnbd-c's order and reports the first
//! problem as a [`RequestError`]; the control socket turns it into
//! flexnbd-c's reply text. Nothing here touches a socket.
//!
//! Beyond flexnbd-c, ADDR may also be a UNIX socket path (starting with
//! `/`) or an NBD URI with an IP address (`nbd://IP[:PORT]/EXPORT`,
//! `nbd+unix:///EXPORT?socket=PATH`); PORT must still be there, a number,
//! and is then ignored (the URI carries its own).

use std::net::{IpAddr, SocketAddr};
use std::num::IntErrorKind;
use std::path::PathBuf;

use crate::client::{ClientTls, Target};
use crate::net::parse_ip;
use crate::uri::{Host, NbdUri, Transport, UriTls};

/// What happens to the source when a migration completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorAction {
    /// Close the NBD listener, send DISCONNECT, exit 0 (the default).
    Exit,
    /// As `Exit`, and delete the served file just before the DISCONNECT.
    Unlink,
    /// Keep serving and send no DISCONNECT (flexnbd-c's `nothing`).
    Nothing,
}

impl MirrorAction {
    /// The word used on the control socket.
    pub fn as_str(self) -> &'static str {
        match self {
            MirrorAction::Exit => "exit",
            MirrorAction::Unlink => "unlink",
            MirrorAction::Nothing => "nothing",
        }
    }
}

/// Whether to compare hashes before copying and send only what differs
/// (needs the hash extension, `docs/hash-extension.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Incremental {
    /// When the destination offers the extension and says its file holds data (the default).
    #[default]
    Auto,
    /// Whenever the destination offers the extension (`incremental`).
    On,
    /// Never: copy everything (`no-incremental`).
    Off,
}

/// A validated `mirror` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRequest {
    /// The destination's NBD address.
    pub target: Target,
    /// The destination's export to ask for (`""`: its default export).
    pub export_name: String,
    /// What to do on completion.
    pub action: MirrorAction,
    /// The local address to connect from.
    pub bind: Option<IpAddr>,
    /// The bandwidth limit in bytes per second, if any.
    pub max_bps: Option<u64>,
    /// Compare the destination's hashes with ours before the handover
    /// (`verify`; needs the hash extension).
    pub verify: bool,
    /// Whether to skip what the destination already holds.
    pub incremental: Incremental,
    /// TLS, asked for by an `nbds://` destination (with its settings).
    pub tls: Option<UriTls>,
}

/// The TLS of a server's migrations, from its command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingTls {
    /// `--tls-certificates`: the credentials (`ca-cert.pem` to check the
    /// destination, `client-cert.pem`/`client-key.pem` to be checked by it).
    pub certificates: Option<PathBuf>,
    /// `--mirror-tls`: every migration uses TLS, whatever its destination says.
    pub always: bool,
}

/// A TLS migration was asked for, and the server has no credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a TLS migration needs --tls-certificates DIR on the server's command line")]
pub struct NoTlsCredentials;

impl OutgoingTls {
    /// The client TLS settings of `request`: `None` for a plain migration.
    /// The URI's `tls-certificates` wins over the server's directory.
    ///
    /// # Errors
    ///
    /// TLS is wanted and no directory is known.
    pub fn for_request(
        &self,
        request: &MirrorRequest,
    ) -> Result<Option<ClientTls>, NoTlsCredentials> {
        let uri = request.tls.clone();
        if uri.is_none() && !self.always {
            return Ok(None);
        }
        let uri = uri.unwrap_or_default();
        let dir = uri
            .certificates
            .or_else(|| self.certificates.clone())
            .ok_or(NoTlsCredentials)?;
        Ok(Some(ClientTls::new(&dir, uri.hostname)))
    }
}

/// The first problem with the `mirror` command's arguments, in flexnbd-c's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Fewer than the address and the port.
    #[error("a migration needs at least an address and a port")]
    TooFewArgs,
    /// The destination address is not an IP address, a socket path or an NBD URI with an IP address.
    #[error("the destination is not an IP address, a UNIX socket path or an NBD URI")]
    BadAddress,
    /// The port is not a number from 0 to 65535.
    #[error("the destination port is not a number from 0 to 65535")]
    BadPort,
    /// The action is not `exit`, `unlink` or `nothing`.
    #[error("the action is not exit, unlink or nothing")]
    BadAction,
    /// The local address to bind is not an IP address.
    #[error("the bind address is not an IP address")]
    BadBind,
    /// The bandwidth limit is not a number of bytes per second.
    #[error(transparent)]
    Bps(#[from] BpsError),
    /// More than five arguments.
    #[error("too many arguments for a migration")]
    TooManyArgs,
}

/// A bandwidth limit that is not a number of bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BpsError {
    /// A number too large for 64 bits.
    #[error("the bandwidth limit is out of range")]
    OutOfRange,
    /// Not a decimal number.
    #[error("the bandwidth limit is not a number")]
    NotANumber,
}

impl MirrorRequest {
    /// Parses the `mirror` command's arguments: `ADDR PORT [ACTION [BIND [MAX_BPS]]]`
    /// (ADDR may be a socket path or an NBD URI: see the module documentation).
    ///
    /// Stricter than flexnbd-c where it silently accepted nonsense: a port or
    /// speed that is not a number is an error, not 0.
    ///
    /// # Errors
    ///
    /// The first problem, checked in flexnbd-c's order.
    pub fn parse(args: &[String]) -> Result<MirrorRequest, RequestError> {
        // Our option words may follow PORT anywhere: none of them can be
        // an action, an address or a number.
        let (mut verify, mut incremental) = (false, Incremental::Auto);
        let mut rest = Vec::with_capacity(args.len());
        for (i, arg) in args.iter().enumerate() {
            match arg.as_str() {
                "verify" if i >= 2 => verify = true,
                "incremental" if i >= 2 => incremental = Incremental::On,
                "no-incremental" if i >= 2 => incremental = Incremental::Off,
                _ => rest.push(arg.clone()),
            }
        }
        let args = rest.as_slice();
        if args.len() < 2 {
            return Err(RequestError::TooFewArgs);
        }
        let dest = parse_destination(&args[0]).ok_or(RequestError::BadAddress)?;
        let port = args[1].parse::<u16>().map_err(|_| RequestError::BadPort)?;
        let action = match args.get(2).map(String::as_str) {
            None | Some("exit") => MirrorAction::Exit,
            Some("unlink") => MirrorAction::Unlink,
            Some("nothing") => MirrorAction::Nothing,
            Some(_) => return Err(RequestError::BadAction),
        };
        let bind = match args.get(3) {
            None => None,
            Some(b) => Some(parse_ip(b).map_err(|_| RequestError::BadBind)?),
        };
        let max_bps = args.get(4).map(|b| parse_bps(b)).transpose()?;
        if args.len() > 5 {
            return Err(RequestError::TooManyArgs);
        }
        let (target, export_name, tls) = match dest {
            Destination::Ip(ip) => (Target::Tcp(SocketAddr::new(ip, port)), String::new(), None),
            Destination::Other(target, name, tls) => (target, name, tls),
        };
        Ok(MirrorRequest {
            target,
            export_name,
            action,
            bind,
            max_bps,
            verify,
            incremental,
            tls,
        })
    }
}

/// A `mirror` command's ADDR.
enum Destination {
    /// flexnbd-c's form: the port follows.
    Ip(IpAddr),
    /// A socket path or a URI, with the export name and TLS settings; the port is ignored.
    Other(Target, String, Option<UriTls>),
}

/// ADDR: an IP address, a UNIX socket path or an NBD URI whose host is an IP address.
fn parse_destination(text: &str) -> Option<Destination> {
    if text.starts_with('/') {
        return Some(Destination::Other(
            Target::Unix(PathBuf::from(text)),
            String::new(),
            None,
        ));
    }
    if !text.contains("://") {
        return parse_ip(text).ok().map(Destination::Ip);
    }
    let uri = NbdUri::parse(text).ok()?;
    let target = match uri.transport {
        Transport::Tcp {
            host: Host::Ip(ip),
            port,
        } => Target::Tcp(SocketAddr::new(ip, port)),
        // Names are looked up by the client (`flexnbd mirror`), not by the server.
        Transport::Tcp {
            host: Host::Name(_),
            ..
        } => return None,
        Transport::Unix(path) => Target::Unix(path),
    };
    Some(Destination::Other(target, uri.export_name, uri.tls))
}

/// Parses a bandwidth limit in bytes per second (decimal, no unit).
///
/// # Errors
///
/// Whether it is too large or not a number at all.
pub fn parse_bps(text: &str) -> Result<u64, BpsError> {
    text.parse::<u64>().map_err(|e| match e.kind() {
        IntErrorKind::PosOverflow => BpsError::OutOfRange,
        _ => BpsError::NotANumber,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &[&str]) -> Result<MirrorRequest, RequestError> {
        let args: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        MirrorRequest::parse(&args)
    }

    #[test]
    fn arguments_are_checked_in_flexnbd_c_order() {
        use RequestError::*;
        assert_eq!(parse(&["127.0.0.1"]), Err(TooFewArgs));
        assert_eq!(parse(&["host", "1"]), Err(BadAddress));
        assert_eq!(parse(&["host", "x", "stay"]), Err(BadAddress));
        assert_eq!(parse(&["127.0.0.1", "70000"]), Err(BadPort));
        assert_eq!(parse(&["127.0.0.1", "x"]), Err(BadPort));
        assert_eq!(parse(&["127.0.0.1", "1", "stay"]), Err(BadAction));
        assert_eq!(parse(&["127.0.0.1", "1", "exit", "nowhere"]), Err(BadBind));
        assert_eq!(
            parse(&["127.0.0.1", "1", "exit", "0", "99999999999999999999"]),
            Err(Bps(BpsError::OutOfRange))
        );
        assert_eq!(
            parse(&["127.0.0.1", "1", "exit", "0", "fast"]),
            Err(Bps(BpsError::NotANumber))
        );
        assert_eq!(
            parse(&["127.0.0.1", "1", "exit", "0", "5", "more"]),
            Err(TooManyArgs)
        );
    }

    #[test]
    fn a_full_request_and_the_defaults() {
        let ok = parse(&["::1", "4777", "unlink", "127.0.0.2", "1000"]).unwrap();
        let v6: SocketAddr = "[::1]:4777".parse().unwrap();
        assert_eq!(ok.target, Target::Tcp(v6));
        assert_eq!(ok.export_name, "");
        assert_eq!(ok.action, MirrorAction::Unlink);
        assert_eq!(ok.bind, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(ok.max_bps, Some(1000));
        let default = parse(&["0", "1"]).unwrap();
        assert_eq!(
            (default.action, default.bind, default.max_bps),
            (MirrorAction::Exit, None, None)
        );
        assert_eq!(
            parse(&["0", "1", "nothing"]).unwrap().action,
            MirrorAction::Nothing
        );
    }

    #[test]
    fn tls_comes_from_the_uri_or_the_server_and_needs_a_directory() {
        let plain = parse(&["1.2.3.4", "1"]).unwrap();
        let nbds = parse(&["nbds://1.2.3.4:1/?tls-hostname=d.example", "1"]).unwrap();
        let none = OutgoingTls::default();
        let dir = OutgoingTls {
            certificates: Some("/etc/pki/flexnbd".into()),
            always: false,
        };
        assert_eq!(none.for_request(&plain), Ok(None));
        assert_eq!(none.for_request(&nbds), Err(NoTlsCredentials));
        assert_eq!(dir.for_request(&plain), Ok(None));
        let tls = dir.for_request(&nbds).unwrap().unwrap();
        assert_eq!(tls.dir(), std::path::Path::new("/etc/pki/flexnbd"));
        assert_eq!(tls.server_name(), Some("d.example"));
        let always = OutgoingTls {
            always: true,
            ..dir
        };
        assert!(always.for_request(&plain).unwrap().is_some());
    }

    #[test]
    fn socket_paths_and_uris_as_the_destination() {
        let ok = parse(&["/run/d.sock", "0"]).unwrap();
        assert_eq!(ok.target, Target::Unix("/run/d.sock".into()));
        let ok = parse(&["nbd+unix:///disk%201?socket=/run/d.sock", "0", "unlink"]).unwrap();
        assert_eq!(ok.target, Target::Unix("/run/d.sock".into()));
        assert_eq!(ok.export_name, "disk 1");
        assert_eq!(ok.action, MirrorAction::Unlink);
        let ok = parse(&["nbd://127.0.0.1:4777/d", "1"]).unwrap();
        let v4: SocketAddr = "127.0.0.1:4777".parse().unwrap();
        assert_eq!((ok.target, ok.export_name.as_str()), (Target::Tcp(v4), "d"));
        assert_eq!(parse(&["nbd://host/", "1"]), Err(RequestError::BadAddress));
        let tls = parse(&["nbds://1.2.3.4/?tls-hostname=dest.example", "1"]).unwrap();
        assert_eq!(tls.tls.unwrap().hostname.as_deref(), Some("dest.example"));
        assert_eq!(parse(&["nbd://1.2.3.4/", "1"]).unwrap().tls, None);
        assert_eq!(parse(&["/run/d.sock", "x"]), Err(RequestError::BadPort));
    }

    #[test]
    fn option_words_follow_the_port_anywhere() {
        let plain = parse(&["127.0.0.1", "1", "exit", "0.0.0.0", "5"]).unwrap();
        assert!(!plain.verify);
        assert_eq!(plain.incremental, Incremental::Auto);
        let ok = parse(&["127.0.0.1", "1", "exit", "verify", "0.0.0.0", "5"]).unwrap();
        assert!(ok.verify);
        assert_eq!((ok.bind, ok.max_bps), (plain.bind, Some(5)));
        let ok = parse(&["127.0.0.1", "1", "no-incremental", "verify"]).unwrap();
        assert!(ok.verify);
        assert_eq!(ok.incremental, Incremental::Off);
        assert_eq!(ok.action, MirrorAction::Exit);
        let ok = parse(&["127.0.0.1", "1", "unlink", "incremental"]).unwrap();
        assert_eq!(
            (ok.action, ok.incremental),
            (MirrorAction::Unlink, Incremental::On)
        );
        // Not in place of the address or the port.
        assert_eq!(parse(&["verify", "1"]), Err(RequestError::BadAddress));
        assert_eq!(parse(&["127.0.0.1", "verify"]), Err(RequestError::BadPort));
    }

    #[test]
    fn bandwidth_limits() {
        assert_eq!(parse_bps("0"), Ok(0));
        assert_eq!(parse_bps("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_bps("18446744073709551616"), Err(BpsError::OutOfRange));
        assert_eq!(parse_bps("-1"), Err(BpsError::NotANumber));
        assert_eq!(parse_bps(""), Err(BpsError::NotANumber));
    }
}
