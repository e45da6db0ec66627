//! One bench thread: a `mio` poller over its share of the connections, driving each through
//! connect, load, drain and close, and publishing its counts for the progress callback.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read as _};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::conn::{Conn, State};
use super::error::ErrorKind;
use super::histogram::{Tally, micros};
use super::plan::{Limit, Plan};
/// How often each thread checks the stop flag and the timeouts and publishes its counts.
pub(super) const TICK: Duration = Duration::from_millis(10);

/// Open loop: how early a message may go out. The poller sleeps in whole milliseconds
/// (rounded up), so waiting for each intended time exactly would send up to a millisecond
/// late and charge that to the server, or would need a spinning thread that takes a core
/// from the server it measures. Instead a message due within this slack goes out at once
/// and its latency runs from when it actually went out; one that goes out late (the
/// in-flight cap was reached) still counts from its intended time.
pub(super) const SCHEDULE_SLACK: Duration = Duration::from_millis(1);

/// Bytes read per `read` call; one buffer per thread.
pub(super) const READ_BUFFER: usize = 64 * 1024;

/// What one thread hands back.
pub(super) struct Outcome {
    pub(super) tally: Tally,
    pub(super) finished_at: Instant,
    pub(super) interrupted: bool,
}

/// One thread: a poller over its share of the connections.
pub(super) struct Worker<'a> {
    plan: &'a Plan<'a>,
    poll: Poll,
    conns: Vec<Conn>,
    /// Open loop: connections by when their next message may go out (its intended time less
    /// [`SCHEDULE_SLACK`]), soonest first.
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    tally: Tally,
    /// What this thread has added to `plan.live` so far: (completed, measured, errors).
    published: (u64, u64, u64),
    buf: Box<[u8]>,
    /// Connections not finished.
    active: usize,
    /// Past [`Plan::end`]: nothing new is queued; connections end once their replies are in.
    draining: bool,
}

impl<'a> Worker<'a> {
    /// Thread `t` of `threads` takes connections `t, t + threads, ...`.
    pub(super) fn new(plan: &'a Plan<'a>, t: usize, threads: usize) -> io::Result<Self> {
        let now = Instant::now();
        let total = plan.connections as u64;
        let conns: Vec<Conn> = (t..plan.connections)
            .step_by(threads)
            .map(|index| Conn {
                index,
                stream: None,
                state: State::Connecting(now),
                burst: Arc::clone(&plan.payloads[index % plan.payloads.len()]),
                inflight: VecDeque::with_capacity(plan.options.pipeline.min(1024)),
                to_write: 0,
                write_off: 0,
                read_off: 0,
                written: 0,
                received: 0,
                quota: match plan.options.limit {
                    Limit::Messages(n) => Some(n / total + u64::from((index as u64) < n % total)),
                    Limit::Duration(_) => None,
                },
                next_send: now,
                scheduled: false,
            })
            .collect();
        Ok(Worker {
            plan,
            poll: Poll::new()?,
            active: conns.len(),
            conns,
            due: BinaryHeap::new(),
            tally: Tally::new(),
            published: (0, 0, 0),
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            draining: false,
        })
    }

    pub(super) fn run(mut self) -> io::Result<Outcome> {
        let mut events = Events::with_capacity(1024);
        for i in 0..self.conns.len() {
            self.open(i);
        }
        let mut next_tick = Instant::now();
        let mut interrupted = false;
        loop {
            let now = Instant::now();
            if now >= next_tick {
                if self.plan.stop.load(Ordering::Relaxed) || self.plan.abort.load(Ordering::Relaxed)
                {
                    interrupted = self.active > 0;
                    break;
                }
                self.check_timeouts(now);
                self.publish();
                next_tick = now + TICK;
            }
            if !self.draining && self.plan.end.is_some_and(|end| now >= end) {
                self.start_draining();
            }
            self.send_due(now);
            if self.active == 0 {
                break;
            }
            let timeout = self.poll_timeout(now, next_tick);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                // A clock read per event (tens of nanoseconds), so that a long batch of events
                // does not stamp its last replies with its start.
                let now = Instant::now();
                let i = event.token().0;
                match self.conns[i].state {
                    State::Connecting(since) => self.on_connecting(i, since, now),
                    State::Open => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(i, now);
                        } else {
                            self.flush(i);
                        }
                    }
                    State::Finished => {}
                }
            }
        }
        let finished_at = Instant::now();
        for i in 0..self.conns.len() {
            if self.conns[i].state != State::Finished {
                self.close(i, None);
            }
        }
        self.publish();
        Ok(Outcome {
            tally: self.tally,
            finished_at,
            interrupted,
        })
    }

    /// How long to wait for events: until the next tick, the next intended send or the end.
    pub(super) fn poll_timeout(&self, now: Instant, next_tick: Instant) -> Duration {
        let mut wake = next_tick;
        if let Some(end) = self.plan.end.filter(|_| !self.draining) {
            wake = wake.min(end);
        }
        if let Some(&Reverse((at, _))) = self.due.peek() {
            wake = wake.min(at);
        }
        wake.saturating_duration_since(now)
    }

    pub(super) fn open(&mut self, i: usize) {
        let now = Instant::now();
        let connected = TcpStream::connect(self.plan.options.addr).and_then(|mut stream| {
            self.poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match connected {
            Ok(stream) => {
                let conn = &mut self.conns[i];
                conn.stream = Some(stream);
                conn.state = State::Connecting(now);
            }
            Err(e) => self.close(i, Some(ErrorKind::of_connect(&e))),
        }
    }

    /// A connecting socket had an event: connected, failed, or not yet.
    pub(super) fn on_connecting(&mut self, i: usize, since: Instant, now: Instant) {
        let Some(stream) = self.conns[i].stream.as_ref() else {
            return;
        };
        let failed = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        if let Some(e) = failed {
            log::debug!("bench connection {i} cannot connect: error={e}");
            return self.close(i, Some(ErrorKind::of_connect(&e)));
        }
        // Small messages must not wait for Nagle's algorithm; if this fails they still go.
        let _ = stream.set_nodelay(true);
        self.tally
            .connect
            .saturating_record(micros(now.duration_since(since)));
        self.plan.live.open.fetch_add(1, Ordering::Relaxed);
        let conn = &mut self.conns[i];
        conn.state = State::Open;
        if let Some(interval) = self.plan.interval {
            // Spread the connections' schedules evenly over one interval.
            let phase = interval.mul_f64(conn.index as f64 / self.plan.connections as f64);
            conn.next_send = now + phase;
        }
        self.pump(i, now);
    }

    /// Reads and verifies everything the socket has, then sends what may go next.
    pub(super) fn read(&mut self, i: usize, now: Instant) {
        let size = self.plan.options.size;
        let conn = &mut self.conns[i];
        let result = loop {
            let Some(stream) = conn.stream.as_mut() else {
                return;
            };
            match stream.read(&mut self.buf) {
                Ok(0) => break Err(ErrorKind::Closed),
                Ok(n) => {
                    if let Err(kind) = conn.consume(&self.buf[..n], size, now, &mut self.tally) {
                        break Err(kind);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(ErrorKind::of_transfer(&e)),
            }
        };
        match result {
            Ok(()) => self.pump(i, now),
            Err(kind) => self.close(i, Some(kind)),
        }
    }

    /// Queues what the connection may send now, writes it, and ends the connection when it
    /// has nothing left to send or await.
    pub(super) fn pump(&mut self, i: usize, now: Instant) {
        let plan = self.plan;
        let pipeline = plan.options.pipeline;
        let conn = &mut self.conns[i];
        match plan.interval {
            None => {
                while conn.inflight.len() < pipeline && conn.may_queue(now, self.draining, plan) {
                    conn.queue(now, now, plan, &mut self.tally);
                }
            }
            Some(interval) => {
                let horizon = now + SCHEDULE_SLACK;
                while conn.next_send <= horizon
                    && conn.inflight.len() < pipeline
                    && conn.may_queue(conn.next_send, self.draining, plan)
                {
                    conn.queue(conn.next_send, now, plan, &mut self.tally);
                    conn.next_send += interval;
                }
                // At the in-flight cap the next send waits for a reply, which pumps again.
                if !conn.scheduled
                    && conn.inflight.len() < pipeline
                    && conn.may_queue(conn.next_send, self.draining, plan)
                {
                    let wake = conn.next_send.checked_sub(SCHEDULE_SLACK);
                    self.due.push(Reverse((wake.unwrap_or(conn.next_send), i)));
                    conn.scheduled = true;
                }
            }
        }
        if conn.inflight.is_empty() && !conn.scheduled {
            self.close(i, None);
        } else {
            self.flush(i);
        }
    }

    pub(super) fn flush(&mut self, i: usize) {
        if let Err(kind) = self.conns[i].flush(self.plan.options.size) {
            self.close(i, Some(kind));
        }
    }

    /// Open loop: sends every message whose time has come.
    pub(super) fn send_due(&mut self, now: Instant) {
        while let Some(&Reverse((at, i))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            self.conns[i].scheduled = false;
            if self.conns[i].state == State::Open {
                self.pump(i, now);
            }
        }
    }

    /// Past the end: connections with nothing in flight end now, the others when their
    /// replies are in (or time out).
    pub(super) fn start_draining(&mut self) {
        self.draining = true;
        self.due.clear();
        for i in 0..self.conns.len() {
            let conn = &mut self.conns[i];
            conn.scheduled = false;
            if conn.state == State::Open && conn.inflight.is_empty() {
                self.close(i, None);
            }
        }
    }

    pub(super) fn check_timeouts(&mut self, now: Instant) {
        let options = self.plan.options;
        for i in 0..self.conns.len() {
            let conn = &self.conns[i];
            let kind = match conn.state {
                State::Connecting(since)
                    if now.duration_since(since) >= options.connect_timeout =>
                {
                    ErrorKind::ConnectTimeout
                }
                State::Open
                    if conn
                        .inflight
                        .front()
                        .is_some_and(|f| now.duration_since(f.sent) >= options.timeout) =>
                {
                    ErrorKind::Timeout
                }
                _ => continue,
            };
            self.close(i, Some(kind));
        }
    }

    /// Ends connection `i` for good, counting `error` if it failed.
    pub(super) fn close(&mut self, i: usize, error: Option<ErrorKind>) {
        let conn = &mut self.conns[i];
        if conn.state == State::Finished {
            return;
        }
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        if conn.state == State::Open {
            self.plan.live.open.fetch_sub(1, Ordering::Relaxed);
        }
        conn.state = State::Finished;
        conn.inflight.clear();
        conn.to_write = 0;
        self.active -= 1;
        if let Some(kind) = error {
            log::debug!("bench connection {} failed: kind={kind}", conn.index);
            *self.tally.errors.entry(kind).or_default() += 1;
        }
    }

    /// Adds what changed since last time to the live counts.
    pub(super) fn publish(&mut self) {
        let errors: u64 = self.tally.errors.values().sum();
        let now = (self.tally.completed, self.tally.messages, errors);
        let live = &self.plan.live;
        live.completed
            .fetch_add(now.0 - self.published.0, Ordering::Relaxed);
        live.measured
            .fetch_add(now.1 - self.published.1, Ordering::Relaxed);
        live.errors
            .fetch_add(now.2 - self.published.2, Ordering::Relaxed);
        self.published = now;
    }
}
