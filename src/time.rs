//! Deadlines that cannot overflow (a timeout as large as `Duration::MAX` in a library user's
//! config means "never", not a panic in a worker), and a throttle for repeated log lines.

use std::time::{Duration, Instant};

/// `from + d`, or a moment so far off that it never comes when `d` is too large to add.
pub(crate) fn later(from: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    from.checked_add(d)
        .or_else(|| from.checked_add(FAR))
        .unwrap_or(from)
}

/// Lets an event through at most once per period and counts the ones it held back.
#[derive(Debug)]
pub(crate) struct Throttle {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub(crate) fn new(period: Duration) -> Self {
        Throttle {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(events held back since the last one let through)` if this one may go.
    pub(crate) fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < self.period) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_saturate() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(3600 * 24 * 365));
        assert!(later(now, Duration::from_secs_f64(1e19)) > now);
    }
}
