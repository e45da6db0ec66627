//! Latency histograms: how values are recorded, what one thread measured ([`Tally`]), how
//! tallies merge, and the [`Percentiles`] read from them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::conn::Flight;
use super::error::ErrorKind;
/// The highest latency the histograms keep apart, in microseconds (one hour); longer ones are
/// recorded as this.
pub(super) const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

/// A latency summary in microseconds, read from an HdrHistogram (3 significant digits).
/// All zero when nothing was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
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

/// One thread's measurements; merged at the end.
pub(super) struct Tally {
    pub(super) latency: Histogram<u64>,
    pub(super) connect: Histogram<u64>,
    pub(super) errors: BTreeMap<ErrorKind, u64>,
    pub(super) sent: u64,
    pub(super) messages: u64,
    pub(super) bytes: u64,
    /// Replies completed, warm-up included: the live throughput.
    pub(super) completed: u64,
}

impl Tally {
    pub(super) fn new() -> Self {
        Tally {
            latency: histogram(),
            connect: histogram(),
            errors: BTreeMap::new(),
            sent: 0,
            messages: 0,
            bytes: 0,
            completed: 0,
        }
    }

    pub(super) fn complete(&mut self, flight: Flight, now: Instant, size: usize) {
        self.completed += 1;
        if flight.measured {
            self.messages += 1;
            self.bytes += size as u64;
            self.latency
                .saturating_record(micros(now.saturating_duration_since(flight.intended)));
        }
    }

    pub(super) fn absorb(&mut self, other: Tally) {
        // Same bounds on both sides, and saturating records never exceed them.
        self.latency.add(&other.latency).expect("same bounds");
        self.connect.add(&other.connect).expect("same bounds");
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.sent += other.sent;
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.completed += other.completed;
    }
}
