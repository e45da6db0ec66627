//! What the server counts for `GET /metrics`, and the Prometheus exposition of it.
//!
//! Events are recorded where they happen, on the thread they happen on: each worker owns a
//! `WorkerMetrics` (sessions it serves, sessions it closed by reason, session durations,
//! reply times) in its own cache line, written with relaxed atomic adds and never locked; the
//! acceptor counts rejections and accept errors. Messages and bytes are the per-session
//! counters the registry already keeps. Nothing is summed until a scrape asks:
//! [`Exposition::encode`] adds up the workers' cells and writes the text format with
//! `prometheus-client`'s encoder.

mod exposition;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use crossbeam::utils::CachePadded;

use crate::server::session::CloseReason;

pub use exposition::Exposition;

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
    /// `--tls-max-handshake-rate`: more new TLS connections than the rate; closed before the
    /// handshake.
    TlsRate,
}

impl Rejection {
    const ALL: [Rejection; 5] = [
        Rejection::MaxConns,
        Rejection::BacklogFull,
        Rejection::Denied,
        Rejection::ProxyHeader,
        Rejection::TlsRate,
    ];

    /// The word used in log lines and the metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::MaxConns => "max-conns",
            Rejection::BacklogFull => "backlog-full",
            Rejection::Denied => "denied",
            Rejection::ProxyHeader => "proxy-header",
            Rejection::TlsRate => "tls-rate",
        }
    }
}

/// Upper bounds of `tcpool_reply_seconds`' buckets: an echo reply on loopback takes tens of
/// microseconds, a loaded worker milliseconds.
const REPLY_BOUNDS: [f64; 16] = [
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25,
    1.0,
];

/// How a TLS connection's handshake ended: the `result` label of
/// `tcpool_tls_handshakes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// Done, a full handshake.
    Full,
    /// Done, a session resumed (a ticket, or rustls's cache).
    Resumed,
    /// Failed: an alert either way, a record that is not TLS, the peer closed.
    Failed,
    /// Not done within `--tls-handshake-timeout`.
    Timeout,
}

impl Handshake {
    const ALL: [Handshake; 4] = [
        Handshake::Full,
        Handshake::Resumed,
        Handshake::Failed,
        Handshake::Timeout,
    ];

    /// The metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Handshake::Full => "full",
            Handshake::Resumed => "resumed",
            Handshake::Failed => "failed",
            Handshake::Timeout => "timeout",
        }
    }
}

/// Why a TLS handshake failed: the `reason` label of `tcpool_tls_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client's bytes were not TLS (plaintext, HTTP, a scanner's probe).
    NotTls,
    /// No version, suite, group or ALPN protocol in common.
    NoCommonGround,
    /// Mutual TLS: no client certificate, or one that does not verify.
    ClientCertificate,
    /// The client sent an alert: it refused the server's certificate, most often.
    PeerAlert,
    /// The client closed (or reset) before the handshake was done.
    Closed,
    /// Anything else.
    Other,
}

impl HandshakeFailure {
    const ALL: [HandshakeFailure; 6] = [
        HandshakeFailure::NotTls,
        HandshakeFailure::NoCommonGround,
        HandshakeFailure::ClientCertificate,
        HandshakeFailure::PeerAlert,
        HandshakeFailure::Closed,
        HandshakeFailure::Other,
    ];

    /// The metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::NotTls => "not-tls",
            HandshakeFailure::NoCommonGround => "no-common-ground",
            HandshakeFailure::ClientCertificate => "client-certificate",
            HandshakeFailure::PeerAlert => "peer-alert",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Other => "other",
        }
    }

    /// Why the handshake that failed with `e` did.
    pub fn of(e: &std::io::Error) -> Self {
        use rustls::Error as E;
        match e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) {
            Some(E::InvalidMessage(_) | E::InappropriateMessage { .. })
            | Some(E::InappropriateHandshakeMessage { .. }) => HandshakeFailure::NotTls,
            Some(E::PeerIncompatible(_)) => HandshakeFailure::NoCommonGround,
            Some(E::NoCertificatesPresented | E::InvalidCertificate(_)) => {
                HandshakeFailure::ClientCertificate
            }
            Some(E::AlertReceived(_)) => HandshakeFailure::PeerAlert,
            Some(_) => HandshakeFailure::Other,
            None => match e.kind() {
                std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe => HandshakeFailure::Closed,
                _ => HandshakeFailure::Other,
            },
        }
    }
}

/// Upper bounds of `tcpool_tls_handshake_seconds`' buckets: a handshake on loopback takes
/// a millisecond or two of CPU; a slow client, or a loaded worker, more.
const HANDSHAKE_BOUNDS: [f64; 12] = [
    2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
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

/// One worker's cells. Only that worker writes them.
pub(crate) struct WorkerMetrics {
    sessions: AtomicUsize,
    /// Sessions other workers handed to this one.
    moved_in: AtomicU64,
    closed: [AtomicU64; CLOSE_REASONS.len()],
    durations: Histogram,
    replies: Histogram,
    handshakes: [AtomicU64; Handshake::ALL.len()],
    handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    handshake_times: Histogram,
}

impl WorkerMetrics {
    fn new() -> Self {
        WorkerMetrics {
            sessions: AtomicUsize::new(0),
            moved_in: AtomicU64::new(0),
            closed: Default::default(),
            durations: Histogram::new(&SESSION_BOUNDS),
            replies: Histogram::new(&REPLY_BOUNDS),
            handshakes: Default::default(),
            handshake_failures: Default::default(),
            handshake_times: Histogram::new(&HANDSHAKE_BOUNDS),
        }
    }

    /// The sessions the worker holds.
    pub(crate) fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    /// The worker adopted a session.
    pub(crate) fn opened(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    /// Another worker handed this one a session.
    pub(crate) fn moved_in(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        self.moved_in.fetch_add(1, Ordering::Relaxed);
    }

    /// The worker handed a session to another.
    pub(crate) fn moved_out(&self) {
        self.sessions.fetch_sub(1, Ordering::Relaxed);
    }

    /// The worker closed a session that lasted `lasted`.
    pub(crate) fn closed(&self, reason: CloseReason, lasted: Duration) {
        self.sessions.fetch_sub(1, Ordering::Relaxed);
        self.closed[close_index(reason)].fetch_add(1, Ordering::Relaxed);
        self.durations.observe(lasted);
    }

    /// A TLS handshake ended as `how`, `took` after it began; only those done are timed.
    pub(crate) fn handshake(&self, how: Handshake, took: Duration) {
        self.handshakes[how as usize].fetch_add(1, Ordering::Relaxed);
        if matches!(how, Handshake::Full | Handshake::Resumed) {
            self.handshake_times.observe(took);
        }
    }

    /// A TLS handshake failed, for `why`.
    pub(crate) fn handshake_failed(&self, why: HandshakeFailure) {
        self.handshakes[Handshake::Failed as usize].fetch_add(1, Ordering::Relaxed);
        self.handshake_failures[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `replies` replies to the messages of one read went out `took` after the read.
    pub(crate) fn replied(&self, took: Duration, replies: u64) {
        self.replies.observe_n(took, replies);
    }
}

/// The server's own counts, beside the registry's: one `WorkerMetrics` per worker and the
/// acceptor's counts. Created with the server; read by [`Exposition`].
pub struct Metrics {
    workers: Box<[CachePadded<WorkerMetrics>]>,
    /// Workers taking new sessions now (`--balance`).
    in_use: AtomicUsize,
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
            in_use: AtomicUsize::new(workers),
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

    /// `n` workers take new sessions now.
    pub(crate) fn set_workers_in_use(&self, n: usize) {
        self.in_use.store(n, Ordering::Relaxed);
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
