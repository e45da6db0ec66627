use std::sync::Arc;

use super::*;
use crate::server::session::registry::Registry;

#[test]
fn buckets_are_inclusive_upper_bounds() {
    let h = Histogram::new(&REPLY_BOUNDS);
    h.observe(Duration::from_micros(5));
    h.observe(Duration::from_nanos(5_001));
    h.observe(Duration::from_secs(2));
    let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert_eq!(counts[0], 1);
    assert_eq!(counts[1], 1);
    assert_eq!(counts[REPLY_BOUNDS.len()], 1);
    assert_eq!(h.sum_ns.load(Ordering::Relaxed), 2_000_010_001);
}

#[test]
fn a_scrape_sums_the_workers() {
    let metrics = Arc::new(Metrics::new(2));
    metrics.worker(0).opened();
    metrics.worker(1).opened();
    metrics.worker(1).opened();
    metrics
        .worker(1)
        .closed(CloseReason::Kicked, Duration::from_millis(3));
    metrics
        .worker(0)
        .closed(CloseReason::Kicked, Duration::from_secs(2));
    metrics.rejected(Rejection::MaxConns);
    let text = Exposition::new(metrics, Registry::new(1024), 4).encode();
    assert!(
        text.contains("tcpool_sessions_closed_total{reason=\"kick\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("tcpool_worker_sessions{worker=\"0\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("tcpool_worker_sessions{worker=\"1\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("tcpool_sessions_rejected_total{reason=\"max-conns\"} 1\n"));
    assert!(
        text.contains("tcpool_session_duration_seconds_count 2\n"),
        "{text}"
    );
    assert!(text.contains("tcpool_session_duration_seconds_bucket{le=\"0.01\"} 1\n"));
    assert!(text.contains("tcpool_backlog_capacity 4\n"));
}
