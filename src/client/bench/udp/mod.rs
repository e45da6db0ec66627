//! `tcpool bench --udp`: a datagram load. Each of [`UdpOptions::sockets`] sockets has its own
//! source port (a connected UDP socket) and numbers its datagrams from 0; replies are
//! matched to requests by that number (bench's own payload, see [`payload`]) or by an id
//! field the caller names in its own request ([`IdField`]).
//!
//! How a run goes:
//!
//! - **Load**: closed loop by default: each socket keeps [`UdpOptions::pipeline`] datagrams
//!   out, and sends the next when one is answered or lost. With [`UdpOptions::rate`] the
//!   load is open loop: the rate is split evenly over the sockets (their schedules
//!   staggered), each datagram has an intended send time and its round trip counts from it.
//!   A datagram whose time passed by more than one interval (or 2 ms, for shorter
//!   intervals: the poller wakes in whole milliseconds) is *skipped*, counted and never
//!   sent: no burst of catch-up datagrams follows a stall. The open loop does not wait for
//!   replies: [`UdpOptions::pipeline`] does not cap it, and what is out is bounded by the
//!   rate times the reply timeout.
//! - **Match**: a reply to a datagram still out is answered (its round trip recorded) or,
//!   when its bytes are not what was expected, corrupt; a reply to one already answered is a
//!   duplicate; one to a datagram given up on after [`UdpOptions::reply_timeout`] is late
//!   (the datagram stays lost); a reply whose number was never sent is foreign. A reply that
//!   comes after the reply of a later datagram of its socket is reordered (and answered).
//! - **Jitter**: per socket, RFC 3550's interarrival jitter over consecutive replies'
//!   transit times (send to reply): `J += (|D| - J) / 16`; the report gives the sockets'
//!   mean, and every |D| in a histogram.
//! - **Stamp**: a server that writes, into the first 8 bytes of its reply, how many
//!   datagrams it has had from this source (`tcpool serve --udp-stamp`) tells bench where
//!   the loss was: up to the last stamped reply, `sent - stamp` requests never reached the
//!   server, and the rest of the loss there is replies that never came back. Loss after the
//!   last stamp cannot be told apart.
//! - **End**: with [`UdpLimit::Datagrams`] once every datagram is answered or lost; with
//!   [`UdpLimit::Duration`] nothing is sent after the window, and what is out is awaited up to
//!   the reply timeout. Setting the stop flag ends at once: what is still out is
//!   `unresolved`.

mod merge;
pub mod payload;
mod report;
mod track;
mod worker;

pub use payload::{Check, IdField, MAX_DATAGRAM, MIN_OWN_SIZE, Payload};
pub use report::UdpReport;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// How much a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpLimit {
    /// Datagrams in all (sent or skipped), split over the sockets.
    Datagrams(u64),
    /// Send for this long.
    Duration(Duration),
}

/// What a UDP run is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpOptions {
    /// Where the datagrams go.
    pub target: SocketAddr,
    /// Sockets, each with its own source port.
    pub sockets: usize,
    /// Datagrams out per socket at most, in a closed loop (the open loop sends on schedule).
    pub pipeline: usize,
    /// Datagrams per second over all sockets (open loop); `None`: closed loop.
    pub rate: Option<f64>,
    /// How much to send.
    pub limit: UdpLimit,
    /// How long a reply may take before its datagram counts as lost.
    pub reply_timeout: Duration,
    /// What is sent and how replies are matched and judged.
    pub payload: Payload,
    /// Threads driving the sockets; 0: one per CPU.
    pub threads: usize,
}

impl UdpOptions {
    /// The threads a run uses: one per CPU (or [`UdpOptions::threads`]), at most one per
    /// socket.
    pub fn threads_used(&self) -> usize {
        let threads = match self.threads {
            0 => thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        threads.min(self.sockets).max(1)
    }

    /// Checks the options make a run.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`], saying which option is wrong.
    pub fn validate(&self) -> io::Result<()> {
        let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if self.sockets == 0 || self.pipeline == 0 {
            return invalid("a UDP run needs at least one socket and one datagram out".into());
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return invalid("the rate must be a positive number of datagrams per second".into());
        }
        if self.payload.send.is_none()
            && !(MIN_OWN_SIZE..=MAX_DATAGRAM).contains(&self.payload.size)
        {
            return invalid(format!(
                "a datagram of bench's own payload is {MIN_OWN_SIZE} to {MAX_DATAGRAM} bytes, \
                 not {}",
                self.payload.size
            ));
        }
        if self.reply_timeout.is_zero() {
            return invalid("the reply timeout must be more than zero".into());
        }
        Ok(())
    }
}

/// What the threads of a run share.
struct Shared<'a> {
    options: &'a UdpOptions,
    sockets: usize,
    /// The open loop's interval per socket.
    interval: Option<Duration>,
    start: Instant,
    stop: &'a AtomicBool,
}

/// A connected UDP socket to `target`, with room for bursts of replies.
fn open(target: SocketAddr) -> io::Result<mio::net::UdpSocket> {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(local)?;
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(1 << 20);
    socket.connect(target)?;
    socket.set_nonblocking(true)?;
    Ok(mio::net::UdpSocket::from_std(socket))
}

/// Runs a UDP benchmark with `options` until it is over, or `stop` is set (then it reports
/// what it saw so far).
///
/// # Errors
///
/// Invalid options, a socket that cannot be opened, or a poller or thread that cannot be
/// created; what happens to datagrams is counted in the report.
pub fn run(options: &UdpOptions, stop: &AtomicBool) -> io::Result<UdpReport> {
    options.validate()?;
    let wanted = options.sockets as u64 + 64;
    if let Ok(limit) = rlimit::increase_nofile_limit(wanted)
        && limit < wanted
    {
        log::warn!("file descriptor limit {limit} is too low for every socket");
    }
    let threads = options.threads_used();
    let mut shares: Vec<Vec<(usize, mio::net::UdpSocket)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for i in 0..options.sockets {
        let socket = open(options.target).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open UDP socket {i} to {}: {e}", options.target),
            )
        })?;
        shares[i % threads].push((i, socket));
    }
    let shared = Shared {
        options,
        sockets: options.sockets,
        interval: options
            .rate
            .map(|r| Duration::from_secs_f64(options.sockets as f64 / r)),
        start: Instant::now(),
        stop,
    };
    let started = SystemTime::now();
    let tallies = thread::scope(|scope| {
        let handles = shares
            .into_iter()
            .enumerate()
            .map(|(t, share)| {
                let shared = &shared;
                thread::Builder::new()
                    .name(format!("tcpool-udp-{t}"))
                    .spawn_scoped(scope, move || worker::run(shared, share))
            })
            .collect::<io::Result<Vec<_>>>()?;
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a UDP bench thread panicked")))
            })
            .collect::<io::Result<Vec<_>>>()
    })?;
    let mut total = track::Tally::new();
    for t in tallies {
        total.absorb(t);
    }
    Ok(report::report(options, &shared, started, total))
}
