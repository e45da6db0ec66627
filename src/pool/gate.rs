//! The queue's one shared capacity, which every lane counts against: the backlog.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// The queue's shared capacity: jobs queued on any lane and not yet taken.
#[derive(Debug)]
pub(super) struct Gate {
    pub(super) queued: Mutex<usize>,
    pub(super) room: Condvar,
    pub(super) capacity: usize,
}

impl Gate {
    /// Takes a place, waiting until `deadline` for one (`None`: do not wait). Returns whether
    /// it got one.
    pub(super) fn enter(&self, deadline: Option<Instant>) -> bool {
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
    pub(super) fn leave(&self) {
        *self.queued.lock() -= 1;
        self.room.notify_one();
    }
}

/// Reads how many jobs are queued without keeping the queue open: what a stats reader holds.
#[derive(Debug, Clone)]
pub struct Depth {
    pub(super) gate: Arc<Gate>,
}

impl Depth {
    /// Jobs queued and not yet taken by a worker.
    pub fn get(&self) -> usize {
        *self.gate.queued.lock()
    }
}
