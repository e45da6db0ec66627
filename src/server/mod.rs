//! The multi-client server: [`serve`] and [`Server`], its [`Config`] and [`Summary`].
//!
//! ```text
//!  listener ──► acceptor ──► hand-off queue (--backlog) ──► worker 1..N (mio poller each)
//!                  │ registers                                   │ owns its sessions
//!                  ▼                                             ▼
//!              registry ◄──── console, chat relay, stats, shutdown (through outboxes)
//! ```
//!
//! | module | what it owns |
//! | --- | --- |
//! | [`listen`] | binding the `--bind` addresses; waking an acceptor at shutdown |
//! | [`access`] | `--allow` / `--deny`: who may connect |
//! | [`acceptor`] | the blocking accept loop: limits, registration, hand-off or `busy` |
//! | `worker` | one worker's event loop: reading, replying, flushing, closing |
//! | [`registry`] | the shared map of sessions and the server-wide counts |
//! | [`session`] | a session's shared handle (counters, outbox) and the worker's own state |
//! | [`proxy`] | the PROXY protocol header: parsing it, reading it without blocking |
//! | [`protocol`] | pure framing: messages, line endings, `quit`, safe display of peer text |
//! | [`shutdown`] | the idempotent shutdown trigger |
//! | [`modes`] | the [`Handler`] trait and the echo and manual modes |
//! | [`chat`] | chat mode: the relay, nicknames, notices |
//! | `outbox` | what is queued for a session, its cost, and chat's back-pressure |
//! | [`command`] | what a typed console line means (pure parsing) |
//! | [`console`] | operator commands on stdin, carried out |
//! | [`faults`] | faults on purpose: specs, the live set, the per-session draw, pacing |
//! | `timers` | a worker's timer queue: the faulted sessions' deadlines, nearest first |
//! | [`output`] | operator output and logs through a bounded queue that never blocks |
//! | [`admin`] | the HTTP admin endpoint (`--admin`): metrics, health, sessions, stats, shutdown |
//! | [`metrics`] | per-worker counters, summed into the Prometheus exposition at scrape time |
//!
//! [`Server::run`] returns once a shutdown was triggered and every session was closed (or the
//! shutdown deadline passed), with a [`Summary`] of what was served.

pub mod acceptor;
pub mod access;
pub mod admin;
pub mod chat;
pub mod command;
pub mod console;
pub mod faults;
pub mod listen;
pub mod metrics;
pub mod modes;
pub(crate) mod outbox;
pub mod output;
pub mod protocol;
pub mod proxy;
pub mod registry;
pub mod session;
pub mod shutdown;
mod timers;
mod worker;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam::channel;

pub use access::{Access, Cidr};
pub use console::Console;
pub use faults::{FaultSpec, Faults};
pub use listen::{BindOptions, bind, bind_all, bind_all_with};
pub use metrics::{Exposition, Metrics};
pub use modes::{Context, Handler, Mode};
pub use outbox::MESSAGE_OVERHEAD;
pub use output::Printer;
pub use protocol::{LineEnding, Message};
pub use proxy::ProxyProtocol;
pub use registry::{Fanout, Registry, Stats};
pub use session::{SessionHandle, SessionId, Traffic};
pub use shutdown::Shutdown;

use acceptor::{Acceptor, Closer};
use worker::Worker;

/// The listen socket's kernel backlog: how many finished handshakes the kernel queues before
/// `accept()` (std's fixed value is 128).
pub const LISTEN_BACKLOG: i32 = 1024;

/// The default `--outbox-grace`.
pub const DEFAULT_OUTBOX_GRACE: Duration = Duration::from_secs(3);

/// The default `--max-conns`.
pub const DEFAULT_MAX_CONNS: usize = 10_000;

/// Descriptors kept free for everything that is not a session: stdio, the listener, each
/// worker's poller and waker, log files, the shutdown wake-up connection.
const RESERVED_FDS: usize = 32;

/// What the acceptor does while the hand-off queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Stop accepting: new clients wait in the kernel's queue until a worker catches up.
    #[default]
    Wait,
    /// Answer `busy` and close.
    Reject,
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Overflow::Wait => "wait",
            Overflow::Reject => "reject",
        })
    }
}

/// The server's limits and behaviour. Every field has a safe default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Worker threads; 0 means one per CPU.
    pub workers: usize,
    /// Connections accepted but not yet adopted by a worker (`--backlog`, default 4).
    pub backlog: usize,
    /// Sessions served at once; beyond it a client gets `busy`. `None`: the default,
    /// [`DEFAULT_MAX_CONNS`], lowered to what the descriptor limit covers. An explicit value is
    /// kept even when the limit cannot cover it (with a warning).
    pub max_conns: Option<usize>,
    /// What the server replies.
    pub mode: Mode,
    /// What the acceptor does while the backlog is full.
    pub overflow: Overflow,
    /// Sessions in which no byte moved either way for this long are closed; `None`: never
    /// (the default).
    pub idle_timeout: Option<Duration>,
    /// The longest partial line held for a line-based peer in chat and manual mode (64 KiB).
    pub max_line: usize,
    /// The most bytes that may be queued for one session (1 MiB); a reader that falls further
    /// behind is disconnected. At least [`min_outbox_limit`] of `max_line`.
    pub outbox_limit: usize,
    /// How long a graceful shutdown may take (5 s).
    pub shutdown_timeout: Duration,
    /// How long a chat reader may stay more than half `outbox_limit` behind before it is
    /// dropped (3 s); meanwhile the senders it lags behind are not read.
    pub outbox_grace: Duration,
    /// Faults every new session may get, each with its own chance ([`faults`]); none by
    /// default. The running server's set changes live through [`Running::faults`].
    pub faults: Vec<FaultSpec>,
    /// The seed of the per-session fault draws: the same seed and the same order of
    /// connections give the same sessions the same faults. `None`: a new seed each run
    /// (logged when there are faults).
    pub seed: Option<u64>,
    /// Who may connect (`--allow`, `--deny`); everyone by default.
    pub access: Access,
    /// The PROXY header every connection must begin with (`--proxy-protocol`); `None`, the
    /// default: no header, the connection's address is the client's.
    pub proxy: Option<ProxyProtocol>,
    /// How long a connection may take to send its PROXY header (5 s).
    pub proxy_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 0,
            backlog: 4,
            max_conns: None,
            mode: Mode::Echo,
            overflow: Overflow::Wait,
            idle_timeout: None,
            max_line: 64 * 1024,
            outbox_limit: 1024 * 1024,
            shutdown_timeout: Duration::from_secs(5),
            outbox_grace: DEFAULT_OUTBOX_GRACE,
            faults: Vec::new(),
            seed: None,
            access: Access::default(),
            proxy: None,
            proxy_timeout: proxy::DEFAULT_PROXY_TIMEOUT,
        }
    }
}

/// Room a relayed line needs beyond its text: the `<NICK> ` prefix and the line ending.
const RELAY_OVERHEAD: usize = 64;

/// The smallest `outbox_limit` that works with `max_line`: room for one relayed line of the
/// longest length still being written and the next one, so a reader that keeps up is never
/// dropped for one long line.
pub fn min_outbox_limit(max_line: usize) -> usize {
    2 * (max_line + RELAY_OVERHEAD)
}

impl Config {
    /// Checks the limits against each other.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when `outbox_limit` is below [`min_outbox_limit`] of `max_line`, or a
    /// limit is zero.
    pub fn validate(&self) -> io::Result<()> {
        let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if self.backlog == 0 || self.max_line == 0 || self.max_conns == Some(0) {
            return invalid("--backlog, --max-line and --max-conns must be at least 1".into());
        }
        let min = min_outbox_limit(self.max_line);
        if self.outbox_limit < min {
            return invalid(format!(
                "--outbox-limit {} is too small for --max-line {}: it must be at least {min}, \
                 room for two of the longest lines, so that a reader that keeps up is never dropped",
                self.outbox_limit, self.max_line
            ));
        }
        for spec in &self.faults {
            FaultSpec::new(spec.kind, spec.p)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        }
        Ok(())
    }

    /// The number of worker threads this config asks for (resolving 0 to the CPU count).
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// What a server run served, returned by [`Server::run`] and printed at exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Sessions served in all.
    pub sessions: u64,
    /// The most at once.
    pub peak: usize,
    /// Connections answered `busy`.
    pub rejected: u64,
    /// Messages and bytes, in and out.
    pub traffic: Traffic,
    /// How long the server ran.
    pub uptime: Duration,
    /// The shutdown deadline passed before every session was closed.
    pub forced: bool,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.traffic;
        write!(
            f,
            "tcpool served {} session(s) in {} (peak {} at once, {} rejected): \
             {} message(s) in and {} out, {} byte(s) in and {} out.",
            self.sessions,
            console::human_duration(self.uptime),
            self.peak,
            self.rejected,
            t.messages_in,
            t.messages_out,
            t.bytes_in,
            t.bytes_out,
        )?;
        if self.forced {
            f.write_str(" Some sessions were still closing at the shutdown deadline.")?;
        }
        Ok(())
    }
}

use crate::time::later;

/// Shared by the acceptor and every worker for the whole run.
pub(crate) struct Shared {
    pub(crate) registry: Registry,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) shutdown: Shutdown,
    pub(crate) config: Config,
    /// The workers' and the acceptor's counts; one cell per worker.
    pub(crate) metrics: Arc<Metrics>,
    /// `config.max_conns` resolved against the descriptor limit.
    pub(crate) max_conns: usize,
    /// The live set of faults each new session draws from.
    pub(crate) faults: Faults,
}

/// A server ready to run: a listener, a config, a handler and the handles others use to
/// reach it ([`Server::registry`], [`Server::shutdown`]).
///
/// # Examples
///
/// Serve echo on a free port, talk to it, shut it down:
///
/// ```
/// use std::io::{Read, Write};
/// use std::net::TcpStream;
/// use tcpool::server::{bind, Config, Server};
///
/// let server = Server::new(bind("127.0.0.1:0".parse()?)?, Config::default());
/// let addr = server.local_addr()?;
/// let shutdown = server.shutdown();
/// let running = std::thread::spawn(move || server.run());
///
/// let mut client = TcpStream::connect(addr)?;
/// client.write_all(b"hello")?;
/// let mut reply = [0; 5];
/// client.read_exact(&mut reply)?;
/// assert_eq!(&reply, b"hello");
///
/// shutdown.trigger();
/// let mut goodbye = Vec::new();
/// client.read_to_end(&mut goodbye)?;
/// assert_eq!(goodbye, b"quit"); // no terminator: the client never sent one
/// let summary = running.join().unwrap()?;
/// assert_eq!(summary.sessions, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server {
    /// One or more; each gets an acceptor of its own, all handing off to the same pool.
    listeners: Vec<TcpListener>,
    config: Config,
    handler: Option<Arc<dyn Handler>>,
    printer: Printer,
    registry: Registry,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
    faults: Faults,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("listeners", &self.listeners)
            .field("config", &self.config)
            .finish()
    }
}

impl Server {
    /// A server on `listener` (blocking, as [`bind`] makes it) with the handler of
    /// `config.mode`, printing operator output to stdout.
    pub fn new(listener: TcpListener, config: Config) -> Self {
        let registry = Registry::new(config.outbox_limit);
        let metrics = Arc::new(Metrics::new(config.worker_count()));
        let seed = config.seed.unwrap_or_else(faults::random_seed);
        let faults = Faults::new(seed, &config.faults);
        Server {
            listeners: vec![listener],
            faults,
            config,
            handler: None,
            printer: Printer::stdout(),
            registry,
            shutdown: Shutdown::new(),
            metrics,
        }
    }

    /// Serves `listener` too, with an acceptor of its own handing off to the same workers
    /// (several `--bind` addresses, inherited sockets).
    pub fn also_on(mut self, listener: TcpListener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Replies with `handler` instead of the mode's.
    pub fn handler(mut self, handler: impl Handler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// Prints operator output (manual mode's client lines) through `printer`.
    pub fn printer(mut self, printer: Printer) -> Self {
        self.printer = printer;
        self
    }

    /// Obeys `shutdown` instead of a shutdown of its own.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The shutdown handle: trigger it to stop the server gracefully.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The registry of sessions.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// What a Prometheus scrape of this server reads ([`Exposition::encode`]).
    pub fn exposition(&self) -> Exposition {
        Exposition::new(
            Arc::clone(&self.metrics),
            self.registry.clone(),
            self.config.backlog,
        )
        .with_faults(self.faults.clone())
    }

    /// The address the first listener is bound to (with the real port when bound to port 0).
    ///
    /// # Errors
    ///
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listeners[0].local_addr()
    }

    /// The addresses of every listener, in the order they were given.
    ///
    /// # Errors
    ///
    /// As [`TcpListener::local_addr`].
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.listeners.iter().map(TcpListener::local_addr).collect()
    }

    /// An operator console for this server.
    pub fn console(&self) -> Console {
        Console::new(
            self.registry.clone(),
            self.shutdown.clone(),
            self.config.mode,
            self.printer.clone(),
        )
        .with_faults(self.faults.clone())
    }

    /// The live set of faults: what is added or cleared here applies at once.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// Serves until the shutdown is triggered, then closes every session gracefully within
    /// `config.shutdown_timeout` and returns what was served. The same as
    /// [`Server::start`] followed by [`Running::wait`].
    ///
    /// # Errors
    ///
    /// As [`Server::start`].
    pub fn run(self) -> io::Result<Summary> {
        self.start()?.wait()
    }

    /// Starts serving: the workers, the acceptor and the shutdown hooks are running and the
    /// `listening on` line is logged when this returns.
    ///
    /// # Errors
    ///
    /// When the server cannot start: the config is invalid ([`Config::validate`]), the
    /// listener cannot be read, a poller or thread cannot be created. Once serving, errors
    /// concern single sessions and are logged.
    pub fn start(self) -> io::Result<Running> {
        let Server {
            listeners,
            config,
            handler,
            printer,
            registry,
            shutdown,
            metrics,
            faults,
        } = self;
        config.validate()?;
        let addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<io::Result<Vec<_>>>()?;
        for listener in &listeners {
            listener.set_nonblocking(false)?;
        }
        let workers = metrics.worker_count();
        let max_conns = fit_max_conns(config.max_conns, workers);
        let handler = handler.unwrap_or_else(|| config.mode.handler(printer));
        let shared = Arc::new(Shared {
            registry: registry.clone(),
            handler,
            shutdown: shutdown.clone(),
            config: config.clone(),
            metrics,
            max_conns,
            faults: faults.clone(),
        });

        let pool = crate::pool::Pool::spawn("tcpool-worker", workers, config.backlog, |i| {
            Worker::new(i, Arc::clone(&shared))
        })?;
        registry.watch_backlog(pool.depth());
        let (counted, timeout) = (registry.clone(), config.shutdown_timeout);
        shutdown.on_trigger(move || {
            log::info!(
                "shutting down: sessions={} timeout={timeout:?}",
                counted.len()
            );
        });
        let wakers = pool.wakers();
        shutdown.on_trigger(move || wakers.wake_all());
        // A second handle on each listen socket, taken now: at the descriptor limit the
        // wake-up connection itself may fail, and then the acceptor is woken through it.
        for (listener, &addr) in listeners.iter().zip(&addrs) {
            let listen_socket = listener.try_clone()?;
            shutdown.on_trigger(move || listen::wake_acceptor(addr, &listen_socket));
        }

        let (closer, closer_thread) = Closer::spawn(spare_fds(max_conns, workers))?;
        // Each acceptor holds a clone of `acceptor_done`: it disconnects when the last returns.
        let (acceptor_done, acceptor_stopped) = channel::bounded::<()>(0);
        let mut acceptor_threads = Vec::with_capacity(listeners.len());
        for (i, listener) in listeners.into_iter().enumerate() {
            let acceptor = Acceptor {
                listener,
                shared: Arc::clone(&shared),
                submitter: pool.submitter(),
                closer: closer.clone(),
            };
            let name = match i {
                0 => "tcpool-acceptor".to_owned(),
                i => format!("tcpool-acceptor-{}", i + 1),
            };
            let done = acceptor_done.clone();
            let spawned = thread::Builder::new().name(name).spawn(move || {
                let _done = done;
                acceptor.run();
            });
            match spawned {
                Ok(thread) => acceptor_threads.push(thread),
                Err(e) => {
                    shutdown.trigger();
                    return Err(e);
                }
            }
        }
        drop((acceptor_done, closer));
        log::info!(
            "listening on {} (mode={} workers={workers} backlog={} max-conns={max_conns} overflow={})",
            listen::describe(&addrs),
            config.mode,
            config.backlog,
            config.overflow
        );
        if !faults.active().is_empty() {
            let specs: Vec<String> = faults
                .active()
                .iter()
                .map(|f| format!("#{} {}", f.id, f.spec))
                .collect();
            log::info!("faults: {} seed={}", specs.join(" "), faults.seed());
        }
        Ok(Running {
            addrs,
            faults,
            registry,
            shutdown,
            shutdown_timeout: config.shutdown_timeout,
            pool,
            acceptor_threads,
            acceptor_stopped,
            closer_thread,
        })
    }
}

/// A started server: it serves until its shutdown is triggered; [`Running::wait`] then
/// returns the [`Summary`].
pub struct Running {
    addrs: Vec<SocketAddr>,
    faults: Faults,
    registry: Registry,
    shutdown: Shutdown,
    shutdown_timeout: Duration,
    pool: crate::pool::Pool<worker::Conn>,
    acceptor_threads: Vec<thread::JoinHandle<()>>,
    /// Disconnects when every acceptor thread has returned (nobody ever sends on it).
    acceptor_stopped: channel::Receiver<()>,
    closer_thread: thread::JoinHandle<()>,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("addrs", &self.addrs)
            .field("sessions", &self.registry.len())
            .finish()
    }
}

impl Running {
    /// The address the server listens on (the first, when it listens on several).
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every address the server listens on.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The live set of faults: a fault added here touches the sessions that connect from
    /// now on; one cleared here ends for everyone at once.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// Blocks until the shutdown is triggered, then waits (at most the shutdown timeout) for
    /// every session to be closed and every thread to stop, and returns what was served.
    ///
    /// # Errors
    ///
    /// None at present: a deadline that passed is reported in [`Summary::forced`]. The
    /// `Result` leaves room for failures a future version may report.
    pub fn wait(self) -> io::Result<Summary> {
        let Running {
            registry,
            shutdown,
            shutdown_timeout,
            pool,
            acceptor_threads,
            acceptor_stopped,
            closer_thread,
            ..
        } = self;
        shutdown.wait();
        let started = shutdown.triggered_at().unwrap_or_else(Instant::now);
        let deadline = later(started, shutdown_timeout);
        let acceptor_done = acceptor_stopped.recv_deadline(deadline)
            == Err(channel::RecvTimeoutError::Disconnected);
        if acceptor_done {
            for thread in acceptor_threads {
                let _ = thread.join();
            }
        } else {
            log::warn!("acceptor did not stop before the shutdown deadline");
        }
        let joined = pool.join_timeout(deadline.saturating_duration_since(Instant::now()));
        if let Err(e) = &joined {
            log::warn!("shutdown deadline passed: {e}; their sessions are dropped");
        }
        if acceptor_done {
            // Its sender went with the acceptor: the closer drains what it has and returns.
            let _ = closer_thread.join();
        }
        let stats = registry.stats();
        log::info!("stopped after {:?}", started.elapsed());
        Ok(Summary {
            sessions: stats.total,
            peak: stats.peak,
            rejected: stats.rejected,
            traffic: stats.traffic,
            uptime: stats.uptime,
            forced: joined.is_err() || !acceptor_done,
        })
    }
}

/// Serves on `listener` with `config` until `shutdown` is triggered. The one-call way in;
/// see [`Server`] for a custom handler, the registry or the console.
///
/// # Errors
///
/// As [`Server::run`].
pub fn serve(listener: TcpListener, config: Config, shutdown: Shutdown) -> io::Result<Summary> {
    Server::new(listener, config).with_shutdown(shutdown).run()
}

/// Descriptors the closer may hold for rejected connections: what the limit leaves beyond
/// `max_conns` sessions and half the reserve (the other half stays for everything else).
fn spare_fds(max_conns: usize, workers: usize) -> usize {
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(soft, _)| soft);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    limit.saturating_sub(max_conns + RESERVED_FDS / 2 + 2 * workers)
}

/// Raises the soft descriptor limit toward the hard one, then fits `max_conns` to it: the
/// default is lowered with a warning, an explicit value is kept with a warning.
pub fn fit_max_conns(max_conns: Option<usize>, workers: usize) -> usize {
    let wanted = max_conns.unwrap_or(DEFAULT_MAX_CONNS);
    let reserved = RESERVED_FDS + 2 * workers;
    let limit = match rlimit::increase_nofile_limit((wanted + reserved) as u64) {
        Ok(limit) => usize::try_from(limit).unwrap_or(usize::MAX),
        Err(e) => {
            log::warn!("cannot read the file descriptor limit: error={e}");
            return wanted;
        }
    };
    let fits = limit.saturating_sub(reserved);
    if wanted <= fits {
        return wanted;
    }
    match max_conns {
        Some(explicit) => {
            log::warn!(
                "max-conns {explicit} kept, but the file descriptor limit ({limit}) covers about {fits} sessions"
            );
            explicit
        }
        None => {
            let lowered = fits.max(1);
            log::warn!(
                "max-conns lowered from {wanted} to {lowered} to fit the file descriptor limit ({limit})"
            );
            lowered
        }
    }
}
