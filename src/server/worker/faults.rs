//! The faults a worker's sessions drew, carried out: paced replies, resets, early closes,
//! the timers that drive them, and faults cleared while the server runs.

use std::time::{Duration, Instant};

use crate::server::faults::{End, Pacing};
use crate::server::session::CloseReason;
use crate::server::session::outbox::Entry;
use crate::server::worker::session::{Phase, Session};

use super::{LOG, Worker};

impl Worker {
    /// Moves what session `t`'s faults let out into its pending writes and writes it; acts
    /// on a `reset` or `close` that is due; queues the session's next deadline.
    pub(super) fn fault_step(&mut self, t: usize) {
        let Some(session) = self.sessions.get_mut(t) else {
            return;
        };
        if session.phase != Phase::Open {
            return;
        }
        if session.fault.is_none() {
            return;
        }
        if wants_outbox(session)
            && let Some(reason) = self.feed_faults(t)
        {
            return self.close_requested(t, reason);
        }
        let session = &mut self.sessions[t];
        let Some(pacing) = session.fault.as_deref_mut() else {
            return;
        };
        let now = Instant::now();
        match pacing.advance(now, &mut session.pending, self.turn) {
            Some(End::Reset) => return self.reset(t),
            Some(end @ (End::Close | End::Truncate)) => {
                session.truncate = end == End::Truncate;
                session.handle.outbox().release(pacing.charged());
                log::debug!(
                    target: LOG,
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
            return self.fail(t, &e);
        }
        // The turn's budget is spent with more due: the rest goes next turn, after the other
        // sessions, or when the socket takes more (`on_writable` steps the faults again).
        if session.pending.is_empty()
            && session.fault.as_deref().is_some_and(Pacing::budget_spent)
            && !self.stepping.contains(&t)
        {
            self.stepping.push(t);
        }
        // The socket kept up, but the outbox holds more than the faults took (it came while
        // they wrote): it is taken on the worker's next round (other sessions get their turn
        // first), as no writable event or new message may ever come to ask for it.
        if wants_outbox(session) {
            session.handle.nudge();
        }
    }

    /// Moves what session `t`'s outbox holds (chat lines, manual replies, notices) into its
    /// faults, as any reply of its own, while the socket keeps up. What is taken stays
    /// charged to the outbox until it is written, so a faulted reader is charged for what
    /// its faults hold back as any reader for what it has not read: its senders are pressed
    /// only past the soft mark, and a `latency` costs the room no throughput, only the bytes
    /// in flight. Returns the close request pending, if any.
    pub(super) fn feed_faults(&mut self, t: usize) -> Option<CloseReason> {
        let session = &mut self.sessions[t];
        if !session.pending.is_empty() {
            return None;
        }
        let pacing = session.fault.as_deref_mut()?;
        let outbox = session.handle.outbox();
        let mut entries = std::mem::take(&mut self.entries);
        let close = outbox.take(&mut entries, None);
        let now = Instant::now();
        let queued = entries.len() as u64;
        for entry in entries.drain(..) {
            // A run of lines is cut line by line even for a reader that never spoke, and
            // counts as its lines for `after=N`.
            let cost = entry.cost();
            let kept = match entry {
                Entry::Lines(run) => {
                    let lines = memchr::memchr_iter(b'\n', &run).count().max(1) as u64;
                    pacing.hold_replies(now, run, true, lines, true)
                }
                Entry::Message(message) => pacing.hold_replies(now, message, false, 1, true),
            };
            // What `truncate` cut and a message's overhead are not held: no longer charged.
            outbox.release(cost - kept);
        }
        self.entries = entries;
        self.took_from_outbox(t, queued);
        close
    }

    /// Ends session `t` with a reset (RST): what was let out is written if the socket
    /// takes it, then `SO_LINGER` 0 and close.
    fn reset(&mut self, t: usize) {
        let session = &mut self.sessions[t];
        let _ = session.flush();
        if let Some(pacing) = session.fault.take() {
            session.handle.outbox().release(pacing.charged());
            log::debug!(
                target: LOG,
                "session {} reset by fault: peer={} faults={}",
                session.handle.id(),
                session.handle.peer(),
                pacing.describe()
            );
        }
        if let Err(e) =
            socket2::SockRef::from(session.link.socket()).set_linger(Some(Duration::ZERO))
        {
            log::debug!(
                target: LOG,
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

    /// Steps the faults of the sessions whose last turn's budget ran out with more due.
    pub(super) fn step_again(&mut self) {
        let stepping = std::mem::take(&mut self.stepping);
        for &t in &stepping {
            if self.sessions.contains(t) {
                self.fault_step(t);
                self.read_on(t);
            }
        }
        let mut stepping = stepping;
        stepping.clear();
        if self.stepping.is_empty() {
            self.stepping = stepping;
        }
    }

    /// Handles the faulted sessions' deadlines that are due, and the clearing of faults.
    pub(super) fn fire_timers(&mut self) {
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
            // `tls-delay`'s hold is over: the handshake goes on.
            if session.handle.id() == id && session.handshake_deadline.is_some() {
                self.shake(t);
                continue;
            }
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
                // What waits in the outbox follows, the unfaulted way: nothing else would
                // take it while its senders are held by it.
                self.on_writable(t);
                if self.sessions.get(t).is_some_and(|s| s.phase == Phase::Open) {
                    self.service_outbox(t);
                }
            } else {
                self.fault_step(t);
            }
            self.read_on(t);
        }
    }
}

/// Whether a faulted session's faults would take what waits in its outbox now: while the
/// socket keeps up (nothing pending).
fn wants_outbox(session: &Session) -> bool {
    session.fault.is_some() && session.pending.is_empty() && session.handle.outbox().has_queued()
}
