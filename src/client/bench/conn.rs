//! One connection's state machine: connecting, greeting, open, finished; what it has in
//! flight, what it still has to write, and how far it has read the reply at the front.
//!
//! Longer than 500 lines: one connection's state machine, from queueing a message to framing
//! and checking its reply as the bytes arrive, in the five ways a reply can end.

use std::collections::VecDeque;
use std::io::{self, Write as _};
use std::time::Instant;

use crate::tls::Link;

use super::bytes::shown;
use super::error::{ErrorKind, Failure, FirstError};
use super::framing::Draw;
use super::plan::{Framing, Plan, ReplyEnd, Schedule};
use super::proto::{Class, Done, Parser, Step, until_prefix};
use super::tally::Tally;

/// The first bytes of a reply kept to classify and show it (`--error-prefix`, the first
/// message's reply); `--first-expect` keeps up to its own length and one more byte.
const HEAD: usize = 64;

/// Above this many bytes already written (or already matched), the front of a buffer is
/// dropped; below it, bytes are only dropped once the buffer is empty.
const COMPACT: usize = 64 * 1024;

/// A message queued on a connection and not yet fully answered.
#[derive(Clone, Copy)]
pub(super) struct Flight {
    /// Where latency is measured from: when queued, or in open loop the schedule's time if
    /// that was earlier.
    pub(super) intended: Instant,
    /// When it was queued for writing: where the reply timeout runs from.
    pub(super) sent: Instant,
    /// Queued after the warm-up.
    pub(super) measured: bool,
    /// An exact reply's length (echo and `--expect`); 0 otherwise.
    pub(super) reply_len: usize,
    /// Which request of the mix it is.
    pub(super) kind: u16,
    /// An HTTP `HEAD`: its response has no body.
    pub(super) head: bool,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum State {
    /// Connect to the address at this index started at this time.
    Connecting(usize, Instant),
    /// Connected; the TLS handshake began at this time (`--tls`).
    Handshaking(Instant),
    /// Connected; the greeting went out at this time and its reply is awaited.
    Greeting(Instant),
    /// Connected (and greeted): sending once the schedule says so.
    Open,
    /// Done or failed; never reopened (only a clean close asked for by the server, HTTP's
    /// `Connection: close`, reopens a connection, before this).
    Finished,
}

/// One connection's state on its thread.
pub(super) struct Conn {
    /// Global index: the open-loop phase and the connection's quota.
    pub(super) index: usize,
    /// `{conn}` and the echo payload: the index plus [`Options::conn_offset`], unique across
    /// the generators of a fleet.
    ///
    /// [`Options::conn_offset`]: super::Options::conn_offset
    pub(super) label: usize,
    pub(super) stream: Option<Link>,
    pub(super) state: State,
    pub(super) inflight: VecDeque<Flight>,
    /// Bytes queued for writing; `out[out_off..]` are not written yet.
    pub(super) out: Vec<u8>,
    pub(super) out_off: usize,
    /// Exact replies: the expected bytes of the messages in flight, `expect[expect_off..]`.
    expect: Vec<u8>,
    expect_off: usize,
    /// Bytes of the front reply read so far.
    reply_read: usize,
    /// `--until` and the greeting: how much of the delimiter the bytes so far end with.
    matched: usize,
    /// Reply bytes read in all (greeting included): an error's offset.
    pub(super) received: u64,
    /// The next message's `{seq}`.
    seq: u64,
    /// Measured messages this connection may still queue ([`Limit::Messages`](super::Limit::Messages)).
    pub(super) quota: Option<u64>,
    /// Open loop: the intended time of the next message.
    pub(super) next_send: Instant,
    /// Open loop: an entry for this connection is in the worker's `due` heap.
    pub(super) scheduled: bool,
    /// Key spaces and the mix draw from here.
    draw: Draw,
    /// `--reply`: the reply parser.
    parser: Option<Parser>,
    /// The first bytes of the reply being read (`--error-prefix`, the first message's reply).
    head: Vec<u8>,
    /// Reply bytes read before the reply being read began.
    reply_start: u64,
    /// Times this connection was reopened.
    pub(super) reopens: u64,
    /// Messages queued since it was last opened.
    queued_here: u64,
    /// `--reconnect-every`: how many it may queue before it is opened again.
    reconnect_every: Option<u64>,
    /// This connection's TLS handshake asked for session tickets.
    pub(super) wants_tickets: bool,
    /// When its TLS handshake ended.
    pub(super) shaken_at: Option<Instant>,
}

impl Conn {
    pub(super) fn new(index: usize, quota: Option<u64>, now: Instant, plan: &Plan<'_>) -> Self {
        Conn {
            draw: Draw::new(plan.options.seed, index + plan.options.conn_offset),
            parser: plan
                .framing
                .framed()
                .map(|f| Parser::new(f.clone(), plan.options.max_reply)),
            head: Vec::new(),
            reply_start: 0,
            reopens: 0,
            queued_here: 0,
            reconnect_every: plan.options.reconnect_every,
            wants_tickets: false,
            shaken_at: None,
            index,
            label: index + plan.options.conn_offset,
            stream: None,
            state: State::Connecting(0, now),
            inflight: VecDeque::new(),
            out: Vec::new(),
            out_off: 0,
            expect: Vec::new(),
            expect_off: 0,
            reply_read: 0,
            matched: 0,
            received: 0,
            seq: 0,
            quota,
            next_send: now,
            scheduled: false,
        }
    }

    /// Reads `chunk`, the next bytes from the server: finishes the greeting, checks exact
    /// replies as they arrive, and completes each message whose reply it ends. `Ok(true)`:
    /// the server said it closes the connection after the reply just read (HTTP's
    /// `Connection: close`); the rest of `chunk`, if any, was not read.
    pub(super) fn consume(
        &mut self,
        mut chunk: &[u8],
        now: Instant,
        plan: &Plan<'_>,
        schedule: Option<&Schedule>,
        tally: &mut Tally,
    ) -> Result<bool, Failure> {
        while !chunk.is_empty() {
            if let State::Greeting(_) = self.state {
                let n = self.greeting_reply(chunk, plan)?;
                self.received += n as u64;
                chunk = &chunk[n..];
                continue;
            }
            let Some(front) = self.inflight.front().copied() else {
                return Err(self.unsolicited(chunk));
            };
            let Framing::Request {
                reply: ReplyEnd::Framed(_),
                ..
            } = &plan.framing
            else {
                let n = self.consume_unframed(chunk, front, now, plan, schedule, tally)?;
                chunk = &chunk[n..];
                continue;
            };
            let parser = self.parser.as_mut().expect("a framed reply has a parser");
            let done = match parser.feed(chunk, front.head) {
                Ok(Step::Need) => {
                    self.reply_read += chunk.len();
                    self.received += chunk.len() as u64;
                    return Ok(false);
                }
                Ok(Step::Done(done)) => done,
                Err(bad) => {
                    return Err(Failure {
                        kind: ErrorKind::Protocol,
                        detail: FirstError {
                            offset: self.reply_start,
                            received: Some(bad.shown),
                            message: Some(bad.message),
                            ..FirstError::default()
                        },
                    });
                }
            };
            self.reply_read += done.used;
            self.received += done.used as u64;
            chunk = &chunk[done.used..];
            let close = done.close;
            self.complete(front, done, now, schedule, tally);
            if close {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The first message's reply: up to its delimiter, or framed by `--reply`; checked against
    /// `--first-expect`, and an error reply fails the connection. Returns the bytes used.
    fn greeting_reply(&mut self, chunk: &[u8], plan: &Plan<'_>) -> Result<usize, Failure> {
        let greeting = plan.options.greeting.as_ref();
        let expect = greeting.and_then(|g| g.expect.as_deref());
        let (n, end) = match (plan.greeting_end.as_ref(), self.parser.as_mut()) {
            (Some(end), _) => match end.find(chunk, &mut self.matched) {
                Some(n) => (n, None),
                None => (chunk.len(), Some(false)),
            },
            (None, Some(parser)) => match parser.feed(chunk, false) {
                Ok(Step::Need) => (chunk.len(), Some(false)),
                Ok(Step::Done(done)) => {
                    if done.class == Class::Error {
                        self.keep_head(&chunk[..done.used], expect);
                        return Err(self.first_reply(expect));
                    }
                    (done.used, None)
                }
                Err(bad) => {
                    return Err(Failure {
                        kind: ErrorKind::FirstReply,
                        detail: FirstError {
                            offset: 0,
                            received: Some(bad.shown),
                            message: Some(format!("the first message's reply: {}", bad.message)),
                            ..FirstError::default()
                        },
                    });
                }
            },
            (None, None) => (0, None),
        };
        self.keep_head(&chunk[..n], expect);
        if end.is_none() {
            if expect.is_some_and(|e| self.head != e) {
                return Err(self.first_reply(expect));
            }
            self.head.clear();
            self.state = State::Open;
        }
        Ok(n)
    }

    /// Keeps the first bytes of the reply being read.
    fn keep_head(&mut self, bytes: &[u8], expect: Option<&[u8]>) {
        let keep = expect.map_or(HEAD, |e| (e.len() + 1).max(HEAD));
        if self.head.len() < keep {
            let take = bytes.len().min(keep - self.head.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
    }

    /// The first message's reply was an error, or not `expect`.
    fn first_reply(&self, expect: Option<&[u8]>) -> Failure {
        Failure {
            kind: ErrorKind::FirstReply,
            detail: FirstError {
                offset: 0,
                expected: expect.map(shown),
                received: Some(shown(&self.head)),
                message: Some("the first message failed; the connection ends".into()),
                ..FirstError::default()
            },
        }
    }

    /// A reply is complete: counted by class, an error reply counted as an error too.
    fn complete(
        &mut self,
        front: Flight,
        done: Done,
        now: Instant,
        schedule: Option<&Schedule>,
        tally: &mut Tally,
    ) {
        self.inflight.pop_front();
        tally.complete_kind(
            front.measured.then_some(front.intended),
            front.sent,
            now,
            self.reply_read,
            schedule,
            usize::from(front.kind),
            done.class,
        );
        if done.class == Class::Error {
            let prefix = done.prefix.unwrap_or_default();
            *tally.error_prefixes.entry(prefix).or_default() += 1;
            let detail = FirstError {
                connection: self.index,
                offset: self.reply_start,
                received: done.shown,
                ..FirstError::default()
            };
            tally.error(ErrorKind::Reply, detail, now, schedule);
        }
        self.reply_read = 0;
        self.reply_start = self.received;
    }

    /// Echo, `--expect`, `--until` and `--reply-size`: reads the front reply from `chunk`;
    /// returns the bytes used.
    fn consume_unframed(
        &mut self,
        chunk: &[u8],
        front: Flight,
        now: Instant,
        plan: &Plan<'_>,
        schedule: Option<&Schedule>,
        tally: &mut Tally,
    ) -> Result<usize, Failure> {
        let n = match &plan.framing {
            Framing::Echo(_)
            | Framing::Request {
                reply: ReplyEnd::Exact(_),
                ..
            } => {
                let want = front.reply_len - self.reply_read;
                let expected = &self.expect[self.expect_off..self.expect_off + want];
                let n = want.min(chunk.len());
                if chunk[..n] != expected[..n] {
                    let at = chunk.iter().zip(expected).position(|(a, b)| a != b);
                    return Err(self.mismatch(at.unwrap_or(0), chunk, expected, plan));
                }
                self.expect_off += n;
                (n, n == want)
            }
            Framing::Request {
                reply: ReplyEnd::Until(end),
                ..
            } => match end.find(chunk, &mut self.matched) {
                Some(n) => (n, true),
                None => (chunk.len(), false),
            },
            Framing::Request {
                reply: ReplyEnd::Size(size),
                ..
            } => {
                let n = (size - self.reply_read).min(chunk.len());
                (n, self.reply_read + n == *size)
            }
            Framing::Request {
                reply: ReplyEnd::Framed(_),
                ..
            } => unreachable!("framed replies are read by their parser"),
        };
        let (n, complete) = n;
        let prefix = plan.options.error_prefix.as_deref();
        if prefix.is_some() {
            self.keep_head(&chunk[..n], None);
        }
        self.reply_read += n;
        self.received += n as u64;
        if complete {
            let class = match prefix {
                Some(p) if self.head.starts_with(p) => Class::Error,
                _ => Class::Ok,
            };
            let done = Done {
                used: n,
                class,
                prefix: (class == Class::Error).then(|| until_prefix(&self.head)),
                close: false,
                shown: (class == Class::Error).then(|| shown(&self.head)),
            };
            self.head.clear();
            self.complete(front, done, now, schedule, tally);
            if self.expect_off == self.expect.len() {
                self.expect.clear();
                self.expect_off = 0;
            } else if self.expect_off > COMPACT {
                self.expect.drain(..self.expect_off);
                self.expect_off = 0;
            }
        }
        Ok(n)
    }

    /// Forgets everything of the connection that was, before it is opened again: what was
    /// in flight is given back to be sent again on the new one (its replies will never come:
    /// the server closed after the reply before them).
    pub(super) fn forget(&mut self, tally: &mut Tally) {
        for flight in self.inflight.drain(..) {
            if flight.measured {
                tally.sent -= 1;
                if let Some(quota) = self.quota.as_mut() {
                    *quota += 1;
                }
            }
        }
        self.out.clear();
        self.out_off = 0;
        self.expect.clear();
        self.expect_off = 0;
        self.reply_read = 0;
        self.matched = 0;
        self.head.clear();
        self.reply_start = self.received;
        if let Some(parser) = self.parser.as_mut() {
            parser.reset();
        }
        self.queued_here = 0;
        self.reopens += 1;
    }

    /// Bytes that arrived with nothing in flight: a server's `busy` or `quit` line, or bytes
    /// nobody asked for.
    fn unsolicited(&self, chunk: &[u8]) -> Failure {
        let kind = if chunk.starts_with(b"busy") && self.received == 0 {
            ErrorKind::Busy
        } else if chunk.starts_with(b"quit") {
            ErrorKind::Closed
        } else {
            ErrorKind::Mismatch
        };
        Failure::seen(kind, self.received, None, shown(chunk))
    }

    /// A reply that differs from the one expected, `at` bytes into `chunk`. A tcpool server
    /// that shuts down says `quit` to every client: the connection is closing rather than
    /// answering wrongly. Echo payloads never hold a `q`, so there a `q` is enough to tell.
    fn mismatch(&self, at: usize, chunk: &[u8], expected: &[u8], plan: &Plan<'_>) -> Failure {
        let start = if self.reply_read == 0 { 0 } else { at };
        let received = &chunk[start..];
        let echo = matches!(plan.framing, Framing::Echo(_));
        let kind = if self.received == 0 && received.starts_with(b"busy") {
            ErrorKind::Busy
        } else if (echo && chunk[at] == b'q') || received.starts_with(b"quit") {
            ErrorKind::Closed
        } else {
            ErrorKind::Mismatch
        };
        // Whole expected reply from the same place as the received bytes.
        let expected = &self.expect[self.expect_off + start..self.expect_off + expected.len()];
        Failure::seen(
            kind,
            self.received + start as u64,
            Some(shown(expected)),
            shown(received),
        )
    }

    /// Writes queued bytes until done or the socket is full.
    pub(super) fn flush(&mut self) -> Result<(), Failure> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        // What TLS holds for the socket goes first (a handshake message, say).
        if let Err(e) = stream.flush() {
            return Err(Failure::new(
                ErrorKind::of_transfer(&e),
                self.received,
                e.to_string(),
            ));
        }
        while self.out_off < self.out.len() {
            match stream.write(&self.out[self.out_off..]) {
                Ok(0) => return Err(Failure::new(ErrorKind::Closed, self.received, "write: 0")),
                Ok(n) => self.out_off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Failure::new(
                        ErrorKind::of_transfer(&e),
                        self.received,
                        e.to_string(),
                    ));
                }
            }
        }
        if self.out_off == self.out.len() {
            self.out.clear();
            self.out_off = 0;
        } else if self.out_off > COMPACT {
            self.out.drain(..self.out_off);
            self.out_off = 0;
        }
        Ok(())
    }

    /// Queues the greeting (`--first-message`): its reply is awaited before any message.
    pub(super) fn greet(&mut self, plan: &Plan<'_>, now: Instant) {
        match &plan.options.greeting {
            Some(greeting) => {
                greeting
                    .message
                    .render_drawn(self.label, 0, &mut self.draw, &mut self.out);
                self.state = State::Greeting(now);
            }
            None => self.state = State::Open,
        }
    }

    /// Queues one message whose place in the schedule is `scheduled`. Its latency runs from
    /// then, or from now if it goes out early (by at most
    /// [`SCHEDULE_SLACK`](super::worker::SCHEDULE_SLACK)).
    pub(super) fn queue(
        &mut self,
        scheduled: Instant,
        now: Instant,
        plan: &Plan<'_>,
        schedule: &Schedule,
        tally: &mut Tally,
    ) {
        let measured = scheduled >= schedule.measure_start;
        if measured {
            if let Some(quota) = self.quota.as_mut() {
                *quota -= 1;
            }
            tally.sent += 1;
        }
        let mut kind = 0;
        let mut head = false;
        let reply_len = match &plan.framing {
            Framing::Echo(payloads) => {
                let payload = &payloads[self.label % payloads.len()];
                self.out.extend_from_slice(payload);
                self.expect.extend_from_slice(payload);
                payload.len()
            }
            Framing::Request {
                send,
                weights,
                total,
                head: heads,
                reply,
            } => {
                if send.len() > 1 {
                    kind = self.draw.pick(weights, *total);
                }
                head = heads[kind];
                send[kind].render_drawn(self.label, self.seq, &mut self.draw, &mut self.out);
                match reply {
                    ReplyEnd::Exact(t) => {
                        let before = self.expect.len();
                        t.render_drawn(self.label, self.seq, &mut self.draw, &mut self.expect);
                        self.expect.len() - before
                    }
                    ReplyEnd::Until(_) | ReplyEnd::Size(_) | ReplyEnd::Framed(_) => 0,
                }
            }
        };
        self.seq += 1;
        self.queued_here += 1;
        self.inflight.push_back(Flight {
            intended: scheduled.min(now),
            sent: now,
            measured,
            reply_len,
            kind: kind as u16,
            head,
        });
    }

    /// May a message intended at `at` be queued? Not past the window's end, nor beyond the
    /// connection's quota.
    pub(super) fn may_queue(&self, at: Instant, draining: bool, schedule: &Schedule) -> bool {
        !draining
            && schedule.end.is_none_or(|end| at < end)
            && (at < schedule.measure_start || self.quota != Some(0))
            && !self.used_up()
    }

    /// `--reconnect-every`: this connection has queued all it may before it is opened again.
    pub(super) fn used_up(&self) -> bool {
        self.reconnect_every.is_some_and(|n| self.queued_here >= n)
    }

    /// A number drawn below `n` from the connection's own seeded sequence.
    pub(super) fn draw_below(&mut self, n: u64) -> u64 {
        self.draw.below(n)
    }

    /// Measured messages sent by `end` (when there is one) and not answered.
    pub(super) fn measured_in_flight(&self, end: Option<Instant>) -> u64 {
        self.inflight
            .iter()
            .filter(|f| f.measured && end.is_none_or(|end| f.sent <= end))
            .count() as u64
    }
}
