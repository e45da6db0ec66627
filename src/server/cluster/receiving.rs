//! The receiving side of the cluster link: what goes over the broker ([`Envelope`]), how an
//! envelope is read and checked, and the bookkeeping of what each other node sent: its
//! sequence numbers (gaps and duplicates counted), its heartbeats, and a node with this
//! node's name.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::presence::read_beat;
use super::{CONFLICT_LOG, LOG, Link, LinkState, MAX_ENVELOPE, TTL, check_origin, read_json};
use crate::server::modes::chat::{Kind, MAX_RELAYED, check_nick, relayed};
use crate::server::session::registry::Registry;
use crate::time::Throttle;

/// What goes over the broker: an [`Event`] with its origin and its place in the origin's
/// sequence. JSON, one object per message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Envelope {
    pub(super) v: u8,
    pub(super) node: String,
    pub(super) epoch: u64,
    pub(super) seq: u64,
    pub(super) kind: Kind,
    pub(super) id: u64,
    #[serde(default)]
    pub(super) nick: Option<String>,
    #[serde(default)]
    pub(super) old: Option<String>,
    #[serde(default)]
    pub(super) text: String,
    /// When the origin's link published it: microseconds since the Unix epoch by the
    /// origin's clock (absent from the envelopes of older nodes: no lag is recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) sent_us: Option<u64>,
}

/// The envelope's version this node writes and reads.
pub(super) const VERSION: u8 = 1;

/// Sequence numbers seen from the other nodes; bounded.
pub(super) struct Receiving {
    own: String,
    seen: HashMap<(String, u64), Seen>,
    malformed_log: Throttle,
    gap_log: Throttle,
    conflict_log: Throttle,
}

/// Origins remembered at most; past this the map starts over (a restart of every node
/// costs one uncounted gap each, no memory).
const MAX_ORIGINS: usize = 4096;

/// Of an origin's missed sequence numbers, how many are remembered (the newest), so that a
/// replay from the history can fill them.
const MAX_MISSING: usize = 1024;

/// What one origin (a node in one epoch) has sent so far.
#[derive(Debug, Default)]
struct Seen {
    /// The highest sequence number taken.
    last: u64,
    /// Numbers below `last` never taken (the newest [`MAX_MISSING`]).
    missing: BTreeSet<u64>,
}

impl Seen {
    /// Records `seq` as taken. Returns whether it is new (to be shown) and how many numbers
    /// it shows were missed.
    fn take(&mut self, seq: u64) -> (bool, u64) {
        if seq > self.last {
            let missed = seq - self.last - 1;
            let remember = missed.min(MAX_MISSING as u64);
            self.missing.extend(seq - remember..seq);
            while self.missing.len() > MAX_MISSING {
                self.missing.pop_first();
            }
            self.last = seq;
            (true, missed)
        } else {
            (self.missing.remove(&seq), 0)
        }
    }
}

impl Receiving {
    pub(super) fn new(own: String) -> Self {
        Receiving {
            own,
            seen: HashMap::new(),
            malformed_log: Throttle::new(Duration::from_secs(1)),
            gap_log: Throttle::new(Duration::from_secs(1)),
            conflict_log: Throttle::new(CONFLICT_LOG),
        }
    }

    fn malformed(&mut self, link: &Link, why: &str, bytes: usize) {
        link.counters.malformed.fetch_add(1, Ordering::Relaxed);
        if let Some(held) = self.malformed_log.ready() {
            log::warn!(
                target: LOG,
                "cluster: envelope dropped: {why} (bytes={bytes}, {held} more not logged)"
            );
        }
    }

    /// Whether a word with this node's name is another node's (the broker does not echo
    /// this node's own): counted once per epoch, logged at most once per [`CONFLICT_LOG`].
    fn own_name(&mut self, link: &Link, node: &str, epoch: u64) -> bool {
        if node != self.own {
            return false;
        }
        if epoch != link.epoch {
            link.conflict(epoch);
            if self.conflict_log.ready().is_some() {
                log::error!(
                    target: LOG,
                    "cluster: another node is named {} (epoch {epoch}; this one is epoch {}): \
                     each ignores the other's lines; give every node its own --node",
                    self.own,
                    link.epoch
                );
            }
        }
        true
    }

    /// Shows `lines` to every local session.
    fn show(lines: &[String], registry: &Registry) {
        let mut pressed = Vec::new();
        for line in lines {
            registry.relay_line(line.as_bytes(), |_| true, &mut pressed);
        }
    }

    pub(super) fn take_beat(&mut self, link: &Link, payload: &[u8], registry: &Registry) {
        let beat = match read_beat(payload) {
            Ok(beat) => beat,
            Err(why) => return self.malformed(link, &why, payload.len()),
        };
        if self.own_name(link, &beat.node, beat.epoch) {
            return;
        }
        link.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
        let mut lines = Vec::new();
        link.presence.lock().beat(beat, Instant::now(), &mut lines);
        Receiving::show(&lines, registry);
    }

    /// Shows the members of the nodes not heard of for [`TTL`] as left; while this node's
    /// link is down, nobody's time runs out.
    pub(super) fn sweep(&mut self, link: &Link, registry: &Registry) {
        let mut lines = Vec::new();
        {
            let mut presence = link.presence.lock();
            if link.state() == LinkState::Up {
                presence.expire(Instant::now(), TTL, &mut lines);
            } else {
                presence.pause(Instant::now());
            }
        }
        Receiving::show(&lines, registry);
    }

    /// Takes an envelope that arrived live.
    pub(super) fn take(&mut self, link: &Link, payload: &[u8], registry: &Registry) {
        self.take_as(link, payload, registry, false);
    }

    /// Takes an envelope fetched from the history after an outage: one already taken is
    /// skipped quietly (the fetch starts a little early on purpose), one that was missed fills
    /// its gap.
    pub(super) fn take_replayed(&mut self, link: &Link, payload: &[u8], registry: &Registry) {
        self.take_as(link, payload, registry, true);
    }

    fn take_as(&mut self, link: &Link, payload: &[u8], registry: &Registry, replayed: bool) {
        let envelope = match read_envelope(payload) {
            Ok(envelope) => envelope,
            Err(why) => return self.malformed(link, &why, payload.len()),
        };
        if self.own_name(link, &envelope.node, envelope.epoch) {
            return;
        }
        let key = (envelope.node.clone(), envelope.epoch);
        if !self.seen.contains_key(&key) && self.seen.len() >= MAX_ORIGINS {
            self.seen.clear();
        }
        // An origin first heard of (in a replay too: one that spoke only during the outage)
        // is shown and followed from there on.
        let first = !self.seen.contains_key(&key);
        let seen = self.seen.entry(key).or_default();
        let (new, missed) = if first {
            seen.last = envelope.seq;
            (true, 0)
        } else {
            seen.take(envelope.seq)
        };
        if !replayed {
            link.counters.received.fetch_add(1, Ordering::Relaxed);
        }
        if !new {
            if !replayed {
                link.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        // Fetched from the history, or a missed number arriving late: brought back.
        if replayed || envelope.seq < seen.last {
            link.counters.recovered.fetch_add(1, Ordering::Relaxed);
        }
        if missed > 0 {
            link.counters.gaps.fetch_add(missed, Ordering::Relaxed);
            if let Some(held) = self.gap_log.ready() {
                log::warn!(
                    target: LOG,
                    "cluster: {missed} line(s) from node {} lost (sequence {} to {}; \
                     {held} other gap(s) not logged)",
                    envelope.node,
                    envelope.seq - missed,
                    envelope.seq - 1
                );
            }
        }
        // A restart of that node first shows its earlier members as left.
        let mut lines = Vec::new();
        let mut presence = link.presence.lock();
        presence.event(
            (&envelope.node, envelope.epoch),
            envelope.kind,
            envelope.id,
            &envelope.nick,
            Instant::now(),
            &mut lines,
        );
        presence.tally(&envelope.node, envelope.epoch, missed);
        drop(presence);
        lines.push(shown(&envelope));
        Receiving::show(&lines, registry);
        // The lag is that of live delivery: a line fetched after an outage is late on purpose.
        if let Some(sent) = envelope.sent_us
            && !replayed
        {
            link.counters.lag.record(sent, super::lag::now_us());
        }
        if envelope.kind == Kind::Nick {
            link.contest(&envelope, registry);
        }
    }
}

/// Reads and checks an envelope from the broker.
pub(super) fn read_envelope(payload: &[u8]) -> Result<Envelope, String> {
    let envelope: Envelope = read_json(payload, MAX_ENVELOPE, "an envelope")?;
    check_origin(envelope.v, &envelope.node)?;
    if envelope.seq == 0 {
        return Err("sequence 0".into());
    }
    for nick in [&envelope.nick, &envelope.old].into_iter().flatten() {
        if check_nick(nick).as_deref() != Ok(nick.as_str()) {
            return Err("a nickname no session could choose".into());
        }
    }
    // A session gives a nickname up (back to `#ID`) only when it lost it to a crossed claim.
    if envelope.kind == Kind::Nick && envelope.nick.is_none() && envelope.old.is_none() {
        return Err("a nickname change without a nickname".into());
    }
    Ok(envelope)
}

/// The line local sessions are shown for an envelope: as a local relay, with the origin.
pub(super) fn shown(envelope: &Envelope) -> String {
    let name = |nick: &Option<String>| {
        nick.clone()
            .unwrap_or_else(|| format!("#{}@{}", envelope.id, envelope.node))
    };
    let who = name(&envelope.nick);
    match envelope.kind {
        // Escaping is idempotent on escaped text: a line from a tcpool node passes as it is,
        // anything else is escaped and cut here.
        Kind::Line => format!(
            "<{who}> {}",
            relayed(envelope.text.as_bytes(), MAX_RELAYED + 64)
        ),
        Kind::Nick => format!("* {} is now {who}", name(&envelope.old)),
        Kind::Join => format!("* {who} joined"),
        Kind::Left => format!("* {who} left"),
    }
}
