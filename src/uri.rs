//! NBD URIs and the other ways an operator names a server to connect to.
//!
//! Pure parsing, no I/O and no name lookups: [`NbdUri::parse`] follows the
//! NBD URI specification (`doc/uri.md` in the NBD project), and
//! [`ServerAddr`] is what `-l`/`-C` take: an IP address (flexnbd-c's form,
//! with a separate port), a UNIX socket path starting with `/`, or a URI.
//!
//! Supported:
//!
//! - `nbd://[HOST][:PORT][/EXPORT]`: TCP; HOST is an IPv4 address, an IPv6
//!   address in brackets or a host name (looked up by the caller), empty
//!   meaning `localhost`; PORT defaults to 10809;
//! - `nbd+unix:///[EXPORT]?socket=PATH`: a UNIX socket, with no host;
//! - the export name is the path without its leading `/`, percent-decoded
//!   (`nbd://h//disk` names `/disk`, `nbd://h/hello%20world` `hello world`);
//! - `nbds://` and `nbds+unix://`: the same over TLS, with the query
//!   parameters `tls-certificates=DIR` (the credentials directory, as
//!   libnbd takes it), `tls-hostname=NAME` (the name the server's
//!   certificate must carry; default the host), `tls-type=x509` and
//!   `tls-verify-peer=true` (the only values: pre-shared keys and an
//!   unchecked server are refused);
//! - `tls-` parameters are ignored on `nbd://` and `nbd+unix://`, which
//!   never negotiate TLS; any other parameter is an error, as the
//!   specification recommends.
//!
//! Refused with a message saying why: other schemes (`nbd+vsock://` included), a missing
//! `socket=`, abstract socket names (`%00...`), IPv6 zone identifiers, a
//! fragment, and export names that are not UTF-8, hold a NUL or exceed the
//! protocol's 4096 bytes.

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::str::FromStr;

use crate::net::parse_ip;

/// The NBD port assigned by IANA, used when a URI gives none.
pub const DEFAULT_PORT: u16 = 10809;

/// The longest export name the NBD protocol allows, in bytes.
pub const MAX_EXPORT_NAME: usize = 4096;

/// A server host as a URI names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IP address literal.
    Ip(IpAddr),
    /// A host name, to be looked up.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// How to reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// TCP to a host and port.
    Tcp {
        /// The server's host.
        host: Host,
        /// The server's port.
        port: u16,
    },
    /// A UNIX socket at a path.
    Unix(PathBuf),
}

/// A server and export to connect to: a parsed NBD URI, or the same built
/// from `-l ADDR -p PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdUri {
    /// How to reach the server.
    pub transport: Transport,
    /// The export to ask for (`""` is the default export).
    pub export_name: String,
    /// TLS (`nbds://`), with what the URI says of it.
    pub tls: Option<UriTls>,
}

/// The TLS settings of an `nbds://` URI.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UriTls {
    /// `tls-certificates=DIR`: the credentials directory.
    pub certificates: Option<PathBuf>,
    /// `tls-hostname=NAME`: the name the server's certificate must carry.
    pub hostname: Option<String>,
}

/// Text that is not a usable NBD URI or server address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Not a URI at all (no `scheme://`).
    #[error("not an NBD URI (nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH)")]
    NotUri,
    /// A scheme other than `nbd` or `nbd+unix`.
    #[error("unknown URI scheme '{0}' (nbd or nbd+unix)")]
    UnknownScheme(String),
    /// A TLS parameter with a value this client does not support.
    #[error("{0}")]
    Tls(&'static str),
    /// `nbd+unix://` without `socket=`.
    #[error("nbd+unix:// needs the socket path as ?socket=PATH")]
    MissingSocket,
    /// A port that is not a number from 1 to 65535.
    #[error("bad port '{0}'")]
    BadPort(String),
    /// A host that is neither an IP address nor a host name.
    #[error("bad host '{0}'")]
    BadHost(String),
    /// A `%` not followed by two hex digits.
    #[error("bad percent-encoding in '{0}'")]
    BadEncoding(String),
    /// A query parameter this client does not understand.
    #[error("unknown query parameter '{0}'")]
    UnknownParam(String),
    /// A bad export name.
    #[error("bad export name: {0}")]
    BadExportName(&'static str),
    /// Something else the URI may not hold.
    #[error("{0}")]
    Invalid(&'static str),
    /// Neither an IP address, a socket path nor a URI.
    #[error(
        "'{0}' is not an IPv4 or IPv6 address, a UNIX socket path (starting with /) \
         or an NBD URI (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH)"
    )]
    NotAddress(String),
}

impl NbdUri {
    /// Parses an NBD URI.
    ///
    /// # Errors
    ///
    /// [`UriError`] saying what is wrong (see the module documentation).
    pub fn parse(text: &str) -> Result<NbdUri, UriError> {
        let (scheme, rest) = text.split_once("://").ok_or(UriError::NotUri)?;
        let scheme = scheme.to_ascii_lowercase();
        let (unix, tls) = match scheme.as_str() {
            "nbd" => (false, false),
            "nbd+unix" => (true, false),
            "nbds" => (false, true),
            "nbds+unix" => (true, true),
            _ => return Err(UriError::UnknownScheme(scheme)),
        };
        if rest.contains('#') {
            return Err(UriError::Invalid("an NBD URI has no fragment (#...)"));
        }
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        let export_name = export_name(path)?;
        let Params { socket, tls } = params(query, unix, tls)?;
        // userinfo only serves TLS with pre-shared keys, which is refused.
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let transport = if unix {
            if !hostport.is_empty() {
                return Err(UriError::Invalid(
                    "nbd+unix:// takes no host (nbd+unix:///EXPORT?socket=PATH)",
                ));
            }
            Transport::Unix(socket.ok_or(UriError::MissingSocket)?)
        } else {
            let (host, port) = host_port(hostport)?;
            Transport::Tcp { host, port }
        };
        Ok(NbdUri {
            transport,
            export_name,
            tls,
        })
    }
}

impl NbdUri {
    /// The URI as text that [`NbdUri::parse`] reads back to the same value,
    /// the export name and socket path percent-encoded (so it is one line
    /// whatever they hold).
    pub fn encode(&self) -> String {
        let s = if self.tls.is_some() { "s" } else { "" };
        let mut out = match &self.transport {
            Transport::Tcp { host, port } => format!("nbd{s}://{host}:{port}/"),
            Transport::Unix(_) => format!("nbd{s}+unix:///"),
        };
        percent_encode(self.export_name.as_bytes(), &mut out);
        let mut sep = '?';
        let mut param = |out: &mut String, key: &str, value: &[u8]| {
            out.push(sep);
            out.push_str(key);
            out.push('=');
            percent_encode(value, out);
            sep = '&';
        };
        if let Transport::Unix(path) = &self.transport {
            param(&mut out, "socket", path.as_os_str().as_bytes());
        }
        if let Some(tls) = &self.tls {
            if let Some(dir) = &tls.certificates {
                param(&mut out, "tls-certificates", dir.as_os_str().as_bytes());
            }
            if let Some(name) = &tls.hostname {
                param(&mut out, "tls-hostname", name.as_bytes());
            }
        }
        out
    }
}

/// Appends `bytes`, with everything but unreserved characters and `/` as `%XX`.
fn percent_encode(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

impl fmt::Display for NbdUri {
    /// The URI again, with the export name and socket path as given (not
    /// percent-encoded: this is for messages).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.tls.is_some() { "s" } else { "" };
        match &self.transport {
            Transport::Tcp { host, port } => {
                write!(f, "nbd{s}://{host}:{port}/{}", self.export_name)
            }
            Transport::Unix(path) => write!(
                f,
                "nbd{s}+unix:///{}?socket={}",
                self.export_name,
                path.display()
            ),
        }
    }
}

/// The export name from a URI's path: without its leading `/`, decoded.
fn export_name(path: &str) -> Result<String, UriError> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    let bytes = percent_decode(raw)?;
    let name = String::from_utf8(bytes).map_err(|_| UriError::BadExportName("not UTF-8"))?;
    if name.contains('\0') {
        return Err(UriError::BadExportName("it holds a NUL"));
    }
    if name.len() > MAX_EXPORT_NAME {
        return Err(UriError::BadExportName("longer than 4096 bytes"));
    }
    Ok(name)
}

/// What a URI's query says.
struct Params {
    socket: Option<PathBuf>,
    tls: Option<UriTls>,
}

/// The `socket=` parameter (only for `nbd+unix`) and, for `nbds`, the TLS
/// ones; other parameters checked.
fn params(query: &str, unix: bool, tls: bool) -> Result<Params, UriError> {
    let mut socket = None;
    let mut settings = tls.then(UriTls::default);
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let key = String::from_utf8(percent_decode(key)?)
            .map_err(|_| UriError::UnknownParam(key.to_owned()))?;
        match key.as_str() {
            "socket" if !unix => {
                return Err(UriError::Invalid("socket= is only for nbd+unix:// URIs"));
            }
            "socket" if socket.is_some() => {
                return Err(UriError::Invalid("socket= is given twice"));
            }
            "socket" => {
                let path = percent_decode(value)?;
                match path.first() {
                    None => return Err(UriError::MissingSocket),
                    Some(0) => {
                        return Err(UriError::Invalid(
                            "abstract UNIX sockets (socket=%00...) are not supported",
                        ));
                    }
                    Some(_) if path.contains(&0) => {
                        return Err(UriError::Invalid("the socket path holds a NUL"));
                    }
                    Some(_) => socket = Some(PathBuf::from(OsString::from_vec(path))),
                }
            }
            key if key.starts_with("tls-") => {
                if let Some(settings) = &mut settings {
                    tls_param(settings, key, &percent_decode(value)?)?;
                }
                // Otherwise only meaningful once TLS is negotiated, which
                // nbd:// and nbd+unix:// never do.
            }
            _ => return Err(UriError::UnknownParam(key)),
        }
    }
    Ok(Params {
        socket,
        tls: settings,
    })
}

/// One `tls-` parameter of an `nbds://` URI.
fn tls_param(settings: &mut UriTls, key: &str, value: &[u8]) -> Result<(), UriError> {
    let text = || String::from_utf8_lossy(value).into_owned();
    match key {
        "tls-certificates" if value.is_empty() || value.contains(&0) => {
            Err(UriError::Invalid("tls-certificates= needs a directory"))
        }
        "tls-certificates" => {
            settings.certificates = Some(PathBuf::from(OsString::from_vec(value.to_vec())));
            Ok(())
        }
        "tls-hostname" if value.is_empty() => Err(UriError::Invalid("tls-hostname= needs a name")),
        "tls-hostname" => {
            settings.hostname = Some(text());
            Ok(())
        }
        "tls-type" if value.eq_ignore_ascii_case(b"x509") => Ok(()),
        "tls-type" => Err(UriError::Tls(
            "only tls-type=x509 is supported (certificates, not pre-shared keys)",
        )),
        "tls-verify-peer" if matches!(value, b"true" | b"1" | b"yes" | b"on") => Ok(()),
        "tls-verify-peer" => Err(UriError::Tls(
            "tls-verify-peer cannot be turned off: the server's certificate is always checked",
        )),
        _ => Err(UriError::UnknownParam(key.to_owned())),
    }
}

/// The host and port of an `nbd://` authority.
fn host_port(text: &str) -> Result<(Host, u16), UriError> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| UriError::BadHost(text.to_owned()))?;
        if inner.contains('%') {
            return Err(UriError::Invalid("IPv6 zone identifiers are not supported"));
        }
        let ip = inner
            .parse::<Ipv6Addr>()
            .map_err(|_| UriError::BadHost(text.to_owned()))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| UriError::BadHost(text.to_owned()))?,
            ),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        (reg_name(host)?, port)
    };
    let port = match port {
        None | Some("") => DEFAULT_PORT,
        Some(p) => p
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| p.parse::<u16>().ok())
            .flatten()
            .filter(|&p| p != 0)
            .ok_or_else(|| UriError::BadPort(p.to_owned()))?,
    };
    Ok((host, port))
}

/// An IPv4 address or a host name (empty: `localhost`).
fn reg_name(raw: &str) -> Result<Host, UriError> {
    let bad = || UriError::BadHost(raw.to_owned());
    let name = String::from_utf8(percent_decode(raw)?).map_err(|_| bad())?;
    if name.is_empty() {
        return Ok(Host::Name("localhost".to_owned()));
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if ok { Ok(Host::Name(name)) } else { Err(bad()) }
}

/// Decodes `%XX` escapes (and nothing else: `+` stays `+`).
fn percent_decode(text: &str) -> Result<Vec<u8>, UriError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| UriError::BadEncoding(text.to_owned()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// How `-l` (and the proxy's `-C`) names a server: an IP address (the port
/// given separately, as flexnbd-c), a UNIX socket path, or an NBD URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// An IP address literal, as flexnbd-c takes it (`0` and `[::1]` included).
    Ip(IpAddr),
    /// A UNIX socket path (starting with `/`).
    Unix(PathBuf),
    /// An NBD URI.
    Uri(NbdUri),
}

/// A [`ServerAddr`] that cannot be combined with the port option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortError {
    /// An IP address without a port.
    Missing,
    /// A port with a URI or a socket path, which carry their own.
    Unexpected,
}

impl ServerAddr {
    /// The server and export named by this address and the port option.
    ///
    /// # Errors
    ///
    /// [`PortError::Missing`] for an IP address without a port, and
    /// [`PortError::Unexpected`] for a port with a URI or socket path.
    pub fn with_port(self, port: Option<u16>) -> Result<NbdUri, PortError> {
        let transport = match (self, port) {
            (ServerAddr::Ip(ip), Some(port)) => Transport::Tcp {
                host: Host::Ip(ip),
                port,
            },
            (ServerAddr::Ip(_), None) => return Err(PortError::Missing),
            (ServerAddr::Unix(path), None) => Transport::Unix(path),
            (ServerAddr::Uri(uri), None) => return Ok(uri),
            (_, Some(_)) => return Err(PortError::Unexpected),
        };
        Ok(NbdUri {
            transport,
            export_name: String::new(),
            tls: None,
        })
    }
}

impl FromStr for ServerAddr {
    type Err = UriError;

    fn from_str(text: &str) -> Result<Self, UriError> {
        if text.starts_with('/') {
            Ok(ServerAddr::Unix(PathBuf::from(text)))
        } else if text.contains("://") {
            NbdUri::parse(text).map(ServerAddr::Uri)
        } else {
            parse_ip(text)
                .map(ServerAddr::Ip)
                .map_err(|_| UriError::NotAddress(text.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: Host, port: u16, name: &str) -> NbdUri {
        NbdUri {
            transport: Transport::Tcp { host, port },
            export_name: name.to_owned(),
            tls: None,
        }
    }

    fn name(n: &str) -> Host {
        Host::Name(n.to_owned())
    }

    #[test]
    fn the_specifications_export_name_examples() {
        let cases = [
            ("nbd://example.com/disk", "disk"),
            ("nbd://example.com/", ""),
            ("nbd://example.com", ""),
            ("nbd://example.com//disk", "/disk"),
            ("nbd://example.com/hello%20world", "hello world"),
        ];
        for (text, export) in cases {
            assert_eq!(
                NbdUri::parse(text).unwrap(),
                tcp(name("example.com"), DEFAULT_PORT, export),
                "{text}"
            );
        }
        assert_eq!(
            NbdUri::parse("nbd+unix:///disk?socket=sock").unwrap(),
            NbdUri {
                transport: Transport::Unix("sock".into()),
                export_name: "disk".into(),
                tls: None,
            }
        );
        assert_eq!(
            NbdUri::parse("nbd://example.com:10809/export").unwrap(),
            tcp(name("example.com"), 10809, "export")
        );
    }

    #[test]
    fn hosts_ports_and_ipv6_literals() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(
            NbdUri::parse("nbd://127.0.0.1:4000/").unwrap(),
            tcp(Host::Ip(v4), 4000, "")
        );
        assert_eq!(
            NbdUri::parse("nbd://[::1]:4000/x").unwrap(),
            tcp(Host::Ip(v6), 4000, "x")
        );
        assert_eq!(
            NbdUri::parse("nbd://[::1]").unwrap(),
            tcp(Host::Ip(v6), DEFAULT_PORT, "")
        );
        assert_eq!(
            NbdUri::parse("NBD://user@host:").unwrap(),
            tcp(name("host"), DEFAULT_PORT, "")
        );
        assert_eq!(
            NbdUri::parse("nbd:///").unwrap(),
            tcp(name("localhost"), DEFAULT_PORT, "")
        );
        for bad in ["nbd://h:0/", "nbd://h:65536/", "nbd://h:+1/", "nbd://h:x/"] {
            assert!(
                matches!(NbdUri::parse(bad), Err(UriError::BadPort(_))),
                "{bad}"
            );
        }
        for bad in [
            "nbd://[::1/",
            "nbd://[nope]/",
            "nbd://[::1]x/",
            "nbd://a b/",
        ] {
            assert!(
                matches!(NbdUri::parse(bad), Err(UriError::BadHost(_))),
                "{bad}"
            );
        }
        assert!(NbdUri::parse("nbd://[fe80::1%25eth0]/").is_err());
    }

    #[test]
    fn unix_sockets_need_socket_and_no_host() {
        let uri = NbdUri::parse("nbd+unix:///a%2Fb?socket=/run/x%20y.sock&tls-type=x509").unwrap();
        assert_eq!(uri.transport, Transport::Unix("/run/x y.sock".into()));
        assert_eq!(uri.export_name, "a/b");
        assert_eq!(
            NbdUri::parse("nbd+unix:///").unwrap_err(),
            UriError::MissingSocket
        );
        assert_eq!(
            NbdUri::parse("nbd+unix:///?socket=").unwrap_err(),
            UriError::MissingSocket
        );
        assert!(NbdUri::parse("nbd+unix://host/?socket=/s").is_err());
        assert!(NbdUri::parse("nbd+unix:///?socket=/s&socket=/t").is_err());
        assert!(NbdUri::parse("nbd+unix:///?socket=%00/abstract").is_err());
        assert!(NbdUri::parse("nbd://h/?socket=/s").is_err());
    }

    #[test]
    fn bad_schemes_params_and_names() {
        for bad in [
            "nbds://h/?tls-type=psk",
            "nbds://h/?tls-verify-peer=false",
            "nbds://h/?tls-psk-file=/k",
        ] {
            assert!(NbdUri::parse(bad).is_err(), "{bad}");
        }
        assert!(NbdUri::parse("nbds://h/?tls-certificates=").is_err());
        assert_eq!(
            NbdUri::parse("http://h/").unwrap_err(),
            UriError::UnknownScheme("http".into())
        );
        assert!(matches!(
            NbdUri::parse("nbd+vsock://2/"),
            Err(UriError::UnknownScheme(_))
        ));
        assert_eq!(NbdUri::parse("nbd:h").unwrap_err(), UriError::NotUri);
        assert_eq!(
            NbdUri::parse("nbd://h/?x-foo=1").unwrap_err(),
            UriError::UnknownParam("x-foo".into())
        );
        assert!(NbdUri::parse("nbd://h/?tls-verify-peer=0&tls-hostname=a").is_ok());
        assert!(NbdUri::parse("nbd://h/a#b").is_err());
        assert!(matches!(
            NbdUri::parse("nbd://h/%zz"),
            Err(UriError::BadEncoding(_))
        ));
        assert!(matches!(
            NbdUri::parse("nbd://h/%4"),
            Err(UriError::BadEncoding(_))
        ));
        assert!(NbdUri::parse("nbd://h/%ff").is_err());
        assert!(NbdUri::parse("nbd://h/a%00").is_err());
        let long = format!("nbd://h/{}", "x".repeat(MAX_EXPORT_NAME + 1));
        assert!(NbdUri::parse(&long).is_err());
        let max = format!("nbd://h/{}", "x".repeat(MAX_EXPORT_NAME));
        assert!(NbdUri::parse(&max).is_ok());
        // Multi-byte UTF-8, percent-encoded.
        assert_eq!(
            NbdUri::parse("nbd://h/caf%C3%A9").unwrap().export_name,
            "café"
        );
    }

    #[test]
    fn encode_reads_back_the_same() {
        for text in [
            "nbd://127.0.0.1:4000/",
            "nbd://[::1]:10809/a%20b%3Fc%23d%0A%25/e",
            "nbd+unix:///caf%C3%A9?socket=/run/x%20y%26z.sock",
            "nbd+unix:///?socket=rel/path",
        ] {
            let uri = NbdUri::parse(text).unwrap();
            assert_eq!(uri.encode(), text);
            assert_eq!(NbdUri::parse(&uri.encode()).unwrap(), uri);
        }
    }

    #[test]
    fn server_addresses_and_ports() {
        let ip: ServerAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(ip, ServerAddr::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(
            "[::1]".parse::<ServerAddr>().unwrap(),
            ServerAddr::Ip("::1".parse().unwrap())
        );
        assert_eq!(ip.clone().with_port(None), Err(PortError::Missing));
        assert_eq!(
            ip.with_port(Some(4000)).unwrap().to_string(),
            "nbd://127.0.0.1:4000/"
        );
        let path: ServerAddr = "/run/x.sock".parse().unwrap();
        assert_eq!(path.clone().with_port(Some(1)), Err(PortError::Unexpected));
        assert_eq!(
            path.with_port(None).unwrap().to_string(),
            "nbd+unix:///?socket=/run/x.sock"
        );
        let uri: ServerAddr = "nbd://[::1]:99/e".parse().unwrap();
        assert_eq!(uri.clone().with_port(Some(1)), Err(PortError::Unexpected));
        assert_eq!(uri.with_port(None).unwrap().to_string(), "nbd://[::1]:99/e");
        assert!(matches!(
            "example.com".parse::<ServerAddr>(),
            Err(UriError::NotAddress(_))
        ));
    }

    #[test]
    fn nbds_uris_carry_their_tls_settings_and_round_trip() {
        let uri = NbdUri::parse(
            "nbds://h:7/e?tls-certificates=/etc/pki/a%20b&tls-hostname=srv.example&tls-type=x509",
        )
        .unwrap();
        assert_eq!(
            uri.tls,
            Some(UriTls {
                certificates: Some("/etc/pki/a b".into()),
                hostname: Some("srv.example".into()),
            })
        );
        assert_eq!(NbdUri::parse(&uri.encode()).unwrap(), uri);
        assert_eq!(uri.to_string(), "nbds://h:7/e");
        let unix = NbdUri::parse("nbds+unix:///e?socket=/s").unwrap();
        assert_eq!(unix.tls, Some(UriTls::default()));
        assert_eq!(NbdUri::parse(&unix.encode()).unwrap(), unix);
        // Plain schemes ignore tls- parameters and never negotiate TLS.
        assert_eq!(NbdUri::parse("nbd://h/?tls-hostname=x").unwrap().tls, None);
        assert!("nbds://h".parse::<ServerAddr>().is_ok());
    }
}
