//! The [`Report`] of a run: merged from what the threads measured, and serialised for JSON
//! with everything a later `bench merge` or `bench plot` needs: the whole latency histogram,
//! the measured window in UNIX time and the run second by second.
//!
//! Longer than 500 lines: most of it is the report's fields, each with the words a reader of
//! the JSON needs, and the merge of the threads' counts into them.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::bytes::escape;
use super::error::{ErrorKind, FirstError, counts};
use super::framing::{Protocol, Reply};
use super::histogram::{Percentiles, SparseHistogram, histogram};
use super::plan::{Limit, Options, Plan, Schedule};
use super::tally::Tally;
use super::worker::Outcome;

/// Below this share of the `--rate` asked for, the report says the rate was not reached.
const RATE_REACHED: f64 = 0.95;

/// What a merged report says it sent and expected when the generators differ.
pub(super) const MIXED: &str = "mixed";

/// What a run measured (or what `bench merge` made of several). `Display` is the human
/// report; `Serialize` gives the JSON one, and `Deserialize` reads it back.
///
/// Counts are of measured messages only (after the warm-up) whose replies came within the
/// measured window. `bytes` are reply bytes (for echo, echoed and verified); MB means 10^6
/// bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The runs this report holds: one random id for a run, every input's for a merge. A
    /// merge refuses inputs that share one, which would count that run twice.
    #[serde(default)]
    pub runs: Vec<String>,
    /// The server's address.
    pub target: String,
    /// The latency histogram (microseconds) as HdrHistogram V2 deflate, base64: every
    /// measured reply, late ones included.
    #[serde(rename = "latency_histogram", with = "base64_histogram")]
    pub(super) latency: Histogram<u64>,
    /// The connect-time histogram (microseconds), the same way.
    #[serde(rename = "connect_histogram", with = "base64_histogram")]
    pub(super) connect: Histogram<u64>,
    /// The measured window, second by second.
    pub timeline: Vec<Second>,
    /// A merged report: each generator's own summary, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generators: Vec<Generator>,
    /// The first error of each kind.
    #[serde(default)]
    pub first_errors: BTreeMap<ErrorKind, FirstError>,
    /// What was sent: `echo`, or the request as written (escaped).
    pub request: String,
    /// How replies ended: `echo`, `expect ...`, `until ...` or `size N`.
    pub reply: String,
    /// Connections the run opened.
    pub connections: usize,
    /// Connections whose connect succeeded.
    pub connected: usize,
    /// Threads that drove them.
    pub threads: usize,
    /// Echo: bytes per message, line ending included.
    pub size: usize,
    /// Echo: the payload's line ending, `none`, `lf` or `crlf`.
    pub eol: String,
    /// Messages in flight per connection at most.
    pub pipeline: usize,
    /// The open-loop rate asked for (messages per second, all connections); `null`: closed
    /// loop.
    pub rate: Option<f64>,
    /// With `rate`: whether the throughput came within 5 % of it.
    pub rate_reached: Option<bool>,
    /// The warm-up before measuring, in seconds.
    pub warmup_s: f64,
    /// Seconds from the start until every connection was open (or had failed).
    pub connect_s: f64,
    /// The measured window in UNIX time.
    pub window: Window,
    /// Measured messages sent (in part or whole).
    pub sent: u64,
    /// Measured messages whose reply came within the window.
    pub messages: u64,
    /// Bytes of those replies.
    pub bytes: u64,
    /// Why the run stopped before its `-d` or `-n` was done, when it did (every connection
    /// failed): `stopped at 0.98 s of 2.00 s: every connection was closed by the server
    /// (closed 4)`. `null` for a run that ran its course or was interrupted.
    #[serde(default)]
    pub ended_early: Option<String>,
    /// Measured messages still in flight when the window closed; awaited (or timed out)
    /// after it and not counted in `messages`.
    pub in_flight_at_end: u64,
    /// Of those, the ones whose reply came (their latency is in the histogram).
    pub late_replies: u64,
    /// Errors in all: the sum of `errors_by_kind`. Each ended one connection.
    pub errors: u64,
    /// Errors by kind; only kinds that happened appear.
    pub errors_by_kind: BTreeMap<ErrorKind, u64>,
    /// The measured window's length in seconds: `-d` for a duration (less if stopped), until
    /// the last reply for `-n`.
    pub duration_s: f64,
    /// `messages / duration_s`.
    pub msgs_per_sec: f64,
    /// Reply megabytes (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// Round-trip latency; in open loop, measured from each message's intended send time.
    pub latency_us: Percentiles,
    /// Time from starting a connect until the socket was connected.
    pub connect_us: Percentiles,
    /// The stop flag ended the run early.
    pub interrupted: bool,
    /// Replies by what they said, when they are classified (`--reply`, `--error-prefix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replies: Option<Replies>,
    /// A mix of requests: each kind's own throughput and latency, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<RequestKind>,
    /// Connections opened again after the server closed them cleanly (HTTP `Connection:
    /// close`).
    #[serde(default)]
    pub reconnects: u64,
    /// A merged report of mixes: the inputs' figures per request kind were left out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kinds_left_out: bool,
    /// `--reconnect-every`: replies per connection before it was opened again; `null`:
    /// connections stayed open.
    #[serde(default)]
    pub reconnect_every: Option<u64>,
    /// `--tls`: the handshakes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsReport>,
}

/// A TLS run's handshakes: each timed from the end of its TCP connect to the end of the
/// handshake, full and resumed apart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsReport {
    /// `--tls-resume`: `off`, `tickets` or `mix=P`; `mixed` in a merge of different ones.
    pub resume: String,
    /// Full handshakes completed (warm-up and reconnects included).
    pub full: u64,
    /// Resumed handshakes completed.
    pub resumed: u64,
    /// `resumed / (full + resumed)`.
    pub resumed_share: f64,
    /// Handshakes that ended within the measured window.
    pub in_window: u64,
    /// `in_window / duration_s`: handshakes per second while the load ran.
    pub per_sec: f64,
    /// Full handshakes' times.
    pub full_us: Percentiles,
    /// Resumed handshakes' times.
    pub resumed_us: Percentiles,
    /// Full handshakes' histogram (microseconds), V2 deflate in base64.
    #[serde(rename = "full_histogram", with = "base64_histogram")]
    pub(super) full_hist: Histogram<u64>,
    /// Resumed handshakes' histogram, the same way.
    #[serde(rename = "resumed_histogram", with = "base64_histogram")]
    pub(super) resumed_hist: Histogram<u64>,
    /// What the handshakes agreed on (version, suite, key exchange group, ALPN), counted.
    pub negotiated: BTreeMap<String, u64>,
}

impl TlsReport {
    /// Figures derived from the counts and histograms, for a window `duration_s` long.
    fn finish(&mut self, duration_s: f64) {
        self.full = self.full_hist.len();
        self.resumed = self.resumed_hist.len();
        let all = self.full + self.resumed;
        self.resumed_share = if all > 0 {
            self.resumed as f64 / all as f64
        } else {
            0.0
        };
        self.per_sec = if duration_s > 0.0 {
            self.in_window as f64 / duration_s
        } else {
            0.0
        };
        self.full_us = Percentiles::of(&self.full_hist);
        self.resumed_us = Percentiles::of(&self.resumed_hist);
    }

    /// Adds `other`'s handshakes to these.
    pub(super) fn add(&mut self, other: &TlsReport) -> Result<(), String> {
        let err = |e| format!("cannot add its handshake histograms: {e:?}");
        self.full_hist.add(&other.full_hist).map_err(err)?;
        self.resumed_hist.add(&other.resumed_hist).map_err(err)?;
        self.in_window += other.in_window;
        for (what, n) in &other.negotiated {
            *self.negotiated.entry(what.clone()).or_default() += n;
        }
        if self.resume != other.resume {
            self.resume = MIXED.to_owned();
        }
        Ok(())
    }
}

/// Measured replies by what they said: ok, error or miss. Error replies are also errors
/// (`errors_by_kind.reply`, warm-up included), whose first is in `first_errors.reply`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Replies {
    /// Replies that did what was asked.
    pub ok: u64,
    /// Error replies.
    pub error: u64,
    /// Replies that found nothing: a RESP null, memcached `END` without a value.
    pub miss: u64,
    /// `ok / (ok + miss)` of the replies that are not errors, when there were misses.
    pub hit_ratio: Option<f64>,
    /// Error replies (warm-up included) by kind: the error's first word (`ERR`, `NOAUTH`,
    /// `SERVER_ERROR`) or the HTTP status.
    pub errors_by_prefix: BTreeMap<String, u64>,
}

impl Replies {
    fn new(ok: u64, error: u64, miss: u64, errors_by_prefix: BTreeMap<String, u64>) -> Self {
        Replies {
            ok,
            error,
            miss,
            hit_ratio: (miss > 0).then(|| ok as f64 / (ok + miss) as f64),
            errors_by_prefix,
        }
    }
}

/// One kind of request in a mix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestKind {
    /// The request as written (escaped).
    pub request: String,
    /// Its weight in the mix.
    pub weight: u32,
    /// Its measured replies within the window.
    pub messages: u64,
    /// `messages / duration_s`.
    pub msgs_per_sec: f64,
    /// Its latency.
    pub latency_us: Percentiles,
    /// Its replies by what they said (all ok unless classified).
    pub replies: Replies,
}

/// The measured window, in seconds since the UNIX epoch.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Window {
    /// When measuring started (the end of the warm-up).
    pub start: f64,
    /// When it ended.
    pub end: f64,
}

impl Window {
    /// Its length in seconds.
    pub fn length(&self) -> f64 {
        (self.end - self.start).max(0.0)
    }
}

/// One second of the measured window: its replies' latencies are the same values, in the same
/// buckets, as the whole run's, so the seconds added together are the run's histogram less
/// the late replies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the window started.
    pub second: u64,
    /// Replies that came in this second.
    pub messages: u64,
    /// Median latency of those replies (three significant digits, as the whole run's).
    pub p50_us: u64,
    /// Their 99th percentile.
    pub p99_us: u64,
    /// The slowest of them.
    #[serde(default)]
    pub max_us: u64,
    /// Errors in this second.
    pub errors: u64,
    /// The second's latency histogram, V2 deflate, base64, with the bounds and precision of
    /// the whole run's.
    #[serde(with = "base64_sparse")]
    pub histogram: SparseHistogram,
    /// UDP: the RFC 3550 interarrival jitter in this second (µs), the mean over its replies
    /// of their socket's estimate just after each; absent for TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_us: Option<f64>,
}

impl Second {
    pub(super) fn new(second: u64, histogram: SparseHistogram, errors: u64) -> Self {
        let (mut p50_us, mut p99_us, mut max_us) = (0, 0, 0);
        if !histogram.is_empty() {
            let full = histogram.histogram();
            p50_us = full.value_at_quantile(0.5);
            p99_us = full.value_at_quantile(0.99);
            max_us = full.max();
        }
        Second {
            second,
            messages: histogram.len(),
            p50_us,
            p99_us,
            max_us,
            errors,
            histogram,
            jitter_us: None,
        }
    }

    /// The same second with its jitter (UDP).
    pub(crate) fn with_jitter(mut self, jitter_us: Option<f64>) -> Self {
        self.jitter_us = jitter_us;
        self
    }
}

/// A second's histogram in JSON: the full histogram's V2 deflate, base64.
mod base64_sparse {
    use std::sync::LazyLock;

    use serde::{Deserialize as _, Deserializer, Serializer};

    use super::super::histogram::{SparseHistogram, decode, encode, histogram};

    /// An empty second, written and read without a histogram: a merge of far-apart windows has
    /// many.
    static EMPTY: LazyLock<String> = LazyLock::new(|| encode(&histogram()));

    pub(super) fn serialize<S: Serializer>(h: &SparseHistogram, s: S) -> Result<S::Ok, S::Error> {
        if h.is_empty() {
            return s.serialize_str(&EMPTY);
        }
        s.serialize_str(&encode(&h.histogram()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<SparseHistogram, D::Error> {
        let text = String::deserialize(d)?;
        if text == *EMPTY {
            return Ok(SparseHistogram::default());
        }
        decode(&text)
            .and_then(|h| SparseHistogram::of(&h))
            .map_err(serde::de::Error::custom)
    }
}

/// One generator's line in a merged report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Generator {
    /// The file it was read from.
    pub source: String,
    /// Its measured window.
    pub window: Window,
    /// Its counts.
    pub messages: u64,
    /// Its errors.
    pub errors: u64,
    /// Its throughput over its own window.
    pub msgs_per_sec: f64,
    /// Its own latency summary.
    pub latency_us: Percentiles,
}

/// Histograms in JSON: V2 deflate, base64.
mod base64_histogram {
    use hdrhistogram::Histogram;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::super::histogram::encode(h))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let text = String::deserialize(d)?;
        super::super::histogram::decode(&text).map_err(serde::de::Error::custom)
    }
}

impl Report {
    /// The latency histogram (microseconds), for finer analysis than the summary.
    pub fn latency_histogram(&self) -> &Histogram<u64> {
        &self.latency
    }

    /// A report of these counts; derived figures (throughput, percentiles) computed here.
    pub(super) fn assemble(mut self, latency: Histogram<u64>, connect: Histogram<u64>) -> Self {
        let duration_s = self.window.length();
        let per_sec = |n: u64| {
            if duration_s > 0.0 {
                n as f64 / duration_s
            } else {
                0.0
            }
        };
        self.duration_s = duration_s;
        self.msgs_per_sec = per_sec(self.messages);
        self.mb_per_sec = per_sec(self.bytes) / 1e6;
        self.latency_us = Percentiles::of(&latency);
        self.errors = self.errors_by_kind.values().sum();
        self.rate_reached = self
            .rate
            .map(|rate| self.msgs_per_sec >= rate * RATE_REACHED);
        self.connect_us = Percentiles::of(&connect);
        if let Some(tls) = self.tls.as_mut() {
            tls.finish(duration_s);
        }
        self.latency = latency;
        self.connect = connect;
        self
    }

    /// An empty report for `target`: a starting point for [`Report::assemble`].
    pub(super) fn empty(target: String) -> Self {
        Report {
            runs: Vec::new(),
            target,
            latency: histogram(),
            connect: histogram(),
            timeline: Vec::new(),
            generators: Vec::new(),
            first_errors: BTreeMap::new(),
            request: "echo".into(),
            reply: "echo".into(),
            connections: 0,
            connected: 0,
            threads: 0,
            size: 0,
            eol: String::new(),
            pipeline: 0,
            rate: None,
            rate_reached: None,
            warmup_s: 0.0,
            connect_s: 0.0,
            window: Window::default(),
            sent: 0,
            messages: 0,
            bytes: 0,
            ended_early: None,
            in_flight_at_end: 0,
            late_replies: 0,
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            duration_s: 0.0,
            msgs_per_sec: 0.0,
            mb_per_sec: 0.0,
            latency_us: Percentiles::default(),
            connect_us: Percentiles::default(),
            interrupted: false,
            replies: None,
            kinds: Vec::new(),
            reconnects: 0,
            kinds_left_out: false,
            reconnect_every: None,
            tls: None,
        }
    }
}

/// A new run's id: 64 random bits (std's per-process hash keys, mixed with the clock and the
/// process id) in hex, unique enough that two runs never share one.
fn run_id(now: SystemTime) -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        now.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// Why a run that was not interrupted stopped short of its `-d` or `-n`, if it did: every
/// connection had failed.
fn early_end(
    options: &Options,
    schedule: Option<Schedule>,
    finished: Instant,
    total: &Tally,
) -> Option<String> {
    let errors: u64 = total.errors.values().sum();
    if errors == 0 {
        return None;
    }
    let (at, of) = match (options.limit, schedule) {
        (_, None) => return Some(format!("stopped before the load began: {}", why(total))),
        (Limit::Duration(d), Some(s)) => {
            let end = s.end?;
            if finished >= end {
                return None;
            }
            let at = finished.saturating_duration_since(s.measure_start);
            (
                format!("{:.2} s", at.as_secs_f64()),
                format!("{:.2} s", d.as_secs_f64()),
            )
        }
        (Limit::Messages(n), Some(_)) => {
            let answered = total.messages + total.late;
            if answered >= n {
                return None;
            }
            (format!("{answered} messages"), format!("{n}"))
        }
    };
    Some(format!("stopped at {at} of {of}: {}", why(total)))
}

/// `every connection was closed by the server (closed 4)`, or for several kinds
/// `every connection failed (closed 2, reset 2)`.
fn why(total: &Tally) -> String {
    let what = match total.errors.keys().collect::<Vec<_>>().as_slice() {
        [one] => one.what(),
        _ => "failed",
    };
    format!("every connection {what} ({})", counts(&total.errors))
}

/// Seconds since the UNIX epoch of `at`, given one instant known on both clocks.
fn unix(at: Instant, base: (Instant, SystemTime)) -> f64 {
    let epoch = base
        .1
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    if at >= base.0 {
        epoch + at.duration_since(base.0).as_secs_f64()
    } else {
        epoch - base.0.duration_since(at).as_secs_f64()
    }
}

/// Merges what the threads measured into the report.
pub(super) fn report(
    options: &Options,
    plan: &Plan<'_>,
    clock: (Instant, SystemTime),
    outcomes: Vec<Outcome>,
) -> Report {
    let mut total = Tally::new();
    let mut finished = plan.start;
    let mut interrupted = false;
    // A plain fold, not rayon: there are at most a few dozen histograms (one per thread) and
    // adding one to another walks some tens of thousands of counters, microseconds of work
    // that a parallel reduce would only add scheduling cost to.
    for outcome in outcomes {
        total.absorb(outcome.tally);
        finished = finished.max(outcome.finished_at);
        interrupted |= outcome.interrupted;
    }
    let schedule = plan.schedule.get().copied();
    // Stopped before the load began: an empty window at the stop.
    let measure_start = schedule.map_or(finished, |s| s.measure_start.min(finished));
    let mut window_end = finished;
    if let Some(end) = schedule.and_then(|s| s.end) {
        window_end = window_end.min(end);
    }
    let connect_end = schedule.map_or(finished, |s| s.connected);
    let (request, reply) = match &options.protocol {
        Protocol::Echo => ("echo".to_owned(), "echo".to_owned()),
        Protocol::Request { send, reply } => (
            send.iter()
                .map(|r| r.template.to_string())
                .collect::<Vec<_>>()
                .join(" | "),
            match reply {
                Reply::Exact(t) => format!("expect \"{t}\""),
                Reply::Until(d) => format!("until \"{}\"", escape(d)),
                Reply::Size(n) => format!("size {n}"),
                Reply::Framed(f) => f.to_string(),
            },
        ),
    };
    let classified = matches!(
        options.protocol,
        Protocol::Request {
            reply: Reply::Framed(_),
            ..
        }
    ) || options.error_prefix.is_some();
    let replies = classified.then(|| {
        let c = &total.classes;
        Replies::new(c.ok, c.error, c.miss, total.error_prefixes.clone())
    });
    let window_s = (window_end.max(measure_start))
        .saturating_duration_since(measure_start)
        .as_secs_f64();
    let kinds = match &options.protocol {
        Protocol::Request { send, .. } if send.len() > 1 => send
            .iter()
            .zip(&total.kinds)
            .map(|(r, k)| RequestKind {
                request: r.template.to_string(),
                weight: r.weight,
                messages: k.messages,
                msgs_per_sec: if window_s > 0.0 {
                    k.messages as f64 / window_s
                } else {
                    0.0
                },
                latency_us: Percentiles::of(&k.latency),
                replies: Replies::new(
                    k.classes.ok,
                    k.classes.error,
                    k.classes.miss,
                    BTreeMap::new(),
                ),
            })
            .collect(),
        _ => Vec::new(),
    };
    let echo = options.protocol == Protocol::Echo;
    let ended_early = (!interrupted)
        .then(|| early_end(options, schedule, finished, &total))
        .flatten();
    let timeline = total
        .take_timeline()
        .into_iter()
        .enumerate()
        .map(|(i, s)| Second::new(i as u64, s.latency, s.errors))
        .collect();
    let report = Report {
        runs: vec![run_id(clock.1)],
        timeline,
        first_errors: total
            .first_errors
            .into_iter()
            .map(|(kind, (_, first))| (kind, first))
            .collect(),
        request,
        reply,
        connections: plan.connections,
        threads: plan.threads,
        size: if echo { options.size } else { 0 },
        eol: if echo { options.line_ending.name() } else { "" }.to_owned(),
        pipeline: options.pipeline,
        rate: options.rate,
        warmup_s: options.warmup.as_secs_f64(),
        connect_s: connect_end
            .saturating_duration_since(plan.start)
            .as_secs_f64(),
        window: Window {
            start: unix(measure_start, clock),
            end: unix(window_end.max(measure_start), clock),
        },
        sent: total.sent,
        messages: total.messages,
        bytes: total.bytes,
        in_flight_at_end: total.in_flight_at_end,
        late_replies: total.late,
        ended_early,
        errors_by_kind: total.errors,
        interrupted,
        replies,
        kinds,
        reconnects: total.reconnects,
        connected: total.connected as usize,
        reconnect_every: options.reconnect_every,
        tls: options.tls.as_ref().map(|tls| TlsReport {
            resume: tls.resume.to_string(),
            full: 0,
            resumed: 0,
            resumed_share: 0.0,
            in_window: total.tls.in_window,
            per_sec: 0.0,
            full_us: Percentiles::default(),
            resumed_us: Percentiles::default(),
            full_hist: std::mem::replace(&mut total.tls.full, histogram()),
            resumed_hist: std::mem::replace(&mut total.tls.resumed, histogram()),
            negotiated: std::mem::take(&mut total.tls.negotiated),
        }),
        ..Report::empty(options.addrs[0].to_string())
    };
    report.assemble(total.latency, total.connect)
}
