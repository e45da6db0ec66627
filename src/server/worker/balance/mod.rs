//! Which workers serve: sessions gather on as few workers as keep up with them.
//!
//! A worker that keeps up sleeps in its poller between a few events and the next; each sleep
//! and wake-up costs a context switch. Two workers that share a light load sleep and wake
//! twice as often as one that carries it, and on a machine whose cores the clients share
//! (a load generator on the same host) the extra thread takes CPU from them. So the
//! workers *in use* are the first `k`: new connections go only to them (the pool's
//! [`Spread`]), and a worker beyond `k` hands its sessions to them. `k` follows the load:
//!
//! - Each worker looks at itself every [`WINDOW`](meter::WINDOW) while it is awake
//!   ([`Meter`]). It is *saturated* when it hardly slept: it was running, or ready to run and
//!   waiting for a CPU, nearly all the window, so sessions wait for it. It *wants help* when
//!   it has been saturated for [`SUSTAINED`](meter::SUSTAINED) windows and another worker
//!   would get CPU time: a CPU is idle, or the worker is pushed off its own by other threads.
//!   (With every CPU busy and the worker not pushed aside, as when a client on the same
//!   machine takes the other CPU, a second worker would take its CPU from that client.)
//! - Every worker in use wants help: one more in use, and each hands it a share of its
//!   sessions.
//! - None wants help, [`Plan::hold`] has passed since the last change, and the CPU the
//!   workers use would fit in one worker fewer: one fewer; the last one hands its sessions
//!   to the others. What fits counts the other busy threads: a worker that waits for a CPU
//!   as long as it runs (two client threads on the same 2 cores) would get only a little
//!   more CPU alone, not twice as much.
//! - A gathering that needs help within [`PROBE`] is undone, and the hold doubles (up to
//!   [`HOLD_MAX`]), so a load that needs every worker is probed rarely; a spreading that
//!   comes later than that resets the hold.
//!
//! Idle workers never wake for this: a worker reviews only on its own passes. With
//! `--balance round-robin` (or one worker) nothing moves: each connection goes to the next
//! worker in turn and stays there. Moving a session is the worker's business
//! (`worker/moving.rs`); this file only decides and carries sessions between workers.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::pool::Spread;
use crate::server::session::outbox::Mailbox;
use crate::server::worker::session::Session;

mod meter;
#[cfg(test)]
mod tests;

pub(crate) use meter::Meter;

/// A report older than this is not taken into account (its worker has been asleep since).
const FRESH: Duration = Duration::from_millis(200);

/// The shortest and longest time between a change and the next gathering.
const HOLD_MIN: Duration = Duration::from_secs(1);
pub(crate) const HOLD_MAX: Duration = Duration::from_secs(16);

/// A spreading this soon after a gathering means the gathering failed.
const PROBE: Duration = Duration::from_secs(3);

/// One worker's end: what is handed to it, how to wake it, what it last reported.
#[derive(Default)]
struct Dock {
    /// Sessions handed to this worker and not adopted yet; `None` once it has stopped.
    arrivals: Mutex<Option<Vec<Session>>>,
    arrived: AtomicBool,
    mailbox: OnceLock<Arc<Mailbox>>,
    /// The worker is asked to hand a share of its sessions to worker `give - 1` (0: no).
    give: AtomicUsize,
    /// Its last report: a [`Load`], its CPU share as `f64` bits ([`NO_BUSY`]: none), and
    /// the share of its time ready to run that it ran, as `f64` bits.
    load: AtomicU8,
    busy: AtomicU64,
    ran: AtomicU64,
    /// When it last reported, in nanoseconds since [`Balance::epoch`] (0: never).
    reported: AtomicU64,
}

/// [`Dock::busy`] when the worker gave no CPU share.
const NO_BUSY: u64 = u64::MAX;

/// The server's balance: every worker's dock and the plan of how many are in use.
pub(crate) struct Balance {
    docks: Box<[Dock]>,
    spread: OnceLock<Spread>,
    plan: Mutex<Plan>,
    epoch: Instant,
    enabled: bool,
    /// `belonging[from * workers + to]`: sessions worker `from` holds whose packets arrive
    /// on the CPU of worker `to`'s group, at `from`'s last look (`grouping`).
    belonging: Box<[AtomicUsize]>,
    /// The workers (bit `w % 64`) that recent new connections' CPUs point to, and how many
    /// connections arrived (the bits are forgotten every [`ARRIVALS_REMEMBERED`]).
    arrival_homes: AtomicU64,
    arrivals: AtomicUsize,
}

/// How many new connections' CPUs [`Balance::note_arrival`] remembers at most.
const ARRIVALS_REMEMBERED: usize = 256;

/// What a worker's last windows say of its load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Load {
    /// Saturated for [`SUSTAINED`](meter::SUSTAINED) windows, with room for another worker.
    WantsHelp,
    /// Not saturated for [`SUSTAINED`](meter::SUSTAINED) windows.
    Spare,
    /// Neither (yet).
    Unsure,
    /// No recent report: the worker has been asleep.
    Idle,
}

impl Load {
    fn from_u8(n: u8) -> Load {
        [Load::WantsHelp, Load::Spare, Load::Unsure, Load::Idle]
            .get(usize::from(n))
            .copied()
            .unwrap_or(Load::Unsure)
    }
}

/// What a worker tells the balance after a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Report {
    pub(crate) load: Load,
    /// Its average CPU share over its last [`SUSTAINED`](meter::SUSTAINED) windows, once it
    /// has been awake for that many (none of them slept through,
    /// [`LONGEST`](meter::LONGEST)); `None` before.
    pub(crate) busy: Option<f64>,
    /// Of the time it was ready to run over those windows, the share it was on a CPU (1.0:
    /// it never waited for one). About a half when it shares its CPU with one other busy
    /// thread.
    pub(crate) ran: f64,
}

/// What changed at a review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing.
    Stay,
    /// One more worker in use.
    Spread,
    /// One fewer.
    Gather,
}

/// How many workers are in use, and when that may change next.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The time between a change and the next gathering.
    pub(crate) hold: Duration,
    changed: Instant,
    gathered: Option<Instant>,
    /// The CPUs the server may run on.
    cpus: usize,
}

impl Plan {
    pub(crate) fn new(now: Instant, cpus: usize) -> Self {
        Plan {
            hold: HOLD_MIN,
            changed: now,
            gathered: None,
            cpus: cpus.max(1),
        }
    }

    /// What to do, given the reports of the workers in use, out of `workers`.
    ///
    /// Spread when every one wants help. Gather when none does and, after the hold, the CPU
    /// the workers awake used would fit in one worker fewer, each of which could use
    /// [`Plan::each_fewer`] (a worker that shares its CPU with other busy threads waits
    /// often, and reads as saturated without being so; one that is spare may still need
    /// its CPU). Until each worker awake has been so long enough to tell its CPU, each
    /// spare or asleep (one at least spare) is enough.
    pub(crate) fn decide(&self, reports: &[Report], workers: usize, now: Instant) -> Step {
        let in_use = reports.len();
        let loads = || reports.iter().map(|r| r.load);
        if in_use < workers && loads().all(|l| l == Load::WantsHelp) {
            return Step::Spread;
        }
        if in_use < 2
            || loads().any(|l| l == Load::WantsHelp)
            || now.saturating_duration_since(self.changed) < self.hold
        {
            return Step::Stay;
        }
        let awake: Vec<&Report> = reports.iter().filter(|r| r.load != Load::Idle).collect();
        let measured = !awake.is_empty() && awake.iter().all(|r| r.busy.is_some());
        let gather = if measured {
            awake.iter().filter_map(|r| r.busy).sum::<f64>()
                <= (in_use - 1) as f64 * self.each_fewer(&awake)
        } else {
            loads().all(|l| matches!(l, Load::Spare | Load::Idle))
                && loads().any(|l| l == Load::Spare)
        };
        if gather { Step::Gather } else { Step::Stay }
    }

    /// The CPU each worker would get with one worker fewer in use, from how long the workers
    /// awake waited for a CPU. A worker that ran a share `ran` of the time it was ready to
    /// run shares the CPUs with about `cpus / ran` threads ready to run, itself included;
    /// with one fewer of them, each of the rest gets `cpus / (threads - 1)`, a whole CPU at
    /// most. Two workers and two busy client threads on 2 CPUs run half the time they are
    /// ready: one worker alone would get 2/3 of a CPU, not a whole one.
    fn each_fewer(&self, awake: &[&Report]) -> f64 {
        let ran = awake.iter().map(|r| r.ran).sum::<f64>() / awake.len().max(1) as f64;
        let cpus = self.cpus as f64;
        let threads = cpus / ran.clamp(0.01, 1.0);
        if threads - 1.0 <= cpus {
            1.0
        } else {
            cpus / (threads - 1.0)
        }
    }

    /// Records that `step` was taken at `now`.
    pub(crate) fn note(&mut self, step: Step, now: Instant) {
        match step {
            Step::Stay => return,
            Step::Spread => {
                let failed = self
                    .gathered
                    .is_some_and(|at| now.saturating_duration_since(at) < PROBE);
                self.hold = if failed {
                    (self.hold * 2).min(HOLD_MAX)
                } else {
                    HOLD_MIN
                };
            }
            Step::Gather => self.gathered = Some(now),
        }
        self.changed = now;
    }
}

impl Balance {
    /// A balance for `workers` workers; `enabled: false` keeps every worker in use.
    pub(crate) fn new(workers: usize, enabled: bool) -> Self {
        let epoch = Instant::now();
        Balance {
            docks: (0..workers).map(|_| Dock::default()).collect(),
            spread: OnceLock::new(),
            plan: Mutex::new(Plan::new(
                epoch,
                std::thread::available_parallelism().map_or(1, usize::from),
            )),
            epoch,
            enabled: enabled && workers > 1,
            belonging: (0..workers * workers)
                .map(|_| AtomicUsize::new(0))
                .collect(),
            arrival_homes: AtomicU64::new(0),
            arrivals: AtomicUsize::new(0),
        }
    }

    /// Whether sessions move at all.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Gives the balance the pool's handle on how many workers take new connections, and
    /// how many take them at the start (0: every one). By default a server starts as an
    /// idle one ends up, on one worker, and a load that needs more brings them into use:
    /// starting on all of them split a lone client thread's first connections over the
    /// workers until the first gathering, a second or more later.
    pub(crate) fn attach(&self, spread: Spread, at_start: usize) {
        if self.enabled && at_start > 0 {
            spread.set(at_start);
        }
        let _ = self.spread.set(spread);
    }

    /// Worker `index` is woken through `mailbox`.
    pub(crate) fn dock(&self, index: usize, mailbox: Arc<Mailbox>) {
        let dock = &self.docks[index];
        let _ = dock.mailbox.set(mailbox);
        *dock.arrivals.lock() = Some(Vec::new());
    }

    /// How many workers are in use (all of them until the pool is attached).
    pub(crate) fn in_use(&self) -> usize {
        self.spread.get().map_or(self.docks.len(), Spread::get)
    }

    /// Worker `index` reports its last window. Returns the step taken, if this review took
    /// one (another worker may be reviewing at the same time: then this one does not).
    pub(crate) fn review(&self, index: usize, report: Report, now: Instant) -> Step {
        let dock = &self.docks[index];
        dock.load.store(report.load as u8, Ordering::Relaxed);
        dock.busy
            .store(report.busy.map_or(NO_BUSY, f64::to_bits), Ordering::Relaxed);
        dock.ran.store(report.ran.to_bits(), Ordering::Relaxed);
        dock.reported
            .store(self.nanos(now).max(1), Ordering::Relaxed);
        let (Some(spread), Some(mut plan)) = (self.spread.get(), self.plan.try_lock()) else {
            return Step::Stay;
        };
        let in_use = spread.get();
        let fresh = self.nanos(now).saturating_sub(FRESH.as_nanos() as u64);
        let reports: Vec<Report> = self.docks[..in_use]
            .iter()
            .map(|d| {
                if d.reported.load(Ordering::Relaxed) > fresh {
                    let busy = d.busy.load(Ordering::Relaxed);
                    Report {
                        load: Load::from_u8(d.load.load(Ordering::Relaxed)),
                        busy: (busy != NO_BUSY).then(|| f64::from_bits(busy)),
                        ran: f64::from_bits(d.ran.load(Ordering::Relaxed)),
                    }
                } else {
                    Report {
                        load: Load::Idle,
                        busy: None,
                        ran: 1.0,
                    }
                }
            })
            .collect();
        let step = plan.decide(&reports, self.docks.len(), now);
        plan.note(step, now);
        match step {
            Step::Stay => {}
            Step::Spread => {
                spread.set(in_use + 1);
                for d in &self.docks[..in_use] {
                    d.give.store(in_use + 1, Ordering::Relaxed);
                    wake(d);
                }
            }
            Step::Gather => {
                spread.set(in_use - 1);
                self.clear_belonging(in_use - 1);
                // An order to share with a worker not yet carried out is void now.
                for d in self.docks.iter() {
                    d.give.store(0, Ordering::Relaxed);
                }
                wake(&self.docks[in_use - 1]);
            }
        }
        if step != Step::Stay {
            log::debug!(
                "workers in use: {} (was {in_use}); next gathering after {:?} at the earliest",
                spread.get(),
                plan.hold
            );
        }
        step
    }

    /// The worker that worker `index` is asked to hand a share of its sessions to, if any;
    /// asking once.
    pub(crate) fn take_order(&self, index: usize) -> Option<usize> {
        let give = &self.docks[index].give;
        if give.load(Ordering::Relaxed) == 0 {
            return None;
        }
        give.swap(0, Ordering::Relaxed).checked_sub(1)
    }

    /// Hands `session` to worker `to` and wakes it; hands it back if that worker has stopped.
    pub(crate) fn send(&self, to: usize, session: Box<Session>) -> Result<(), Box<Session>> {
        let dock = &self.docks[to];
        {
            let mut arrivals = dock.arrivals.lock();
            let Some(arrivals) = arrivals.as_mut() else {
                return Err(session);
            };
            arrivals.push(*session);
            dock.arrived.store(true, Ordering::Release);
        }
        wake(dock);
        Ok(())
    }

    /// Moves the sessions handed to worker `index` into `into`.
    pub(crate) fn arrivals(&self, index: usize, into: &mut Vec<Session>) {
        let dock = &self.docks[index];
        if !dock.arrived.load(Ordering::Acquire) {
            return;
        }
        let mut arrivals = dock.arrivals.lock();
        dock.arrived.store(false, Ordering::Relaxed);
        if let Some(arrivals) = arrivals.as_mut() {
            into.append(arrivals);
        }
    }

    /// Worker `index` is about to stop: no session may be handed to it any more. Returns
    /// `false`, and takes nothing, if sessions were handed to it in the meantime: it must
    /// adopt them first.
    pub(crate) fn close_dock(&self, index: usize) -> bool {
        let mut arrivals = self.docks[index].arrivals.lock();
        if arrivals.as_ref().is_some_and(|a| !a.is_empty()) {
            return false;
        }
        *arrivals = None;
        true
    }

    /// A new connection's packets come from the CPU of worker `home`'s group. Tells whether
    /// recent new connections came from the CPUs of two workers' groups or more: then the
    /// clients run on several CPUs, and placing each by its CPU groups them; otherwise (one
    /// client thread, or a NIC whose packets all arrive on one CPU) that would pile them all
    /// on one worker.
    pub(crate) fn note_arrival(&self, home: usize) -> bool {
        if self
            .arrivals
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(ARRIVALS_REMEMBERED)
        {
            self.arrival_homes.store(0, Ordering::Relaxed);
        }
        let bit = 1u64 << (home % 64);
        (self.arrival_homes.fetch_or(bit, Ordering::Relaxed) | bit).count_ones() >= 2
    }

    /// How many of worker `from`'s sessions belong with worker `to`, at `from`'s last look.
    pub(crate) fn belonging(&self, from: usize, to: usize) -> usize {
        self.belonging[from * self.docks.len() + to].load(Ordering::Relaxed)
    }

    /// Worker `from` counted `n` of its sessions as belonging with worker `to`.
    pub(crate) fn set_belonging(&self, from: usize, to: usize, n: usize) {
        self.belonging[from * self.docks.len() + to].store(n, Ordering::Relaxed);
    }

    /// Worker `from` is no longer in use: what it counted is void, so that none of it is
    /// taken as owed when it comes back into use.
    fn clear_belonging(&self, from: usize) {
        let n = self.docks.len();
        for cell in &self.belonging[from * n..(from + 1) * n] {
            cell.store(0, Ordering::Relaxed);
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

fn wake(dock: &Dock) {
    if let Some(mailbox) = dock.mailbox.get() {
        mailbox.wake();
    }
}
