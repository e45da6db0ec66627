//! The datapath of one worker's UDP socket: a batch read, each datagram judged (`--allow`/
//! `--deny`, the source's rate), stamped, and its echo sent in a batch; runs of same-sized
//! echoes to one peer go as one `UDP_SEGMENT` message.
//!
//! The datagram faults ([`Shaper`], `faults.rs` beside this file) act at three points:
//! 1. on a request, before the peer table counts it: whether it is dropped as a request
//!    ([`Echo::take`]);
//! 2. on a reply, before it is queued: how many copies to send now (0, 1 or 2, changed in
//!    place: cut or flipped, never grown); a held one the shaper copies and keeps;
//! 3. held replies whose time has come join the queue at the start of [`Echo::flush`] (their
//!    bytes in `self.extra`, a [`Part`] with `src: 1`); [`Echo::next_due`] feeds the worker's
//!    poll timeout, and makes the worker call [`Echo::serve`] when it has passed.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::cmsg::{self, Local};
use super::faults::Shaper;
use super::manual::Desk;
use super::mmsg::{self, Inbox, Msg, Part, SLOT, SLOTS};
use super::peers::{Peers, Verdict};
use super::{BATCH, MAX_DATAGRAM, SocketStats, UdpCounts, UdpOptions, UdpReply};
use crate::server::faults::Faults;

const LOG: &str = "tcpool::server::udp";

/// The most datagrams one `UDP_SEGMENT` message carries (the kernel's `UDP_MAX_SEGMENTS`).
const GSO_SEGMENTS: usize = 64;

/// One worker's UDP socket, its buffers and its peer table.
pub(crate) struct Echo {
    socket: mio::net::UdpSocket,
    inbox: Inbox,
    peers: Peers,
    rate: Option<f64>,
    stamp: bool,
    reply: UdpReply,
    /// Segments GSO may carry: smaller than this (0: GSO off).
    gso_below: usize,
    stats: Arc<SocketStats>,
    /// This batch's echoes, in order, and the messages they are sent in.
    replies: Vec<(SocketAddr, Option<Local>, Part)>,
    parts: Vec<Part>,
    msgs: Vec<Msg>,
    /// Bytes of echoes not in the inbox (a fault's held replies): `src: 1`.
    extra: Vec<u8>,
    /// The datagram faults (`udp-drop`, ...) of the server's live set.
    faults: Shaper,
    /// Manual mode: datagrams go to the operator's console, not back, and this socket's
    /// place among the workers' (where the console's replies leave from).
    desk: Option<(Arc<Desk>, usize)>,
}

/// What a batch counted, added to the shared counts at its end.
#[derive(Default)]
struct Tally {
    inn: u64,
    bytes_in: u64,
    out: u64,
    bytes_out: u64,
    refused: u64,
    dropped: u64,
    limited: u64,
    truncated: u64,
    not_asked: u64,
}

impl Echo {
    /// Serves `socket` for one of `workers` workers.
    pub(crate) fn new(
        socket: UdpSocket,
        options: &UdpOptions,
        workers: usize,
        counts: &UdpCounts,
        faults: Faults,
    ) -> Self {
        Self::with_slot(socket, options, workers, counts, faults, SLOT)
    }

    pub(crate) fn with_slot(
        socket: UdpSocket,
        options: &UdpOptions,
        workers: usize,
        counts: &UdpCounts,
        faults: Faults,
        slot: usize,
    ) -> Self {
        let fd = socket.as_raw_fd();
        let local = socket.local_addr().ok();
        let wildcard = local.is_some_and(|a| a.ip().is_unspecified());
        let v6 = local.is_some_and(|a| a.is_ipv6());
        let mut gso = options.gso;
        #[cfg(target_os = "linux")]
        {
            let refused = |what: &str, e: io::Error| {
                log::info!(target: LOG, "udp: the kernel refused {what} ({e}); going on without");
            };
            if wildcard && let Err(e) = cmsg::want_local(fd, v6) {
                refused("IP_PKTINFO (echoes leave from the routed address)", e);
            }
            if let Err(e) = cmsg::want_drops(fd) {
                refused("SO_RXQ_OVFL (kernel drops not counted)", e);
            }
            if options.gro
                && let Err(e) = cmsg::want_gro(fd)
            {
                refused("UDP_GRO", e);
            }
            if gso && let Err(e) = cmsg::probe_gso(fd) {
                refused("UDP_SEGMENT (GSO)", e);
                gso = false;
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (fd, wildcard, v6);
            gso = false;
        }
        Echo {
            socket: mio::net::UdpSocket::from_std(socket),
            inbox: Inbox::new(slot),
            peers: Peers::new(options.peers_per_worker(workers)),
            rate: options.rate_per_source.map(f64::from),
            stamp: options.stamp,
            reply: options.reply,
            gso_below: if gso { usize::MAX } else { 0 },
            stats: counts.socket(),
            replies: Vec::with_capacity(BATCH),
            parts: Vec::with_capacity(BATCH),
            msgs: Vec::with_capacity(BATCH),
            extra: Vec::new(),
            faults: Shaper::new(faults),
            desk: None,
        }
    }

    /// Manual mode: shows each datagram on `desk`'s console instead of echoing it; this is
    /// worker `index`'s socket.
    pub(crate) fn with_desk(mut self, desk: Arc<Desk>, index: usize) -> Self {
        self.desk = Some((desk, index));
        self
    }

    pub(crate) fn socket(&mut self) -> &mut mio::net::UdpSocket {
        &mut self.socket
    }

    /// When the worker must come back for replies the faults hold.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.faults.next_due()
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
        let mut tally = Tally::default();
        let now = Instant::now();
        let mut budget = BATCH;
        let mut more = false;
        // The live set of faults is looked at once a batch.
        self.faults.begin();
        while budget > 0 {
            let ask = budget.min(SLOTS);
            let n = match self.inbox.recv(&self.socket, ask) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // An ICMP error of an earlier send (port unreachable) shows here: not ours
                // to stop on, but counted against the batch so the loop ends.
                Err(_) => {
                    budget -= 1;
                    continue;
                }
            };
            // Read now: a fault's hold counts from here, never from before its request.
            let read = Instant::now();
            let before = tally.inn;
            for i in 0..n {
                self.take(i, read, &mut tally, &permits);
            }
            self.flush(read, &mut tally);
            budget = budget.saturating_sub((tally.inn - before).max(1) as usize);
            if n < ask {
                break;
            }
            more = budget == 0;
        }
        // Held replies fall due with no datagram arriving too.
        if self.next_due().is_some_and(|at| at <= now) {
            self.flush(now, &mut tally);
        }
        self.faults.end();
        self.stats
            .peers
            .store(self.peers.len() as u64, Ordering::Relaxed);
        // The echoes sent go last: who sees them counted sees the rest of the batch too.
        let shared = [
            (&counts.datagrams_in, tally.inn),
            (&counts.bytes_in, tally.bytes_in),
            (&counts.bytes_out, tally.bytes_out),
            (&counts.refused, tally.refused),
            (&counts.dropped, tally.dropped),
            (&counts.rate_limited, tally.limited),
            (&counts.truncated, tally.truncated),
            (&counts.not_asked, tally.not_asked),
            (&counts.datagrams_out, tally.out),
        ];
        for (count, add) in shared {
            if add > 0 {
                count.fetch_add(add, Ordering::Relaxed);
            }
        }
        more
    }

    /// Judges the `i`th arrival of the inbox (a datagram, or a GRO run of them cut back into
    /// datagrams) and queues its echoes.
    fn take(
        &mut self,
        i: usize,
        now: Instant,
        tally: &mut Tally,
        permits: impl Fn(SocketAddr) -> bool,
    ) {
        let arrival = self.inbox.got[i];
        if let Some(drops) = arrival.meta.drops {
            self.stats
                .kernel_drops
                .store(u64::from(drops), Ordering::Relaxed);
        }
        if arrival.truncated {
            tally.truncated += 1;
        }
        let peer = arrival.peer;
        let permitted = permits(peer);
        let segment = match arrival.meta.segment {
            Some(s) if usize::from(s) < arrival.len => usize::from(s),
            _ => arrival.len.max(1),
        };
        let base = self.inbox.offset(i);
        let data = self.inbox.data_mut(i);
        // One datagram, or a GRO run of them: a datagram each `segment` bytes (an empty
        // datagram is one too).
        let count = arrival.len.div_ceil(segment).max(1);
        for k in 0..count {
            let this = k * segment;
            let len = segment.min(arrival.len - this);
            tally.inn += 1;
            tally.bytes_in += len as u64;
            let datagram = &mut data[this..this + len];
            if !permitted {
                tally.refused += 1;
                continue;
            }
            // A datagram a fault drops as a request is neither counted by the peer table
            // (nor by the stamp) nor answered: as if it never arrived.
            let Some(number) = self.faults.request(peer) else {
                continue;
            };
            match self.peers.arrive(peer, now, self.rate) {
                Verdict::Answer(n) => {
                    // Manual mode: the operator answers, not the echo.
                    if let Some((desk, index)) = &self.desk {
                        desk.heard(peer, *index, datagram);
                        continue;
                    }
                    if !self.reply.answer(datagram) {
                        tally.not_asked += 1;
                        continue;
                    }
                    if self.stamp && len >= 8 {
                        datagram[..8].copy_from_slice(&n.to_be_bytes());
                    }
                    // The faults say how many copies go now (a held reply is theirs to keep).
                    let out = self
                        .faults
                        .reply_to(peer, arrival.meta.local, number, datagram, now);
                    let part = Part {
                        src: 0,
                        at: base + this,
                        len: out.len,
                    };
                    for _ in 0..out.copies {
                        self.replies.push((peer, arrival.meta.local, part));
                    }
                }
                Verdict::Limited { first } => {
                    tally.limited += 1;
                    if first {
                        log::info!(
                            target: LOG,
                            "udp: {peer} is over --udp-rate-per-source ({} a second): \
                             its datagrams are read and not answered until it slows down",
                            self.rate.unwrap_or_default()
                        );
                    }
                }
            }
        }
    }

    /// Sends the queued echoes, runs of same-sized ones to one peer as one GSO message.
    fn flush(&mut self, now: Instant, tally: &mut Tally) {
        // Held replies whose time has come join the queue, their bytes in `extra`, each to
        // leave from the address its request was sent to.
        self.extra.clear();
        for held in self.faults.due(now) {
            let part = Part {
                src: 1,
                at: self.extra.len(),
                len: held.bytes.len(),
            };
            self.extra.extend_from_slice(&held.bytes);
            for _ in 0..held.copies {
                self.replies.push((held.peer, held.local, part));
            }
        }
        if self.replies.is_empty() {
            return;
        }
        self.parts.clear();
        self.msgs.clear();
        self.parts.extend(self.replies.iter().map(|r| r.2));
        let mut i = 0;
        while i < self.replies.len() {
            let (peer, local, first) = self.replies[i];
            let size = first.len;
            let mut count = 1;
            if size > 0 && size < self.gso_below {
                let mut total = size;
                for &(p, l, part) in &self.replies[i + 1..] {
                    if count == GSO_SEGMENTS
                        || p != peer
                        || l != local
                        || part.len == 0
                        || part.len > size
                        || total + part.len > MAX_DATAGRAM
                    {
                        break;
                    }
                    count += 1;
                    total += part.len;
                    // A shorter one ends a run: GSO cuts the rest at the segment size.
                    if part.len < size {
                        break;
                    }
                }
            }
            let segment = if count > 1 { size as u16 } else { 0 };
            self.msgs.push(Msg {
                peer,
                local,
                segment,
                first: i,
                count,
            });
            i += count;
        }
        self.replies.clear();
        let data = [self.inbox.bytes(), &self.extra[..]];
        let mut at = 0;
        while at < self.msgs.len() {
            let (sent, error) = mmsg::send(&self.socket, &self.msgs[at..], &self.parts, &data);
            for m in &self.msgs[at..at + sent] {
                tally.out += m.count as u64;
                tally.bytes_out += self.parts[m.first..m.first + m.count]
                    .iter()
                    .map(|p| p.len as u64)
                    .sum::<u64>();
            }
            at += sent;
            let Some(e) = error else { break };
            let m = self.msgs[at];
            at += 1;
            if e.kind() == io::ErrorKind::WouldBlock {
                // A full send buffer: this echo and the rest of the batch are dropped.
                tally.dropped += self.msgs[at - 1..]
                    .iter()
                    .map(|m| m.count as u64)
                    .sum::<u64>();
                break;
            }
            if m.segment == 0 {
                tally.dropped += 1;
                continue;
            }
            // The kernel refused a GSO message: its echoes go one by one, and GSO is not
            // tried again at this size (or at all, when the kernel or device cannot do it).
            let size = usize::from(m.segment);
            let never = matches!(
                e.raw_os_error(),
                Some(libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
            );
            let below = if never { 0 } else { size };
            if below < self.gso_below {
                log::info!(
                    target: LOG,
                    "udp: the kernel refused a GSO message of {}-byte segments ({e}); {}",
                    size,
                    if never {
                        "echoes are sent one by one from now on".to_owned()
                    } else {
                        format!("GSO kept for echoes under {size} bytes")
                    }
                );
                self.gso_below = below;
            }
            let singles: Vec<Msg> = (m.first..m.first + m.count)
                .map(|k| Msg {
                    segment: 0,
                    first: k,
                    count: 1,
                    ..m
                })
                .collect();
            let (sent, _) = mmsg::send(&self.socket, &singles, &self.parts, &data);
            for s in &singles[..sent] {
                tally.out += 1;
                tally.bytes_out += self.parts[s.first].len as u64;
            }
            tally.dropped += (singles.len() - sent) as u64;
        }
    }
}

#[cfg(test)]
#[path = "echo_tests.rs"]
mod tests;
