//! What a run is asked to do ([`Options`], [`Limit`]) and what its threads share while it
//! runs ([`Plan`], [`Live`]).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::server::protocol::LineEnding;

use super::framing::{Delimiter, Greeting, PAYLOAD_VARIANTS, Protocol, Reply, Template, payload};
use super::histogram::SparseHistogram;
use super::proto::Framed;
use super::tls::{BenchTls, Resume, TlsConfigs};
use super::{DEFAULT_CONNECTIONS, DEFAULT_DURATION, DEFAULT_SIZE, DEFAULT_TIMEOUT};

/// The default reply limit (`--max-reply`): a declared length above it is a protocol error.
pub const DEFAULT_MAX_REPLY: u64 = 512 << 20;

/// The most kinds of request in a mix.
pub const MAX_KINDS: usize = 1024;

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
    /// The server's addresses, tried in this order by every connection until one accepts
    /// (default `127.0.0.1:8900`).
    pub addrs: Vec<SocketAddr>,
    /// What to send and how replies end (the verifying echo client by default).
    pub protocol: Protocol,
    /// Sent once on each connection before the load (`--first-message`).
    pub greeting: Option<Greeting>,
    /// Open at most this many connections per second, spaced evenly; `None`: all at once.
    pub connect_rate: Option<f64>,
    /// Start the warm-up at this time, once every connection is open (`--start-at`); `None`:
    /// as soon as they are.
    pub start_at: Option<SystemTime>,
    /// Connections to open (64). With [`Limit::Messages`] below this, only that many are used.
    pub connections: usize,
    /// When the run ends (10 s).
    pub limit: Limit,
    /// Echo: bytes per message, line ending included (64).
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
    /// Echo: how each payload ends (`\n`, which line-based and raw echo servers alike answer).
    pub line_ending: LineEnding,
    /// Threads driving the connections; 0 means one per CPU. Never more than connections.
    pub threads: usize,
    /// Seeds the key spaces and the choice of request in a mix (`--seed`, 0): the same seed
    /// draws the same sequence on each connection.
    pub seed: u64,
    /// [`Reply::Framed`]: the longest reply (and declared length) taken (512 MiB).
    pub max_reply: u64,
    /// [`Reply::Until`]: a reply starting with these bytes is an error reply
    /// (`--error-prefix`).
    pub error_prefix: Option<Vec<u8>>,
    /// Speak TLS on every connection (`--tls`): a handshake after each connect, before the
    /// connection counts as open.
    pub tls: Option<BenchTls>,
    /// Closes each connection after this many replies and opens a new one
    /// (`--reconnect-every`): with TLS, a handshake every N messages; 0: connections carry
    /// no message, a connect and a handshake each (with [`Limit::Duration`] only); `None`:
    /// connections stay open for the whole run.
    pub reconnect_every: Option<u64>,
    /// Sends a PROXY protocol header first on every connection (`--send-proxy`), naming the
    /// connection's own addresses; before TLS when both are asked for.
    pub send_proxy: Option<crate::client::send_proxy::SendProxy>,
    /// Added to each connection's index for `{conn}`, the echo payload and the draws of
    /// `--seed` (0): a fleet's generators each take their own range, so that they send what
    /// one run of all their connections would.
    pub conn_offset: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            addrs: vec![SocketAddr::new(
                Ipv4Addr::LOCALHOST.into(),
                crate::DEFAULT_PORT,
            )],
            protocol: Protocol::Echo,
            greeting: None,
            connect_rate: None,
            start_at: None,
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
            seed: 0,
            max_reply: DEFAULT_MAX_REPLY,
            error_prefix: None,
            tls: None,
            reconnect_every: None,
            send_proxy: None,
            conn_offset: 0,
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
        if self.addrs.is_empty() {
            return invalid("no address to connect to".into());
        }
        if self.connections == 0 {
            return invalid("connections must be at least 1".into());
        }
        if self.pipeline == 0 {
            return invalid("pipeline must be at least 1".into());
        }
        if let Protocol::Request { send, reply } = &self.protocol {
            if send.is_empty() || send.iter().any(|r| r.template.is_empty()) {
                return invalid("the request to send is empty".into());
            }
            if send.len() > MAX_KINDS {
                return invalid(format!("at most {MAX_KINDS} kinds of request in a mix"));
            }
            if send.iter().any(|r| r.weight == 0) {
                return invalid("a request's weight must be at least 1".into());
            }
            if self.error_prefix.as_ref().is_some_and(|p| p.is_empty()) {
                return invalid("the error prefix is empty".into());
            }
            if self.error_prefix.is_some() && !matches!(reply, Reply::Until(_)) {
                return invalid("an error prefix needs replies that end at a delimiter".into());
            }
            match reply {
                Reply::Until(d) if d.is_empty() => {
                    return invalid("the reply delimiter is empty".into());
                }
                Reply::Size(0) => return invalid("the reply size must be at least 1".into()),
                Reply::Exact(t) if t.is_empty() => {
                    return invalid("the expected reply is empty".into());
                }
                _ => {}
            }
        } else if self.size == 0 || self.size < ending {
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
        if let Some(rate) = self.connect_rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return invalid(format!("connect rate {rate} must be a positive number"));
        }
        if self.max_reply == 0 {
            return invalid("the reply limit must be at least 1 byte".into());
        }
        if let Some(g) = &self.greeting
            && (g.message.is_empty()
                || g.until.as_ref().is_some_and(|u| u.is_empty())
                || g.expect.as_ref().is_some_and(|e| e.is_empty()))
        {
            return invalid("the first message and its reply's end must not be empty".into());
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return invalid("timeouts must be more than 0 seconds".into());
        }
        if self.reconnect_every == Some(0) && !matches!(self.limit, Limit::Duration(_)) {
            return invalid(
                "connections that carry no message (a reconnect every 0) need a duration, not \
                 a message count"
                    .into(),
            );
        }
        if let Some(BenchTls {
            resume: Resume::Mix(share),
            ..
        }) = &self.tls
            && !(0.0..=1.0).contains(share)
        {
            return invalid(format!(
                "the share of resumed handshakes {share} is not from 0 to 1"
            ));
        }
        Ok(())
    }
}

/// What connections send and expect, prepared once for the hot path.
pub(super) enum Framing {
    /// The echo payloads, one per variant: each is also its own reply.
    Echo(Vec<Arc<[u8]>>),
    /// A request rendered per message (one of `send`, drawn by weight), and where its reply
    /// ends.
    Request {
        send: Vec<Template>,
        weights: Vec<u32>,
        /// The weights' sum.
        total: u64,
        /// `send[i]` is an HTTP `HEAD`: its response has no body.
        head: Vec<bool>,
        reply: ReplyEnd,
    },
}

/// [`Reply`] ready to match.
pub(super) enum ReplyEnd {
    Exact(Template),
    Until(Delimiter),
    Size(usize),
    Framed(Framed),
}

impl Framing {
    /// The reply framing's protocol, if replies are framed by one.
    pub(super) fn framed(&self) -> Option<&Framed> {
        match self {
            Framing::Request {
                reply: ReplyEnd::Framed(f),
                ..
            } => Some(f),
            _ => None,
        }
    }

    /// Kinds of request: 1 unless a mix.
    pub(super) fn kinds(&self) -> usize {
        match self {
            Framing::Echo(_) => 1,
            Framing::Request { send, .. } => send.len(),
        }
    }
}

impl Framing {
    pub(super) fn new(options: &Options, connections: usize) -> Self {
        match &options.protocol {
            Protocol::Echo => Framing::Echo(
                (0..connections.min(PAYLOAD_VARIANTS))
                    .map(|variant| payload(variant, options.size, options.line_ending))
                    .collect(),
            ),
            Protocol::Request { send, reply } => Framing::Request {
                send: send.iter().map(|r| r.template.clone()).collect(),
                weights: send.iter().map(|r| r.weight).collect(),
                total: send.iter().map(|r| u64::from(r.weight)).sum(),
                head: send
                    .iter()
                    .map(|r| {
                        let mut out = Vec::new();
                        r.template.render(0, 0, &mut out);
                        out.starts_with(b"HEAD ")
                    })
                    .collect(),
                reply: match reply {
                    Reply::Exact(t) => ReplyEnd::Exact(t.clone()),
                    Reply::Until(d) => ReplyEnd::Until(Delimiter::new(d)),
                    Reply::Size(n) => ReplyEnd::Size(*n),
                    Reply::Framed(f) => ReplyEnd::Framed(f.clone()),
                },
            },
        }
    }
}

/// When the load runs, fixed once every connection is open (or has failed).
#[derive(Debug, Clone, Copy)]
pub(super) struct Schedule {
    /// Every connection was open (or had failed): the end of the connect phase, before any
    /// wait for [`Options::start_at`].
    pub(super) connected: Instant,
    /// The warm-up starts: the first messages may go.
    pub(super) go: Instant,
    /// The end of the warm-up: messages intended from here on are measured.
    pub(super) measure_start: Instant,
    /// No message is queued from here on ([`Limit::Duration`]); the end of the measured
    /// window.
    pub(super) end: Option<Instant>,
}

/// What every thread shares for the whole run.
pub(super) struct Plan<'a> {
    pub(super) options: &'a Options,
    pub(super) connections: usize,
    pub(super) threads: usize,
    /// When the run started: connects are spaced from here ([`Options::connect_rate`]).
    pub(super) start: Instant,
    /// [`Options::start_at`] on this process's clock.
    pub(super) start_at: Option<Instant>,
    /// Set once, by the last thread whose connections are all open or failed.
    pub(super) schedule: OnceLock<Schedule>,
    /// Threads whose connections are all open or failed.
    pub(super) ready: AtomicUsize,
    /// Open loop: the time between two intended sends on one connection.
    pub(super) interval: Option<Duration>,
    /// Connect rate: the time between two connects.
    pub(super) connect_interval: Option<Duration>,
    pub(super) framing: Framing,
    /// The greeting's delimiter, ready to match; `None` with a greeting: its reply is framed
    /// by the reply framing.
    pub(super) greeting_end: Option<Delimiter>,
    /// The caller's stop flag, checked every [`TICK`](super::worker::TICK).
    pub(super) stop: &'a AtomicBool,
    /// `--tls`: the client configurations its handshakes choose from.
    pub(super) tls: Option<TlsConfigs>,
    /// Set by [`run`](super::run) when it cannot start every thread: the others return at once.
    pub(super) abort: AtomicBool,
    pub(super) live: Live,
}

impl Plan<'_> {
    /// Called by each thread once its connections are all open or failed; the last one fixes
    /// the [`Schedule`]. The start is a little ahead so that every thread, waking at least
    /// every tick, is waiting for it when it comes.
    pub(super) fn thread_ready(&self, now: Instant, margin: Duration) {
        if self.ready.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1 < self.threads {
            return;
        }
        let mut go = now + margin;
        if let Some(at) = self.start_at {
            go = go.max(at);
        }
        let measure_start = go + self.options.warmup;
        let end = match self.options.limit {
            Limit::Duration(d) => Some(measure_start + d),
            Limit::Messages(_) => None,
        };
        let _ = self.schedule.set(Schedule {
            connected: now,
            go,
            measure_start,
            end,
        });
    }
}

/// Counts the threads publish every [`TICK`](super::worker::TICK) for the progress callback.
#[derive(Default)]
pub(super) struct Live {
    pub(super) completed: AtomicU64,
    pub(super) measured: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) open: AtomicUsize,
    /// Streaming runs ([`run_streaming`](super::run_streaming)): the latencies the threads
    /// recorded since they last looked, by second of the window.
    pub(super) deltas: Option<parking_lot::Mutex<Vec<(u64, SparseHistogram)>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
