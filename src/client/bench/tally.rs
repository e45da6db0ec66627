//! What one thread measured ([`Tally`]): every reply's latency, the connect times, the errors
//! and the counts, and the measured window second by second; tallies merge at the end.
//!
//! Each reply's latency is recorded twice, as the same value in histograms of the same
//! buckets: once in the whole run's histogram, once in its second's. The second being
//! recorded is a full histogram of the run's precision, so recording costs the same array
//! increment; it grows to the largest value it has held (16 KiB below 2 ms, 184 KiB at most)
//! and is cleared, as far as it grew, when a reply lands in another second and it is folded
//! into the timeline, which keeps each second as only the buckets it filled
//! ([`SparseHistogram`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::error::{ErrorKind, FirstError};
use super::histogram::{HISTOGRAM_MAX_US, SparseHistogram, histogram, micros};
use super::plan::Schedule;
use super::proto::Class;

/// Measured replies by what they were ([`Class`]), overall or for one kind of request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Classes {
    pub(super) ok: u64,
    pub(super) error: u64,
    pub(super) miss: u64,
}

impl Classes {
    fn count(&mut self, class: Class) {
        match class {
            Class::Ok => self.ok += 1,
            Class::Error => self.error += 1,
            Class::Miss => self.miss += 1,
        }
    }

    fn add(&mut self, other: &Classes) {
        self.ok += other.ok;
        self.error += other.error;
        self.miss += other.miss;
    }
}

/// One kind of request in a mix: its measured replies and their latencies.
pub(super) struct Kind {
    pub(super) messages: u64,
    pub(super) classes: Classes,
    pub(super) latency: Histogram<u64>,
}

/// One second of the measured window on one thread.
#[derive(Default)]
pub(super) struct Second {
    /// The latencies of the replies that came in it.
    pub(super) latency: SparseHistogram,
    pub(super) errors: u64,
}

/// TLS handshakes on one thread, each timed from its connect's end to its own.
pub(super) struct Handshakes {
    /// Full handshakes' times (microseconds).
    pub(super) full: Histogram<u64>,
    /// Resumed handshakes' times.
    pub(super) resumed: Histogram<u64>,
    /// Handshakes (of either kind) that ended within the measured window.
    pub(super) in_window: u64,
    /// What they agreed on, `TLSv1_3 TLS13_AES_256_GCM_SHA384 X25519MLKEM768 alpn=-`,
    /// counted.
    pub(super) negotiated: BTreeMap<String, u64>,
}

impl Handshakes {
    fn new() -> Self {
        Handshakes {
            full: histogram(),
            resumed: histogram(),
            in_window: 0,
            negotiated: BTreeMap::new(),
        }
    }

    /// Counts a handshake that took `took` and ended `now`.
    pub(super) fn record(
        &mut self,
        state: &rustls::CommonState,
        took: Duration,
        now: Instant,
        schedule: Option<&Schedule>,
    ) {
        let resumed = state.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let histogram = if resumed {
            &mut self.resumed
        } else {
            &mut self.full
        };
        histogram.saturating_record(micros(took).min(HISTOGRAM_MAX_US));
        if schedule.is_some_and(|s| now >= s.measure_start && s.end.is_none_or(|end| now < end)) {
            self.in_window += 1;
        }
        let (version, suite) = crate::tls::peer::version_and_suite(state);
        let (group, alpn) = crate::tls::peer::group_and_alpn(state);
        let key = format!("{version} {suite} {group} alpn={alpn}");
        *self.negotiated.entry(key).or_default() += 1;
    }

    fn absorb(&mut self, other: Handshakes) {
        self.full.add(&other.full).expect("same bounds");
        self.resumed.add(&other.resumed).expect("same bounds");
        self.in_window += other.in_window;
        for (what, n) in other.negotiated {
            *self.negotiated.entry(what).or_default() += n;
        }
    }
}

/// One thread's measurements; merged at the end.
pub(super) struct Tally {
    /// Every measured reply's latency, late ones included.
    pub(super) latency: Histogram<u64>,
    /// Every connect's time, reconnects included.
    pub(super) connect: Histogram<u64>,
    /// Connections whose first connect succeeded.
    pub(super) connected: u64,
    /// `--tls`: the handshakes.
    pub(super) tls: Handshakes,
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
    /// Measured replies within the window by class.
    pub(super) classes: Classes,
    /// Error replies (all, warm-up included) by their kind: the error's first word or the
    /// HTTP status.
    pub(super) error_prefixes: BTreeMap<String, u64>,
    /// A mix of requests: each kind's own counts (empty for a single kind).
    pub(super) kinds: Vec<Kind>,
    /// Connections reopened: after the server closed them cleanly (HTTP `Connection:
    /// close`), or after `--reconnect-every` replies.
    pub(super) reconnects: u64,
    /// The measured window second by second, except what `current` still holds.
    timeline: Vec<Second>,
    /// The second replies are being recorded in (an index in `timeline`), and their latencies
    /// so far, in a histogram of `latency`'s buckets that grows as far as its values.
    current: (usize, Histogram<u64>),
}

impl Tally {
    pub(super) fn new() -> Self {
        Tally {
            latency: histogram(),
            connect: histogram(),
            connected: 0,
            tls: Handshakes::new(),
            errors: BTreeMap::new(),
            first_errors: BTreeMap::new(),
            sent: 0,
            messages: 0,
            bytes: 0,
            in_flight_at_end: 0,
            late: 0,
            completed: 0,
            classes: Classes::default(),
            error_prefixes: BTreeMap::new(),
            kinds: Vec::new(),
            reconnects: 0,
            timeline: Vec::new(),
            // Three significant digits are a valid precision.
            current: (0, Histogram::new(3).expect("valid histogram precision")),
        }
    }

    /// Moves the current second's latencies into the timeline.
    fn fold(&mut self) {
        let (i, latency) = &mut self.current;
        if !latency.is_empty() {
            self.timeline[*i].latency.add_full(latency);
            latency.reset();
        }
    }

    /// Folds the current second, and returns its latencies recorded since the last fold: what a
    /// streaming run passes on live.
    pub(super) fn fold_live(&mut self) -> Option<(u64, SparseHistogram)> {
        let (i, latency) = &self.current;
        if latency.is_empty() {
            return None;
        }
        let delta = SparseHistogram::of(latency).ok()?;
        let i = *i as u64;
        self.fold();
        Some((i, delta))
    }

    /// The measured window second by second; the tally's timeline is empty after.
    pub(super) fn take_timeline(&mut self) -> Vec<Second> {
        self.fold();
        std::mem::take(&mut self.timeline)
    }

    /// The index in the timeline of `now`'s second, with an entry there: seconds before the
    /// window count in the first, those after a duration limit's end in the last.
    fn second(&mut self, now: Instant, schedule: Option<&Schedule>) -> usize {
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
        if self.timeline.len() <= i {
            self.timeline.resize_with(i + 1, Second::default);
        }
        i
    }

    /// A tally that keeps `kinds` kinds of request apart (1: no mix).
    pub(super) fn with_kinds(kinds: usize) -> Self {
        let mut tally = Tally::new();
        if kinds > 1 {
            tally.kinds = (0..kinds)
                .map(|_| Kind {
                    messages: 0,
                    classes: Classes::default(),
                    latency: histogram(),
                })
                .collect();
        }
        tally
    }

    /// Counts a reply that came `now`, `bytes` long, to a message sent at `sent` whose
    /// latency runs from `measured_from` (`None`: a warm-up message, counted only as
    /// completed).
    #[cfg(test)]
    pub(super) fn complete(
        &mut self,
        measured_from: Option<Instant>,
        sent: Instant,
        now: Instant,
        bytes: usize,
        schedule: Option<&Schedule>,
    ) {
        self.complete_kind(measured_from, sent, now, bytes, schedule, 0, Class::Ok);
    }

    /// [`Tally::complete`] for a reply of `class` to a request of kind `kind`.
    #[allow(clippy::too_many_arguments)] // one reply's facts, passed on the hot path unboxed
    pub(super) fn complete_kind(
        &mut self,
        measured_from: Option<Instant>,
        sent: Instant,
        now: Instant,
        bytes: usize,
        schedule: Option<&Schedule>,
        kind: usize,
        class: Class,
    ) {
        self.completed += 1;
        let Some(intended) = measured_from else {
            return;
        };
        let us = micros(now.saturating_duration_since(intended)).min(HISTOGRAM_MAX_US);
        self.latency.saturating_record(us);
        if let Some(end) = schedule.and_then(|s| s.end)
            && now > end
        {
            self.late += 1;
            // In flight at the end only if it had gone out by then: an open loop that fell
            // behind sends messages meant for the window after it.
            if sent <= end {
                self.in_flight_at_end += 1;
            }
            return;
        }
        self.messages += 1;
        self.bytes += bytes as u64;
        self.classes.count(class);
        if let Some(k) = self.kinds.get_mut(kind) {
            k.messages += 1;
            k.classes.count(class);
            k.latency.saturating_record(us);
        }
        let i = self.second(now, schedule);
        if i != self.current.0 {
            self.fold();
            self.current.0 = i;
        }
        // The same value as above, in the same bucket: both histograms count from 1 us in
        // three significant digits, and this one grows to take any value the other holds.
        self.current
            .1
            .record(us)
            .expect("a growing histogram takes the run's values");
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
        let i = self.second(now, schedule);
        self.timeline[i].errors += 1;
    }

    /// Adds `other`'s counts to this tally's.
    pub(super) fn absorb(&mut self, mut other: Tally) {
        let timeline = other.take_timeline();
        // Same bounds on both sides, and saturating records never exceed them.
        self.latency.add(&other.latency).expect("same bounds");
        self.connect.add(&other.connect).expect("same bounds");
        self.connected += other.connected;
        self.tls.absorb(other.tls);
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
        self.classes.add(&other.classes);
        for (prefix, n) in other.error_prefixes {
            *self.error_prefixes.entry(prefix).or_default() += n;
        }
        if self.kinds.is_empty() {
            self.kinds = other.kinds;
        } else {
            for (mine, theirs) in self.kinds.iter_mut().zip(&other.kinds) {
                mine.messages += theirs.messages;
                mine.classes.add(&theirs.classes);
                mine.latency.add(&theirs.latency).expect("same bounds");
            }
        }
        self.reconnects += other.reconnects;
        for (i, second) in timeline.into_iter().enumerate() {
            if i == self.timeline.len() {
                self.timeline.push(second);
                continue;
            }
            self.timeline[i].latency.add(&second.latency);
            self.timeline[i].errors += second.errors;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window of three seconds from `start`.
    fn window(start: Instant) -> Schedule {
        Schedule {
            connected: start,
            go: start,
            measure_start: start,
            end: Some(start + Duration::from_secs(3)),
        }
    }

    /// Replies (arrival in ms after the start, latency in us), in the order they come.
    const REPLIES: [(u64, u64); 10] = [
        (100, 30),
        (400, 20_287),
        (999, 255),
        (1_200, 256),
        // Out of order: a reply stamped before one already counted in the next second.
        (900, 1_999_000),
        (2_500, 7),
        // Longer than the histograms keep apart: recorded as their bound, in both.
        (2_600, 4_000_000_000),
        (2_999, 3_000_000),
        (3_400, 2_000_000),
        (4_000, 40_000),
    ];

    /// A start late enough that every reply's send time is after the clock's origin.
    fn start() -> Instant {
        Instant::now() + Duration::from_secs(5_000)
    }

    fn tally(start: Instant, replies: &[(u64, u64)]) -> Tally {
        let schedule = window(start);
        let mut tally = Tally::new();
        for &(at_ms, us) in replies {
            let now = start + Duration::from_millis(at_ms);
            let from = now - Duration::from_micros(us);
            tally.complete(Some(from), from, now, 64, Some(&schedule));
        }
        tally
    }

    #[test]
    fn each_second_holds_the_same_values_as_the_whole() {
        let start = start();
        let mut tally = tally(start, &REPLIES);
        // The last two came after the window: in the whole only.
        assert_eq!((tally.messages, tally.late), (8, 2));
        let timeline = tally.take_timeline();
        assert_eq!(timeline.len(), 3);
        let mut union = histogram();
        for (i, second) in timeline.iter().enumerate() {
            let mut want = histogram();
            for &(at_ms, us) in &REPLIES {
                if at_ms / 1_000 == i as u64 {
                    want.record(us.min(HISTOGRAM_MAX_US)).unwrap();
                }
            }
            assert_eq!(second.latency.histogram(), want, "second {i}");
            union.add(second.latency.histogram()).unwrap();
        }
        let mut late = histogram();
        late.record(2_000_000).unwrap();
        late.record(40_000).unwrap();
        union.add(&late).unwrap();
        assert_eq!(union, tally.latency);
        assert!(tally.take_timeline().is_empty());
    }

    #[test]
    fn absorbed_tallies_add_second_by_second() {
        let start = start();
        let (a, b) = REPLIES.split_at(4);
        let mut total = Tally::new();
        total.absorb(tally(start, a));
        total.absorb(tally(start, b));
        let mut whole = tally(start, &REPLIES);
        assert_eq!(total.latency, whole.latency);
        let (got, want) = (total.take_timeline(), whole.take_timeline());
        assert_eq!(got.len(), want.len());
        for (i, (got, want)) in got.iter().zip(&want).enumerate() {
            assert_eq!(got.latency, want.latency, "second {i}");
        }
    }
}
