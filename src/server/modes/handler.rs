//! The [`Handler`] trait every mode implements, and the [`Context`] a worker hands it with
//! each message.
//!
//! A worker cuts each read into messages (see [`protocol`](crate::server::protocol)) and hands every
//! message to the server's handler with a [`Context`]: the session it came from, the registry,
//! and a reply buffer that goes back to that session as one write once the read is handled.
//! Messages for other sessions go through their outboxes ([`Registry::broadcast`],
//! [`Registry::send_line`]), never through their sockets. `quit` never reaches a handler: the
//! worker ends the session itself.

use std::fmt;
use std::sync::Arc;

use crate::server::protocol::{LineEnding, Message};
use crate::server::session::registry::Registry;
use crate::server::session::{CloseReason, SessionHandle, SessionId, Speech};

/// The reply logic of a server. One handler serves every session, from every worker thread
/// at once; per-session state belongs in the [`SessionHandle`] or behind the handler's own
/// lock.
///
/// A handler that panics ends the session it was handling (logged as an error); the worker
/// and every other session go on.
///
/// # Examples
///
/// An upper-casing server (`examples/upper.rs` is the runnable version):
///
/// ```
/// use tcpool::server::{Context, Handler, Message};
///
/// struct Upper;
///
/// impl Handler for Upper {
///     fn on_message(&self, ctx: &mut Context<'_>, message: Message<'_>) {
///         let text = String::from_utf8_lossy(message.text).to_uppercase();
///         ctx.send_line(&text);
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Whether a partial line waits for its end (`true`, the default) or is handed on at once
    /// as an incomplete [`Message`] (echo).
    fn holds_partial_lines(&self) -> bool {
        true
    }

    /// The line ending for a session that has not spoken yet: none (the seed's way), or `\n`
    /// where the server speaks first in lines (chat's notices and its `quit`).
    fn silent_ending(&self) -> LineEnding {
        LineEnding::None
    }

    /// A session was adopted by a worker. Replies sent here greet the peer.
    fn on_open(&self, _ctx: &mut Context<'_>) {}

    /// The peer sent `message`.
    fn on_message(&self, ctx: &mut Context<'_>, message: Message<'_>);

    /// The session has ended; replies sent here are discarded.
    fn on_close(&self, _ctx: &mut Context<'_>) {}
}

/// What a handler may do while handling one session's message.
pub struct Context<'a> {
    session: &'a Arc<SessionHandle>,
    registry: &'a Registry,
    reply: &'a mut Vec<u8>,
    /// The read being handled. While `reply` is empty, the reply so far is its first
    /// `echoed` bytes: replies that are a run of the read's own bytes are not copied.
    input: &'a [u8],
    echoed: usize,
    replies: u64,
    close: Option<CloseReason>,
    shutting_down: bool,
    /// Recipients left above their outbox's soft mark by what this session relayed.
    pressed: Vec<Arc<SessionHandle>>,
    /// What a session that has not spoken yet is answered with ([`Handler::silent_ending`]).
    silent_ending: LineEnding,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("session", &self.session.id())
            .field("reply_len", &self.reply.len())
            .finish()
    }
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        session: &'a Arc<SessionHandle>,
        registry: &'a Registry,
        reply: &'a mut Vec<u8>,
        input: &'a [u8],
        shutting_down: bool,
    ) -> Self {
        Context {
            session,
            registry,
            reply,
            input,
            echoed: 0,
            replies: 0,
            close: None,
            shutting_down,
            pressed: Vec::new(),
            silent_ending: LineEnding::None,
        }
    }

    pub(crate) fn with_silent_ending(mut self, ending: LineEnding) -> Self {
        self.silent_ending = ending;
        self
    }

    /// The session being handled.
    pub fn session(&self) -> &Arc<SessionHandle> {
        self.session
    }

    /// Its id.
    pub fn id(&self) -> SessionId {
        self.session.id()
    }

    /// The line ending this session is answered with: its own, or before it has spoken the
    /// handler's [`Handler::silent_ending`].
    pub fn line_ending(&self) -> LineEnding {
        match self.session.speech() {
            Speech::Silent => self.silent_ending,
            Speech::Spoken(ending) => ending,
        }
    }

    /// Every session, for relaying and lookups.
    pub fn registry(&self) -> &Registry {
        self.registry
    }

    /// Whether the server is shutting down (skip notices nobody will read).
    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Sends exactly `bytes` back to this session as a message.
    pub fn send(&mut self, bytes: &[u8]) {
        self.push(bytes);
        self.replies += 1;
    }

    /// Sends `bytes` back without counting a message: part of a line still being received.
    pub fn send_partial(&mut self, bytes: &[u8]) {
        self.push(bytes);
    }

    /// Sends `text` back followed by the session's own line ending.
    pub fn send_line(&mut self, text: &str) {
        self.push(text.as_bytes());
        self.push(self.line_ending().as_bytes());
        self.replies += 1;
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.reply.is_empty() {
            let unsent = &self.input[self.echoed..];
            // The same address and no longer than the rest: `bytes` is the read's next run.
            if bytes.as_ptr() == unsent.as_ptr() && bytes.len() <= unsent.len() {
                self.echoed += bytes.len();
                return;
            }
            self.reply.extend_from_slice(&self.input[..self.echoed]);
            self.echoed = 0;
        }
        self.reply.extend_from_slice(bytes);
    }

    /// Relays `text` to every other session `to` picks, each in its own line ending (`\n`
    /// for one that has not spoken yet), with back-pressure: when a recipient falls behind
    /// (its outbox is above half the limit), this session is not read again until that
    /// recipient catches up, is dropped, or leaves. Returns how many sessions took the line.
    pub fn relay_line(&mut self, text: &str, to: impl Fn(&SessionHandle) -> bool) -> usize {
        let me = self.session.id();
        self.registry.relay_line(
            text.as_bytes(),
            |h| h.id() != me && to(h),
            &mut self.pressed,
        )
    }

    /// Whether a recipient of this session's relayed lines is behind: the worker handles the
    /// rest of this read's messages once it has caught up.
    pub fn pressed(&self) -> bool {
        !self.pressed.is_empty()
    }

    pub(crate) fn take_pressed(&mut self) -> Vec<Arc<SessionHandle>> {
        std::mem::take(&mut self.pressed)
    }

    /// Ends this session after the replies: they are flushed, then `quit` is sent.
    pub fn close(&mut self) {
        self.close = Some(CloseReason::Kicked);
    }

    pub(crate) fn reply_len(&self) -> usize {
        if self.reply.is_empty() {
            self.echoed
        } else {
            self.reply.len()
        }
    }

    /// Whether the reply so far is the read's own first [`reply_len`](Self::reply_len) bytes,
    /// left in the read buffer, rather than what the reply buffer holds.
    pub(crate) fn reply_is_input(&self) -> bool {
        self.reply.is_empty()
    }

    pub(crate) fn replies(&self) -> u64 {
        self.replies
    }

    pub(crate) fn close_requested(&self) -> Option<CloseReason> {
        self.close
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` with a context over `input`; returns the reply as the worker would send it
    /// and whether it came straight from the input.
    fn reply(input: &[u8], f: impl FnOnce(&mut Context<'_>)) -> (Vec<u8>, bool) {
        let session = Arc::new(SessionHandle::new(
            SessionId(1),
            "127.0.0.1:1".parse().unwrap(),
            1024,
        ));
        let registry = Registry::new(1024);
        let mut buffer = Vec::new();
        let mut ctx = Context::new(&session, &registry, &mut buffer, input, false);
        f(&mut ctx);
        let (len, from_input) = (ctx.reply_len(), ctx.reply_is_input());
        let bytes = if from_input {
            &input[..len]
        } else {
            &buffer[..len]
        };
        (bytes.to_vec(), from_input)
    }

    #[test]
    fn runs_of_the_input_are_not_copied() {
        let input = b"one\ntwo\nthr";
        let got = reply(input, |ctx| {
            ctx.send(&input[..4]);
            ctx.send(&input[4..8]);
            ctx.send_partial(&input[8..]);
        });
        assert_eq!(got, (input.to_vec(), true));
    }

    #[test]
    fn anything_else_is_composed_in_order() {
        let input = b"one\ntwo\n";
        // Out of order: the echoed run so far is copied first.
        let got = reply(input, |ctx| {
            ctx.send(&input[..4]);
            ctx.send(&input[..4]);
        });
        assert_eq!(got, (b"one\none\n".to_vec(), false));
        // A line after an echoed run keeps the run before it.
        let got = reply(input, |ctx| {
            ctx.send(&input[..4]);
            ctx.send_line("two");
        });
        assert_eq!(got, (b"one\ntwo".to_vec(), false));
        // A copy of the input's bytes from elsewhere is composed, not mistaken for the input.
        let copy = input.to_vec();
        let got = reply(input, |ctx| ctx.send(&copy[4..]));
        assert_eq!(got, (b"two\n".to_vec(), false));
    }
}
