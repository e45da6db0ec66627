//! What a chat run measured: one thread's [`Tally`], and the run's [`ChatReport`] for people
//! and for JSON, which [`ChatReport::merge`] adds up across generators.

use std::fmt;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::super::histogram::{HISTOGRAM_MAX_US, Percentiles, decode, encode, histogram};
use super::{ChatOptions, Shared};
use crate::client::bench::histogram::micros;

/// Why a client failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ErrorKind {
    /// The connect failed.
    Connect,
    /// Not ready (nickname granted, greeting or subscription seen) in time.
    JoinTimeout,
    /// The server closed or reset the connection.
    Closed,
    /// Redis answered with an error.
    ServerError,
}

/// Clients that failed, by why, and the first failure in words.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatErrors {
    /// Connects that failed.
    pub connect: u64,
    /// Clients not ready in time.
    pub join_timeout: u64,
    /// Connections the server closed or reset during the run (a reader cut for falling
    /// behind is one).
    pub closed: u64,
    /// Redis error replies.
    pub server_error: u64,
    /// Readers among them.
    pub readers: u64,
    /// The first failure: its kind and what was seen.
    pub first: Option<String>,
}

impl ChatErrors {
    /// Every failed client.
    pub fn total(&self) -> u64 {
        self.connect + self.join_timeout + self.closed + self.server_error
    }

    fn add(&mut self, other: &ChatErrors) {
        self.connect += other.connect;
        self.join_timeout += other.join_timeout;
        self.closed += other.closed;
        self.server_error += other.server_error;
        self.readers += other.readers;
        if self.first.is_none() {
            self.first.clone_from(&other.first);
        }
    }
}

/// What one thread measured.
pub(super) struct Tally {
    pub(super) ready_senders: usize,
    pub(super) ready_readers: usize,
    pub(super) lines_sent: u64,
    pub(super) not_sent: u64,
    pub(super) delivered: u64,
    pub(super) missing: u64,
    pub(super) duplicates: u64,
    pub(super) out_of_order: u64,
    pub(super) foreign: u64,
    /// When the last delivery came, µs from the run's time zero.
    pub(super) last_delivery_us: u64,
    local: Histogram<u64>,
    cross: Histogram<u64>,
    errors: ChatErrors,
}

impl Tally {
    pub(super) fn new() -> Tally {
        Tally {
            ready_senders: 0,
            ready_readers: 0,
            lines_sent: 0,
            not_sent: 0,
            delivered: 0,
            missing: 0,
            duplicates: 0,
            out_of_order: 0,
            foreign: 0,
            last_delivery_us: 0,
            local: histogram(),
            cross: histogram(),
            errors: ChatErrors::default(),
        }
    }

    pub(super) fn record(&mut self, local: bool, us: u64) {
        let h = if local {
            &mut self.local
        } else {
            &mut self.cross
        };
        h.saturating_record(us.clamp(1, HISTOGRAM_MAX_US));
    }

    pub(super) fn error(&mut self, kind: ErrorKind, sender: bool, detail: &str) {
        let e = &mut self.errors;
        let name = match kind {
            ErrorKind::Connect => {
                e.connect += 1;
                "connect"
            }
            ErrorKind::JoinTimeout => {
                e.join_timeout += 1;
                "join_timeout"
            }
            ErrorKind::Closed => {
                e.closed += 1;
                "closed"
            }
            ErrorKind::ServerError => {
                e.server_error += 1;
                "server_error"
            }
        };
        if !sender {
            e.readers += 1;
        }
        if e.first.is_none() {
            let who = if sender { "sender" } else { "reader" };
            e.first = Some(format!("{name} ({who}): {detail}"));
        }
    }
}

/// A chat run's result. `deliveries_expected` is every line sent times every reader that
/// was ready when the first line was due; `delivered + missing` equals it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatReport {
    /// `chat` (tcpool chat) or `redis` (pub/sub).
    pub chat_protocol: String,
    /// The targets, as given.
    pub targets: Vec<String>,
    /// Senders asked for.
    pub senders: usize,
    /// Readers asked for.
    pub readers: usize,
    /// Senders ready when the first line was due.
    pub senders_ready: usize,
    /// Readers ready when the first line was due: each is expected to get every line.
    pub readers_ready: usize,
    /// Lines per second per sender; `None`: as fast as the server took them.
    pub rate: Option<f64>,
    /// The sending window, in seconds.
    pub duration_s: f64,
    /// Lines sent in all.
    pub lines_sent: u64,
    /// Lines due in the window that the senders could not write (the server was not reading
    /// them): with a rate only.
    pub lines_not_sent: u64,
    /// Lines sent times ready readers.
    pub deliveries_expected: u64,
    /// Lines received by readers, once each (late ones included).
    pub delivered: u64,
    /// Deliveries expected and never seen (by the end of the drain).
    pub missing: u64,
    /// Lines a reader saw more than once (each extra time counts).
    pub duplicates: u64,
    /// Lines a reader saw after a later line of the same sender (also delivered).
    pub out_of_order: u64,
    /// Lines of this run naming a sender that does not exist.
    pub foreign: u64,
    /// Lines sent per second of the window.
    pub lines_per_sec: f64,
    /// Deliveries expected per second of the window.
    pub expected_per_sec: f64,
    /// From the first line due to the last delivery, in seconds (the window at least): a
    /// server that falls behind delivers into the drain, and its rate is counted over that.
    #[serde(default)]
    pub delivery_span_s: f64,
    /// Deliveries received per second of the delivery span.
    pub delivered_per_sec: f64,
    /// Delivery latency, µs, from each line's intended send time, of readers on the
    /// sender's target.
    pub local_us: Percentiles,
    /// The same, of readers on another target (another node of the cluster).
    pub cross_node_us: Percentiles,
    /// Deliveries to readers on the sender's target.
    pub local_deliveries: u64,
    /// Deliveries to readers on another target.
    pub cross_node_deliveries: u64,
    /// The local latencies' histogram (HdrHistogram V2 deflate, base64), for merging.
    pub local_histogram: String,
    /// The cross-node latencies' histogram.
    pub cross_node_histogram: String,
    /// Clients that failed.
    pub errors: ChatErrors,
    /// Reports added together by `bench merge` (1 for a run).
    pub generators: usize,
}

pub(super) fn report(
    options: &ChatOptions,
    shared: &Shared<'_>,
    tallies: Vec<Tally>,
) -> ChatReport {
    let mut local = histogram();
    let mut cross = histogram();
    let mut errors = ChatErrors::default();
    let (mut senders_ready, mut readers_ready) = (0, 0);
    let (mut not_sent, mut delivered, mut missing, mut duplicates, mut out_of_order, mut foreign) =
        (0, 0, 0, 0, 0, 0);
    for t in &tallies {
        // Histograms of the same bounds always add.
        let _ = local.add(&t.local);
        let _ = cross.add(&t.cross);
        errors.add(&t.errors);
        senders_ready += t.ready_senders;
        readers_ready += t.ready_readers;
        not_sent += t.not_sent;
        delivered += t.delivered;
        missing += t.missing;
        duplicates += t.duplicates;
        out_of_order += t.out_of_order;
        foreign += t.foreign;
    }
    let first_due = shared
        .go
        .get()
        .map_or(0, |go| micros(go.saturating_duration_since(shared.epoch)));
    let last = tallies
        .iter()
        .map(|t| t.last_delivery_us)
        .max()
        .unwrap_or(0);
    let window = options.duration.as_secs_f64();
    let delivery_span_s = window.max(last.saturating_sub(first_due) as f64 / 1e6);
    let lines_sent: u64 = shared
        .sent
        .iter()
        .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let mut report = ChatReport {
        chat_protocol: options.protocol.to_string(),
        targets: options.targets.iter().map(ToString::to_string).collect(),
        senders: options.senders,
        readers: options.readers,
        senders_ready,
        readers_ready,
        rate: options.rate,
        duration_s: options.duration.as_secs_f64(),
        lines_sent,
        lines_not_sent: not_sent,
        deliveries_expected: lines_sent * readers_ready as u64,
        delivered,
        missing,
        duplicates,
        out_of_order,
        foreign,
        lines_per_sec: 0.0,
        expected_per_sec: 0.0,
        delivery_span_s,
        delivered_per_sec: 0.0,
        local_us: Percentiles::of(&local),
        cross_node_us: Percentiles::of(&cross),
        local_deliveries: local.len(),
        cross_node_deliveries: cross.len(),
        local_histogram: encode(&local),
        cross_node_histogram: encode(&cross),
        errors,
        generators: 1,
    };
    report.per_second();
    report
}

impl ChatReport {
    fn per_second(&mut self) {
        let secs = self.duration_s.max(1e-9);
        self.lines_per_sec = self.lines_sent as f64 / secs;
        self.expected_per_sec = self.deliveries_expected as f64 / secs;
        let span = self.delivery_span_s.max(secs);
        self.delivered_per_sec = self.delivered as f64 / span;
    }

    /// Nothing lost, doubled or reordered, and no client failed.
    pub fn clean(&self) -> bool {
        self.missing == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.errors.total() == 0
            && self.delivered == self.deliveries_expected
    }

    /// Several generators' reports as one: counts added, histograms added (percentiles of all
    /// deliveries together), rates over the longest window. Each generator's readers check
    /// only its own senders' lines: the generators must have run at the same time for the
    /// sum to be one room's load.
    ///
    /// # Errors
    ///
    /// No reports, or a histogram that does not decode.
    pub fn merge(reports: &[ChatReport]) -> Result<ChatReport, String> {
        let Some(first) = reports.first() else {
            return Err("nothing to merge".into());
        };
        let mut out = first.clone();
        let mut local = decode(&first.local_histogram)?;
        let mut cross = decode(&first.cross_node_histogram)?;
        for r in &reports[1..] {
            local
                .add(decode(&r.local_histogram)?)
                .map_err(|e| format!("cannot add the histograms: {e:?}"))?;
            cross
                .add(decode(&r.cross_node_histogram)?)
                .map_err(|e| format!("cannot add the histograms: {e:?}"))?;
            for t in &r.targets {
                if !out.targets.contains(t) {
                    out.targets.push(t.clone());
                }
            }
            if out.chat_protocol != r.chat_protocol {
                out.chat_protocol = "mixed".into();
            }
            out.rate = if out.rate == r.rate { out.rate } else { None };
            out.senders += r.senders;
            out.readers += r.readers;
            out.senders_ready += r.senders_ready;
            out.readers_ready += r.readers_ready;
            out.duration_s = out.duration_s.max(r.duration_s);
            out.delivery_span_s = out.delivery_span_s.max(r.delivery_span_s);
            out.lines_sent += r.lines_sent;
            out.lines_not_sent += r.lines_not_sent;
            out.deliveries_expected += r.deliveries_expected;
            out.delivered += r.delivered;
            out.missing += r.missing;
            out.duplicates += r.duplicates;
            out.out_of_order += r.out_of_order;
            out.foreign += r.foreign;
            out.errors.add(&r.errors);
            out.generators += r.generators;
        }
        out.local_us = Percentiles::of(&local);
        out.cross_node_us = Percentiles::of(&cross);
        out.local_deliveries = local.len();
        out.cross_node_deliveries = cross.len();
        out.local_histogram = encode(&local);
        out.cross_node_histogram = encode(&cross);
        out.per_second();
        Ok(out)
    }
}

impl fmt::Display for ChatReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = match self.rate {
            Some(r) => format!("{r} lines/s per sender"),
            None => "as fast as taken".into(),
        };
        writeln!(
            f,
            "Chat ({}) over {}: {} senders ({} ready), {} readers ({} ready), {rate}, {:.1} s",
            self.chat_protocol,
            self.targets.join(" "),
            self.senders,
            self.senders_ready,
            self.readers,
            self.readers_ready,
            self.duration_s
        )?;
        writeln!(
            f,
            "  lines sent    {:>12}  {:>12.0}/s   (not sent on time: {})",
            self.lines_sent, self.lines_per_sec, self.lines_not_sent
        )?;
        writeln!(
            f,
            "  deliveries    {:>12}  {:>12.0}/s   expected {} ({:.0}/s); the last {:.1} s after the first line was due",
            self.delivered,
            self.delivered_per_sec,
            self.deliveries_expected,
            self.expected_per_sec,
            self.delivery_span_s
        )?;
        writeln!(
            f,
            "  missing {}  duplicates {}  out of order {}",
            self.missing, self.duplicates, self.out_of_order
        )?;
        writeln!(
            f,
            "  latency (µs)          p50       p99     p99.9       max       count"
        )?;
        for (name, p, count) in [
            ("local", &self.local_us, self.local_deliveries),
            (
                "cross-node",
                &self.cross_node_us,
                self.cross_node_deliveries,
            ),
        ] {
            writeln!(
                f,
                "    {name:<12} {:>10} {:>9} {:>9} {:>9} {:>11}",
                p.p50, p.p99, p.p999, p.max, count
            )?;
        }
        match &self.errors.first {
            None => writeln!(f, "  errors: none"),
            Some(first) => writeln!(
                f,
                "  errors: {} (connect {}, join_timeout {}, closed {}, server_error {}; readers {})\n  first: {first}",
                self.errors.total(),
                self.errors.connect,
                self.errors.join_timeout,
                self.errors.closed,
                self.errors.server_error,
                self.errors.readers
            ),
        }
    }
}
