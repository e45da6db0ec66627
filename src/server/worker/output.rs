//! What goes out of a worker: its own writes, the outbox, and chat's back-pressure (holding
//! a sender while its recipients catch up).

use std::sync::Arc;
use std::time::Instant;

use crate::server::protocol::{LineEnding, Message};
use crate::server::session::outbox::Chunk;
use crate::server::session::{CloseReason, SessionHandle};
use crate::server::worker::session::{Phase, Session};
use crate::units::Millis;

use super::{LOG, Worker, write_some};

impl Worker {
    /// Stops reading session `t` while any of `pressed` — recipients its relayed lines left
    /// above their soft mark — still is; each will nudge this worker when it is not.
    pub(super) fn hold(&mut self, t: usize, pressed: Vec<Arc<SessionHandle>>) {
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
    pub(super) fn resume(&mut self, t: usize) {
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
    pub(super) fn replay_deferred(&mut self, t: usize, all: bool) {
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
    pub(super) fn send_own(&mut self, t: usize, bytes: &[u8]) {
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
        match write_some(&mut session.link, bytes) {
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

    pub(super) fn on_writable(&mut self, t: usize) {
        let Some(session) = self.sessions.get_mut(t) else {
            return;
        };
        match session.flush() {
            Ok(true) => match session.phase {
                Phase::Open => {
                    let read_more = session.read_more;
                    // The socket caught up: a faulted session takes more from its outbox,
                    // and lets out what its faults hold that is due.
                    if session.fault.is_some() {
                        self.fault_step(t);
                    }
                    if read_more {
                        self.read_open(t);
                    }
                }
                Phase::Flushing { reason, .. } => self.shut_write(t, reason),
                _ => {}
            },
            Ok(false) => {}
            Err(e) => self.fail(t, &e),
        }
    }

    pub(super) fn deliver_posted(&mut self) {
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

    /// Moves session `t`'s queued messages into its pending writes (or, for a faulted
    /// session, into its faults), writes what the socket takes, and acts on a close request.
    pub(super) fn service_outbox(&mut self, t: usize) {
        let session = &mut self.sessions[t];
        if session.phase != Phase::Open || session.header_deadline.is_some() {
            return;
        }
        if session.fault.is_some() {
            return match self.feed_faults(t) {
                Some(reason) => self.close_requested(t, reason),
                None => self.fault_step(t),
            };
        }
        let mut entries = std::mem::take(&mut self.entries);
        let close = session.handle.outbox().take(&mut entries, None);
        let queued = entries.len() as u64;
        session.enqueue(entries.drain(..));
        self.entries = entries;
        self.took_from_outbox(t, queued);
        if let Some(reason) = close {
            self.close_requested(t, reason);
        } else if queued > 0 {
            self.on_writable(t);
        }
    }

    /// Counts the `queued` messages taken from session `t`'s outbox as sent, and remembers
    /// the session for [`check_pressed`](Self::check_pressed) while its outbox is above the
    /// soft mark.
    pub(super) fn took_from_outbox(&mut self, t: usize, queued: u64) {
        let handle = &self.sessions[t].handle;
        handle
            .counters()
            .messages_out
            .fetch_add(queued, std::sync::atomic::Ordering::Relaxed);
        if handle.outbox().pressed_since().is_some() && !self.pressed.contains(&t) {
            self.pressed.push(t);
        }
    }

    /// Someone asked for session `t` to end (a kick, an overflow, the shutdown).
    pub(super) fn close_requested(&mut self, t: usize, reason: CloseReason) {
        let session = &self.sessions[t];
        if reason == CloseReason::Overflow {
            log::warn!(
                target: LOG,
                "session {} dropped: peer={} reason=outbox-overflow queued_bytes={} limit={}",
                session.handle.id(),
                session.handle.peer(),
                session.handle.queued_bytes(),
                self.shared.config.outbox_limit
            );
        }
        self.begin_close(t, reason);
    }

    /// Drops the recipients that stayed above their outbox's soft mark for longer than the
    /// grace; forgets those that caught up.
    pub(super) fn check_pressed(&mut self, now: Instant) {
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
                target: LOG,
                "session {} dropped: peer={} reason=outbox-overflow queued_bytes={} limit={} behind_for_ms={}",
                handle.id(),
                handle.peer(),
                handle.queued_bytes(),
                self.shared.config.outbox_limit,
                Millis(now.saturating_duration_since(since))
            );
            self.begin_close(t, CloseReason::Overflow);
            false
        });
        pressed.append(&mut self.pressed);
        pressed.sort_unstable();
        pressed.dedup();
        self.pressed = pressed;
    }

    /// Reads session `t` again if it stopped for back-pressure that is now gone.
    pub(super) fn read_on(&mut self, t: usize) {
        if let Some(session) = self.sessions.get(t)
            && session.phase == Phase::Open
            && session.read_more
            && !session.paused()
        {
            self.read_open(t);
        }
    }

    /// Frees whatever is still queued for `session`, letting go of senders waiting on it.
    pub(super) fn release_outbox(&mut self, session: &Session) {
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
}
