//! [`SessionHandle`]: the part of a connected client every thread may touch.
//!
//! It is shared through the [`Registry`](crate::server::Registry): identity, counters,
//! the line ending the peer speaks, and the bounded outbox through which the console, the chat
//! relay and shutdown talk to the session. Whoever queues a message posts the session to its
//! worker's mailbox; only the worker writes to the socket. The worker's own part of a session
//! lives with the worker.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::outbox::{Mailbox, Nudge, Outbox};
use super::terms::{CloseReason, Counters, SendError, SessionId, Traffic};
use crate::server::protocol::LineEnding;

/// The shared part of a session, held by the registry and by the session's worker.
pub struct SessionHandle {
    id: SessionId,
    peer: SocketAddr,
    /// The original client a PROXY header named, set once before the session opens.
    origin: std::sync::OnceLock<SocketAddr>,
    /// What its TLS handshake agreed (version, suite, resumed), set once it is done.
    tls: std::sync::OnceLock<String>,
    /// The name in its verified client certificate (mutual TLS), set with `tls`.
    identity: std::sync::OnceLock<String>,
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
            tls: std::sync::OnceLock::new(),
            identity: std::sync::OnceLock::new(),
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

    /// What its TLS handshake agreed, such as `TLSv1_3 TLS13_AES_256_GCM_SHA384 resumed`;
    /// `None` without TLS, or while the handshake goes on.
    pub fn tls(&self) -> Option<&str> {
        self.tls.get().map(String::as_str)
    }

    /// Records what the TLS handshake agreed (only the first call counts).
    pub(crate) fn set_tls(&self, agreed: String) {
        let _ = self.tls.set(agreed);
    }

    /// The name in the client certificate its TLS handshake verified (mutual TLS): who the
    /// peer is, as a CA vouched. In chat it is the member's name, which nobody else takes.
    pub fn identity(&self) -> Option<&str> {
        self.identity.get().map(String::as_str)
    }

    /// Records the verified client certificate's name (only the first call counts).
    pub(crate) fn set_identity(&self, name: String) {
        let _ = self.identity.set(name);
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
    /// limit: the bytes, plus [`MESSAGE_OVERHEAD`](super::outbox::MESSAGE_OVERHEAD) per message for a seed-style peer.
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

impl Nudge for SessionHandle {
    fn nudge(&self) {
        SessionHandle::nudge(self);
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
