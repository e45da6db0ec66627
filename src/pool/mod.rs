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
//!
//! | file | what it owns |
//! | --- | --- |
//! | (this file) | [`Pool`]: starting the threads, closing the queue, joining with a deadline |
//! | `gate` | the one shared capacity (the backlog) and [`Depth`], which reads it |
//! | `inbox` | [`Inbox`]: a worker's lane |
//! | `submit` | [`Submitter`]: queueing a job and waking its worker; [`Wakers`], [`Spread`] |

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver};
use parking_lot::{Condvar, Mutex};

mod gate;
mod inbox;
mod submit;
#[cfg(test)]
mod test;

pub use gate::Depth;
use gate::Gate;
pub use inbox::{Closed, Inbox};
pub use submit::{Spread, SubmitError, Submitter, Wakers};

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
