//! [`Running`]: a started server, and waiting for it to end.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam::channel;

use super::arrival::acceptor::{Acceptors, Conn};
use super::faults::Faults;
use super::operator::summary::Summary;
use super::session::registry::Registry;
use super::shutdown::Shutdown;
use crate::time::later;
use crate::units::Millis;

/// The server's log target, as `run`'s: the lines about stopping read as they always did.
const LOG: &str = "tcpool::server";

/// A started server: it serves until its shutdown is triggered; [`Running::wait`] then
/// returns the [`Summary`].
pub struct Running {
    pub(super) addrs: Vec<SocketAddr>,
    /// Where the UDP echo listens (`--udp`).
    pub(super) udp_addr: Option<SocketAddr>,
    pub(super) udp_counts: Arc<crate::server::udp::UdpCounts>,
    pub(super) acceptors: Acceptors,
    pub(super) faults: Faults,
    pub(super) registry: Registry,
    pub(super) shutdown: Shutdown,
    pub(super) shutdown_timeout: Duration,
    pub(super) pool: crate::pool::Pool<Conn>,
    pub(super) acceptor_threads: Vec<thread::JoinHandle<()>>,
    /// Disconnects when every acceptor thread has returned (nobody ever sends on it).
    pub(super) acceptor_stopped: channel::Receiver<()>,
    pub(super) closer_thread: thread::JoinHandle<()>,
    /// [`Shared::forced_closes`].
    pub(super) forced_closes: Arc<AtomicUsize>,
    /// The watcher of the TLS files, which returns at the shutdown.
    pub(super) watcher: Option<thread::JoinHandle<()>>,
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

    /// Where the UDP echo listens, with `--udp` ([`Config::udp`]).
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// What the UDP echo counted so far.
    pub fn udp_counts(&self) -> &crate::server::udp::UdpCounts {
        &self.udp_counts
    }

    /// The live set of faults: a fault added here touches the sessions that connect from
    /// now on; one cleared here ends for everyone at once.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// What stops the acceptors alone, while the sessions are still served (a hand-over).
    pub fn acceptors(&self) -> Acceptors {
        self.acceptors.clone()
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
            forced_closes,
            watcher,
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
            log::warn!(target: LOG, "acceptor did not stop before the shutdown deadline");
        }
        let joined = pool.join_timeout(deadline.saturating_duration_since(Instant::now()));
        if let Err(e) = &joined {
            log::warn!(target: LOG, "shutdown deadline passed: {e}; their sessions are dropped");
        }
        if acceptor_done {
            // Its sender went with the acceptor: the closer drains what it has and returns.
            let _ = closer_thread.join();
        }
        if let Some(watcher) = watcher {
            // Told at the trigger; at most a reload under way to finish.
            let _ = watcher.join();
        }
        let forced_closes = forced_closes.load(Ordering::Relaxed);
        if forced_closes > 0 {
            log::warn!(
                target: LOG,
                "shutdown: {forced_closes} session(s) closed before their goodbye was out \
                 (their peers took nothing for 500 ms, or the deadline passed)"
            );
        }
        let stats = registry.stats();
        log::info!(target: LOG, "stopped: took_ms={}", Millis(started.elapsed()));
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
