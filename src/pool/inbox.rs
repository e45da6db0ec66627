//! A worker's end of the hand-off queue.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender};

use super::gate::Gate;

/// One worker's end of the hand-off queue: the lane of jobs meant for it.
///
/// It also carries the worker's "done" token: when every inbox has been dropped, the pool
/// knows that every worker has returned.
pub struct Inbox<T> {
    pub(super) jobs: Receiver<T>,
    pub(super) gate: Arc<Gate>,
    pub(super) _done: Sender<()>,
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
