//! `--tls-max-handshake-rate`: a server-wide cap on new TLS connections a second, applied by
//! the acceptors before any byte is read, so that a connection over the cap costs no crypto.
//!
//! A token bucket holding [`burst`] tokens, refilled continuously at the rate, kept as one
//! atomic "theoretical arrival time" (the generic cell rate algorithm, which admits exactly
//! what such a bucket admits): a connection is let in when the bucket's debt, the time by
//! which it runs ahead of now, is within `(burst - 1)` intervals, and each one let in adds an
//! interval. Every TLS acceptor shares it, so two TLS listeners (`--bind 127.0.0.1 --bind
//! ::1`) share one rate; the workers never touch it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::time::Throttle;

/// The bucket's size for a rate of `per_sec`: a tenth of a second's worth, at least one.
pub fn burst(per_sec: u32) -> u32 {
    (per_sec / 10).max(1)
}

/// The shared bucket of `--tls-max-handshake-rate`, and the throttle of its log line.
#[derive(Debug)]
pub(crate) struct HandshakeRate {
    per_sec: u32,
    /// Nanoseconds between two connections at the rate.
    interval: u64,
    /// How far ahead of now the theoretical arrival time may run: `(burst - 1)` intervals.
    tolerance: u64,
    /// The moment the times below count from.
    origin: Instant,
    /// The theoretical arrival time of the next connection, in nanoseconds from `origin`.
    next: AtomicU64,
    /// The `reason=tls-rate` log line, once a second at most across every acceptor.
    log: Mutex<Throttle>,
}

impl HandshakeRate {
    /// A bucket for `per_sec` connections a second (at least 1), full.
    pub(crate) fn new(per_sec: u32) -> HandshakeRate {
        let per_sec = per_sec.max(1);
        let interval = 1_000_000_000 / u64::from(per_sec);
        HandshakeRate {
            per_sec,
            interval,
            tolerance: interval * u64::from(burst(per_sec) - 1),
            origin: Instant::now(),
            next: AtomicU64::new(0),
            log: Mutex::new(Throttle::new(Duration::from_secs(1))),
        }
    }

    /// The rate, connections a second.
    pub(crate) fn per_sec(&self) -> u32 {
        self.per_sec
    }

    /// Whether one more connection may have its handshake now; if so, it is counted.
    pub(crate) fn admit(&self) -> bool {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> bool {
        let now = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            let from = next.max(now);
            if from - now > self.tolerance {
                return false;
            }
            match self.next.compare_exchange_weak(
                next,
                from.saturating_add(self.interval),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => next = seen,
            }
        }
    }

    /// `Some(lines held back since the last one)` when a shed may be logged now.
    pub(crate) fn log_ready(&self) -> Option<u64> {
        self.log.lock().ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(rate: &HandshakeRate, at: Instant, tries: usize) -> usize {
        (0..tries).filter(|_| rate.admit_at(at)).count()
    }

    #[test]
    fn the_burst_is_a_tenth_of_the_rate_and_at_least_one() {
        assert_eq!(burst(1), 1);
        assert_eq!(burst(9), 1);
        assert_eq!(burst(20), 2);
        assert_eq!(burst(1000), 100);
        assert_eq!(burst(u32::MAX), u32::MAX / 10);
    }

    #[test]
    fn a_full_bucket_lets_in_its_burst_at_once_then_nothing() {
        let rate = HandshakeRate::new(100);
        let t0 = rate.origin;
        assert_eq!(admitted(&rate, t0, 50), 10);
        assert!(!rate.admit_at(t0 + Duration::from_millis(5)));
    }

    #[test]
    fn it_refills_continuously_at_the_rate() {
        let rate = HandshakeRate::new(100);
        let t0 = rate.origin;
        assert_eq!(admitted(&rate, t0, 50), 10);
        // One interval (10 ms) later, one more; half an interval after that, none.
        assert_eq!(admitted(&rate, t0 + Duration::from_millis(10), 5), 1);
        assert_eq!(admitted(&rate, t0 + Duration::from_millis(15), 5), 0);
        // Over a second of steady tries, about the rate gets in, never more than rate + burst.
        let mut let_in = 0;
        for ms in 20..1020 {
            let_in += admitted(&rate, t0 + Duration::from_millis(ms), 3);
        }
        assert!(
            (99..=110).contains(&let_in),
            "{let_in} let in over a second"
        );
    }

    #[test]
    fn a_quiet_spell_refills_no_more_than_the_burst() {
        let rate = HandshakeRate::new(20);
        let t0 = rate.origin;
        assert_eq!(admitted(&rate, t0, 10), 2);
        assert_eq!(admitted(&rate, t0 + Duration::from_secs(60), 100), 2);
    }

    #[test]
    fn extreme_rates_neither_overflow_nor_stop() {
        let one = HandshakeRate::new(0);
        assert_eq!(one.per_sec(), 1);
        assert_eq!(admitted(&one, one.origin, 10), 1);
        let huge = HandshakeRate::new(u32::MAX);
        assert_eq!(admitted(&huge, huge.origin, 1000), 1000);
        // A clock far past the origin saturates instead of wrapping.
        let late = huge.origin + Duration::from_secs(1 << 40);
        assert!(huge.admit_at(late));
    }
}
