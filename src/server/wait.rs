//! How a worker waits for its poller: a short, adaptive busy-poll while work keeps coming,
//! a sleep in the kernel otherwise.
//!
//! Sleeping in `epoll_wait` costs a wake-up every time a peer's next message arrives: the
//! sender's kernel path wakes the worker's thread, and the scheduler switches to it. When
//! messages come in quick succession, as under load, polling again without a timeout for a
//! few microseconds finds the next ones without that round trip. [`Spin`] decides how long:
//! only after a poll that found work, never while idle (an idle worker sleeps, at ~0 % CPU),
//! for a window that grows while spinning finds work and shrinks while it does not, so a
//! worker whose peers pause longer than the window stops spinning altogether.

use std::time::{Duration, Instant};

/// The longest a worker polls without sleeping after it last found work.
pub(crate) const MAX_SPIN: Duration = Duration::from_micros(50);

/// The shortest window worth spinning for; below it the worker sleeps at once.
const MIN_SPIN: Duration = Duration::from_micros(4);

/// A worker's busy-poll state: when it last found work and how long it may spin for more.
#[derive(Debug)]
pub(crate) struct Spin {
    window: Duration,
    last_work: Option<Instant>,
    spinning: bool,
}

impl Spin {
    pub(crate) fn new() -> Self {
        Spin {
            window: std::env::var("XSPIN").ok().and_then(|v| v.parse().ok()).map_or(MAX_SPIN, Duration::from_micros),
            last_work: None,
            spinning: false,
        }
    }

    /// The timeout for the next poll: zero while the spin window is open, else `sleep`.
    pub(crate) fn timeout(&mut self, now: Instant, sleep: Option<Duration>) -> Option<Duration> {
        let open = self
            .last_work
            .is_some_and(|at| !self.window.is_zero() && now.duration_since(at) < self.window);
        if open {
            self.spinning = true;
            return Some(Duration::ZERO);
        }
        if self.spinning {
            // The window closed with nothing found: spin for less next time.
            self.spinning = false;
            self.window /= 2;
            if self.window < MIN_SPIN {
                self.window = Duration::ZERO;
            }
        }
        sleep
    }

    /// Called after each poll with whether it found work.
    pub(crate) fn polled(&mut self, now: Instant, found: bool) {
        if !found {
            return;
        }
        if let Some(at) = self.last_work
            && !self.spinning
            && now.duration_since(at) < MAX_SPIN
        {
            // Slept, yet work came within the longest window: spinning would have caught it.
            self.window = (self.window * 2).clamp(MIN_SPIN, MAX_SPIN);
        }
        self.spinning = false;
        self.last_work = Some(now);
    }
}
