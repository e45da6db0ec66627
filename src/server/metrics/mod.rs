//! What the server counts for `GET /metrics`, and the Prometheus exposition of it.
//!
//! Events are recorded where they happen, on the thread they happen on: each worker owns a
//! [`WorkerMetrics`] (sessions it serves, sessions it closed by reason, session durations,
//! reply times) in its own cache line, written with relaxed atomic adds and never locked; the
//! acceptor counts rejections and accept errors. Messages and bytes are the per-session
//! counters the registry already keeps. Nothing is summed until a scrape asks:
//! [`Exposition::encode`] adds up the workers' cells and writes the text format with
//! `prometheus-client`'s encoder.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam::utils::CachePadded;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::faults::Faults;
use super::registry::Registry;
use super::session::CloseReason;

/// The `Content-Type` of [`Exposition::encode`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every close reason, in the order of the `reason` label's values.
const CLOSE_REASONS: [CloseReason; 9] = [
    CloseReason::Quit,
    CloseReason::PeerClosed,
    CloseReason::Kicked,
    CloseReason::Idle,
    CloseReason::Overflow,
    CloseReason::Shutdown,
    CloseReason::HandlerPanic,
    CloseReason::Error,
    CloseReason::Fault,
];

/// The `reason` label of `tcpool_sessions_closed_total`.
pub fn close_label(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::Quit => "quit",
        CloseReason::PeerClosed => "eof",
        CloseReason::Kicked => "kick",
        CloseReason::Idle => "idle",
        CloseReason::Overflow => "outbox-overflow",
        CloseReason::Shutdown => "shutdown",
        CloseReason::HandlerPanic => "handler-panic",
        CloseReason::Error => "error",
        CloseReason::Fault => "fault",
    }
}

fn close_index(reason: CloseReason) -> usize {
    match reason {
        CloseReason::Quit => 0,
        CloseReason::PeerClosed => 1,
        CloseReason::Kicked => 2,
        CloseReason::Idle => 3,
        CloseReason::Overflow => 4,
        CloseReason::Shutdown => 5,
        CloseReason::HandlerPanic => 6,
        CloseReason::Error => 7,
        CloseReason::Fault => 8,
    }
}

/// Why the acceptor answered a connection `busy`; the `reason` label of
/// `tcpool_sessions_rejected_total`, the same word as the log line's `reason=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `--max-conns` sessions were connected.
    MaxConns,
    /// `--overflow reject` and the backlog was full.
    BacklogFull,
    /// `--allow` / `--deny` turned the client away.
    Denied,
    /// `--proxy-protocol`: the PROXY header was late, malformed or of the wrong version.
    ProxyHeader,
}

impl Rejection {
    const ALL: [Rejection; 4] = [
        Rejection::MaxConns,
        Rejection::BacklogFull,
        Rejection::Denied,
        Rejection::ProxyHeader,
    ];

    /// The word used in log lines and the metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::MaxConns => "max-conns",
            Rejection::BacklogFull => "backlog-full",
            Rejection::Denied => "denied",
            Rejection::ProxyHeader => "proxy-header",
        }
    }
}

/// Upper bounds of `tcpool_reply_seconds`' buckets: an echo reply on loopback takes tens of
/// microseconds, a loaded worker milliseconds.
const REPLY_BOUNDS: [f64; 16] = [
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25,
    1.0,
];

/// Upper bounds of `tcpool_session_duration_seconds`' buckets: from a probe to a day.
const SESSION_BOUNDS: [f64; 10] = [
    0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0, 21600.0, 86400.0,
];

/// A fixed-bucket histogram of durations with one writer (its worker) and any number of
/// readers; the last count is the `+Inf` bucket.
struct Histogram {
    bounds_ns: Box<[u64]>,
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds_ns: bounds.iter().map(|b| (b * 1e9) as u64).collect(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        self.observe_n(d, 1);
    }

    /// Records `n` values of `d` at once (the replies of one read, written together).
    fn observe_n(&self, d: Duration, n: u64) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // The first bucket whose bound is at least `ns` (`le` is inclusive).
        let i = self.bounds_ns.partition_point(|&b| b < ns);
        self.counts[i].fetch_add(n, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(ns.saturating_mul(n), Ordering::Relaxed);
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

/// One worker's cells. Only that worker writes them.
pub(crate) struct WorkerMetrics {
    sessions: AtomicUsize,
    closed: [AtomicU64; CLOSE_REASONS.len()],
    durations: Histogram,
    replies: Histogram,
}

impl WorkerMetrics {
    fn new() -> Self {
        WorkerMetrics {
            sessions: AtomicUsize::new(0),
            closed: Default::default(),
            durations: Histogram::new(&SESSION_BOUNDS),
            replies: Histogram::new(&REPLY_BOUNDS),
        }
    }

    /// The worker adopted a session.
    pub(crate) fn opened(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    /// The worker closed a session that lasted `lasted`.
    pub(crate) fn closed(&self, reason: CloseReason, lasted: Duration) {
        self.sessions.fetch_sub(1, Ordering::Relaxed);
        self.closed[close_index(reason)].fetch_add(1, Ordering::Relaxed);
        self.durations.observe(lasted);
    }

    /// `replies` replies to the messages of one read went out `took` after the read.
    pub(crate) fn replied(&self, took: Duration, replies: u64) {
        self.replies.observe_n(took, replies);
    }
}

/// The server's own counts, beside the registry's: one [`WorkerMetrics`] per worker and the
/// acceptor's counts. Created with the server; read by [`Exposition`].
pub struct Metrics {
    workers: Box<[CachePadded<WorkerMetrics>]>,
    rejected: [AtomicU64; Rejection::ALL.len()],
    accept_errors: AtomicU64,
    started: SystemTime,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl Metrics {
    /// Cells for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Metrics {
            workers: (0..workers)
                .map(|_| CachePadded::new(WorkerMetrics::new()))
                .collect(),
            rejected: Default::default(),
            accept_errors: AtomicU64::new(0),
            started: SystemTime::now(),
        }
    }

    /// How many workers these cells are for.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Worker `index`'s cells.
    ///
    /// # Panics
    ///
    /// If `index` is not below the worker count given to [`Metrics::new`]: the server
    /// creates both from the same count.
    pub(crate) fn worker(&self, index: usize) -> &WorkerMetrics {
        &self.workers[index]
    }

    /// Counts a connection answered `busy`.
    pub(crate) fn rejected(&self, why: Rejection) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed `accept()` (not a connection that went away while queued).
    pub(crate) fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything a scrape reads: the server's [`Metrics`], the registry's counts, the
/// backlog's capacity and the faults.
#[derive(Debug, Clone)]
pub struct Exposition {
    metrics: Arc<Metrics>,
    registry: Registry,
    backlog_capacity: usize,
    faults: Option<Faults>,
}

impl Exposition {
    /// A view over one server's counts.
    pub fn new(metrics: Arc<Metrics>, registry: Registry, backlog_capacity: usize) -> Self {
        Exposition {
            metrics,
            registry,
            backlog_capacity,
            faults: None,
        }
    }

    /// Also exposes how many sessions each of `faults` touched
    /// (`tcpool_fault_sessions_total{fault="#1 latency,delay=20ms"}`).
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = Some(faults);
        self
    }

    /// The Prometheus text exposition of every metric now ([`CONTENT_TYPE`]).
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
        for w in m.workers.iter() {
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
        if let Some(faults) = &self.faults {
            let touched: Vec<(String, u64)> = faults
                .list()
                .iter()
                .map(|f| (format!("#{} {}", f.id, f.spec), f.sessions))
                .collect();
            family(
                &mut e,
                "tcpool_fault_sessions",
                "Sessions each fault touched (cleared faults included)",
                Counter,
                Some("fault"),
                touched,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        let h = Histogram::new(&REPLY_BOUNDS);
        h.observe(Duration::from_micros(5));
        h.observe(Duration::from_nanos(5_001));
        h.observe(Duration::from_secs(2));
        let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(counts[0], 1);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[REPLY_BOUNDS.len()], 1);
        assert_eq!(h.sum_ns.load(Ordering::Relaxed), 2_000_010_001);
    }

    #[test]
    fn a_scrape_sums_the_workers() {
        let metrics = Arc::new(Metrics::new(2));
        metrics.worker(0).opened();
        metrics.worker(1).opened();
        metrics.worker(1).opened();
        metrics
            .worker(1)
            .closed(CloseReason::Kicked, Duration::from_millis(3));
        metrics
            .worker(0)
            .closed(CloseReason::Kicked, Duration::from_secs(2));
        metrics.rejected(Rejection::MaxConns);
        let text = Exposition::new(metrics, Registry::new(1024), 4).encode();
        assert!(
            text.contains("tcpool_sessions_closed_total{reason=\"kick\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("tcpool_worker_sessions{worker=\"0\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("tcpool_worker_sessions{worker=\"1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("tcpool_sessions_rejected_total{reason=\"max-conns\"} 1\n"));
        assert!(
            text.contains("tcpool_session_duration_seconds_count 2\n"),
            "{text}"
        );
        assert!(text.contains("tcpool_session_duration_seconds_bucket{le=\"0.01\"} 1\n"));
        assert!(text.contains("tcpool_backlog_capacity 4\n"));
    }
}
