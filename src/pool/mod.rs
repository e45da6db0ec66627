//! A fixed set of named worker threads fed through one bounded hand-off queue.
//!
//! The pool owns the threads, the queue and the bookkeeping that lets its owner shut it down
//! with a deadline. It knows nothing of TCP: what a job is, how a worker waits for one and how
//! it is woken are the worker's business ([`Worker`], [`Notify`]). The server hands accepted
//! connections through it; the queue's capacity is the server's `--backlog`.
//!
//! The queue is one lane per worker behind one shared capacity, as memcached dispatches
//! connections: each job goes to the next worker in turn, which alone takes it. Workers that
//! merely competed for one shared queue would not share the work evenly — a worker that is
//! awake takes what a sleeping one was woken for.
//!
//! Lifecycle: [`Pool::spawn`] starts the workers; [`Submitter::try_submit`] and
//! [`Submitter::submit_timeout`] queue a job for the next worker in turn and wake it;
//! [`Pool::close`] (or dropping every submitter and the pool) disconnects the queue, after which
//! workers still receive what is queued for them and then see [`Closed`];
//! [`Pool::join_timeout`] waits, with a deadline, for every worker to return. Dropping a pool
//! only closes it; waiting is always an explicit, bounded call.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};

#[cfg(test)]
mod test;

/// How the pool wakes a worker that may be waiting for something else (its poller, a condvar).
pub trait Notify: Send + Sync {
    /// Wakes the worker. Called after a job was queued; may be called spuriously.
    fn notify(&self);
}

/// One worker of a pool: built on the caller's thread, then moved onto its own thread.
pub trait Worker<T>: Send + 'static {
    /// How the pool wakes this worker when a job is queued. Called once, before [`Worker::run`].
    fn notifier(&self) -> Arc<dyn Notify>;

    /// The worker's loop: take jobs from `inbox` (and do whatever else the worker does) until
    /// the inbox reports [`Closed`] and the worker's own work is finished.
    fn run(self, inbox: Inbox<T>);
}

/// One worker's end of the hand-off queue: the lane of jobs meant for it.
///
/// It also carries the worker's "done" token: when every inbox has been dropped, the pool
/// knows that every worker has returned.
pub struct Inbox<T> {
    jobs: Receiver<T>,
    gate: Arc<Gate>,
    _done: Sender<()>,
}

/// The queue's shared capacity: jobs queued on any lane and not yet taken.
#[derive(Debug)]
struct Gate {
    queued: Mutex<usize>,
    room: Condvar,
    capacity: usize,
}

impl Gate {
    /// Takes a place, waiting until `deadline` for one (`None`: do not wait). Returns whether
    /// it got one.
    fn enter(&self, deadline: Option<Instant>) -> bool {
        let mut queued = self.queued.lock();
        while *queued >= self.capacity {
            let Some(deadline) = deadline else {
                return false;
            };
            if self.room.wait_until(&mut queued, deadline).timed_out() && *queued >= self.capacity {
                return false;
            }
        }
        *queued += 1;
        true
    }

    /// Gives a place back.
    fn leave(&self) {
        *self.queued.lock() -= 1;
        self.room.notify_one();
    }
}

/// The queue is closed and empty: no job will ever arrive again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("hand-off queue closed")
    }
}

impl std::error::Error for Closed {}

impl<T> Inbox<T> {
    /// Takes one queued job without blocking: `Ok(None)` when the queue is empty but open.
    ///
    /// # Errors
    ///
    /// [`Closed`] once the queue is disconnected and everything queued has been taken.
    pub fn try_take(&self) -> Result<Option<T>, Closed> {
        match self.jobs.try_recv() {
            Ok(job) => {
                self.gate.leave();
                Ok(Some(job))
            }
            Err(channel::TryRecvError::Empty) => Ok(None),
            Err(channel::TryRecvError::Disconnected) => Err(Closed),
        }
    }

    /// Takes one job, waiting at most `timeout` for one: `Ok(None)` when none came.
    ///
    /// # Errors
    ///
    /// [`Closed`] once the queue is disconnected and everything queued has been taken.
    pub fn take_timeout(&self, timeout: Duration) -> Result<Option<T>, Closed> {
        match self.jobs.recv_timeout(timeout) {
            Ok(job) => {
                self.gate.leave();
                Ok(Some(job))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(Closed),
        }
    }
}

impl<T> fmt::Debug for Inbox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("queued", &self.jobs.len())
            .finish()
    }
}

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

/// Reads how many jobs are queued without keeping the queue open: what a stats reader holds.
#[derive(Debug, Clone)]
pub struct Depth {
    gate: Arc<Gate>,
}

impl Depth {
    /// Jobs queued and not yet taken by a worker.
    pub fn get(&self) -> usize {
        *self.gate.queued.lock()
    }
}

/// Wakes a pool's workers without keeping its queue open: what a shutdown hook holds.
#[derive(Clone)]
pub struct Wakers {
    notifiers: Arc<[Arc<dyn Notify>]>,
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
    in_use: Arc<AtomicUsize>,
    size: usize,
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
    lanes: Arc<[Sender<T>]>,
    gate: Arc<Gate>,
    notifiers: Arc<[Arc<dyn Notify>]>,
    next: Arc<AtomicUsize>,
    /// Lanes that take new jobs: the first this many ([`Spread`]).
    in_use: Arc<AtomicUsize>,
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

/// A fixed set of worker threads and the bounded queue that feeds them.
///
/// # Examples
///
/// A worker that sums the numbers it is handed, woken by thread parking:
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::thread::{self, Thread};
/// use std::time::Duration;
/// use tcpool::pool::{Inbox, Notify, Pool, Worker};
///
/// struct Unpark(std::sync::OnceLock<Thread>);
/// impl Notify for Unpark {
///     fn notify(&self) {
///         if let Some(thread) = self.0.get() {
///             thread.unpark();
///         }
///     }
/// }
///
/// struct Summer { total: Arc<AtomicU64>, wake: Arc<Unpark> }
/// impl Worker<u64> for Summer {
///     fn notifier(&self) -> Arc<dyn Notify> { self.wake.clone() }
///     fn run(self, inbox: Inbox<u64>) {
///         let _ = self.wake.0.set(thread::current());
///         while let Ok(job) = inbox.try_take() {
///             match job {
///                 Some(n) => { self.total.fetch_add(n, Ordering::Relaxed); }
///                 None => thread::park_timeout(Duration::from_millis(10)),
///             }
///         }
///     }
/// }
///
/// let total = Arc::new(AtomicU64::new(0));
/// let mut pool = Pool::spawn("summer", 2, 4, |_| {
///     Ok(Summer { total: total.clone(), wake: Arc::new(Unpark(Default::default())) })
/// })?;
/// let submitter = pool.submitter();
/// for n in 1..=10 {
///     submitter.submit_timeout(n, Duration::from_secs(5)).unwrap();
/// }
/// drop(submitter);
/// pool.close();
/// pool.join_timeout(Duration::from_secs(5)).unwrap();
/// assert_eq!(total.load(Ordering::Relaxed), 55);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Pool<T> {
    /// The pool's own submitter; `None` once closed. Other clones may outlive it.
    submitter: Option<Submitter<T>>,
    notifiers: Arc<[Arc<dyn Notify>]>,
    threads: Vec<JoinHandle<()>>,
    /// Every worker's inbox holds a sender of this channel and never sends: it disconnects
    /// exactly when the last worker has returned.
    done: Receiver<()>,
}

impl<T> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.threads.len())
            .field("closed", &self.submitter.is_none())
            .finish()
    }
}

/// Not every worker returned within the time given to [`Pool::join_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinTimeout {
    /// Workers still running when the time ran out.
    pub running: usize,
}

impl fmt::Display for JoinTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} worker(s) still running at the deadline",
            self.running
        )
    }
}

impl std::error::Error for JoinTimeout {}

impl<T: Send + 'static> Pool<T> {
    /// Builds `size` workers with `make(index)` and starts each on a thread named
    /// `"{name}-{index}"`; the queue holds at most `capacity` jobs (at least one).
    ///
    /// # Errors
    ///
    /// Whatever `make` returns, or the error of a thread that could not be spawned. Workers
    /// already started are then told to stop.
    ///
    /// # Panics
    ///
    /// When `size` is zero: a pool without workers would accept jobs nobody takes.
    pub fn spawn<W, F>(name: &str, size: usize, capacity: usize, mut make: F) -> io::Result<Self>
    where
        W: Worker<T>,
        F: FnMut(usize) -> io::Result<W>,
    {
        assert!(size > 0, "a pool needs at least one worker");
        let gate = Arc::new(Gate {
            queued: Mutex::new(0),
            room: Condvar::new(),
            capacity: capacity.max(1),
        });
        // Lanes are unbounded: the gate bounds what is queued across all of them.
        let (lanes, receivers): (Vec<_>, Vec<_>) = (0..size).map(|_| channel::unbounded()).unzip();
        let (done_tx, done_rx) = channel::bounded(0);
        let mut workers = Vec::with_capacity(size);
        for index in 0..size {
            workers.push(make(index)?);
        }
        let notifiers: Arc<[Arc<dyn Notify>]> = workers.iter().map(W::notifier).collect();
        let mut threads = Vec::with_capacity(size);
        for ((index, worker), jobs) in workers.into_iter().enumerate().zip(receivers) {
            let inbox = Inbox {
                jobs,
                gate: Arc::clone(&gate),
                _done: done_tx.clone(),
            };
            // On error the inbox is dropped with the closure and the queue closes once
            // `lanes` goes: the workers already running see `Closed` and return.
            let thread = thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || worker.run(inbox))?;
            threads.push(thread);
        }
        let submitter = Submitter {
            lanes: lanes.into(),
            gate,
            notifiers: Arc::clone(&notifiers),
            next: Arc::new(AtomicUsize::new(0)),
            in_use: Arc::new(AtomicUsize::new(size)),
        };
        Ok(Pool {
            submitter: Some(submitter),
            notifiers,
            threads,
            done: done_rx,
        })
    }
}

impl<T> Pool<T> {
    /// A new handle for queueing jobs.
    ///
    /// # Panics
    ///
    /// After [`Pool::close`]: a closed pool takes no new producers.
    pub fn submitter(&self) -> Submitter<T> {
        self.submitter
            .clone()
            .expect("submitter() called on a closed pool")
    }

    /// The number of worker threads.
    pub fn size(&self) -> usize {
        self.threads.len()
    }

    /// A handle that reads the queue's depth and does not keep the queue open.
    ///
    /// # Panics
    ///
    /// After [`Pool::close`].
    pub fn depth(&self) -> Depth {
        let submitter = self
            .submitter
            .as_ref()
            .expect("depth() called on a closed pool");
        Depth {
            gate: Arc::clone(&submitter.gate),
        }
    }

    /// A handle that sets how many workers take new jobs, and does not keep the queue open.
    ///
    /// # Panics
    ///
    /// After [`Pool::close`].
    pub fn spread(&self) -> Spread {
        let submitter = self
            .submitter
            .as_ref()
            .expect("spread() called on a closed pool");
        Spread {
            in_use: Arc::clone(&submitter.in_use),
            size: self.threads.len(),
        }
    }

    /// A handle that wakes every worker and does not keep the queue open.
    pub fn wakers(&self) -> Wakers {
        Wakers {
            notifiers: Arc::clone(&self.notifiers),
        }
    }

    /// Drops the pool's own submitter and wakes every worker. Once every other
    /// [`Submitter`] is dropped too, workers drain what is queued and then see [`Closed`].
    /// Idempotent.
    pub fn close(&mut self) {
        self.submitter = None;
        self.wakers().wake_all();
    }

    /// Closes the pool, waits at most `timeout` for every worker to return, and joins them.
    ///
    /// # Errors
    ///
    /// [`JoinTimeout`] when some worker was still running at the deadline; those threads are
    /// left detached.
    pub fn join_timeout(mut self, timeout: Duration) -> Result<(), JoinTimeout> {
        self.close();
        let deadline = crate::time::later(Instant::now(), timeout);
        // Nobody sends on `done`: this returns when every worker dropped its inbox.
        if self.done.recv_deadline(deadline) == Err(channel::RecvTimeoutError::Timeout) {
            let running = self.threads.iter().filter(|t| !t.is_finished()).count();
            return Err(JoinTimeout { running });
        }
        for thread in self.threads.drain(..) {
            // A worker that panicked already reported it on stderr; the pool goes on.
            let _ = thread.join();
        }
        Ok(())
    }
}

impl<T> Drop for Pool<T> {
    /// Signals only: the workers are told the queue is closing, never waited for.
    fn drop(&mut self) {
        self.close();
    }
}
