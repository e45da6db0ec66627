//! The one door to a graceful shutdown.
//!
//! SIGINT, SIGTERM (wired up by the binary), `quit` on the operator console and tests all
//! call [`Shutdown::trigger`]. The first call sets the flag, runs the hooks the server
//! registered (wake every worker, unblock the acceptor) and releases anyone waiting; later
//! calls do nothing. What each part does once it sees the flag is its own business.
//!
//! A hand-over (`SIGHUP`, once a new process serves the same listening sockets) comes in
//! through [`Shutdown::hand_over`]: the same shutdown, except that what waits in the kernel's
//! queue is left to the new process instead of being accepted and told `quit`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

type Hook = Box<dyn FnOnce() + Send>;

/// A clonable, idempotent shutdown trigger and observer.
///
/// # Examples
///
/// ```
/// use tcpool::Shutdown;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
///
/// let shutdown = Shutdown::new();
/// let woken = Arc::new(AtomicBool::new(false));
/// let flag = woken.clone();
/// shutdown.on_trigger(move || flag.store(true, Ordering::SeqCst));
///
/// let observer = shutdown.clone();
/// let waiter = std::thread::spawn(move || observer.wait());
/// assert!(shutdown.trigger());
/// assert!(!shutdown.trigger()); // idempotent
/// waiter.join().unwrap();
/// assert!(woken.load(Ordering::SeqCst));
/// ```
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Read on hot paths without taking the lock.
    triggered: AtomicBool,
    /// Set (before `triggered`) when the shutdown is a hand-over.
    handed_over: AtomicBool,
    state: Mutex<State>,
    released: Condvar,
}

#[derive(Default)]
struct State {
    hooks: Vec<Hook>,
    triggered_at: Option<Instant>,
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

impl Shutdown {
    /// A shutdown that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the shutdown: sets the flag, runs every registered hook and wakes every waiter.
    /// Returns `true` for the call that did it, `false` for every later one.
    pub fn trigger(&self) -> bool {
        self.start(false)
    }

    /// Starts the shutdown of a server whose listening sockets another process now serves:
    /// as [`Shutdown::trigger`], but the acceptors leave the connections waiting in the
    /// kernel's queue to that process. Returns `false`, and changes nothing, when the shutdown
    /// was already triggered.
    pub fn hand_over(&self) -> bool {
        self.start(true)
    }

    /// Whether the shutdown was started by [`Shutdown::hand_over`].
    pub fn is_handed_over(&self) -> bool {
        self.inner.handed_over.load(Ordering::SeqCst)
    }

    fn start(&self, hand_over: bool) -> bool {
        let hooks = {
            let mut state = self.inner.state.lock();
            if self.inner.triggered.load(Ordering::SeqCst) {
                return false;
            }
            self.inner.handed_over.store(hand_over, Ordering::SeqCst);
            self.inner.triggered.store(true, Ordering::SeqCst);
            state.triggered_at = Some(Instant::now());
            std::mem::take(&mut state.hooks)
        };
        self.inner.released.notify_all();
        for hook in hooks {
            hook();
        }
        true
    }

    /// Whether [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// When the shutdown was triggered, if it was.
    pub fn triggered_at(&self) -> Option<Instant> {
        self.inner.state.lock().triggered_at
    }

    /// Runs `hook` once at trigger time, or at once if the shutdown was already triggered.
    pub fn on_trigger(&self, hook: impl FnOnce() + Send + 'static) {
        {
            let mut state = self.inner.state.lock();
            if !self.inner.triggered.load(Ordering::SeqCst) {
                state.hooks.push(Box::new(hook));
                return;
            }
        }
        hook();
    }

    /// Blocks until the shutdown is triggered.
    pub fn wait(&self) {
        let mut state = self.inner.state.lock();
        while !self.is_triggered() {
            self.inner.released.wait(&mut state);
        }
    }

    /// Blocks until the shutdown is triggered or `timeout` has passed; returns whether it was
    /// triggered. A bounded sleep that a shutdown cuts short.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = crate::time::later(Instant::now(), timeout);
        let mut state = self.inner.state.lock();
        while !self.is_triggered() {
            if self
                .inner
                .released
                .wait_until(&mut state, deadline)
                .timed_out()
            {
                break;
            }
        }
        self.is_triggered()
    }
}
