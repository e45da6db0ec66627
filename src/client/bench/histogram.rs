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

/// A histogram of the run's bounds and precision: 1 us to [`HISTOGRAM_MAX_US`], three
/// significant digits (23,552 counters, 184 KiB).
pub(super) fn histogram() -> Histogram<u64> {
    // Bounds and precision are constants known to be valid.
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("valid histogram bounds")
}

/// A latency histogram in the buckets of the run's own (`histogram()`: the same bounds and
/// precision), keeping only the buckets that hold a count: what each second of the timeline
/// is. A second's replies fill some tens to a few thousand of the 23,552 buckets, 8 bytes
/// each, where a full histogram of these bounds takes 184 KiB whatever it holds. Added
/// together, the seconds give exactly the histogram of all their replies;
/// [`SparseHistogram::histogram`] gives the full form back, to read or to write.
///
/// A bucket counts up to `u32::MAX` (4.29 billion replies in one bucket of one second); sums
/// beyond saturate there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseHistogram {
    /// Each bucket that holds a count: its lowest value and the count; by value, no zeros.
    /// Every value of the run's histogram fits in 32 bits: it ends below 2^32 us.
    buckets: Vec<(u32, u32)>,
}

impl SparseHistogram {
    /// What `histogram` holds, in the run's buckets (each count where `Histogram::add` would
    /// put it).
    ///
    /// # Errors
    ///
    /// Values beyond the run's bounds, or a bucket that counts more than `u32::MAX`.
    pub fn of(histogram: &Histogram<u64>) -> Result<Self, String> {
        let mut full = self::histogram();
        full.add(histogram)
            .map_err(|e| format!("the histogram has values beyond {HISTOGRAM_MAX_US} us: {e:?}"))?;
        if full
            .iter_recorded()
            .any(|v| v.count_at_value() > u64::from(u32::MAX))
        {
            return Err(format!(
                "the histogram counts more than {} in one bucket",
                u32::MAX
            ));
        }
        let mut sparse = SparseHistogram::default();
        sparse.add_full(&full);
        Ok(sparse)
    }

    /// Adds `full`, a histogram in the run's buckets: made by [`histogram()`], or counting
    /// from 1 us in three significant digits up to any bound within [`HISTOGRAM_MAX_US`].
    pub(super) fn add_full(&mut self, full: &Histogram<u64>) {
        debug_assert_eq!((full.low(), full.sigfig()), (1, 3), "the run's buckets");
        self.merge(full.iter_recorded().map(|v| {
            let value = full.lowest_equivalent(v.value_iterated_to());
            (
                // The run's buckets all start below 2^32 us.
                u32::try_from(value).expect("a value within the run's bounds"),
                u32::try_from(v.count_at_value()).unwrap_or(u32::MAX),
            )
        }));
    }

    /// Adds `other`'s counts to this one's.
    pub fn add(&mut self, other: &SparseHistogram) {
        self.merge(other.buckets.iter().copied());
    }

    /// Merges `other`, buckets by value, into `self.buckets`.
    fn merge(&mut self, other: impl Iterator<Item = (u32, u32)>) {
        let mine = std::mem::take(&mut self.buckets);
        let mut other = other.peekable();
        let mut merged = Vec::with_capacity(mine.len() + other.size_hint().0);
        let mut mine = mine.into_iter().peekable();
        loop {
            let next = match (mine.peek().copied(), other.peek().copied()) {
                (None, None) => break,
                (Some(a), Some(b)) if a.0 == b.0 => {
                    mine.next();
                    other.next();
                    (a.0, a.1.saturating_add(b.1))
                }
                (Some(a), Some(b)) if a.0 < b.0 => {
                    mine.next();
                    a
                }
                (Some(a), None) => {
                    mine.next();
                    a
                }
                (_, Some(b)) => {
                    other.next();
                    b
                }
            };
            merged.push(next);
        }
        merged.shrink_to_fit();
        self.buckets = merged;
    }

    /// How many values it holds.
    pub fn len(&self) -> u64 {
        self.buckets.iter().map(|&(_, n)| u64::from(n)).sum()
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// How many buckets hold a count (what it costs: 8 bytes each).
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// The full histogram: the run's bounds and precision, these counts.
    pub fn histogram(&self) -> Histogram<u64> {
        let mut full = histogram();
        for &(value, n) in &self.buckets {
            // Every bucket came from a histogram of these bounds.
            full.record_n(u64::from(value), u64::from(n))
                .expect("a value within the bounds");
        }
        full
    }
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
    check_header(&bytes)?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("the histogram does not decode: {e:?}"))
}

/// The V2 cookies, with the low nibble of the word size masked out: a compressed histogram,
/// and a plain one (alone, or inside a compressed one).
const V2_COMPRESSED: u32 = 0x1c84_9304;
const V2_PLAIN: u32 = 0x1c84_9303;
const WORD_SIZE_BITS: u32 = 0xf0;
/// The plain V2 header's length: cookie, payload length, offset, precision, lowest,
/// highest, ratio.
const V2_HEADER: usize = 40;
/// The most a histogram of the run's bounds takes decompressed: every counter as a varint
/// of at most 9 bytes, and more room than that.
const MAX_INFLATED: u64 = 1 << 20;

/// Checks what a histogram says of itself before anything is allocated from it: the
/// compressed length within the input, the decompressed size bounded, the payload length
/// within what was decompressed, and the bounds and precision of a histogram this program
/// writes (so its counters take what a run's do, never what a header claims).
fn check_header(bytes: &[u8]) -> Result<(), String> {
    use std::io::Read as _;
    let be32 = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|s| u32::from_be_bytes(s.try_into().expect("four bytes")))
    };
    let short = || "the histogram is cut short".to_owned();
    let cookie = be32(bytes, 0).ok_or_else(short)? & !WORD_SIZE_BITS;
    if cookie == V2_PLAIN {
        return check_plain(bytes);
    }
    if cookie != V2_COMPRESSED {
        return Err("the histogram is not an HdrHistogram V2 one".into());
    }
    let claimed = be32(bytes, 4).ok_or_else(short)? as usize;
    if claimed > bytes.len() - 8 {
        return Err(format!(
            "the histogram claims {claimed} bytes where {} follow",
            bytes.len() - 8
        ));
    }
    let mut inflated = Vec::new();
    flate2::read::ZlibDecoder::new(&bytes[8..8 + claimed])
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| format!("the histogram does not inflate: {e}"))?;
    if inflated.len() as u64 > MAX_INFLATED {
        return Err(format!(
            "the histogram inflates past {MAX_INFLATED} bytes, more than a run's"
        ));
    }
    if be32(&inflated, 0).ok_or_else(short)? & !WORD_SIZE_BITS != V2_PLAIN {
        return Err("the histogram is not an HdrHistogram V2 one inside".into());
    }
    check_plain(&inflated)
}

/// [`check_header`] for a plain V2 histogram: its payload within `bytes`, its bounds a run's.
fn check_plain(bytes: &[u8]) -> Result<(), String> {
    let field = |at: usize, len: usize| {
        bytes
            .get(at..at + len)
            .map(|s| s.iter().fold(0u64, |a, &b| a << 8 | u64::from(b)))
            .ok_or_else(|| "the histogram is cut short".to_owned())
    };
    let payload = field(4, 4)? as usize;
    let follow = bytes.len().saturating_sub(V2_HEADER);
    if payload > follow {
        return Err(format!(
            "the histogram claims a payload of {payload} bytes where {follow} follow"
        ));
    }
    let precision = field(12, 4)?;
    let lowest = field(16, 8)?;
    let highest = field(24, 8)?;
    if precision != 3 || lowest != 1 || highest > 2 * HISTOGRAM_MAX_US {
        return Err(format!(
            "the histogram's bounds ({lowest}..{highest}, {precision} digits) are not those \
             of a run (1..{HISTOGRAM_MAX_US} us, 3 digits)"
        ));
    }
    Ok(())
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

    #[test]
    fn hostile_headers_are_refused_before_anything_is_allocated() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        // A compressed histogram that claims 4 GiB of compressed bytes, in 56 characters.
        let mut claim = V2_COMPRESSED.to_be_bytes().to_vec();
        claim.extend_from_slice(&u32::MAX.to_be_bytes());
        claim.extend_from_slice(&[0x78, 0x9c, 1, 2, 3, 4, 5, 6]);
        let error = decode(&b64(&claim)).unwrap_err();
        assert!(error.contains("claims 4294967295 bytes"), "{error}");
        // Well-formed, but with bounds that would take gigabytes of counters.
        let huge = Histogram::<u64>::new_with_bounds(1, u64::MAX / 4, 5).unwrap();
        let error = decode(&encode(&huge)).unwrap_err();
        assert!(error.contains("are not those of a run"), "{error}");
        // Cut short anywhere: an error, never a panic.
        let good = base64::engine::general_purpose::STANDARD
            .decode(encode(&histogram()))
            .unwrap();
        for cut in 0..good.len() {
            assert!(decode(&b64(&good[..cut])).is_err(), "cut at {cut}");
        }
    }

    /// Latencies from 1 us to past the hour, most of them far above 255 us.
    fn latencies(n: u64, seed: u64) -> Vec<u64> {
        (0..n)
            .map(|i| {
                let spread = (i * 7919 + seed * 104_729) % 36;
                (1 + i % 997) << spread
            })
            .collect()
    }

    fn full(values: &[u64]) -> Histogram<u64> {
        let mut h = histogram();
        for &v in values {
            h.saturating_record(v);
        }
        h
    }

    #[test]
    fn a_sparse_histogram_is_the_full_one_in_its_buckets() {
        let values = latencies(20_000, 1);
        assert!(values.iter().any(|&v| v > HISTOGRAM_MAX_US));
        let whole = full(&values);
        let sparse = SparseHistogram::of(&whole).unwrap();
        assert_eq!(sparse.histogram(), whole);
        assert_eq!(sparse.len(), values.len() as u64);
        assert_eq!(sparse.buckets(), whole.iter_recorded().count());
        assert!(!sparse.is_empty() && SparseHistogram::default().is_empty());

        // Any split, added back, is the whole: what the seconds of a run are to the run.
        let (a, b) = values.split_at(7_001);
        let mut added = SparseHistogram::of(&full(a)).unwrap();
        added.add(&SparseHistogram::of(&full(b)).unwrap());
        assert_eq!(added, sparse);
        let mut folded = SparseHistogram::default();
        folded.add_full(&full(b));
        folded.add_full(&full(a));
        assert_eq!(folded, sparse);
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                added.histogram().value_at_quantile(q),
                whole.value_at_quantile(q),
                "quantile {q}"
            );
        }
    }

    #[test]
    fn a_sparse_histogram_takes_others_as_the_run_adds_them() {
        // A coarser histogram (as seconds were once kept) lands where `add` puts it.
        let mut coarse = Histogram::<u64>::new(2).unwrap();
        for v in latencies(1_000, 2) {
            coarse.record(v.min(HISTOGRAM_MAX_US)).unwrap();
        }
        let mut added = histogram();
        added.add(&coarse).unwrap();
        assert_eq!(SparseHistogram::of(&coarse).unwrap().histogram(), added);
        // Values the run's histogram cannot hold are refused, and so are counts a bucket
        // cannot; sums saturate.
        let mut huge = Histogram::<u64>::new(3).unwrap();
        huge.record(1 << 50).unwrap();
        assert!(SparseHistogram::of(&huge).is_err());
        let mut many = histogram();
        // Its values all fit in 32 bits.
        many.record(u64::from(u32::MAX)).unwrap();
        assert!(many.record(1 << 32).is_err());
        assert_eq!(SparseHistogram::of(&many).unwrap().histogram(), many);
        many.reset();
        many.record_n(100, u64::from(u32::MAX) + 1).unwrap();
        assert!(SparseHistogram::of(&many).is_err());
        many.reset();
        many.record_n(100, u64::from(u32::MAX)).unwrap();
        let mut most = SparseHistogram::of(&many).unwrap();
        most.add(&most.clone());
        assert_eq!(most.len(), u64::from(u32::MAX));
        // And it reads back from its portable form.
        let sparse = SparseHistogram::of(&coarse).unwrap();
        let back = decode(&encode(&sparse.histogram())).unwrap();
        assert_eq!(SparseHistogram::of(&back).unwrap(), sparse);
    }
}
