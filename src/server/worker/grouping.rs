//! Keeping each client thread's sessions on one worker, while two or more are in use
//! (`--balance auto`).
//!
//! A client thread whose connections are split over two workers waits, now and then, for
//! whichever of them is off its CPU; one whose connections are all on one worker waits for
//! that one only (against two client threads on 2 cores: a p99 of 0.5–4 ms rather than 8).
//! A server cannot see its clients' threads, but the kernel tells, for each socket, the CPU
//! its packets last arrived on (`SO_INCOMING_CPU`): on one machine, the CPU of the thread
//! that sent them. So a worker in use and not spare (its last windows were not all light),
//! every [`GROUP_EVERY`] on its own passes, reads that CPU for each session that could move,
//! and counts how many belong with each other worker (worker `cpu % in use`): those whose
//! packets came from the same CPU at its last look too. It hands them on in exchange only:
//! to worker `k`, no more than `k` counted as belonging here at its own last look, plus half
//! the difference if this worker holds more sessions than `k`. Sessions are swapped, never
//! piled on one worker, so a client whose packets all arrive on one CPU (one NIC queue)
//! leaves them evenly spread. And only a worker whose sessions' packets come from the CPUs
//! of two or more workers hands any on: one whose all come from one CPU is as grouped as it
//! can be, whichever CPU that is. Without this, a lone client thread that the kernel moves
//! from CPU to CPU (or two that trade CPUs) had every session swapped at each of its moves.
//!
//! A load that just started is the one most split: new connections are placed in turn, and
//! a spreading hands sessions on by share. So a new connection's first look is taken as it
//! is adopted (the CPU it connected from: usually that of the thread that goes on sending on
//! it), and after new connections, or a change of the workers in use, the next
//! [`QUICK_LOOKS`] looks come every [`GROUP_SOON`]: a swap takes two looks by each of two
//! workers, a second or more at [`GROUP_EVERY`].

use std::time::Duration;

use super::Worker;
use crate::server::session::SessionId;

/// How often a worker in use looks at where its sessions' packets arrive.
pub(super) const GROUP_EVERY: Duration = Duration::from_millis(250);

/// How soon one look follows another just after new connections or a change of the workers
/// in use, and for how many looks.
const GROUP_SOON: Duration = Duration::from_millis(50);
const QUICK_LOOKS: u8 = 4;

impl Worker {
    /// Once per pass of a worker in use while the balance is on: every [`GROUP_EVERY`], swaps
    /// sessions with the other workers in use so that those whose packets arrive on one CPU
    /// share a worker.
    pub(super) fn group_pass(&mut self, in_use: usize) {
        // A change of the workers in use hands sessions on by share, not by CPU: look soon.
        if in_use != self.grouped_for {
            self.grouped_for = in_use;
            self.look_soon();
        }
        // A light load waits for no worker (and soon gathers on one).
        if self.now < self.next_grouping || !self.loaded {
            return;
        }
        self.next_grouping = self.now
            + if self.quick_looks > 0 {
                self.quick_looks -= 1;
                GROUP_SOON
            } else {
                GROUP_EVERY
            };
        if in_use < 2 {
            return;
        }
        let balance = &self.shared.balance;
        // Which of this worker's sessions belong with which worker.
        let mut belong: Vec<Vec<usize>> = vec![Vec::new(); in_use];
        // Whether the steady sessions' packets come from more than one worker's CPUs.
        let mut first = None;
        let mut mixed = false;
        let movable: Vec<usize> = self
            .sessions
            .iter()
            .filter(|&(t, s)| self.movable(t, s))
            .map(|(t, _)| t)
            .collect();
        for t in movable {
            let s = &mut self.sessions[t];
            let Some(cpu) = arrives_on(s.link.socket()) else {
                continue;
            };
            // Only a session whose packets came from the same CPU at the last look too: a
            // client whose tasks hop between threads (a work-stealing runtime) has no CPU of
            // its own, and its sessions would only move back and forth. (This makes that
            // rarer, not rare: such a client's tasks can stay on one thread for a while.)
            let steady = s.arrives_on.replace(cpu) == Some(cpu);
            let to = cpu % in_use;
            if steady {
                mixed |= *first.get_or_insert(to) != to;
                belong[to].push(t);
            }
        }
        // Sessions whose packets all come from one CPU have no better worker than another:
        // one client thread, or several that the kernel runs on one CPU for now. Swapping
        // them would only chase that thread as it moves from CPU to CPU, a swap of every
        // session at each of its moves. Nothing is owed either way until they differ.
        if !mixed {
            for to in (0..in_use).filter(|&to| to != self.index) {
                balance.set_belonging(self.index, to, 0);
            }
            return;
        }
        belong[self.index].clear();
        for (to, sessions) in belong.iter_mut().enumerate() {
            if to == self.index {
                continue;
            }
            // In exchange for what the other counted as belonging here at its last look, and
            // as many more as even out the two workers' sessions.
            let theirs = self.shared.metrics.worker(to).sessions();
            let evening = self.sessions.len().saturating_sub(theirs) / 2;
            let owed = balance.belonging(to, self.index) + evening;
            balance.set_belonging(self.index, to, sessions.len());
            sessions.truncate(owed);
        }
        for (to, sessions) in belong.into_iter().enumerate() {
            for t in sessions {
                if !self.send_on(t, to) {
                    return;
                }
            }
        }
    }

    /// A new connection: the CPU it connected from is its first look (the thread that
    /// connects is usually the one that sends), and the next looks come soon.
    pub(super) fn grouping_arrival(&mut self, t: usize) {
        if !self.shared.balance.enabled() {
            return;
        }
        let s = &mut self.sessions[t];
        s.arrives_on = arrives_on(s.link.socket());
        self.look_soon();
    }

    /// While recent connections came from the CPUs of two workers' groups or more, a new
    /// connection goes at once to the worker its CPU points to (`cpu % in use`), unless that
    /// worker holds more than twice this one's sessions and 8 more (client threads that
    /// connect at their own pace fill their workers unevenly for a while). A load that
    /// starts while two or more workers are in use then starts grouped, rather than split
    /// over the workers until the looks have swapped its sessions (a second or two of a p99
    /// ten times the grouped one's). Connections that all come from one CPU (a lone client
    /// thread, or a NIC whose packets all arrive on one CPU) stay where they were placed in
    /// turn: by CPU, they would all pile on one worker. Only a session that could move at
    /// all, so not one awaiting its PROXY header or its TLS handshake (the looks group
    /// those).
    pub(super) fn place_arrival(&mut self, t: usize, id: SessionId) {
        let balance = &self.shared.balance;
        let in_use = balance.in_use();
        if !balance.enabled() || in_use < 2 || self.index >= in_use {
            return;
        }
        let Some(s) = self.sessions.get(t) else {
            return;
        };
        let Some(home) = s.arrives_on.map(|cpu| cpu % in_use) else {
            return;
        };
        if !balance.note_arrival(home)
            || s.handle.id() != id
            || home == self.index
            || !self.movable(t, s)
        {
            return;
        }
        let mine = self.sessions.len();
        if self.shared.metrics.worker(home).sessions() <= 2 * mine + 8 {
            self.send_on(t, home);
        }
    }

    /// Makes the next [`QUICK_LOOKS`] looks come [`GROUP_SOON`] one after the other.
    fn look_soon(&mut self) {
        if self.quick_looks == 0 {
            self.next_grouping = self.next_grouping.min(self.now + GROUP_SOON);
        }
        self.quick_looks = QUICK_LOOKS;
    }
}

/// The CPU the socket's packets last arrived on (`SO_INCOMING_CPU`); for an accepted socket
/// that has received nothing yet, the CPU its handshake arrived on.
pub(super) fn arrives_on(stream: &mio::net::TcpStream) -> Option<usize> {
    socket2::SockRef::from(stream).cpu_affinity().ok()
}
