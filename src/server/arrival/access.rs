//! Who may connect: `--allow CIDR` and `--deny CIDR`, IPv4 and IPv6.
//!
//! A client matching any deny rule is denied; when any allow rule is given, a client must
//! match one of them. Addresses are compared in their canonical form, so an IPv4 client of a
//! dual-stack listener (`::ffff:10.0.0.1`) matches `10.0.0.0/8`. The acceptor asks before
//! registering a session; behind a PROXY header the worker asks about the original client
//! once the header is read. A denied client is closed at once without a reply.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address block: an address and how many leading bits of it must match (`10.0.0.0/8`,
/// `::1/128`). A bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    ip: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block. An IPv4-mapped IPv6 address is read as the IPv4
    /// address it is; an IPv4 address is in an IPv6 block that holds its IPv4-mapped form
    /// (`::/0` and `::ffff:0:0/96` hold every IPv4 client), and an IPv6 address is never in
    /// an IPv4 block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.ip, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V4(ip)) => same_prefix(
                u128::from(net),
                u128::from(ip.to_ipv6_mapped()),
                128,
                self.prefix,
            ),
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

fn same_prefix(net: u128, ip: u128, bits: u8, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (net >> shift) == (ip >> shift)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// Why a block could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CidrError {}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| CidrError(format!("{addr:?} is not an IP address")))?;
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= bits)
                .ok_or_else(|| CidrError(format!("prefix {p:?} must be 0 to {bits}")))?,
        };
        // An IPv4-mapped block (`::ffff:10.0.0.0/104`) is the IPv4 block it maps.
        let (ip, prefix) = match ip.to_canonical() {
            IpAddr::V4(v4) if ip.is_ipv6() && prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
            _ => (ip, prefix),
        };
        if masked(ip, prefix) != ip {
            return Err(CidrError(format!(
                "{s} has bits set past its prefix; did you mean {}/{prefix}?",
                masked(ip, prefix)
            )));
        }
        Ok(Cidr { ip, prefix })
    }
}

fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// The `--allow` and `--deny` rules; empty, everyone may connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// When not empty, a client must be in one of these blocks.
    pub allow: Vec<Cidr>,
    /// A client in any of these blocks is denied, even one that is also allowed.
    pub deny: Vec<Cidr>,
}

impl Access {
    /// Whether a client from `ip` may connect.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|c| c.contains(ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip))
    }

    /// Whether there is any rule at all.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_match_their_prefix_and_family() {
        assert!(cidr("10.0.0.0/8").contains(ip("10.200.1.2")));
        assert!(!cidr("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(cidr("0.0.0.0/0").contains(ip("192.0.2.1")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!cidr("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(cidr("::1").contains(ip("::1")));
        assert!(!cidr("::1").contains(ip("::2")));
        // An IPv4 client of a dual-stack listener is its IPv4 address.
        assert!(cidr("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
        assert!(cidr("::ffff:127.0.0.1").contains(ip("127.0.0.1")));
        // Every address is in `::/0`, an IPv4 client too, whichever way it comes.
        assert!(cidr("::/0").contains(ip("127.0.0.1")));
        assert!(cidr("::/0").contains(ip("::ffff:192.0.2.1")));
        assert!(cidr("::ffff:0:0/96").contains(ip("192.0.2.1")));
        assert!(!cidr("2001:db8::/32").contains(ip("192.0.2.1")));
        assert!(!cidr("::/96").contains(ip("192.0.2.1")));
        assert_eq!(cidr("::ffff:10.0.0.0/104"), cidr("10.0.0.0/8"));
        assert_eq!(cidr("::ffff:10.0.0.1"), cidr("10.0.0.1"));
    }

    #[test]
    fn bad_blocks_are_refused_with_a_reason() {
        for (bad, why) in [
            ("10.0.0.0/33", "prefix"),
            ("::/129", "prefix"),
            ("10.0.0.0/-1", "prefix"),
            ("10.0.0/8", "not an IP"),
            ("localhost", "not an IP"),
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
        ] {
            let err = bad.parse::<Cidr>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("::1").to_string(), "::1/128");
    }

    #[test]
    fn deny_wins_and_allow_narrows() {
        let open = Access::default();
        assert!(open.is_open() && open.permits(ip("192.0.2.1")));
        let access = Access {
            allow: vec![cidr("127.0.0.0/8"), cidr("::1")],
            deny: vec![cidr("127.0.0.2")],
        };
        assert!(access.permits(ip("127.0.0.1")));
        assert!(access.permits(ip("::1")));
        assert!(!access.permits(ip("127.0.0.2")));
        assert!(!access.permits(ip("192.0.2.1")));
        let deny_only = Access {
            allow: vec![],
            deny: vec![cidr("::/0")],
        };
        assert!(!deny_only.permits(ip("::1")));
        // `::/0` is every address, IPv4 clients included.
        assert!(!deny_only.permits(ip("127.0.0.1")));
        assert!(!deny_only.permits(ip("::ffff:127.0.0.1")));
        let allow_all = Access {
            allow: vec![cidr("::/0")],
            deny: vec![],
        };
        assert!(allow_all.permits(ip("127.0.0.1")));
        assert!(allow_all.permits(ip("::ffff:127.0.0.1")));
        assert!(allow_all.permits(ip("::1")));
    }
}
