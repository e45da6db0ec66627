//! What a worker does with what comes in: reading a session, cutting the input into
//! messages, letting the handler answer, and the end of input.

use std::io::{self, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::server::modes::Context;
use crate::server::protocol::{Flow, Message, escape};
use crate::server::session::{CloseReason, Speech};
use crate::server::worker::session::Phase;

use super::{LOG, READ_BUDGET, Worker, panic_text};

impl Worker {
    pub(super) fn on_readable(&mut self, t: usize) {
        let Some(session) = self.sessions.get(t) else {
            return;
        };
        match session.phase {
            Phase::Open => self.read_open(t),
            Phase::Flushing { .. } | Phase::Draining { .. } => self.drain_input(t),
        }
    }

    pub(super) fn read_open(&mut self, t: usize) {
        if self
            .sessions
            .get(t)
            .is_some_and(|s| s.header_deadline.is_some())
        {
            return self.read_header(t);
        }
        if self
            .sessions
            .get(t)
            .is_some_and(|s| s.handshake_deadline.is_some())
        {
            return self.shake(t);
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
            match session.link.read(&mut self.buf) {
                Ok(0) => return self.on_eof(t),
                Ok(n) => {
                    session.last_active = self.now;
                    // A short read emptied the socket: the poller reports the next arrival
                    // (edge-triggered readiness fires on every one), so reading again now
                    // would only hear `WouldBlock`. The end of input is the exception.
                    // With TLS, rustls may hold more than one read brought out.
                    let drained = n < self.buf.len()
                        && !session.read_closed
                        && session.link.short_read_drains();
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
                target: LOG,
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
                    target: LOG,
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
    pub(super) fn call_handler(
        &mut self,
        t: usize,
        f: impl FnOnce(&dyn crate::server::modes::Handler, &mut Context<'_>),
    ) {
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
                    target: LOG,
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
}
