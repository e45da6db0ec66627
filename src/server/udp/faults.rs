//! [`Shaper`]: what one worker's datagram faults (`udp-drop`, `udp-delay`, ...) do to its
//! datagrams. The datapath asks it about each request and each reply; it answers at once
//! (dropped, sent now, sent twice, changed) or holds the reply, to hand it back from
//! [`Shaper::due`] when its time comes.
//!
//! Every draw for a datagram comes from a generator of its own, keyed by the server's seed,
//! the fault (its kind and its rank among the active faults of that kind) and the datagram's
//! number from its source: so the same seed and the same datagrams from one source get the
//! same faults, whatever the timing, and adding a fault leaves the others' draws as they were.
//! (The number leaves the source out: the same numbers from two sources get the same draws.)
//!
//! The live set is looked at once a batch, through a counter that every add and clear bumps:
//! no lock is taken for a datagram. What is held is bounded ([`MAX_HELD`] replies,
//! [`MAX_HELD_BYTES`]): a reply beyond that is dropped and counted as `overflow`. A reply is
//! never larger than its request: faults cut and flip, never add.

use std::cmp::Ordering as Order;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::cmsg::Local;
use crate::server::faults::{Active, Dir, FaultKind, Faulted, Faults, Rng, UdpFault};

/// The most replies one worker holds (delayed or waiting for their reorder group).
pub(crate) const MAX_HELD: usize = 4096;

/// The most bytes of replies one worker holds.
pub(crate) const MAX_HELD_BYTES: usize = 16 * 1024 * 1024;

/// The most sources counted: above, the count starts again for every source.
const MAX_SOURCES: usize = 4096;

/// How long a reorder group that is not full waits for the rest before it goes out as it is.
pub(crate) const REORDER_WAIT: Duration = Duration::from_millis(10);

/// Mixed into the seed of each draw, so that the request's draw, each kind's draws and the
/// shuffle of a group come from generators apart.
const SALT_REQUEST: u64 = 0x5EED_0D20_0000_0001;
const SALT_DROP: u64 = 0x5EED_0D20_0000_0002;
const SALT_DUP: u64 = 0x5EED_0D20_0000_0003;
const SALT_CORRUPT: u64 = 0x5EED_0D20_0000_0004;
const SALT_DELAY: u64 = 0x5EED_0D20_0000_0005;
const SALT_SHUFFLE: u64 = 0x5EED_0D20_0000_0006;

/// What to send now of a reply: `copies` times its first `len` bytes (0 copies: dropped, or
/// held for later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Out {
    pub(crate) copies: u8,
    pub(crate) len: usize,
}

/// A reply held, handed back by [`Shaper::due`]: send `bytes` to `peer`, `copies` times,
/// from `local` (the address its request was sent to, when the socket is bound to a wildcard).
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) peer: SocketAddr,
    pub(crate) local: Option<Local>,
    pub(crate) bytes: Box<[u8]>,
    pub(crate) copies: u8,
}

/// A delayed reply in the heap: nearest `at` first, then in the order held.
#[derive(Debug)]
struct Timed {
    at: Instant,
    order: u64,
    held: Held,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<Order> {
        Some(self.cmp(other))
    }
}
impl Ord for Timed {
    // Reversed: the heap's top is the nearest.
    fn cmp(&self, other: &Self) -> Order {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// One active datagram fault, as the shaper applies it.
#[derive(Debug)]
struct Fault {
    active: Arc<Active>,
    kind: UdpFault,
    /// Its seed: the server's, its kind's salt and its rank among the faults of its kind.
    seed: u64,
    /// Datagrams it touched this batch, added to the shared count at the batch's end.
    touched: u64,
}

impl Fault {
    /// Its generator for datagram `number`.
    fn rng(&self, number: u64) -> Rng {
        Rng::for_session(self.seed, number)
    }
}

/// A source's datagrams so far: every one that arrived, and those counted (not dropped as
/// requests). The request's draw is keyed by the first, the reply's by the second: keyed by
/// the count, a request dropped would leave the next one its number, so its draw, and be
/// dropped again for good.
#[derive(Debug, Default, Clone, Copy)]
struct Source {
    arrived: u64,
    counted: u64,
}

/// One worker's datagram faults; see the module's documentation.
#[derive(Debug)]
pub(crate) struct Shaper {
    live: Faults,
    seen: u64,
    faults: Vec<Fault>,
    /// This batch's counts, by [`Faulted`].
    tally: [u64; Faulted::COUNT],
    sources: HashMap<SocketAddr, Source>,
    timed: BinaryHeap<Timed>,
    /// The reorder group being filled: each reply with the time its delay ends.
    group: Vec<(Instant, Held)>,
    /// When the group goes out even if not full.
    group_due: Option<Instant>,
    /// Replies due now, drained by [`Shaper::due`].
    ready: Vec<Held>,
    held_bytes: usize,
    order: u64,
}

impl Shaper {
    pub(crate) fn new(live: Faults) -> Self {
        let mut shaper = Shaper {
            seen: live.changes().wrapping_sub(1),
            live,
            faults: Vec::new(),
            tally: [0; Faulted::COUNT],
            sources: HashMap::new(),
            timed: BinaryHeap::new(),
            group: Vec::new(),
            group_due: None,
            ready: Vec::new(),
            held_bytes: 0,
            order: 0,
        };
        shaper.begin();
        shaper
    }

    /// Once a batch, before its first datagram: takes on a change of the live set (one
    /// atomic load when there is none). A reply held by a delay or a reorder that is no
    /// longer active is due at once.
    pub(crate) fn begin(&mut self) {
        let changes = self.live.changes();
        if changes == self.seen {
            return;
        }
        self.seen = changes;
        self.end();
        let seed = self.live.seed();
        let mut ranks = [0u64; 7];
        self.faults = self
            .live
            .udp_active()
            .into_iter()
            .filter_map(|active| {
                let FaultKind::Udp(kind) = active.spec.kind else {
                    return None;
                };
                let (slot, salt) = match kind {
                    UdpFault::Drop {
                        dir: Dir::Request, ..
                    } => (0, SALT_REQUEST),
                    UdpFault::Drop { .. } => (1, SALT_DROP),
                    UdpFault::Dup { .. } => (2, SALT_DUP),
                    UdpFault::Corrupt { .. } => (3, SALT_CORRUPT),
                    UdpFault::Delay { .. } => (4, SALT_DELAY),
                    UdpFault::Reorder { .. } => (5, SALT_SHUFFLE),
                    UdpFault::Truncate { .. } | UdpFault::Rate { .. } => (6, 0),
                };
                ranks[slot] += 1;
                let seed = seed ^ salt ^ ranks[slot].wrapping_mul(0xA24B_AED4_963E_E407);
                Some(Fault {
                    active,
                    kind,
                    seed,
                    touched: 0,
                })
            })
            .collect();
        let has = |f: fn(&UdpFault) -> bool| self.faults.iter().any(|x| f(&x.kind));
        let reorder = has(|k| matches!(k, UdpFault::Reorder { .. }));
        let delay = has(|k| matches!(k, UdpFault::Delay { .. }));
        if !reorder {
            self.let_group_out(None);
        }
        if !delay {
            // No delay left: what the group holds waits no more than its fill, and whatever
            // is timed goes now.
            let now = Instant::now();
            for (at, _) in &mut self.group {
                *at = now;
            }
            while let Some(timed) = self.timed.pop() {
                self.ready.push(timed.held);
            }
        }
    }

    /// Once a batch, after its last datagram: adds what it counted to the shared counts.
    pub(crate) fn end(&mut self) {
        for fault in &mut self.faults {
            fault.active.touch(std::mem::take(&mut fault.touched));
        }
        if self.tally.iter().any(|&n| n > 0) {
            self.live.add_udp_faulted(&self.tally);
            self.tally = [0; Faulted::COUNT];
        }
    }

    /// A datagram from `peer` arrived: its number from that source (1 for the first), or
    /// `None` when `udp-drop=P,dir=request` drops it, in which case it is not counted.
    pub(crate) fn request(&mut self, peer: SocketAddr) -> Option<u64> {
        // With no datagram fault, nothing needs the number: no lookup a datagram.
        if self.faults.is_empty() {
            return Some(0);
        }
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&peer) {
            self.sources.clear();
        }
        let source = self.sources.entry(peer).or_default();
        source.arrived += 1;
        for fault in &mut self.faults {
            if let UdpFault::Drop {
                p,
                dir: Dir::Request,
            } = fault.kind
                && fault.rng(source.arrived).unit() < p
            {
                fault.touched += 1;
                self.tally[Faulted::DropRequest as usize] += 1;
                return None;
            }
        }
        source.counted += 1;
        Some(source.counted)
    }

    /// [`Shaper::reply_to`] with no local address to keep.
    #[cfg(test)]
    pub(crate) fn reply_at(
        &mut self,
        peer: SocketAddr,
        number: u64,
        reply: &mut [u8],
        now: Instant,
    ) -> Out {
        self.reply_to(peer, None, number, reply, now)
    }

    /// The echo of datagram `number` (from [`Shaper::request`]) from `peer`, in `reply`,
    /// which it may change (cut, a bit flipped): what to send of it now. A reply that a delay
    /// or reorder holds is copied, and comes out of [`Shaper::due`]. With no datagram fault
    /// active, one copy of the whole reply, at the cost of one branch. `now` is no earlier
    /// than when the request was read, so that no hold is shorter than asked. A held reply
    /// keeps `local`, to leave from it when its time comes.
    pub(crate) fn reply_to(
        &mut self,
        peer: SocketAddr,
        local: Option<Local>,
        number: u64,
        reply: &mut [u8],
        now: Instant,
    ) -> Out {
        let mut out = Out {
            copies: 1,
            len: reply.len(),
        };
        if self.faults.is_empty() {
            return out;
        }
        // Dropped: by chance, then by the rate.
        for fault in &mut self.faults {
            let dropped = match fault.kind {
                UdpFault::Drop { p, dir: Dir::Reply } => fault.rng(number).unit() < p,
                _ => continue,
            };
            if dropped {
                fault.touched += 1;
                self.tally[Faulted::DropReply as usize] += 1;
                return Out { copies: 0, len: 0 };
            }
        }
        for fault in &mut self.faults {
            if let UdpFault::Rate { per_second } = fault.kind
                && !take(&fault.active, per_second, now)
            {
                fault.touched += 1;
                self.tally[Faulted::Rate as usize] += 1;
                return Out { copies: 0, len: 0 };
            }
        }
        // Changed: cut, then a bit flipped in what is left.
        for fault in &mut self.faults {
            if let UdpFault::Truncate { bytes } = fault.kind
                && (out.len as u64) > bytes
            {
                out.len = bytes as usize;
                fault.touched += 1;
                self.tally[Faulted::Truncate as usize] += 1;
            }
        }
        for fault in &mut self.faults {
            if let UdpFault::Corrupt { p } = fault.kind {
                let mut rng = fault.rng(number);
                if rng.unit() < p && out.len > 0 {
                    let at = (rng.next() % out.len as u64) as usize;
                    reply[at] ^= 1 << (rng.next() % 8);
                    fault.touched += 1;
                    self.tally[Faulted::Corrupt as usize] += 1;
                }
            }
        }
        for fault in &mut self.faults {
            if let UdpFault::Dup { p } = fault.kind
                && fault.rng(number).unit() < p
            {
                out.copies = 2;
                fault.touched += 1;
                self.tally[Faulted::Dup as usize] += 1;
            }
        }
        // Held: for a while, or for the rest of a group.
        let mut hold = Duration::ZERO;
        let mut delayed = false;
        let mut depth = None;
        for fault in &self.faults {
            match fault.kind {
                UdpFault::Delay { delay, jitter } => {
                    let spread = jitter.mul_f64(2.0 * fault.rng(number).unit());
                    hold += (delay + spread).saturating_sub(jitter);
                    delayed = true;
                }
                UdpFault::Reorder { depth: d } => {
                    depth = Some(depth.map_or(d, |was: u32| was.min(d)));
                }
                _ => {}
            }
        }
        if !delayed && depth.is_none() {
            return out;
        }
        let bytes = out.len * usize::from(out.copies);
        if self.held() >= MAX_HELD || self.held_bytes + bytes > MAX_HELD_BYTES {
            self.tally[Faulted::Overflow as usize] += 1;
            return Out { copies: 0, len: 0 };
        }
        for fault in &mut self.faults {
            if matches!(
                fault.kind,
                UdpFault::Delay { .. } | UdpFault::Reorder { .. }
            ) {
                fault.touched += 1;
            }
        }
        self.held_bytes += bytes;
        let held = Held {
            peer,
            local,
            bytes: reply[..out.len].into(),
            copies: out.copies,
        };
        let at = now + hold;
        if delayed {
            self.tally[Faulted::Delay as usize] += 1;
        }
        match depth {
            Some(depth) => {
                self.tally[Faulted::Reorder as usize] += 1;
                self.group.push((at, held));
                self.group_due.get_or_insert(now + REORDER_WAIT);
                if self.group.len() >= depth as usize {
                    let mut rng = Rng::for_session(self.live.seed() ^ SALT_SHUFFLE, number);
                    self.let_group_out(Some(&mut rng));
                }
            }
            None => self.push_timed(at, held),
        }
        Out { copies: 0, len: 0 }
    }

    /// The held replies whose time has come, in the order to send them.
    pub(crate) fn due(&mut self, now: Instant) -> std::vec::Drain<'_, Held> {
        if self.group_due.is_some_and(|at| at <= now) {
            let seed = self.live.seed() ^ SALT_SHUFFLE;
            let mut rng = Rng::for_session(seed, self.order);
            self.let_group_out(Some(&mut rng));
        }
        while self.timed.peek().is_some_and(|t| t.at <= now) {
            let timed = self.timed.pop().expect("peeked");
            self.ready.push(timed.held);
        }
        for held in &self.ready {
            self.held_bytes -= held.bytes.len() * usize::from(held.copies);
        }
        self.ready.drain(..)
    }

    /// When the nearest held reply is due; `None` while nothing is held.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        if !self.ready.is_empty() {
            return Some(Instant::now());
        }
        let timed = self.timed.peek().map(|t| t.at);
        match (timed, self.group_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn held(&self) -> usize {
        self.timed.len() + self.group.len() + self.ready.len()
    }

    fn push_timed(&mut self, at: Instant, held: Held) {
        self.order += 1;
        self.timed.push(Timed {
            at,
            order: self.order,
            held,
        });
    }

    /// Lets the reorder group out, shuffled by `rng` (as it is with `None`): all at once,
    /// when the longest delay among them ends, so that a delay does not sort them back.
    fn let_group_out(&mut self, rng: Option<&mut Rng>) {
        self.group_due = None;
        if self.group.is_empty() {
            return;
        }
        let mut group = std::mem::take(&mut self.group);
        if let Some(rng) = rng {
            // Fisher-Yates.
            for i in (1..group.len()).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                group.swap(i, j);
            }
        }
        let at = group.iter().map(|&(at, _)| at).max().expect("not empty");
        for (_, held) in group.drain(..) {
            self.push_timed(at, held);
        }
        self.group = group;
    }
}

/// Takes one reply's token from `fault`'s bucket (a GCRA, shared by the workers: `rate` a
/// second, a burst of one second's worth); `false` when there is none.
fn take(fault: &Active, rate: u64, now: Instant) -> bool {
    let interval = (1_000_000_000 / rate).max(1);
    let tolerance = interval.saturating_mul(rate - 1);
    let t =
        u64::try_from(now.saturating_duration_since(fault.added).as_nanos()).unwrap_or(u64::MAX);
    let mut due = fault.bucket.load(Ordering::Relaxed);
    loop {
        let start = due.max(t);
        if start - t > tolerance {
            return false;
        }
        match fault.bucket.compare_exchange_weak(
            due,
            start + interval,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(now_due) => due = now_due,
        }
    }
}

#[cfg(test)]
#[path = "faults_tests.rs"]
mod tests;
