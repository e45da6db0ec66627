//! [`Config`]: the server's limits and behaviour, their defaults, and how they are checked
//! against each other before a run.

use std::fmt;
use std::io;
use std::thread;
use std::time::Duration;

use super::arrival::access::Access;
use super::arrival::proxy::{self, ProxyProtocol};
use super::faults::FaultSpec;
use super::modes::Mode;

/// The default `--outbox-grace`.
pub const DEFAULT_OUTBOX_GRACE: Duration = Duration::from_secs(3);

/// The default `--max-conns`.
pub const DEFAULT_MAX_CONNS: usize = 10_000;

/// The most worker threads a server runs. The balance keeps a table of workers × workers
/// counters (8 MiB at this bound) and every worker its own thread, poller and read buffer:
/// 1,024 is far more than any machine has CPUs, and bounds what `--workers` can allocate.
pub const MAX_WORKERS: usize = 1024;

/// The finest `idle_timeout`: the poller counts in milliseconds, so a shorter timeout could
/// only mean 0 ms, or be rounded away to never.
pub const IDLE_TIMEOUT_RESOLUTION: Duration = Duration::from_millis(1);

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

/// How sessions are shared among the workers (`--balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balancing {
    /// Sessions gather on as few workers as keep up with them, and spread again when those
    /// fall behind: a light load wakes one worker, not all.
    #[default]
    Auto,
    /// Each connection goes to the next worker in turn and stays there.
    RoundRobin,
}

/// The Linux scheduling policy the worker threads run under (`--worker-sched`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerSched {
    /// `SCHED_BATCH`: a worker woken by a client's bytes does not cut in on the thread
    /// running on its CPU; it runs when that one sleeps or its turn ends, and finds more to do
    /// at each wake, with fewer context switches a message. Its share of the CPU is unchanged
    /// (its nice value is kept). A worker started under any other policy than the default
    /// (`chrt`, systemd's `CPUSchedulingPolicy=`) keeps that one.
    ///
    /// The cost: one or two messages in a hundred wait a scheduler tick for their worker, so
    /// the p99 a client measures can grow tenfold (milliseconds, not tenths of one) for a
    /// throughput no higher than [`WorkerSched::Normal`] gives. For throughput-only runs.
    Batch,
    /// The policy the process started with, untouched: a woken worker answers at once. The
    /// default, since a load-test target must not add latency of its own.
    #[default]
    Normal,
}

impl fmt::Display for WorkerSched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkerSched::Batch => "batch",
            WorkerSched::Normal => "normal",
        })
    }
}

impl fmt::Display for Balancing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Balancing::Auto => "auto",
            Balancing::RoundRobin => "round-robin",
        })
    }
}

/// The server's limits and behaviour. Every field has a safe default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Worker threads; 0 means one per CPU.
    pub workers: usize,
    /// How sessions are shared among the workers.
    pub balance: Balancing,
    /// With [`Balancing::Auto`], how many workers are in use when the server starts: 1 by
    /// default, as an idle server ends up, and a load that needs more brings them into use;
    /// 0 for every one.
    pub workers_at_start: usize,
    /// The scheduling policy of the worker threads (as the server's, `normal`, by default).
    pub worker_sched: WorkerSched,
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
    /// Faults every new session may get, each with its own chance ([`faults`](super::faults)); none by
    /// default. The running server's set changes live through [`Running::faults`](super::Running::faults).
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
    /// How long a TLS connection's handshake may take, from its PROXY header or its
    /// adoption by a worker, before it is closed (10 s).
    pub tls_handshake_timeout: Duration,
    /// The most new TLS connections a second, server-wide (`--tls-max-handshake-rate`): a
    /// bucket of a tenth of a second's worth (at least one), refilled continuously. A TLS
    /// connection beyond it is closed by the acceptor before its handshake, unread, and
    /// counted as `tls-rate`; plaintext ones never count. `None`, the default: no cap.
    pub tls_max_handshake_rate: Option<u32>,
    /// With mutual TLS: the client certificate names let in (`--allow-cn`); empty, any.
    pub allow_cn: Vec<String>,
    /// With mutual TLS: the client certificate names turned away (`--deny-cn`); wins over
    /// `allow_cn`.
    pub deny_cn: Vec<String>,
    /// How often the TLS certificate, key and ticket key files are looked at for a change,
    /// which reloads them ([`Server::tls_certificates`](super::Server::tls_certificates));
    /// `None`: never, only when asked (1 s).
    pub tls_watch: Option<Duration>,
    /// UDP echo on this port of the first listener's address (`--udp`, `--udp-port`); 0:
    /// the same port number as that TCP listener; `None`: no UDP.
    pub udp: Option<u16>,
    /// The UDP echo's peer table, rate limit, stamp and offloads (`--udp-*`).
    pub udp_options: crate::server::udp::UdpOptions,
}

impl Config {
    /// Whether a client whose certificate names it `name` may stay (`--allow-cn`,
    /// `--deny-cn`); one without a certificate is judged by `--tls-client-auth` alone.
    pub fn permits_cn(&self, name: &str) -> bool {
        !self.deny_cn.iter().any(|n| n == name)
            && (self.allow_cn.is_empty() || self.allow_cn.iter().any(|n| n == name))
    }
}

/// [`Config::tls_handshake_timeout`]'s default.
pub(crate) const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// [`Config::tls_watch`]'s default.
pub const DEFAULT_TLS_WATCH: Duration = Duration::from_secs(1);

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 0,
            balance: Balancing::Auto,
            workers_at_start: 1,
            worker_sched: WorkerSched::Normal,
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
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            tls_max_handshake_rate: None,
            allow_cn: Vec::new(),
            deny_cn: Vec::new(),
            tls_watch: Some(DEFAULT_TLS_WATCH),
            udp: None,
            udp_options: crate::server::udp::UdpOptions::default(),
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
    /// `InvalidInput` when `outbox_limit` is below [`min_outbox_limit`] of `max_line`, a
    /// limit (or the TLS handshake rate) is zero, `workers` is above [`MAX_WORKERS`], or `idle_timeout` is below
    /// [`IDLE_TIMEOUT_RESOLUTION`]. Checked before anything is allocated, so a value that
    /// would ask for more memory than a machine has is refused, never attempted.
    pub fn validate(&self) -> io::Result<()> {
        let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if self.backlog == 0 || self.max_line == 0 || self.max_conns == Some(0) {
            return invalid("--backlog, --max-line and --max-conns must be at least 1".into());
        }
        if self.tls_watch.is_some_and(|d| d < IDLE_TIMEOUT_RESOLUTION) {
            return invalid("--tls-watch must be at least 1ms, or 0 for never".into());
        }
        if self.tls_max_handshake_rate == Some(0) {
            return invalid(
                "--tls-max-handshake-rate must be at least 1 (leave it out for no cap)".into(),
            );
        }
        if self.workers > MAX_WORKERS {
            return invalid(format!(
                "--workers {} is more than {MAX_WORKERS}, the most worker threads a server runs",
                self.workers
            ));
        }
        if let Some(timeout) = self.idle_timeout
            && timeout < IDLE_TIMEOUT_RESOLUTION
        {
            return invalid(format!(
                "--idle-timeout {} is below {}, the finest the timer counts: \
                 give 0 for never, or at least 1ms",
                crate::units::show_duration(timeout),
                crate::units::show_duration(IDLE_TIMEOUT_RESOLUTION)
            ));
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

    /// The number of worker threads this config asks for (resolving 0 to the CPU count), at
    /// most [`MAX_WORKERS`]: what is sized by it before [`validate`](Self::validate) refuses
    /// a larger `workers` stays bounded.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .min(MAX_WORKERS)
    }
}
