//! [`Exposition`]: the workers' cells summed at scrape time and written in the Prometheus
//! text format.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::{
    CLOSE_REASONS, HANDSHAKE_BOUNDS, Handshake, HandshakeFailure, Histogram, Metrics, REPLY_BOUNDS,
    Rejection, SESSION_BOUNDS, close_index, close_label,
};
use crate::server::cluster::{Link, LinkState};
use crate::server::faults::Faults;
use crate::server::operator::audit::Audit;
use crate::server::session::registry::Registry;
use crate::tls::Certificates;

/// Everything a scrape reads: the server's [`Metrics`], the registry's counts, the
/// backlog's capacity and the faults.
#[derive(Debug, Clone)]
pub struct Exposition {
    metrics: Arc<Metrics>,
    registry: Registry,
    backlog_capacity: usize,
    faults: Option<Faults>,
    audit: Option<Audit>,
    /// The server speaks TLS: its handshakes are counted.
    tls: bool,
    /// Its certificate of the moment: when it expires, and how its reloads went.
    certificates: Option<Certificates>,
    /// The cluster link's counts.
    cluster: Option<Arc<Link>>,
    /// The UDP echo's counts.
    udp: Option<Arc<crate::server::udp::UdpCounts>>,
}

impl Exposition {
    /// A view over one server's counts.
    pub fn new(metrics: Arc<Metrics>, registry: Registry, backlog_capacity: usize) -> Self {
        Exposition {
            metrics,
            registry,
            backlog_capacity,
            faults: None,
            audit: None,
            tls: false,
            certificates: None,
            cluster: None,
            udp: None,
        }
    }

    /// Also exposes the UDP echo's counts (`--udp`): datagrams and bytes in and out
    /// (`tcpool_udp_datagrams_total{direction}`, `tcpool_udp_bytes_total{direction}`) and
    /// datagrams not answered, by reason (`tcpool_udp_unanswered_total{reason}`).
    pub fn with_udp(mut self, counts: Arc<crate::server::udp::UdpCounts>) -> Self {
        self.udp = Some(counts);
        self
    }

    /// Also exposes the cluster link: whether it is up (`tcpool_cluster_up`), envelopes
    /// published and received, events dropped by reason
    /// (`tcpool_cluster_dropped_total{reason="queue-full"}`), sequence gaps, duplicates,
    /// malformed envelopes, heartbeats, name conflicts and presence refusals.
    pub fn with_cluster(mut self, link: Arc<Link>) -> Self {
        self.cluster = Some(link);
        self
    }

    /// Also exposes when the certificate in use expires
    /// (`tcpool_tls_certificate_expiry_seconds`) and, when it comes from files, how many
    /// reloads put one in place or were refused (`tcpool_tls_reloads_total{result="ok"}`).
    pub fn with_certificates(mut self, certificates: Certificates) -> Self {
        self.certificates = Some(certificates);
        self
    }

    /// Also exposes the TLS handshakes (`tcpool_tls_handshakes_total{result="full"}`, the
    /// `tcpool_tls_handshake_seconds` histogram).
    pub fn with_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Also exposes the changes made at run time, by action and by who asked
    /// (`tcpool_changes_total{action="fault-add",source="admin"}`).
    pub fn with_audit(mut self, audit: Audit) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Also exposes how many sessions each of the active `faults` touched
    /// (`tcpool_fault_sessions_total{fault="#1 latency,delay=20ms"}`).
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = Some(faults);
        self
    }

    /// The Prometheus text exposition of every metric now ([`CONTENT_TYPE`](super::CONTENT_TYPE)).
    pub fn encode(&self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        // Writing to a String cannot fail, and every name and label here is valid.
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            .expect("the text encoding of fixed names into a String does not fail");
        out
    }
}

/// Writes one metric family: a descriptor, then one series per `(label value, value)`, or a
/// single unlabelled series when `label` is `None`.
fn family<V>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    label: Option<&'static str>,
    series: impl IntoIterator<Item = (String, V)>,
) -> fmt::Result
where
    V: Into<Sample>,
{
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    let Some(key) = label else {
        return match series.into_iter().next() {
            Some((_, value)) => value.into().encode(kind, metric),
            None => Ok(()),
        };
    };
    for (value_label, value) in series {
        let labels = [(key, value_label.as_str())];
        value.into().encode(kind, metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A sample's value: counts are integers, times are floats.
#[derive(Clone, Copy)]
enum Sample {
    Count(u64),
    Seconds(f64),
}

impl From<u64> for Sample {
    fn from(v: u64) -> Self {
        Sample::Count(v)
    }
}

impl From<f64> for Sample {
    fn from(v: f64) -> Self {
        Sample::Seconds(v)
    }
}

impl Sample {
    fn encode(
        self,
        kind: MetricType,
        encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> fmt::Result {
        match (kind, self) {
            (MetricType::Counter, Sample::Count(v)) => ConstCounter::new(v).encode(encoder),
            (MetricType::Counter, Sample::Seconds(v)) => ConstCounter::new(v).encode(encoder),
            (_, Sample::Count(v)) => {
                ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(encoder)
            }
            (_, Sample::Seconds(v)) => ConstGauge::new(v).encode(encoder),
        }
    }
}

fn one<V>(value: V) -> [(String, V); 1] {
    [(String::new(), value)]
}

impl Collector for Exposition {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        use MetricType::{Counter, Gauge};
        let m = &*self.metrics;
        let stats = self.registry.stats();
        let mut closed = [0u64; CLOSE_REASONS.len()];
        let mut durations = Merged::new(&SESSION_BOUNDS);
        let mut replies = Merged::new(&REPLY_BOUNDS);
        let mut handshakes = [0u64; Handshake::ALL.len()];
        let mut failures = [0u64; HandshakeFailure::ALL.len()];
        let mut handshake_times = Merged::new(&HANDSHAKE_BOUNDS);
        for w in m.workers.iter() {
            for (total, count) in handshakes.iter_mut().zip(&w.handshakes) {
                *total += count.load(Ordering::Relaxed);
            }
            for (total, count) in failures.iter_mut().zip(&w.handshake_failures) {
                *total += count.load(Ordering::Relaxed);
            }
            handshake_times.add(&w.handshake_times);
            for (total, count) in closed.iter_mut().zip(&w.closed) {
                *total += count.load(Ordering::Relaxed);
            }
            durations.add(&w.durations);
            replies.add(&w.replies);
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

        let sessions_help = "Sessions connected now, including those waiting in the backlog";
        family(
            &mut e,
            "tcpool_sessions_active",
            sessions_help,
            Gauge,
            None,
            one(stats.sessions as u64),
        )?;
        family(
            &mut e,
            "tcpool_sessions",
            "Sessions opened",
            Counter,
            None,
            one(stats.total),
        )?;
        let rejected = Rejection::ALL
            .iter()
            .map(|&r| (r.as_str().to_owned(), load(&m.rejected[r as usize])));
        family(
            &mut e,
            "tcpool_sessions_rejected",
            "Connections answered busy, by reason",
            Counter,
            Some("reason"),
            rejected,
        )?;
        let closed_series = CLOSE_REASONS
            .iter()
            .map(|&r| (close_label(r).to_owned(), closed[close_index(r)]));
        family(
            &mut e,
            "tcpool_sessions_closed",
            "Sessions closed, by reason",
            Counter,
            Some("reason"),
            closed_series,
        )?;
        let t = stats.traffic;
        let directions = |i: u64, o: u64| [("in".to_owned(), i), ("out".to_owned(), o)];
        family(
            &mut e,
            "tcpool_messages",
            "Messages received (in) and sent (out)",
            Counter,
            Some("direction"),
            directions(t.messages_in, t.messages_out),
        )?;
        family(
            &mut e,
            "tcpool_bytes",
            "Bytes read from (in) and written to (out) peers",
            Counter,
            Some("direction"),
            directions(t.bytes_in, t.bytes_out),
        )?;
        family(
            &mut e,
            "tcpool_backlog",
            "Connections accepted but not yet adopted by a worker",
            Gauge,
            None,
            one(stats.backlog as u64),
        )?;
        family(
            &mut e,
            "tcpool_backlog_capacity",
            "The backlog's size (--backlog)",
            Gauge,
            None,
            one(self.backlog_capacity as u64),
        )?;
        let per_worker = m
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| (i.to_string(), w.sessions.load(Ordering::Relaxed) as u64));
        family(
            &mut e,
            "tcpool_worker_sessions",
            "Sessions each worker serves now (worker = the N of thread tcpool-worker-N)",
            Gauge,
            Some("worker"),
            per_worker,
        )?;
        let moved = m
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| (i.to_string(), w.moved_in.load(Ordering::Relaxed)));
        family(
            &mut e,
            "tcpool_worker_sessions_moved_in",
            "Sessions other workers handed to each worker (--balance auto)",
            Counter,
            Some("worker"),
            moved,
        )?;
        family(
            &mut e,
            "tcpool_workers_in_use",
            "Workers taking new sessions now; the others hand theirs on (--balance auto)",
            Gauge,
            None,
            one(m.in_use.load(Ordering::Relaxed) as u64),
        )?;
        family(
            &mut e,
            "tcpool_accept_errors",
            "Failed accept() calls (such as running out of descriptors)",
            Counter,
            None,
            one(load(&m.accept_errors)),
        )?;
        durations.encode(
            &mut e,
            "tcpool_session_duration_seconds",
            "How long closed sessions lasted",
        )?;
        replies.encode(
            &mut e,
            "tcpool_reply_seconds",
            "Time from reading a message to writing its reply",
        )?;
        if self.tls {
            let series = Handshake::ALL
                .iter()
                .map(|&h| (h.as_str().to_owned(), handshakes[h as usize]));
            family(
                &mut e,
                "tcpool_tls_handshakes",
                "TLS handshakes, by how they ended: full, resumed, failed, timeout",
                Counter,
                Some("result"),
                series,
            )?;
            let series = HandshakeFailure::ALL
                .iter()
                .map(|&f| (f.as_str().to_owned(), failures[f as usize]));
            family(
                &mut e,
                "tcpool_tls_handshake_failures",
                "Failed TLS handshakes, by why: not-tls, no-common-ground, client-certificate, \
                 peer-alert, closed, other",
                Counter,
                Some("reason"),
                series,
            )?;
            handshake_times.encode(
                &mut e,
                "tcpool_tls_handshake_seconds",
                "How long TLS handshakes that were done took, from their start",
            )?;
        }
        if let Some(certificates) = &self.certificates {
            family(
                &mut e,
                "tcpool_tls_certificate_expiry_seconds",
                "When the TLS certificate in use expires, in seconds since the Unix epoch",
                Gauge,
                None,
                one(u64::try_from(certificates.identity().not_after).unwrap_or(0)),
            )?;
            if certificates.reloadable() {
                let (ok, failed) = certificates.reloads();
                family(
                    &mut e,
                    "tcpool_tls_reloads",
                    "Reloads of the TLS certificate files: ok put a certificate in place, \
                     failed kept the one in use",
                    Counter,
                    Some("result"),
                    [("ok".to_owned(), ok), ("failed".to_owned(), failed)],
                )?;
            }
        }
        if let Some(faults) = &self.faults {
            // Active faults only: a cleared fault's series leaves, so that adding and
            // clearing faults for the life of a server does not grow the exposition.
            let (datagrams, sessions): (Vec<_>, Vec<_>) = faults
                .active()
                .into_iter()
                .partition(|f| f.spec.kind.is_udp());
            let touched = |list: Vec<crate::server::faults::FaultInfo>| {
                list.into_iter()
                    .map(|f| (format!("#{} {}", f.id, f.spec), f.sessions))
                    .collect::<Vec<_>>()
            };
            family(
                &mut e,
                "tcpool_fault_sessions",
                "Sessions each active fault touched",
                Counter,
                Some("fault"),
                touched(sessions),
            )?;
            if !datagrams.is_empty() {
                family(
                    &mut e,
                    "tcpool_fault_datagrams",
                    "Datagrams each active datagram fault (udp-*) touched",
                    Counter,
                    Some("fault"),
                    touched(datagrams),
                )?;
            }
        }
        if let Some(audit) = &self.audit {
            let mut metric = e.encode_descriptor(
                "tcpool_changes",
                "Changes made at run time (faults, kicks, shutdown), by action and by who asked",
                None,
                Counter,
            )?;
            for (action, source, n) in audit.counts() {
                let labels = [("action", action), ("source", source)];
                ConstCounter::new(n).encode(metric.encode_family(&labels)?)?;
            }
        }
        if let Some(link) = &self.cluster {
            let c = link.counts();
            family(
                &mut e,
                "tcpool_cluster_up",
                "Whether the cluster link reaches the broker now (1) or not (0)",
                Gauge,
                None,
                one(u64::from(link.state() == LinkState::Up)),
            )?;
            let counters: [(&str, &str, u64); 10] = [
                (
                    "tcpool_cluster_published",
                    "Envelopes of local sessions handed to the broker",
                    c.published,
                ),
                (
                    "tcpool_cluster_received",
                    "Envelopes from other nodes received (duplicates included)",
                    c.received,
                ),
                (
                    "tcpool_cluster_gaps",
                    "Sequence numbers of other nodes never received: lines lost on the way",
                    c.gaps,
                ),
                (
                    "tcpool_cluster_duplicates",
                    "Envelopes from other nodes received again, not relayed",
                    c.duplicates,
                ),
                (
                    "tcpool_cluster_malformed",
                    "Envelopes from the broker that could not be read or broke a rule, not relayed",
                    c.malformed,
                ),
                (
                    "tcpool_cluster_heartbeats",
                    "Presence heartbeats from other nodes received",
                    c.heartbeats,
                ),
                (
                    "tcpool_cluster_name_conflicts",
                    "Other nodes (distinct epochs) heard of with this node's name",
                    c.name_conflicts,
                ),
                (
                    "tcpool_cluster_presence_refused",
                    "Remote nodes or members not kept: past the presence bounds",
                    c.presence_refused,
                ),
                (
                    "tcpool_cluster_held",
                    "Envelopes of local sessions held while the broker was away (--cluster-history)",
                    c.held,
                ),
                (
                    "tcpool_cluster_recovered",
                    "Envelopes of other nodes fetched from the history after this link's outage",
                    c.recovered,
                ),
            ];
            for (name, help, value) in counters {
                family(&mut e, name, help, Counter, None, one(value))?;
            }
            family(
                &mut e,
                "tcpool_cluster_dropped",
                "Lines dropped on the way between nodes, by reason: queue-full and broker-down \
                 (local events not published), slow-consumer (other nodes' envelopes the \
                 client library let go)",
                Counter,
                Some("reason"),
                [
                    ("queue-full".to_owned(), c.dropped_queue_full),
                    ("slow-consumer".to_owned(), c.dropped_slow_consumer),
                    ("broker-down".to_owned(), c.dropped_broker_down),
                ],
            )?;
            let lag = link.lag();
            family(
                &mut e,
                "tcpool_cluster_delivery_lag_clamped",
                "Delivery lags below zero or above a minute (clock skew between nodes), \
                 clamped into range and recorded",
                Counter,
                None,
                one(lag.clamped),
            )?;
            e.encode_descriptor(
                "tcpool_cluster_delivery_lag_seconds",
                "Time from another node's publish to this node's hand-off to local sessions \
                 (wall clocks of both nodes)",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                lag.sum_seconds,
                lag.count,
                &lag.buckets,
                None,
            )?;
        }
        if let Some(udp) = &self.udp {
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            family(
                &mut e,
                "tcpool_udp_datagrams",
                "UDP datagrams read (in) and echoes sent (out)",
                Counter,
                Some("direction"),
                [
                    ("in".to_owned(), load(&udp.datagrams_in)),
                    ("out".to_owned(), load(&udp.datagrams_out)),
                ],
            )?;
            family(
                &mut e,
                "tcpool_udp_bytes",
                "UDP payload bytes read (in) and sent (out)",
                Counter,
                Some("direction"),
                [
                    ("in".to_owned(), load(&udp.bytes_in)),
                    ("out".to_owned(), load(&udp.bytes_out)),
                ],
            )?;
            family(
                &mut e,
                "tcpool_udp_unanswered",
                "UDP datagrams not echoed, by reason: refused by --allow/--deny, over --udp-rate-per-source, asking for no answer (--udp-reply sockperf), or the echo dropped by the kernel",
                Counter,
                Some("reason"),
                [
                    ("refused".to_owned(), load(&udp.refused)),
                    ("rate-limited".to_owned(), load(&udp.rate_limited)),
                    ("not-asked".to_owned(), load(&udp.not_asked)),
                    ("dropped".to_owned(), load(&udp.dropped)),
                ],
            )?;
            if let Some(faults) = &self.faults {
                family(
                    &mut e,
                    "tcpool_udp_faulted",
                    "UDP datagrams the datagram faults (udp-*) acted on, by what they did",
                    Counter,
                    Some("kind"),
                    faults
                        .udp_faulted()
                        .into_iter()
                        .map(|(kind, n)| (kind.to_owned(), n)),
                )?;
            }
            family(
                &mut e,
                "tcpool_udp_truncated",
                "UDP datagrams longer than the receive buffer, read and echoed cut",
                Counter,
                None,
                [(String::new(), load(&udp.truncated))],
            )?;
            family(
                &mut e,
                "tcpool_udp_kernel_drops",
                "UDP datagrams the kernel dropped before they were read (a full receive buffer, SO_RXQ_OVFL)",
                Counter,
                None,
                [(String::new(), udp.kernel_drops())],
            )?;
            family(
                &mut e,
                "tcpool_udp_peers",
                "UDP sources in the workers' peer tables now (at most --udp-peers)",
                Gauge,
                None,
                [(String::new(), udp.peers())],
            )?;
        }
        let version = [(env!("CARGO_PKG_VERSION").to_owned(), 1u64)];
        family(
            &mut e,
            "tcpool_build_info",
            "The running tcpool's version (always 1)",
            Gauge,
            Some("version"),
            version,
        )?;
        let start = m.started.duration_since(UNIX_EPOCH).unwrap_or_default();
        family(
            &mut e,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            Gauge,
            None,
            one(start.as_secs_f64()),
        )?;
        Ok(())
    }
}

/// Per-bucket counts and the sum, added up over workers at scrape time.
struct Merged {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum_ns: u64,
}

impl Merged {
    fn new(bounds: &'static [f64]) -> Self {
        Merged {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum_ns: 0,
        }
    }

    fn add(&mut self, h: &Histogram) {
        for (total, count) in self.counts.iter_mut().zip(h.counts.iter()) {
            *total += count.load(Ordering::Relaxed);
        }
        self.sum_ns = self.sum_ns.wrapping_add(h.sum_ns.load(Ordering::Relaxed));
    }

    fn encode(&self, encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str) -> fmt::Result {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied())
            .collect();
        let count = self.counts.iter().sum();
        let sum = self.sum_ns as f64 / 1e9;
        encoder
            .encode_descriptor(name, help, None, MetricType::Histogram)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }
}
