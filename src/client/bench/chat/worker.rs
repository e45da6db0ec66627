//! One thread of a chat run: its share of the clients on one `mio` poller, from connect to
//! the end of the drain.

use std::io::{self, Read as _, Write as _};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::report::{ErrorKind, Tally};
use super::track::{self, Tracker, Verdict};
use super::{ChatProtocol, Shared, wire};
use crate::client::bench::histogram::micros;

/// A sender writes no new line while this much is still waiting in its buffer.
const OUT_HIGH: usize = 16 << 10;

/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 << 10;

/// A received line longer than this is cut (kept only up to it): no payload is that long.
const MAX_LINE: usize = 4 << 10;

/// The longest a poll waits, so that deadlines and the stop flag are seen.
const TICK: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Joining,
    Ready,
    Dead,
}

struct Client {
    stream: TcpStream,
    /// Sender number, or reader number.
    index: usize,
    sender: bool,
    target: usize,
    state: State,
    /// The start of a line not yet ended.
    partial: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    /// Sender: the next line's number, and when it is due.
    seq: u64,
    due: Instant,
    /// Sender: the socket took less than it was given; wait until it is writable.
    blocked: bool,
    /// Reader: what it has seen.
    tracker: Option<Tracker>,
    /// Ready when the first line was due: its lines are expected.
    took_part: bool,
    /// The last line seen while joining, to show if joining fails.
    last_line: Vec<u8>,
}

pub(super) struct Worker<'a> {
    shared: &'a Shared<'a>,
    poll: Poll,
    clients: Vec<Client>,
    tally: Tally,
    prefix: Vec<u8>,
    nick_reply: Vec<Vec<u8>>,
    interval: Option<Duration>,
}

impl<'a> Worker<'a> {
    pub(super) fn new(shared: &'a Shared<'a>, thread: usize) -> io::Result<Worker<'a>> {
        let o = shared.options;
        let poll = Poll::new()?;
        let mut tally = Tally::new();
        let mut clients = Vec::new();
        let now = Instant::now();
        for i in (thread..o.senders + o.readers).step_by(shared.threads) {
            let sender = i < o.senders;
            let index = if sender { i } else { i - o.senders };
            let target = o.target_of(i);
            let stream = match TcpStream::connect(o.targets[target]) {
                Ok(s) => s,
                Err(e) => {
                    tally.error(ErrorKind::Connect, sender, &e.to_string());
                    continue;
                }
            };
            let mut stream = stream;
            poll.registry().register(
                &mut stream,
                Token(clients.len()),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            clients.push(Client {
                stream,
                index,
                sender,
                target,
                state: State::Connecting,
                partial: Vec::new(),
                out: Vec::new(),
                written: 0,
                seq: 0,
                due: now,
                blocked: false,
                tracker: (!sender).then(|| Tracker::new(o.senders)),
                took_part: false,
                last_line: Vec::new(),
            });
        }
        let nick_reply = (0..o.senders)
            .map(|s| format!("* you are now {}", wire::nick(shared.run, s)).into_bytes())
            .collect();
        Ok(Worker {
            shared,
            poll,
            clients,
            tally,
            prefix: track::prefix(shared.run),
            nick_reply,
            interval: o.rate.map(|r| Duration::from_secs_f64(1.0 / r)),
        })
    }

    pub(super) fn run(mut self) -> io::Result<Tally> {
        let o = self.shared.options;
        let mut events = Events::with_capacity(1024);
        let join_deadline = self.shared.epoch + o.timeout;
        let mut set = false;
        // Joining: until every client here is ready or failed, then until every thread is.
        let go = loop {
            if self.stopped() {
                return Ok(self.finish(0));
            }
            let now = Instant::now();
            if !set
                && (now >= join_deadline
                    || self
                        .clients
                        .iter()
                        .all(|c| matches!(c.state, State::Ready | State::Dead)))
            {
                for c in &mut self.clients {
                    if matches!(c.state, State::Connecting | State::Joining) {
                        c.state = State::Dead;
                        let seen = String::from_utf8_lossy(&c.last_line).into_owned();
                        self.tally.error(ErrorKind::JoinTimeout, c.sender, &seen);
                    }
                }
                set = true;
                self.shared.set.fetch_add(1, Ordering::AcqRel);
            }
            let all_set = self.shared.set.load(Ordering::Acquire) == self.shared.threads;
            if all_set || now >= join_deadline + Duration::from_secs(1) {
                break *self
                    .shared
                    .go
                    .get_or_init(|| Instant::now() + super::SETTLE);
            }
            self.poll_once(&mut events, TICK)?;
        };
        for c in &mut self.clients {
            c.took_part = c.state == State::Ready;
            match (c.took_part, c.sender) {
                (true, true) => self.tally.ready_senders += 1,
                (true, false) => self.tally.ready_readers += 1,
                (false, _) => {}
            }
        }
        for c in self.clients.iter_mut().filter(|c| c.sender) {
            let stagger = self.interval.map_or(Duration::ZERO, |i| {
                i.mul_f64(c.index as f64 / o.senders as f64)
            });
            c.due = go + stagger;
        }
        // Sending: until the window ends.
        let end = go + o.duration;
        loop {
            let now = Instant::now();
            if now >= end || self.stopped() {
                break;
            }
            let wait = if now < go {
                go - now
            } else {
                self.send_due(now, end);
                self.next_wait(now)
            };
            self.poll_once(&mut events, wait.min(end - now))?;
        }
        if !self.stopped() {
            // Every line due before the end goes out, even if the last wake-up came late.
            self.send_due(end, end);
        }
        let mut sent = 0;
        for c in self.clients.iter().filter(|c| c.sender) {
            if let Some(i) = self.interval
                && c.took_part
            {
                // Lines due in the window that the sender could not write (the server did
                // not take them).
                let due = (end
                    .saturating_duration_since(go + i.mul_f64(c.index as f64 / o.senders as f64))
                    .as_secs_f64()
                    / i.as_secs_f64())
                .ceil() as u64;
                self.tally.not_sent += due.saturating_sub(c.seq);
            }
            self.shared.sent[c.index].store(c.seq, Ordering::Relaxed);
            sent += c.seq;
        }
        self.shared.sent_final.fetch_add(1, Ordering::AcqRel);
        // Draining: senders flush what they hold; readers read until complete or time's up.
        let drain_end = end + o.drain;
        loop {
            let now = Instant::now();
            if now >= drain_end || self.stopped() {
                break;
            }
            if let Some(total) = self.shared.sent_total()
                && self
                    .clients
                    .iter()
                    .all(|c| c.sender || c.state != State::Ready || self.complete(c, total))
            {
                break;
            }
            for i in 0..self.clients.len() {
                if self.clients[i].sender && !self.clients[i].blocked {
                    self.flush(i);
                }
            }
            self.poll_once(&mut events, TICK.min(drain_end - now))?;
        }
        // The missing lines are counted against every sender's final count.
        let wait_end = Instant::now() + Duration::from_secs(1);
        while self.shared.sent_total().is_none() && Instant::now() < wait_end && !self.stopped() {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(self.finish(sent))
    }

    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// The reader `c` has as many lines as were sent (duplicates aside).
    fn complete(&self, c: &Client, total: u64) -> bool {
        let missing = c.tracker.as_ref().map_or(0, |t| {
            t.missing(|s| self.shared.sent[s].load(Ordering::Relaxed))
        });
        total == 0 || missing == 0
    }

    /// What this thread measured, the missing lines counted against what was sent.
    fn finish(mut self, sent: u64) -> Tally {
        self.tally.lines_sent = sent;
        for c in self.clients.iter().filter(|c| c.took_part) {
            if let Some(t) = &c.tracker {
                self.tally.missing += t.missing(|s| self.shared.sent[s].load(Ordering::Relaxed));
            }
        }
        self.tally
    }

    /// How long to wait for the next due line.
    fn next_wait(&self, now: Instant) -> Duration {
        let mut wait = TICK;
        for c in self
            .clients
            .iter()
            .filter(|c| c.sender && c.state == State::Ready)
        {
            if self.interval.is_none() && !c.blocked {
                return Duration::ZERO;
            }
            if !c.blocked {
                wait = wait.min(c.due.saturating_duration_since(now));
            }
        }
        wait
    }

    /// Writes every line now due (or, without a rate, as many as the socket takes).
    fn send_due(&mut self, now: Instant, end: Instant) {
        let shared = self.shared;
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if !c.sender || c.state != State::Ready || c.blocked {
                continue;
            }
            while c.out.len() - c.written < OUT_HIGH {
                let at = match self.interval {
                    Some(interval) => {
                        if c.due > now || c.due >= end {
                            break;
                        }
                        let at = c.due;
                        c.due += interval;
                        at
                    }
                    None => now,
                };
                wire::line(
                    &mut c.out,
                    shared,
                    c.index,
                    c.seq,
                    micros(at - shared.epoch),
                );
                c.seq += 1;
            }
            self.flush(i);
        }
    }

    /// Writes what client `i` holds, until done or the socket is full.
    fn flush(&mut self, i: usize) {
        loop {
            let c = &mut self.clients[i];
            if c.written >= c.out.len() || c.state == State::Dead {
                break;
            }
            match c.stream.write(&c.out[c.written..]) {
                Ok(0) => {
                    self.kill(i, ErrorKind::Closed, "the server took no more bytes");
                    return;
                }
                Ok(n) => c.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.blocked = true;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.kill(i, ErrorKind::Closed, &e.to_string());
                    return;
                }
            }
        }
        let c = &mut self.clients[i];
        if c.written == c.out.len() {
            c.out.clear();
            c.written = 0;
        }
    }

    fn kill(&mut self, i: usize, kind: ErrorKind, detail: &str) {
        let c = &mut self.clients[i];
        if c.state == State::Dead {
            return;
        }
        c.state = State::Dead;
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.tally.error(kind, c.sender, detail);
    }

    fn poll_once(&mut self, events: &mut Events, wait: Duration) -> io::Result<()> {
        match self.poll.poll(events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut buf = vec![0u8; READ_CHUNK];
        for event in events.iter() {
            let i = event.token().0;
            if self.clients[i].state == State::Dead {
                continue;
            }
            if self.clients[i].state == State::Connecting {
                if event.is_error() || !event.is_writable() && event.is_read_closed() {
                    let c = &mut self.clients[i];
                    let why = c
                        .stream
                        .take_error()
                        .ok()
                        .flatten()
                        .map_or("connect failed".to_string(), |e| e.to_string());
                    self.kill(i, ErrorKind::Connect, &why);
                    continue;
                }
                if !event.is_writable() {
                    continue;
                }
                if let Err(e) = self.clients[i].stream.peer_addr() {
                    self.kill(i, ErrorKind::Connect, &e.to_string());
                    continue;
                }
                self.joined_tcp(i);
            }
            if event.is_writable() {
                self.clients[i].blocked = false;
                self.flush(i);
            }
            if event.is_readable() || event.is_read_closed() {
                self.read(i, &mut buf);
            }
        }
        Ok(())
    }

    /// The connect finished: ask to join.
    fn joined_tcp(&mut self, i: usize) {
        let shared = self.shared;
        let c = &mut self.clients[i];
        c.state = if wire::join(&mut c.out, shared, c.sender, c.index) {
            State::Ready
        } else {
            State::Joining
        };
    }

    /// Reads all the socket holds and takes each complete line.
    fn read(&mut self, i: usize, buf: &mut [u8]) {
        loop {
            let n = match self.clients[i].stream.read(buf) {
                Ok(0) => {
                    self.kill(i, ErrorKind::Closed, "the server closed the connection");
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.kill(i, ErrorKind::Closed, &e.to_string());
                    return;
                }
            };
            let now = micros(Instant::now() - self.shared.epoch);
            let mut rest = &buf[..n];
            while let Some(at) = memchr::memchr(b'\n', rest) {
                let piece = &rest[..at];
                rest = &rest[at + 1..];
                let mut partial = std::mem::take(&mut self.clients[i].partial);
                let whole: &[u8] = if partial.is_empty() {
                    piece
                } else {
                    partial.extend_from_slice(&piece[..piece.len().min(MAX_LINE)]);
                    &partial
                };
                let whole = whole.strip_suffix(b"\r").unwrap_or(whole);
                self.line(i, whole, now);
                partial.clear();
                self.clients[i].partial = partial;
                if self.clients[i].state == State::Dead {
                    return;
                }
            }
            let c = &mut self.clients[i];
            let room = MAX_LINE.saturating_sub(c.partial.len());
            c.partial.extend_from_slice(&rest[..rest.len().min(room)]);
        }
    }

    /// One received line of client `i`, at `now` (µs since the epoch).
    fn line(&mut self, i: usize, line: &[u8], now: u64) {
        let protocol = self.shared.options.protocol;
        let c = &mut self.clients[i];
        if c.state == State::Joining {
            c.last_line.clear();
            c.last_line.extend_from_slice(&line[..line.len().min(200)]);
            let ready = match (protocol, c.sender) {
                (ChatProtocol::Chat, true) => line == &self.nick_reply[c.index][..],
                (ChatProtocol::Chat, false) => line.starts_with(b"* you are #"),
                (ChatProtocol::Redis, _) => line.first() == Some(&b':'),
            };
            if ready {
                c.state = State::Ready;
            }
        }
        if protocol == ChatProtocol::Redis && line.first() == Some(&b'-') {
            let detail = String::from_utf8_lossy(line).into_owned();
            self.kill(i, ErrorKind::ServerError, &detail);
            return;
        }
        let Some(tracker) = c.tracker.as_mut() else {
            return;
        };
        let Some(got) = track::parse(line, &self.prefix) else {
            return;
        };
        let Some(verdict) = tracker.see(got.sender, got.seq) else {
            self.tally.foreign += 1;
            return;
        };
        let local = self.shared.options.target_of(got.sender) == c.target;
        match verdict {
            Verdict::Duplicate => self.tally.duplicates += 1,
            Verdict::InOrder | Verdict::OutOfOrder => {
                if verdict == Verdict::OutOfOrder {
                    self.tally.out_of_order += 1;
                }
                self.tally.delivered += 1;
                self.tally.last_delivery_us = self.tally.last_delivery_us.max(now);
                self.tally.record(local, now.saturating_sub(got.micros));
            }
        }
    }
}
