//! What one thread measured ([`Tally`]): every reply's latency, the connect times, the errors
//! and the counts, and the measured window second by second; tallies merge at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::error::{ErrorKind, FirstError};
use super::histogram::{histogram, micros, second_histogram};
use super::plan::Schedule;

/// One second of the measured window on one thread.
pub(super) struct Second {
    pub(super) latency: Histogram<u64>,
    pub(super) errors: u64,
}

/// One thread's measurements; merged at the end.
pub(super) struct Tally {
    /// Every measured reply's latency, late ones included.
    pub(super) latency: Histogram<u64>,
    pub(super) connect: Histogram<u64>,
    pub(super) errors: BTreeMap<ErrorKind, u64>,
    /// The first error of each kind, and when it happened.
    pub(super) first_errors: BTreeMap<ErrorKind, (Instant, FirstError)>,
    pub(super) sent: u64,
    /// Measured replies that came within the window.
    pub(super) messages: u64,
    /// Their bytes.
    pub(super) bytes: u64,
    /// Measured messages in flight when the window closed: answered late, or not at all.
    pub(super) in_flight_at_end: u64,
    /// Of those, the replies that came after it (awaited, not counted in `messages`).
    pub(super) late: u64,
    /// Replies completed, warm-up included: the live throughput.
    pub(super) completed: u64,
    /// The measured window second by second.
    pub(super) timeline: Vec<Second>,
}

impl Tally {
    pub(super) fn new() -> Self {
        Tally {
            latency: histogram(),
            connect: histogram(),
            errors: BTreeMap::new(),
            first_errors: BTreeMap::new(),
            sent: 0,
            messages: 0,
            bytes: 0,
            in_flight_at_end: 0,
            late: 0,
            completed: 0,
            timeline: Vec::new(),
        }
    }

    /// The timeline's entry for `now`: seconds before the window count in the first, those
    /// after a duration limit's end in the last.
    fn second(&mut self, now: Instant, schedule: Option<&Schedule>) -> &mut Second {
        let mut i = 0;
        if let Some(s) = schedule {
            let mut at = now.saturating_duration_since(s.measure_start);
            if let Some(end) = s.end {
                let last = end
                    .duration_since(s.measure_start)
                    .saturating_sub(Duration::from_nanos(1));
                at = at.min(last);
            }
            i = at.as_secs() as usize;
        }
        while self.timeline.len() <= i {
            self.timeline.push(Second {
                latency: second_histogram(),
                errors: 0,
            });
        }
        &mut self.timeline[i]
    }

    /// Counts a reply that came `now`, `bytes` long, to a message whose latency runs from
    /// `measured_from` (`None`: a warm-up message, counted only as completed).
    pub(super) fn complete(
        &mut self,
        measured_from: Option<Instant>,
        now: Instant,
        bytes: usize,
        schedule: Option<&Schedule>,
    ) {
        self.completed += 1;
        let Some(intended) = measured_from else {
            return;
        };
        let us = micros(now.saturating_duration_since(intended));
        self.latency.saturating_record(us);
        if schedule.and_then(|s| s.end).is_some_and(|end| now > end) {
            self.late += 1;
            self.in_flight_at_end += 1;
            return;
        }
        self.messages += 1;
        self.bytes += bytes as u64;
        self.second(now, schedule).latency.saturating_record(us);
    }

    /// Counts an error, keeping the first of its kind.
    pub(super) fn error(
        &mut self,
        kind: ErrorKind,
        detail: FirstError,
        now: Instant,
        schedule: Option<&Schedule>,
    ) {
        *self.errors.entry(kind).or_default() += 1;
        self.first_errors.entry(kind).or_insert((now, detail));
        self.second(now, schedule).errors += 1;
    }

    pub(super) fn absorb(&mut self, other: Tally) {
        // Same bounds on both sides, and saturating records never exceed them.
        self.latency.add(&other.latency).expect("same bounds");
        self.connect.add(&other.connect).expect("same bounds");
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        for (kind, first) in other.first_errors {
            let mine = self.first_errors.entry(kind).or_insert(first.clone());
            if first.0 < mine.0 {
                *mine = first;
            }
        }
        self.sent += other.sent;
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.in_flight_at_end += other.in_flight_at_end;
        self.late += other.late;
        self.completed += other.completed;
        for (i, second) in other.timeline.into_iter().enumerate() {
            if i == self.timeline.len() {
                self.timeline.push(second);
                continue;
            }
            // Second histograms resize themselves to take any value.
            let _ = self.timeline[i].latency.add(&second.latency);
            self.timeline[i].errors += second.errors;
        }
    }
}
