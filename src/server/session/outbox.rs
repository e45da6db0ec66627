//! A session's outbox: the messages other threads queue for it, what they cost, and the
//! back-pressure signal between the threads that fill it and the worker that drains it.
//!
//! Anyone may queue (a chat sender's worker, the console, shutdown); only the session's own
//! worker takes the queue and writes it to the socket. Every queued byte is charged against
//! `--outbox-limit` until it reaches the socket:
//!
//! - For a line-based (or silent) session, messages are appended to one buffer and charged
//!   their bytes: they go out in as few writes as the socket takes.
//! - For a seed-style session, each message stays a write of its own and is charged its bytes
//!   plus [`MESSAGE_OVERHEAD`] for its allocation and bookkeeping.
//!
//! Above the *soft mark* (half the limit) the outbox is *pressed*: a sender that queued a
//! message into it is told so, and its worker stops reading that sender and registers it
//! here as a waiter ([`Outbox::hold`]). When the outbox drains to the soft mark or stops
//! taking messages (it is closing), the waiters' workers are nudged to read them again. How
//! long the outbox has been pressed is kept, so its own worker can drop a reader that stays
//! pressed past the grace; reaching the limit itself drops it at once.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;

use super::terms::{CloseReason, SendError, SessionId};

/// What a seed-style message costs beyond its bytes: its allocation and its queue slot.
pub const MESSAGE_OVERHEAD: usize = 64;

/// A worker's doorbell: the sessions that have something queued or a close request, and the
/// way to wake the worker's poller.
pub(crate) struct Mailbox {
    posted: Mutex<Vec<(usize, SessionId)>>,
    waker: mio::Waker,
}

impl Mailbox {
    pub(crate) fn new(waker: mio::Waker) -> Self {
        Mailbox {
            posted: Mutex::new(Vec::new()),
            waker,
        }
    }

    /// Tells the worker that session `id` (its slot `token`) wants attention.
    fn post(&self, token: usize, id: SessionId) {
        let first = {
            let mut posted = self.posted.lock();
            posted.push((token, id));
            posted.len() == 1
        };
        if first {
            self.wake();
        }
    }

    /// Wakes the worker's poller. Failing to wake (never seen in practice) is logged.
    pub(crate) fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            log::error!("worker wake-up failed: error={e}");
        }
    }

    /// Moves everything posted so far into `into`.
    pub(crate) fn take(&self, into: &mut Vec<(usize, SessionId)>) {
        std::mem::swap(&mut *self.posted.lock(), into);
        let mut posted = self.posted.lock();
        if posted.capacity() > 1024 && posted.is_empty() {
            posted.shrink_to(64);
        }
    }
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("posted", &self.posted.lock().len())
            .finish()
    }
}

/// One queued write: a run of lines for a line-based session, or one seed-style message.
#[derive(Debug)]
pub(crate) enum Entry {
    /// Messages appended one after another; written in as few writes as the socket takes.
    Lines(Vec<u8>),
    /// One message, written by a write of its own.
    Message(Vec<u8>),
}

impl Entry {
    /// What the entry is charged against the limit.
    pub(crate) fn cost(&self) -> usize {
        match self {
            Entry::Lines(bytes) => bytes.len(),
            Entry::Message(bytes) => bytes.len() + MESSAGE_OVERHEAD,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    entries: VecDeque<Entry>,
    /// The worker that adopted the session, and the session's slot there; `None` while the
    /// session waits in the backlog (the adopting worker looks at the outbox anyway).
    owner: Option<(Arc<Mailbox>, usize)>,
    /// The session was already posted to its worker and the worker has not looked yet.
    posted: bool,
    /// Set when someone asked the worker to end the session; no message is queued after it.
    close: Option<CloseReason>,
    /// Since when the charge has been above the soft mark.
    pressed_since: Option<Instant>,
    /// Senders whose reading stopped because this outbox was pressed.
    waiters: Vec<Weak<dyn Nudge>>,
}

/// The queue of messages for one session; see the module documentation.
#[derive(Debug)]
pub(crate) struct Outbox {
    id: SessionId,
    state: Mutex<State>,
    /// What is queued and not yet written, in the outbox or already taken by the worker.
    charged: AtomicUsize,
    limit: usize,
}

/// A run of lines grows by a quarter of its size at a time beyond what it needs, at least 64
/// bytes and at most this much, so its slack stays small next to the limit.
pub(crate) const MAX_SLACK: usize = 64 * 1024;

/// Appends `parts` to `buf`, growing it by a quarter at most rather than doubling it.
pub(crate) fn append(buf: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if buf.capacity() - buf.len() < len {
        let slack = (buf.len() / 4).clamp(64, MAX_SLACK);
        buf.reserve_exact(len.saturating_add(slack));
    }
    for part in parts {
        buf.extend_from_slice(part);
    }
}

impl Outbox {
    pub(crate) fn new(id: SessionId, limit: usize) -> Self {
        Outbox {
            id,
            state: Mutex::new(State::default()),
            charged: AtomicUsize::new(0),
            limit,
        }
    }

    /// What is charged now.
    pub(crate) fn charged(&self) -> usize {
        self.charged.load(Ordering::Relaxed)
    }

    /// Above this charge the outbox presses its senders.
    pub(crate) fn soft_mark(&self) -> usize {
        self.limit / 2
    }

    /// Whether the session takes no more messages.
    pub(crate) fn is_closing(&self) -> bool {
        self.state.lock().close.is_some()
    }

    /// Whether messages wait in the queue (not yet taken by the worker).
    pub(crate) fn has_queued(&self) -> bool {
        !self.state.lock().entries.is_empty()
    }

    /// Since when the outbox has been pressed, if it is.
    pub(crate) fn pressed_since(&self) -> Option<Instant> {
        self.state.lock().pressed_since
    }

    /// Queues one message made of `parts`, a write of its own when `framed`. Returns whether
    /// the outbox is pressed now.
    ///
    /// # Errors
    ///
    /// [`SendError::Closing`] when the session is ending; [`SendError::Overflow`] when the
    /// message would take a non-empty queue past the limit — the session is then dropped.
    pub(crate) fn push(&self, parts: &[&[u8]], framed: bool) -> Result<bool, SendError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let cost = len + if framed { MESSAGE_OVERHEAD } else { 0 };
        let mut state = self.state.lock();
        if state.close.is_some() {
            return Err(SendError::Closing);
        }
        // An empty outbox always takes one message, so a reader that keeps up is never
        // dropped, whatever the limit and the message size.
        let before = self.charged();
        if before > 0 && before.saturating_add(cost) > self.limit {
            state.close = Some(CloseReason::Overflow);
            self.post(&mut state);
            return Err(SendError::Overflow);
        }
        if framed {
            let mut message = Vec::with_capacity(len);
            parts.iter().for_each(|p| message.extend_from_slice(p));
            state.entries.push_back(Entry::Message(message));
        } else {
            match state.entries.back_mut() {
                Some(Entry::Lines(buf)) => append(buf, parts),
                _ => {
                    let mut buf = Vec::new();
                    append(&mut buf, parts);
                    state.entries.push_back(Entry::Lines(buf));
                }
            }
        }
        // Added, not stored: the worker releases what it writes without taking the lock.
        let after = self.charged.fetch_add(cost, Ordering::Relaxed) + cost;
        let pressed = after > self.soft_mark();
        if pressed && state.pressed_since.is_none() {
            state.pressed_since = Some(Instant::now());
        }
        self.post(&mut state);
        Ok(pressed)
    }

    /// Asks the worker to end the session. Returns `false` if it was already ending.
    pub(crate) fn request_close(&self, reason: CloseReason) -> bool {
        let mut state = self.state.lock();
        if state.close.is_some() {
            return false;
        }
        state.close = Some(reason);
        self.post(&mut state);
        true
    }

    /// Asks the worker to look at the session (a sender it stopped may be read again).
    pub(crate) fn nudge(&self) {
        self.post(&mut self.state.lock());
    }

    /// Called with the state locked: posts the session to its worker unless already posted.
    fn post(&self, state: &mut State) {
        if state.posted {
            return;
        }
        if let Some((mailbox, token)) = &state.owner {
            state.posted = true;
            mailbox.post(*token, self.id);
        }
    }

    /// Worker side: the session now lives in `mailbox`'s worker at slot `token`.
    pub(crate) fn adopt(&self, mailbox: Arc<Mailbox>, token: usize) {
        self.state.lock().owner = Some((mailbox, token));
    }

    /// Worker side: moves the queued entries into `into` (still charged until written) and
    /// returns the close request pending, if any. With `seal`, the outbox takes nothing more
    /// from now on, and the senders waiting on it are let go.
    pub(crate) fn take(
        &self,
        into: &mut Vec<Entry>,
        seal: Option<CloseReason>,
    ) -> Option<CloseReason> {
        let (requested, waiters) = {
            let mut state = self.state.lock();
            state.posted = false;
            into.extend(state.entries.drain(..));
            if state.entries.capacity() > 16 {
                state.entries.shrink_to(4);
            }
            let requested = state.close;
            let mut waiters = Vec::new();
            if let Some(reason) = seal {
                state.close.get_or_insert(reason);
                waiters = std::mem::take(&mut state.waiters);
            }
            (requested, waiters)
        };
        wake(waiters);
        requested
    }

    /// Worker side: `n` charged bytes reached the socket or were discarded. Draining to the
    /// soft mark lets the waiting senders go.
    pub(crate) fn release(&self, n: usize) {
        let before = self.charged.fetch_sub(n, Ordering::Relaxed);
        let soft = self.soft_mark();
        if before > soft && before - n <= soft {
            let waiters = {
                let mut state = self.state.lock();
                // Checked again under the lock: a push may have pressed it meanwhile.
                if self.charged() > soft {
                    return;
                }
                state.pressed_since = None;
                std::mem::take(&mut state.waiters)
            };
            wake(waiters);
        }
    }

    /// Sender side: registers `sender` to be nudged when this outbox stops pressing. Returns
    /// `false` (registering nothing) when it no longer presses: the sender may go on.
    pub(crate) fn hold<S: Nudge + 'static>(&self, sender: &Arc<S>) -> bool {
        let mut state = self.state.lock();
        if state.close.is_some() || self.charged() <= self.soft_mark() {
            return false;
        }
        let me = Arc::downgrade(sender);
        let me: Weak<dyn Nudge> = me;
        state.waiters.retain(|w| w.strong_count() > 0);
        if !state.waiters.iter().any(|w| w.ptr_eq(&me)) {
            state.waiters.push(me);
        }
        true
    }
}

/// A sender held back by a pressed outbox: nudged when it may send again. The outbox knows
/// its senders by this alone ([`SessionHandle`](super::SessionHandle) is the one there is).
pub(crate) trait Nudge: Send + Sync {
    /// Asks the sender's worker to look at it again.
    fn nudge(&self);
}

/// Nudges every sender still alive in `waiters`.
fn wake(waiters: Vec<Weak<dyn Nudge>>) {
    for waiter in waiters {
        if let Some(sender) = waiter.upgrade() {
            sender.nudge();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(limit: usize) -> Outbox {
        Outbox::new(SessionId(1), limit)
    }

    #[test]
    fn lines_share_one_buffer_and_are_charged_their_bytes() {
        let o = outbox(1000);
        assert_eq!(o.push(&[b"<#2> hi", b"\n"], false), Ok(false));
        assert_eq!(o.push(&[b"<#3> yo", b"\n"], false), Ok(false));
        assert_eq!(o.charged(), 16);
        let mut taken = Vec::new();
        assert_eq!(o.take(&mut taken, None), None);
        assert_eq!(taken.len(), 1);
        assert!(matches!(&taken[0], Entry::Lines(b) if b == b"<#2> hi\n<#3> yo\n"));
        // Still charged until the worker has written it.
        assert_eq!(o.charged(), 16);
        o.release(16);
        assert_eq!(o.charged(), 0);
    }

    #[test]
    fn framed_messages_stay_apart_and_pay_their_overhead() {
        let o = outbox(1000);
        o.push(&[b"a"], true).unwrap();
        o.push(&[b"b"], true).unwrap();
        assert_eq!(o.charged(), 2 * (1 + MESSAGE_OVERHEAD));
        let mut taken = Vec::new();
        o.take(&mut taken, None);
        assert_eq!(taken.len(), 2);
    }

    #[test]
    fn the_soft_mark_presses_and_the_limit_drops() {
        let o = outbox(100);
        assert_eq!(o.push(&[&[b'x'; 50]], false), Ok(false));
        assert!(o.pressed_since().is_none());
        assert_eq!(o.push(&[b"y"], false), Ok(true));
        assert!(o.pressed_since().is_some());
        assert_eq!(o.push(&[&[b'z'; 50]], false), Err(SendError::Overflow));
        assert!(o.is_closing());
        assert_eq!(o.push(&[b"1"], false), Err(SendError::Closing));
    }

    #[test]
    fn an_empty_outbox_takes_any_message() {
        let o = outbox(10);
        assert_eq!(o.push(&[&[b'x'; 50]], false), Ok(true));
        assert_eq!(o.push(&[b"y"], false), Err(SendError::Overflow));
    }

    #[test]
    fn draining_to_the_soft_mark_ends_the_pressure() {
        let o = outbox(100);
        o.push(&[&[b'x'; 80]], false).unwrap();
        o.release(20);
        assert!(o.pressed_since().is_some());
        o.release(10);
        assert!(o.pressed_since().is_none());
    }

    #[test]
    fn appending_grows_by_little_more_than_needed() {
        let mut buf = Vec::new();
        for _ in 0..100_000 {
            append(&mut buf, &[b"0123456789"]);
        }
        assert_eq!(buf.len(), 1_000_000);
        assert!(buf.capacity() <= buf.len() + MAX_SLACK + 10);
    }
}
