//! The pool's hand-off: how fast jobs travel from one submitter through the bounded queue to
//! the workers, with the server's default backlog (4) and a roomy one, on one and two
//! workers. Each worker parks when its inbox is empty and is woken by the pool's [`Notify`],
//! as a server worker is woken through its poller.
//!
//! ```text
//! cargo bench --bench pool
//! ```

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, Thread};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tcpool::pool::{Inbox, Notify, Pool, Worker};

/// Jobs handed off per measured iteration.
const JOBS: u64 = 1_000;

/// Wakes a worker parked in `park_timeout`.
#[derive(Default)]
struct Unpark(OnceLock<Thread>);

impl Notify for Unpark {
    fn notify(&self) {
        if let Some(thread) = self.0.get() {
            thread.unpark();
        }
    }
}

/// Adds up the jobs it takes; returns when the pool closes.
struct Counter {
    done: Arc<AtomicU64>,
    wake: Arc<Unpark>,
}

impl Worker<u64> for Counter {
    fn notifier(&self) -> Arc<dyn Notify> {
        self.wake.clone()
    }

    fn run(self, inbox: Inbox<u64>) {
        let _ = self.wake.0.set(thread::current());
        loop {
            match inbox.try_take() {
                Ok(Some(job)) => {
                    self.done.fetch_add(black_box(job), Ordering::Relaxed);
                }
                Ok(None) => thread::park_timeout(Duration::from_millis(10)),
                Err(_closed) => return,
            }
        }
    }
}

fn handoff(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_handoff");
    group.throughput(Throughput::Elements(JOBS));
    for (workers, capacity) in [(1, 4), (2, 4), (2, 1024)] {
        let done = Arc::new(AtomicU64::new(0));
        let pool = Pool::spawn("bench-worker", workers, capacity, |_| {
            Ok(Counter {
                done: Arc::clone(&done),
                wake: Arc::new(Unpark::default()),
            })
        })
        .expect("spawn the pool");
        let submitter = pool.submitter();
        let id = BenchmarkId::new(format!("{workers}_workers"), format!("backlog_{capacity}"));
        group.bench_function(id, |b| {
            b.iter(|| {
                let target = done.load(Ordering::Relaxed) + JOBS;
                for _ in 0..JOBS {
                    submitter
                        .submit_timeout(1, Duration::from_secs(5))
                        .expect("a worker takes the job");
                }
                // Measured until the last job was taken, not merely queued.
                while done.load(Ordering::Relaxed) < target {
                    std::hint::spin_loop();
                }
            });
        });
        drop(submitter);
        pool.join_timeout(Duration::from_secs(5))
            .expect("workers return once the pool is closed");
    }
    group.finish();
}

criterion_group!(benches, handoff);
criterion_main!(benches);
