//! The producers' end of the hand-off queue, and the small handles that read or steer the
//! pool without keeping its queue open.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Sender};

use super::Notify;
use super::gate::Gate;

/// Why a job could not be queued; the job is handed back.
#[derive(PartialEq, Eq)]
pub enum SubmitError<T> {
    /// The queue is at capacity (for `submit_timeout`: it stayed so for the whole timeout).
    Full(T),
    /// The pool was closed.
    Closed(T),
}

impl<T> SubmitError<T> {
    /// The job that was not queued.
    pub fn into_inner(self) -> T {
        match self {
            SubmitError::Full(job) | SubmitError::Closed(job) => job,
        }
    }
}

impl<T> fmt::Debug for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => f.write_str("Full(..)"),
            SubmitError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => f.write_str("hand-off queue full"),
            SubmitError::Closed(_) => f.write_str("hand-off queue closed"),
        }
    }
}

impl<T> std::error::Error for SubmitError<T> {}

/// Wakes a pool's workers without keeping its queue open: what a shutdown hook holds.
#[derive(Clone)]
pub struct Wakers {
    pub(super) notifiers: Arc<[Arc<dyn Notify>]>,
}

impl Wakers {
    /// Wakes every worker, for instance so that each notices a shutdown flag.
    pub fn wake_all(&self) {
        for notifier in self.notifiers.iter() {
            notifier.notify();
        }
    }
}

impl fmt::Debug for Wakers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wakers")
            .field("workers", &self.notifiers.len())
            .finish()
    }
}

/// Sets how many of a pool's workers take new jobs: the first `n`, in turn. What a load
/// balancer holds; all of them at first.
#[derive(Debug, Clone)]
pub struct Spread {
    pub(super) in_use: Arc<AtomicUsize>,
    pub(super) size: usize,
}

impl Spread {
    /// New jobs go to the first `n` workers (at least one, at most all of them).
    pub fn set(&self, n: usize) {
        self.in_use.store(n.clamp(1, self.size), Ordering::Relaxed);
    }

    /// How many workers take new jobs.
    pub fn get(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// The pool's worker count.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// The submitting side of a pool: cheap to clone, one per producer thread.
pub struct Submitter<T> {
    /// One lane per worker; the queue is open while any submitter holds them.
    pub(super) lanes: Arc<[Sender<T>]>,
    pub(super) gate: Arc<Gate>,
    pub(super) notifiers: Arc<[Arc<dyn Notify>]>,
    pub(super) next: Arc<AtomicUsize>,
    /// Lanes that take new jobs: the first this many ([`Spread`]).
    pub(super) in_use: Arc<AtomicUsize>,
}

impl<T> Clone for Submitter<T> {
    fn clone(&self) -> Self {
        Submitter {
            lanes: Arc::clone(&self.lanes),
            gate: Arc::clone(&self.gate),
            notifiers: Arc::clone(&self.notifiers),
            next: Arc::clone(&self.next),
            in_use: Arc::clone(&self.in_use),
        }
    }
}

impl<T> fmt::Debug for Submitter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Submitter")
            .field("queued", &self.queued())
            .field("workers", &self.notifiers.len())
            .finish()
    }
}

impl<T> Submitter<T> {
    /// Queues `job` if there is room, then wakes the next worker in turn. Never blocks.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] when the queue is at capacity, [`SubmitError::Closed`] when the
    /// pool is closed; both hand the job back.
    pub fn try_submit(&self, job: T) -> Result<(), SubmitError<T>> {
        if !self.gate.enter(None) {
            return Err(SubmitError::Full(job));
        }
        self.dispatch(job)
    }

    /// Queues `job`, waiting at most `timeout` for room, then wakes the next worker in turn.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] when no room came within `timeout`, [`SubmitError::Closed`] when
    /// the pool is closed; both hand the job back.
    pub fn submit_timeout(&self, job: T, timeout: Duration) -> Result<(), SubmitError<T>> {
        if !self
            .gate
            .enter(Some(crate::time::later(Instant::now(), timeout)))
        {
            return Err(SubmitError::Full(job));
        }
        self.dispatch(job)
    }

    /// Jobs queued and not yet taken by a worker.
    pub fn queued(&self) -> usize {
        *self.gate.queued.lock()
    }

    /// Puts `job` (its place in the gate already taken) on the next lane in use and wakes
    /// that worker; a lane whose worker has returned is passed over, for any other lane.
    fn dispatch(&self, mut job: T) -> Result<(), SubmitError<T>> {
        let in_use = self
            .in_use
            .load(Ordering::Relaxed)
            .clamp(1, self.lanes.len());
        let first = self.next.fetch_add(1, Ordering::Relaxed) % in_use;
        for step in 0..self.lanes.len() {
            let turn = (first + step) % self.lanes.len();
            match self.lanes[turn].send(job) {
                Ok(()) => {
                    self.notifiers[turn].notify();
                    return Ok(());
                }
                Err(channel::SendError(back)) => job = back,
            }
        }
        self.gate.leave();
        Err(SubmitError::Closed(job))
    }
}
