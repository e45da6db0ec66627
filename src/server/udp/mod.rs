//! UDP echo (`--udp`): no connection and no session; a datagram is a message, and its echo
//! goes back to whoever sent it. (Bound to a wildcard address, the echo leaves from the
//! address the kernel picks for the route, not necessarily the one the peer targeted.)
//!
//! Each worker owns one UDP socket, bound with `SO_REUSEPORT` to the same address, which it
//! registers with its own poller: the kernel spreads the peers over the sockets, and no
//! datagram crosses a thread. A worker reads and answers at most [`BATCH`] datagrams a turn,
//! so a flood on UDP cannot starve its TCP sessions. An echo is never larger than its request
//! (a datagram larger than the buffer arrives cut, and its echo is the cut part), and an echo
//! the kernel will not take now (a full send buffer) is dropped and counted: UDP promises no
//! delivery, and a worker never waits on one peer.
//!
//! The datagram faults (`--fault udp-drop=0.1`, ...) are each worker's `faults::Shaper`: asked
//! about each request and each reply, it says what to send now and holds what is late, which
//! the worker sends when `Echo::next_due` comes (`Echo::release`).

mod faults;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};

use faults::Shaper;

/// Datagrams read and answered at most in one turn of a worker's loop.
pub(crate) const BATCH: usize = 256;

/// The receive buffer asked for each socket.
const RECV_BUFFER: usize = 4 * 1024 * 1024;

/// The largest UDP payload over IPv4 (65,535 less the IP and UDP headers).
pub(crate) const MAX_DATAGRAM: usize = 65_507;

/// What the workers' UDP sockets counted, all of them together.
#[derive(Debug, Default)]
pub struct UdpCounts {
    /// Datagrams read.
    pub datagrams_in: AtomicU64,
    /// Echoes sent.
    pub datagrams_out: AtomicU64,
    /// Bytes read.
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Echoes dropped: the kernel would not take them (a full send buffer) or refused them.
    pub dropped: AtomicU64,
    /// Datagrams from sources `--allow`/`--deny` turn away, read and not answered.
    pub refused: AtomicU64,
}

/// Binds `count` UDP sockets to `addr` with `SO_REUSEPORT`, non-blocking: one for each
/// worker. With port 0, the first gets a port and the others share it.
///
/// # Errors
///
/// When a socket cannot be made or bound (the port is taken by a socket without
/// `SO_REUSEPORT`, say).
pub(crate) fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    let mut sockets: Vec<UdpSocket> = Vec::with_capacity(count);
    let mut at = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
        if at.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_port(true)?;
        // Room for a burst: the kernel drops what a full receive buffer cannot take (it
        // holds this much at most what net.core.rmem_max allows).
        let _ = socket.set_recv_buffer_size(RECV_BUFFER);
        socket.set_nonblocking(true)?;
        socket.bind(&at.into())?;
        let socket: UdpSocket = socket.into();
        at = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// One worker's UDP socket and its buffer.
pub(crate) struct Echo {
    socket: mio::net::UdpSocket,
    buf: Box<[u8]>,
    /// The datagram faults (`udp-drop`, ...) of the server's live set.
    faults: Shaper,
}

impl Echo {
    pub(crate) fn new(socket: UdpSocket, faults: crate::server::faults::Faults) -> Self {
        Echo {
            socket: mio::net::UdpSocket::from_std(socket),
            buf: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            faults: Shaper::new(faults),
        }
    }

    /// When a reply the faults hold is next due, for the worker's poll timeout.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.faults.next_due()
    }

    /// Sends the replies the faults held whose time has come (and takes on a change of the
    /// faults: a cleared delay lets its replies out at once).
    pub(crate) fn release(&mut self, now: Instant, counts: &UdpCounts) {
        self.faults.begin();
        let (mut out, mut bytes_out, mut dropped) = (0, 0, 0);
        for held in self.faults.due(now) {
            for _ in 0..held.copies {
                match self.socket.send_to(&held.bytes, held.peer) {
                    Ok(sent) => {
                        out += 1;
                        bytes_out += sent as u64;
                    }
                    Err(_) => dropped += 1,
                }
            }
        }
        self.faults.end();
        for (count, add) in [
            (&counts.datagrams_out, out),
            (&counts.bytes_out, bytes_out),
            (&counts.dropped, dropped),
        ] {
            if add > 0 {
                count.fetch_add(add, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn socket(&mut self) -> &mut mio::net::UdpSocket {
        &mut self.socket
    }

    /// Reads and answers what has arrived, [`BATCH`] datagrams at most. Returns whether more
    /// may be waiting (the batch was full), for the worker to come back to it this turn.
    pub(crate) fn serve(
        &mut self,
        counts: &UdpCounts,
        permits: impl Fn(SocketAddr) -> bool,
    ) -> bool {
        // Counted here and added to the shared counts once a batch: the workers' sockets
        // share them, and one atomic add a datagram each would bounce their cache line.
        let mut tally = [0u64; 6];
        let [inn, bytes_in, out, bytes_out, refused, dropped] = &mut tally;
        let mut more = true;
        self.faults.begin();
        for _ in 0..BATCH {
            let (n, peer) = match self.socket.recv_from(&mut self.buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error of an earlier send (port unreachable) shows here: not ours
                // to stop on.
                Err(_) => continue,
            };
            *inn += 1;
            *bytes_in += n as u64;
            if !permits(peer) {
                *refused += 1;
                continue;
            }
            let Some(number) = self.faults.request(peer) else {
                continue;
            };
            let send = self.faults.reply(peer, number, &mut self.buf[..n]);
            for _ in 0..send.copies {
                match self.socket.send_to(&self.buf[..send.len], peer) {
                    Ok(sent) => {
                        *out += 1;
                        *bytes_out += sent as u64;
                    }
                    Err(_) => *dropped += 1,
                }
            }
        }
        self.faults.end();
        let shared = [
            &counts.datagrams_in,
            &counts.bytes_in,
            &counts.datagrams_out,
            &counts.bytes_out,
            &counts.refused,
            &counts.dropped,
        ];
        for (count, add) in shared.into_iter().zip(tally) {
            if add > 0 {
                count.fetch_add(add, Ordering::Relaxed);
            }
        }
        more
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_socket_shares_one_port_and_echoes() {
        let sockets = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = sockets[0].local_addr().unwrap().port();
        assert!(
            sockets
                .iter()
                .all(|s| s.local_addr().unwrap().port() == port)
        );
        let counts = UdpCounts::default();
        let faults = crate::server::faults::Faults::new(1, &[]);
        let mut echoes: Vec<Echo> = sockets
            .into_iter()
            .map(|s| Echo::new(s, faults.clone()))
            .collect();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"ping", ("127.0.0.1", port)).unwrap();
        // Whichever socket the kernel chose has it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while counts.datagrams_out.load(Ordering::Relaxed) == 0 {
            assert!(std::time::Instant::now() < deadline, "no echo");
            for echo in &mut echoes {
                echo.serve(&counts, |_| true);
            }
        }
        let mut buf = [0; 16];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from.port()), (&b"ping"[..], port));
    }
}
