//! A worker's look at its own load: the windows it measures and what they say.

use std::time::{Duration, Instant};

use super::{Load, Report};

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
pub(crate) const SUSTAINED: u32 = 4;

/// A window longer than this was mostly slept through: its figures are not those of the
/// load that woke the worker.
pub(crate) const LONGEST: Duration = Duration::from_millis(150);

/// A worker's look at its own load over windows of at least [`WINDOW`]: its thread's CPU
/// time and the time it waited for a CPU while it had work (`/proc/thread-self/schedstat`),
/// the times it was pushed off its CPU (`getrusage(RUSAGE_THREAD)`), and the machine's idle
/// CPU time (`/proc/stat`).
#[derive(Debug)]
pub(crate) struct Meter {
    since: Instant,
    usage: Usage,
    /// The machine's idle ticks at the last read of `/proc/stat`, and when, while the
    /// worker is saturated.
    machine: Option<(Instant, u64)>,
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

    /// Of the time the worker was ready to run, the share it was on a CPU (1.0 if it was
    /// never ready to run).
    pub(crate) fn ran(&self) -> f64 {
        let ready = self.busy + self.waiting;
        if ready > 0.0 {
            (self.busy / ready).min(1.0)
        } else {
            1.0
        }
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

impl Meter {
    /// Starts a window now; must be created on the worker's own thread.
    pub(crate) fn new(now: Instant) -> Self {
        Meter {
            since: now,
            usage: Usage::now(),
            machine: None,
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
        let mut window = usage.since(&self.usage, wall);
        self.since = now;
        self.usage = usage;
        // The machine's idle time only matters to a saturated worker (is there room?), and
        // `/proc/stat` is costly to read on a machine with many CPUs: it is read only in
        // saturated windows, each measuring the idle CPUs since the one before (the first of
        // a streak has no figure, and counts as none idle).
        if !window.saturated() {
            self.machine = None;
        } else {
            let ticks = read_idle_ticks();
            if let (Some((at, then)), Some(ticks)) = (self.machine, ticks) {
                let secs = now.saturating_duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    window.idle_cpus =
                        ticks.saturating_sub(then) as f64 / ticks_per_second() / secs;
                }
            }
            self.machine = ticks.map(|t| (now, t));
        }
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
            "window: busy={:.3} waiting={:.3} preempted={:.1} idle_cpus={:.2} saturated={} spare={} awake={}",
            window.busy,
            window.waiting,
            window.preempted,
            window.idle_cpus,
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
        Some(Report {
            load,
            busy,
            ran: recent.ran(),
        })
    }
}

/// Counters read at one moment.
#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu: Duration,
    waited: Duration,
    involuntary: i64,
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
        Usage {
            cpu,
            waited,
            involuntary,
        }
    }

    /// What happened between `earlier` and this, `wall` apart.
    fn since(&self, earlier: &Usage, wall: Duration) -> Window {
        let secs = wall.as_secs_f64();
        Window {
            busy: self.cpu.saturating_sub(earlier.cpu).as_secs_f64() / secs,
            waiting: self.waited.saturating_sub(earlier.waited).as_secs_f64() / secs,
            preempted: (self.involuntary - earlier.involuntary) as f64 / secs,
            idle_cpus: 0.0,
        }
    }
}

/// The time spent ready to run and waiting for a CPU, the second field of
/// `/proc/thread-self/schedstat` (`on-CPU-ns waiting-ns timeslices`).
fn run_queue_wait(schedstat: &str) -> Option<Duration> {
    let ns = schedstat.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// The machine's idle ticks now, if `/proc/stat` can be read.
fn read_idle_ticks() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| idle_ticks(&stat))
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
                busy: Some(last.busy.unwrap()),
                ran: last.ran,
            }
        );
        assert!(last.ran > 0.0 && last.ran <= 1.0);
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
