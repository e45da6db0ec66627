//! The PROXY protocol header (`--proxy-protocol v1|v2|any`): who the client really is when a
//! load balancer such as HAProxy connects on its behalf.
//!
//! HAProxy's `doc/proxy-protocol.txt` defines a header the balancer sends before the client's
//! first byte: text in version 1 (`PROXY TCP4 192.0.2.1 198.51.100.1 56324 8900\r\n`, at most
//! 107 bytes), binary in version 2 (a 12-byte signature, then a length). `ppp` parses both.
//! When the protocol is on, every connection must begin with a header of the configured
//! version — the server never guesses whether one is present — and a worker reads it before
//! the session's normal life begins: `read_header` peeks at what has arrived without
//! blocking, and consumes exactly the header once it is complete, so the bytes after it are
//! the client's first message, framed as if the header had never been there (it does not
//! set the line ending). A `LOCAL` header (a balancer's health check) or an `UNKNOWN`
//! family keeps the connection's own address; a `PROXY` header's source address becomes
//! the session's peer for `/list`, logs, `--allow` / `--deny` and metrics.
//!
//! The worker gives a header [`DEFAULT_PROXY_TIMEOUT`] (`--proxy-timeout`) to arrive; a
//! header that is late, malformed or of the wrong version ends the connection with a warning
//! and `tcpool_sessions_rejected_total{reason="proxy-header"}`.

use std::fmt;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::Duration;

use ppp::PartialResult;
use ppp::{HeaderResult, v1, v2};

/// The default `--proxy-timeout`.
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most bytes a header may take before it is called malformed (a version 2 header with
/// a few TLVs is a few hundred bytes; version 1 is at most 107).
pub const MAX_HEADER: usize = 4096;

/// Which PROXY header versions the server expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// Text headers only.
    V1,
    /// Binary headers only.
    V2,
    /// Either, told apart by their first bytes.
    Any,
}

impl fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
            ProxyProtocol::Any => "any",
        })
    }
}

/// What the bytes received so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A header may yet complete: wait for more bytes.
    Incomplete,
    /// A complete header of `len` bytes; `source` is the original client (`None` for
    /// `LOCAL` or an unknown family: the connection's own address stands).
    Header {
        /// Bytes the header takes.
        len: usize,
        /// The original client.
        source: Option<SocketAddr>,
        /// Version 2's `PP2_TYPE_SSL`: the client spoke TLS to the balancer, which ended it
        /// (HAProxy's `send-proxy-v2-ssl` and `-ssl-cn`).
        tls: Option<ProxiedTls>,
    },
    /// Not a header this server accepts; why.
    Malformed(String),
}

/// What a balancer that ended the client's TLS says of it (`PP2_TYPE_SSL` and its sub-TLVs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxiedTls {
    /// `PP2_SUBTYPE_SSL_VERSION`: `TLSv1.3`.
    pub version: Option<String>,
    /// `PP2_SUBTYPE_SSL_CIPHER`: `TLS_AES_256_GCM_SHA384`.
    pub cipher: Option<String>,
    /// `PP2_SUBTYPE_SSL_CN`: the client certificate's common name.
    pub cn: Option<String>,
    /// The client presented a certificate on this connection and the balancer verified it
    /// (`PP2_CLIENT_CERT_CONN` set and `verify` 0).
    pub verified: bool,
}

impl ProxiedTls {
    /// Reads the value of a `PP2_TYPE_SSL` TLV: client flags (1 byte), verify (4), then
    /// sub-TLVs. `None` if it is cut short.
    fn read(value: &[u8]) -> Option<Self> {
        const PP2_CLIENT_SSL: u8 = 0x01;
        const PP2_CLIENT_CERT_CONN: u8 = 0x02;
        let (&client, rest) = value.split_first()?;
        let verify = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        let mut tls = ProxiedTls {
            verified: client & PP2_CLIENT_SSL != 0
                && client & PP2_CLIENT_CERT_CONN != 0
                && verify == 0,
            ..ProxiedTls::default()
        };
        let mut sub = &rest[4..];
        while !sub.is_empty() {
            let kind = sub[0];
            let len = usize::from(u16::from_be_bytes(sub.get(1..3)?.try_into().ok()?));
            let text = String::from_utf8_lossy(sub.get(3..3 + len)?).into_owned();
            match kind {
                0x21 => tls.version = Some(text),
                0x22 => tls.cn = Some(text),
                0x23 => tls.cipher = Some(text),
                _ => {}
            }
            sub = &sub[3 + len..];
        }
        Some(tls)
    }
}

/// The first bytes of every version 2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The longest version 1 header, `\r\n` included.
const V1_MAX: usize = 107;

/// Parses the start of a connection's input as a header of `expected`'s versions.
pub fn parse(expected: ProxyProtocol, input: &[u8]) -> Parsed {
    let v2 = match expected {
        ProxyProtocol::V1 => false,
        ProxyProtocol::V2 => true,
        // The signature's first byte, `\r`, can never start a version 1 header.
        ProxyProtocol::Any => input.first() == Some(&V2_SIGNATURE[0]),
    };
    let result = if v2 {
        HeaderResult::V2(v2::Header::try_from(input))
    } else {
        // A version 1 header is one line: `ppp` is given the whole line or nothing, so a
        // line cut short is never read as a complete one.
        let window = &input[..input.len().min(V1_MAX)];
        match memchr::memchr(b'\n', window) {
            Some(end) => HeaderResult::V1(v1::Header::try_from(&input[..=end])),
            None if window.len() < V1_MAX
                && b"PROXY ".starts_with(&window[..window.len().min(6)]) =>
            {
                return Parsed::Incomplete;
            }
            None => return Parsed::Malformed("not a PROXY v1 header line".into()),
        }
    };
    if result.is_incomplete() {
        return if input.len() >= MAX_HEADER {
            Parsed::Malformed(format!("no complete header in {MAX_HEADER} bytes"))
        } else if v2 {
            Parsed::Incomplete
        } else {
            Parsed::Malformed("not a complete PROXY v1 header line".into())
        };
    }
    match result {
        HeaderResult::V1(Ok(header)) => Parsed::Header {
            tls: None,
            len: header.header.len(),
            source: match header.addresses {
                v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(header)) => Parsed::Header {
            tls: header
                .tlvs()
                .flatten()
                .find(|tlv| tlv.kind == 0x20)
                .and_then(|tlv| ProxiedTls::read(&tlv.value)),
            len: header.len(),
            source: match (header.command, header.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                (_, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                _ => None,
            },
        },
        HeaderResult::V1(Err(e)) => Parsed::Malformed(format!("not a PROXY v1 header: {e}")),
        HeaderResult::V2(Err(e)) => Parsed::Malformed(format!("not a PROXY v2 header: {e}")),
    }
}

/// Where reading a connection's header stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Not all of it has arrived; the poller reports the next bytes.
    Pending,
    /// Read and consumed; the original client, if the header named one, and what the
    /// balancer says of the client's TLS, if it ended it.
    Done(Option<SocketAddr>, Option<ProxiedTls>),
    /// Not a header this server accepts, or the peer closed first; why.
    Refused(String),
}

/// Looks at what `stream` (non-blocking) has received and consumes the header once it is
/// complete, leaving whatever follows it unread. `scratch` must hold [`MAX_HEADER`] bytes.
pub(crate) fn read_header(
    stream: &mut mio::net::TcpStream,
    expected: ProxyProtocol,
    scratch: &mut [u8],
) -> io::Result<Step> {
    let scratch = &mut scratch[..MAX_HEADER];
    let n = loop {
        match stream.peek(scratch) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Pending),
            Err(e) => return Err(e),
        }
    };
    if n == 0 {
        return Ok(Step::Refused("closed before its PROXY header".into()));
    }
    match parse(expected, &scratch[..n]) {
        Parsed::Incomplete => Ok(Step::Pending),
        Parsed::Malformed(why) => Ok(Step::Refused(why)),
        Parsed::Header { len, source, tls } => {
            // The bytes are in the socket's buffer already: this read takes them at once.
            let mut taken = 0;
            while taken < len {
                match stream.read(&mut scratch[taken..len]) {
                    Ok(0) => return Ok(Step::Refused("closed inside its PROXY header".into())),
                    Ok(k) => taken += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(Step::Done(source, tls))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(local: bool) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(if local { 0x20 } else { 0x21 });
        h.push(0x11); // TCP over IPv4
        h.extend_from_slice(&12u16.to_be_bytes());
        h.extend_from_slice(&[192, 0, 2, 7, 127, 0, 0, 1]);
        h.extend_from_slice(&40000u16.to_be_bytes());
        h.extend_from_slice(&8900u16.to_be_bytes());
        h
    }

    #[test]
    fn v1_header_names_the_client_and_its_length() {
        let line = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 8900\r\nhello";
        let want = Parsed::Header {
            len: line.len() - 5,
            source: Some("192.0.2.7:40000".parse().unwrap()),
            tls: None,
        };
        assert_eq!(parse(ProxyProtocol::V1, line), want);
        assert_eq!(parse(ProxyProtocol::Any, line), want);
        let v6 = b"PROXY TCP6 2001:db8::7 ::1 40000 8900\r\n";
        assert_eq!(
            parse(ProxyProtocol::V1, v6),
            Parsed::Header {
                len: v6.len(),
                source: Some("[2001:db8::7]:40000".parse().unwrap()),
                tls: None,
            }
        );
        assert_eq!(
            parse(ProxyProtocol::V1, b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                source: None,
                tls: None,
            }
        );
    }

    #[test]
    fn partial_headers_wait_and_wrong_ones_are_refused() {
        let line = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 8900\r\n";
        for cut in 1..line.len() {
            assert_eq!(parse(ProxyProtocol::V1, &line[..cut]), Parsed::Incomplete);
        }
        let v2 = v2_header(false);
        for cut in 1..v2.len() {
            assert_eq!(
                parse(ProxyProtocol::V2, &v2[..cut]),
                Parsed::Incomplete,
                "{cut}"
            );
        }
        for (mode, bad) in [
            (ProxyProtocol::V1, &b"hello\n"[..]),
            (ProxyProtocol::Any, b"GET / HTTP/1.0\r\n"),
            (ProxyProtocol::V1, b"PROXY TCP4 300.0.0.1 127.0.0.1 1 2\r\n"),
            (ProxyProtocol::V2, line),
            (ProxyProtocol::V1, &v2),
        ] {
            assert!(
                matches!(parse(mode, bad), Parsed::Malformed(_)),
                "{mode} {bad:?}"
            );
        }
    }

    #[test]
    fn v2_proxy_and_local_headers() {
        let mut input = v2_header(false);
        let len = input.len();
        input.extend_from_slice(b"after");
        let want = Parsed::Header {
            len,
            source: Some("192.0.2.7:40000".parse().unwrap()),
            tls: None,
        };
        assert_eq!(parse(ProxyProtocol::V2, &input), want);
        assert_eq!(parse(ProxyProtocol::Any, &input), want);
        assert_eq!(
            parse(ProxyProtocol::Any, &v2_header(true)),
            Parsed::Header {
                len,
                source: None,
                tls: None
            }
        );
    }

    #[test]
    fn a_balancer_that_ended_tls_says_so_in_tlvs() {
        // PP2_TYPE_SSL: client SSL | CERT_CONN | CERT_SESS, verify 0, version, CN, cipher.
        let mut ssl = vec![0x07, 0, 0, 0, 0];
        for (kind, text) in [
            (0x21u8, &b"TLSv1.3"[..]),
            (0x22, b"alice"),
            (0x23, b"TLS_AES_256_GCM_SHA384"),
        ] {
            ssl.push(kind);
            ssl.extend_from_slice(&(text.len() as u16).to_be_bytes());
            ssl.extend_from_slice(text);
        }
        let mut header = v2_header(false);
        let addresses = u16::from_be_bytes([header[14], header[15]]);
        let tlv_len = 3 + ssl.len() as u16;
        header[14..16].copy_from_slice(&(addresses + tlv_len).to_be_bytes());
        header.push(0x20);
        header.extend_from_slice(&(ssl.len() as u16).to_be_bytes());
        header.extend_from_slice(&ssl);
        let Parsed::Header { len, tls, .. } = parse(ProxyProtocol::V2, &header) else {
            panic!("not read");
        };
        assert_eq!(len, header.len());
        let tls = tls.expect("the SSL TLV");
        assert_eq!(tls.version.as_deref(), Some("TLSv1.3"));
        assert_eq!(tls.cn.as_deref(), Some("alice"));
        assert_eq!(tls.cipher.as_deref(), Some("TLS_AES_256_GCM_SHA384"));
        assert!(tls.verified);
        // A value cut short is no TLS at all, and never a panic.
        for cut in 0..ssl.len() {
            let _ = ProxiedTls::read(&ssl[..cut]);
        }
        assert_eq!(ProxiedTls::read(&ssl[..3]), None);
    }
}
