//! UDP echo (`--udp`): no connection and no session; a datagram is a message, and its echo
//! goes back to whoever sent it, from the address it was sent to (also when the socket is
//! bound to a wildcard address: `IP_PKTINFO`, `IPV6_PKTINFO`).
//!
//! Each worker owns one UDP socket, bound with `SO_REUSEPORT` to the same address, which it
//! registers with its own poller: the kernel spreads the peers over the sockets, and no
//! datagram crosses a thread. A worker reads and answers at most [`BATCH`] datagrams a turn,
//! so a flood on UDP cannot starve its TCP sessions. An echo is never larger than its request
//! (a datagram larger than the buffer arrives cut, and its echo is the cut part), and an echo
//! the kernel will not take now (a full send buffer) is dropped and counted: UDP promises no
//! delivery, and a worker never waits on one peer.
//!
//! | file | what |
//! |---|---|
//! | [`echo`] | the datapath: a batch read, each datagram judged, stamped and answered |
//! | [`peers`] | each worker's bounded table of sources, with their counts and rate buckets |
//! | [`mmsg`] | `recvmmsg`/`sendmmsg` (Linux), `recv_from`/`send_to` elsewhere |
//! | [`manual`] | manual mode's pseudo-sessions: datagrams shown on the console, `@uN` replies |
//! | [`cmsg`] | the ancillary data: local address, kernel drops, GRO and GSO segments |
//! | [`reply`] | what a datagram gets back: its echo, or sockperf's answer (`--udp-reply`) |
//! | `faults` | the datagram faults (`--fault udp-drop=0.1`, ...): each worker's `Shaper`, asked about each request and reply, holds what is late until `Echo::next_due` |

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use socket2::{Domain, Protocol, Socket, Type};

pub(crate) mod cmsg;
mod echo;
mod faults;
pub mod manual;
pub(crate) mod mmsg;
pub(crate) mod peers;
mod reply;

pub(crate) use echo::Echo;
pub use reply::UdpReply;

/// How the UDP echo behaves beyond echoing (`serve --udp-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpOptions {
    /// Sources the server remembers at most (`--udp-peers`), split evenly over the workers'
    /// tables (each holds at least one); past it, the least recently seen is forgotten.
    pub peers: usize,
    /// Datagrams a second answered at most for one source, and its burst
    /// (`--udp-rate-per-source`); `None`: no limit.
    pub rate_per_source: Option<u32>,
    /// Replace the first 8 bytes of each echo of 8 bytes or more with the source's count of
    /// datagrams, big-endian (`--udp-stamp`).
    pub stamp: bool,
    /// Send runs of same-sized echoes to one peer as one `UDP_SEGMENT` message (`--udp-gso`).
    pub gso: bool,
    /// Let the kernel hand over datagrams of one source coalesced (`UDP_GRO`, `--udp-gro`).
    pub gro: bool,
    /// What a datagram gets back (`--udp-reply`).
    pub reply: UdpReply,
}

/// `--udp-peers`' default, for the whole server.
pub const DEFAULT_UDP_PEERS: usize = 4096;

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            peers: DEFAULT_UDP_PEERS,
            rate_per_source: None,
            stamp: false,
            gso: true,
            gro: true,
            reply: UdpReply::Echo,
        }
    }
}

impl UdpOptions {
    /// The size of one worker's table when `workers` share the server's.
    pub(crate) fn peers_per_worker(&self, workers: usize) -> usize {
        self.peers.div_ceil(workers.max(1)).max(1)
    }
}

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
    /// Datagrams over their source's `--udp-rate-per-source`, read and not answered.
    pub rate_limited: AtomicU64,
    /// Datagrams longer than the buffer, which arrived cut (`MSG_TRUNC`).
    pub truncated: AtomicU64,
    /// Datagrams that asked for no answer (`--udp-reply sockperf`: a message without its
    /// request for one).
    pub not_asked: AtomicU64,
    /// Each socket's own figures, which are levels rather than sums.
    sockets: parking_lot::Mutex<Vec<Arc<SocketStats>>>,
}

/// What one socket knows that is not added up: the kernel's drop count (`SO_RXQ_OVFL`, the
/// latest value it gave) and the size of its worker's peer table.
#[derive(Debug, Default)]
pub(crate) struct SocketStats {
    pub(crate) kernel_drops: AtomicU64,
    pub(crate) peers: AtomicU64,
}

impl UdpCounts {
    /// Datagrams the kernel dropped before the echo read them (a full receive buffer),
    /// over all the sockets.
    pub fn kernel_drops(&self) -> u64 {
        self.sum(|s| &s.kernel_drops)
    }

    /// Sources in the workers' peer tables now.
    pub fn peers(&self) -> u64 {
        self.sum(|s| &s.peers)
    }

    fn sum(&self, field: impl Fn(&SocketStats) -> &AtomicU64) -> u64 {
        let sockets = self.sockets.lock();
        sockets
            .iter()
            .map(|s| field(s).load(Ordering::Relaxed))
            .sum()
    }

    /// A socket's figures, counted from now on.
    pub(crate) fn socket(&self) -> Arc<SocketStats> {
        let stats = Arc::new(SocketStats::default());
        self.sockets.lock().push(Arc::clone(&stats));
        stats
    }
}

/// The workers' UDP sockets at a start (`--udp` on `port`, 0: the first listener's, whose
/// address is `first`): a hand-over's `inherited` ones fitted to the `workers`, or new ones
/// bound. A `handover` to come gets second handles on them, and so does manual mode's `desk`,
/// which answers from them. None without `--udp`.
///
/// # Errors
///
/// When the sockets cannot be bound, or their handles cloned.
pub(crate) fn open(
    port: Option<u16>,
    first: SocketAddr,
    workers: usize,
    inherited: Vec<UdpSocket>,
    handover: Option<&crate::server::arrival::handover::Sockets>,
    desk: Option<&manual::Desk>,
) -> io::Result<Vec<UdpSocket>> {
    let handed = inherited.len();
    let sockets = match port {
        Some(_) if handed > 0 => fit(inherited, workers)?,
        Some(port) => {
            let at = SocketAddr::new(first.ip(), if port == 0 { first.port() } else { port });
            bind(at, workers)
                .map_err(|e| io::Error::new(e.kind(), format!("--udp: cannot bind {at}: {e}")))?
        }
        None => return Ok(Vec::new()),
    };
    if let Some(at) = sockets.first().map(UdpSocket::local_addr).transpose()? {
        log::info!(
            target: "tcpool::server",
            "udp {} on {at} ({} socket(s), one a worker, SO_REUSEPORT{})",
            match desk {
                Some(_) => "manual (datagrams to the console, @uN answers)",
                None => "echo",
            },
            sockets.len(),
            if handed > 0 { ", handed over" } else { "" }
        );
    }
    let handles = || {
        sockets
            .iter()
            .map(UdpSocket::try_clone)
            .collect::<io::Result<_>>()
    };
    if let Some(handover) = handover {
        handover.hold_udp(handles()?);
    }
    if let Some(desk) = desk {
        desk.attach(handles()?);
    }
    Ok(sockets)
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

/// The sockets a hand-over passed, made `count`: those beyond it closed (this process's
/// handle only: the old process serves them until it exits), and more bound beside them
/// when it passed fewer.
///
/// # Errors
///
/// When a socket's address cannot be read, or one more cannot be bound to it.
pub(crate) fn fit(mut sockets: Vec<UdpSocket>, count: usize) -> io::Result<Vec<UdpSocket>> {
    let count = count.max(1);
    sockets.truncate(count);
    if let Some(first) = sockets.first()
        && sockets.len() < count
    {
        let at = first.local_addr()?;
        sockets.extend(bind(at, count - sockets.len())?);
    }
    Ok(sockets)
}
