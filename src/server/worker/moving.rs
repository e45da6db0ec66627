//! Moving sessions between workers, as the balance decides (`balance`).
//!
//! A session moves only while nothing of it is in flight inside its worker: open, nothing
//! pending to write, nothing left to read from the last event, no faults or timers, no PROXY
//! header awaited, no TLS handshake under way (its deadline is in its worker's list), not
//! held up by chat's back-pressure and nothing queued in its outbox. Its
//! worker takes it off its poller and out of its slab, and hands the whole [`Session`] to the
//! other worker, which registers it with its own poller (the kernel reports at once what
//! arrived in between), points its outbox at itself and looks at the outbox once, for what
//! was queued on the way. Bytes never wait inside a moving session: they wait in the socket.

use std::sync::Arc;
use std::time::Duration;

use mio::{Interest, Token};

use super::Worker;
use super::grouping::arrives_on;
use crate::server::session::CloseReason;
use crate::server::worker::balance::{Load, Meter, Step};
use crate::server::worker::session::{Phase, Session};

/// How often a worker no longer in use looks again for sessions it can hand on, while it
/// still has some (a session with faults stays where it is).
const EVACUATE_EVERY: Duration = Duration::from_millis(10);

impl Worker {
    /// Once per pass of the loop: adopts sessions handed over, reports a finished window,
    /// and hands sessions on as the balance asks. Costs a few atomic loads when nothing moves.
    pub(super) fn balance_pass(&mut self) {
        let balance = &self.shared.balance;
        if !balance.enabled() {
            return;
        }
        let mut arrived = std::mem::take(&mut self.arrived);
        balance.arrivals(self.index, &mut arrived);
        for session in arrived.drain(..) {
            self.settle(session);
        }
        self.arrived = arrived;
        if self.stopping.is_some() || self.shared.shutdown.is_triggered() {
            return;
        }
        let now = self.now;
        let meter = self.meter.get_or_insert_with(|| Meter::new(now));
        if let Some(report) = meter.sample(now) {
            self.loaded = matches!(report.load, Load::WantsHelp | Load::Unsure);
            let step = self.shared.balance.review(self.index, report, self.now);
            if step != Step::Stay {
                self.shared
                    .metrics
                    .set_workers_in_use(self.shared.balance.in_use());
            }
        }
        let in_use = self.shared.balance.in_use();
        if self.index >= in_use {
            if !self.sessions.is_empty() && self.next_evacuation <= self.now {
                self.next_evacuation = self.now + EVACUATE_EVERY;
                self.hand_on(usize::MAX, 0..in_use);
            }
        } else if let Some(to) = self.shared.balance.take_order(self.index) {
            // `to` is the newest of `to + 1` workers in use: it gets its share.
            let share = self.sessions.len() / (to + 1);
            self.hand_on(share, to..to + 1);
        } else {
            self.group_pass(in_use);
        }
    }

    /// Hands up to `count` movable sessions on to the workers in `to` (never to this one),
    /// `to.end` being the workers in use: each session whose packets last arrived on the CPU
    /// of one of them (see `grouping`) to that one, and those first; the rest in turn.
    fn hand_on(&mut self, count: usize, to: std::ops::Range<usize>) {
        let here = self.index;
        let ready: Vec<usize> = self
            .sessions
            .iter()
            .filter(|&(t, s)| self.movable(t, s))
            .map(|(t, _)| t)
            .collect();
        let mut movable = Vec::with_capacity(ready.len());
        for t in ready {
            let s = &mut self.sessions[t];
            s.arrives_on = arrives_on(s.link.socket());
            let home = s.arrives_on.map(|cpu| cpu % to.end);
            movable.push((t, home.filter(|w| to.contains(w) && *w != here)));
        }
        movable.sort_by_key(|&(_, home)| home.is_none());
        movable.truncate(count);
        let mut in_turn = to.filter(move |&w| w != here).cycle();
        let mut moved = 0;
        for (t, home) in movable {
            let Some(to) = home.or_else(|| in_turn.next()) else {
                return;
            };
            if !self.send_on(t, to) {
                break;
            }
            moved += 1;
        }
        if moved > 0 {
            log::debug!(
                target: super::LOG,
                "worker {} handed {moved} session(s) on; workers in use: {}",
                self.index,
                self.shared.balance.in_use()
            );
        }
    }

    /// Hands session `t` to worker `to`. False if that worker has stopped (the server is
    /// shutting down): the session stays here.
    pub(super) fn send_on(&mut self, t: usize, to: usize) -> bool {
        let mut session = Box::new(self.sessions.remove(t));
        let _ = self.poll.registry().deregister(session.link.socket_mut());
        match self.shared.balance.send(to, session) {
            Ok(()) => {
                self.shared.metrics.worker(self.index).moved_out();
                true
            }
            Err(session) => {
                self.settle_here(*session, false);
                false
            }
        }
    }

    /// Whether session `t` can move now (see the module documentation).
    pub(super) fn movable(&self, t: usize, s: &Session) -> bool {
        s.phase == Phase::Open
            && s.header_deadline.is_none()
            && s.handshake_deadline.is_none()
            && s.fault.is_none()
            && s.pending.is_empty()
            && !s.read_more
            && !s.read_closed
            && s.held_by.is_empty()
            && s.deferred.is_empty()
            && s.handle.queued_bytes() == 0
            && !self.again.contains(&t)
            && !self.pressed.contains(&t)
    }

    /// Adopts a session another worker handed over.
    fn settle(&mut self, session: Session) {
        self.settle_here(session, true);
    }

    /// Registers `session` with this worker's poller and looks at its outbox; `arrived`: it
    /// came from another worker (rather than coming back from a failed hand-over).
    fn settle_here(&mut self, mut session: Session, arrived: bool) {
        let entry = self.sessions.vacant_entry();
        let t = entry.key();
        let registered = self.poll.registry().register(
            session.link.socket_mut(),
            Token(t),
            Interest::READABLE | Interest::WRITABLE,
        );
        session.handle.adopt(Arc::clone(&self.mailbox), t);
        let id = session.handle.id();
        entry.insert(session);
        if arrived {
            self.shared.metrics.worker(self.index).moved_in();
        }
        if let Err(e) = registered {
            log::warn!(target: super::LOG, "session {id} dropped while moving: error={e}");
            return self.remove(t);
        }
        if self.stopping.is_some() {
            return self.begin_close(t, CloseReason::Shutdown);
        }
        self.service_outbox(t);
        self.resume(t);
    }

    /// The worker is about to return: true once no session can be handed to it any more.
    pub(super) fn may_stop(&mut self) -> bool {
        !self.shared.balance.enabled() || self.shared.balance.close_dock(self.index)
    }
}
