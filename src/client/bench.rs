//! The load generator behind `tcpool bench`: many connections to any echo-style TCP server,
//! every echoed byte verified, latency in an HdrHistogram, a [`Report`] for people and for
//! JSON.
//!
//! [`run`] owns the whole measurement: it splits the connections over a few threads (one per
//! core at most), each driving its share with its own `mio` poller, and merges what they
//! measured. Flags, signals, the progress bar and printing are the binary's business
//! (`src/cli/bench.rs`); here the caller passes a stop flag and an optional progress callback.
//!
//! How a run goes:
//!
//! - **Connect**: every connection starts with a non-blocking connect; the time until the
//!   socket is writable is its connect time. A connect that is refused, fails or takes longer
//!   than [`Options::connect_timeout`] is an error of its kind, and that connection is not
//!   opened again (nor is any connection that fails later).
//! - **Payload**: each connection sends one fixed payload of [`Options::size`] bytes, built
//!   once before the run: printable bytes, never `\n` or `\r` inside and never a `q` (so no
//!   stretch of the stream can spell `quit`), then the chosen line ending, which counts in the
//!   size. Neighbouring connections send different payloads, so replies crossed between
//!   connections are caught too.
//! - **Load**: closed loop by default: each connection keeps [`Options::pipeline`] messages in
//!   flight and sends the next as soon as a reply completes. With [`Options::rate`] the load is
//!   open loop: the total rate is split evenly across connections, each message has an
//!   intended send time on that schedule, and a message that goes out late is measured from
//!   that time, not from when it actually went out. A server that stalls therefore shows the
//!   whole stall in the latency of every message that should have been sent meanwhile
//!   (coordinated omission, as wrk2 corrects it); `pipeline` still caps what is in flight per
//!   connection. (A message may also go out up to a millisecond early, and is then measured
//!   from when it went out: see `SCHEDULE_SLACK` in the source.)
//! - **Verify**: the echo of K pipelined messages is their concatenation in order, so the
//!   reply stream is compared byte for byte with the payload as it arrives. A wrong byte or a
//!   byte nobody sent is a `mismatch`; a closed or reset connection, a reply older than
//!   [`Options::timeout`] and connect failures are errors too ([`ErrorKind`]). An error ends
//!   that connection only; the run goes on with the others.
//! - **Measure**: messages queued during [`Options::warmup`] are sent and verified but neither
//!   recorded nor counted, and are not part of [`Limit::Messages`], which is split exactly
//!   across connections. With [`Limit::Duration`] no message is queued after the deadline;
//!   the ones already in flight are still awaited (up to the reply timeout) so that a slow
//!   tail is measured rather than cut off, and the measured duration runs until the last of
//!   them. Setting the stop flag ends the run at once with what was measured so far.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam::channel;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use crate::server::LineEnding;

/// The default number of connections (`-c`).
pub const DEFAULT_CONNECTIONS: usize = 64;

/// The default run length when neither a duration nor a message count is given (`-d 10`).
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// The default message size in bytes, line ending included (`-s`).
pub const DEFAULT_SIZE: usize = 64;

/// The default time a connect or a reply may take before it is an error.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often each thread checks the stop flag and the timeouts and publishes its counts.
const TICK: Duration = Duration::from_millis(10);

/// Open loop: how early a message may go out. The poller sleeps in whole milliseconds
/// (rounded up), so waiting for each intended time exactly would send up to a millisecond
/// late and charge that to the server, or would need a spinning thread that takes a core
/// from the server it measures. Instead a message due within this slack goes out at once
/// and its latency runs from when it actually went out; one that goes out late (the
/// in-flight cap was reached) still counts from its intended time.
const SCHEDULE_SLACK: Duration = Duration::from_millis(1);

/// How often [`run`] calls the progress callback.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Up to this many bytes of back-to-back copies of a payload are prepared, so that K
/// pipelined messages go out in one write instead of K.
const BURST_BYTES: usize = 16 * 1024;

/// Distinct payloads per run; connection `i` sends payload `i % PAYLOAD_VARIANTS`.
const PAYLOAD_VARIANTS: usize = 16;

/// Bytes read per `read` call; one buffer per thread.
const READ_BUFFER: usize = 64 * 1024;

/// The highest latency the histograms keep apart, in microseconds (one hour); longer ones are
/// recorded as this.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

/// Payload bytes: printable, without `q` so that no stretch of the stream can spell `quit`,
/// and without `\r` or `\n`, which belong to the line ending.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnoprstuvwxyz0123456789-_.:";

/// When a run ends: after a measured duration or after a number of messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Measure for this long after the warm-up (`-d`).
    Duration(Duration),
    /// Send exactly this many measured messages in all, split across connections (`-n`).
    Messages(u64),
}

impl Default for Limit {
    fn default() -> Self {
        Limit::Duration(DEFAULT_DURATION)
    }
}

/// What to load-test and how. The defaults are the command line's.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The echo server (default `127.0.0.1:8900`).
    pub addr: SocketAddr,
    /// Connections to open (64). With [`Limit::Messages`] below this, only that many are used.
    pub connections: usize,
    /// When the run ends (10 s).
    pub limit: Limit,
    /// Bytes per message, line ending included (64).
    pub size: usize,
    /// Messages in flight per connection at most (1).
    pub pipeline: usize,
    /// Total messages per second across all connections; `None`: closed loop (the default).
    pub rate: Option<f64>,
    /// Time to send unmeasured messages before measuring starts (none).
    pub warmup: Duration,
    /// How long a connect may take (5 s).
    pub connect_timeout: Duration,
    /// How long a reply may take, from the moment its message was sent (5 s).
    pub timeout: Duration,
    /// How each payload ends (`\n`, which line-based and raw echo servers alike answer).
    pub line_ending: LineEnding,
    /// Threads driving the connections; 0 means one per CPU. Never more than connections.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            addr: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), crate::DEFAULT_PORT),
            connections: DEFAULT_CONNECTIONS,
            limit: Limit::default(),
            size: DEFAULT_SIZE,
            pipeline: 1,
            rate: None,
            warmup: Duration::ZERO,
            connect_timeout: DEFAULT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            line_ending: LineEnding::Lf,
            threads: 0,
        }
    }
}

impl Options {
    /// The connections a run opens: [`Options::connections`], or fewer when
    /// [`Limit::Messages`] would leave some without a message.
    pub fn connections_used(&self) -> usize {
        match self.limit {
            Limit::Messages(n) => self
                .connections
                .min(usize::try_from(n).unwrap_or(usize::MAX)),
            Limit::Duration(_) => self.connections,
        }
    }

    /// The threads a run uses: [`Options::threads`] (0 resolved to the CPU count), at most
    /// one per connection.
    pub fn threads_used(&self) -> usize {
        let threads = match self.threads {
            0 => thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        threads.min(self.connections_used()).max(1)
    }

    /// Checks the options make a run: at least one connection, message and in-flight slot;
    /// room in each message for its line ending; a positive rate and duration.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`], saying which option is wrong.
    pub fn validate(&self) -> io::Result<()> {
        let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        let ending = self.line_ending.as_bytes().len();
        if self.connections == 0 {
            return invalid("connections must be at least 1".into());
        }
        if self.pipeline == 0 {
            return invalid("pipeline must be at least 1".into());
        }
        if self.size == 0 || self.size < ending {
            return invalid(format!(
                "size {} is too small: a message needs at least {} byte(s) with line ending {}",
                self.size,
                ending.max(1),
                self.line_ending
            ));
        }
        match self.limit {
            Limit::Messages(0) => return invalid("messages must be at least 1".into()),
            Limit::Duration(d) if d.is_zero() => {
                return invalid("duration must be more than 0 seconds".into());
            }
            _ => {}
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return invalid(format!("rate {rate} must be a positive number"));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return invalid("timeouts must be more than 0 seconds".into());
        }
        Ok(())
    }
}

/// Why a connection failed. Serialised (and displayed) in snake_case: `mismatch`,
/// `connect_refused`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// An echoed byte differed from the one sent, or the server sent bytes nobody sent.
    Mismatch,
    /// The server closed the connection (end of stream) while it was in use.
    Closed,
    /// The connection was reset or aborted, or a write found it broken.
    Reset,
    /// The oldest reply in flight took longer than [`Options::timeout`].
    Timeout,
    /// The connect was refused: nothing listens there.
    ConnectRefused,
    /// The connect took longer than [`Options::connect_timeout`].
    ConnectTimeout,
    /// The connect failed otherwise (unreachable, out of descriptors, ...).
    ConnectFailed,
    /// Any other I/O error on an open connection.
    Io,
}

impl ErrorKind {
    /// The kind's snake_case name, as in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Mismatch => "mismatch",
            ErrorKind::Closed => "closed",
            ErrorKind::Reset => "reset",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::Io => "io",
        }
    }

    fn of_connect(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
            io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
            _ => ErrorKind::ConnectFailed,
        }
    }

    fn of_transfer(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => ErrorKind::Reset,
            io::ErrorKind::UnexpectedEof => ErrorKind::Closed,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Io,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A latency summary in microseconds, read from an HdrHistogram (3 significant digits).
/// All zero when nothing was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Percentiles {
    /// The fastest.
    pub min: u64,
    /// The median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// The slowest.
    pub max: u64,
    /// The arithmetic mean.
    pub mean: f64,
    /// The standard deviation.
    pub stdev: f64,
}

impl Percentiles {
    /// The summary of `histogram` (values in microseconds).
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            min: histogram.min(),
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: histogram.mean(),
            stdev: histogram.stdev(),
        }
    }
}

/// What a run measured. `Display` is the human report; `Serialize` gives the JSON one.
///
/// Counts are of measured messages only (after the warm-up). `bytes` are bytes echoed back
/// and verified (one direction); MB means 10^6 bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The server's address.
    pub target: String,
    /// Connections the run opened.
    pub connections: usize,
    /// Connections whose connect succeeded.
    pub connected: usize,
    /// Threads that drove them.
    pub threads: usize,
    /// Bytes per message, line ending included.
    pub size: usize,
    /// The payload's line ending: `none`, `lf` or `crlf`.
    pub eol: &'static str,
    /// Messages in flight per connection at most.
    pub pipeline: usize,
    /// The open-loop rate asked for (messages per second, all connections); `null`: closed
    /// loop.
    pub rate: Option<f64>,
    /// The warm-up before measuring, in seconds.
    pub warmup_s: f64,
    /// Measured messages sent (in part or whole).
    pub sent: u64,
    /// Measured messages echoed back and verified.
    pub messages: u64,
    /// Bytes of those messages, echoed back and verified.
    pub bytes: u64,
    /// Errors in all: the sum of `errors_by_kind`. Each ended one connection.
    pub errors: u64,
    /// Errors by kind; only kinds that happened appear.
    pub errors_by_kind: BTreeMap<ErrorKind, u64>,
    /// The measured time, in seconds: from the end of the warm-up until the last reply (or
    /// the stop).
    pub duration_s: f64,
    /// `messages / duration_s`.
    pub msgs_per_sec: f64,
    /// Echoed megabytes (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// Round-trip latency; in open loop, measured from each message's intended send time.
    pub latency_us: Percentiles,
    /// Time from starting a connect until the socket was connected.
    pub connect_us: Percentiles,
    /// The stop flag ended the run early.
    pub interrupted: bool,
    #[serde(skip)]
    latency: Histogram<u64>,
}

impl Report {
    /// The merged latency histogram (microseconds), for finer analysis than the summary.
    pub fn latency_histogram(&self) -> &Histogram<u64> {
        &self.latency
    }
}

/// A snapshot of a running benchmark, passed to the progress callback about ten times a
/// second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Time since the run started (warm-up included).
    pub elapsed: Duration,
    /// Still in the warm-up: nothing is counted yet.
    pub warming_up: bool,
    /// Measured messages completed so far.
    pub messages: u64,
    /// Errors so far.
    pub errors: u64,
    /// Connections connected and still running.
    pub open: usize,
    /// Replies per second (warm-up included) since the previous snapshot.
    pub msgs_per_sec: f64,
    /// How far the run is, from 0 to 1: by time for [`Limit::Duration`], by messages for
    /// [`Limit::Messages`].
    pub done: f64,
}

/// Runs a benchmark with `options` until its limit is reached, every connection has failed,
/// or `stop` is set; calls `progress` (on the calling thread) about ten times a second.
///
/// The connections are split over [`Options::threads_used`] threads named
/// `tcpool-bench-N`, all joined before this returns. When the connections need more file
/// descriptors than the soft limit allows, the process's soft limit is raised toward the hard
/// one (with a warning if that is not enough: the connections beyond it fail as
/// `connect_failed`).
///
/// # Errors
///
/// Invalid options ([`io::ErrorKind::InvalidInput`]), or a poller or thread that cannot be
/// created. Everything that goes wrong on a connection is counted in the [`Report`] instead.
///
/// # Examples
///
/// Exactly 200 verified round trips through a tcpool echo server on a free port:
///
/// ```
/// use std::sync::atomic::AtomicBool;
/// use tcpool::client::bench::{self, Limit, Options};
/// use tcpool::server::{bind, Config, Server};
///
/// let server = Server::new(bind("127.0.0.1:0".parse()?)?, Config::default());
/// let addr = server.local_addr()?;
/// let shutdown = server.shutdown();
/// let running = std::thread::spawn(move || server.run());
///
/// let options = Options {
///     addr,
///     connections: 4,
///     limit: Limit::Messages(200),
///     pipeline: 2,
///     ..Options::default()
/// };
/// let report = bench::run(&options, &AtomicBool::new(false), None)?;
/// assert_eq!(report.messages, 200);
/// assert_eq!(report.bytes, 200 * 64);
/// assert_eq!(report.errors, 0);
/// assert!(report.latency_us.p50 <= report.latency_us.max);
/// assert!(report.to_string().contains("p99.9"));
///
/// shutdown.trigger();
/// running.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn run(
    options: &Options,
    stop: &AtomicBool,
    progress: Option<&dyn Fn(&Progress)>,
) -> io::Result<Report> {
    options.validate()?;
    let connections = options.connections_used();
    let threads = options.threads_used();
    raise_fd_limit(connections);

    let payloads: Vec<Arc<[u8]>> = (0..connections.min(PAYLOAD_VARIANTS))
        .map(|variant| {
            burst(
                &payload(variant, options.size, options.line_ending),
                options,
            )
        })
        .collect();
    let start = Instant::now();
    let measure_start = start + options.warmup;
    let plan = Plan {
        options,
        connections,
        measure_start,
        end: match options.limit {
            Limit::Duration(d) => Some(measure_start + d),
            Limit::Messages(_) => None,
        },
        interval: options
            .rate
            .map(|rate| Duration::from_secs_f64(connections as f64 / rate)),
        payloads,
        stop,
        abort: AtomicBool::new(false),
        live: Live::default(),
    };
    log::debug!(
        "bench starting: target={} connections={connections} threads={threads}",
        options.addr
    );

    let outcomes = thread::scope(|scope| {
        let (done_tx, done_rx) = channel::bounded::<()>(0);
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            let done = done_tx.clone();
            let plan = &plan;
            let spawned = thread::Builder::new()
                .name(format!("tcpool-bench-{t}"))
                .spawn_scoped(scope, move || {
                    let _done = done;
                    Worker::new(plan, t, threads)?.run()
                });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    // The scope joins the threads already running once they see this.
                    plan.abort.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        drop(done_tx);
        watch(&plan, start, &done_rx, progress);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a bench thread panicked")))
            })
            .collect::<io::Result<Vec<Outcome>>>()
    })?;
    Ok(report(options, &plan, threads, outcomes))
}

/// Calls `progress` until every worker has returned (each holds a sender of `done`, never
/// used: the channel disconnects when the last one returns).
fn watch(
    plan: &Plan<'_>,
    start: Instant,
    done: &channel::Receiver<()>,
    progress: Option<&dyn Fn(&Progress)>,
) {
    let mut last = (start, 0u64);
    while let Err(channel::RecvTimeoutError::Timeout) = done.recv_timeout(PROGRESS_EVERY) {
        let Some(progress) = progress else { continue };
        let now = Instant::now();
        let completed = plan.live.completed.load(Ordering::Relaxed);
        let messages = plan.live.measured.load(Ordering::Relaxed);
        let elapsed = now.duration_since(start);
        let done = match plan.options.limit {
            Limit::Duration(d) => elapsed.as_secs_f64() / (plan.options.warmup + d).as_secs_f64(),
            Limit::Messages(n) => messages as f64 / n as f64,
        };
        let window = now.duration_since(last.0).as_secs_f64();
        progress(&Progress {
            elapsed,
            warming_up: now < plan.measure_start,
            messages,
            errors: plan.live.errors.load(Ordering::Relaxed),
            open: plan.live.open.load(Ordering::Relaxed),
            msgs_per_sec: (completed - last.1) as f64 / window.max(1e-9),
            done: done.clamp(0.0, 1.0),
        });
        last = (now, completed);
    }
}

/// Merges what the threads measured into the report.
fn report(options: &Options, plan: &Plan<'_>, threads: usize, outcomes: Vec<Outcome>) -> Report {
    let mut total = Tally::new();
    let mut finished = plan.measure_start;
    let mut interrupted = false;
    // A plain fold, not rayon: there are at most a few dozen histograms (one per thread) and
    // adding one to another walks some tens of thousands of counters, microseconds of work
    // that a parallel reduce would only add scheduling cost to.
    for outcome in outcomes {
        total.absorb(outcome.tally);
        finished = finished.max(outcome.finished_at);
        interrupted |= outcome.interrupted;
    }
    let duration_s = finished.duration_since(plan.measure_start).as_secs_f64();
    let per_sec = |n: u64| {
        if duration_s > 0.0 {
            n as f64 / duration_s
        } else {
            0.0
        }
    };
    Report {
        target: options.addr.to_string(),
        connections: plan.connections,
        connected: total.connect.len() as usize,
        threads,
        size: options.size,
        eol: options.line_ending.name(),
        pipeline: options.pipeline,
        rate: options.rate,
        warmup_s: options.warmup.as_secs_f64(),
        sent: total.sent,
        messages: total.messages,
        bytes: total.bytes,
        errors: total.errors.values().sum(),
        errors_by_kind: total.errors,
        duration_s,
        msgs_per_sec: per_sec(total.messages),
        mb_per_sec: per_sec(total.bytes) / 1e6,
        latency_us: Percentiles::of(&total.latency),
        connect_us: Percentiles::of(&total.connect),
        interrupted,
        latency: total.latency,
    }
}

/// Raises the soft descriptor limit so that every connection gets a socket; warns if the
/// hard limit is too low (the connections beyond it fail as `connect_failed`).
fn raise_fd_limit(connections: usize) {
    let wanted = connections as u64 + 64;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit < wanted => log::warn!(
            "file descriptor limit {limit} is too low for {connections} connections; some will fail"
        ),
        Ok(_) => {}
        Err(e) => log::warn!("cannot raise the file descriptor limit: error={e}"),
    }
}

/// One message: printable bytes (a different pseudo-random sequence per `variant`, so a byte
/// flipped anywhere is caught), then the line ending, `size` bytes in all.
fn payload(variant: usize, size: usize, line_ending: LineEnding) -> Vec<u8> {
    let ending = line_ending.as_bytes();
    let mut out = Vec::with_capacity(size);
    // xorshift64: cheap, deterministic, never zero from a non-zero seed.
    let mut x = (variant as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for _ in 0..size - ending.len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(ALPHABET[(x % ALPHABET.len() as u64) as usize]);
    }
    out.extend_from_slice(ending);
    out
}

/// Back-to-back copies of `payload`: as many as may be in flight, within [`BURST_BYTES`].
fn burst(payload: &[u8], options: &Options) -> Arc<[u8]> {
    let copies = options.pipeline.min((BURST_BYTES / payload.len()).max(1));
    payload.repeat(copies).into()
}

/// Microseconds, rounded down, as histograms record them.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn histogram() -> Histogram<u64> {
    // Bounds and precision are constants known to be valid.
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("valid histogram bounds")
}

/// What every thread shares for the whole run.
struct Plan<'a> {
    options: &'a Options,
    connections: usize,
    /// The end of the warm-up: messages intended from here on are measured.
    measure_start: Instant,
    /// No message is queued from here on ([`Limit::Duration`]).
    end: Option<Instant>,
    /// Open loop: the time between two intended sends on one connection.
    interval: Option<Duration>,
    payloads: Vec<Arc<[u8]>>,
    /// The caller's stop flag, checked every [`TICK`].
    stop: &'a AtomicBool,
    /// Set by [`run`] when it cannot start every thread: the others return at once.
    abort: AtomicBool,
    live: Live,
}

/// Counts the threads publish every [`TICK`] for the progress callback.
#[derive(Default)]
struct Live {
    completed: AtomicU64,
    measured: AtomicU64,
    errors: AtomicU64,
    open: AtomicUsize,
}

/// One thread's measurements; merged at the end.
struct Tally {
    latency: Histogram<u64>,
    connect: Histogram<u64>,
    errors: BTreeMap<ErrorKind, u64>,
    sent: u64,
    messages: u64,
    bytes: u64,
    /// Replies completed, warm-up included: the live throughput.
    completed: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latency: histogram(),
            connect: histogram(),
            errors: BTreeMap::new(),
            sent: 0,
            messages: 0,
            bytes: 0,
            completed: 0,
        }
    }

    fn complete(&mut self, flight: Flight, now: Instant, size: usize) {
        self.completed += 1;
        if flight.measured {
            self.messages += 1;
            self.bytes += size as u64;
            self.latency
                .saturating_record(micros(now.saturating_duration_since(flight.intended)));
        }
    }

    fn absorb(&mut self, other: Tally) {
        // Same bounds on both sides, and saturating records never exceed them.
        self.latency.add(&other.latency).expect("same bounds");
        self.connect.add(&other.connect).expect("same bounds");
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.sent += other.sent;
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.completed += other.completed;
    }
}

/// What one thread hands back.
struct Outcome {
    tally: Tally,
    finished_at: Instant,
    interrupted: bool,
}

/// A message queued on a connection and not yet fully echoed.
#[derive(Clone, Copy)]
struct Flight {
    /// Where latency is measured from: when queued, or in open loop the schedule's time if
    /// that was earlier.
    intended: Instant,
    /// When it was queued for writing: where the reply timeout runs from.
    sent: Instant,
    /// Queued after the warm-up.
    measured: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    /// Connect started at this time.
    Connecting(Instant),
    Open,
    /// Done or failed; never reopened.
    Finished,
}

/// One connection's state on its thread.
struct Conn {
    /// Global index: picks the payload and the open-loop phase.
    index: usize,
    stream: Option<TcpStream>,
    state: State,
    /// The payload, repeated (see [`burst`]).
    burst: Arc<[u8]>,
    inflight: VecDeque<Flight>,
    /// Bytes of queued messages not yet written.
    to_write: usize,
    /// Where in the payload the next write starts.
    write_off: usize,
    /// Where in the payload the next echoed byte belongs.
    read_off: usize,
    written: u64,
    received: u64,
    /// Measured messages this connection may still queue ([`Limit::Messages`]).
    quota: Option<u64>,
    /// Open loop: the intended time of the next message.
    next_send: Instant,
    /// Open loop: an entry for this connection is in the worker's `due` heap.
    scheduled: bool,
}

/// The error for an unexpected byte. Payloads never contain `q`, so one is a server's `quit`
/// goodbye (tcpool says it to every client when it shuts down): the connection is closing,
/// not echoing wrong bytes.
fn unexpected(byte: u8) -> ErrorKind {
    if byte == b'q' {
        ErrorKind::Closed
    } else {
        ErrorKind::Mismatch
    }
}

impl Conn {
    /// Checks `chunk`, the next bytes of the echo, against what was sent; completes each
    /// message whose last byte it holds.
    fn consume(
        &mut self,
        mut chunk: &[u8],
        size: usize,
        now: Instant,
        tally: &mut Tally,
    ) -> Result<(), ErrorKind> {
        // Bytes beyond what was written were never sent by us.
        let awaited = usize::try_from(self.written - self.received).unwrap_or(usize::MAX);
        self.received += chunk.len() as u64;
        let unsolicited = if chunk.len() > awaited {
            let (awaited, extra) = chunk.split_at(awaited);
            chunk = awaited;
            Some(extra[0])
        } else {
            None
        };
        while !chunk.is_empty() {
            let expected = &self.burst[self.read_off..size];
            let n = expected.len().min(chunk.len());
            if chunk[..n] != expected[..n] {
                let at = chunk.iter().zip(expected).position(|(a, b)| a != b);
                return Err(unexpected(at.map_or(0, |i| chunk[i])));
            }
            chunk = &chunk[n..];
            self.read_off += n;
            if self.read_off == size {
                self.read_off = 0;
                // Bytes received never exceed bytes written, which belong to queued messages.
                let Some(flight) = self.inflight.pop_front() else {
                    return Err(ErrorKind::Mismatch);
                };
                tally.complete(flight, now, size);
            }
        }
        unsolicited.map_or(Ok(()), |byte| Err(unexpected(byte)))
    }

    /// Writes queued bytes until done or the socket is full.
    fn flush(&mut self, size: usize) -> Result<(), ErrorKind> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.to_write > 0 {
            let len = self.to_write.min(self.burst.len() - self.write_off);
            match stream.write(&self.burst[self.write_off..self.write_off + len]) {
                Ok(0) => return Err(ErrorKind::Closed),
                Ok(n) => {
                    self.to_write -= n;
                    self.written += n as u64;
                    self.write_off = (self.write_off + n) % size;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ErrorKind::of_transfer(&e)),
            }
        }
        Ok(())
    }

    /// Queues one message whose place in the schedule is `scheduled`. Its latency runs from
    /// then, or from now if it goes out early (by at most [`SCHEDULE_SLACK`]).
    fn queue(&mut self, scheduled: Instant, now: Instant, plan: &Plan<'_>, tally: &mut Tally) {
        let measured = scheduled >= plan.measure_start;
        if measured {
            if let Some(quota) = self.quota.as_mut() {
                *quota -= 1;
            }
            tally.sent += 1;
        }
        self.inflight.push_back(Flight {
            intended: scheduled.min(now),
            sent: now,
            measured,
        });
        self.to_write += plan.options.size;
    }

    /// May a message intended at `at` be queued?
    fn may_queue(&self, at: Instant, draining: bool, plan: &Plan<'_>) -> bool {
        !draining && (at < plan.measure_start || self.quota != Some(0))
    }
}

/// One thread: a poller over its share of the connections.
struct Worker<'a> {
    plan: &'a Plan<'a>,
    poll: Poll,
    conns: Vec<Conn>,
    /// Open loop: connections by when their next message may go out (its intended time less
    /// [`SCHEDULE_SLACK`]), soonest first.
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    tally: Tally,
    /// What this thread has added to `plan.live` so far: (completed, measured, errors).
    published: (u64, u64, u64),
    buf: Box<[u8]>,
    /// Connections not finished.
    active: usize,
    /// Past [`Plan::end`]: nothing new is queued; connections end once their replies are in.
    draining: bool,
}

impl<'a> Worker<'a> {
    /// Thread `t` of `threads` takes connections `t, t + threads, ...`.
    fn new(plan: &'a Plan<'a>, t: usize, threads: usize) -> io::Result<Self> {
        let now = Instant::now();
        let total = plan.connections as u64;
        let conns: Vec<Conn> = (t..plan.connections)
            .step_by(threads)
            .map(|index| Conn {
                index,
                stream: None,
                state: State::Connecting(now),
                burst: Arc::clone(&plan.payloads[index % plan.payloads.len()]),
                inflight: VecDeque::with_capacity(plan.options.pipeline.min(1024)),
                to_write: 0,
                write_off: 0,
                read_off: 0,
                written: 0,
                received: 0,
                quota: match plan.options.limit {
                    Limit::Messages(n) => Some(n / total + u64::from((index as u64) < n % total)),
                    Limit::Duration(_) => None,
                },
                next_send: now,
                scheduled: false,
            })
            .collect();
        Ok(Worker {
            plan,
            poll: Poll::new()?,
            active: conns.len(),
            conns,
            due: BinaryHeap::new(),
            tally: Tally::new(),
            published: (0, 0, 0),
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            draining: false,
        })
    }

    fn run(mut self) -> io::Result<Outcome> {
        let mut events = Events::with_capacity(1024);
        for i in 0..self.conns.len() {
            self.open(i);
        }
        let mut next_tick = Instant::now();
        let mut interrupted = false;
        loop {
            let now = Instant::now();
            if now >= next_tick {
                if self.plan.stop.load(Ordering::Relaxed) || self.plan.abort.load(Ordering::Relaxed)
                {
                    interrupted = self.active > 0;
                    break;
                }
                self.check_timeouts(now);
                self.publish();
                next_tick = now + TICK;
            }
            if !self.draining && self.plan.end.is_some_and(|end| now >= end) {
                self.start_draining();
            }
            self.send_due(now);
            if self.active == 0 {
                break;
            }
            let timeout = self.poll_timeout(now, next_tick);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                // A clock read per event (tens of nanoseconds), so that a long batch of events
                // does not stamp its last replies with its start.
                let now = Instant::now();
                let i = event.token().0;
                match self.conns[i].state {
                    State::Connecting(since) => self.on_connecting(i, since, now),
                    State::Open => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(i, now);
                        } else {
                            self.flush(i);
                        }
                    }
                    State::Finished => {}
                }
            }
        }
        let finished_at = Instant::now();
        for i in 0..self.conns.len() {
            if self.conns[i].state != State::Finished {
                self.close(i, None);
            }
        }
        self.publish();
        Ok(Outcome {
            tally: self.tally,
            finished_at,
            interrupted,
        })
    }

    /// How long to wait for events: until the next tick, the next intended send or the end.
    fn poll_timeout(&self, now: Instant, next_tick: Instant) -> Duration {
        let mut wake = next_tick;
        if let Some(end) = self.plan.end.filter(|_| !self.draining) {
            wake = wake.min(end);
        }
        if let Some(&Reverse((at, _))) = self.due.peek() {
            wake = wake.min(at);
        }
        wake.saturating_duration_since(now)
    }

    fn open(&mut self, i: usize) {
        let now = Instant::now();
        let connected = TcpStream::connect(self.plan.options.addr).and_then(|mut stream| {
            self.poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match connected {
            Ok(stream) => {
                let conn = &mut self.conns[i];
                conn.stream = Some(stream);
                conn.state = State::Connecting(now);
            }
            Err(e) => self.close(i, Some(ErrorKind::of_connect(&e))),
        }
    }

    /// A connecting socket had an event: connected, failed, or not yet.
    fn on_connecting(&mut self, i: usize, since: Instant, now: Instant) {
        let Some(stream) = self.conns[i].stream.as_ref() else {
            return;
        };
        let failed = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        if let Some(e) = failed {
            log::debug!("bench connection {i} cannot connect: error={e}");
            return self.close(i, Some(ErrorKind::of_connect(&e)));
        }
        // Small messages must not wait for Nagle's algorithm; if this fails they still go.
        let _ = stream.set_nodelay(true);
        self.tally
            .connect
            .saturating_record(micros(now.duration_since(since)));
        self.plan.live.open.fetch_add(1, Ordering::Relaxed);
        let conn = &mut self.conns[i];
        conn.state = State::Open;
        if let Some(interval) = self.plan.interval {
            // Spread the connections' schedules evenly over one interval.
            let phase = interval.mul_f64(conn.index as f64 / self.plan.connections as f64);
            conn.next_send = now + phase;
        }
        self.pump(i, now);
    }

    /// Reads and verifies everything the socket has, then sends what may go next.
    fn read(&mut self, i: usize, now: Instant) {
        let size = self.plan.options.size;
        let conn = &mut self.conns[i];
        let result = loop {
            let Some(stream) = conn.stream.as_mut() else {
                return;
            };
            match stream.read(&mut self.buf) {
                Ok(0) => break Err(ErrorKind::Closed),
                Ok(n) => {
                    if let Err(kind) = conn.consume(&self.buf[..n], size, now, &mut self.tally) {
                        break Err(kind);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(ErrorKind::of_transfer(&e)),
            }
        };
        match result {
            Ok(()) => self.pump(i, now),
            Err(kind) => self.close(i, Some(kind)),
        }
    }

    /// Queues what the connection may send now, writes it, and ends the connection when it
    /// has nothing left to send or await.
    fn pump(&mut self, i: usize, now: Instant) {
        let plan = self.plan;
        let pipeline = plan.options.pipeline;
        let conn = &mut self.conns[i];
        match plan.interval {
            None => {
                while conn.inflight.len() < pipeline && conn.may_queue(now, self.draining, plan) {
                    conn.queue(now, now, plan, &mut self.tally);
                }
            }
            Some(interval) => {
                let horizon = now + SCHEDULE_SLACK;
                while conn.next_send <= horizon
                    && conn.inflight.len() < pipeline
                    && conn.may_queue(conn.next_send, self.draining, plan)
                {
                    conn.queue(conn.next_send, now, plan, &mut self.tally);
                    conn.next_send += interval;
                }
                // At the in-flight cap the next send waits for a reply, which pumps again.
                if !conn.scheduled
                    && conn.inflight.len() < pipeline
                    && conn.may_queue(conn.next_send, self.draining, plan)
                {
                    let wake = conn.next_send.checked_sub(SCHEDULE_SLACK);
                    self.due.push(Reverse((wake.unwrap_or(conn.next_send), i)));
                    conn.scheduled = true;
                }
            }
        }
        if conn.inflight.is_empty() && !conn.scheduled {
            self.close(i, None);
        } else {
            self.flush(i);
        }
    }

    fn flush(&mut self, i: usize) {
        if let Err(kind) = self.conns[i].flush(self.plan.options.size) {
            self.close(i, Some(kind));
        }
    }

    /// Open loop: sends every message whose time has come.
    fn send_due(&mut self, now: Instant) {
        while let Some(&Reverse((at, i))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            self.conns[i].scheduled = false;
            if self.conns[i].state == State::Open {
                self.pump(i, now);
            }
        }
    }

    /// Past the end: connections with nothing in flight end now, the others when their
    /// replies are in (or time out).
    fn start_draining(&mut self) {
        self.draining = true;
        self.due.clear();
        for i in 0..self.conns.len() {
            let conn = &mut self.conns[i];
            conn.scheduled = false;
            if conn.state == State::Open && conn.inflight.is_empty() {
                self.close(i, None);
            }
        }
    }

    fn check_timeouts(&mut self, now: Instant) {
        let options = self.plan.options;
        for i in 0..self.conns.len() {
            let conn = &self.conns[i];
            let kind = match conn.state {
                State::Connecting(since)
                    if now.duration_since(since) >= options.connect_timeout =>
                {
                    ErrorKind::ConnectTimeout
                }
                State::Open
                    if conn
                        .inflight
                        .front()
                        .is_some_and(|f| now.duration_since(f.sent) >= options.timeout) =>
                {
                    ErrorKind::Timeout
                }
                _ => continue,
            };
            self.close(i, Some(kind));
        }
    }

    /// Ends connection `i` for good, counting `error` if it failed.
    fn close(&mut self, i: usize, error: Option<ErrorKind>) {
        let conn = &mut self.conns[i];
        if conn.state == State::Finished {
            return;
        }
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        if conn.state == State::Open {
            self.plan.live.open.fetch_sub(1, Ordering::Relaxed);
        }
        conn.state = State::Finished;
        conn.inflight.clear();
        conn.to_write = 0;
        self.active -= 1;
        if let Some(kind) = error {
            log::debug!("bench connection {} failed: kind={kind}", conn.index);
            *self.tally.errors.entry(kind).or_default() += 1;
        }
    }

    /// Adds what changed since last time to the live counts.
    fn publish(&mut self) {
        let errors: u64 = self.tally.errors.values().sum();
        let now = (self.tally.completed, self.tally.messages, errors);
        let live = &self.plan.live;
        live.completed
            .fetch_add(now.0 - self.published.0, Ordering::Relaxed);
        live.measured
            .fetch_add(now.1 - self.published.1, Ordering::Relaxed);
        live.errors
            .fetch_add(now.2 - self.published.2, Ordering::Relaxed);
        self.published = now;
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Target      {} ({} connection(s), {} connected, {} thread(s))",
            self.target, self.connections, self.connected, self.threads
        )?;
        let load = match self.rate {
            Some(rate) => {
                format!("open loop at {rate} msg/s (latency from each intended send time)")
            }
            None => "closed loop".to_owned(),
        };
        writeln!(
            f,
            "Load        {}-byte messages ending {}, pipeline {}, {load}",
            self.size, self.eol, self.pipeline
        )?;
        write!(f, "Duration    {:.2} s", self.duration_s)?;
        if self.warmup_s > 0.0 {
            write!(f, " after {:.2} s of warm-up", self.warmup_s)?;
        }
        if self.interrupted {
            f.write_str(" (interrupted)")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "Messages    {} echoed and verified of {} sent ({:.2} MB)",
            self.messages,
            self.sent,
            self.bytes as f64 / 1e6
        )?;
        writeln!(
            f,
            "Throughput  {:.1} msg/s, {:.2} MB/s",
            self.msgs_per_sec, self.mb_per_sec
        )?;
        writeln!(f)?;
        let l = &self.latency_us;
        writeln!(
            f,
            "Latency     {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "min", "p50", "p90", "p99", "p99.9", "max", "mean"
        )?;
        writeln!(
            f,
            "            {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            human_us(l.min as f64),
            human_us(l.p50 as f64),
            human_us(l.p90 as f64),
            human_us(l.p99 as f64),
            human_us(l.p999 as f64),
            human_us(l.max as f64),
            human_us(l.mean),
        )?;
        if !self.latency.is_empty() {
            writeln!(f)?;
            writeln!(f, "Latency distribution")?;
            chart(f, &self.latency)?;
        }
        writeln!(f)?;
        let c = &self.connect_us;
        writeln!(
            f,
            "Connect     p50 {}  p90 {}  p99 {}  max {}",
            human_us(c.p50 as f64),
            human_us(c.p90 as f64),
            human_us(c.p99 as f64),
            human_us(c.max as f64)
        )?;
        if self.errors == 0 {
            writeln!(f, "Errors      none")
        } else {
            let kinds: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            writeln!(f, "Errors      {} ({})", self.errors, kinds.join(", "))
        }
    }
}

/// A duration given in microseconds, in the unit that reads best.
fn human_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0}us")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// A text bar chart of `histogram`: one row per bucket on a 1-2-5 scale (or per decade when
/// the spread is wide), with the share of messages in it.
fn chart(f: &mut fmt::Formatter<'_>, histogram: &Histogram<u64>) -> fmt::Result {
    const WIDTH: f64 = 40.0;
    let (min, max) = (histogram.min().max(1), histogram.max().max(1));
    let mut bounds = scale(min, max, &[1, 2, 5]);
    if bounds.len() > 13 {
        bounds = scale(min, max, &[1]);
    }
    let rows = bounds.len() - 1;
    let mut counts = vec![0u64; rows];
    for v in histogram.iter_recorded() {
        let value = v.value_iterated_to().max(1);
        let row = bounds[1..].partition_point(|&hi| hi <= value);
        counts[row.min(rows - 1)] += v.count_at_value();
    }
    let total = histogram.len().max(1) as f64;
    let most = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    for (w, n) in bounds.windows(2).zip(counts) {
        let bar = "#".repeat((n as f64 / most * WIDTH).round() as usize);
        writeln!(
            f,
            "  {:>8} - {:<8} |{bar:<40}| {:5.1}%",
            human_us(w[0] as f64),
            human_us(w[1] as f64),
            n as f64 / total * 100.0
        )?;
    }
    Ok(())
}

/// Bucket edges `steps x 10^k` from the last one at or below `min` to the first one above
/// `max` (at least two edges).
fn scale(min: u64, max: u64, steps: &[u64]) -> Vec<u64> {
    let mut edges = Vec::new();
    for exp in 0..19 {
        for &step in steps {
            let Some(edge) = 10u64.pow(exp).checked_mul(step) else {
                return edges;
            };
            if edge <= min {
                edges.clear();
            }
            edges.push(edge);
            if edge > max {
                return edges;
            }
        }
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_its_size_ending_and_no_quit() {
        for ending in [LineEnding::None, LineEnding::Lf, LineEnding::CrLf] {
            for size in [2, 3, 64, 1000] {
                let p = payload(3, size, ending);
                assert_eq!(p.len(), size);
                assert!(p.ends_with(ending.as_bytes()));
                let body = &p[..size - ending.as_bytes().len()];
                assert!(!body.iter().any(|b| matches!(b, b'q' | b'\r' | b'\n')));
                assert!(body.iter().all(|b| b.is_ascii_graphic()));
            }
        }
        assert_ne!(
            payload(0, 64, LineEnding::Lf),
            payload(1, 64, LineEnding::Lf)
        );
    }

    #[test]
    fn burst_repeats_the_payload_within_bounds() {
        let options = Options {
            pipeline: 8,
            ..Options::default()
        };
        let p = payload(0, 64, LineEnding::Lf);
        assert_eq!(&*burst(&p, &options), p.repeat(8).as_slice());
        let big = payload(0, BURST_BYTES * 2, LineEnding::Lf);
        assert_eq!(burst(&big, &options).len(), big.len());
    }

    #[test]
    fn validate_rejects_what_cannot_run() {
        let ok = Options::default();
        assert!(ok.validate().is_ok());
        let bad = [
            Options {
                connections: 0,
                ..ok.clone()
            },
            Options {
                pipeline: 0,
                ..ok.clone()
            },
            Options {
                size: 1,
                line_ending: LineEnding::CrLf,
                ..ok.clone()
            },
            Options {
                size: 0,
                line_ending: LineEnding::None,
                ..ok.clone()
            },
            Options {
                rate: Some(0.0),
                ..ok.clone()
            },
            Options {
                limit: Limit::Messages(0),
                ..ok.clone()
            },
        ];
        for options in bad {
            let e = options.validate().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{options:?}");
        }
    }

    #[test]
    fn messages_limit_caps_connections_and_threads() {
        let options = Options {
            connections: 10,
            limit: Limit::Messages(3),
            threads: 8,
            ..Options::default()
        };
        assert_eq!(options.connections_used(), 3);
        assert_eq!(options.threads_used(), 3);
    }

    #[test]
    fn error_kinds_serialise_in_snake_case() {
        let mut kinds = BTreeMap::new();
        kinds.insert(ErrorKind::ConnectRefused, 2u64);
        kinds.insert(ErrorKind::Mismatch, 1);
        let json = serde_json::to_string(&kinds).unwrap();
        assert_eq!(json, r#"{"mismatch":1,"connect_refused":2}"#);
        assert_eq!(ErrorKind::ConnectTimeout.to_string(), "connect_timeout");
    }

    #[test]
    fn chart_covers_every_recorded_value() {
        let mut h = histogram();
        for v in [3, 40, 41, 900] {
            h.record(v).unwrap();
        }
        struct Chart<'a>(&'a Histogram<u64>);
        impl fmt::Display for Chart<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                chart(f, self.0)
            }
        }
        let text = Chart(&h).to_string();
        let share: f64 = text
            .lines()
            .map(|l| l.rsplit('|').next().unwrap().trim().trim_end_matches('%'))
            .map(|p| p.parse::<f64>().unwrap())
            .sum();
        assert!((share - 100.0).abs() < 0.5, "{text}");
        assert!(text.starts_with("       2us - 5us"), "{text}");
        assert_eq!(text.lines().count(), 8, "{text}");
        assert_eq!(scale(3, 70_000, &[1]), [1, 10, 100, 1_000, 10_000, 100_000]);
        assert_eq!(scale(10, 10, &[1, 2, 5]), [10, 20]);
    }
}
