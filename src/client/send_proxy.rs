//! `--send-proxy v1|v2`: the PROXY protocol header a client sends first, so that tcpool can
//! test other PROXY receivers (HAProxy's `accept-proxy`, nginx's `proxy_protocol`, tcpool's
//! own `--proxy-protocol`). The header names the connection as it is: the client's own
//! address as the source, the server's as the destination. It goes in clear, before TLS.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use ppp::{v1, v2};

/// Which version of the header to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendProxy {
    /// Version 1: one text line, `PROXY TCP4 source destination sport dport`.
    V1,
    /// Version 2: binary, the 12-byte signature and the addresses.
    V2,
}

impl fmt::Display for SendProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendProxy::V1 => "v1",
            SendProxy::V2 => "v2",
        })
    }
}

impl SendProxy {
    /// The header for a connection from `source` to `destination`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if the two addresses are of different families, which no TCP
    /// connection has.
    pub fn header(self, source: SocketAddr, destination: SocketAddr) -> io::Result<Vec<u8>> {
        if source.is_ipv4() != destination.is_ipv4() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a PROXY header for {source} to {destination}: families differ"),
            ));
        }
        match self {
            SendProxy::V1 => Ok(v1::Addresses::from((source, destination))
                .to_string()
                .into_bytes()),
            SendProxy::V2 => v2::Builder::with_addresses(
                v2::Version::Two | v2::Command::Proxy,
                v2::Protocol::Stream,
                (source, destination),
            )
            .build(),
        }
    }

    /// Writes the header for `stream`'s connection to it, whole: it is the first thing on
    /// the connection, so a socket just connected takes it at once. A socket that does not
    /// (non-blocking, and full already) is an error rather than a header sent in part.
    ///
    /// # Errors
    ///
    /// The socket's addresses cannot be read, or it did not take the header whole.
    pub fn send(self, stream: &mut impl SocketLike) -> io::Result<()> {
        let header = self.header(stream.local_addr()?, stream.peer_addr()?)?;
        let n = stream.write(&header)?;
        if n < header.len() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "the socket took {n} of the PROXY header's {} bytes",
                    header.len()
                ),
            ));
        }
        Ok(())
    }
}

/// What [`SendProxy::send`] needs of a socket: std's and mio's `TcpStream` alike.
pub trait SocketLike: io::Write {
    /// This end's address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The other end's.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
}

impl SocketLike for std::net::TcpStream {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        std::net::TcpStream::local_addr(self)
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        std::net::TcpStream::peer_addr(self)
    }
}

impl SocketLike for mio::net::TcpStream {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        mio::net::TcpStream::local_addr(self)
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        mio::net::TcpStream::peer_addr(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::arrival::proxy::{Parsed, ProxyProtocol, parse};

    #[test]
    fn headers_read_back_as_the_addresses_they_name() {
        let pairs = [
            ("192.0.2.1:5000", "198.51.100.2:8900"),
            ("[2001:db8::1]:5000", "[2001:db8::2]:443"),
        ];
        for (source, destination) in pairs {
            let (source, destination) = (source.parse().unwrap(), destination.parse().unwrap());
            for (version, expected) in [
                (SendProxy::V1, ProxyProtocol::V1),
                (SendProxy::V2, ProxyProtocol::V2),
            ] {
                let header = version.header(source, destination).unwrap();
                match parse(expected, &header) {
                    Parsed::Header {
                        len, source: got, ..
                    } => {
                        assert_eq!(len, header.len(), "{version}");
                        assert_eq!(got, Some(source), "{version}");
                    }
                    other => panic!("{version}: {other:?}"),
                }
            }
        }
        let v1 = SendProxy::V1
            .header(
                "192.0.2.1:5000".parse().unwrap(),
                "198.51.100.2:8900".parse().unwrap(),
            )
            .unwrap();
        assert_eq!(v1, b"PROXY TCP4 192.0.2.1 198.51.100.2 5000 8900\r\n");
    }

    #[test]
    fn mixed_families_are_refused() {
        let e = SendProxy::V2
            .header("192.0.2.1:1".parse().unwrap(), "[::1]:2".parse().unwrap())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
