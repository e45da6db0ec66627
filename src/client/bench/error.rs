//! [`ErrorKind`]: why a bench connection failed, as counted in the report.

use std::fmt;
use std::io;

use serde::Serialize;
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
            _ => ErrorKind::Io,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
