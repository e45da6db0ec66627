//! A worker's table of the sources it has heard from: bounded, the least recently seen
//! evicted first. Each source has its count of datagrams (the stamp's number), a token bucket
//! for `--udp-rate-per-source` and whether it is over that limit now (to log an episode once).
//!
//! A hash map from the address to a slot, and the slots on a list from the most to the least
//! recently seen, linked by index: a lookup, a move to the front and an eviction are O(1).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// No slot: the end of the list.
const NIL: u32 = u32::MAX;

/// What the table knows of one source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    /// Datagrams received from it so far (while it stayed in the table).
    pub(crate) received: u64,
    /// Tokens left in its bucket (`--udp-rate-per-source`), and when they were counted.
    tokens: f64,
    filled: Instant,
    /// It went over its limit and has not been answered since: its episode was logged.
    pub(crate) limited: bool,
}

struct Slot {
    addr: SocketAddr,
    peer: Peer,
    newer: u32,
    older: u32,
}

/// The bounded table.
pub(crate) struct Peers {
    capacity: usize,
    index: HashMap<SocketAddr, u32>,
    slots: Vec<Slot>,
    /// The most and the least recently seen.
    newest: u32,
    oldest: u32,
}

/// What [`Peers::arrive`] says of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Answer it; this is the source's `n`th datagram.
    Answer(u64),
    /// Over the source's rate: do not answer. `first` when this starts an episode.
    Limited { first: bool },
}

impl Peers {
    /// A table of at most `capacity` sources (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, NIL as usize - 1);
        Peers {
            capacity,
            index: HashMap::with_capacity(capacity.min(1 << 16)),
            slots: Vec::new(),
            newest: NIL,
            oldest: NIL,
        }
    }

    /// Sources in the table now.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// A datagram from `addr` arrived at `now`: counts it, takes a token when `rate` (a
    /// second, also the burst) is set, and says whether to answer.
    pub(crate) fn arrive(&mut self, addr: SocketAddr, now: Instant, rate: Option<f64>) -> Verdict {
        let at = self.touch(addr, now, rate);
        let peer = &mut self.slots[at as usize].peer;
        peer.received += 1;
        if let Some(rate) = rate {
            let elapsed = now.saturating_duration_since(peer.filled).as_secs_f64();
            peer.tokens = (peer.tokens + elapsed * rate).min(rate);
            peer.filled = now;
            if peer.tokens < 1.0 {
                let first = !peer.limited;
                peer.limited = true;
                return Verdict::Limited { first };
            }
            peer.tokens -= 1.0;
            peer.limited = false;
        }
        Verdict::Answer(peer.received)
    }

    /// The number the next datagram from `addr` would have (FAULTS HOOK 1 draws by it).
    #[allow(dead_code)]
    pub(crate) fn next_number(&self, addr: &SocketAddr) -> u64 {
        self.index
            .get(addr)
            .map_or(1, |&at| self.slots[at as usize].peer.received + 1)
    }

    /// What the table holds of `addr`, if it does.
    #[cfg(test)]
    pub(crate) fn get(&self, addr: &SocketAddr) -> Option<&Peer> {
        self.index
            .get(addr)
            .map(|&at| &self.slots[at as usize].peer)
    }

    /// The slot of `addr`, made the newest; a new source takes a free slot or the oldest's.
    fn touch(&mut self, addr: SocketAddr, now: Instant, rate: Option<f64>) -> u32 {
        if let Some(&at) = self.index.get(&addr) {
            self.unlink(at);
            self.push_newest(at);
            return at;
        }
        let fresh = Peer {
            received: 0,
            tokens: rate.unwrap_or(0.0),
            filled: now,
            limited: false,
        };
        let at = if self.slots.len() < self.capacity {
            self.slots.push(Slot {
                addr,
                peer: fresh,
                newer: NIL,
                older: NIL,
            });
            (self.slots.len() - 1) as u32
        } else {
            let at = self.oldest;
            self.unlink(at);
            let slot = &mut self.slots[at as usize];
            self.index.remove(&slot.addr);
            slot.addr = addr;
            slot.peer = fresh;
            at
        };
        self.index.insert(addr, at);
        self.push_newest(at);
        at
    }

    fn unlink(&mut self, at: u32) {
        let (newer, older) = {
            let s = &self.slots[at as usize];
            (s.newer, s.older)
        };
        match newer {
            NIL => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
    }

    fn push_newest(&mut self, at: u32) {
        let old_newest = self.newest;
        {
            let s = &mut self.slots[at as usize];
            s.newer = NIL;
            s.older = old_newest;
        }
        match old_newest {
            NIL => self.oldest = at,
            n => self.slots[n as usize].newer = at,
        }
        self.newest = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_least_recently_seen_goes_first_and_the_table_stays_bounded() {
        let now = Instant::now();
        let mut peers = Peers::new(3);
        for port in 1..=3 {
            assert_eq!(peers.arrive(addr(port), now, None), Verdict::Answer(1));
        }
        // 1 is seen again: 2 is now the least recently seen, and goes for 4.
        assert_eq!(peers.arrive(addr(1), now, None), Verdict::Answer(2));
        peers.arrive(addr(4), now, None);
        assert!(peers.get(&addr(2)).is_none());
        assert_eq!(peers.get(&addr(1)).map(|p| p.received), Some(2));
        for port in 100..1_000 {
            peers.arrive(addr(port), now, None);
            assert!(peers.len() <= 3);
        }
        assert_eq!(peers.len(), 3);
        // An evicted source starts again at 1.
        assert_eq!(peers.arrive(addr(1), now, None), Verdict::Answer(1));
        assert_eq!(peers.arrive(addr(999), now, None), Verdict::Answer(2));
    }

    #[test]
    fn a_bucket_lets_a_burst_through_then_its_rate_and_logs_an_episode_once() {
        let start = Instant::now();
        let mut peers = Peers::new(8);
        let rate = Some(4.0);
        let verdicts: Vec<Verdict> = (0..7).map(|_| peers.arrive(addr(1), start, rate)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Answer(1),
                Verdict::Answer(2),
                Verdict::Answer(3),
                Verdict::Answer(4),
                Verdict::Limited { first: true },
                Verdict::Limited { first: false },
                Verdict::Limited { first: false },
            ]
        );
        // Another source has a bucket of its own.
        assert_eq!(peers.arrive(addr(2), start, rate), Verdict::Answer(1));
        // A quarter of a second later, one token: answered (counted all along), and the
        // next is a new episode.
        let later = start + Duration::from_millis(250);
        assert_eq!(peers.arrive(addr(1), later, rate), Verdict::Answer(8));
        assert_eq!(
            peers.arrive(addr(1), later, rate),
            Verdict::Limited { first: true }
        );
    }
}
