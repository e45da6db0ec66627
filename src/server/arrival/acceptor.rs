//! The acceptor: one thread that waits on its listener with a mio `Poll` and accepts.
//!
//! For each connection it applies the limits, registers the session and hands it to the pool.
//! Over `--max-conns`, or with `--overflow reject` while the backlog is full, the client is
//! answered `busy` and passed to the closer thread, which closes it the careful way without
//! holding up the accept loop. With `--overflow wait` a full backlog makes the acceptor wait,
//! so new clients queue in the kernel as they did behind the seed's `listen(4)`. A client
//! `--allow` / `--deny` turn away is closed at once, before it is registered, and so is a TLS
//! connection over `--tls-max-handshake-rate` ([`rate`](super::rate)), before its handshake
//! costs a worker any crypto.
//!
//! With `--overflow reject`, `busy` means the backlog stayed full for [`REJECT_GRACE`]: an
//! idle server whose workers have not yet taken the last few connections does not turn a
//! burst away, while a backlog that stays full rejects at once after that grace.
//!
//! Rejected connections are held by the closer only while descriptors are to spare: past its
//! share it closes them at once (the `busy` line is written first either way), so a burst
//! beyond `--max-conns` at the descriptor limit is answered `busy` instead of exhausting the
//! descriptors. `accept()` errors such as running out of them anyway are answered with a
//! back-off that starts at a few milliseconds and doubles up to a second (logged at most once
//! a second), never a spin. The loop ends when it sees the shutdown flag; the shutdown hook
//! wakes it through a `mio::Waker`, never through the listening socket itself, which another
//! process may share (a hand-over, socket activation, `--reuse-port`). Clients still in the
//! kernel's queue then are accepted and told `quit`, as every session is, instead of being
//! reset.
//!
//! A hand-over stops the acceptors first ([`Acceptors::stop`]), while the workers still
//! serve: a connection already accepted is still handed to a worker, and what waits in the
//! kernel's queue is left to the new process, which shares it.

use std::io::{self, Read, Write};
use std::net::{Shutdown as Direction, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::pool::{SubmitError, Submitter};
use crate::server::arrival::rate::HandshakeRate;
use crate::server::config::Overflow;
use crate::server::operator::metrics::Rejection;
use crate::server::protocol::LineEnding;
use crate::server::session::{DRAIN, SessionHandle};
use crate::server::shared::Shared;
use crate::time::Throttle;
use crate::units::Millis;

/// A connection accepted and registered by the acceptor, on its way to a worker.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) handle: Arc<SessionHandle>,
    /// Accepted on a TLS listener: the worker puts TLS in front of it.
    pub(crate) tls: bool,
}

/// The line a client gets when the server is full.
pub const BUSY: &[u8] = b"busy: server full, try again later\n";

/// How long the acceptor waits for room in the backlog before looking at the shutdown flag.
const HANDOFF_SLICE: Duration = Duration::from_millis(50);

/// With `--overflow reject`, how long the backlog must have stayed full before a client is
/// told `busy`.
pub const REJECT_GRACE: Duration = Duration::from_millis(100);

/// Most connections waiting in the kernel's queue that are told `quit` at shutdown.
const DRAIN_AT_SHUTDOWN: usize = 4096;

const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The listener's readiness in the acceptor's poller.
const LISTENER: Token = Token(0);
/// The shutdown's wake-up.
const WAKE: Token = Token(1);

pub(crate) struct Acceptor {
    listener: TcpListener,
    /// Whether its connections speak TLS.
    tls: bool,
    poll: Poll,
    /// Held as long as the poller: closing the waker's descriptor would take a wake-up
    /// not yet collected out of the poller with it.
    _waker: Arc<Waker>,
    shared: Arc<Shared>,
    submitter: Submitter<Conn>,
    closer: Closer,
}

impl Acceptor {
    /// An acceptor for `listener` (made non-blocking) and the waker that stops it: wake it
    /// once the shutdown flag is set.
    pub(crate) fn new(
        listener: TcpListener,
        tls: bool,
        shared: Arc<Shared>,
        submitter: Submitter<Conn>,
        closer: Closer,
    ) -> io::Result<(Acceptor, Arc<Waker>)> {
        listener.set_nonblocking(true)?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        poll.registry().register(
            &mut SourceFd(&listener.as_raw_fd()),
            LISTENER,
            Interest::READABLE,
        )?;
        let acceptor = Acceptor {
            listener,
            tls,
            poll,
            _waker: Arc::clone(&waker),
            shared,
            submitter,
            closer,
        };
        Ok((acceptor, waker))
    }

    pub(crate) fn run(mut self) {
        let shutdown = self.shared.shutdown.clone();
        let mut backoff = BACKOFF_MIN;
        let mut accept_errors = Throttle::new(Duration::from_secs(1));
        let mut busy = Throttle::new(Duration::from_secs(1));
        let mut full_since = None;
        let mut events = Events::with_capacity(4);
        // Readiness is edge-triggered: accept until the queue is empty before waiting again.
        let mut pending = true;
        loop {
            if shutdown.is_triggered() || self.shared.accepting_stopped.load(Ordering::SeqCst) {
                break;
            }
            if !pending {
                match self.poll.poll(&mut events, None) {
                    Ok(()) => pending = events.iter().any(|e| e.token() == LISTENER),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::warn!("acceptor poll failed: error={e}");
                        pending = true;
                        if shutdown.wait_timeout(BACKOFF_MAX) {
                            break;
                        }
                    }
                }
                continue;
            }
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    backoff = BACKOFF_MIN;
                    self.admit(stream, peer, &mut busy, &mut full_since);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => pending = false,
                Err(e) if transient(&e) => {}
                Err(e) => {
                    self.shared.metrics.accept_error();
                    if let Some(suppressed) = accept_errors.ready() {
                        log::warn!(
                            "accept failed: error={e} backoff_ms={} suppressed={suppressed}",
                            Millis(backoff)
                        );
                    }
                    if shutdown.wait_timeout(backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        // Waiting no more: a process that shares the socket sees no trace of this one.
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&self.listener.as_raw_fd()));
        if shutdown.is_handed_over() || self.shared.accepting_stopped.load(Ordering::SeqCst) {
            log::debug!("acceptor stopped; the kernel's queue is left to the new process");
        } else {
            self.drain_queue();
            log::debug!("acceptor stopped");
        }
    }

    /// At shutdown: accepts what is still in the kernel's queue and tells each `quit`.
    fn drain_queue(&self) {
        let mut told = 0;
        while told < DRAIN_AT_SHUTDOWN {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let quit = self.quit_for(&stream);
                    self.closer.close_with(stream, quit);
                    told += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if told > 0 {
            log::debug!("queued clients told quit at shutdown: count={told}");
        }
    }

    /// `quit` for a client accepted but never made a session: in the line ending of what it
    /// sent already (looked at, not taken), else in the handler's ending for a session that
    /// has not spoken (chat's `\n`), as a session would be told.
    fn quit_for(&self, stream: &TcpStream) -> &'static [u8] {
        let mut buf = [0u8; 1024];
        let _ = stream.set_nonblocking(true);
        let ending = match stream.peek(&mut buf) {
            Ok(n) if n > 0 => LineEnding::of_input(&buf[..n]),
            _ => self.shared.handler.silent_ending(),
        };
        ending.quit()
    }

    /// Admits one accepted connection. `full_since` is when the backlog was first found full
    /// and has not taken a connection since (`--overflow reject`).
    fn admit(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        busy: &mut Throttle,
        full_since: &mut Option<Instant>,
    ) {
        let _ = stream.set_nodelay(true);
        // On a dual-stack listener (`--bind ::`) an IPv4 client arrives as `::ffff:a.b.c.d`:
        // it is shown, logged and listed as the IPv4 address it is.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let registry = &self.shared.registry;
        let config = &self.shared.config;
        // Behind a PROXY header the client is known only once a worker has read it.
        if config.proxy.is_none() && !config.access.permits(peer.ip()) {
            deny(&self.shared, stream, peer);
            return;
        }
        if registry.len() >= self.shared.max_conns {
            self.reject(stream, peer, Rejection::MaxConns, busy);
            return;
        }
        if self.tls
            && let Some(rate) = &self.shared.tls_rate
            && !rate.admit()
        {
            shed(&self.shared, rate, stream, peer);
            return;
        }
        let handle = registry.register(peer);
        let id = handle.id();
        let mut conn = Conn {
            stream,
            handle,
            tls: self.tls,
        };
        loop {
            let result = match config.overflow {
                Overflow::Reject => {
                    // The grace runs from when the backlog was first found full.
                    let since = *full_since.get_or_insert_with(Instant::now);
                    let left = REJECT_GRACE.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        self.submitter.try_submit(conn)
                    } else {
                        self.submitter.submit_timeout(conn, left)
                    }
                }
                Overflow::Wait => self.submitter.submit_timeout(conn, HANDOFF_SLICE),
            };
            match result {
                Ok(()) => {
                    *full_since = None;
                    return;
                }
                Err(SubmitError::Full(back)) if config.overflow == Overflow::Wait => {
                    if self.shared.shutdown.is_triggered() {
                        // Accepted but never adopted: not served, but told `quit` all the same.
                        registry.withdraw(id);
                        let quit = self.quit_for(&back.stream);
                        self.closer.close_with(back.stream, quit);
                        return;
                    }
                    conn = back;
                }
                Err(SubmitError::Full(back)) => {
                    registry.withdraw(id);
                    self.reject(back.stream, peer, Rejection::BacklogFull, busy);
                    return;
                }
                Err(SubmitError::Closed(back)) => {
                    registry.withdraw(id);
                    let quit = self.quit_for(&back.stream);
                    self.closer.close_with(back.stream, quit);
                    return;
                }
            }
        }
    }

    fn reject(&self, stream: TcpStream, peer: SocketAddr, why: Rejection, busy: &mut Throttle) {
        self.shared.registry.note_rejected();
        self.shared.metrics.rejected(why);
        let reason = why.as_str();
        if let Some(suppressed) = busy.ready() {
            log::warn!(
                "connection rejected: peer={peer} reason={reason} sessions={} suppressed={suppressed}",
                self.shared.registry.len()
            );
        }
        self.closer.close_with(stream, BUSY);
    }
}

/// Closes a TLS connection over `--tls-max-handshake-rate` at once, unread: no handshake, no
/// reply (a plaintext `busy` would mean nothing to a TLS client). Its peer sees the close (or
/// a reset, if its ClientHello had already arrived). Counted, and logged at most once a
/// second across the acceptors.
fn shed(shared: &Shared, rate: &HandshakeRate, stream: TcpStream, peer: SocketAddr) {
    shared.metrics.rejected(Rejection::TlsRate);
    drop(stream);
    if let Some(suppressed) = rate.log_ready() {
        log::warn!(
            "connection rejected: peer={peer} reason={} rate={}/s sessions={} suppressed={suppressed}",
            Rejection::TlsRate.as_str(),
            rate.per_sec(),
            shared.registry.len()
        );
    }
}

/// Closes a client `--allow` / `--deny` turn away: at once, without a reply, counted and
/// logged at debug (a scan must not flood the log).
fn deny(shared: &Shared, stream: TcpStream, peer: SocketAddr) {
    note_denied(shared, peer);
    drop(stream);
}

/// Counts and logs a client `--allow` / `--deny` turned away.
pub(crate) fn note_denied(shared: &Shared, peer: SocketAddr) {
    shared.metrics.rejected(Rejection::Denied);
    log::debug!("connection denied: peer={peer}");
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

/// Most connections the closer keeps draining at once; beyond that (or beyond the descriptors
/// it was given) they are closed at once.
pub(crate) const CLOSER_CAPACITY: usize = 4096;

/// Closes connections that never became sessions (`busy`, or too late at shutdown) the
/// careful way — goodbye written, write side shut, input drained for [`DRAIN`] — on a thread
/// of its own so the acceptor never waits for a peer.
#[derive(Debug, Clone)]
pub(crate) struct Closer {
    tx: Sender<(TcpStream, Instant)>,
    /// Connections queued or draining: each holds a descriptor.
    held: Arc<AtomicUsize>,
    /// Most connections held at once: the descriptors to spare.
    capacity: usize,
}

impl Closer {
    /// Starts the closer thread, which holds at most `capacity` connections at once.
    pub(crate) fn spawn(capacity: usize) -> io::Result<(Closer, JoinHandle<()>)> {
        let capacity = capacity.clamp(1, CLOSER_CAPACITY);
        let (tx, rx) = channel::bounded(capacity);
        let held = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&held);
        let thread = thread::Builder::new()
            .name("tcpool-closer".into())
            .spawn(move || drain_loop(&rx, &counted))?;
        Ok((Closer { tx, held, capacity }, thread))
    }

    /// Writes `goodbye`, shuts the write side and leaves the draining to the closer thread.
    pub(crate) fn close_with(&self, stream: TcpStream, goodbye: &[u8]) {
        // A fresh socket's send buffer is empty: this short write does not block.
        let _ = stream.set_nonblocking(true);
        let _ = (&stream).write(goodbye);
        let _ = stream.shutdown(Direction::Write);
        // Out of room or descriptors: close at once rather than make the acceptor wait.
        if self.held.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        if self.tx.try_send((stream, Instant::now() + DRAIN)).is_err() {
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn drain_loop(rx: &Receiver<(TcpStream, Instant)>, held: &AtomicUsize) {
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
        let before = draining.len();
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
        held.fetch_sub(before - draining.len(), Ordering::Relaxed);
    }
}

/// Stops every acceptor of a server, and nothing else: the workers go on serving.
#[derive(Clone)]
pub struct Acceptors {
    pub(crate) shared: Arc<Shared>,
    pub(crate) wakers: Vec<Arc<Waker>>,
    /// Disconnects when every acceptor thread has returned.
    pub(crate) stopped: Receiver<()>,
}

impl std::fmt::Debug for Acceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptors")
            .field("count", &self.wakers.len())
            .finish()
    }
}

impl Acceptors {
    /// Stops accepting: each acceptor hands the connection it holds to a worker and returns,
    /// leaving the kernel's queue to whoever else listens on the socket. Returns whether
    /// every acceptor stopped within `timeout`.
    pub fn stop(&self, timeout: Duration) -> bool {
        self.shared.accepting_stopped.store(true, Ordering::SeqCst);
        for waker in &self.wakers {
            if let Err(e) = waker.wake() {
                log::warn!("cannot wake the acceptor: error={e}");
            }
        }
        self.stopped.recv_timeout(timeout) == Err(RecvTimeoutError::Disconnected)
    }
}
