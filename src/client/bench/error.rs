//! Why a bench connection failed: the [`ErrorKind`] counted in the report, and the
//! [`FirstError`] of each kind, shown so that a failure can be understood without a trace.

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

use crate::server::protocol::escape;
/// Why a connection failed. Serialised (and displayed) in snake_case: `mismatch`,
/// `connect_refused`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// A reply byte differed from the one expected, or the server sent bytes nobody asked
    /// for.
    Mismatch,
    /// The server turned the connection away with a `busy` line (tcpool's answer when it is
    /// full).
    Busy,
    /// The server closed the connection (end of stream) while it was in use.
    Closed,
    /// The connection was reset or aborted, or a write found it broken.
    Reset,
    /// The oldest reply in flight took longer than [`Options::timeout`](super::Options::timeout).
    Timeout,
    /// The connect was refused: nothing listens there.
    ConnectRefused,
    /// The connect took longer than [`Options::connect_timeout`](super::Options::connect_timeout).
    ConnectTimeout,
    /// The connect failed otherwise (unreachable, out of descriptors, ...).
    ConnectFailed,
    /// Any other I/O error on an open connection.
    Io,
    /// An error reply (`--reply`, or `--error-prefix` with `--until`): the server answered,
    /// with an error. Counted per reply; the connection goes on.
    Reply,
    /// Bytes the reply framing cannot read (`--reply`): a malformed reply, or a declared
    /// length over `--max-reply`. Ends the connection.
    Protocol,
    /// The reply to the first message was an error or not the one expected
    /// (`--first-expect`). Ends the connection.
    FirstReply,
    /// TLS failed (`--tls`): the certificate did not verify, no version or suite in common,
    /// an alert from the server (one refusing a missing client certificate, say). Ends the
    /// connection.
    Tls,
    /// The server closed a TLS connection without `close_notify` (`--tls`): what it sent may
    /// have been cut short, by it or by someone in the way. Ends the connection.
    Truncated,
}

impl ErrorKind {
    /// The kind's snake_case name, as in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Mismatch => "mismatch",
            ErrorKind::Busy => "busy",
            ErrorKind::Closed => "closed",
            ErrorKind::Reset => "reset",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::Io => "io",
            ErrorKind::Reply => "reply",
            ErrorKind::Protocol => "protocol",
            ErrorKind::FirstReply => "first_reply",
            ErrorKind::Tls => "tls",
            ErrorKind::Truncated => "truncated",
        }
    }

    /// What a connection that failed this way did, for a sentence: `was closed by the server`.
    pub(super) fn what(self) -> &'static str {
        match self {
            ErrorKind::Mismatch => "got a wrong reply",
            ErrorKind::Busy => "was turned away busy",
            ErrorKind::Closed => "was closed by the server",
            ErrorKind::Reset => "was reset",
            ErrorKind::Timeout => "timed out",
            ErrorKind::ConnectRefused | ErrorKind::ConnectTimeout | ErrorKind::ConnectFailed => {
                "could not connect"
            }
            ErrorKind::Io => "failed",
            ErrorKind::Reply => "got an error reply",
            ErrorKind::Protocol => "got a reply that cannot be read",
            ErrorKind::FirstReply => "got a wrong reply to its first message",
            ErrorKind::Tls => "failed its TLS handshake",
            ErrorKind::Truncated => "was closed without TLS close_notify",
        }
    }

    pub(super) fn of_connect(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
            io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
            _ => ErrorKind::ConnectFailed,
        }
    }

    pub(super) fn of_transfer(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => ErrorKind::Reset,
            io::ErrorKind::UnexpectedEof => ErrorKind::Closed,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            // A TLS alert or a record that does not decrypt (`--tls`): with TLS 1.3 a
            // server that refuses the client's certificate says so after the handshake.
            io::ErrorKind::InvalidData
                if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) =>
            {
                ErrorKind::Tls
            }
            _ => ErrorKind::Io,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The first error of one kind in a run: where it happened and what was seen. Fields that do
/// not apply to the kind are `null` in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FirstError {
    /// The connection's index, from 0.
    pub connection: usize,
    /// How many reply bytes the connection had read before the error.
    pub offset: u64,
    /// The bytes expected there, escaped and cut to a line.
    pub expected: Option<String>,
    /// The bytes received there, escaped and cut to a line.
    pub received: Option<String>,
    /// What the system or the run said (`Connection refused`, `no reply within 5s`).
    pub message: Option<String>,
}

/// Error counts by kind as people read them: `mismatch 3, timeout 1`.
pub(super) fn counts(by_kind: &std::collections::BTreeMap<ErrorKind, u64>) -> String {
    let kinds: Vec<String> = by_kind
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    kinds.join(", ")
}

/// Text from a report file or a server made safe for a terminal: control characters and
/// escape sequences shown as escapes, as the server shows peer text. Text that is escaped
/// already stays as it is.
pub(super) fn clean(text: &str) -> String {
    escape(text.as_bytes())
}

impl fmt::Display for FirstError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connection {} at reply byte {}",
            self.connection, self.offset
        )?;
        if let Some(expected) = &self.expected {
            write!(f, ": expected \"{}\"", clean(expected))?;
        }
        if let Some(received) = &self.received {
            let sep = if self.expected.is_some() { "," } else { ":" };
            write!(f, "{sep} received \"{}\"", clean(received))?;
        }
        if let Some(message) = &self.message {
            write!(f, " ({})", clean(message))?;
        }
        Ok(())
    }
}

/// An error on one connection, before the worker stamps it with the connection's index.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) kind: ErrorKind,
    pub(super) detail: FirstError,
}

impl Failure {
    /// A failure with only a message.
    pub(super) fn new(kind: ErrorKind, offset: u64, message: impl Into<String>) -> Self {
        Failure {
            kind,
            detail: FirstError {
                offset,
                message: Some(message.into()),
                ..FirstError::default()
            },
        }
    }

    /// A failure seen in the bytes: what was expected (if anything) and what came.
    pub(super) fn seen(
        kind: ErrorKind,
        offset: u64,
        expected: Option<String>,
        received: String,
    ) -> Self {
        Failure {
            kind,
            detail: FirstError {
                offset,
                expected,
                received: Some(received),
                ..FirstError::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn error_kinds_serialise_in_snake_case() {
        let mut kinds = BTreeMap::new();
        kinds.insert(ErrorKind::ConnectRefused, 2u64);
        kinds.insert(ErrorKind::Mismatch, 1);
        let json = serde_json::to_string(&kinds).unwrap();
        assert_eq!(json, r#"{"mismatch":1,"connect_refused":2}"#);
        assert_eq!(ErrorKind::ConnectTimeout.to_string(), "connect_timeout");
    }
}
