//! The load generator behind `tcpool bench`: many connections to any request/response TCP
//! server (a verifying echo client by default), latency in an HdrHistogram, a [`Report`] for
//! people and for JSON that [`merge()`] combines exactly across generators.
//!
//! [`run`] owns the whole measurement: it splits the connections over a few threads (one per
//! core at most), each driving its share with its own `mio` poller, and merges what they
//! measured. Flags, signals, the progress bar and printing are the binary's business
//! (`src/cli/bench.rs`); here the caller passes a stop flag and an optional progress callback.
//!
//! How a run goes:
//!
//! - **Connect**: every connection starts with a non-blocking connect, all at once or
//!   [`Options::connect_rate`] per second; the time until the socket is writable is its
//!   connect time. A refused or failed connect tries the target's next address; one that
//!   fails at every address, or takes longer than [`Options::connect_timeout`], is an error of
//!   its kind, and that connection is not opened again (nor is any connection that fails
//!   later). With a [`Greeting`] each connection sends it and awaits its reply here. With
//!   [`Options::tls`] the TLS handshake follows the connect at once, timed apart from it.
//! - **Start**: the load begins once every connection is open (or has failed), or at
//!   [`Options::start_at`] if that is later, so that connecting is never measured and several
//!   generators can share one window.
//! - **Requests**: by default ([`Protocol::Echo`]) each connection sends one fixed payload of
//!   [`Options::size`] bytes: printable bytes, never `\n` or `\r` inside and never a `q` (so
//!   no stretch of the stream can spell `quit`), then the chosen line ending, which counts in
//!   the size; neighbouring connections send different payloads, so replies crossed between
//!   connections are caught too. [`Protocol::Request`] sends a [`Template`] instead, with the
//!   connection's index and the message's number filled in, and a [`Reply`] rule says where
//!   each reply ends.
//! - **Load**: closed loop by default: each connection keeps [`Options::pipeline`] messages in
//!   flight and sends the next as soon as a reply completes. With [`Options::rate`] the load is
//!   open loop: the total rate is split evenly across connections, each message has an
//!   intended send time on that schedule, and a message that goes out late is measured from
//!   that time, not from when it actually went out. A server that stalls therefore shows the
//!   whole stall in the latency of every message that should have been sent meanwhile
//!   (coordinated omission, as wrk2 corrects it); `pipeline` still caps what is in flight per
//!   connection. (A message may also go out up to a millisecond early, and is then measured
//!   from when it went out: see `SCHEDULE_SLACK` in the source.)
//! - **Verify**: replies to K pipelined messages come in order, so an exact reply (echo, or
//!   [`Reply::Exact`]) is compared byte for byte as it arrives. A wrong byte or a byte nobody
//!   asked for is a `mismatch` (or `busy`, or `closed` for a server's `quit`); a closed or
//!   reset connection, a reply older than [`Options::timeout`] and connect failures are errors
//!   too ([`ErrorKind`]), and the first of each kind is kept with what was seen
//!   ([`FirstError`]). An error ends that connection only; the run goes on with the others.
//! - **Measure**: messages queued during [`Options::warmup`] are sent and checked but neither
//!   recorded nor counted, and are not part of [`Limit::Messages`], which is split exactly
//!   across connections. With [`Limit::Duration`] the measured window is exactly that long:
//!   nothing is queued after it, and the replies still in flight at its end are awaited (up
//!   to the reply timeout) outside it: their latency is recorded, so a slow tail is not cut
//!   off, but they are counted apart ([`Report::in_flight_at_end`]) and not in the
//!   throughput. Setting the stop flag ends the run at once with what was measured so far.
//! - **Reconnect**: with [`Options::reconnect_every`] a connection that has had that many
//!   replies is closed (TLS's `close_notify` first) and opened again at once, with a new
//!   connect and handshake, each timed into its own histogram, within the window: the
//!   throughput then counts what the connects and handshakes cost.
//!
//! The parts, one file each: `plan` (the options and what the threads share), `worker` (one
//! thread's poller), `conn` (a connection's state machine), `framing` (requests and how
//! replies end), `tally` (what one thread measured), `histogram` (latency histograms and
//! their portable form), `report` (the result and its JSON), `text` (the result for people), `merge` (many results as one),
//! `plot` (results as a picture), `interval_log` (the run as an HdrHistogram log), `error`
//! (why a connection failed) and `server` (the server's own counts from its `/metrics`, for
//! `--server-metrics`).

mod bytes;
pub mod chat;
mod conn;
mod error;
mod framing;
mod histogram;
mod interval_log;
mod merge;
mod plan;
mod plot;
mod proto;
mod report;
mod server;
mod tally;
mod text;
pub mod thresholds;
mod tls;
pub mod udp;
mod worker;

pub use error::ErrorKind;
pub use histogram::Percentiles;
pub use plan::{Limit, Options};
pub use report::Report;
pub use tls::{BenchTls, Resume};

pub use error::FirstError;
pub use framing::{Draw, Greeting, MAX_RAND, Protocol, Reply, Request, Template};
pub use histogram::{SparseHistogram, decode, encode};
pub use interval_log::{write_interval_log, write_seconds};
pub use merge::{Merged, OVERLAP_WARNING, merge};
pub use plan::{DEFAULT_MAX_REPLY, MAX_KINDS};
pub use plot::{plot, plot_udp};
pub use proto::{Class, Framed};
pub use report::{Generator, Replies, RequestKind, Second, TlsReport, Window};
pub use server::{MetricsUrl, ReplyTimes, SETTLE, Samples, ServerView, UdpServerView};

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crossbeam::channel;

use framing::Delimiter;
use plan::{Framing, Live, Plan};
use tls::TlsConfigs;
use worker::{Outcome, Worker};

/// The default number of connections (`-c`).
pub const DEFAULT_CONNECTIONS: usize = 64;

/// The default run length when neither a duration nor a message count is given (`-d 10`).
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// The default message size in bytes, line ending included (`-s`).
pub const DEFAULT_SIZE: usize = 64;

/// The default time a connect or a reply may take before it is an error.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often [`run`] calls the progress callback.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// A snapshot of a running benchmark, passed to the progress callback about ten times a
/// second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Time since the run started (warm-up included).
    pub elapsed: Duration,
    /// Still connecting (or waiting for [`Options::start_at`]): no load yet.
    pub connecting: bool,
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
///     addrs: vec![addr],
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
    run_with(options, stop, progress, None)
}

/// The latencies recorded since the last call, by second of the measured window (0: the
/// first), each a histogram of the run's own buckets; a second may come in several parts.
pub type Seconds<'a> = &'a dyn Fn(Vec<(u64, SparseHistogram)>);

/// [`run`], also passing on the latencies as they are recorded (on the calling thread, every
/// few hundred milliseconds): a fleet's generator streams them to its coordinator. Added
/// together, what `seconds` was given is the report's timeline.
///
/// # Errors
///
/// As [`run`].
pub fn run_streaming(
    options: &Options,
    stop: &AtomicBool,
    progress: Option<&dyn Fn(&Progress)>,
    seconds: Seconds<'_>,
) -> io::Result<Report> {
    run_with(options, stop, progress, Some(seconds))
}

fn run_with(
    options: &Options,
    stop: &AtomicBool,
    progress: Option<&dyn Fn(&Progress)>,
    seconds: Option<Seconds<'_>>,
) -> io::Result<Report> {
    options.validate()?;
    let connections = options.connections_used();
    let threads = options.threads_used();
    raise_fd_limit(connections);

    let start = Instant::now();
    let clock = (start, SystemTime::now());
    let start_at = options
        .start_at
        .map(|at| match at.duration_since(SystemTime::now()) {
            Ok(ahead) => start + ahead,
            Err(_) => {
                log::warn!("the start time has passed; starting as soon as connected");
                start
            }
        });
    let plan = Plan {
        options,
        connections,
        threads,
        start,
        start_at,
        schedule: OnceLock::new(),
        ready: AtomicUsize::new(0),
        interval: options
            .rate
            .map(|rate| Duration::from_secs_f64(connections as f64 / rate)),
        connect_interval: options
            .connect_rate
            .map(|rate| Duration::from_secs_f64(1.0 / rate)),
        framing: Framing::new(options, connections),
        greeting_end: options
            .greeting
            .as_ref()
            .and_then(|g| match (&g.until, &options.protocol) {
                (Some(until), _) => Some(Delimiter::new(until)),
                (
                    None,
                    Protocol::Request {
                        reply: Reply::Framed(_),
                        ..
                    },
                ) => None,
                (None, _) => Some(Delimiter::new(b"\n")),
            }),
        stop,
        tls: options
            .tls
            .as_ref()
            .map(|tls| TlsConfigs::new(tls, connections)),
        abort: AtomicBool::new(false),
        live: Live {
            deltas: seconds.map(|_| Default::default()),
            ..Live::default()
        },
    };
    log::debug!(
        "bench starting: target={} connections={connections} threads={threads}",
        options.addrs[0]
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
                    let outcome = Worker::new(plan, t, threads).and_then(Worker::run);
                    if outcome.is_err() {
                        // The others would wait for this thread's connections forever.
                        plan.abort.store(true, Ordering::Relaxed);
                    }
                    outcome
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
        watch(&plan, start, &done_rx, progress, seconds);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a bench thread panicked")))
            })
            .collect::<io::Result<Vec<Outcome>>>()
    })?;
    pass_on(&plan, seconds);
    Ok(report::report(options, &plan, clock, outcomes))
}

/// Calls `progress` until every worker has returned (each holds a sender of `done`, never
/// used: the channel disconnects when the last one returns).
fn watch(
    plan: &Plan<'_>,
    start: Instant,
    done: &channel::Receiver<()>,
    progress: Option<&dyn Fn(&Progress)>,
    seconds: Option<Seconds<'_>>,
) {
    let mut last = (start, 0u64);
    while let Err(channel::RecvTimeoutError::Timeout) = done.recv_timeout(PROGRESS_EVERY) {
        pass_on(plan, seconds);
        let Some(progress) = progress else { continue };
        let now = Instant::now();
        let completed = plan.live.completed.load(Ordering::Relaxed);
        let messages = plan.live.measured.load(Ordering::Relaxed);
        let elapsed = now.duration_since(start);
        let schedule = plan.schedule.get();
        let done = match (plan.options.limit, schedule) {
            (_, None) => 0.0,
            (Limit::Duration(d), Some(s)) => {
                now.saturating_duration_since(s.go).as_secs_f64()
                    / (plan.options.warmup + d).as_secs_f64()
            }
            (Limit::Messages(n), _) => messages as f64 / n as f64,
        };
        let window = now.duration_since(last.0).as_secs_f64();
        progress(&Progress {
            elapsed,
            connecting: schedule.is_none_or(|s| now < s.go),
            warming_up: schedule.is_some_and(|s| now >= s.go && now < s.measure_start),
            messages,
            errors: plan.live.errors.load(Ordering::Relaxed),
            open: plan.live.open.load(Ordering::Relaxed),
            msgs_per_sec: (completed - last.1) as f64 / window.max(1e-9),
            done: done.clamp(0.0, 1.0),
        });
        last = (now, completed);
    }
}

/// Gives `seconds` what the threads streamed since the last call, if anything.
fn pass_on(plan: &Plan<'_>, seconds: Option<Seconds<'_>>) {
    if let (Some(seconds), Some(deltas)) = (seconds, &plan.live.deltas) {
        let taken = std::mem::take(&mut *deltas.lock());
        if !taken.is_empty() {
            seconds(taken);
        }
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
