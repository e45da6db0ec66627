//! Which workers serve: sessions gather on as few workers as keep up with them.
//!
//! A worker that keeps up sleeps in its poller between a few events and the next; each sleep
//! and wake-up costs a context switch. Two workers that share a light load sleep and wake
//! twice as often as one that carries it, and on a machine whose cores the clients share
//! (a load generator on the same host) the extra thread takes CPU from them. So the
//! workers *in use* are the first `k`: new connections go only to them (the pool's
//! [`Spread`]), and a worker beyond `k` hands its sessions to them. `k` follows the load:
//!
//! - Each worker looks at itself every [`WINDOW`] while it is awake ([`Meter`]). It is
//!   *saturated* when it hardly slept: it was running, or ready to run and waiting for a CPU,
//!   nearly all the window, so sessions wait for it. It *wants help* when it has been
//!   saturated for [`SUSTAINED`] windows and another worker would get CPU time: a CPU is
//!   idle, or the worker is pushed off its own by other threads. (With every CPU busy and the
//!   worker not pushed aside, as when a client on the same machine takes the other CPU, a
//!   second worker would take its CPU from that client.)
//! - Every worker in use wants help: one more in use, and each hands it a share of its
//!   sessions.
//! - None wants help, and [`Plan::hold`] since the last change: one fewer; the last one hands
//!   its sessions to the others.
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

use super::outbox::Mailbox;
use super::session::Session;
use crate::pool::Spread;

/// How often a busy worker looks at its own load.
pub(crate) const WINDOW: Duration = Duration::from_millis(50);

/// Room for another worker: the machine left at least this many CPUs idle...
const IDLE_CPUS: f64 = 0.5;

/// ...or the worker was put off its CPU this many times a second while it had work: it
/// shares its CPU with other busy threads, and a second worker gets a share of its own
/// (on 2 cores with 16 connections: 33,000 a second against two client threads, 70 against
/// one).
const PREEMPTED_PER_SECOND: f64 = 1_000.0;

/// Saturated: running or ready to run for at least this share of the window, so asleep
/// in its poller for less than a tenth of it.
const DEMAND: f64 = 0.9;

/// Saturated for this many windows in a row: a worker that keeps up, barely, has a window
/// now and then in which it hardly slept; one that does not keep up has nothing else.
const SUSTAINED: u32 = 4;

/// A window longer than this was mostly slept through: its figures are not those of the
/// load that woke the worker.
const LONGEST: Duration = Duration::from_millis(150);

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
    /// Its last report: a [`Load`], and its CPU share as `f64` bits ([`NO_BUSY`]: none).
    load: AtomicU8,
    busy: AtomicU64,
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
}

/// What a worker's last windows say of its load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Load {
    /// Saturated for [`SUSTAINED`] windows, with room for another worker.
    WantsHelp,
    /// Not saturated for [`SUSTAINED`] windows.
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
}

impl Plan {
    pub(crate) fn new(now: Instant) -> Self {
        Plan {
            hold: HOLD_MIN,
            changed: now,
            gathered: None,
        }
    }

    /// What to do, given the reports of the workers in use, out of `workers`.
    ///
    /// Spread when every one wants help. Gather when none does and, after the hold, either
    /// each is spare or asleep (one at least spare), or the CPU they used would fit in one
    /// worker fewer (each awake long enough to tell; a worker that shares its CPU with
    /// other busy threads waits often, and reads as saturated without being so).
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
        let spare = loads().all(|l| matches!(l, Load::Spare | Load::Idle))
            && loads().any(|l| l == Load::Spare);
        let awake: Vec<&Report> = reports.iter().filter(|r| r.load != Load::Idle).collect();
        let fits = !awake.is_empty()
            && awake.iter().all(|r| r.busy.is_some())
            && awake.iter().filter_map(|r| r.busy).sum::<f64>() <= (in_use - 1) as f64;
        if spare || fits {
            Step::Gather
        } else {
            Step::Stay
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
            plan: Mutex::new(Plan::new(epoch)),
            epoch,
            enabled: enabled && workers > 1,
        }
    }

    /// Whether sessions move at all.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Gives the balance the pool's handle on how many workers take new connections.
    pub(crate) fn attach(&self, spread: Spread) {
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
                    }
                } else {
                    Report {
                        load: Load::Idle,
                        busy: None,
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

    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

fn wake(dock: &Dock) {
    if let Some(mailbox) = dock.mailbox.get() {
        mailbox.wake();
    }
}

/// A worker's look at its own load over windows of at least [`WINDOW`]: its thread's CPU
/// time and the time it waited for a CPU while it had work (`/proc/thread-self/schedstat`),
/// the times it was pushed off its CPU (`getrusage(RUSAGE_THREAD)`), and the machine's idle
/// CPU time (`/proc/stat`).
#[derive(Debug)]
pub(crate) struct Meter {
    since: Instant,
    usage: Usage,
    recent: Recent,
    /// Windows in a row that were saturated, and that were not.
    saturated: u32,
    spare: u32,
    /// Windows in a row none of which the worker slept through.
    awake: u32,
}

/// What one window, or a run of them, showed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Window {
    /// Share of the time the worker's thread was on a CPU.
    pub(crate) busy: f64,
    /// Share of the time it was ready to run and waited for a CPU.
    pub(crate) waiting: f64,
    /// Times a second it was put off its CPU while it had work (involuntary switches).
    pub(crate) preempted: f64,
    /// CPUs the machine left idle, on average.
    pub(crate) idle_cpus: f64,
}

impl Window {
    /// The worker leaves sessions waiting: it hardly slept, it was running or ready to run
    /// nearly all the time.
    pub(crate) fn saturated(&self) -> bool {
        self.busy + self.waiting >= DEMAND
    }

    /// Another worker would get CPU time: the machine has a CPU to spare, or this worker
    /// already fights other threads for its own. On a machine whose every CPU is busy
    /// without this worker being pushed aside (a client sharing it), a second worker would
    /// only take CPU from the client.
    pub(crate) fn room(&self) -> bool {
        self.idle_cpus >= IDLE_CPUS || self.preempted >= PREEMPTED_PER_SECOND
    }
}

/// The last [`SUSTAINED`] windows.
#[derive(Debug, Default)]
struct Recent {
    added: usize,
    last: [Window; SUSTAINED as usize],
}

impl Recent {
    fn add(&mut self, w: &Window) {
        self.last[self.added % self.last.len()] = *w;
        self.added = self.added.wrapping_add(1);
    }

    /// Their average.
    fn average(&self) -> Window {
        let n = self.added.min(self.last.len());
        let mut sum = Window::default();
        for w in &self.last[..n] {
            sum.busy += w.busy;
            sum.waiting += w.waiting;
            sum.preempted += w.preempted;
            sum.idle_cpus += w.idle_cpus;
        }
        let n = n.max(1) as f64;
        Window {
            busy: sum.busy / n,
            waiting: sum.waiting / n,
            preempted: sum.preempted / n,
            idle_cpus: sum.idle_cpus / n,
        }
    }
}

/// What a worker tells the balance after a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Report {
    pub(crate) load: Load,
    /// Its average CPU share over its last [`SUSTAINED`] windows, once it has been awake
    /// for that many (none of them slept through, [`LONGEST`]); `None` before.
    pub(crate) busy: Option<f64>,
}

impl Meter {
    /// Starts a window now; must be created on the worker's own thread.
    pub(crate) fn new(now: Instant) -> Self {
        Meter {
            since: now,
            usage: Usage::now(),
            recent: Recent::default(),
            saturated: 0,
            spare: 0,
            awake: 0,
        }
    }

    /// Once a window has passed: what it and the windows before it say; a new window
    /// starts. Before that: `None`. (The first window of a load, which began while the
    /// worker slept, reads as spare; one window is never enough to be called so.)
    pub(crate) fn sample(&mut self, now: Instant) -> Option<Report> {
        let wall = now.saturating_duration_since(self.since);
        if wall < WINDOW {
            return None;
        }
        let usage = Usage::now();
        let window = usage.since(&self.usage, wall);
        self.since = now;
        self.usage = usage;
        self.recent.add(&window);
        if window.saturated() {
            self.saturated = self.saturated.saturating_add(1);
            self.spare = 0;
        } else {
            self.saturated = 0;
            self.spare = self.spare.saturating_add(1);
        }
        self.awake = if wall > LONGEST {
            0
        } else {
            self.awake.saturating_add(1)
        };
        log::trace!(
            "window: {window:?} saturated={} spare={} awake={}",
            self.saturated,
            self.spare,
            self.awake
        );
        let recent = self.recent.average();
        let load = if self.saturated >= SUSTAINED && recent.room() {
            Load::WantsHelp
        } else if self.spare >= SUSTAINED {
            Load::Spare
        } else {
            Load::Unsure
        };
        let busy = (self.awake >= SUSTAINED).then_some(recent.busy);
        Some(Report { load, busy })
    }
}

/// Counters read at one moment.
#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu: Duration,
    waited: Duration,
    involuntary: i64,
    /// The machine's idle time, in clock ticks (`None`: unknown).
    idle_ticks: Option<u64>,
}

impl Usage {
    fn now() -> Self {
        use nix::sys::resource::{UsageWho, getrusage};
        let (cpu, involuntary) = match getrusage(UsageWho::RUSAGE_THREAD) {
            Ok(u) => {
                let time = |t: nix::sys::time::TimeVal| {
                    Duration::from_secs(t.tv_sec().max(0) as u64)
                        + Duration::from_micros(t.tv_usec().max(0) as u64)
                };
                (
                    time(u.user_time()) + time(u.system_time()),
                    u.involuntary_context_switches(),
                )
            }
            // Never seen; without figures the worker reads as idle and nothing moves to it.
            Err(_) => (Duration::ZERO, 0),
        };
        // Without schedstat (a kernel built without it) the wait reads as none: a worker
        // that shares its CPU then looks less loaded than it is, never more.
        let waited = std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|stat| run_queue_wait(&stat))
            .unwrap_or_default();
        let idle_ticks = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| idle_ticks(&stat));
        Usage {
            cpu,
            waited,
            involuntary,
            idle_ticks,
        }
    }

    /// What happened between `earlier` and this, `wall` apart.
    fn since(&self, earlier: &Usage, wall: Duration) -> Window {
        let secs = wall.as_secs_f64();
        let idle_cpus = match (self.idle_ticks, earlier.idle_ticks) {
            (Some(now), Some(then)) => now.saturating_sub(then) as f64 / ticks_per_second() / secs,
            _ => 0.0,
        };
        Window {
            busy: self.cpu.saturating_sub(earlier.cpu).as_secs_f64() / secs,
            waiting: self.waited.saturating_sub(earlier.waited).as_secs_f64() / secs,
            preempted: (self.involuntary - earlier.involuntary) as f64 / secs,
            idle_cpus,
        }
    }
}

/// The time spent ready to run and waiting for a CPU, the second field of
/// `/proc/thread-self/schedstat` (`on-CPU-ns waiting-ns timeslices`).
fn run_queue_wait(schedstat: &str) -> Option<Duration> {
    let ns = schedstat.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Idle plus I/O-wait ticks of all CPUs, from the first line of `/proc/stat`
/// (`cpu  user nice system idle iowait ...`).
fn idle_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let mut fields = line.split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
    let idle = fields.nth(3)??;
    let iowait = fields.next().flatten().unwrap_or(0);
    Some(idle + iowait)
}

fn ticks_per_second() -> f64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as f64,
        _ => 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    use Load::{Idle, Spare, Unsure, WantsHelp};

    fn r(load: Load) -> Report {
        Report { load, busy: None }
    }

    fn busy(load: Load, busy: f64) -> Report {
        Report {
            load,
            busy: Some(busy),
        }
    }

    #[test]
    fn every_worker_in_use_wanting_help_brings_one_more_in() {
        let t0 = Instant::now();
        let plan = Plan::new(t0);
        assert_eq!(plan.decide(&[r(WantsHelp)], 2, at(t0, 10)), Step::Spread);
        assert_eq!(
            plan.decide(&[r(WantsHelp), r(WantsHelp)], 4, at(t0, 10)),
            Step::Spread
        );
        assert_eq!(
            plan.decide(&[r(WantsHelp), r(Unsure)], 4, at(t0, 10)),
            Step::Stay
        );
        assert_eq!(
            plan.decide(&[r(WantsHelp), r(Idle)], 4, at(t0, 10)),
            Step::Stay
        );
        // All of them in use already: nothing to spread to.
        assert_eq!(
            plan.decide(&[r(WantsHelp), r(WantsHelp)], 2, at(t0, 10)),
            Step::Stay
        );
    }

    #[test]
    fn gathering_waits_for_the_hold_and_for_a_spare_worker() {
        let t0 = Instant::now();
        let plan = Plan::new(t0);
        assert_eq!(
            plan.decide(&[r(Spare), r(Spare)], 2, at(t0, 999)),
            Step::Stay
        );
        assert_eq!(
            plan.decide(&[r(Spare), r(Spare)], 2, at(t0, 1000)),
            Step::Gather
        );
        assert_eq!(
            plan.decide(&[r(Spare), r(Idle)], 2, at(t0, 1000)),
            Step::Gather
        );
        // A worker that has just woken says nothing yet; asleep, all of them, neither.
        assert_eq!(
            plan.decide(&[r(Unsure), r(Spare)], 2, at(t0, 5000)),
            Step::Stay
        );
        assert_eq!(
            plan.decide(&[r(Idle), r(Idle)], 2, at(t0, 5000)),
            Step::Stay
        );
        assert_eq!(
            plan.decide(&[r(WantsHelp), r(Spare)], 2, at(t0, 5000)),
            Step::Stay
        );
        assert_eq!(plan.decide(&[r(Spare)], 2, at(t0, 5000)), Step::Stay);
    }

    #[test]
    fn gathering_also_when_the_cpu_used_fits_in_one_worker_fewer() {
        let t0 = Instant::now();
        let plan = Plan::new(t0);
        let later = at(t0, 5000);
        // Two workers sharing 2 cores with one client thread: each waits for a CPU often,
        // so neither reads as spare, but they use 0.89 CPU between them.
        let shared = [busy(Unsure, 0.43), busy(Unsure, 0.46)];
        assert_eq!(plan.decide(&shared, 2, later), Step::Gather);
        assert_eq!(
            plan.decide(&[busy(Unsure, 0.55), busy(Unsure, 0.5)], 2, later),
            Step::Stay
        );
        // A worker not awake long enough to tell keeps things as they are.
        assert_eq!(
            plan.decide(&[busy(Unsure, 0.2), r(Unsure)], 2, later),
            Step::Stay
        );
        assert_eq!(
            plan.decide(&[busy(Unsure, 0.4), r(Idle)], 2, later),
            Step::Gather
        );
        // Not before the hold, and never while one wants help.
        assert_eq!(plan.decide(&shared, 2, at(t0, 10)), Step::Stay);
        let helped = [busy(WantsHelp, 0.3), busy(Unsure, 0.3)];
        assert_eq!(plan.decide(&helped, 2, later), Step::Stay);
    }

    #[test]
    fn a_gathering_undone_at_once_doubles_the_hold_up_to_its_cap() {
        let t0 = Instant::now();
        let mut plan = Plan::new(t0);
        let mut now = at(t0, 1000);
        let mut holds = Vec::new();
        for _ in 0..6 {
            plan.note(Step::Gather, now);
            now += Duration::from_millis(100);
            plan.note(Step::Spread, now);
            holds.push(plan.hold.as_secs());
            // The next gathering comes no sooner than the hold.
            let early = now + plan.hold - Duration::from_millis(1);
            assert_eq!(plan.decide(&[r(Spare), r(Spare)], 2, early), Step::Stay);
            now += plan.hold;
            assert_eq!(plan.decide(&[r(Spare), r(Spare)], 2, now), Step::Gather);
        }
        assert_eq!(holds, [2, 4, 8, 16, 16, 16]);
        // A gathering that held for as long as the probe resets the hold.
        plan.note(Step::Gather, now);
        plan.note(Step::Spread, now + PROBE);
        assert_eq!(plan.hold, HOLD_MIN);
    }

    fn window(busy: f64, waiting: f64, preempted: f64, idle_cpus: f64) -> Window {
        Window {
            busy,
            waiting,
            preempted,
            idle_cpus,
        }
    }

    #[test]
    fn saturated_means_running_or_ready_to_run_nearly_all_the_time() {
        assert!(window(0.97, 0.0, 150.0, 0.0).saturated());
        // On the CPU half the time, waiting for it the other half: it has work throughout.
        assert!(window(0.55, 0.40, 14_000.0, 0.6).saturated());
        assert!(!window(0.55, 0.10, 14_000.0, 0.6).saturated());
        assert!(!window(0.01, 0.0, 0.0, 1.9).saturated());
    }

    #[test]
    fn room_is_an_idle_cpu_or_a_worker_pushed_aside() {
        // One client thread and a saturated worker fill 2 cores between them.
        assert!(!window(1.0, 0.0, 150.0, 0.1).room());
        // Two client threads push the worker off its CPU.
        assert!(window(0.55, 0.40, 14_000.0, 0.0).room());
        // Clients elsewhere: the machine's other CPUs are idle.
        assert!(window(1.0, 0.0, 5.0, 6.5).room());
    }

    #[test]
    fn room_is_judged_over_the_last_windows() {
        let mut streak = Recent::default();
        // One window with an idle CPU among three without: no room on average.
        for idle in [0.6, 0.0, 0.2, 0.0] {
            streak.add(&window(1.0, 0.0, 150.0, idle));
        }
        assert_eq!(streak.added, 4);
        assert!(!streak.average().room());
        // However long the streak was without room, the last windows decide.
        for _ in 0..40 {
            streak.add(&window(1.0, 0.0, 150.0, 0.0));
        }
        assert!(!streak.average().room());
        for _ in 0..4 {
            streak.add(&window(0.6, 0.35, 20_000.0, 0.0));
        }
        assert!(streak.average().room());
    }

    #[test]
    fn schedstat_gives_the_run_queue_wait() {
        assert_eq!(
            run_queue_wait("247407703 245296 19\n"),
            Some(Duration::from_nanos(245_296))
        );
        assert_eq!(run_queue_wait("12\n"), None);
    }

    #[test]
    fn the_machine_idle_time_is_read_from_proc_stat() {
        let stat = "cpu  4705 356 584 3699176 23 0 13 0 0 0\ncpu0 1393 2 1 1 1 0 0 0 0 0\n";
        assert_eq!(idle_ticks(stat), Some(3_699_199));
        assert_eq!(idle_ticks("cpu0 1 2 3 4\n"), None);
        assert_eq!(idle_ticks("cpu  1 2\n"), None);
        let here = std::fs::read_to_string("/proc/stat").unwrap();
        assert!(idle_ticks(&here).is_some());
    }

    #[test]
    fn a_meter_reports_once_a_window() {
        let t0 = Instant::now();
        let mut meter = Meter::new(t0);
        assert_eq!(meter.sample(t0 + WINDOW / 2), None);
        // A thread that did nothing in its windows is spare once it has shown so for long
        // enough.
        let mut at = t0;
        let mut loads = Vec::new();
        for _ in 0..SUSTAINED {
            at += WINDOW;
            loads.push(meter.sample(at));
            assert_eq!(meter.sample(at), None, "one report a window");
        }
        let last = loads.pop().flatten().expect("a report");
        assert_eq!(
            last,
            Report {
                load: Load::Spare,
                busy: Some(last.busy.unwrap())
            }
        );
        assert!(last.busy.unwrap() < 0.5);
        assert!(
            loads
                .iter()
                .all(|l| l.map(|r| r.load) == Some(Load::Unsure)),
            "{loads:?}"
        );
        // A window it slept through: spare still, but its CPU share is not told again until
        // it has been awake for a few windows.
        at += LONGEST * 2;
        assert_eq!(meter.sample(at).map(|r| r.busy), Some(None));
    }
}
