//! The acceptor: one thread in a blocking `accept()` loop.
//!
//! For each connection it applies the limits, registers the session and hands it to the pool.
//! Over `--max-conns`, or with `--overflow reject` while the backlog is full, the client is
//! answered `busy` and passed to the closer thread, which closes it the careful way without
//! holding up the accept loop. With `--overflow wait` a full backlog makes the acceptor wait,
//! so new clients queue in the kernel as they did behind the seed's `listen(4)`.
//!
//! `accept()` errors such as running out of file descriptors are answered with a back-off that
//! starts at a few milliseconds and doubles up to a second (logged at most once a second),
//! never a spin. The loop ends when it sees the shutdown flag; the shutdown hook wakes it by
//! connecting to the listener.

use std::io::{self, Read, Write};
use std::net::{Shutdown as Direction, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender};

use super::worker::{Conn, DRAIN};
use super::{Overflow, Shared};
use crate::pool::{SubmitError, Submitter};

/// The line a client gets when the server is full.
pub const BUSY: &[u8] = b"busy: server full, try again later\n";

/// How long the acceptor waits for room in the backlog before looking at the shutdown flag.
const HANDOFF_SLICE: Duration = Duration::from_millis(50);

const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(crate) struct Acceptor {
    pub(crate) listener: TcpListener,
    pub(crate) shared: Arc<Shared>,
    pub(crate) submitter: Submitter<Conn>,
    pub(crate) closer: Closer,
}

impl Acceptor {
    pub(crate) fn run(self) {
        let shutdown = &self.shared.shutdown;
        let mut backoff = BACKOFF_MIN;
        let mut accept_errors = Throttle::new(Duration::from_secs(1));
        let mut busy = Throttle::new(Duration::from_secs(1));
        loop {
            let accepted = self.listener.accept();
            if shutdown.is_triggered() {
                break;
            }
            match accepted {
                Ok((stream, peer)) => {
                    backoff = BACKOFF_MIN;
                    self.admit(stream, peer, &mut busy);
                }
                Err(e) if transient(&e) => {}
                Err(e) => {
                    if let Some(suppressed) = accept_errors.ready() {
                        log::warn!(
                            "accept failed: error={e} backoff={backoff:?} suppressed={suppressed}"
                        );
                    }
                    if shutdown.wait_timeout(backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        log::debug!("acceptor stopped");
    }

    fn admit(&self, stream: TcpStream, peer: SocketAddr, busy: &mut Throttle) {
        let _ = stream.set_nodelay(true);
        // On a dual-stack listener (`--bind ::`) an IPv4 client arrives as `::ffff:a.b.c.d`:
        // it is shown, logged and listed as the IPv4 address it is.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let registry = &self.shared.registry;
        let config = &self.shared.config;
        if registry.len() >= self.shared.max_conns {
            self.reject(stream, peer, "max-conns", busy);
            return;
        }
        let handle = registry.register(peer);
        let id = handle.id();
        let mut conn = Conn { stream, handle };
        loop {
            let result = match config.overflow {
                Overflow::Reject => self.submitter.try_submit(conn),
                Overflow::Wait => self.submitter.submit_timeout(conn, HANDOFF_SLICE),
            };
            match result {
                Ok(()) => return,
                Err(SubmitError::Full(back)) if config.overflow == Overflow::Wait => {
                    if self.shared.shutdown.is_triggered() {
                        // Accepted but never adopted: still a session, and it is told `quit`.
                        registry.unregister(id);
                        self.closer.close_with(back.stream, b"quit");
                        return;
                    }
                    conn = back;
                }
                Err(SubmitError::Full(back)) => {
                    registry.unregister(id);
                    self.reject(back.stream, peer, "backlog-full", busy);
                    return;
                }
                Err(SubmitError::Closed(back)) => {
                    registry.unregister(id);
                    self.closer.close_with(back.stream, b"quit");
                    return;
                }
            }
        }
    }

    fn reject(&self, stream: TcpStream, peer: SocketAddr, reason: &str, busy: &mut Throttle) {
        self.shared.registry.note_rejected();
        if let Some(suppressed) = busy.ready() {
            log::warn!(
                "connection rejected: peer={peer} reason={reason} sessions={} suppressed={suppressed}",
                self.shared.registry.len()
            );
        }
        self.closer.close_with(stream, BUSY);
    }
}

/// Errors that concern only the connection being accepted, not the listener.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Lets an event through at most once per period and counts the ones it held back.
#[derive(Debug)]
pub(crate) struct Throttle {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub(crate) fn new(period: Duration) -> Self {
        Throttle {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(events held back since the last one let through)` if this one may go.
    pub(crate) fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < self.period) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Most connections the closer keeps draining at once; beyond that they are closed at once.
const CLOSER_CAPACITY: usize = 4096;

/// Closes connections that never became sessions (`busy`, or too late at shutdown) the
/// careful way — goodbye written, write side shut, input drained for [`DRAIN`] — on a thread
/// of its own so the acceptor never waits for a peer.
#[derive(Debug, Clone)]
pub(crate) struct Closer {
    tx: Sender<(TcpStream, Instant)>,
}

impl Closer {
    pub(crate) fn spawn() -> io::Result<(Closer, JoinHandle<()>)> {
        let (tx, rx) = channel::bounded(CLOSER_CAPACITY);
        let thread = thread::Builder::new()
            .name("tcpool-closer".into())
            .spawn(move || drain_loop(&rx))?;
        Ok((Closer { tx }, thread))
    }

    /// Writes `goodbye`, shuts the write side and leaves the draining to the closer thread.
    pub(crate) fn close_with(&self, stream: TcpStream, goodbye: &[u8]) {
        // A fresh socket's send buffer is empty: this short write does not block.
        let _ = stream.set_nonblocking(true);
        let _ = (&stream).write(goodbye);
        let _ = stream.shutdown(Direction::Write);
        // Full: close at once rather than make the acceptor wait.
        let _ = self.tx.try_send((stream, Instant::now() + DRAIN));
    }
}

fn drain_loop(rx: &Receiver<(TcpStream, Instant)>) {
    let mut draining: Vec<(TcpStream, Instant)> = Vec::new();
    let mut buf = [0u8; 4096];
    let tick = Duration::from_millis(10);
    loop {
        let received = if draining.is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(tick)
        };
        match received {
            Ok(item) => draining.push(item),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) if draining.is_empty() => return,
            Err(RecvTimeoutError::Disconnected) => thread::sleep(tick),
        }
        draining.extend(rx.try_iter());
        let now = Instant::now();
        draining.retain(|(stream, until)| {
            if now >= *until {
                return false;
            }
            loop {
                match (&*stream).read(&mut buf) {
                    Ok(0) => return false,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
        });
    }
}
