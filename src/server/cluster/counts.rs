//! What the link counts, as `/cluster`, `/stats` and the metrics read it.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::lag::{self, LagView};

/// The link's counts, for `/cluster` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Envelopes handed to the broker.
    pub published: u64,
    /// Events dropped because the queue to the link was full.
    pub dropped_queue_full: u64,
    /// Events dropped because the broker was unreachable.
    pub dropped_broker_down: u64,
    /// Envelopes from other nodes the client library dropped because this node did not take
    /// them fast enough (one per slow-consumer event it reported: a lower bound).
    pub dropped_slow_consumer: u64,
    /// Envelopes from other nodes taken (duplicates included).
    pub received: u64,
    /// Sequence numbers of other nodes never received.
    pub gaps: u64,
    /// Envelopes from other nodes received a second time (not relayed).
    pub duplicates: u64,
    /// Envelopes that could not be read or broke a rule (not relayed).
    pub malformed: u64,
    /// Heartbeats from other nodes taken.
    pub heartbeats: u64,
    /// Other nodes (distinct epochs) heard of with this node's name.
    pub name_conflicts: u64,
    /// Remote nodes or members refused at the presence bounds.
    pub presence_refused: u64,
    /// This node's lines held while the broker was away (`--cluster-history`).
    pub held: u64,
    /// Other nodes' lines missed, then fetched from the history after an outage of this
    /// node's link or arrived late.
    pub recovered: u64,
}

impl Counts {
    /// Dropped for every reason: events of local sessions not published, and envelopes of
    /// other nodes the client library let go.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_slow_consumer + self.dropped_broker_down
    }
}

/// `p50 0.12ms p99 2.1ms (n 40)`, with the clamped ones when there are some.
pub(super) fn lag_summary(lag: &LagView) -> String {
    if lag.count == 0 {
        return "none yet".into();
    }
    let shown = |s: f64| crate::units::Millis(Duration::from_secs_f64(s));
    let clamped = match lag.clamped {
        0 => String::new(),
        n => format!(", {n} clamped (clock skew)"),
    };
    format!(
        "p50 {}ms p99 {}ms (n {}{clamped})",
        shown(lag.p50_seconds),
        shown(lag.p99_seconds),
        lag.count
    )
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) published: AtomicU64,
    pub(super) dropped_queue_full: AtomicU64,
    pub(super) dropped_broker_down: AtomicU64,
    pub(super) dropped_slow_consumer: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) gaps: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) heartbeats: AtomicU64,
    pub(super) name_conflicts: AtomicU64,
    pub(super) held: AtomicU64,
    pub(super) recovered: AtomicU64,
    /// Publish-to-delivery lag of what other nodes sent: recorded by the link thread only.
    pub(super) lag: lag::Lag,
}
