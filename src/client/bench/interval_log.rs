//! The standard HdrHistogram interval log of a run (`--hdr-log`): one histogram per second of
//! the measured window, readable by HdrHistogram's own tools (`HistogramLogProcessor`, the
//! Rust crate's `IntervalLogIterator`, Python's `hdrh`). Values are microseconds, with the
//! bounds and precision of the report's whole histogram: the intervals added together are
//! that histogram less the late replies (answered after the window, so in no interval).

use std::io;
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;

use super::report::{Report, Second};

/// Writes `report`'s timeline to `out` as an interval log: StartTime and BaseTime are the
/// window's start, and each second's interval is stamped with its offset from there.
///
/// # Errors
///
/// Writing fails, or a histogram cannot be serialised.
pub fn write_interval_log(report: &Report, out: &mut impl io::Write) -> io::Result<()> {
    write_seconds(
        &report.target,
        report.window.start,
        report.duration_s,
        &report.timeline,
        out,
    )
}

/// Writes `timeline`, the seconds of a run against `target` that started at `start` (UNIX
/// seconds) and measured `duration_s`, to `out` as an interval log.
///
/// # Errors
///
/// Writing fails, or a histogram cannot be serialised.
pub fn write_seconds(
    target: &str,
    start: f64,
    duration_s: f64,
    timeline: &[Second],
    out: &mut impl io::Write,
) -> io::Result<()> {
    let start = UNIX_EPOCH + Duration::try_from_secs_f64(start).unwrap_or_default();
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "tcpool bench against {target}: latency in microseconds, one interval per second"
        ))
        .with_start_time(start)
        .with_base_time(start)
        .begin_log_with(out, &mut serializer)?;
    for (i, second) in timeline.iter().enumerate() {
        let length = (duration_s - i as f64).clamp(0.0, 1.0);
        log.write_histogram(
            &second.histogram.histogram(),
            Duration::from_secs(i as u64),
            Duration::from_secs_f64(length),
            None,
        )
        .map_err(|e| io::Error::other(format!("cannot write second {i}: {e}")))?;
    }
    Ok(())
}
