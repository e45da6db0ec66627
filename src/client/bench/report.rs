//! The [`Report`] of a run: merged from what the threads measured, printed for people
//! (`Display`, with a text latency chart) and serialised for JSON.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::error::ErrorKind;
use super::histogram::{Percentiles, Tally};
use super::plan::{Options, Plan};
use super::worker::Outcome;
/// What a run measured. `Display` is the human report; `Serialize` gives the JSON one.
///
/// Counts are of measured messages only (after the warm-up). `bytes` are bytes echoed back
/// and verified (one direction); MB means 10^6 bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The server's address.
    pub target: String,
    /// Connections the run opened.
    pub connections: usize,
    /// Connections whose connect succeeded.
    pub connected: usize,
    /// Threads that drove them.
    pub threads: usize,
    /// Bytes per message, line ending included.
    pub size: usize,
    /// The payload's line ending: `none`, `lf` or `crlf`.
    pub eol: &'static str,
    /// Messages in flight per connection at most.
    pub pipeline: usize,
    /// The open-loop rate asked for (messages per second, all connections); `null`: closed
    /// loop.
    pub rate: Option<f64>,
    /// The warm-up before measuring, in seconds.
    pub warmup_s: f64,
    /// Measured messages sent (in part or whole).
    pub sent: u64,
    /// Measured messages echoed back and verified.
    pub messages: u64,
    /// Bytes of those messages, echoed back and verified.
    pub bytes: u64,
    /// Errors in all: the sum of `errors_by_kind`. Each ended one connection.
    pub errors: u64,
    /// Errors by kind; only kinds that happened appear.
    pub errors_by_kind: BTreeMap<ErrorKind, u64>,
    /// The measured time, in seconds: from the end of the warm-up until the last reply (or
    /// the stop).
    pub duration_s: f64,
    /// `messages / duration_s`.
    pub msgs_per_sec: f64,
    /// Echoed megabytes (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// Round-trip latency; in open loop, measured from each message's intended send time.
    pub latency_us: Percentiles,
    /// Time from starting a connect until the socket was connected.
    pub connect_us: Percentiles,
    /// The stop flag ended the run early.
    pub interrupted: bool,
    #[serde(skip)]
    latency: Histogram<u64>,
}

impl Report {
    /// The merged latency histogram (microseconds), for finer analysis than the summary.
    pub fn latency_histogram(&self) -> &Histogram<u64> {
        &self.latency
    }
}

/// Merges what the threads measured into the report.
pub(super) fn report(
    options: &Options,
    plan: &Plan<'_>,
    threads: usize,
    outcomes: Vec<Outcome>,
) -> Report {
    let mut total = Tally::new();
    let mut finished = plan.measure_start;
    let mut interrupted = false;
    // A plain fold, not rayon: there are at most a few dozen histograms (one per thread) and
    // adding one to another walks some tens of thousands of counters, microseconds of work
    // that a parallel reduce would only add scheduling cost to.
    for outcome in outcomes {
        total.absorb(outcome.tally);
        finished = finished.max(outcome.finished_at);
        interrupted |= outcome.interrupted;
    }
    let duration_s = finished.duration_since(plan.measure_start).as_secs_f64();
    let per_sec = |n: u64| {
        if duration_s > 0.0 {
            n as f64 / duration_s
        } else {
            0.0
        }
    };
    Report {
        target: options.addr.to_string(),
        connections: plan.connections,
        connected: total.connect.len() as usize,
        threads,
        size: options.size,
        eol: options.line_ending.name(),
        pipeline: options.pipeline,
        rate: options.rate,
        warmup_s: options.warmup.as_secs_f64(),
        sent: total.sent,
        messages: total.messages,
        bytes: total.bytes,
        errors: total.errors.values().sum(),
        errors_by_kind: total.errors,
        duration_s,
        msgs_per_sec: per_sec(total.messages),
        mb_per_sec: per_sec(total.bytes) / 1e6,
        latency_us: Percentiles::of(&total.latency),
        connect_us: Percentiles::of(&total.connect),
        interrupted,
        latency: total.latency,
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Target      {} ({} connection(s), {} connected, {} thread(s))",
            self.target, self.connections, self.connected, self.threads
        )?;
        let load = match self.rate {
            Some(rate) => {
                format!("open loop at {rate} msg/s (latency from each intended send time)")
            }
            None => "closed loop".to_owned(),
        };
        writeln!(
            f,
            "Load        {}-byte messages ending {}, pipeline {}, {load}",
            self.size, self.eol, self.pipeline
        )?;
        write!(f, "Duration    {:.2} s", self.duration_s)?;
        if self.warmup_s > 0.0 {
            write!(f, " after {:.2} s of warm-up", self.warmup_s)?;
        }
        if self.interrupted {
            f.write_str(" (interrupted)")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "Messages    {} echoed and verified of {} sent ({:.2} MB)",
            self.messages,
            self.sent,
            self.bytes as f64 / 1e6
        )?;
        writeln!(
            f,
            "Throughput  {:.1} msg/s, {:.2} MB/s",
            self.msgs_per_sec, self.mb_per_sec
        )?;
        writeln!(f)?;
        let l = &self.latency_us;
        writeln!(
            f,
            "Latency     {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "min", "p50", "p90", "p99", "p99.9", "max", "mean"
        )?;
        writeln!(
            f,
            "            {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            human_us(l.min as f64),
            human_us(l.p50 as f64),
            human_us(l.p90 as f64),
            human_us(l.p99 as f64),
            human_us(l.p999 as f64),
            human_us(l.max as f64),
            human_us(l.mean),
        )?;
        if !self.latency.is_empty() {
            writeln!(f)?;
            writeln!(f, "Latency distribution")?;
            chart(f, &self.latency)?;
        }
        writeln!(f)?;
        let c = &self.connect_us;
        writeln!(
            f,
            "Connect     p50 {}  p90 {}  p99 {}  max {}",
            human_us(c.p50 as f64),
            human_us(c.p90 as f64),
            human_us(c.p99 as f64),
            human_us(c.max as f64)
        )?;
        if self.errors == 0 {
            writeln!(f, "Errors      none")
        } else {
            let kinds: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            writeln!(f, "Errors      {} ({})", self.errors, kinds.join(", "))
        }
    }
}

/// A duration given in microseconds, in the unit that reads best.
pub(super) fn human_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0}us")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// A text bar chart of `histogram`: one row per bucket on a 1-2-5 scale (or per decade when
/// the spread is wide), with the share of messages in it.
pub(super) fn chart(f: &mut fmt::Formatter<'_>, histogram: &Histogram<u64>) -> fmt::Result {
    const WIDTH: f64 = 40.0;
    let (min, max) = (histogram.min().max(1), histogram.max().max(1));
    let mut bounds = scale(min, max, &[1, 2, 5]);
    if bounds.len() > 13 {
        bounds = scale(min, max, &[1]);
    }
    let rows = bounds.len() - 1;
    let mut counts = vec![0u64; rows];
    for v in histogram.iter_recorded() {
        let value = v.value_iterated_to().max(1);
        let row = bounds[1..].partition_point(|&hi| hi <= value);
        counts[row.min(rows - 1)] += v.count_at_value();
    }
    let total = histogram.len().max(1) as f64;
    let most = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    for (w, n) in bounds.windows(2).zip(counts) {
        let bar = "#".repeat((n as f64 / most * WIDTH).round() as usize);
        writeln!(
            f,
            "  {:>8} - {:<8} |{bar:<40}| {:5.1}%",
            human_us(w[0] as f64),
            human_us(w[1] as f64),
            n as f64 / total * 100.0
        )?;
    }
    Ok(())
}

/// Bucket edges `steps x 10^k` from the last one at or below `min` to the first one above
/// `max` (at least two edges).
pub(super) fn scale(min: u64, max: u64, steps: &[u64]) -> Vec<u64> {
    let mut edges = Vec::new();
    for exp in 0..19 {
        for &step in steps {
            let Some(edge) = 10u64.pow(exp).checked_mul(step) else {
                return edges;
            };
            if edge <= min {
                edges.clear();
            }
            edges.push(edge);
            if edge > max {
                return edges;
            }
        }
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::bench::histogram::histogram;

    #[test]
    fn chart_covers_every_recorded_value() {
        let mut h = histogram();
        for v in [3, 40, 41, 900] {
            h.record(v).unwrap();
        }
        struct Chart<'a>(&'a Histogram<u64>);
        impl fmt::Display for Chart<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                chart(f, self.0)
            }
        }
        let text = Chart(&h).to_string();
        let share: f64 = text
            .lines()
            .map(|l| l.rsplit('|').next().unwrap().trim().trim_end_matches('%'))
            .map(|p| p.parse::<f64>().unwrap())
            .sum();
        assert!((share - 100.0).abs() < 0.5, "{text}");
        assert!(text.starts_with("       2us - 5us"), "{text}");
        assert_eq!(text.lines().count(), 8, "{text}");
        assert_eq!(scale(3, 70_000, &[1]), [1, 10, 100, 1_000, 10_000, 100_000]);
        assert_eq!(scale(10, 10, &[1, 2, 5]), [10, 20]);
    }
}
