//! One worker's loop: a mio poller over every session the worker owns.
//!
//! A worker adopts connections from the pool's hand-off queue, reads each one when it is
//! readable, cuts the input into messages, lets the handler answer, and writes the answer
//! back as one write. It never blocks on a peer: a session whose answer the socket will not
//! take is not read again until the answer is out (back-pressure), so a peer that sends
//! without reading costs at most one read's worth of memory. Messages queued from other
//! threads arrive through the session's outbox, announced in the worker's [`Mailbox`].
//!
//! Ending a session (shutdown, kick, idle timeout, outbox overflow, handler panic) follows the
//! wire contract: flush what was queued, send `quit` as a write of its own in the session's
//! line ending, shut the write side, drain input for up to
//! [`DRAIN`](crate::server::session::DRAIN), close. At shutdown every session starts this at
//! once, bounded by the shutdown deadline.
//!
//! Every file below adds to the one `impl Worker`:
//!
//! | file | what it owns |
//! | --- | --- |
//! | (this file) | the [`Worker`] state, its poll loop, adopting and opening sessions |
//! | `header` | a connection's PROXY header, read before it becomes a session |
//! | `input` | reading a session, its messages through the handler, end of input |
//! | `output` | the worker's own writes, the outbox, chat's back-pressure |
//! | `faults` | carrying out the faults a session drew, and their timers |
//! | `closing` | ending sessions: `quit`, shut, drain, close; shutdown and deadlines |
//! | `moving` | handing sessions to other workers and adopting theirs (`--balance auto`) |
//! | `grouping` | where each session's packets arrive, so a client thread's sessions share a worker |
//!
//! And what the loop uses:
//!
//! | file | what it owns |
//! | --- | --- |
//! | `session` | the worker's own part of a session: socket, splitter, pending writes, phase |
//! | `timers` | the timer queue: the faulted sessions' deadlines, nearest first |
//! | `balance` | which workers are in use, and the sessions on their way between them |
//! | `sched` | the worker threads' scheduling policy (`--worker-sched`) |

pub(crate) mod balance;
mod closing;
mod faults;
mod grouping;
mod handshake;
mod header;
mod input;
mod moving;
mod output;
mod sched;
mod session;
mod timers;

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::tls::Link;

use crate::server::arrival::acceptor::Conn;
use crate::server::protocol::Splitter;
use crate::server::session::outbox::{Entry, Mailbox};
use crate::server::shared::Shared;
use crate::time::Throttle;
use balance::Meter;

use crate::pool::{Inbox, Notify};
use crate::server::session::outbox::Chunk;
use crate::server::session::{CloseReason, SessionId};
use crate::server::worker::session::Session;
use timers::Timers;

/// The target of every log line a worker writes, whichever of its files writes it, so that
/// `RUST_LOG` filters and the JSON `target` field name the worker.
const LOG: &str = module_path!();

/// The worker's shared read buffer; also the most one read hands to the handler.
const READ_BUFFER: usize = 64 * 1024;

/// Reads per session per readiness event, so one busy peer cannot starve the others. (A
/// faulted session's writes are bounded per turn likewise: `TURN_WRITES`, `TURN_BYTES`.)
const READ_BUDGET: usize = 16;

/// How often the loop looks at closing sessions' deadlines while any are closing.
const CLOSING_TICK: Duration = Duration::from_millis(10);

/// How often the loop looks at how long lagging readers have been behind, while any are.
const PRESSED_TICK: Duration = Duration::from_millis(50);

const WAKE: Token = Token(usize::MAX);

/// The worker's UDP socket (`--udp`).
const UDP: Token = Token(usize::MAX - 1);

impl Notify for Mailbox {
    fn notify(&self) {
        self.wake();
    }
}

pub(crate) struct Worker {
    index: usize,
    poll: Poll,
    mailbox: Arc<Mailbox>,
    shared: Arc<Shared>,
    sessions: Slab<Session>,
    buf: Box<[u8]>,
    reply: Vec<u8>,
    /// Sessions posted to the mailbox, taken in one swap.
    posted: Vec<(usize, SessionId)>,
    /// Sessions whose read loop stopped with input left because the budget ran out.
    again: Vec<usize>,
    /// TLS handshakes with input waiting, past this turn's [`handshake::BUDGET`]: taken
    /// on in the next turns, after the events of the sessions already open.
    shake_later: VecDeque<usize>,
    /// Handshake steps taken this turn.
    shaken: usize,
    /// Faulted sessions whose faults spent their turn's budget with more due at once.
    stepping: Vec<usize>,
    /// The turns of the loop so far: a faulted session's budget is per turn.
    turn: u64,
    /// Entries taken from an outbox, on their way into a session's pending writes.
    entries: Vec<Entry>,
    /// Sessions whose outbox is above its soft mark, for the grace deadline.
    pressed: Vec<usize>,
    /// Sessions in [`Phase::Flushing`] or [`Phase::Draining`], for their deadlines.
    closing: Vec<usize>,
    /// Set when the worker saw the shutdown: the moment every session must be gone by.
    stopping: Option<Instant>,
    next_idle_scan: Option<Instant>,
    /// When the last poll returned: the time its reads are stamped with, read once per pass
    /// rather than once per read.
    now: Instant,
    /// The deadlines of faulted sessions.
    timers: Timers,
    /// Connections awaiting their PROXY header: slot, id, deadline, in the order adopted (so
    /// nearest deadline first: every one gets the same `--proxy-timeout`).
    headers: VecDeque<(usize, SessionId, Instant)>,
    /// TLS connections whose handshake goes on: slot, id, deadline, nearest first (every
    /// one gets the same `--tls-handshake-timeout`).
    handshakes: VecDeque<(usize, SessionId, Instant)>,
    /// Bad or missing PROXY headers are logged at most once a second (a scan must not flood
    /// the log); the metric counts every one.
    header_warnings: Throttle,
    /// Failed TLS handshakes likewise.
    tls_warnings: Throttle,
    /// The faults' generation last looked at: when it changes, a fault was cleared.
    fault_generation: u64,
    /// This worker's own load, for the balance; started on the worker's thread.
    meter: Option<Meter>,
    /// Sessions handed over by other workers, taken in one swap.
    arrived: Vec<Session>,
    /// When a worker not in use next looks for sessions to hand on.
    next_evacuation: Instant,
    /// When a worker in use next looks at where its sessions' packets arrive.
    next_grouping: Instant,
    /// How many of the next looks at the grouping come soon, after new connections or a
    /// change of the workers in use.
    quick_looks: u8,
    /// The workers in use at its last pass of the grouping.
    grouped_for: usize,
    /// Its last window said it is not spare: sessions wait for it now and then.
    loaded: bool,
    /// Its UDP socket (`--udp`), and whether a full batch left datagrams to read this turn.
    udp: Option<crate::server::udp::Echo>,
    udp_again: bool,
}

impl Worker {
    pub(crate) fn new(index: usize, shared: Arc<Shared>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        let next_idle_scan = shared
            .config
            .idle_timeout
            .map(|t| Instant::now() + idle_scan_interval(t));
        let mut udp = shared
            .udp
            .get(index)
            .and_then(|slot| slot.lock().take())
            .map(|socket| {
                crate::server::udp::Echo::new(
                    socket,
                    &shared.config.udp_options,
                    shared.udp.len(),
                    &shared.udp_counts,
                    shared.faults.clone(),
                )
            })
            .map(|echo| match &shared.udp_desk {
                Some(desk) => echo.with_desk(Arc::clone(desk), index),
                None => echo,
            });
        if let Some(echo) = udp.as_mut() {
            poll.registry()
                .register(echo.socket(), UDP, mio::Interest::READABLE)?;
        }
        let mailbox = Arc::new(Mailbox::new(waker));
        shared.faults.watch(Arc::clone(&mailbox));
        shared.balance.dock(index, Arc::clone(&mailbox));
        Ok(Worker {
            index,
            poll,
            mailbox,
            fault_generation: shared.faults.generation(),
            timers: Timers::default(),
            headers: VecDeque::new(),
            handshakes: VecDeque::new(),
            header_warnings: Throttle::new(Duration::from_secs(1)),
            tls_warnings: Throttle::new(Duration::from_secs(1)),
            shared,
            sessions: Slab::new(),
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            reply: Vec::new(),
            posted: Vec::new(),
            again: Vec::new(),
            shake_later: VecDeque::new(),
            shaken: 0,
            stepping: Vec::new(),
            turn: 0,
            entries: Vec::new(),
            pressed: Vec::new(),
            closing: Vec::new(),
            stopping: None,
            next_idle_scan,
            now: Instant::now(),
            meter: None,
            arrived: Vec::new(),
            next_evacuation: Instant::now(),
            next_grouping: Instant::now() + grouping::GROUP_EVERY,
            quick_looks: 0,
            grouped_for: 0,
            loaded: false,
            udp,
            udp_again: false,
        })
    }

    fn run_loop(&mut self, inbox: &Inbox<Conn>) {
        let mut events = Events::with_capacity(1024);
        let mut inbox_open = true;
        loop {
            if let Err(e) = self.poll.poll(&mut events, self.poll_timeout()) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("worker {} cannot poll: error={e}", self.index);
                break;
            }
            self.now = Instant::now();
            self.turn += 1;
            self.shaken = 0;
            let stepping = !self.stepping.is_empty();
            for event in events.iter() {
                if event.token() == WAKE {
                    continue;
                }
                if event.token() == UDP {
                    self.serve_udp();
                    continue;
                }
                let t = event.token().0;
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    self.on_writable(t);
                }
                if (event.is_read_closed() || event.is_error())
                    && let Some(session) = self.sessions.get_mut(t)
                {
                    session.read_closed = true;
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(t);
                    // A TLS read also sends what rustls holds for the socket (an answer to
                    // a key update, the rest of a reply): that may take the room, and so
                    // the writable edge, that pending chunks wait for. Try them now.
                    if self
                        .sessions
                        .get(t)
                        .is_some_and(|s| s.link.is_tls() && !s.pending.is_empty())
                    {
                        self.on_writable(t);
                    }
                }
            }
            while inbox_open {
                match inbox.try_take() {
                    Ok(Some(conn)) => self.adopt(conn),
                    Ok(None) => break,
                    Err(_closed) => inbox_open = false,
                }
            }
            let udp_due = self.udp.as_ref().and_then(|echo| echo.next_due());
            if self.udp_again || udp_due.is_some_and(|at| at <= Instant::now()) {
                self.serve_udp();
            }
            self.deliver_posted();
            self.balance_pass();
            self.fire_timers();
            if stepping {
                self.step_again();
            }
            self.shake_deferred();
            for t in std::mem::take(&mut self.again) {
                if self.sessions.contains(t) {
                    self.on_readable(t);
                }
            }
            if self.stopping.is_none() && self.shared.shutdown.is_triggered() {
                self.begin_shutdown();
                self.stop_udp();
            }
            self.check_deadlines();
            if !inbox_open && self.sessions.is_empty() && self.may_stop() {
                break;
            }
        }
        // Only reached early if polling itself failed: let every session go.
        for t in self.sessions.iter().map(|(t, _)| t).collect::<Vec<_>>() {
            self.remove(t);
        }
    }

    /// Reads and answers a batch of datagrams; a full batch comes back later this turn.
    fn serve_udp(&mut self) {
        let Some(echo) = self.udp.as_mut() else {
            return;
        };
        let access = &self.shared.config.access;
        self.udp_again = echo.serve(&self.shared.udp_counts, |peer| access.permits(peer.ip()));
    }

    /// At a shutdown: what has arrived is answered, and this worker's handle on its UDP
    /// socket closed. After a hand-over the new process serves the same socket on; otherwise
    /// the socket closes with the last handle, and a late datagram is refused by the kernel
    /// rather than queued for nobody.
    fn stop_udp(&mut self) {
        self.serve_udp();
        if let Some(mut echo) = self.udp.take() {
            let _ = self.poll.registry().deregister(echo.socket());
        }
        self.udp_again = false;
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.again.is_empty()
            || !self.stepping.is_empty()
            || !self.shake_later.is_empty()
            || self.udp_again
        {
            return Some(Duration::ZERO);
        }
        let mut timeout = None;
        if !self.closing.is_empty() || self.stopping.is_some() {
            timeout = Some(CLOSING_TICK);
        } else if !self.pressed.is_empty() {
            timeout = Some(PRESSED_TICK);
        }
        let header_due = self.headers.front().map(|&(_, _, at)| at);
        let handshake_due = self.handshakes.front().map(|&(_, _, at)| at);
        for at in [
            self.next_idle_scan,
            self.timers.next(),
            header_due,
            handshake_due,
            self.udp.as_ref().and_then(|echo| echo.next_due()),
        ]
        .into_iter()
        .flatten()
        {
            let until = at.saturating_duration_since(Instant::now());
            timeout = Some(timeout.map_or(until, |t: Duration| t.min(until)));
        }
        timeout
    }

    fn adopt(&mut self, conn: Conn) {
        let Conn {
            stream,
            handle,
            tls,
        } = conn;
        let id = handle.id();
        if let Err(e) = stream.set_nonblocking(true) {
            log::warn!("session {id} dropped: peer={} error={e}", handle.peer());
            self.shared.registry.unregister(id);
            return;
        }
        let mut stream = TcpStream::from_std(stream);
        let entry = self.sessions.vacant_entry();
        let t = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(t),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("session {id} dropped: peer={} error={e}", handle.peer());
            self.shared.registry.unregister(id);
            return;
        }
        let link = match tls.then_some(self.shared.tls.as_ref()).flatten() {
            Some(config) => match rustls::ServerConnection::new(Arc::clone(config)) {
                Ok(conn) => Link::tls(stream, conn),
                Err(e) => {
                    log::warn!("session {id} dropped: peer={} error={e}", handle.peer());
                    let _ = self.poll.registry().deregister(&mut stream);
                    self.shared.registry.unregister(id);
                    return;
                }
            },
            None => Link::plain(stream),
        };
        handle.adopt(Arc::clone(&self.mailbox), t);
        let splitter = if self.shared.handler.holds_partial_lines() {
            Splitter::holding(self.shared.config.max_line)
        } else {
            Splitter::passing()
        };
        let mut session = Session::new(handle, link, splitter);
        if self.shared.config.proxy.is_some() {
            let deadline = Instant::now() + self.shared.config.proxy_timeout;
            session.header_deadline = Some(deadline);
            entry.insert(session);
            self.headers.push_back((t, id, deadline));
            self.grouping_arrival(t);
            return self.read_header(t);
        }
        entry.insert(session);
        self.grouping_arrival(t);
        self.arrived_whole(t, false);
        self.place_arrival(t, id);
    }

    /// Begins session `t`'s normal life: its faults, the handler's greeting, its outbox.
    fn open(&mut self, t: usize) {
        let session = &mut self.sessions[t];
        let id = session.handle.id();
        log::debug!(
            "session {id} opened: peer={} worker={}",
            session.handle.peer(),
            self.index
        );
        if self.stopping.is_none()
            && let Some(pacing) =
                self.shared
                    .faults
                    .draw(id, session.handle.connected_at(), session.link.is_tls())
        {
            log::debug!("session {id} faulted: faults={}", pacing.describe());
            session.fault = Some(Box::new(pacing));
        }
        self.shared.metrics.worker(self.index).opened();
        self.call_handler(t, |handler, ctx| handler.on_open(ctx));
        // Writing the greeting may have found the peer gone (reset already): the session
        // is then removed, and its slot empty.
        if self.sessions.get(t).is_none_or(|s| s.handle.id() != id) {
            return;
        }
        if self.stopping.is_some() {
            self.begin_close(t, CloseReason::Shutdown);
        } else {
            self.service_outbox(t);
            self.fault_step(t);
        }
    }
}

impl crate::pool::Worker<Conn> for Worker {
    fn notifier(&self) -> Arc<dyn Notify> {
        Arc::clone(&self.mailbox) as Arc<dyn Notify>
    }

    fn run(mut self, inbox: Inbox<Conn>) {
        self.schedule();
        self.run_loop(&inbox);
        log::debug!("worker {} stopped", self.index);
    }
}

impl Worker {
    /// Puts this worker's thread under `--worker-sched`; what stands in the way is logged,
    /// once for all the workers (by worker 0), and the worker serves all the same.
    fn schedule(&self) {
        let first = self.index == 0;
        match sched::apply(self.shared.config.worker_sched) {
            Ok(sched::Applied::Kept(policy)) if first => log::info!(
                "the workers keep the scheduling policy they started under: policy={}",
                sched::policy_name(policy)
            ),
            Err(e) if first => log::warn!(
                "cannot put the workers under SCHED_BATCH, they keep the default policy: \
                 error={e}"
            ),
            _ => {}
        }
    }
}

fn chunk_len(chunk: &Chunk) -> usize {
    chunk.bytes().len()
}

fn idle_scan_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Writes as much of `bytes` as the socket takes now.
fn write_some(stream: &mut Link, bytes: &[u8]) -> io::Result<usize> {
    use std::io::Write;
    let mut done = 0;
    while done < bytes.len() {
        match stream.write(&bytes[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-text panic)".to_owned()
    }
}
