//! Listeners: binding the `--bind` addresses, or taking those a service manager passed.
//!
//! Every listener gets the kernel backlog [`LISTEN_BACKLOG`] and `SO_REUSEADDR`, so a
//! restarted server binds at once. With several addresses and port 0, the first bind picks
//! the port and the others take the same one, so one port serves every address. An IPv6
//! wildcard (`--bind ::`) is dual-stack — IPv4 clients arrive as `::ffff:a.b.c.d` and are
//! shown as the IPv4 address they are — unless an IPv4 address is bound beside it, which
//! then owns IPv4 and leaves the IPv6 listener to IPv6 alone.
//!
//! With `--reuse-port` (`SO_REUSEPORT`) several processes listen on one port, each with its
//! own kernel queue; the kernel picks a queue for each new connection by its addresses.
//!
//! Under a service manager the sockets may be bound already: systemd's socket activation
//! (or `systemd-socket-activate`) passes them as descriptors 3, 4, ... with `LISTEN_FDS`
//! and `LISTEN_PID`, and [`inherited`] takes them (through `listenfd`) instead of binding.
//! Named `admin` in `LISTEN_FDNAMES` (`FileDescriptorName=admin`), one serves the admin
//! endpoint; named `tls`, one speaks TLS beside the others (`--tls-port`). A hand-over ([`handover`](crate::server::arrival::handover)) passes its sockets the same way,
//! without `LISTEN_PID`, which `listenfd` then does not check.
//!
//! What a listener's clients may do once accepted is the acceptor's concern.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// The listen socket's kernel backlog: how many finished handshakes the kernel queues before
/// `accept()` (std's fixed value is 128).
pub const LISTEN_BACKLOG: i32 = 1024;

/// Binds a listener on `addr` with the kernel backlog set to [`LISTEN_BACKLOG`] and
/// `SO_REUSEADDR`, so a restarted server can bind at once.
///
/// # Errors
///
/// The bind's error, such as the address being in use.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    bind_with(addr, None, &BindOptions::default())
}

/// How the `--bind` listeners are made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindOptions {
    /// `SO_REUSEPORT` (`--reuse-port`): other processes with it set may listen on the same
    /// address and port, and the kernel spreads new connections over all of them.
    pub reuse_port: bool,
}

/// Binds one listener per address in `ips`, all on `port`; with port 0 the first bind picks
/// the port for all of them. An IPv6 listener is IPv6-only when an IPv4 address is among
/// `ips`, dual-stack otherwise.
///
/// # Errors
///
/// `InvalidInput` for an empty list or the same address twice; otherwise the first bind
/// that fails, with the address it failed on.
pub fn bind_all(ips: &[IpAddr], port: u16) -> io::Result<Vec<TcpListener>> {
    bind_all_with(ips, port, &BindOptions::default())
}

/// As [`bind_all`], with `options`.
///
/// # Errors
///
/// As [`bind_all`].
pub fn bind_all_with(
    ips: &[IpAddr],
    port: u16,
    options: &BindOptions,
) -> io::Result<Vec<TcpListener>> {
    if ips.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no address to listen on",
        ));
    }
    for (i, ip) in ips.iter().enumerate() {
        if ips[..i].contains(ip) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{ip} is given twice"),
            ));
        }
    }
    let v6_only = ips.iter().any(IpAddr::is_ipv4);
    let mut port = port;
    let mut listeners = Vec::with_capacity(ips.len());
    for &ip in ips {
        let addr = SocketAddr::new(ip, port);
        let listener = bind_with(addr, ip.is_ipv6().then_some(v6_only), options)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        port = listener.local_addr()?.port();
        listeners.push(listener);
    }
    Ok(listeners)
}

fn bind_with(
    addr: SocketAddr,
    v6_only: Option<bool>,
    options: &BindOptions,
) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if options.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if let Some(only) = v6_only {
        socket.set_only_v6(only)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// The name `LISTEN_FDNAMES` gives the socket that serves the admin endpoint.
pub const ADMIN_FDNAME: &str = "admin";

/// The name `LISTEN_FDNAMES` gives a socket that speaks TLS beside plaintext ones
/// (`serve --tls-port`).
pub const TLS_FDNAME: &str = "tls";

/// The name `LISTEN_FDNAMES` gives the UDP echo's sockets (`--udp`), which a hand-over passes
/// on beside the listeners.
pub const UDP_FDNAME: &str = "udp";

/// Listening sockets a service manager passed (`LISTEN_FDS` for this process), in order.
#[derive(Debug, Default)]
pub struct Inherited {
    /// The sockets to serve.
    pub listeners: Vec<TcpListener>,
    /// The one named [`ADMIN_FDNAME`], if any.
    pub admin: Option<TcpListener>,
    /// Those named [`TLS_FDNAME`].
    pub tls: Vec<TcpListener>,
    /// The UDP echo's sockets, named [`UDP_FDNAME`] (a hand-over's).
    pub udp: Vec<std::net::UdpSocket>,
}

/// Takes the listening sockets passed by a service manager, if any; clears `LISTEN_FDS` and
/// `LISTEN_PID` so that no child takes them by mistake. Call it before starting threads.
///
/// # Errors
///
/// A passed descriptor that is not a listening TCP socket.
pub fn inherited() -> io::Result<Inherited> {
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut fds = listenfd::ListenFd::from_env();
    let mut found = Inherited::default();
    for i in 0..fds.len() {
        if names.get(i).is_some_and(|n| n == UDP_FDNAME) {
            let socket = fds.take_udp_socket(i).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("inherited descriptor {} is not a UDP socket: {e}", i + 3),
                )
            })?;
            if let Some(socket) = socket {
                nix::fcntl::fcntl(
                    &socket,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                )?;
                socket.set_nonblocking(true)?;
                found.udp.push(socket);
            }
            continue;
        }
        let Some(listener) = fds.take_tcp_listener(i).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("inherited descriptor {} is not a TCP listener: {e}", i + 3),
            )
        })?
        else {
            continue;
        };
        // A service manager passes them inheritable: none may leak into a process this one
        // starts (a hand-over passes its own on purpose).
        nix::fcntl::fcntl(
            &listener,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
        if names.get(i).is_some_and(|n| n == ADMIN_FDNAME) && found.admin.is_none() {
            found.admin = Some(listener);
        } else if names.get(i).is_some_and(|n| n == TLS_FDNAME) {
            found.tls.push(listener);
        } else {
            found.listeners.push(listener);
        }
    }
    Ok(found)
}

/// `addrs` as the `listening on` line shows them: separated by spaces.
pub(crate) fn describe(addrs: &[SocketAddr]) -> String {
    let shown: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    shown.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gives_every_address_the_first_ones_port() {
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        let listeners = bind_all(&ips, 0).unwrap();
        let a = listeners[0].local_addr().unwrap();
        let b = listeners[1].local_addr().unwrap();
        assert_ne!(a.port(), 0);
        assert_eq!(a.port(), b.port());
        assert_eq!(b.ip(), "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_same_address_twice_is_refused() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let err = bind_all(&[ip, ip], 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(bind_all(&[], 0).is_err());
    }
}
