//! What a faulted session's replies go through on their way to the socket.
//!
//! Each reply for a faulted session — composed by its worker, or taken from its outbox — is
//! held here (cut first by `truncate`), and [`Pacing::advance`] moves what is due into the session's pending writes:
//! a reply once its `latency` hold is over, in pieces of `slice` bytes `delay` apart, no faster
//! than the `bandwidth` token bucket allows. It also says when a `reset` or `close` is due and
//! keeps the `stall` (no reading, nothing sent). [`Pacing::deadline`] is the next moment
//! anything can change, for the worker's timer queue: nothing held and nothing timed means no
//! deadline, so an idle faulted session costs no wake-ups.
//!
//! Bytes leave in the order they came, and all of them leave (except what `truncate` cuts).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Active, After, FaultKind, Rng};
use crate::server::session::SessionId;
use crate::server::session::outbox::Chunk;
use crate::units::Millis;

/// Reading stops while this much of the session's own replies is held: a peer that sends
/// faster than its faulted replies go out costs at most about one read more than this. What
/// the faults hold from the session's outbox is not counted here: it stays charged to the
/// outbox, under its limit and its back-pressure, until written.
const HOLD_LIMIT: usize = 64 * 1024;

/// The bandwidth pacer's burst: at most one read's worth.
const MAX_BURST: u64 = 64 * 1024;

/// The most pieces (each a write of its own) one session's faults let out in one turn of its
/// worker's loop; the rest waits for the next turn, after the worker's other sessions.
pub(crate) const TURN_WRITES: usize = 64;

/// The most bytes one session's faults let out in one turn of its worker's loop.
pub(crate) const TURN_BYTES: usize = 64 * 1024;

/// How a faulted session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// RST: `SO_LINGER` 0, then close.
    Reset,
    /// FIN, no `quit`.
    Close,
    /// FIN, no `quit`, and on a TLS session no `close_notify` either (`tls-truncate`).
    Truncate,
}

/// The faults a session drew, folded into one plan; of two faults of one kind the later wins.
#[derive(Debug, Default, Clone, Copy)]
struct Plan {
    latency: Option<(Duration, Duration)>,
    rate: Option<u64>,
    slice: Option<(usize, Duration)>,
    truncate: Option<usize>,
    stall: Option<(After, Option<Duration>)>,
    end: Option<(End, After)>,
}

impl Plan {
    fn of(faults: &[Arc<Active>]) -> Self {
        let mut plan = Plan::default();
        for fault in faults {
            match fault.spec.kind {
                FaultKind::Latency { delay, jitter } => plan.latency = Some((delay, jitter)),
                FaultKind::Bandwidth { rate } => plan.rate = Some(rate),
                FaultKind::Slice { size, delay } => {
                    plan.slice = Some((usize::try_from(size).unwrap_or(usize::MAX), delay));
                }
                FaultKind::Stall { after, duration } => plan.stall = Some((after, duration)),
                FaultKind::Reset { after } => plan.end = Some((End::Reset, after)),
                FaultKind::Close { after } => plan.end = Some((End::Close, after)),
                FaultKind::Truncate { bytes } => {
                    plan.truncate = Some(usize::try_from(bytes).unwrap_or(usize::MAX));
                }
                FaultKind::TlsTruncate { after } => plan.end = Some((End::Truncate, after)),
                // Carried out before the handshake, not on the session's replies.
                FaultKind::TlsDelay { .. }
                | FaultKind::TlsAbort { .. }
                | FaultKind::TlsAlert { .. }
                | FaultKind::TlsCert { .. } => {}
                // Never drawn for a session.
                FaultKind::Udp(_) => {}
            }
        }
        plan
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    Waiting,
    On { until: Option<Instant> },
    Over,
}

#[derive(Debug)]
struct Held {
    due: Instant,
    bytes: Vec<u8>,
    /// How much of `bytes` already went out.
    sent: usize,
    /// The replies it counts as for `after=N`: 1, or the messages in a run of relayed lines.
    replies: u64,
    /// Taken from the outbox: its bytes stay charged there until written.
    charged: bool,
}

/// A faulted session's faults and the replies they hold. Owned by the session's worker.
#[derive(Debug)]
pub(crate) struct Pacing {
    /// The session, for log lines.
    session: SessionId,
    faults: Vec<Arc<Active>>,
    plan: Plan,
    /// The session's own generator: it drew the faults, and draws the jitter.
    rng: Rng,
    connected: Instant,
    held: VecDeque<Held>,
    held_bytes: usize,
    /// The part of `held_bytes` taken from the outbox, still charged there.
    charged_bytes: usize,
    /// When the last held reply is due: a later one is never due before it.
    last_due: Option<Instant>,
    /// The bandwidth bucket, in bytes, as of `refilled`.
    tokens: f64,
    refilled: Instant,
    /// The earliest moment the next slice may go.
    next_piece: Option<Instant>,
    /// Replies that went out whole.
    replies: u64,
    stall: Stall,
    /// The deadline already in the worker's timer queue, if any.
    armed: Option<Instant>,
    /// Bytes of the current line seen so far (for `truncate` on a line-based peer).
    line_len: usize,
    /// The worker's turn last let out in, and the pieces and bytes let out in it.
    turn: (u64, usize, usize),
    /// [`advance`](Self::advance) stopped with more due, its turn's budget spent: the worker
    /// comes back next turn, so no timer is asked for it.
    budget_spent: bool,
}

impl Pacing {
    pub(crate) fn new(
        session: SessionId,
        faults: Vec<Arc<Active>>,
        rng: Rng,
        connected: Instant,
    ) -> Self {
        let plan = Plan::of(&faults);
        Pacing {
            session,
            tokens: plan.rate.map_or(0.0, |rate| burst(rate) as f64),
            faults,
            plan,
            rng,
            connected,
            held: VecDeque::new(),
            held_bytes: 0,
            charged_bytes: 0,
            last_due: None,
            refilled: connected,
            next_piece: None,
            replies: 0,
            stall: Stall::Waiting,
            armed: None,
            line_len: 0,
            turn: (0, 0, 0),
            budget_spent: false,
        }
    }

    /// The faults, as log lines show them: `#1 latency,delay=20ms #3 reset,after=2`.
    pub(crate) fn describe(&self) -> String {
        let shown: Vec<String> = self
            .faults
            .iter()
            .map(|f| format!("#{} {}", f.id, f.spec))
            .collect();
        shown.join(" ")
    }

    /// Takes one reply (one write) for the peer: cut by `truncate`, due after `latency`.
    /// For a line-based peer each line is a reply of its own (an echo of several lines read
    /// at once is one write, but as many replies).
    pub(crate) fn hold(&mut self, now: Instant, bytes: &[u8], lines: bool) {
        self.hold_replies(now, bytes.to_vec(), lines, 1, false);
    }

    /// As [`hold`](Self::hold), for a write that counts as `replies` replies (a run of
    /// relayed lines counts as its lines); `charged` when it was taken from the outbox and
    /// stays charged there until written. Returns how many bytes are held (what `truncate`
    /// left).
    pub(crate) fn hold_replies(
        &mut self,
        now: Instant,
        mut bytes: Vec<u8>,
        lines: bool,
        replies: u64,
        charged: bool,
    ) -> usize {
        match self.plan.truncate {
            Some(n) if lines => bytes = self.truncate_lines(n, &bytes),
            Some(n) => bytes.truncate(n),
            None => {}
        }
        let keep = bytes.len();
        let mut due = now;
        if let Some((delay, jitter)) = self.plan.latency {
            due = later(now, self.jittered(delay, jitter));
        }
        if let Some(last) = self.last_due {
            due = due.max(last);
        }
        self.last_due = Some(due);
        self.held.push_back(Held {
            due,
            bytes,
            sent: 0,
            replies,
            charged,
        });
        self.held_bytes += keep;
        if charged {
            self.charged_bytes += keep;
        }
        keep
    }

    /// The first `n` bytes of every line in `bytes`, counting a line's bytes across replies.
    fn truncate_lines(&mut self, n: usize, bytes: &[u8]) -> Vec<u8> {
        let mut kept = Vec::with_capacity(bytes.len().min(n.saturating_mul(4)));
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            let room = n.saturating_sub(self.line_len);
            kept.extend_from_slice(&piece[..room.min(piece.len())]);
            self.line_len = match piece.last() {
                Some(b'\n') => 0,
                _ => self.line_len + piece.len(),
            };
        }
        kept
    }

    /// `delay` ± up to `jitter`, uniformly, never below zero.
    fn jittered(&mut self, delay: Duration, jitter: Duration) -> Duration {
        if jitter.is_zero() {
            return delay;
        }
        let offset = (self.rng.unit() * 2.0 - 1.0) * jitter.as_secs_f64();
        Duration::from_secs_f64((delay.as_secs_f64() + offset).max(0.0))
    }

    fn reached(&self, after: After, now: Instant) -> bool {
        match after {
            After::Replies(n) => self.replies >= n,
            After::Time(d) => now >= later(self.connected, d),
        }
    }

    fn update_stall(&mut self, now: Instant) {
        match (self.stall, self.plan.stall) {
            (Stall::Waiting, Some((after, duration))) if self.reached(after, now) => {
                self.stall = Stall::On {
                    until: duration.map(|d| later(now, d)),
                };
                match duration {
                    Some(d) => log::debug!(
                        "session {} stalled by fault: for_ms={} faults={}",
                        self.session,
                        Millis(d),
                        self.describe()
                    ),
                    None => log::debug!(
                        "session {} stalled by fault: until=cleared faults={}",
                        self.session,
                        self.describe()
                    ),
                }
            }
            (Stall::On { until: Some(until) }, _) if now >= until => self.stall = Stall::Over,
            _ => {}
        }
    }

    /// Moves what is due into `out` (each piece one write), and says whether the session
    /// must end now. In the worker's turn `turn` it lets out at most [`TURN_WRITES`] pieces
    /// and [`TURN_BYTES`] bytes, so that a fault that cuts a reply into many pieces never
    /// keeps the worker from its other sessions; [`budget_spent`](Self::budget_spent) then
    /// says that more is due at once.
    pub(crate) fn advance(
        &mut self,
        now: Instant,
        out: &mut VecDeque<Chunk>,
        turn: u64,
    ) -> Option<End> {
        if self.turn.0 != turn {
            self.turn = (turn, 0, 0);
        }
        self.budget_spent = false;
        if let Some((end, after)) = self.plan.end
            && self.reached(after, now)
        {
            return Some(end);
        }
        self.update_stall(now);
        if matches!(self.stall, Stall::On { .. }) {
            return None;
        }
        while let Some(front) = self.held.front_mut() {
            if front.due > now {
                break;
            }
            if self.turn.1 >= TURN_WRITES || self.turn.2 >= TURN_BYTES {
                self.budget_spent = true;
                break;
            }
            let mut piece = front.bytes.len() - front.sent;
            if let Some((size, _)) = self.plan.slice {
                if self.next_piece.is_some_and(|at| at > now) {
                    break;
                }
                piece = piece.min(size);
            }
            if let Some(rate) = self.plan.rate {
                refill(&mut self.tokens, &mut self.refilled, now, rate);
                let want = piece.min(quantum(rate));
                if self.tokens + 0.5 < want as f64 {
                    break;
                }
                piece = piece.min((self.tokens.floor() as usize).max(want));
                self.tokens = (self.tokens - piece as f64).max(0.0);
            }
            if piece > 0 {
                let start = front.sent;
                // A reply let out whole is moved, not copied.
                let bytes = if start == 0 && piece == front.bytes.len() {
                    std::mem::take(&mut front.bytes)
                } else {
                    front.bytes[start..start + piece].to_vec()
                };
                out.push_back(if front.charged {
                    self.charged_bytes -= piece;
                    Chunk::Queued { bytes, overhead: 0 }
                } else {
                    Chunk::Own(bytes)
                });
                front.sent += piece;
                self.held_bytes -= piece;
                self.turn.1 += 1;
                self.turn.2 += piece;
                if let Some((_, delay)) = self.plan.slice {
                    self.next_piece = Some(later(now, delay));
                }
            }
            if front.sent < front.bytes.len() {
                continue;
            }
            let done = self.held.pop_front().map_or(1, |held| held.replies);
            self.replies += done;
            if let Some((end, After::Replies(n))) = self.plan.end
                && self.replies >= n
            {
                return Some(end);
            }
            self.update_stall(now);
            if matches!(self.stall, Stall::On { .. }) {
                break;
            }
        }
        None
    }

    /// The next moment [`advance`](Self::advance) may do something, if any.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some((_, After::Time(d))) = self.plan.end {
            at(later(self.connected, d));
        }
        match (self.stall, self.plan.stall) {
            (Stall::Waiting, Some((After::Time(d), _))) => at(later(self.connected, d)),
            (Stall::On { until: Some(until) }, _) => at(until),
            _ => {}
        }
        if matches!(self.stall, Stall::On { .. }) || self.budget_spent {
            return next;
        }
        if let Some(front) = self.held.front() {
            let mut due = front.due;
            let mut piece = front.bytes.len() - front.sent;
            if let Some((size, _)) = self.plan.slice {
                due = due.max(self.next_piece.unwrap_or(due));
                piece = piece.min(size);
            }
            if let Some(rate) = self.plan.rate {
                let need = piece.min(quantum(rate)) as f64 - self.tokens;
                if need > 0.5 {
                    // Rounded up to the microsecond, so the bucket holds enough by then.
                    let wait = Duration::from_micros((need / rate as f64 * 1e6).ceil() as u64);
                    due = due.max(later(self.refilled, wait));
                }
            }
            at(due);
        }
        next
    }

    /// Whether the last [`advance`](Self::advance) stopped with more due at once, its turn's
    /// budget spent: the worker must come back next turn.
    pub(crate) fn budget_spent(&self) -> bool {
        self.budget_spent
    }

    /// Whether the session's input may be read: not while stalled, nor while much is held.
    pub(crate) fn may_read(&self) -> bool {
        !matches!(self.stall, Stall::On { .. }) && self.held_bytes - self.charged_bytes < HOLD_LIMIT
    }

    /// The bytes held that were taken from the outbox and are still charged there: to be
    /// released if the faults end without sending them.
    pub(crate) fn charged(&self) -> usize {
        self.charged_bytes
    }

    /// Records `at` as the deadline in the timer queue; `false` if one at least as early is
    /// there already (it will look again when it fires).
    pub(crate) fn arm(&mut self, at: Instant) -> bool {
        if self.armed.is_some_and(|armed| armed <= at) {
            return false;
        }
        self.armed = Some(at);
        true
    }

    /// A timer for `at` fired: whether it is this session's current one.
    pub(crate) fn fired(&mut self, at: Instant) -> bool {
        if self.armed == Some(at) {
            self.armed = None;
            true
        } else {
            false
        }
    }

    /// The faults end (the session is closing, or they were cleared): everything held goes
    /// into `out` at once, in order.
    pub(crate) fn release_all(self, out: &mut VecDeque<Chunk>) {
        for held in self.held {
            if held.sent < held.bytes.len() {
                let mut bytes = held.bytes;
                bytes.drain(..held.sent);
                out.push_back(if held.charged {
                    Chunk::Queued { bytes, overhead: 0 }
                } else {
                    Chunk::Own(bytes)
                });
            }
        }
    }

    /// Forgets the faults that were cleared; `false` when none is left.
    pub(crate) fn forget_cleared(&mut self) -> bool {
        let before = self.faults.len();
        self.faults.retain(|f| !f.is_cleared());
        if self.faults.len() != before {
            let (latency, slice) = (self.plan.latency, self.plan.slice);
            self.plan = Plan::of(&self.faults);
            if self.plan.slice != slice {
                self.next_piece = None;
            }
            if self.plan.latency != latency {
                // The hold that timed what is held is gone: it is all due now.
                for held in &mut self.held {
                    held.due = self.connected;
                }
                self.last_due = None;
            }
            if self.plan.stall.is_none() {
                self.stall = Stall::Over;
            }
            if let Some(rate) = self.plan.rate {
                self.tokens = self.tokens.min(burst(rate) as f64);
            }
        }
        !self.faults.is_empty()
    }
}

/// The bucket's size: one second's worth, at most one read.
fn burst(rate: u64) -> u64 {
    rate.clamp(1, MAX_BURST)
}

/// The smallest piece the pacer waits for: a hundredth of a second's worth, so a slow rate
/// still moves in small steps and a fast one does not wake the worker for every few bytes.
fn quantum(rate: u64) -> usize {
    usize::try_from((rate / 100).clamp(1, MAX_BURST)).unwrap_or(1)
}

fn refill(tokens: &mut f64, refilled: &mut Instant, now: Instant, rate: u64) {
    let elapsed = now.saturating_duration_since(*refilled).as_secs_f64();
    *tokens = (*tokens + elapsed * rate as f64).min(burst(rate) as f64);
    *refilled = now;
}

/// `at + d`, or `at` far enough ahead when that overflows (durations are bounded anyway).
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d).unwrap_or(at + crate::units::MAX_DURATION)
}

#[cfg(test)]
mod tests;
