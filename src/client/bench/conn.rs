//! One connection's state machine: connecting, greeting, open, finished; what it has in
//! flight, what it still has to write, and how far it has read the reply at the front.

use std::collections::VecDeque;
use std::io::{self, Write as _};
use std::time::Instant;

use mio::net::TcpStream;

use super::error::{ErrorKind, Failure};
use super::framing::shown;
use super::plan::{Framing, Plan, ReplyEnd, Schedule};
use super::tally::Tally;

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
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum State {
    /// Connect to the address at this index started at this time.
    Connecting(usize, Instant),
    /// Connected; the greeting went out at this time and its reply is awaited.
    Greeting(Instant),
    /// Connected (and greeted): sending once the schedule says so.
    Open,
    /// Done or failed; never reopened.
    Finished,
}

/// One connection's state on its thread.
pub(super) struct Conn {
    /// Global index: `{conn}`, the echo payload and the open-loop phase.
    pub(super) index: usize,
    pub(super) stream: Option<TcpStream>,
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
}

impl Conn {
    pub(super) fn new(index: usize, quota: Option<u64>, now: Instant) -> Self {
        Conn {
            index,
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
    /// replies as they arrive, and completes each message whose reply it ends.
    pub(super) fn consume(
        &mut self,
        mut chunk: &[u8],
        now: Instant,
        plan: &Plan<'_>,
        schedule: Option<&Schedule>,
        tally: &mut Tally,
    ) -> Result<(), Failure> {
        while !chunk.is_empty() {
            if let State::Greeting(_) = self.state {
                let Some(end) = plan.greeting_end.as_ref() else {
                    self.state = State::Open;
                    continue;
                };
                let n = match end.find(chunk, &mut self.matched) {
                    Some(n) => {
                        self.state = State::Open;
                        n
                    }
                    None => chunk.len(),
                };
                self.received += n as u64;
                chunk = &chunk[n..];
                continue;
            }
            let Some(front) = self.inflight.front().copied() else {
                return Err(self.unsolicited(chunk));
            };
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
            };
            let (n, complete) = n;
            self.reply_read += n;
            self.received += n as u64;
            chunk = &chunk[n..];
            if complete {
                self.inflight.pop_front();
                tally.complete(
                    front.measured.then_some(front.intended),
                    front.sent,
                    now,
                    self.reply_read,
                    schedule,
                );
                self.reply_read = 0;
                if self.expect_off == self.expect.len() {
                    self.expect.clear();
                    self.expect_off = 0;
                } else if self.expect_off > COMPACT {
                    self.expect.drain(..self.expect_off);
                    self.expect_off = 0;
                }
            }
        }
        Ok(())
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
                greeting.message.render(self.index, 0, &mut self.out);
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
        let reply_len = match &plan.framing {
            Framing::Echo(payloads) => {
                let payload = &payloads[self.index % payloads.len()];
                self.out.extend_from_slice(payload);
                self.expect.extend_from_slice(payload);
                payload.len()
            }
            Framing::Request { send, reply } => {
                send.render(self.index, self.seq, &mut self.out);
                match reply {
                    ReplyEnd::Exact(t) => {
                        let before = self.expect.len();
                        t.render(self.index, self.seq, &mut self.expect);
                        self.expect.len() - before
                    }
                    ReplyEnd::Until(_) | ReplyEnd::Size(_) => 0,
                }
            }
        };
        self.seq += 1;
        self.inflight.push_back(Flight {
            intended: scheduled.min(now),
            sent: now,
            measured,
            reply_len,
        });
    }

    /// May a message intended at `at` be queued? Not past the window's end, nor beyond the
    /// connection's quota.
    pub(super) fn may_queue(&self, at: Instant, draining: bool, schedule: &Schedule) -> bool {
        !draining
            && schedule.end.is_none_or(|end| at < end)
            && (at < schedule.measure_start || self.quota != Some(0))
    }

    /// Measured messages still awaiting their reply.
    /// Measured messages sent by `end` (when there is one) and not answered.
    pub(super) fn measured_in_flight(&self, end: Option<Instant>) -> u64 {
        self.inflight
            .iter()
            .filter(|f| f.measured && end.is_none_or(|end| f.sent <= end))
            .count() as u64
    }
}
