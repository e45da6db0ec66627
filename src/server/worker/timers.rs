//! A worker's timer queue: the deadlines of its faulted sessions, nearest first.
//!
//! The worker's poller sleeps until the nearest deadline ([`Timers::next`]) and then takes
//! what is due ([`Timers::pop_due`]). A deadline names the session's slot and id, so one left
//! behind by a session that has gone (or whose slot was reused) is recognised and skipped;
//! the session itself knows which of its deadlines is current. Nothing is queued for a session
//! with nothing due, so an idle worker sleeps.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::server::session::SessionId;

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, SessionId)>>,
}

impl Timers {
    /// Wakes the worker for session `id` in slot `token` at `at`.
    pub(crate) fn push(&mut self, at: Instant, token: usize, id: SessionId) {
        self.heap.push(Reverse((at, token, id)));
    }

    /// The nearest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next deadline at or before `now`: its slot, session and moment.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(usize, SessionId, Instant)> {
        if self.next()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((at, t, id))| (t, id, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deadlines_come_out_nearest_first_and_only_when_due() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut timers = Timers::default();
        assert_eq!(timers.next(), None);
        timers.push(t0 + ms(30), 3, SessionId(3));
        timers.push(t0 + ms(10), 1, SessionId(1));
        timers.push(t0 + ms(20), 2, SessionId(2));
        assert_eq!(timers.next(), Some(t0 + ms(10)));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(
            timers.pop_due(t0 + ms(25)),
            Some((1, SessionId(1), t0 + ms(10)))
        );
        assert_eq!(
            timers.pop_due(t0 + ms(25)),
            Some((2, SessionId(2), t0 + ms(20)))
        );
        assert_eq!(timers.pop_due(t0 + ms(25)), None);
        assert_eq!(timers.next(), Some(t0 + ms(30)));
    }
}
