//! `tcpool bench --chat`: a room's fan-out measured. Senders and readers are spread round
//! robin over one or more targets (the nodes of a chat cluster, or one Redis); each sender
//! sends lines carrying its number, the line's number and its intended send time, and every
//! reader checks that every line of every sender comes exactly once and in order per sender,
//! timing each delivery from its send: apart when the reader is on the sender's target
//! (`local`) and when it is on another (`cross-node`).
//!
//! How a run goes:
//!
//! - **Connect and join**: client `i` (senders first, then readers) connects to target
//!   `i % targets`. On a chat server a sender sets a nickname unique to the run and waits for
//!   `* you are now NAME`; a reader waits for its `* you are #N` greeting. On Redis a reader
//!   sends `SUBSCRIBE` and waits for the confirmation; a sender is ready once connected. A
//!   client not ready within [`ChatOptions::timeout`] is an error and takes no part.
//! - **Send**: once every client is ready (or failed), and [`SETTLE`] later (the join notices
//!   pass), each sender sends [`ChatOptions::rate`] lines a second for
//!   [`ChatOptions::duration`], open loop: each line has an intended send time on its
//!   sender's schedule (the senders' schedules staggered), carries it, and is timed from
//!   it, so a server that stops reading a sender shows the stall in every line due
//!   meanwhile. Without a rate, each sender sends as fast as the server takes its lines, each
//!   timed from when it was written into the socket's buffer.
//! - **Drain**: after the window readers read on until each has every line sent, or for
//!   [`ChatOptions::drain`]; then every line not seen is missing.
//! - **Check**: a line seen twice is a duplicate; a line seen after a later one of its
//!   sender is out of order (and delivered); anything else on the wire (notices, other
//!   clients' lines) is ignored. A reader the server disconnects is an error, and the lines it
//!   did not get are missing.

mod report;
mod track;
mod wire;
mod worker;

pub use report::{ChatErrors, ChatReport};

use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Between every client being ready and the first line: the join and nickname notices the
/// clients caused pass meanwhile.
pub const SETTLE: Duration = Duration::from_millis(500);

/// What the clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChatProtocol {
    /// `tcpool serve --mode chat` (one node, or several of a cluster).
    #[default]
    Chat,
    /// Redis pub/sub: senders `PUBLISH`, readers `SUBSCRIBE`, on one channel per run.
    Redis,
}

impl std::fmt::Display for ChatProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChatProtocol::Chat => "chat",
            ChatProtocol::Redis => "redis",
        })
    }
}

/// What a chat run is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatOptions {
    /// The targets, one address each; clients are spread over them round robin.
    pub targets: Vec<SocketAddr>,
    /// What the clients speak.
    pub protocol: ChatProtocol,
    /// Clients that send (and read nothing they check).
    pub senders: usize,
    /// Clients that read and check.
    pub readers: usize,
    /// Lines per second per sender; `None`: as fast as the server takes them.
    pub rate: Option<f64>,
    /// How long the senders send.
    pub duration: Duration,
    /// How long readers may read on after the window for lines still on their way.
    pub drain: Duration,
    /// How long connecting and joining may take.
    pub timeout: Duration,
    /// Threads driving the clients; 0: one per CPU.
    pub threads: usize,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            targets: vec![SocketAddr::from(([127, 0, 0, 1], crate::DEFAULT_PORT))],
            protocol: ChatProtocol::Chat,
            senders: 1,
            readers: 1,
            rate: None,
            duration: Duration::from_secs(10),
            drain: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            threads: 0,
        }
    }
}

impl ChatOptions {
    /// The threads a run uses: one per CPU (or [`ChatOptions::threads`]), at most one per client.
    pub fn threads_used(&self) -> usize {
        let threads = match self.threads {
            0 => thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        threads.min(self.senders + self.readers).max(1)
    }

    /// The target client `client` connects to (senders first, then readers).
    pub fn target_of(&self, client: usize) -> usize {
        client % self.targets.len()
    }

    /// Checks the options make a run.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`], saying which option is wrong.
    pub fn validate(&self) -> io::Result<()> {
        let invalid = |msg: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if self.targets.is_empty() {
            return invalid("no target to connect to");
        }
        if self.senders == 0 || self.readers == 0 {
            return invalid("a chat run needs at least one sender and one reader");
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return invalid("the rate must be a positive number of lines per second");
        }
        if self.duration.is_zero() {
            return invalid("the duration must be more than zero");
        }
        Ok(())
    }
}

/// What the threads of a run share.
pub(super) struct Shared<'a> {
    options: &'a ChatOptions,
    threads: usize,
    /// Tells this run's lines from anything else on the wire.
    run: u32,
    /// Time zero of the lines' timestamps.
    epoch: Instant,
    /// Threads whose clients are all ready or failed.
    set: AtomicUsize,
    /// When the first line is due, once every thread is set.
    go: OnceLock<Instant>,
    /// Lines each sender sent, final once `sent_final` equals the threads.
    sent: Vec<AtomicU64>,
    /// Threads whose senders have stopped.
    sent_final: AtomicUsize,
    stop: &'a AtomicBool,
}

impl Shared<'_> {
    /// Every sender's count, once every thread's senders have stopped.
    fn sent_total(&self) -> Option<u64> {
        (self.sent_final.load(Ordering::Acquire) == self.threads)
            .then(|| self.sent.iter().map(|n| n.load(Ordering::Relaxed)).sum())
    }
}

/// Runs a chat benchmark with `options` until its window and drain are over, or `stop` is
/// set (then it reports what it saw so far).
///
/// # Errors
///
/// Invalid options, or a poller or thread that cannot be created; what goes wrong on a
/// connection is counted in the report.
pub fn run(options: &ChatOptions, stop: &AtomicBool) -> io::Result<ChatReport> {
    options.validate()?;
    let threads = options.threads_used();
    let wanted = (options.senders + options.readers) as u64 + 64;
    if let Ok(limit) = rlimit::increase_nofile_limit(wanted)
        && limit < wanted
    {
        log::warn!("file descriptor limit {limit} is too low for every client; some will fail");
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let shared = Shared {
        options,
        threads,
        run: nanos ^ std::process::id().rotate_left(16),
        epoch: Instant::now(),
        set: AtomicUsize::new(0),
        go: OnceLock::new(),
        sent: (0..options.senders).map(|_| AtomicU64::new(0)).collect(),
        sent_final: AtomicUsize::new(0),
        stop,
    };
    let tallies = thread::scope(|scope| {
        let handles = (0..threads)
            .map(|t| {
                let shared = &shared;
                thread::Builder::new()
                    .name(format!("tcpool-chat-{t}"))
                    .spawn_scoped(scope, move || worker::Worker::new(shared, t)?.run())
            })
            .collect::<io::Result<Vec<_>>>()?;
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a chat bench thread panicked")))
            })
            .collect::<io::Result<Vec<_>>>()
    })?;
    Ok(report::report(options, &shared, tallies))
}
