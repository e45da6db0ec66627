//! Unit tests for the pool: hand-off, capacity, waking, closing and joining.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use super::*;

/// Wakes a worker parked in `park_timeout`.
#[derive(Default)]
struct Unpark(OnceLock<Thread>);

impl Notify for Unpark {
    fn notify(&self) {
        if let Some(t) = self.0.get() {
            t.unpark();
        }
    }
}

/// Records every job it takes, with its own index; stops on `Closed`.
struct Recorder {
    index: usize,
    wake: Arc<Unpark>,
    seen: Arc<Mutex<Vec<(usize, u32)>>>,
    /// Jobs are held up here until the gate opens.
    gate: Arc<AtomicUsize>,
}

impl Worker<u32> for Recorder {
    fn notifier(&self) -> Arc<dyn Notify> {
        self.wake.clone()
    }

    fn run(self, inbox: Inbox<u32>) {
        let _ = self.wake.0.set(thread::current());
        while self.gate.load(Ordering::SeqCst) == 0 {
            thread::park_timeout(Duration::from_millis(5));
        }
        loop {
            match inbox.try_take() {
                Ok(Some(job)) => self.seen.lock().unwrap().push((self.index, job)),
                Ok(None) => thread::park_timeout(Duration::from_millis(50)),
                Err(Closed) => return,
            }
        }
    }
}

type Seen = Arc<Mutex<Vec<(usize, u32)>>>;

fn recorder_pool(size: usize, capacity: usize) -> (Pool<u32>, Seen, Arc<AtomicUsize>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(AtomicUsize::new(0));
    let pool = Pool::spawn("test-worker", size, capacity, |index| {
        Ok(Recorder {
            index,
            wake: Arc::new(Unpark::default()),
            seen: seen.clone(),
            gate: gate.clone(),
        })
    })
    .unwrap();
    (pool, seen, gate)
}

#[test]
fn every_job_is_taken_exactly_once() {
    let (mut pool, seen, gate) = recorder_pool(3, 8);
    gate.store(1, Ordering::SeqCst);
    let submitter = pool.submitter();
    for job in 0..500 {
        submitter
            .submit_timeout(job, Duration::from_secs(5))
            .unwrap();
    }
    drop(submitter);
    pool.close();
    pool.join_timeout(Duration::from_secs(5)).unwrap();
    let mut jobs: Vec<u32> = seen.lock().unwrap().iter().map(|&(_, j)| j).collect();
    jobs.sort_unstable();
    assert_eq!(jobs, (0..500).collect::<Vec<_>>());
}

#[test]
fn jobs_are_spread_evenly_over_the_workers() {
    let (mut pool, seen, gate) = recorder_pool(4, 1024);
    let submitter = pool.submitter();
    for job in 0..400 {
        submitter.try_submit(job).unwrap();
    }
    drop(submitter);
    gate.store(1, Ordering::SeqCst);
    pool.close();
    pool.join_timeout(Duration::from_secs(5)).unwrap();
    let seen = seen.lock().unwrap();
    for worker in 0..4 {
        let taken = seen.iter().filter(|&&(w, _)| w == worker).count();
        assert_eq!(taken, 100, "worker {worker}");
    }
}

#[test]
fn new_jobs_go_to_the_workers_in_use_only() {
    let (mut pool, seen, gate) = recorder_pool(4, 1024);
    let spread = pool.spread();
    assert_eq!((spread.get(), spread.size()), (4, 4));
    let submitter = pool.submitter();
    spread.set(2);
    for job in 0..100 {
        submitter.try_submit(job).unwrap();
    }
    // Out of range both ways: at least one worker, at most all of them.
    spread.set(0);
    assert_eq!(spread.get(), 1);
    for job in 100..110 {
        submitter.try_submit(job).unwrap();
    }
    spread.set(9);
    assert_eq!(spread.get(), 4);
    drop(submitter);
    gate.store(1, Ordering::SeqCst);
    pool.close();
    pool.join_timeout(Duration::from_secs(5)).unwrap();
    let seen = seen.lock().unwrap();
    let taken = |worker, jobs: std::ops::Range<u32>| {
        seen.iter()
            .filter(|&&(w, j)| w == worker && jobs.contains(&j))
            .count()
    };
    assert_eq!([taken(0, 0..100), taken(1, 0..100)], [50, 50]);
    assert_eq!(taken(2, 0..110) + taken(3, 0..110), 0);
    assert_eq!(taken(0, 100..110), 10);
}

#[test]
fn capacity_counts_what_every_lane_holds() {
    let (pool, _seen, gate) = recorder_pool(3, 5);
    let submitter = pool.submitter();
    for job in 0..5 {
        submitter.try_submit(job).unwrap();
    }
    assert_eq!(submitter.queued(), 5);
    assert_eq!(submitter.try_submit(5), Err(SubmitError::Full(5)));
    // Once the workers take jobs, room comes back for a waiting submitter.
    gate.store(1, Ordering::SeqCst);
    submitter.submit_timeout(6, Duration::from_secs(5)).unwrap();
    drop(submitter);
    pool.join_timeout(Duration::from_secs(5)).unwrap();
}

#[test]
fn full_queue_hands_the_job_back() {
    let (pool, _seen, gate) = recorder_pool(1, 2);
    let submitter = pool.submitter();
    submitter.try_submit(1).unwrap();
    submitter.try_submit(2).unwrap();
    assert_eq!(submitter.queued(), 2);
    assert_eq!(submitter.try_submit(3), Err(SubmitError::Full(3)));
    let started = Instant::now();
    assert_eq!(
        submitter.submit_timeout(4, Duration::from_millis(50)),
        Err(SubmitError::Full(4))
    );
    assert!(started.elapsed() >= Duration::from_millis(50));
    gate.store(1, Ordering::SeqCst);
    drop(submitter);
    pool.join_timeout(Duration::from_secs(5)).unwrap();
}

#[test]
fn queue_closes_when_every_worker_has_left() {
    struct Quitter;
    impl Worker<u32> for Quitter {
        fn notifier(&self) -> Arc<dyn Notify> {
            Arc::new(Unpark::default())
        }
        fn run(self, _inbox: Inbox<u32>) {}
    }
    let pool = Pool::spawn("quitter", 2, 4, |_| Ok(Quitter)).unwrap();
    let submitter = pool.submitter();
    pool.join_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(submitter.try_submit(7), Err(SubmitError::Closed(7)));
    assert_eq!(
        submitter.submit_timeout(8, Duration::from_millis(10)),
        Err(SubmitError::Closed(8))
    );
}

#[test]
fn queued_jobs_are_delivered_after_close() {
    let (mut pool, seen, gate) = recorder_pool(2, 4);
    let submitter = pool.submitter();
    for job in 0..4 {
        submitter.try_submit(job).unwrap();
    }
    drop(submitter);
    pool.close();
    gate.store(1, Ordering::SeqCst);
    pool.join_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(seen.lock().unwrap().len(), 4);
}

#[test]
fn dropping_the_pool_only_signals() {
    let (pool, seen, gate) = recorder_pool(1, 1);
    let submitter = pool.submitter();
    drop(pool);
    // The workers were told to stop, but a live submitter still keeps the queue open.
    assert!(submitter.try_submit(1).is_ok());
    gate.store(1, Ordering::SeqCst);
    drop(submitter);
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(*seen.lock().unwrap(), [(0, 1)]);
}

#[test]
fn workers_stop_and_are_joined() {
    let (pool, _seen, gate) = recorder_pool(4, 4);
    assert_eq!(pool.size(), 4);
    gate.store(1, Ordering::SeqCst);
    let started = Instant::now();
    pool.join_timeout(Duration::from_secs(5)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn join_timeout_reports_running_workers() {
    let (pool, _seen, gate) = recorder_pool(2, 4);
    // The gate stays shut: the workers cannot return.
    let err = pool.join_timeout(Duration::from_millis(50)).unwrap_err();
    assert_eq!(err.running, 2);
    gate.store(1, Ordering::SeqCst);
}

#[test]
fn wake_reaches_workers_round_robin() {
    struct Count(AtomicUsize);
    impl Notify for Count {
        fn notify(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    struct Idle(Arc<Count>);
    impl Worker<u32> for Idle {
        fn notifier(&self) -> Arc<dyn Notify> {
            self.0.clone()
        }
        fn run(self, inbox: Inbox<u32>) {
            while inbox.take_timeout(Duration::from_millis(10)) != Err(Closed) {}
        }
    }
    let counts: Vec<Arc<Count>> = (0..3)
        .map(|_| Arc::new(Count(AtomicUsize::new(0))))
        .collect();
    let pool = Pool::spawn("rr", 3, 16, |i| Ok(Idle(counts[i].clone()))).unwrap();
    let submitter = pool.submitter();
    for job in 0..9 {
        submitter.try_submit(job).unwrap();
    }
    drop(submitter);
    for c in &counts {
        assert_eq!(c.0.load(Ordering::SeqCst), 3);
    }
    pool.join_timeout(Duration::from_secs(5)).unwrap();
}

#[test]
fn pool_handles_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Submitter<u32>>();
    assert_send::<Pool<u32>>();
    assert_send::<Inbox<u32>>();
}
