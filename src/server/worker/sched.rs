//! The scheduling policy of the worker threads (`--worker-sched`, Linux).
//!
//! A worker sleeps in its poller until a client's bytes arrive, and their arrival wakes it.
//! Under the default policy (`SCHED_OTHER`) a woken thread may take the CPU from the thread
//! running there at once. On a machine whose cores the clients share, that thread is often the
//! client that just sent: the worker answers the one message, sleeps, and the client, back on
//! the CPU, sends the next and wakes it again — two context switches for each message. Under
//! `SCHED_BATCH` a woken worker does not cut in: it runs when the thread on the CPU sleeps or
//! its turn ends, and then finds everything sent meanwhile. Its share of the CPU is the same
//! (the kernel keeps its nice value); only the preemption at wake-up goes. A worker already
//! under another policy — one an operator chose with `chrt` or systemd's
//! `CPUSchedulingPolicy=` — keeps it.
//!
//! No crate the project uses sets a thread's policy and keeps its nice value (`nix` and
//! `rustix` have no `sched_setscheduler`; `thread-priority` resets the nice value), so this
//! file makes the two calls itself.

#![allow(unsafe_code)]

use std::io;

use crate::server::config::WorkerSched;

/// What [`apply`] did to the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// It runs under `SCHED_BATCH` now.
    Batch,
    /// It was under another policy than the default one and keeps it (the raw number).
    Kept(i32),
    /// `--worker-sched normal`: nothing was asked.
    Untouched,
}

/// Puts the calling thread under the policy `sched` asks for.
pub(crate) fn apply(sched: WorkerSched) -> io::Result<Applied> {
    if sched == WorkerSched::Normal {
        return Ok(Applied::Untouched);
    }
    // SAFETY: pid 0 is the calling thread; the call reads nothing through pointers.
    let raw = unsafe { libc::sched_getscheduler(0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // The policy, without the reset-on-fork flag a parent may have set beside it (kept below).
    let reset_on_fork = raw & libc::SCHED_RESET_ON_FORK;
    let current = raw & !libc::SCHED_RESET_ON_FORK;
    if current == libc::SCHED_BATCH {
        return Ok(Applied::Batch);
    }
    if current != libc::SCHED_OTHER {
        return Ok(Applied::Kept(current));
    }
    // SCHED_BATCH takes static priority 0; the nice value is not part of the call and stays.
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, initialised sched_param that outlives the call, which only
    // reads it.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH | reset_on_fork, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Applied::Batch)
}

/// The kernel's name of a policy number, for the log.
pub(crate) fn policy_name(policy: i32) -> &'static str {
    match policy {
        libc::SCHED_OTHER => "SCHED_OTHER",
        libc::SCHED_FIFO => "SCHED_FIFO",
        libc::SCHED_RR => "SCHED_RR",
        libc::SCHED_BATCH => "SCHED_BATCH",
        libc::SCHED_IDLE => "SCHED_IDLE",
        6 => "SCHED_DEADLINE", // not in libc for Linux
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field `n` of the calling thread's `/proc/thread-self/stat`, counting from 1 (the pid).
    fn stat_field(n: usize) -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields 1 and 2 are the pid and the name in parentheses, which may hold spaces.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(n - 3).unwrap().parse().unwrap()
    }

    fn policy() -> i32 {
        stat_field(41) as i32
    }

    fn nice() -> i64 {
        stat_field(19)
    }

    /// Runs `f` on a thread of its own, so that what it does to its policy stays there.
    fn on_a_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().unwrap();
    }

    /// Puts the calling thread under `policy` from outside `apply`, as a parent would.
    fn start_under(policy: i32) {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: as in `apply`.
        assert_eq!(unsafe { libc::sched_setscheduler(0, policy, &param) }, 0);
    }

    #[test]
    fn batch_moves_a_default_thread_and_keeps_its_nice_value() {
        on_a_thread(|| {
            // A nice value of its own first (raising it needs no privilege): on Linux, `who`
            // 0 is the calling thread.
            let raised = (nice() + 3).min(19);
            // SAFETY: a plain system call with no pointers.
            assert_eq!(
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, raised as i32) },
                0
            );
            assert_eq!(nice(), raised);
            assert_eq!(policy(), libc::SCHED_OTHER);
            assert_eq!(apply(WorkerSched::Batch).unwrap(), Applied::Batch);
            assert_eq!(policy(), libc::SCHED_BATCH);
            assert_eq!(nice(), raised);
            // Asked again, it stays.
            assert_eq!(apply(WorkerSched::Batch).unwrap(), Applied::Batch);
        });
    }

    #[test]
    fn normal_leaves_the_thread_alone() {
        on_a_thread(|| {
            assert_eq!(apply(WorkerSched::Normal).unwrap(), Applied::Untouched);
            assert_eq!(policy(), libc::SCHED_OTHER);
        });
    }

    #[test]
    fn reset_on_fork_is_seen_through_and_kept() {
        on_a_thread(|| {
            // Setting the flag needs no privilege; clearing it would.
            start_under(libc::SCHED_OTHER | libc::SCHED_RESET_ON_FORK);
            assert_eq!(apply(WorkerSched::Batch).unwrap(), Applied::Batch);
            assert_eq!(policy(), libc::SCHED_BATCH);
            // SAFETY: as in `apply`.
            let raw = unsafe { libc::sched_getscheduler(0) };
            assert_eq!(raw, libc::SCHED_BATCH | libc::SCHED_RESET_ON_FORK);
        });
    }

    #[test]
    fn a_policy_chosen_elsewhere_is_kept() {
        on_a_thread(|| {
            start_under(libc::SCHED_IDLE);
            assert_eq!(
                apply(WorkerSched::Batch).unwrap(),
                Applied::Kept(libc::SCHED_IDLE)
            );
            assert_eq!(policy(), libc::SCHED_IDLE);
        });
    }
}
