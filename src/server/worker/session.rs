//! The worker's own part of a session: the socket (with TLS or without), the message splitter, the bytes accepted
//! for sending that the socket has not taken yet, where the session is in its life. An idle
//! session holds no buffers: the worker reads into one buffer it shares among its sessions.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::server::faults::Pacing;
use crate::server::protocol::Splitter;
use crate::server::session::outbox::{Chunk, Entry, MAX_SLACK, MESSAGE_OVERHEAD, append};
use crate::server::session::{CloseReason, SessionHandle};
use crate::tls::Link;

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
    /// The socket, and the TLS connection in front of it on a TLS listener.
    pub(crate) link: Link,
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
    /// While a TLS handshake goes on: when it must be done. As with the PROXY header, the
    /// session's normal life begins once it is.
    pub(crate) handshake_deadline: Option<Instant>,
    /// The CPU its packets arrived on at its worker's last look (`grouping`).
    pub(crate) arrives_on: Option<usize>,
    /// The faults of its TLS handshake (`tls-delay`, `tls-abort`, `tls-alert`); `None` for
    /// most sessions.
    pub(crate) tls_fault: Option<Box<crate::server::faults::HandshakeFaults>>,
    /// `tls-truncate`: its end is a FIN without TLS's `close_notify`.
    pub(crate) truncate: bool,
}

impl Session {
    pub(crate) fn new(handle: Arc<SessionHandle>, link: Link, splitter: Splitter) -> Self {
        Session {
            handle,
            link,
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
            handshake_deadline: None,
            arrives_on: None,
            tls_fault: None,
            truncate: false,
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
    /// Returns `Ok(true)` when nothing is left pending (nor held by TLS for the socket).
    pub(crate) fn flush(&mut self) -> std::io::Result<bool> {
        use std::io::Write;
        if !self.link.flush()? {
            return Ok(false);
        }
        while let Some(chunk) = self.pending.front_mut() {
            let bytes = &chunk.bytes()[self.written..];
            match self.link.write(bytes) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.handle
                        .counters()
                        .bytes_out
                        .fetch_add(n as u64, Ordering::Relaxed);
                    self.last_active = Instant::now();
                    let whole = n == bytes.len();
                    if let Chunk::Queued { bytes, overhead } = chunk {
                        let done = if whole { *overhead } else { 0 };
                        self.handle.outbox().release(n + done);
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
        Ok(!self.link.has_unsent())
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
                self.handle.outbox().release(bytes.len() - done + overhead);
            }
        }
    }
}
