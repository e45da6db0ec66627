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
//! line ending, shut the write side, drain input for up to [`DRAIN`], close. At shutdown
//! every session starts this at once, bounded by the shutdown deadline.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::Shared;
use super::acceptor::note_denied;
use super::faults::End;
use super::metrics::Rejection;
use super::modes::Context;
use super::outbox::{Entry, Mailbox};
use super::protocol::{Flow, LineEnding, Message, Splitter, escape};
use super::proxy::{self, Step};
use super::session::{Chunk, CloseReason, Phase, Session, SessionHandle, SessionId, Speech};
use super::timers::Timers;
use crate::pool::{Inbox, Notify};

/// How long a closing session's input is drained after its write side is shut.
pub(crate) const DRAIN: Duration = Duration::from_millis(250);

/// The worker's shared read buffer; also the most one read hands to the handler.
const READ_BUFFER: usize = 64 * 1024;

/// Reads per session per readiness event, so one busy peer cannot starve the others.
const READ_BUDGET: usize = 16;

/// How often the loop looks at closing sessions' deadlines while any are closing.
const CLOSING_TICK: Duration = Duration::from_millis(10);

/// How often the loop looks at how long lagging readers have been behind, while any are.
const PRESSED_TICK: Duration = Duration::from_millis(50);

const WAKE: Token = Token(usize::MAX);

/// A connection accepted and registered by the acceptor, on its way to a worker.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: std::net::TcpStream,
    pub(crate) handle: Arc<SessionHandle>,
}

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
    /// The faults' generation last looked at: when it changes, a fault was cleared.
    fault_generation: u64,
}

impl Worker {
    pub(crate) fn new(index: usize, shared: Arc<Shared>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        let next_idle_scan = shared
            .config
            .idle_timeout
            .map(|t| Instant::now() + idle_scan_interval(t));
        let mailbox = Arc::new(Mailbox::new(waker));
        shared.faults.watch(Arc::clone(&mailbox));
        Ok(Worker {
            index,
            poll,
            mailbox,
            fault_generation: shared.faults.generation(),
            timers: Timers::default(),
            headers: VecDeque::new(),
            shared,
            sessions: Slab::new(),
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            reply: Vec::new(),
            posted: Vec::new(),
            again: Vec::new(),
            entries: Vec::new(),
            pressed: Vec::new(),
            closing: Vec::new(),
            stopping: None,
            next_idle_scan,
            now: Instant::now(),
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
            for event in events.iter() {
                if event.token() == WAKE {
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
                }
            }
            while inbox_open {
                match inbox.try_take() {
                    Ok(Some(conn)) => self.adopt(conn),
                    Ok(None) => break,
                    Err(_closed) => inbox_open = false,
                }
            }
            self.deliver_posted();
            self.fire_timers();
            for t in std::mem::take(&mut self.again) {
                if self.sessions.contains(t) {
                    self.on_readable(t);
                }
            }
            if self.stopping.is_none() && self.shared.shutdown.is_triggered() {
                self.begin_shutdown();
            }
            self.check_deadlines();
            if !inbox_open && self.sessions.is_empty() {
                break;
            }
        }
        // Only reached early if polling itself failed: let every session go.
        for t in self.sessions.iter().map(|(t, _)| t).collect::<Vec<_>>() {
            self.remove(t);
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.again.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut timeout = None;
        if !self.closing.is_empty() || self.stopping.is_some() {
            timeout = Some(CLOSING_TICK);
        } else if !self.pressed.is_empty() {
            timeout = Some(PRESSED_TICK);
        }
        let header_due = self.headers.front().map(|&(_, _, at)| at);
        for at in [self.next_idle_scan, self.timers.next(), header_due]
            .into_iter()
            .flatten()
        {
            let until = at.saturating_duration_since(Instant::now());
            timeout = Some(timeout.map_or(until, |t: Duration| t.min(until)));
        }
        timeout
    }

    fn adopt(&mut self, conn: Conn) {
        let Conn { stream, handle } = conn;
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
        handle.adopt(Arc::clone(&self.mailbox), t);
        let splitter = if self.shared.handler.holds_partial_lines() {
            Splitter::holding(self.shared.config.max_line)
        } else {
            Splitter::passing()
        };
        let mut session = Session::new(handle, stream, splitter);
        if self.shared.config.proxy.is_some() {
            let deadline = Instant::now() + self.shared.config.proxy_timeout;
            session.header_deadline = Some(deadline);
            entry.insert(session);
            self.headers.push_back((t, id, deadline));
            return self.read_header(t);
        }
        entry.insert(session);
        self.open(t);
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
            && let Some(pacing) = self.shared.faults.draw(id, session.handle.connected_at())
        {
            log::debug!("session {id} faulted: faults={}", pacing.describe());
            session.fault = Some(Box::new(pacing));
        }
        self.shared.metrics.worker(self.index).opened();
        self.call_handler(t, |handler, ctx| handler.on_open(ctx));
        if self.stopping.is_some() {
            self.begin_close(t, CloseReason::Shutdown);
        } else {
            self.service_outbox(t);
            self.fault_step(t);
        }
    }

    fn on_readable(&mut self, t: usize) {
        let Some(session) = self.sessions.get(t) else {
            return;
        };
        match session.phase {
            Phase::Open => self.read_open(t),
            Phase::Flushing { .. } | Phase::Draining { .. } => self.drain_input(t),
        }
    }

    fn read_open(&mut self, t: usize) {
        if self
            .sessions
            .get(t)
            .is_some_and(|s| s.header_deadline.is_some())
        {
            return self.read_header(t);
        }
        for _ in 0..READ_BUDGET {
            let Some(session) = self.sessions.get_mut(t) else {
                return;
            };
            if session.phase != Phase::Open {
                return;
            }
            if session.paused() {
                // Back-pressure: read again once the socket took what is pending and the
                // recipients of what this peer relayed have caught up.
                session.read_more = true;
                return;
            }
            session.read_more = false;
            match session.stream.read(&mut self.buf) {
                Ok(0) => return self.on_eof(t),
                Ok(n) => {
                    session.last_active = self.now;
                    // A short read emptied the socket: the poller reports the next arrival
                    // (edge-triggered readiness fires on every one), so reading again now
                    // would only hear `WouldBlock`. The end of input is the exception.
                    let drained = n < self.buf.len() && !session.read_closed;
                    self.on_input(t, n);
                    if drained {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(t, &e),
            }
        }
        if let Some(session) = self.sessions.get_mut(t) {
            session.read_more = true;
            self.again.push(t);
        }
    }

    /// Handles the `n` bytes just read into the shared buffer for session `t`.
    fn on_input(&mut self, t: usize, n: usize) {
        let Worker {
            sessions,
            buf,
            reply,
            shared,
            ..
        } = self;
        let session = &mut sessions[t];
        let handle = &session.handle;
        handle
            .counters()
            .bytes_in
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        reply.clear();
        let data = &buf[..n];
        if log::log_enabled!(log::Level::Trace) {
            log::trace!(
                "session {} read: bytes={n} data={}",
                handle.id(),
                escape(&data[..n.min(256)])
            );
        }
        let mut ctx = Context::new(
            handle,
            &shared.registry,
            reply,
            data,
            shared.shutdown.is_triggered(),
        )
        .with_silent_ending(shared.handler.silent_ending());
        // Publish the peer's framing before the handler composes anything for it.
        let ending = session.splitter.ending_after(data);
        if handle.speech() != Speech::Spoken(ending) {
            handle.set_speech(ending);
        }
        let mut received = 0u64;
        // Replies to the messages handled completely: what is kept if a later one panics.
        let mut committed = 0;
        let splitter = &mut session.splitter;
        let deferred = &mut session.deferred;
        let handler = &shared.handler;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            splitter.feed(data, &mut |message| {
                received += u64::from(message.complete);
                if ctx.pressed() {
                    // A recipient is behind: the rest waits until it catches up.
                    deferred.push(message.raw, message.text.len());
                    return;
                }
                handler.on_message(&mut ctx, message);
                committed = ctx.reply_len();
            })
        }));
        let replies = ctx.replies();
        let close = ctx.close_requested();
        let reply_len = ctx.reply_len();
        let from_input = ctx.reply_is_input();
        let pressed = ctx.take_pressed();
        let counters = handle.counters();
        let flow = match outcome {
            Ok(flow) => flow,
            Err(panic) => {
                log::error!(
                    "session {} handler panicked: peer={} panic={} input={}",
                    handle.id(),
                    handle.peer(),
                    escape(panic_text(&panic).as_bytes()),
                    escape(&data[..data.len().min(64)])
                );
                // The replies to the messages before the panicking one still go out.
                self.send_reply(t, from_input, committed);
                self.begin_close(t, CloseReason::HandlerPanic);
                return;
            }
        };
        let quit = flow == Flow::Quit;
        counters.messages_in.fetch_add(
            received + u64::from(quit),
            std::sync::atomic::Ordering::Relaxed,
        );
        counters
            .messages_out
            .fetch_add(replies, std::sync::atomic::Ordering::Relaxed);
        if reply_len > 0 {
            let read_at = self.sessions[t].last_active;
            self.send_reply(t, from_input, reply_len);
            let metrics = self.shared.metrics.worker(self.index);
            metrics.replied(read_at.elapsed(), replies);
        }
        self.hold(t, pressed);
        // The recipients may have caught up already: then the deferred rest goes on now.
        self.replay_deferred(t, false);
        if quit {
            // What came before `quit` is handled, held up or not.
            self.replay_deferred(t, true);
            self.begin_close(t, CloseReason::Quit);
        } else if let Some(reason) = close {
            self.begin_close(t, reason);
        }
    }

    /// Sends the first `len` bytes of the reply to the read just handled: straight from the
    /// read buffer when the reply is the read's own bytes (echo), else from the reply buffer.
    fn send_reply(&mut self, t: usize, from_input: bool, len: usize) {
        if len == 0 {
            return;
        }
        if from_input {
            let buf = std::mem::take(&mut self.buf);
            self.send_own(t, &buf[..len]);
            self.buf = buf;
        } else {
            let reply = std::mem::take(&mut self.reply);
            self.send_own(t, &reply[..len.min(reply.len())]);
            self.reply = reply;
        }
    }

    /// Stops reading session `t` while any of `pressed` — recipients its relayed lines left
    /// above their soft mark — still is; each will nudge this worker when it is not.
    fn hold(&mut self, t: usize, pressed: Vec<Arc<SessionHandle>>) {
        let Some(session) = self.sessions.get_mut(t) else {
            return;
        };
        for recipient in pressed {
            if recipient.outbox().hold(&session.handle)
                && !session.held_by.iter().any(|h| Arc::ptr_eq(h, &recipient))
            {
                session.held_by.push(recipient);
            }
        }
    }

    /// Session `t` was nudged or posted: if it was held up, see whether its recipients have
    /// caught up, then handle what was deferred and read on.
    fn resume(&mut self, t: usize) {
        let Some(session) = self.sessions.get_mut(t) else {
            return;
        };
        if session.phase != Phase::Open
            || (session.held_by.is_empty() && session.deferred.is_empty())
        {
            return;
        }
        let me = Arc::clone(&session.handle);
        session.held_by.retain(|r| r.outbox().hold(&me));
        if !session.held_by.is_empty() {
            return;
        }
        self.replay_deferred(t, false);
        if let Some(session) = self.sessions.get(t)
            && session.phase == Phase::Open
            && !session.paused()
        {
            self.read_open(t);
        }
    }

    /// Hands session `t`'s deferred messages to the handler, in order, until a recipient
    /// presses again (unless `all`: the session is ending and nothing may wait).
    fn replay_deferred(&mut self, t: usize, all: bool) {
        loop {
            let Some(session) = self.sessions.get_mut(t) else {
                return;
            };
            if !session.held_by.is_empty() && !all {
                return;
            }
            let Some((raw, text_len)) = session.deferred.front() else {
                return;
            };
            let raw = raw.to_vec();
            session.deferred.pop();
            let mut pressed = Vec::new();
            let message = Message {
                raw: &raw,
                text: &raw[..text_len],
                complete: true,
            };
            self.call_handler(t, |handler, ctx| {
                handler.on_message(ctx, message);
                pressed = ctx.take_pressed();
            });
            if !all {
                self.hold(t, pressed);
            }
        }
    }

    /// Sends bytes the worker composed for session `t`: written at once if nothing is
    /// pending, the rest kept in order for when the socket takes more.
    fn send_own(&mut self, t: usize, bytes: &[u8]) {
        let session = &mut self.sessions[t];
        if session.phase == Phase::Open
            && let Some(pacing) = session.fault.as_deref_mut()
        {
            // The slower path: a faulted session's reply waits for its faults.
            let lines = session.handle.line_ending() != LineEnding::None;
            pacing.hold(Instant::now(), bytes, lines);
            return self.fault_step(t);
        }
        if !session.pending.is_empty() {
            session.pending.push_back(Chunk::Own(bytes.to_vec()));
            return;
        }
        // Write straight from `bytes`; only what the socket does not take is copied.
        match write_some(&mut session.stream, bytes) {
            Ok(n) => {
                session
                    .handle
                    .counters()
                    .bytes_out
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                if n < bytes.len() {
                    session.pending.push_back(Chunk::Own(bytes[n..].to_vec()));
                }
            }
            Err(e) => self.fail(t, &e),
        }
    }

    fn on_eof(&mut self, t: usize) {
        // Messages held up by slow recipients go first; nothing waits once input ended.
        self.replay_deferred(t, true);
        // A held partial line is a message at end of input.
        let mut held = None;
        let flow = self.sessions[t]
            .splitter
            .finish(&mut |m| held = Some(m.text.to_vec()));
        if let Some(text) = held {
            self.sessions[t]
                .handle
                .counters()
                .messages_in
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let message = Message {
                raw: &text,
                text: &text,
                complete: true,
            };
            self.call_handler(t, |handler, ctx| handler.on_message(ctx, message));
        }
        let reason = if flow == Flow::Quit {
            CloseReason::Quit
        } else {
            CloseReason::PeerClosed
        };
        self.begin_close(t, reason);
    }

    /// Runs a handler callback for session `t` outside the read path (open, close, end of
    /// input), sending its replies; a panic ends the session.
    fn call_handler(&mut self, t: usize, f: impl FnOnce(&dyn super::Handler, &mut Context<'_>)) {
        let Some(session) = self.sessions.get(t) else {
            return;
        };
        let handle = Arc::clone(&session.handle);
        let mut reply = std::mem::take(&mut self.reply);
        reply.clear();
        let shutting_down = self.shared.shutdown.is_triggered();
        let outcome = {
            let mut ctx = Context::new(
                &handle,
                &self.shared.registry,
                &mut reply,
                &[],
                shutting_down,
            )
            .with_silent_ending(self.shared.handler.silent_ending());
            let handler = &*self.shared.handler;
            catch_unwind(AssertUnwindSafe(|| {
                f(handler, &mut ctx);
                (ctx.replies(), ctx.close_requested())
            }))
        };
        // Replies and close requests count only while the session is open: `on_close` runs
        // when it no longer is.
        let open = self.sessions.get(t).is_some_and(|s| s.phase == Phase::Open);
        match outcome {
            Ok((replies, close)) if open => {
                handle
                    .counters()
                    .messages_out
                    .fetch_add(replies, std::sync::atomic::Ordering::Relaxed);
                if !reply.is_empty() {
                    self.send_own(t, &reply);
                }
                self.reply = reply;
                if let Some(reason) = close {
                    self.begin_close(t, reason);
                }
            }
            Ok(_) => self.reply = reply,
            Err(panic) => {
                log::error!(
                    "session {} handler panicked: peer={} panic={}",
                    handle.id(),
                    handle.peer(),
                    escape(panic_text(&panic).as_bytes())
                );
                self.reply = reply;
                if open {
                    self.begin_close(t, CloseReason::HandlerPanic);
                }
            }
        }
    }

    fn on_writable(&mut self, t: usize) {
        let Some(session) = self.sessions.get_mut(t) else {
            return;
        };
        match session.flush() {
            Ok(true) => match session.phase {
                Phase::Open if session.read_more => self.read_open(t),
                Phase::Flushing { reason, .. } => self.shut_write(t, reason),
                _ => {}
            },
            Ok(false) => {}
            Err(e) => self.fail(t, &e),
        }
    }

    fn deliver_posted(&mut self) {
        let mut posted = std::mem::take(&mut self.posted);
        self.mailbox.take(&mut posted);
        for &(t, id) in &posted {
            if self.sessions.get(t).is_some_and(|s| s.handle.id() == id) {
                self.service_outbox(t);
                self.resume(t);
            }
        }
        posted.clear();
        self.posted = posted;
    }

    /// Moves session `t`'s queued messages into its pending writes, writes what the socket
    /// takes, and acts on a close request.
    fn service_outbox(&mut self, t: usize) {
        let session = &mut self.sessions[t];
        if session.phase != Phase::Open || session.header_deadline.is_some() {
            return;
        }
        let mut entries = std::mem::take(&mut self.entries);
        let close = session.handle.outbox().take(&mut entries, None);
        let queued = entries.len() as u64;
        session.enqueue(entries.drain(..));
        self.entries = entries;
        session
            .handle
            .counters()
            .messages_out
            .fetch_add(queued, std::sync::atomic::Ordering::Relaxed);
        if session.handle.outbox().pressed_since().is_some() && !self.pressed.contains(&t) {
            self.pressed.push(t);
        }
        if let Some(reason) = close {
            if reason == CloseReason::Overflow {
                log::warn!(
                    "session {} dropped: peer={} reason=outbox-overflow queued_bytes={} limit={}",
                    session.handle.id(),
                    session.handle.peer(),
                    session.handle.queued_bytes(),
                    self.shared.config.outbox_limit
                );
            }
            self.begin_close(t, reason);
        } else if queued > 0 {
            self.on_writable(t);
        }
    }

    /// Starts ending session `t`: what is queued is flushed, then `quit` (when the server is
    /// the one ending it), then the write side is shut and input drained. A session dropped
    /// for overflow gets only `quit`: what was queued for it is freed at once.
    fn begin_close(&mut self, t: usize, reason: CloseReason) {
        let Some(session) = self.sessions.get_mut(t) else {
            return;
        };
        if session.phase != Phase::Open {
            return;
        }
        // Faults end with the session: what they hold goes out now, before any goodbye.
        if let Some(pacing) = session.fault.take() {
            pacing.release_all(&mut session.pending);
        }
        if reason == CloseReason::Error {
            return self.remove(t);
        }
        let handle = Arc::clone(&session.handle);
        let mut entries = std::mem::take(&mut self.entries);
        handle.outbox().take(&mut entries, Some(reason));
        let mut queued = entries.len() as u64;
        if reason == CloseReason::Overflow {
            for entry in entries.drain(..) {
                handle.outbox().release(entry.cost());
            }
            session.discard_pending(true);
            queued = 0;
        }
        session.enqueue(entries.drain(..));
        self.entries = entries;
        session.held_by.clear();
        session.deferred = Default::default();
        if reason.says_quit() {
            let ending = match handle.speech() {
                Speech::Silent => self.shared.handler.silent_ending(),
                Speech::Spoken(ending) => ending,
            };
            session.pending.push_back(Chunk::Static(quit_line(ending)));
        }
        handle.counters().messages_out.fetch_add(
            queued + u64::from(reason.says_quit()),
            std::sync::atomic::Ordering::Relaxed,
        );
        let linger = self.shared.config.shutdown_timeout;
        let deadline = self
            .stopping
            .unwrap_or_else(|| super::later(Instant::now(), linger));
        session.phase = Phase::Flushing { reason, deadline };
        self.closing.push(t);
        // The handler hears of the end once, as it begins (chat's `left` goes out now,
        // not after a slow reader's flush deadline); its replies are not sent.
        self.call_handler(t, |handler, ctx| handler.on_close(ctx));
        self.on_writable(t);
    }

    /// Drops the recipients that stayed above their outbox's soft mark for longer than the
    /// grace; forgets those that caught up.
    fn check_pressed(&mut self, now: Instant) {
        let grace = self.shared.config.outbox_grace;
        let mut pressed = std::mem::take(&mut self.pressed);
        pressed.retain(|&t| {
            let Some(session) = self.sessions.get(t) else {
                return false;
            };
            if session.phase != Phase::Open {
                return false;
            }
            let Some(since) = session.handle.outbox().pressed_since() else {
                return false;
            };
            if now.saturating_duration_since(since) < grace {
                return true;
            }
            let handle = &session.handle;
            log::warn!(
                "session {} dropped: peer={} reason=outbox-overflow queued_bytes={} limit={} behind_for={:?}",
                handle.id(),
                handle.peer(),
                handle.queued_bytes(),
                self.shared.config.outbox_limit,
                now.saturating_duration_since(since)
            );
            self.begin_close(t, CloseReason::Overflow);
            false
        });
        pressed.append(&mut self.pressed);
        pressed.sort_unstable();
        pressed.dedup();
        self.pressed = pressed;
    }

    fn shut_write(&mut self, t: usize, reason: CloseReason) {
        let session = &mut self.sessions[t];
        let _ = session.stream.shutdown(std::net::Shutdown::Write);
        let until = Instant::now() + DRAIN;
        session.phase = Phase::Draining { reason, until };
        self.drain_input(t);
    }

    /// Reads and discards input from a closing session; at end of input a draining session
    /// is closed.
    fn drain_input(&mut self, t: usize) {
        for _ in 0..READ_BUDGET {
            let Some(session) = self.sessions.get_mut(t) else {
                return;
            };
            match session.stream.read(&mut self.buf) {
                Ok(0) => {
                    if matches!(session.phase, Phase::Draining { .. }) {
                        self.remove(t);
                    }
                    // Flushing: the peer half-closed; keep writing until done.
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.remove(t),
            }
        }
    }

    fn fail(&mut self, t: usize, error: &io::Error) {
        if let Some(session) = self.sessions.get(t) {
            log::debug!(
                "session {} failed: peer={} error={error}",
                session.handle.id(),
                session.handle.peer()
            );
        }
        self.remove(t);
    }

    fn begin_shutdown(&mut self) {
        let started = self
            .shared
            .shutdown
            .triggered_at()
            .unwrap_or_else(Instant::now);
        // Leave the server a little of its deadline to join threads and print the summary.
        let timeout = self.shared.config.shutdown_timeout;
        let deadline = super::later(started, timeout.mul_f64(0.9));
        self.stopping = Some(deadline);
        // Connections still owing their PROXY header never became sessions: let them go.
        for (t, id, _) in std::mem::take(&mut self.headers) {
            if self.sessions.get(t).is_some_and(|s| s.handle.id() == id) {
                self.discard(t);
            }
        }
        let open: Vec<usize> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.phase == Phase::Open)
            .map(|(t, _)| t)
            .collect();
        log::debug!("worker {} closing {} session(s)", self.index, open.len());
        for t in open {
            self.begin_close(t, CloseReason::Shutdown);
        }
    }

    fn check_deadlines(&mut self) {
        let now = Instant::now();
        if self.headers.front().is_some_and(|&(_, _, at)| now >= at) {
            self.check_headers(now);
        }
        if !self.pressed.is_empty() {
            self.check_pressed(now);
        }
        if !self.closing.is_empty() {
            let stopping = self.stopping;
            let mut closing = std::mem::take(&mut self.closing);
            closing.retain(|&t| {
                let Some(session) = self.sessions.get(t) else {
                    return false;
                };
                let due = match session.phase {
                    Phase::Open => return false,
                    Phase::Flushing { deadline, .. } => deadline.min(stopping.unwrap_or(deadline)),
                    Phase::Draining { until, .. } => until.min(stopping.unwrap_or(until)),
                };
                if now < due {
                    return true;
                }
                if let Phase::Flushing { reason, .. } = session.phase {
                    log::debug!(
                        "session {} closed before its goodbye was out: peer={} reason={reason} pending_bytes={}",
                        session.handle.id(),
                        session.handle.peer(),
                        session.pending.iter().map(chunk_len).sum::<usize>()
                    );
                }
                self.remove(t);
                false
            });
            // `remove` may not push; anything begun meanwhile was appended to `self.closing`.
            closing.append(&mut self.closing);
            closing.sort_unstable();
            closing.dedup();
            self.closing = closing;
        }
        if let (Some(at), Some(timeout)) = (self.next_idle_scan, self.shared.config.idle_timeout)
            && now >= at
        {
            self.next_idle_scan = Some(now + idle_scan_interval(timeout));
            let quiet: Vec<usize> = self
                .sessions
                .iter()
                .filter(|(_, s)| {
                    s.phase == Phase::Open
                        && s.header_deadline.is_none()
                        && now - s.last_active >= timeout
                })
                .map(|(t, _)| t)
                .collect();
            for t in quiet {
                // A slow reader may have made room without the socket reporting it (Linux
                // signals writable only once a third of the send buffer is free): try to
                // write before calling the session idle.
                if !self.sessions[t].pending.is_empty() {
                    self.on_writable(t);
                }
                let Some(session) = self.sessions.get(t) else {
                    continue;
                };
                if session.phase != Phase::Open || now - session.last_active < timeout {
                    continue;
                }
                let handle = &self.sessions[t].handle;
                log::warn!(
                    "session {} dropped: peer={} reason=idle-timeout idle_for={:?}",
                    handle.id(),
                    handle.peer(),
                    timeout
                );
                self.begin_close(t, CloseReason::Idle);
            }
        }
    }

    /// Moves what session `t`'s faults let out into its pending writes and writes it; acts
    /// on a `reset` or `close` that is due; queues the session's next deadline.
    fn fault_step(&mut self, t: usize) {
        let Some(session) = self.sessions.get_mut(t) else {
            return;
        };
        if session.phase != Phase::Open {
            return;
        }
        let Some(pacing) = session.fault.as_deref_mut() else {
            return;
        };
        let now = Instant::now();
        match pacing.advance(now, &mut session.pending) {
            Some(End::Reset) => return self.reset(t),
            Some(End::Close) => {
                log::debug!(
                    "session {} closed by fault: peer={} faults={}",
                    session.handle.id(),
                    session.handle.peer(),
                    pacing.describe()
                );
                // A plain close: what the faults still hold is never sent.
                session.fault = None;
                return self.begin_close(t, CloseReason::Fault);
            }
            None => {}
        }
        if let Some(at) = pacing.deadline()
            && pacing.arm(at)
        {
            self.timers.push(at, t, session.handle.id());
        }
        if !session.pending.is_empty()
            && let Err(e) = session.flush()
        {
            self.fail(t, &e);
        }
    }

    /// Ends session `t` with a reset (RST): what was let out is written if the socket
    /// takes it, then `SO_LINGER` 0 and close.
    fn reset(&mut self, t: usize) {
        let session = &mut self.sessions[t];
        let _ = session.flush();
        if let Some(pacing) = session.fault.take() {
            log::debug!(
                "session {} reset by fault: peer={} faults={}",
                session.handle.id(),
                session.handle.peer(),
                pacing.describe()
            );
        }
        if let Err(e) = socket2::SockRef::from(&session.stream).set_linger(Some(Duration::ZERO)) {
            log::debug!(
                "session {} cannot set SO_LINGER: error={e}",
                session.handle.id()
            );
        }
        session.phase = Phase::Flushing {
            reason: CloseReason::Fault,
            deadline: Instant::now(),
        };
        self.call_handler(t, |handler, ctx| handler.on_close(ctx));
        self.remove(t);
    }

    /// Handles the faulted sessions' deadlines that are due, and the clearing of faults.
    fn fire_timers(&mut self) {
        let generation = self.shared.faults.generation();
        if generation != self.fault_generation {
            self.fault_generation = generation;
            self.forget_cleared();
        }
        let now = Instant::now();
        while let Some((t, id, at)) = self.timers.pop_due(now) {
            let Some(session) = self.sessions.get_mut(t) else {
                continue;
            };
            if session.handle.id() != id
                || !session.fault.as_deref_mut().is_some_and(|p| p.fired(at))
            {
                continue;
            }
            self.fault_step(t);
            self.read_on(t);
        }
    }

    /// A fault was cleared: sessions that had it go on without it (and with no fault left,
    /// send what is held at once).
    fn forget_cleared(&mut self) {
        let faulted: Vec<usize> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.fault.is_some())
            .map(|(t, _)| t)
            .collect();
        for t in faulted {
            let session = &mut self.sessions[t];
            if session
                .fault
                .as_deref_mut()
                .is_some_and(|p| !p.forget_cleared())
                && let Some(pacing) = session.fault.take()
            {
                pacing.release_all(&mut session.pending);
                self.on_writable(t);
            } else {
                self.fault_step(t);
            }
            self.read_on(t);
        }
    }

    /// Reads session `t` again if it stopped for back-pressure that is now gone.
    fn read_on(&mut self, t: usize) {
        if let Some(session) = self.sessions.get(t)
            && session.phase == Phase::Open
            && session.read_more
            && !session.paused()
        {
            self.read_open(t);
        }
    }

    /// Frees whatever is still queued for `session`, letting go of senders waiting on it.
    fn release_outbox(&mut self, session: &Session) {
        let mut entries = std::mem::take(&mut self.entries);
        session
            .handle
            .outbox()
            .take(&mut entries, Some(CloseReason::Error));
        for entry in entries.drain(..) {
            session.handle.outbox().release(entry.cost());
        }
        self.entries = entries;
    }

    /// Reads connection `t`'s PROXY header if it has arrived. Then the header's client is
    /// the session's peer, `--allow` / `--deny` judge it, the session opens, and what
    /// followed the header is read as its first input.
    fn read_header(&mut self, t: usize) {
        let (Some(expected), Some(session)) = (self.shared.config.proxy, self.sessions.get_mut(t))
        else {
            return;
        };
        let why = match proxy::read_header(&mut session.stream, expected, &mut self.buf) {
            Ok(Step::Pending) => return,
            Ok(Step::Refused(why)) => why,
            Err(e) => e.to_string(),
            Ok(Step::Done(client)) => {
                if let Some(client) = client {
                    session.handle.set_origin(client);
                }
                session.header_deadline = None;
                let peer = session.handle.peer();
                self.headers.retain(|&(h, _, _)| h != t);
                if !self.shared.config.access.permits(peer.ip()) {
                    note_denied(&self.shared, peer);
                    return self.discard(t);
                }
                self.open(t);
                // The bytes after the header may be in the socket already: no event will
                // announce them.
                return self.read_open(t);
            }
        };
        let handle = &self.sessions[t].handle;
        log::warn!(
            "connection dropped: peer={} reason=proxy-header error={}",
            handle.peer(),
            escape(why.as_bytes())
        );
        self.shared.metrics.rejected(Rejection::ProxyHeader);
        self.discard(t);
    }

    /// Drops the connections whose PROXY header is overdue.
    fn check_headers(&mut self, now: Instant) {
        while let Some(&(t, id, at)) = self.headers.front() {
            if at > now {
                break;
            }
            self.headers.pop_front();
            let Some(session) = self.sessions.get(t) else {
                continue;
            };
            if session.handle.id() != id || session.header_deadline.is_none() {
                continue;
            }
            log::warn!(
                "connection dropped: peer={} reason=proxy-header error=no header within {:?}",
                session.handle.peer(),
                self.shared.config.proxy_timeout
            );
            self.shared.metrics.rejected(Rejection::ProxyHeader);
            self.discard(t);
        }
    }

    /// Closes connection `t`, which never became a session (its PROXY header was missing,
    /// bad or named a denied client): at once, without a goodbye, not counted as served.
    fn discard(&mut self, t: usize) {
        let Some(mut session) = self.sessions.try_remove(t) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut session.stream);
        self.headers.retain(|&(h, _, _)| h != t);
        self.release_outbox(&session);
        self.shared.registry.withdraw(session.handle.id());
    }

    /// Closes session `t` now and forgets it.
    fn remove(&mut self, t: usize) {
        if let Some(session) = self.sessions.get_mut(t)
            && session.phase == Phase::Open
        {
            // Ended without a goodbye (a failed connection): the handler still hears of it.
            session.phase = Phase::Flushing {
                reason: CloseReason::Error,
                deadline: Instant::now(),
            };
            self.call_handler(t, |handler, ctx| handler.on_close(ctx));
        }
        let Some(mut session) = self.sessions.try_remove(t) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut session.stream);
        session.discard_pending(false);
        self.release_outbox(&session);
        let reason = match session.phase {
            Phase::Open => CloseReason::Error,
            Phase::Flushing { reason, .. } | Phase::Draining { reason, .. } => reason,
        };
        let handle = &session.handle;
        let traffic = handle.traffic();
        let metrics = self.shared.metrics.worker(self.index);
        metrics.closed(reason, handle.connected_for());
        log::debug!(
            "session {} closed: peer={} reason={reason} duration={:?} bytes_in={} bytes_out={}",
            handle.id(),
            handle.peer(),
            handle.connected_for(),
            traffic.bytes_in,
            traffic.bytes_out
        );
        self.shared.registry.unregister(handle.id());
    }
}

impl crate::pool::Worker<Conn> for Worker {
    fn notifier(&self) -> Arc<dyn Notify> {
        Arc::clone(&self.mailbox) as Arc<dyn Notify>
    }

    fn run(mut self, inbox: Inbox<Conn>) {
        self.run_loop(&inbox);
        log::debug!("worker {} stopped", self.index);
    }
}

/// `quit` in the given line ending, as a static buffer.
fn quit_line(ending: LineEnding) -> &'static [u8] {
    match ending {
        LineEnding::None => b"quit",
        LineEnding::Lf => b"quit\n",
        LineEnding::CrLf => b"quit\r\n",
    }
}

fn chunk_len(chunk: &Chunk) -> usize {
    chunk.bytes().len()
}

fn idle_scan_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Writes as much of `bytes` as the socket takes now.
fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
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
