//! One connected client: the part every thread may touch and the part only its worker owns.
//!
//! [`SessionHandle`] is shared through the [`Registry`](crate::server::Registry): identity, counters,
//! the line ending the peer speaks, and the bounded outbox through which the console, the chat
//! relay and shutdown talk to the session. Whoever queues a message posts the session to its
//! worker's mailbox; only the worker writes to the socket.
//!
//! The worker's own part (`Session`) holds the socket, the message splitter and the bytes accepted
//! for sending that the socket has not taken yet. An idle session holds no buffers: the worker
//! reads into one buffer it shares among all its sessions.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::server::faults::Pacing;
use crate::server::protocol::{LineEnding, Splitter};
use crate::server::session::outbox::{Entry, MAX_SLACK, MESSAGE_OVERHEAD, Mailbox, Outbox, append};

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

/// The shared part of a session, held by the registry and by the session's worker.
pub struct SessionHandle {
    id: SessionId,
    peer: SocketAddr,
    /// The original client a PROXY header named, set once before the session opens.
    origin: std::sync::OnceLock<SocketAddr>,
    connected_at: Instant,
    counters: Counters,
    /// [`Speech`] as a byte, published by the worker whenever the peer's framing changes.
    speech: AtomicU8,
    nick: Mutex<Option<String>>,
    /// Messages from other threads, charged against `--outbox-limit` until written.
    outbox: Outbox,
}

/// What a session has shown of its framing so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speech {
    /// It has not sent anything yet.
    Silent,
    /// It has spoken, seed-style or in lines.
    Spoken(LineEnding),
}

impl SessionHandle {
    pub(crate) fn new(id: SessionId, peer: SocketAddr, outbox_limit: usize) -> Self {
        SessionHandle {
            id,
            peer,
            origin: std::sync::OnceLock::new(),
            connected_at: Instant::now(),
            counters: Counters::default(),
            speech: AtomicU8::new(0),
            nick: Mutex::new(None),
            outbox: Outbox::new(id, outbox_limit),
        }
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The peer's address: the original client when a PROXY header named one.
    pub fn peer(&self) -> SocketAddr {
        self.origin.get().copied().unwrap_or(self.peer)
    }

    /// Records the original client a PROXY header named (only the first call counts).
    pub(crate) fn set_origin(&self, client: SocketAddr) {
        let client = SocketAddr::new(client.ip().to_canonical(), client.port());
        let _ = self.origin.set(client);
    }

    /// How long the session has been connected.
    pub fn connected_for(&self) -> Duration {
        self.connected_at.elapsed()
    }

    /// When the session connected.
    pub(crate) fn connected_at(&self) -> Instant {
        self.connected_at
    }

    /// Its traffic so far.
    pub fn traffic(&self) -> Traffic {
        self.counters.load()
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// What the peer has shown of its framing.
    pub fn speech(&self) -> Speech {
        match self.speech.load(Ordering::Relaxed) {
            0 => Speech::Silent,
            1 => Speech::Spoken(LineEnding::None),
            2 => Speech::Spoken(LineEnding::Lf),
            _ => Speech::Spoken(LineEnding::CrLf),
        }
    }

    /// The line ending the server answers this session with: none for a seed-style session
    /// (or one that has not spoken), else the ending of its first line.
    pub fn line_ending(&self) -> LineEnding {
        match self.speech() {
            Speech::Silent => LineEnding::None,
            Speech::Spoken(ending) => ending,
        }
    }

    pub(crate) fn set_speech(&self, ending: LineEnding) {
        let code = match ending {
            LineEnding::None => 1,
            LineEnding::Lf => 2,
            LineEnding::CrLf => 3,
        };
        self.speech.store(code, Ordering::Relaxed);
    }

    /// The nickname the peer chose with `/nick`, if any.
    pub fn nick(&self) -> Option<String> {
        self.nick.lock().clone()
    }

    /// Sets or clears the nickname.
    pub fn set_nick(&self, nick: Option<String>) {
        *self.nick.lock() = nick;
    }

    /// The name shown for this session in chat: its nickname, or `#ID`.
    pub fn display_name(&self) -> String {
        match &*self.nick.lock() {
            Some(nick) => nick.clone(),
            None => format!("#{}", self.id),
        }
    }

    /// Whether the session is being closed (it takes no new messages).
    pub fn is_closing(&self) -> bool {
        self.outbox.is_closing()
    }

    /// What is queued for the peer and not yet written, as charged against the outbox
    /// limit: the bytes, plus [`MESSAGE_OVERHEAD`] per message for a seed-style peer.
    pub fn queued_bytes(&self) -> usize {
        self.outbox.charged()
    }

    /// Queues `message` to be written to the peer as one write, and tells the session's
    /// worker. Never blocks on the peer.
    ///
    /// # Errors
    ///
    /// [`SendError::Closing`] when the session is ending; [`SendError::Overflow`] when the
    /// message would take a non-empty queue past the outbox limit — the session is then
    /// dropped.
    pub fn send(&self, message: Arc<[u8]>) -> Result<(), SendError> {
        self.queue(&[&message]).map(|_pressed| ())
    }

    /// Queues one message made of `parts`: a write of its own for a seed-style peer,
    /// appended to what is queued for a line-based one. Returns whether the outbox is now
    /// above its soft mark (its senders should pause).
    pub(crate) fn queue(&self, parts: &[&[u8]]) -> Result<bool, SendError> {
        let framed = self.speech() == Speech::Spoken(LineEnding::None);
        self.outbox.push(parts, framed)
    }

    /// Asks the worker to end the session (with `quit`, after what is already queued).
    /// Returns `false` if it was already ending.
    pub fn request_close(&self, reason: CloseReason) -> bool {
        self.outbox.request_close(reason)
    }

    /// Asks the session's worker to look at it again.
    pub(crate) fn nudge(&self) {
        self.outbox.nudge();
    }

    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Worker side: the session now lives in `mailbox`'s worker at slot `token`.
    pub(crate) fn adopt(&self, mailbox: Arc<Mailbox>, token: usize) {
        self.outbox.adopt(mailbox, token);
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("speech", &self.speech())
            .field("queued_bytes", &self.queued_bytes())
            .finish()
    }
}

/// Bytes accepted for sending, written as one write each (a partly taken one is finished
/// later, in order).
#[derive(Debug)]
pub(crate) enum Chunk {
    /// A reply composed by the worker itself (an echo, a handler's reply).
    Own(Vec<u8>),
    /// Taken from the outbox: charged against the outbox limit until written, the bytes as
    /// they go out and `overhead` once the whole chunk is out.
    Queued { bytes: Vec<u8>, overhead: usize },
    /// A fixed text the server composes: the closing `quit` in the session's line ending.
    Static(&'static [u8]),
}

impl Chunk {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Own(v) => v,
            Chunk::Queued { bytes, .. } => bytes,
            Chunk::Static(s) => s,
        }
    }
}

/// Where a session is in its life, as its worker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading and replying.
    Open,
    /// Ending: writing what is pending (and `quit`), input discarded. Dropped at `deadline`.
    Flushing {
        reason: CloseReason,
        deadline: Instant,
    },
    /// Write side shut; discarding input until EOF or `until`, so that closing with unread
    /// input does not reset the connection and wipe out the goodbye.
    Draining { reason: CloseReason, until: Instant },
}

/// Messages already cut from a sender's input but not yet handled, because their relay was
/// paused: at most what one read brought, kept in order.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    bytes: Vec<u8>,
    /// Per message: the length of its raw bytes and of its text.
    cuts: VecDeque<(usize, usize)>,
    /// Where the first message left starts in `bytes`.
    start: usize,
}

impl Deferred {
    pub(crate) fn is_empty(&self) -> bool {
        self.cuts.is_empty()
    }

    pub(crate) fn push(&mut self, raw: &[u8], text_len: usize) {
        self.bytes.extend_from_slice(raw);
        self.cuts.push_back((raw.len(), text_len));
    }

    /// The oldest message left: its raw bytes and its text length.
    pub(crate) fn front(&self) -> Option<(&[u8], usize)> {
        let &(raw, text) = self.cuts.front()?;
        Some((&self.bytes[self.start..self.start + raw], text))
    }

    pub(crate) fn pop(&mut self) {
        if let Some((raw, _)) = self.cuts.pop_front() {
            self.start += raw;
        }
        if self.cuts.is_empty() {
            *self = Deferred::default();
        }
    }
}

/// The worker's own part of a session.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) handle: Arc<SessionHandle>,
    pub(crate) stream: mio::net::TcpStream,
    pub(crate) splitter: Splitter,
    /// Accepted for sending, not yet written; the front chunk may be partly written.
    pub(crate) pending: VecDeque<Chunk>,
    /// How much of the front chunk was written.
    pub(crate) written: usize,
    pub(crate) phase: Phase,
    /// When bytes last moved either way: input read, or output the peer made room for. The
    /// idle timeout counts from here, so a reader that is only slow is not "idle".
    pub(crate) last_active: Instant,
    /// The read loop stopped with input left (budget spent or back-pressure).
    pub(crate) read_more: bool,
    /// The poller reported the peer's end of input (or an error): read until the socket
    /// says so, since no further event will come.
    pub(crate) read_closed: bool,
    /// Recipients whose outboxes are above their soft mark because of this session's relayed
    /// messages: while any is, the session is not read (chat back-pressure).
    pub(crate) held_by: Vec<Arc<SessionHandle>>,
    /// Messages of the last read not handled yet, waiting for `held_by` to clear.
    pub(crate) deferred: Deferred,
    /// The faults this session drew and the replies they hold; `None` for most sessions.
    pub(crate) fault: Option<Box<Pacing>>,
    /// While a PROXY header is awaited (`--proxy-protocol`): when it must have arrived. The
    /// session's normal life — the handler's `on_open`, reading messages, writing its
    /// outbox — begins once it has.
    pub(crate) header_deadline: Option<Instant>,
    /// The CPU its packets arrived on at its worker's last look (`worker/grouping.rs`).
    pub(crate) arrives_on: Option<usize>,
}

impl Session {
    pub(crate) fn new(
        handle: Arc<SessionHandle>,
        stream: mio::net::TcpStream,
        splitter: Splitter,
    ) -> Self {
        Session {
            handle,
            stream,
            splitter,
            pending: VecDeque::new(),
            written: 0,
            phase: Phase::Open,
            last_active: Instant::now(),
            read_more: false,
            read_closed: false,
            held_by: Vec::new(),
            deferred: Deferred::default(),
            fault: None,
            header_deadline: None,
            arrives_on: None,
        }
    }

    /// Whether reading must wait: replies are pending, relayed messages are held up, or a
    /// fault holds much or stalls the session.
    pub(crate) fn paused(&self) -> bool {
        !self.pending.is_empty()
            || !self.held_by.is_empty()
            || !self.deferred.is_empty()
            || self.fault.as_ref().is_some_and(|f| !f.may_read())
    }

    /// Adds entries taken from the outbox to the pending writes. Runs of lines join the last
    /// pending run unless that one is being written, so they go out in as few writes as the
    /// socket takes; seed-style messages stay writes of their own.
    pub(crate) fn enqueue(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for entry in entries {
            match entry {
                Entry::Lines(bytes) => {
                    let busy = self.pending.len() == 1 && self.written > 0;
                    match self.pending.back_mut() {
                        Some(Chunk::Queued {
                            bytes: run,
                            overhead: 0,
                        }) if !busy => append(run, &[&bytes]),
                        _ => self.pending.push_back(Chunk::Queued { bytes, overhead: 0 }),
                    }
                }
                Entry::Message(bytes) => self.pending.push_back(Chunk::Queued {
                    bytes,
                    overhead: MESSAGE_OVERHEAD,
                }),
            }
        }
    }

    /// Writes pending chunks, each with its own write calls, until done or the socket is full.
    /// Returns `Ok(true)` when nothing is left pending.
    pub(crate) fn flush(&mut self) -> std::io::Result<bool> {
        use std::io::Write;
        while let Some(chunk) = self.pending.front_mut() {
            let bytes = &chunk.bytes()[self.written..];
            match self.stream.write(bytes) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.handle
                        .counters
                        .bytes_out
                        .fetch_add(n as u64, Ordering::Relaxed);
                    self.last_active = Instant::now();
                    let whole = n == bytes.len();
                    if let Chunk::Queued { bytes, overhead } = chunk {
                        let done = if whole { *overhead } else { 0 };
                        self.handle.outbox.release(n + done);
                        // Give back what a long run has written, a quarter at a time.
                        if !whole && self.written + n > MAX_SLACK.max(bytes.len() / 4) {
                            bytes.drain(..self.written + n);
                            self.written = 0;
                            continue;
                        }
                    }
                    if !whole {
                        self.written += n;
                        continue;
                    }
                    self.pending.pop_front();
                    self.written = 0;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.pending.capacity() > 16 {
            self.pending.shrink_to(4);
        }
        Ok(true)
    }

    /// Discards what is still pending for the peer, except the rest of a chunk partly
    /// written (so that what follows starts on a message boundary), and frees it at once.
    pub(crate) fn discard_pending(&mut self, keep_partial: bool) {
        let written = std::mem::take(&mut self.written);
        for (i, chunk) in std::mem::take(&mut self.pending).into_iter().enumerate() {
            let done = if i == 0 { written } else { 0 };
            if done > 0 && keep_partial {
                self.pending.push_back(chunk);
                self.written = done;
            } else if let Chunk::Queued { bytes, overhead } = chunk {
                self.handle.outbox.release(bytes.len() - done + overhead);
            }
        }
    }
}
