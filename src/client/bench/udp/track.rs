//! One socket's bookkeeping ([`Flow`]): which datagrams are out, which were answered, lost,
//! answered twice, late or wrong; and what a thread's sockets measured together ([`Tally`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::payload::Payload;
use crate::client::bench::histogram::{HISTOGRAM_MAX_US, SparseHistogram, histogram, micros};

/// A datagram's fate, one byte per sequence number.
const PENDING: u8 = 0;
const ANSWERED: u8 = 1;
const CORRUPT: u8 = 2;
const LOST: u8 = 3;
/// Lost, then its reply came after all.
const LATE: u8 = 4;

/// The most datagrams' fates a socket keeps: past this, the oldest settled ones are
/// forgotten (their losses kept as a count), so that a long run's memory stays bounded.
const FATES_KEPT: usize = 1 << 20;

/// The fates of a socket's datagrams from `base` on, one byte each.
#[derive(Debug, Default)]
struct Fates {
    base: u64,
    kept: VecDeque<u8>,
    /// Datagrams forgotten that were lost (or late).
    forgotten_lost: u64,
    /// Datagrams answered, forgotten or not.
    answered: u64,
}

impl Fates {
    fn push(&mut self) {
        self.kept.push_back(PENDING);
        if self.kept.len() > FATES_KEPT {
            // Forgets the older half, up to the first datagram still out.
            while self.kept.len() > FATES_KEPT / 2 {
                match self.kept.front() {
                    Some(&PENDING) | None => break,
                    Some(&fate) => {
                        if matches!(fate, LOST | LATE) {
                            self.forgotten_lost += 1;
                        }
                        self.kept.pop_front();
                        self.base += 1;
                    }
                }
            }
        }
    }

    /// Datagram `seq`'s fate; `None` once forgotten.
    fn get(&self, seq: u64) -> Option<u8> {
        let at = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.kept.get(at).copied()
    }

    fn set(&mut self, seq: u64, fate: u8) {
        if let Some(at) = seq
            .checked_sub(self.base)
            .and_then(|at| usize::try_from(at).ok())
            && let Some(slot) = self.kept.get_mut(at)
        {
            *slot = fate;
            if fate == ANSWERED {
                self.answered += 1;
            }
        }
    }

    /// Datagrams up to `seq` (included) lost or late.
    fn lost_up_to(&self, seq: u64) -> u64 {
        let kept = seq.checked_sub(self.base).map_or(0, |n| {
            n.saturating_add(1).min(self.kept.len() as u64) as usize
        });
        self.forgotten_lost
            + self
                .kept
                .iter()
                .take(kept)
                .filter(|f| matches!(**f, LOST | LATE))
                .count() as u64
    }
}

/// A datagram out and not yet answered.
#[derive(Debug, Clone, Copy)]
struct Out {
    /// What its round trip counts from: its intended send time in an open loop, else when
    /// it was sent.
    origin: Instant,
    /// When it went out: the reply timeout and the jitter count from here.
    sent: Instant,
}

/// One second of the run.
#[derive(Debug, Default)]
pub(super) struct SecondTally {
    /// Round trips of the replies that came in this second.
    pub(super) rtt: SparseHistogram,
    /// Datagrams sent in this second and never answered in time.
    pub(super) lost: u64,
    /// The sum of the sockets' RFC 3550 jitter estimates (µs) just after each reply of this
    /// second that had one, and how many: their mean is the second's jitter.
    pub(super) jitter_sum: f64,
    pub(super) jitter_replies: u64,
}

impl SecondTally {
    /// The second's jitter (µs): the mean of its replies' estimates.
    pub(super) fn jitter_us(&self) -> Option<f64> {
        (self.jitter_replies > 0).then(|| self.jitter_sum / self.jitter_replies as f64)
    }
}

/// What a thread's sockets measured.
#[derive(Debug)]
pub(super) struct Tally {
    pub(super) sent: u64,
    pub(super) bytes_sent: u64,
    pub(super) datagrams_in: u64,
    pub(super) bytes_in: u64,
    pub(super) answered: u64,
    pub(super) corrupt: u64,
    pub(super) lost: u64,
    pub(super) late: u64,
    pub(super) duplicates: u64,
    pub(super) reordered: u64,
    pub(super) foreign: u64,
    pub(super) skipped: u64,
    pub(super) send_errors: u64,
    pub(super) refused: u64,
    pub(super) unresolved: u64,
    pub(super) stamped: u64,
    pub(super) request_loss: u64,
    pub(super) reply_loss: u64,
    pub(super) rtt: Histogram<u64>,
    /// |D| of RFC 3550 over consecutive replies of a socket, µs.
    pub(super) delta: Histogram<u64>,
    /// The sum of each socket's final jitter estimate (µs), and how many sockets have one.
    pub(super) jitter_sum: f64,
    pub(super) jitter_sockets: u64,
    pub(super) seconds: Vec<SecondTally>,
    /// The current second's round trips, folded into `seconds` when the second changes.
    current: (usize, Histogram<u64>),
    /// The last datagram sent or answered.
    pub(super) last_activity: Option<Instant>,
    pub(super) first_error: Option<String>,
}

impl Tally {
    pub(super) fn new() -> Tally {
        Tally {
            sent: 0,
            bytes_sent: 0,
            datagrams_in: 0,
            bytes_in: 0,
            answered: 0,
            corrupt: 0,
            lost: 0,
            late: 0,
            duplicates: 0,
            reordered: 0,
            foreign: 0,
            skipped: 0,
            send_errors: 0,
            refused: 0,
            unresolved: 0,
            stamped: 0,
            request_loss: 0,
            reply_loss: 0,
            rtt: histogram(),
            delta: histogram(),
            jitter_sum: 0.0,
            jitter_sockets: 0,
            seconds: Vec::new(),
            current: (0, histogram()),
            last_activity: None,
            first_error: None,
        }
    }

    pub(super) fn error(&mut self, what: String) {
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }

    fn second(&mut self, second: usize) -> &mut SecondTally {
        if self.seconds.len() <= second {
            self.seconds.resize_with(second + 1, SecondTally::default);
        }
        &mut self.seconds[second]
    }

    fn record_rtt(&mut self, second: usize, us: u64) {
        let us = us.clamp(1, HISTOGRAM_MAX_US);
        self.rtt.saturating_record(us);
        if self.current.0 != second {
            self.fold();
            self.current.0 = second;
        }
        self.current.1.saturating_record(us);
    }

    /// Moves the current second's round trips into its [`SecondTally`].
    pub(super) fn fold(&mut self) {
        if self.current.1.is_empty() {
            return;
        }
        let (second, mut h) = std::mem::replace(&mut self.current, (0, histogram()));
        self.second(second).rtt.add_full(&h);
        h.reset();
        self.current = (second, h);
    }

    /// Adds another thread's tally into this one.
    pub(super) fn absorb(&mut self, mut other: Tally) {
        other.fold();
        self.fold();
        for (a, b) in [
            (&mut self.sent, other.sent),
            (&mut self.bytes_sent, other.bytes_sent),
            (&mut self.datagrams_in, other.datagrams_in),
            (&mut self.bytes_in, other.bytes_in),
            (&mut self.answered, other.answered),
            (&mut self.corrupt, other.corrupt),
            (&mut self.lost, other.lost),
            (&mut self.late, other.late),
            (&mut self.duplicates, other.duplicates),
            (&mut self.reordered, other.reordered),
            (&mut self.foreign, other.foreign),
            (&mut self.skipped, other.skipped),
            (&mut self.send_errors, other.send_errors),
            (&mut self.refused, other.refused),
            (&mut self.unresolved, other.unresolved),
            (&mut self.stamped, other.stamped),
            (&mut self.request_loss, other.request_loss),
            (&mut self.reply_loss, other.reply_loss),
            (&mut self.jitter_sockets, other.jitter_sockets),
        ] {
            *a += b;
        }
        self.jitter_sum += other.jitter_sum;
        // Histograms of the same bounds always add.
        let _ = self.rtt.add(&other.rtt);
        let _ = self.delta.add(&other.delta);
        for (i, s) in other.seconds.into_iter().enumerate() {
            let mine = self.second(i);
            mine.rtt.add(&s.rtt);
            mine.lost += s.lost;
            mine.jitter_sum += s.jitter_sum;
            mine.jitter_replies += s.jitter_replies;
        }
        self.last_activity = self.last_activity.max(other.last_activity);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// One socket's datagrams.
#[derive(Debug)]
pub(super) struct Flow {
    /// The socket's number in the run (it picks the payload's filler).
    pub(super) index: usize,
    /// The next sequence number.
    pub(super) next_seq: u64,
    /// Open loop: schedule slots used (sent or skipped).
    pub(super) slots: u64,
    out: BTreeMap<u64, Out>,
    fate: Fates,
    highest_answered: Option<u64>,
    /// The highest datagram with a reply matched to it, right or corrupt.
    highest_replied: Option<u64>,
    /// The previous reply's transit time (ns) and the RFC 3550 jitter estimate (ns).
    last_transit: Option<i128>,
    jitter: f64,
    /// The stamped reply of the highest sequence number: (seq, stamp).
    last_stamp: Option<(u64, u64)>,
    /// A right reply of bench's own payload came with its stamp slot zero: the server does
    /// not stamp.
    unstamped: bool,
}

impl Flow {
    pub(super) fn new(index: usize) -> Flow {
        Flow {
            index,
            next_seq: 0,
            slots: 0,
            out: BTreeMap::new(),
            fate: Fates::default(),
            highest_answered: None,
            highest_replied: None,
            last_transit: None,
            jitter: 0.0,
            last_stamp: None,
            unstamped: false,
        }
    }

    /// Datagrams out and not answered.
    pub(super) fn in_flight(&self) -> usize {
        self.out.len()
    }

    /// Datagrams out that hold a slot of the closed loop's pipeline: those after the
    /// highest one with a reply (right or corrupt: a corrupt reply came back all the
    /// same). One that a later datagram's reply has passed is most likely
    /// lost: it is still awaited for the reply timeout, and counted, but no longer holds
    /// back the load (else every lost datagram would stall its slot for the whole timeout,
    /// and a lossy path would be measured at a fraction of its rate).
    pub(super) fn holding_slots(&self) -> usize {
        match self.highest_replied {
            Some(h) => self.out.range(h + 1..).count(),
            None => self.out.len(),
        }
    }

    /// When the oldest datagram out times out.
    pub(super) fn next_expiry(&self, timeout: Duration) -> Option<Instant> {
        self.out.values().next().map(|o| o.sent + timeout)
    }

    /// Notes datagram `next_seq` as sent and moves on to the next.
    pub(super) fn sent(&mut self, origin: Instant, now: Instant) -> u64 {
        let seq = self.next_seq;
        self.out.insert(seq, Out { origin, sent: now });
        self.fate.push();
        self.next_seq += 1;
        seq
    }

    /// Every datagram out for `timeout` or longer is lost.
    pub(super) fn expire(
        &mut self,
        now: Instant,
        timeout: Duration,
        start: Instant,
        t: &mut Tally,
    ) {
        while let Some((&seq, out)) = self.out.first_key_value() {
            if out.sent + timeout > now {
                break;
            }
            let sent_second = out.sent.saturating_duration_since(start).as_secs() as usize;
            self.out.remove(&seq);
            self.fate.set(seq, LOST);
            t.lost += 1;
            t.second(sent_second).lost += 1;
        }
    }

    /// A datagram from the server.
    pub(super) fn reply(
        &mut self,
        reply: &[u8],
        now: Instant,
        start: Instant,
        payload: &Payload,
        scratch: &mut Vec<u8>,
        t: &mut Tally,
    ) {
        t.datagrams_in += 1;
        t.bytes_in += reply.len() as u64;
        let highest = self.next_seq.checked_sub(1);
        let mut seq = payload
            .id
            .read(reply)
            .zip(highest)
            .and_then(|(id, highest)| payload.id.unwrap(id, highest));
        // Right: the datagram it names, back as sent. A server that does not stamp leaves the
        // slot zero, so once a socket has had such a reply, a slot with a bit set is damage.
        let right = seq.is_some_and(|seq| payload.right(self.index, seq, reply, scratch))
            && !(self.unstamped && payload.stamp(reply).is_some());
        if !right && let Some(found) = highest.and_then(|h| payload.recover(self.index, reply, h)) {
            // Its number was hit on the way: it answers the datagram its filler names, and
            // is corrupt, not a reply to another datagram (nor foreign).
            seq = Some(found);
        }
        let Some(seq) = seq else {
            t.foreign += 1;
            t.error(format!(
                "socket {}: a reply of {} bytes answering no datagram sent",
                self.index,
                reply.len()
            ));
            return;
        };
        match self.fate.get(seq) {
            Some(PENDING) => {}
            // A reply to a datagram so far back that its fate is forgotten: settled long
            // ago, answered or lost; it counts as late.
            None => {
                t.late += 1;
                return;
            }
            Some(ANSWERED | CORRUPT | LATE) => {
                t.duplicates += 1;
                return;
            }
            _ => {
                self.fate.set(seq, LATE);
                t.late += 1;
                return;
            }
        }
        let out = self.out.remove(&seq).expect("a pending datagram is out");
        t.last_activity = Some(now);
        self.highest_replied = self.highest_replied.max(Some(seq));
        if !right {
            self.fate.set(seq, CORRUPT);
            t.corrupt += 1;
            t.error(format!(
                "socket {}: the reply to datagram {seq} is not what was expected ({} bytes)",
                self.index,
                reply.len()
            ));
            return;
        }
        self.fate.set(seq, ANSWERED);
        t.answered += 1;
        if payload.send.is_none() && payload.stamp(reply).is_none() {
            self.unstamped = true;
        }
        match self.highest_answered {
            Some(h) if h > seq => t.reordered += 1,
            _ => self.highest_answered = Some(seq),
        }
        if let Some(stamp) = payload.stamp(reply) {
            t.stamped += 1;
            if self.last_stamp.is_none_or(|(s, _)| s < seq) {
                self.last_stamp = Some((seq, stamp));
            }
        }
        let second = now.saturating_duration_since(start).as_secs() as usize;
        t.record_rtt(second, micros(now.saturating_duration_since(out.origin)));
        // RFC 3550, 6.4.1: D is the difference of two consecutive replies' transit times;
        // J += (|D| - J) / 16.
        let transit = now.saturating_duration_since(out.sent).as_nanos() as i128;
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
            t.delta
                .saturating_record(((d / 1000.0).round() as u64).min(HISTOGRAM_MAX_US));
            let this = t.second(second);
            this.jitter_sum += self.jitter / 1000.0;
            this.jitter_replies += 1;
        }
        self.last_transit = Some(transit);
    }

    /// The end of the run: what is still out is unresolved, and the loss is split by the
    /// stamps into the requests the server never got and the replies that never came.
    pub(super) fn finish(&mut self, t: &mut Tally) {
        t.unresolved += self.out.len() as u64;
        self.out.clear();
        if self.last_transit.is_some() && self.fate.answered > 1 {
            t.jitter_sum += self.jitter / 1000.0;
            t.jitter_sockets += 1;
        }
        if let Some((seq, stamp)) = self.last_stamp {
            // Up to `seq`, `seq + 1` datagrams were sent and the server counted `stamp`.
            let covered = self.fate.lost_up_to(seq);
            let request = (seq + 1).saturating_sub(stamp).min(covered);
            t.request_loss += request;
            t.reply_loss += covered - request;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_run_keeps_a_bounded_window_of_fates_and_every_loss_counted() {
        let mut fates = Fates::default();
        let total = 3 * FATES_KEPT as u64;
        for seq in 0..total {
            fates.push();
            // Every tenth lost, the rest answered, each settled at once.
            fates.set(seq, if seq % 10 == 0 { LOST } else { ANSWERED });
            assert!(fates.kept.len() <= FATES_KEPT + 1);
        }
        assert!(fates.base > 0, "nothing was forgotten");
        assert_eq!(fates.get(0), None);
        assert_eq!(fates.get(total - 1), Some(ANSWERED));
        let lost = total.div_ceil(10);
        assert_eq!(fates.lost_up_to(total - 1), lost);
        assert_eq!(fates.answered, total - lost);
    }

    #[test]
    fn a_datagram_still_out_is_never_forgotten() {
        let mut fates = Fates::default();
        fates.push();
        for seq in 1..=(2 * FATES_KEPT as u64) {
            fates.push();
            fates.set(seq, ANSWERED);
        }
        assert_eq!(fates.get(0), Some(PENDING));
        fates.set(0, LOST);
        assert_eq!(fates.lost_up_to(5), 1);
    }
}
