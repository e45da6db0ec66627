//! [`Summary`]: what a server run served, returned when it stops and printed at exit.

use std::fmt;
use std::time::Duration;

use crate::server::session::Traffic;
use crate::units::human_duration;

/// What a server run served, returned by [`Server::run`](crate::server::Server::run) and printed at exit.
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
            human_duration(self.uptime),
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
