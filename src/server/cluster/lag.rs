//! Cross-node delivery lag: from the moment the origin's link published an envelope (its wall
//! clock, carried in the envelope) to the moment this node's link handed the line to its
//! local sessions' outboxes (this node's wall clock).
//!
//! Two clocks are compared, so the lag is only as good as their agreement (NTP keeps hosts
//! within a millisecond or so). A lag below zero or above [`MAX_LAG`] can only be clock skew:
//! it is clamped into range, recorded and counted as clamped, never dropped. Only the link
//! thread records; readers (`/cluster`, the metrics) take the same short lock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// Upper bounds, in seconds, of `tcpool_cluster_delivery_lag_seconds`' buckets: a crossing on
/// one host takes tens of microseconds, a loaded broker or a distant node milliseconds to
/// seconds.
pub const LAG_BOUNDS: [f64; 16] = [
    5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The largest lag recorded as it is; a larger one (or one below zero) is clock skew,
/// clamped and counted.
pub const MAX_LAG: Duration = Duration::from_secs(60);

/// Microseconds since the Unix epoch, by this host's wall clock (0 before 1970).
pub(super) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// What the lag histogram holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct LagView {
    /// Envelopes whose lag was recorded.
    pub count: u64,
    /// Their lags added up, in seconds.
    pub sum_seconds: f64,
    /// The median lag, in seconds (0 before any).
    pub p50_seconds: f64,
    /// The 99th percentile, in seconds (0 before any).
    pub p99_seconds: f64,
    /// Lags below zero or above [`MAX_LAG`], clamped into range (clock skew between nodes).
    pub clamped: u64,
    /// Each bucket's upper bound (those of [`LAG_BOUNDS`], then `+Inf`) and its own count
    /// (not cumulative: lags above the previous bound, up to this one).
    pub buckets: Vec<(f64, u64)>,
}

struct Recorded {
    /// Per bucket of [`LAG_BOUNDS`], the last one for `+Inf` (not cumulative).
    counts: [u64; LAG_BOUNDS.len() + 1],
    sum_us: u64,
    clamped: u64,
    /// For the percentiles: microseconds, 1 µs to [`MAX_LAG`], three significant digits.
    percentiles: Option<hdrhistogram::Histogram<u64>>,
}

/// The lag histogram of one node.
pub(super) struct Lag {
    recorded: Mutex<Recorded>,
}

impl std::fmt::Debug for Lag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lag")
            .field("count", &self.view().count)
            .finish()
    }
}

impl Default for Lag {
    fn default() -> Self {
        let max_us = u64::try_from(MAX_LAG.as_micros()).unwrap_or(u64::MAX);
        Lag {
            recorded: Mutex::new(Recorded {
                counts: [0; LAG_BOUNDS.len() + 1],
                sum_us: 0,
                clamped: 0,
                percentiles: hdrhistogram::Histogram::new_with_bounds(1, max_us, 3).ok(),
            }),
        }
    }
}

impl Lag {
    /// Records the lag of an envelope published at `published_us` and handed on at `now_us`
    /// (microseconds since the Unix epoch, each by its own host's clock).
    pub(super) fn record(&self, published_us: u64, now_us: u64) {
        let max_us = u64::try_from(MAX_LAG.as_micros()).unwrap_or(u64::MAX);
        let (lag_us, clamped) = match now_us.checked_sub(published_us) {
            None => (0, true),
            Some(lag) if lag > max_us => (max_us, true),
            Some(lag) => (lag, false),
        };
        let seconds = lag_us as f64 / 1e6;
        let bucket = LAG_BOUNDS.partition_point(|&b| b < seconds);
        let mut r = self.recorded.lock();
        r.counts[bucket] += 1;
        r.sum_us = r.sum_us.saturating_add(lag_us);
        r.clamped += u64::from(clamped);
        if let Some(h) = r.percentiles.as_mut() {
            h.saturating_record(lag_us.max(1));
        }
    }

    /// The histogram now.
    pub(super) fn view(&self) -> LagView {
        let r = self.recorded.lock();
        let quantile = |q: f64| {
            r.percentiles
                .as_ref()
                .filter(|h| !h.is_empty())
                .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1e6)
        };
        let buckets = LAG_BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(r.counts)
            .collect();
        LagView {
            count: r.counts.iter().sum(),
            sum_seconds: r.sum_us as f64 / 1e6,
            p50_seconds: quantile(0.5),
            p99_seconds: quantile(0.99),
            clamped: r.clamped,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lags_fall_in_their_buckets_and_skew_is_clamped_and_counted() {
        let lag = Lag::default();
        let t = 1_700_000_000_000_000;
        lag.record(t, t + 50);
        lag.record(t, t + 51);
        lag.record(t, t + 3_000);
        // The receiver's clock is behind, then far ahead: both kept, clamped.
        lag.record(t + 10, t);
        lag.record(t, t + 3_600_000_000);
        let v = lag.view();
        assert_eq!(v.count, 5);
        assert_eq!(v.clamped, 2);
        let counts: Vec<u64> = v.buckets.iter().map(|b| b.1).collect();
        // 0 (clamped) and 50 µs; 51 µs; 3 ms; 60 s (clamped) past 5 s.
        assert_eq!(
            counts,
            [2, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            "{v:?}"
        );
        assert_eq!(v.buckets[LAG_BOUNDS.len()].0, f64::INFINITY);
        assert!(
            (v.sum_seconds - (101e-6 + 3e-3 + 60.0)).abs() < 1e-9,
            "{v:?}"
        );
        assert!((v.p50_seconds - 51e-6).abs() < 1e-6, "{v:?}");
        assert!(v.p99_seconds >= 59.9, "{v:?}");
        let empty = Lag::default().view();
        assert_eq!((empty.count, empty.p50_seconds), (0, 0.0));
    }
}
