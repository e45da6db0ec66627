//! Where a client connects: one parser and resolver for every `HOST:PORT` the clients take.
//!
//! The forms, as `nc` and `curl` read them:
//!
//! | written | means |
//! | --- | --- |
//! | `8901` | port 8901 on 127.0.0.1 |
//! | `example.org`, `127.0.0.2`, `::1` | that host on port [`DEFAULT_PORT`] |
//! | `localhost:8901`, `127.0.0.1:8901` | that host and port |
//! | `[::1]:8901`, `[::1]` | an IPv6 address, with or without a port |
//!
//! Two forms are refused because a typo in them reaches a host nobody wrote: IPv4 shorthand
//! (`127.1`, `1.2.3`, `0x7f000001`), which the system resolver would read as `127.0.0.1` and
//! `1.2.0.3`, and a bare IPv6 address ending in `:DIGITS` (`::1:9001`), which may be an
//! address and a port; write all four parts, or the brackets.
//!
//! A name is resolved to every address it has, and [`connect`] tries them in the resolver's
//! order until one accepts, so `localhost` reaches a server listening on `::1` as well as one
//! on `127.0.0.1`. Parsing does no I/O; resolving and connecting do, and leave what a client
//! does with the connection to the client.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs as _};
use std::str::FromStr;
use std::time::Duration;

use crate::DEFAULT_PORT;

/// A host and port to connect to, as written by the user; [`Target::resolve`] turns it into
/// addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Default for Target {
    /// 127.0.0.1 on [`DEFAULT_PORT`], the seed's address.
    fn default() -> Self {
        Target {
            host: Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            port: DEFAULT_PORT,
        }
    }
}

/// Why a target was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an address: {} (expected PORT, HOST, HOST:PORT or [IPv6]:PORT)",
            self.input, self.reason
        )
    }
}

impl std::error::Error for ParseError {}

/// Parses `PORT`, `HOST`, `HOST:PORT`, `[IPv6]:PORT`, `[IPv6]` or a bare IPv6 address.
///
/// # Errors
///
/// When the text fits none of the forms, or a port is 0 or above 65535.
///
/// # Examples
///
/// ```
/// use tcpool::client::addr;
///
/// assert_eq!(addr::parse("9001")?.to_string(), "127.0.0.1:9001");
/// assert_eq!(addr::parse("::1")?.to_string(), "[::1]:8900");
/// assert_eq!(addr::parse("localhost:9001")?.to_string(), "localhost:9001");
/// assert!(addr::parse("::1:9001:").is_err());
/// # Ok::<(), addr::ParseError>(())
/// ```
pub fn parse(text: &str) -> Result<Target, ParseError> {
    let fail = |reason| ParseError {
        input: text.to_owned(),
        reason,
    };
    if text.is_empty() {
        return Err(fail("it is empty"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let port = parse_port(text).map_err(fail)?;
        return Ok(Target {
            port,
            ..Target::default()
        });
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| fail("a '[' without its ']'"))?;
        let ip = inside
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| fail("only an IPv6 address goes inside [ ]"))?;
        let port = match after {
            "" => DEFAULT_PORT,
            _ => {
                let port = after
                    .strip_prefix(':')
                    .ok_or_else(|| fail("only :PORT may follow ']'"))?;
                parse_port(port).map_err(fail)?
            }
        };
        return Ok(Target {
            host: Host::Ip(IpAddr::V6(ip)),
            port,
        });
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        if ip.is_ipv6() && ends_in_a_port(text) {
            return Err(fail(
                "a bare IPv6 address ending in :DIGITS may mean a port: \
                 write [ADDRESS]:PORT, or [ADDRESS] for the default port",
            ));
        }
        return Ok(Target {
            host: Host::Ip(ip),
            port: DEFAULT_PORT,
        });
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => {
            return Err(fail(
                "an IPv6 address with a port is written [ADDRESS]:PORT",
            ));
        }
        Some((host, port)) => (host, parse_port(port).map_err(fail)?),
        None => (text, DEFAULT_PORT),
    };
    let host = match host.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(check_name(host).map_err(fail)?.to_owned()),
    };
    Ok(Target { host, port })
}

/// Whether a bare IPv6 address reads just as well as a shorter address and a port: `::1:9001`
/// is `::1` on port 9001 as much as the address `::1:9001`, so it is refused.
fn ends_in_a_port(text: &str) -> bool {
    text.rsplit_once(':').is_some_and(|(head, last)| {
        !last.is_empty()
            && last.bytes().all(|b| b.is_ascii_digit())
            && head.parse::<std::net::Ipv6Addr>().is_ok()
    })
}

/// Whether a name is one the resolver would read as an IPv4 address in `inet_aton`'s
/// shorthand (`127.1`, `1.2.3`, `0x7f000001`, `010.0.0.1`): every label a number, in decimal,
/// octal or hex. Such a name is refused rather than sent somewhere nobody wrote.
fn is_numeric_name(name: &str) -> bool {
    let numeric = |label: &str| {
        let digits = label
            .strip_prefix("0x")
            .or_else(|| label.strip_prefix("0X"))
            .unwrap_or(label);
        digits.bytes().all(|b| b.is_ascii_hexdigit())
            && (label.len() > digits.len() || label.bytes().all(|b| b.is_ascii_digit()))
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty() && name.split('.').all(numeric)
}

fn parse_port(text: &str) -> Result<u16, &'static str> {
    if text.is_empty() {
        return Err("the port is missing after ':'");
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the port is not a number");
    }
    match text.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be connected to"),
        Ok(port) => Ok(port),
        Err(_) => Err("the port is above 65535"),
    }
}

/// A host name as the resolver takes it: letters, digits, `-`, `_` and dots.
fn check_name(name: &str) -> Result<&str, &'static str> {
    if name.is_empty() {
        return Err("the host is missing before ':'");
    }
    if name.len() > 253 {
        return Err("the host name is longer than 253 characters");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.chars().all(allowed) {
        return Err("a host name has only letters, digits, '-', '_' and '.'");
    }
    if is_numeric_name(name) {
        return Err("not an IPv4 address: write all four parts, in decimal without leading zeros");
    }
    Ok(name)
}

impl FromStr for Target {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

impl fmt::Display for Target {
    /// The canonical form: `HOST:PORT`, an IPv6 address in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl Target {
    /// The host as given: a name, or an IP address's text (for TLS, the name to verify).
    pub fn host(&self) -> String {
        match &self.host {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(name) => name.clone(),
        }
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every address the target stands for, in the resolver's order and without repeats: one
    /// for an IP address, all of a name's.
    ///
    /// # Errors
    ///
    /// When a name cannot be resolved, or resolves to nothing.
    pub fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        let name = match &self.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(name) => name,
        };
        let mut addrs: Vec<SocketAddr> = Vec::new();
        let found = (name.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {name:?}: {e}")))?;
        for addr in found {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{name:?} resolves to no address"),
            ));
        }
        Ok(addrs)
    }

    /// Resolves the target and [`connect`]s to the first of its addresses that accepts.
    ///
    /// # Errors
    ///
    /// When resolving fails or no address accepts; the message names every address tried.
    pub fn connect(&self, timeout: Duration) -> io::Result<(TcpStream, SocketAddr)> {
        connect(&self.resolve()?, timeout)
    }
}

/// Tries each address in order, each for at most `timeout`, and returns the first connection
/// made and the address it went to.
///
/// # Errors
///
/// When no address accepts: the error has the last address's kind and names every address with
/// why it failed, such as `[::1]:8900: Connection refused, 127.0.0.1:8900: timed out`.
pub fn connect(addrs: &[SocketAddr], timeout: Duration) -> io::Result<(TcpStream, SocketAddr)> {
    let mut failures = Vec::new();
    let mut kind = io::ErrorKind::InvalidInput;
    for &addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok((stream, addr)),
            Err(e) => {
                kind = e.kind();
                let why = if kind == io::ErrorKind::TimedOut {
                    format!("no answer within {timeout:?}")
                } else {
                    e.to_string()
                };
                failures.push(format!("{addr}: {why}"));
            }
        }
    }
    if failures.is_empty() {
        failures.push("no address to try".to_owned());
    }
    Err(io::Error::new(kind, failures.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn shown(text: &str) -> String {
        parse(text).map_or_else(|e| format!("error: {e}"), |t| t.to_string())
    }

    #[test]
    fn a_bare_port_is_on_loopback() {
        assert_eq!(shown("19001"), "127.0.0.1:19001");
        assert_eq!(shown("1"), "127.0.0.1:1");
        assert_eq!(shown("65535"), "127.0.0.1:65535");
    }

    #[test]
    fn a_bare_host_gets_the_default_port() {
        assert_eq!(shown("127.0.0.1"), "127.0.0.1:8900");
        assert_eq!(shown("localhost"), "localhost:8900");
        assert_eq!(shown("::1"), "[::1]:8900");
        assert_eq!(shown("::"), "[::]:8900");
        assert_eq!(shown("[::1]"), "[::1]:8900");
        assert_eq!(shown("fe80::1:abcd"), "[fe80::1:abcd]:8900");
        assert_eq!(shown("2001:db8:0:0:0:0:0:1"), "[2001:db8::1]:8900");
        assert_eq!(shown("::ffff:127.0.0.1"), "[::ffff:127.0.0.1]:8900");
    }

    #[test]
    fn host_and_port() {
        assert_eq!(shown("127.0.0.1:9"), "127.0.0.1:9");
        assert_eq!(shown("localhost:9001"), "localhost:9001");
        assert_eq!(shown("[::1]:9001"), "[::1]:9001");
        assert_eq!(shown("my-host.example_1:80"), "my-host.example_1:80");
    }

    #[test]
    fn the_default_is_the_seed_address() {
        assert_eq!(Target::default().to_string(), "127.0.0.1:8900");
        assert_eq!(Target::default().port(), crate::DEFAULT_PORT);
    }

    #[test]
    fn bad_forms_say_why() {
        for (text, reason) in [
            ("", "empty"),
            ("0", "port 0"),
            ("65536", "above 65535"),
            ("99999999999999999999", "above 65535"),
            ("localhost:", "port is missing"),
            (":8900", "host is missing"),
            ("localhost:http", "not a number"),
            ("localhost:-1", "not a number"),
            ("::1:9001:", "[ADDRESS]:PORT"),
            ("[::1", "without its ']'"),
            ("[127.0.0.1]:80", "only an IPv6"),
            ("[::1]9001", "only :PORT"),
            ("[::1]:", "port is missing"),
            ("bad host:80", "only letters"),
            ("host/path", "only letters"),
        ] {
            let error = parse(text).expect_err(text).to_string();
            assert!(error.contains(reason), "{text:?}: {error}");
            assert!(error.contains("HOST:PORT"), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_bare_ipv6_ending_in_digits_is_refused_as_ambiguous() {
        for text in ["::1:9001", "fe80::1:2", "::1:1", "1:2:3::4:80"] {
            let error = parse(text).expect_err(text).to_string();
            assert!(error.contains("may mean a port"), "{text:?}: {error}");
            assert!(error.contains("[ADDRESS]:PORT"), "{text:?}: {error}");
        }
        assert_eq!(shown("[::1]:9001"), "[::1]:9001");
        assert_eq!(shown("[::1:9001]"), "[::1:9001]:8900");
    }

    #[test]
    fn ipv4_shorthand_is_refused_not_resolved() {
        for text in [
            "1.2.3",
            "127.1",
            "127.1:80",
            "1.2.3:9001",
            "10.1",
            "0x7f000001",
            "0x7f.1",
            "010.0.0.1",
            "127.000.000.001",
            "1.2.3.4.5",
            "1.2.3.",
        ] {
            let error = parse(text).expect_err(text).to_string();
            assert!(error.contains("write all four parts"), "{text:?}: {error}");
        }
        assert_eq!(shown("1.2.3.4"), "1.2.3.4:8900");
        assert_eq!(shown("3com.example"), "3com.example:8900");
        assert_eq!(shown("deadbeef:80"), "deadbeef:80");
        assert_eq!(shown("host.1"), "host.1:8900");
    }

    #[test]
    fn an_address_resolves_to_itself_only() {
        let addrs = parse("[::1]:7").unwrap().resolve().unwrap();
        assert_eq!(addrs, vec!["[::1]:7".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn localhost_resolves_to_loopback_addresses() {
        let addrs = parse("localhost:7").unwrap().resolve().unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 7));
    }

    #[test]
    fn connect_goes_on_past_a_refused_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let live = listener.local_addr().unwrap();
        // A port that was just free and is closed again refuses.
        let dead = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (_stream, used) = connect(&[dead, live], Duration::from_secs(5)).unwrap();
        assert_eq!(used, live);
        let error = connect(&[dead], Duration::from_secs(5)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
        assert!(error.to_string().contains(&dead.to_string()), "{error}");
        assert!(connect(&[], Duration::from_secs(1)).is_err());
    }
}
