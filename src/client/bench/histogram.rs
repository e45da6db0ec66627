//! Latency histograms: how values are recorded, what one thread measured ([`Tally`]) second
//! by second, how tallies merge, the [`Percentiles`] read from them, and the portable form
//! (HdrHistogram V2 deflate, base64) that JSON reports carry and `bench merge` reads back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use super::conn::Flight;
use super::error::{ErrorKind, FirstError};
use super::plan::Schedule;

/// The highest latency the histograms keep apart, in microseconds (one hour); longer ones are
/// recorded as this.
pub(super) const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

/// A latency summary in microseconds, read from an HdrHistogram (3 significant digits).
/// All zero when nothing was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// The fastest.
    pub min: u64,
    /// The median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// The slowest.
    pub max: u64,
    /// The arithmetic mean.
    pub mean: f64,
    /// The standard deviation.
    pub stdev: f64,
}

impl Percentiles {
    /// The summary of `histogram` (values in microseconds).
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            min: histogram.min(),
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: histogram.mean(),
            stdev: histogram.stdev(),
        }
    }
}

/// Microseconds, rounded down, as histograms record them.
pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(super) fn histogram() -> Histogram<u64> {
    // Bounds and precision are constants known to be valid.
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("valid histogram bounds")
}

/// A histogram for one second of the timeline: two significant digits and only as wide as
/// its values, so that an hour of seconds stays small.
pub(super) fn second_histogram() -> Histogram<u64> {
    // Two significant digits is a valid precision.
    Histogram::new(2).expect("valid histogram precision")
}

/// `histogram` in HdrHistogram's V2 deflate form, base64: what `--json` carries.
pub fn encode(histogram: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Writing to a Vec cannot fail, and histograms made here are always serialisable.
    V2DeflateSerializer::new()
        .serialize(histogram, &mut bytes)
        .expect("a histogram serialises to memory");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads back what [`encode`] wrote (or any V2 or V2 deflate histogram, base64).
///
/// # Errors
///
/// Bad base64 or a histogram that does not decode, said in words.
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("the histogram is not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("the histogram does not decode: {e:?}"))
}

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

    pub(super) fn complete(
        &mut self,
        flight: Flight,
        now: Instant,
        bytes: usize,
        schedule: Option<&Schedule>,
    ) {
        self.completed += 1;
        if !flight.measured {
            return;
        }
        let us = micros(now.saturating_duration_since(flight.intended));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_histograms_read_back_equal() {
        let mut h = histogram();
        for v in [1, 7, 250, 250, 99_999, HISTOGRAM_MAX_US] {
            h.record(v).unwrap();
        }
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back, h);
        assert!(decode("not base64!").is_err());
        assert!(decode("aGVsbG8=").is_err());
    }
}
