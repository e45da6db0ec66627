//! The small words every part of the server uses about a session: its number, why it
//! closed, what it carried, and how long its goodbye may take.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a closing session's input is drained after its write side is shut, so that
/// closing with unread input does not reset the connection and wipe out the goodbye.
pub(crate) const DRAIN: Duration = Duration::from_millis(250);

/// A session's number: assigned in order of arrival, never reused within one server run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for SessionId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim_start_matches('#').parse().map(SessionId)
    }
}

/// Why the server ended a session; shown in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent `quit`.
    Quit,
    /// The peer closed its side.
    PeerClosed,
    /// The connection failed (reset, broken pipe...).
    Error,
    /// The operator sent `/kick` or `@ID quit`.
    Kicked,
    /// No input for `--idle-timeout`.
    Idle,
    /// More than `--outbox-limit` bytes were queued for a peer that does not read.
    Overflow,
    /// The handler panicked on this session's input.
    HandlerPanic,
    /// The server is shutting down.
    Shutdown,
    /// A `reset` or `close` fault ended it (no `quit`).
    Fault,
}

impl CloseReason {
    /// Whether the server says goodbye with `quit` (it does whenever it ends the session).
    pub fn says_quit(self) -> bool {
        !matches!(
            self,
            CloseReason::Quit | CloseReason::PeerClosed | CloseReason::Error | CloseReason::Fault
        )
    }

    /// The word used in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Quit => "quit",
            CloseReason::PeerClosed => "peer-closed",
            CloseReason::Error => "error",
            CloseReason::Kicked => "kicked",
            CloseReason::Idle => "idle-timeout",
            CloseReason::Overflow => "outbox-overflow",
            CloseReason::HandlerPanic => "handler-panic",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Fault => "fault",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message could not be queued for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No session has that id (it never existed or has ended).
    NoSuchSession,
    /// The session is being closed and takes no new messages.
    Closing,
    /// The message would take the session's outbox past `--outbox-limit`; the session is
    /// being dropped.
    Overflow,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::NoSuchSession => "no such session",
            SendError::Closing => "session is closing",
            SendError::Overflow => "outbox full: session dropped",
        })
    }
}

impl std::error::Error for SendError {}

/// Byte and message counts, updated by the owning worker, read by anyone.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes read from the peer.
    pub bytes_in: AtomicU64,
    /// Bytes written to the peer.
    pub bytes_out: AtomicU64,
    /// Messages received (seed-style reads and complete lines).
    pub messages_in: AtomicU64,
    /// Messages sent (echoed messages, replies, relayed lines, notices).
    pub messages_out: AtomicU64,
}

/// A plain copy of [`Counters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes read from peers.
    pub bytes_in: u64,
    /// Bytes written to peers.
    pub bytes_out: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Messages sent.
    pub messages_out: u64,
}

impl Counters {
    /// The counts now.
    pub fn load(&self) -> Traffic {
        Traffic {
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
        }
    }

    /// Adds `t` to these counts.
    pub fn add(&self, t: Traffic) {
        self.bytes_in.fetch_add(t.bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(t.bytes_out, Ordering::Relaxed);
        self.messages_in.fetch_add(t.messages_in, Ordering::Relaxed);
        self.messages_out
            .fetch_add(t.messages_out, Ordering::Relaxed);
    }
}

impl std::ops::Add for Traffic {
    type Output = Traffic;

    fn add(self, o: Traffic) -> Traffic {
        Traffic {
            bytes_in: self.bytes_in + o.bytes_in,
            bytes_out: self.bytes_out + o.bytes_out,
            messages_in: self.messages_in + o.messages_in,
            messages_out: self.messages_out + o.messages_out,
        }
    }
}
