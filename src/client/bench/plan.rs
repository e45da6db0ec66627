//! What a run is asked to do ([`Options`], [`Limit`]) and what its threads share while it
//! runs ([`Plan`], [`Live`]).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::thread;
use std::time::{Duration, Instant};

use crate::server::LineEnding;

use super::{DEFAULT_CONNECTIONS, DEFAULT_DURATION, DEFAULT_SIZE, DEFAULT_TIMEOUT};
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

/// What every thread shares for the whole run.
pub(super) struct Plan<'a> {
    pub(super) options: &'a Options,
    pub(super) connections: usize,
    /// The end of the warm-up: messages intended from here on are measured.
    pub(super) measure_start: Instant,
    /// No message is queued from here on ([`Limit::Duration`]).
    pub(super) end: Option<Instant>,
    /// Open loop: the time between two intended sends on one connection.
    pub(super) interval: Option<Duration>,
    pub(super) payloads: Vec<Arc<[u8]>>,
    /// The caller's stop flag, checked every [`TICK`](super::worker::TICK).
    pub(super) stop: &'a AtomicBool,
    /// Set by [`run`](super::run) when it cannot start every thread: the others return at once.
    pub(super) abort: AtomicBool,
    pub(super) live: Live,
}

/// Counts the threads publish every [`TICK`](super::worker::TICK) for the progress callback.
#[derive(Default)]
pub(super) struct Live {
    pub(super) completed: AtomicU64,
    pub(super) measured: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) open: AtomicUsize,
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
