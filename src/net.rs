//! Address parsing and access control lists, as the C flexnbd reads them.
//!
//! No sockets are opened here. Addresses follow flexnbd-c
//! section 2.1 (IPv4 or IPv6 text, optionally in brackets, `0` meaning
//! 0.0.0.0, no DNS) except that trailing garbage is an error rather than
//! silently ignored. ACL entries are `ADDRESS[/MASK]` (section 9).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Text that is not an IPv4 or IPv6 address (host names are not looked up).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an IPv4 or IPv6 address (host names are not looked up)")]
pub struct ParseIpError(pub String);

/// Text that is not an ACL entry, `ADDRESS[/MASK]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseAclError {
    /// The address part is not an IP address.
    #[error("bad ACL entry '{0}'")]
    Address(String),
    /// The mask is not a number of bits from 1 to the address's length.
    #[error("bad ACL entry '{entry}': mask must be 1..{max}")]
    Mask {
        /// The whole entry.
        entry: String,
        /// The address's length in bits: 32 or 128.
        max: u8,
    },
}

/// Parses an IP address as flexnbd-c does: `0` is 0.0.0.0, `[::1]` is ::1.
///
/// # Errors
///
/// [`ParseIpError`] when the text is not an IPv4 or IPv6 address.
pub fn parse_ip(text: &str) -> Result<IpAddr, ParseIpError> {
    let inner = text
        .strip_prefix('[')
        .map_or(text, |rest| rest.strip_suffix(']').unwrap_or(rest));
    if inner == "0" {
        return Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }
    inner
        .parse::<IpAddr>()
        .map_err(|_| ParseIpError(text.to_owned()))
}

/// One access-control entry: an address and the number of leading bits that must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclEntry {
    addr: IpAddr,
    bits: u8,
}

impl AclEntry {
    /// Whether `client` lies inside this entry.
    ///
    /// An IPv4 address and its IPv4-mapped IPv6 form (`::ffff:a.b.c.d`, as
    /// IPv4 clients of a `-l ::` listener appear) are the same client: an
    /// IPv4 entry matches both, and so does its mapped form. Otherwise the
    /// families never match (`::1` is not 127.0.0.1).
    pub fn contains(&self, client: IpAddr) -> bool {
        // Compare in IPv6 space, where an IPv4 /n is the mapped /(96+n):
        // unlike `to_canonical` on both sides, this also gives the right
        // answer for IPv6 entries whose mask is shorter than the mapped prefix.
        let (net, bits) = as_ipv6(self.addr, self.bits);
        let (ip, _) = as_ipv6(client, 0);
        prefix_eq(&net.octets(), &ip.octets(), bits)
    }
}

/// `addr` as an IPv6 address (IPv4 mapped), with a mask of `bits` adjusted to match.
fn as_ipv6(addr: IpAddr, bits: u8) -> (Ipv6Addr, u8) {
    match addr {
        IpAddr::V4(v4) => (v4.to_ipv6_mapped(), bits + 96),
        IpAddr::V6(v6) => (v6, bits),
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

impl FromStr for AclEntry {
    type Err = ParseAclError;

    fn from_str(text: &str) -> Result<Self, ParseAclError> {
        let (addr_text, mask_text) = match text.split_once('/') {
            Some((a, m)) => (a, Some(m)),
            None => (text, None),
        };
        let addr = parse_ip(addr_text).map_err(|_| ParseAclError::Address(text.to_owned()))?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match mask_text {
            None => max,
            Some(m) => match m.parse::<u8>() {
                Ok(b) if (1..=max).contains(&b) => b,
                _ => {
                    return Err(ParseAclError::Mask {
                        entry: text.to_owned(),
                        max,
                    });
                }
            },
        };
        Ok(AclEntry { addr, bits })
    }
}

impl fmt::Display for AclEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

/// An access control list together with the start-up default-deny setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<AclEntry>,
    default_deny: bool,
}

impl Acl {
    /// A list of entries; `default_deny` decides only when the list is empty.
    pub fn new(entries: Vec<AclEntry>, default_deny: bool) -> Self {
        Acl {
            entries,
            default_deny,
        }
    }

    /// The same default-deny setting with a new list of entries.
    pub fn with_entries(&self, entries: Vec<AclEntry>) -> Self {
        Acl {
            entries,
            default_deny: self.default_deny,
        }
    }

    /// Whether a client at `client` may connect.
    pub fn allows(&self, client: IpAddr) -> bool {
        if self.entries.is_empty() {
            return !self.default_deny;
        }
        self.entries.iter().any(|e| e.contains(client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_addresses_like_flexnbd_c() {
        assert_eq!(parse_ip("0").unwrap(), ip("0.0.0.0"));
        assert_eq!(parse_ip("[::1]").unwrap(), ip("::1"));
        assert_eq!(parse_ip("127.0.0.1").unwrap(), ip("127.0.0.1"));
        assert!(parse_ip("localhost").is_err());
        assert!(parse_ip("1.2.3.4foo").is_err());
        assert!(parse_ip("").is_err());
        assert_eq!(
            parse_ip("localhost").unwrap_err().to_string(),
            "'localhost' is not an IPv4 or IPv6 address (host names are not looked up)"
        );
    }

    /// Asserts, for each (entry, addresses it contains, addresses it does
    /// not), what [`AclEntry::contains`] says.
    #[track_caller]
    fn assert_matches(cases: &[(&str, &[&str], &[&str])]) {
        for &(entry, inside, outside) in cases {
            let e: AclEntry = entry.parse().unwrap();
            for addr in inside {
                assert!(e.contains(ip(addr)), "{entry} should contain {addr}");
            }
            for addr in outside {
                assert!(!e.contains(ip(addr)), "{entry} should not contain {addr}");
            }
        }
    }

    #[test]
    fn acl_entry_masks() {
        assert_matches(&[
            ("127.0.0.1/24", &["127.0.0.200"], &["127.0.1.1"]),
            ("10.1.2.3", &["10.1.2.3"], &["10.1.2.4"]),
            ("fe80::/10", &["fe80::1"], &["fec0::1"]),
            ("10.0.0.0/9", &["10.127.0.1"], &["10.128.0.1"]),
        ]);
    }

    // Regression: issue 10 item 4, `serve -l :: ... 127.0.0.1` refused 127.0.0.1.
    #[test]
    fn ipv4_entries_match_mapped_clients_and_the_reverse() {
        // Only the mapped form is an IPv4 address: `::1` and the deprecated
        // compatible form `::a.b.c.d` are not, and other IPv6 never match.
        assert_matches(&[
            (
                "127.0.0.1",
                &["::ffff:127.0.0.1", "127.0.0.1"],
                &["::ffff:127.0.0.2", "::1", "::127.0.0.1"],
            ),
            (
                "::ffff:127.0.0.1",
                &["127.0.0.1", "::ffff:127.0.0.1"],
                &["127.0.0.2"],
            ),
            ("10.0.0.0/8", &["::ffff:10.200.0.1"], &["::ffff:11.0.0.1"]),
            ("::ffff:10.0.0.0/104", &["10.1.2.3"], &["11.1.2.3"]),
            ("::1", &[], &["127.0.0.1", "0.0.0.1"]),
            ("fe80::/10", &[], &["127.0.0.1"]),
        ]);
    }

    #[test]
    fn rejects_bad_entries() {
        for bad in [
            "10.0.0.0/0",
            "10.0.0.0/33",
            "::1/129",
            "x",
            "1.2.3.4/",
            "1.2.3.4/a",
            "/8",
        ] {
            assert!(bad.parse::<AclEntry>().is_err(), "{bad}");
        }
        let message = |text: &str| text.parse::<AclEntry>().unwrap_err().to_string();
        assert_eq!(message("x/8"), "bad ACL entry 'x/8'");
        assert_eq!(
            message("::1/129"),
            "bad ACL entry '::1/129': mask must be 1..128"
        );
        assert_eq!(
            message("1.2.3.4/"),
            "bad ACL entry '1.2.3.4/': mask must be 1..32"
        );
    }

    #[test]
    fn empty_list_follows_default_deny() {
        assert!(Acl::new(vec![], false).allows(ip("1.2.3.4")));
        assert!(!Acl::new(vec![], true).allows(ip("1.2.3.4")));
        let listed = Acl::new(vec!["1.2.3.4".parse().unwrap()], false);
        assert!(listed.allows(ip("1.2.3.4")) && !listed.allows(ip("1.2.3.5")));
    }
}
