//! One bench thread: a `mio` poller over its share of the connections, driving each through
//! connect, greeting, load, drain and close, and publishing its counts for the progress
//! callback.
//!
//! The load starts only once every connection of every thread is open (or has failed): the
//! last thread to get there fixes the [`Schedule`] for all.
//!
//! Longer than 500 lines: one thread's event loop and the connection life it drives (connect,
//! greet, pump, read, close, the open-loop schedule), which all work on the loop's one borrow
//! of its connections.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read as _};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::conn::{Conn, State};
use super::error::{ErrorKind, Failure, FirstError};
use super::histogram::micros;
use super::plan::{Limit, Plan, Schedule};
use super::tally::Tally;
use crate::tls::Link;

/// How often each thread checks the stop flag and the timeouts and publishes its counts.
pub(super) const TICK: Duration = Duration::from_millis(10);

/// Full reads of one connection per wake-up: a server that sends without end cannot keep a
/// thread from its other connections, its timers and the stop flag. What is left is read
/// on the next turn of the loop.
const READ_BUDGET: usize = 16;

/// The load starts this long after the last connection is open, so that every thread (each
/// wakes at least every [`TICK`]) is waiting when it does.
const START_MARGIN: Duration = Duration::from_millis(25);

/// Open loop: how early a message may go out. The poller sleeps in whole milliseconds
/// (rounded up), so waiting for each intended time exactly would send up to a millisecond
/// late and charge that to the server, or would need a spinning thread that takes a core
/// from the server it measures. Instead a message due within this slack goes out at once
/// and its latency runs from when it actually went out; one that goes out late (the
/// in-flight cap was reached) still counts from its intended time.
pub(super) const SCHEDULE_SLACK: Duration = Duration::from_millis(1);

/// Bytes read per `read` call; one buffer per thread.
const READ_BUFFER: usize = 64 * 1024;

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
    /// Connections before this index have started their connect ([`Plan::connect_interval`]).
    next_open: usize,
    /// This thread's connections are all open or failed, and it said so.
    ready: bool,
    /// Known once every thread is ready.
    schedule: Option<Schedule>,
    /// Open loop: connections by when their next message may go out (its intended time less
    /// [`SCHEDULE_SLACK`]), soonest first.
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    tally: Tally,
    /// What this thread has added to `plan.live` so far: (completed, measured, errors).
    published: (u64, u64, u64),
    /// Calls of `publish`, for [`STREAM_EVERY`].
    ticks: u32,
    buf: Box<[u8]>,
    /// Connections not finished.
    active: usize,
    /// Past the schedule's end: nothing new is queued; connections end once their replies are
    /// in.
    draining: bool,
    /// Connections whose read stopped at [`READ_BUDGET`] with more to read, and whether
    /// their peer's end of stream is still to be read.
    read_again: Vec<(usize, bool)>,
}

impl<'a> Worker<'a> {
    /// Thread `t` of `threads` takes connections `t, t + threads, ...`.
    pub(super) fn new(plan: &'a Plan<'a>, t: usize, threads: usize) -> io::Result<Self> {
        let now = Instant::now();
        let total = plan.connections as u64;
        let conns: Vec<Conn> = (t..plan.connections)
            .step_by(threads)
            .map(|index| {
                let quota = match plan.options.limit {
                    Limit::Messages(n) => Some(n / total + u64::from((index as u64) < n % total)),
                    Limit::Duration(_) => None,
                };
                Conn::new(index, quota, now, plan)
            })
            .collect();
        Ok(Worker {
            plan,
            poll: Poll::new()?,
            active: conns.len(),
            conns,
            next_open: 0,
            ready: false,
            schedule: None,
            due: BinaryHeap::new(),
            tally: Tally::with_kinds(plan.framing.kinds()),
            published: (0, 0, 0),
            ticks: 0,
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            draining: false,
            read_again: Vec::new(),
        })
    }

    pub(super) fn run(mut self) -> io::Result<Outcome> {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now();
        let mut interrupted = false;
        loop {
            let now = Instant::now();
            self.open_due(now);
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
            self.check_ready(now);
            self.check_start(now);
            if let Some(end) = self.schedule.and_then(|s| s.end)
                && !self.draining
                && now >= end
            {
                self.start_draining();
            }
            self.send_due(now);
            if self.active == 0 && self.next_open >= self.conns.len() {
                break;
            }
            let timeout = if self.read_again.is_empty() {
                self.poll_timeout(now, next_tick)
            } else {
                Duration::ZERO
            };
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
                    State::Connecting(addr, since) => self.on_connecting(i, addr, since, now),
                    State::Handshaking(_) => self.on_handshaking(i, now),
                    State::Greeting(_) | State::Open => {
                        let closing = event.is_read_closed() || event.is_error();
                        if event.is_readable() || closing {
                            self.read(i, now, closing);
                        } else {
                            self.flush(i, now);
                        }
                    }
                    State::Finished => {}
                }
            }
            for (i, closing) in std::mem::take(&mut self.read_again) {
                if matches!(self.conns[i].state, State::Greeting(_) | State::Open) {
                    self.read(i, Instant::now(), closing);
                }
            }
        }
        let finished_at = Instant::now();
        for i in 0..self.conns.len() {
            if self.conns[i].state != State::Finished {
                // The window ends here: what is still in flight was in flight at its end
                // (once draining, `close` counts it).
                if !self.draining {
                    let end = self.schedule.and_then(|s| s.end);
                    self.tally.in_flight_at_end += self.conns[i].measured_in_flight(end);
                }
                self.close(i, None, finished_at);
            }
        }
        // A thread stopped before it was ready still lets the others go on.
        if !self.ready {
            self.ready = true;
            self.plan.thread_ready(finished_at, START_MARGIN);
        }
        self.stream();
        self.publish();
        Ok(Outcome {
            tally: self.tally,
            finished_at,
            interrupted,
        })
    }

    /// How long to wait for events: until the next tick, connect, intended send or the end.
    fn poll_timeout(&self, now: Instant, next_tick: Instant) -> Duration {
        let mut wake = next_tick;
        match self.schedule {
            Some(s) if !self.draining => {
                wake = wake.min(s.end.unwrap_or(wake));
                if now < s.go {
                    wake = wake.min(s.go);
                }
            }
            _ => {}
        }
        if let Some(at) = self.open_time(self.next_open) {
            wake = wake.min(at);
        }
        if let Some(&Reverse((at, _))) = self.due.peek() {
            wake = wake.min(at);
        }
        wake.saturating_duration_since(now)
    }

    /// When local connection `i` starts its connect, or `None` once all have.
    fn open_time(&self, i: usize) -> Option<Instant> {
        let conn = self.conns.get(i)?;
        Some(match self.plan.connect_interval {
            Some(gap) => self.plan.start + gap.mul_f64(conn.index as f64),
            None => self.plan.start,
        })
    }

    /// Starts the connects whose time has come.
    fn open_due(&mut self, now: Instant) {
        while self.open_time(self.next_open).is_some_and(|at| at <= now) {
            let i = self.next_open;
            self.next_open += 1;
            self.open(i, 0, now);
        }
    }

    /// Starts a connect of connection `i` to the address at `addr`.
    fn open(&mut self, i: usize, addr: usize, now: Instant) {
        let target = self.plan.options.addrs[addr];
        let connected = TcpStream::connect(target).and_then(|mut stream| {
            self.poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(match &self.plan.tls {
                Some(tls) => {
                    let conn = &mut self.conns[i];
                    let first = conn.reopens == 0;
                    let (config, resumes) = tls.pick(first, || conn.draw_below(1_000_000));
                    conn.wants_tickets = resumes;
                    conn.shaken_at = None;
                    let conn = rustls::ClientConnection::new(config.clone(), tls.name.clone())
                        .map_err(io::Error::other)?;
                    Link::tls(stream, conn)
                }
                None => Link::plain(stream),
            })
        });
        match connected {
            Ok(stream) => {
                let conn = &mut self.conns[i];
                conn.stream = Some(stream);
                conn.state = State::Connecting(addr, now);
            }
            Err(e) => self.connect_failed(i, addr, &e, now),
        }
    }

    /// A connect failed: the next address is tried, or the connection fails for good.
    fn connect_failed(&mut self, i: usize, addr: usize, e: &io::Error, now: Instant) {
        let target = self.plan.options.addrs[addr];
        log::debug!("bench connection {i} cannot connect: addr={target} error={e}");
        if let Some(mut stream) = self.conns[i].stream.take() {
            let _ = self.poll.registry().deregister(stream.socket_mut());
        }
        if addr + 1 < self.plan.options.addrs.len() {
            return self.open(i, addr + 1, now);
        }
        let failure = Failure::new(ErrorKind::of_connect(e), 0, format!("{target}: {e}"));
        self.close(i, Some(failure), now);
    }

    /// A connecting socket had an event: connected, failed, or not yet.
    fn on_connecting(&mut self, i: usize, addr: usize, since: Instant, now: Instant) {
        let Some(stream) = self.conns[i].stream.as_ref().map(Link::socket) else {
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
            return self.connect_failed(i, addr, &e, now);
        }
        // Small messages must not wait for Nagle's algorithm; if this fails they still go.
        let _ = stream.set_nodelay(true);
        if let Some(version) = self.plan.options.send_proxy {
            let link = self.conns[i].stream.as_mut().expect("a connecting socket");
            if let Err(e) = version.send(link.socket_mut()) {
                let failure = Failure::new(
                    ErrorKind::of_transfer(&e),
                    0,
                    format!("the PROXY header: {e}"),
                );
                return self.close(i, Some(failure), now);
            }
        }
        self.tally
            .connect
            .saturating_record(micros(now.duration_since(since)));
        // A reopened connection's connect is not another connection of the run's.
        if self.conns[i].reopens == 0 {
            self.tally.connected += 1;
        }
        self.plan.live.open.fetch_add(1, Ordering::Relaxed);
        if self.plan.options.tls.is_some() {
            self.conns[i].state = State::Handshaking(now);
            return self.on_handshaking(i, now);
        }
        self.connected(i, now);
    }

    /// A handshaking connection had an event (or just connected): the handshake goes on,
    /// ends, or failed.
    fn on_handshaking(&mut self, i: usize, now: Instant) {
        let conn = &mut self.conns[i];
        let Some(link) = conn.stream.as_mut() else {
            return;
        };
        match link.handshake() {
            Ok(true) => {
                conn.shaken_at = Some(now);
                if let (State::Handshaking(since), Some(state)) = (conn.state, link.conn()) {
                    let took = now.saturating_duration_since(since);
                    self.tally
                        .tls
                        .record(state, took, now, self.schedule.as_ref());
                }
                self.connected(i, now);
            }
            Ok(false) => {}
            Err(e) => {
                let why = crate::tls::error_text(&e);
                log::debug!("bench connection {i} TLS handshake failed: error={why}");
                let kind = match e.kind() {
                    io::ErrorKind::InvalidData => ErrorKind::Tls,
                    _ => ErrorKind::of_transfer(&e),
                };
                let failure = Failure::new(kind, 0, format!("TLS handshake: {why}"));
                self.close(i, Some(failure), now);
            }
        }
    }

    /// Connected (and, with TLS, the handshake done): the greeting goes out, and what came
    /// with the connect is read.
    fn connected(&mut self, i: usize, now: Instant) {
        self.conns[i].greet(self.plan, now);
        self.flush(i, now);
        // The connect's event may also have been the edge for bytes that came with it (a
        // server's greeting, or its `busy`): read them now, no other event will say so.
        self.read(i, now, true);
    }

    /// Once this thread's connections are all open (and greeted) or failed, says so.
    fn check_ready(&mut self, now: Instant) {
        if self.ready || self.next_open < self.conns.len() {
            return;
        }
        let waiting = self.conns.iter().any(|c| {
            matches!(
                c.state,
                State::Connecting(..) | State::Handshaking(_) | State::Greeting(_)
            )
        });
        if !waiting {
            self.ready = true;
            self.plan.thread_ready(now, START_MARGIN);
        }
    }

    /// Once the schedule is known and its start has come, every open connection begins.
    fn check_start(&mut self, now: Instant) {
        if self.schedule.is_some() {
            return;
        }
        let Some(&schedule) = self.plan.schedule.get() else {
            return;
        };
        if now < schedule.go {
            return;
        }
        self.schedule = Some(schedule);
        for i in 0..self.conns.len() {
            let conn = &mut self.conns[i];
            if conn.state != State::Open {
                continue;
            }
            if let Some(interval) = self.plan.interval {
                // Spread the connections' schedules evenly over one interval.
                let phase = interval.mul_f64(conn.index as f64 / self.plan.connections as f64);
                conn.next_send = schedule.go + phase;
            }
            self.pump(i, now);
        }
    }

    /// Reads and checks everything the socket has, then sends what may go next. `closing`:
    /// the event also said the peer closed, so the end of stream must be read too.
    fn read(&mut self, i: usize, now: Instant, closing: bool) {
        let conn = &mut self.conns[i];
        let mut reads = 0;
        let result = loop {
            let Some(stream) = conn.stream.as_mut() else {
                return;
            };
            if reads == READ_BUDGET {
                self.read_again.push((i, closing));
                break Ok(());
            }
            reads += 1;
            let drains = stream.short_read_drains();
            match stream.read(&mut self.buf) {
                Ok(0) if stream.closed_without_notify() => {
                    break Err(Failure::new(
                        ErrorKind::Truncated,
                        conn.received,
                        "the server closed the connection without TLS close_notify",
                    ));
                }
                Ok(0) => {
                    break Err(Failure::new(
                        ErrorKind::Closed,
                        conn.received,
                        "the server closed the connection",
                    ));
                }
                Ok(n) => {
                    let chunk = &self.buf[..n];
                    let schedule = self.schedule.as_ref();
                    match conn.consume(chunk, now, self.plan, schedule, &mut self.tally) {
                        Err(f) => break Err(f),
                        Ok(true) => return self.reopen(i, now),
                        Ok(false) => {}
                    }
                    // A short read emptied the socket's receive buffer: asking again would
                    // only hear `WouldBlock`, a system call per event for nothing. Bytes that
                    // arrive later raise a new edge; an end of stream already seen does not.
                    if n < self.buf.len() && !closing && drains {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = ErrorKind::of_transfer(&e);
                    break Err(Failure::new(kind, conn.received, e.to_string()));
                }
            }
        };
        match result {
            Ok(()) if self.schedule.is_some() => self.pump(i, now),
            Ok(()) => {}
            Err(failure) => self.close(i, Some(failure), now),
        }
    }

    /// The server closes the connection after the reply just read (HTTP `Connection: close`):
    /// it is opened again, to the first address, and greeted again; what was in flight is sent
    /// again on it. Past the window's end, or with nothing left to send, it just ends.
    fn reopen(&mut self, i: usize, now: Instant) {
        let conn = &self.conns[i];
        if self.draining || (conn.quota == Some(0) && conn.inflight.is_empty()) {
            return self.close(i, None, now);
        }
        let conn = &mut self.conns[i];
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(stream.socket_mut());
        }
        if matches!(
            conn.state,
            State::Open | State::Greeting(_) | State::Handshaking(_)
        ) {
            self.plan.live.open.fetch_sub(1, Ordering::Relaxed);
        }
        conn.forget(&mut self.tally);
        self.tally.reconnects += 1;
        self.open(i, 0, now);
    }

    /// `--reconnect-every`: the connection carried all it may; it is closed, politely (TLS's
    /// `close_notify`, then the end of stream), and opened again at once.
    fn recycle(&mut self, i: usize, now: Instant) {
        if let Some(link) = self.conns[i].stream.as_mut() {
            // The new connection does not depend on the old one's goodbye.
            let _ = link.shutdown_write();
        }
        self.reopen(i, now);
    }

    /// Queues what the connection may send now, writes it, and ends the connection when it
    /// has nothing left to send or await.
    fn pump(&mut self, i: usize, now: Instant) {
        let Some(schedule) = self.schedule else {
            return;
        };
        let plan = self.plan;
        let pipeline = plan.options.pipeline;
        let conn = &mut self.conns[i];
        if conn.state != State::Open {
            return;
        }
        match plan.interval {
            None => {
                while conn.inflight.len() < pipeline
                    && conn.may_queue(now, self.draining, &schedule)
                {
                    conn.queue(now, now, plan, &schedule, &mut self.tally);
                }
            }
            Some(interval) => {
                let horizon = now + SCHEDULE_SLACK;
                while conn.next_send <= horizon
                    && conn.inflight.len() < pipeline
                    && conn.may_queue(conn.next_send, self.draining, &schedule)
                {
                    conn.queue(conn.next_send, now, plan, &schedule, &mut self.tally);
                    conn.next_send += interval;
                }
                // At the in-flight cap the next send waits for a reply, which pumps again.
                if !conn.scheduled
                    && conn.inflight.len() < pipeline
                    && conn.may_queue(conn.next_send, self.draining, &schedule)
                {
                    let wake = conn.next_send.checked_sub(SCHEDULE_SLACK);
                    self.due.push(Reverse((wake.unwrap_or(conn.next_send), i)));
                    conn.scheduled = true;
                }
            }
        }
        if conn.used_up() && conn.inflight.is_empty() && !self.draining {
            if !tickets_in(conn, now) {
                return;
            }
            return self.recycle(i, now);
        }
        // Open loop, a next send past the end: the connection stays open, idle, until the
        // end, so that the window is -d and not the time of the last reply.
        let before_end = !self.draining && schedule.end.is_some_and(|end| now < end);
        if conn.inflight.is_empty() && !conn.scheduled && !before_end {
            self.close(i, None, now);
        } else {
            self.flush(i, now);
        }
    }

    fn flush(&mut self, i: usize, now: Instant) {
        if let Err(failure) = self.conns[i].flush() {
            self.close(i, Some(failure), now);
        }
    }

    /// Open loop: sends every message whose time has come.
    fn send_due(&mut self, now: Instant) {
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
    fn start_draining(&mut self) {
        self.draining = true;
        self.due.clear();
        let now = Instant::now();
        for i in 0..self.conns.len() {
            let conn = &mut self.conns[i];
            conn.scheduled = false;
            if conn.state == State::Open && conn.inflight.is_empty() {
                self.close(i, None, now);
            }
        }
    }

    fn check_timeouts(&mut self, now: Instant) {
        let options = self.plan.options;
        for i in 0..self.conns.len() {
            let conn = &self.conns[i];
            // A connection that carries no message and waited its time for tickets.
            if conn.state == State::Open
                && conn.used_up()
                && conn.inflight.is_empty()
                && !self.draining
                && self.schedule.is_some()
                && tickets_in(conn, now)
            {
                self.recycle(i, now);
                continue;
            }
            let failure = match conn.state {
                State::Connecting(addr, since)
                    if now.duration_since(since) >= options.connect_timeout =>
                {
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer within {:?}", options.connect_timeout),
                    );
                    self.connect_failed(i, addr, &e, now);
                    continue;
                }
                State::Handshaking(since)
                    if now.duration_since(since) >= options.connect_timeout =>
                {
                    Failure::new(
                        ErrorKind::Timeout,
                        0,
                        format!("no TLS handshake within {:?}", options.connect_timeout),
                    )
                }
                State::Greeting(since) if now.duration_since(since) >= options.timeout => {
                    Failure::new(
                        ErrorKind::Timeout,
                        conn.received,
                        format!("no reply to the first message within {:?}", options.timeout),
                    )
                }
                State::Open
                    if conn
                        .inflight
                        .front()
                        .is_some_and(|f| now.duration_since(f.sent) >= options.timeout) =>
                {
                    Failure::new(
                        ErrorKind::Timeout,
                        conn.received,
                        format!("no reply within {:?}", options.timeout),
                    )
                }
                _ => continue,
            };
            self.close(i, Some(failure), now);
        }
    }

    /// Ends connection `i` for good, counting `failure` if it failed.
    fn close(&mut self, i: usize, failure: Option<Failure>, now: Instant) {
        let conn = &mut self.conns[i];
        if conn.state == State::Finished {
            return;
        }
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(stream.socket_mut());
        }
        if matches!(
            conn.state,
            State::Open | State::Greeting(_) | State::Handshaking(_)
        ) {
            self.plan.live.open.fetch_sub(1, Ordering::Relaxed);
        }
        // Messages left unanswered after the window closed were in flight at its end.
        if self.draining {
            let end = self.schedule.and_then(|s| s.end);
            self.tally.in_flight_at_end += conn.measured_in_flight(end);
        }
        conn.state = State::Finished;
        conn.inflight.clear();
        self.active -= 1;
        if let Some(Failure { kind, detail }) = failure {
            log::debug!("bench connection {} failed: kind={kind}", conn.index);
            let detail = FirstError {
                connection: conn.index,
                ..detail
            };
            self.tally.error(kind, detail, now, self.schedule.as_ref());
        }
    }

    /// Adds what changed since last time to the live counts.
    fn publish(&mut self) {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(STREAM_EVERY) {
            self.stream();
        }
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

/// A streaming run's threads pass on their latencies every this many [`TICK`]s (200 ms).
const STREAM_EVERY: u32 = 20;

impl Worker<'_> {
    /// A streaming run: hands the latencies recorded since the last call to the run.
    fn stream(&mut self) {
        if let Some(deltas) = &self.plan.live.deltas
            && let Some(delta) = self.tally.fold_live()
        {
            deltas.lock().push(delta);
        }
    }
}

/// How long a connection that carries no message (`--reconnect-every 0`) waits for the TLS 1.3
/// session tickets its handshake asked for, which come after the handshake, before it closes
/// anyway (a server may send none).
const TICKET_WAIT: Duration = Duration::from_millis(50);

/// Whether `conn` may close as far as its tickets go: it asked for none, speaks TLS 1.2 (the
/// ticket comes within the handshake), has one, or waited [`TICKET_WAIT`] for it.
fn tickets_in(conn: &Conn, now: Instant) -> bool {
    if !conn.wants_tickets {
        return true;
    }
    let Some(rustls::Connection::Client(tls)) = conn.stream.as_ref().and_then(Link::conn) else {
        return true;
    };
    tls.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3)
        || tls.tls13_tickets_received() > 0
        || conn
            .shaken_at
            .is_none_or(|at| now.saturating_duration_since(at) >= TICKET_WAIT)
}
