//! The control plane: one thread, `tcpool-control`, running a current-thread tokio runtime.
//!
//! Everything that talks to the outside world to steer the server — the admin endpoint today —
//! runs here as tasks, never on a worker: a slow or abusive HTTP client can slow the control
//! plane, never a session. The data plane (the mio workers) stays free of async code; a task
//! reaches it through the same library calls the console uses (the registry, the faults, the
//! shutdown), which never block on a socket.
//!
//! [`ControlPlane::start`] builds the runtime and its thread, [`ControlPlane::spawn`] runs a
//! future on it from any thread, and [`ControlPlane::stop`] (or dropping it) lets the tasks
//! that are still running finish for a short grace period, then drops them and joins the
//! thread.

use std::fmt;
use std::future::Future;
use std::io;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// How long [`ControlPlane::stop`] lets the running tasks finish before it drops them.
pub const STOP_GRACE: Duration = Duration::from_millis(500);

/// The control-plane thread and its runtime. A cheap [`Handle`] spawns onto it.
pub struct ControlPlane {
    handle: Handle,
    stop: Option<oneshot::Sender<Duration>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("tasks", &self.handle.metrics().num_alive_tasks())
            .finish()
    }
}

impl ControlPlane {
    /// Starts the `tcpool-control` thread with a current-thread runtime (I/O and timers).
    ///
    /// # Errors
    ///
    /// When the runtime (its epoll instance) or the thread cannot be created.
    pub fn start() -> io::Result<ControlPlane> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<Duration>();
        let thread = thread::Builder::new()
            .name("tcpool-control".into())
            .spawn(move || {
                let grace = runtime.block_on(async { stopped.await.unwrap_or(Duration::ZERO) });
                // Let what is still running (an answer being written) finish, briefly.
                let deadline = Instant::now() + grace;
                runtime.block_on(async {
                    while runtime_tasks() > 0 && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                });
                // Dropping the runtime drops every task left, closing its sockets.
                drop(runtime);
            })?;
        Ok(ControlPlane {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `future` on the control-plane thread.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// The runtime's handle (to register sockets or spawn from a task's own code).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Stops the thread: tasks still running get [`STOP_GRACE`] to finish, then are dropped.
    pub fn stop(mut self) {
        self.halt(STOP_GRACE);
    }

    fn halt(&mut self, grace: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(grace);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Tasks alive on the runtime this is called from.
fn runtime_tasks() -> usize {
    Handle::current().metrics().num_alive_tasks()
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.halt(STOP_GRACE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_the_control_thread_and_stop_ends_it() {
        let control = ControlPlane::start().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        control.spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let _ = tx.send(thread::current().name().map(str::to_owned));
        });
        let name = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(name.as_deref(), Some("tcpool-control"));
        // A task that never ends is dropped after the grace period.
        control.spawn(std::future::pending::<()>());
        let started = Instant::now();
        control.stop();
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
