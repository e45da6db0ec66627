//! Latency histograms: their bounds and precision, the [`Percentiles`] read from them, and
//! the portable form (HdrHistogram V2 deflate, base64) that JSON reports carry and `bench
//! merge` reads back.

use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

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
