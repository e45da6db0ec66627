//! Deadlines that cannot overflow: a timeout as large as `Duration::MAX` in a library user's
//! config means "never", not a panic in a worker.

use std::time::{Duration, Instant};

/// `from + d`, or a moment so far off that it never comes when `d` is too large to add.
pub(crate) fn later(from: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    from.checked_add(d)
        .or_else(|| from.checked_add(FAR))
        .unwrap_or(from)
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
