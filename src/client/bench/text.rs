//! A [`Report`] as people read it: the summary lines, a text chart of the latency
//! distribution, the first error of each kind, and one line when nothing worked.

use std::fmt;

use hdrhistogram::Histogram;

use std::time::Duration;

use super::error::{ErrorKind, clean, counts};
use super::report::{MIXED, Report, TlsReport, Window};

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Target      {} ({} connection(s), {} connected, {} thread(s))",
            clean(&self.target),
            self.connections,
            self.connected,
            self.threads
        )?;
        if self.messages == 0 && self.late_replies == 0 && self.errors > 0 {
            // Wrong bytes are still bytes: a reply came, and none was right.
            let what = if self.errors_by_kind.contains_key(&ErrorKind::Mismatch) {
                "replies came, none right"
            } else {
                "no reply came"
            };
            writeln!(
                f,
                "Result      {what}: every connection failed ({})",
                kinds(self)
            )?;
            return first_errors(f, self);
        }
        let load = match self.rate {
            Some(rate) => {
                format!("open loop at {rate} msg/s (latency from each intended send time)")
            }
            None => "closed loop".to_owned(),
        };
        let what = if self.request == "echo" {
            format!("{}-byte echo messages ending {}", self.size, self.eol)
        } else if self.request == MIXED {
            "requests that differ between the generators".to_owned()
        } else {
            format!("\"{}\", reply {}", clean(&self.request), clean(&self.reply))
        };
        let connects_only = self.reconnect_every == Some(0);
        if connects_only {
            writeln!(
                f,
                "Load        connects{} only, no message (--reconnect-every 0)",
                if self.tls.is_some() {
                    " and handshakes"
                } else {
                    ""
                }
            )?;
        } else {
            writeln!(f, "Load        {what}, pipeline {}, {load}", self.pipeline)?;
        }
        write!(f, "Duration    {:.2} s", self.duration_s)?;
        if self.warmup_s > 0.0 {
            write!(f, " after {:.2} s of warm-up", self.warmup_s)?;
        }
        if self.interrupted {
            f.write_str(" (interrupted)")?;
        }
        writeln!(f)?;
        if let Some(why) = &self.ended_early {
            writeln!(f, "            {}", clean(why))?;
        }
        if connects_only {
            writeln!(f)?;
            return connects(f, self);
        }
        let verb = if self.request == "echo" {
            "echoed and verified"
        } else {
            "answered"
        };
        writeln!(
            f,
            "Messages    {} {verb} of {} sent ({:.2} MB)",
            self.messages,
            self.sent,
            self.bytes as f64 / 1e6
        )?;
        if self.in_flight_at_end > 0 {
            writeln!(
                f,
                "            {} in flight when the window closed, awaited outside it ({} answered)",
                self.in_flight_at_end, self.late_replies
            )?;
        }
        writeln!(
            f,
            "Throughput  {:.1} msg/s, {:.2} MB/s",
            self.msgs_per_sec, self.mb_per_sec
        )?;
        if let (Some(rate), Some(false)) = (self.rate, self.rate_reached) {
            writeln!(
                f,
                "            rate not reached: asked {rate} msg/s, delivered {:.0} msg/s",
                self.msgs_per_sec
            )?;
        }
        for g in &self.generators {
            writeln!(
                f,
                "  {:<24} {:>10} msgs {:>12.1} msg/s  p50 {:>9}  p99 {:>9}  errors {}",
                clean(&g.source),
                g.messages,
                g.msgs_per_sec,
                human_us(g.latency_us.p50 as f64),
                human_us(g.latency_us.p99 as f64),
                g.errors
            )?;
        }
        writeln!(f)?;
        percentile_rows(f, "Latency", &self.latency_us)?;
        let latency = self.latency_histogram();
        if !latency.is_empty() {
            writeln!(f)?;
            writeln!(f, "Latency distribution")?;
            chart(f, latency)?;
        }
        writeln!(f)?;
        replies(f, self)?;
        connects(f, self)
    }
}

/// The connects, the handshakes and the errors: the report's last lines.
fn connects(f: &mut fmt::Formatter<'_>, report: &Report) -> fmt::Result {
    if report.reconnect_every == Some(0) {
        writeln!(
            f,
            "Reconnects  {} (a new connection after each connect)",
            report.reconnects
        )?;
    }
    let c = &report.connect_us;
    write!(
        f,
        "Connect     {} of {} in {:.2} s; p50 {}  p90 {}  p99 {}  max {}",
        report.connected,
        report.connections,
        report.connect_s,
        human_us(c.p50 as f64),
        human_us(c.p90 as f64),
        human_us(c.p99 as f64),
        human_us(c.max as f64)
    )?;
    if report.reconnects > 0 {
        write!(f, " (of {} connects)", report.connect.len())?;
    }
    writeln!(f)?;
    if let Some(tls) = &report.tls {
        handshakes(f, tls)?;
    }
    if report.errors == 0 {
        writeln!(f, "Errors      none")
    } else {
        writeln!(f, "Errors      {} ({})", report.errors, kinds(report))?;
        first_errors(f, report)
    }
}

/// The replies by class, each kind of a mix, and the reconnects, when there are any.
fn replies(f: &mut fmt::Formatter<'_>, report: &Report) -> fmt::Result {
    if let Some(r) = &report.replies {
        write!(
            f,
            "Replies     ok {}  error {}  miss {}",
            r.ok, r.error, r.miss
        )?;
        if let Some(hit) = r.hit_ratio {
            write!(f, "  (hit ratio {:.2} %)", hit * 100.0)?;
        }
        writeln!(f)?;
        if !r.errors_by_prefix.is_empty() {
            let by: Vec<String> = r
                .errors_by_prefix
                .iter()
                .map(|(p, n)| format!("{p} {n}"))
                .collect();
            writeln!(f, "            errors by kind: {}", by.join(", "))?;
        }
    }
    for k in &report.kinds {
        write!(
            f,
            "Request     \"{}\" x{}: {} msgs {:.1} msg/s  p50 {}  p99 {}  max {}",
            k.request,
            k.weight,
            k.messages,
            k.msgs_per_sec,
            human_us(k.latency_us.p50 as f64),
            human_us(k.latency_us.p99 as f64),
            human_us(k.latency_us.max as f64),
        )?;
        if report.replies.is_some() {
            write!(
                f,
                "  ok {} error {} miss {}",
                k.replies.ok, k.replies.error, k.replies.miss
            )?;
        }
        writeln!(f)?;
    }
    match report.reconnect_every {
        Some(n) => writeln!(
            f,
            "Reconnects  {} (a new connection every {n} repl{})",
            report.reconnects,
            if n == 1 { "y" } else { "ies" }
        )?,
        None if report.reconnects > 0 => writeln!(
            f,
            "Reconnects  {} (the server closed after a reply; each connection was opened again)",
            report.reconnects
        )?,
        None => {}
    }
    Ok(())
}

/// The TLS handshakes: how many, how fast, how long each kind took, and what they agreed on.
fn handshakes(f: &mut fmt::Formatter<'_>, tls: &TlsReport) -> fmt::Result {
    writeln!(
        f,
        "Handshakes  {} ({:.1} % resumed, --tls-resume {}), {} in the window: {:.1}/s",
        tls.full + tls.resumed,
        tls.resumed_share * 100.0,
        clean(&tls.resume),
        tls.in_window,
        tls.per_sec
    )?;
    for (kind, n, p) in [
        ("full", tls.full, &tls.full_us),
        ("resumed", tls.resumed, &tls.resumed_us),
    ] {
        if n == 0 {
            continue;
        }
        writeln!(
            f,
            "  {kind:<9} {n:>9}  p50 {}  p90 {}  p99 {}  max {}",
            human_us(p.p50 as f64),
            human_us(p.p90 as f64),
            human_us(p.p99 as f64),
            human_us(p.max as f64)
        )?;
    }
    for (what, n) in &tls.negotiated {
        writeln!(f, "  {} x{n}", clean(what))?;
    }
    Ok(())
}

/// `mismatch 3, timeout 1`.
fn kinds(report: &Report) -> String {
    counts(&report.errors_by_kind)
}

/// One line per error kind: the first of that kind.
fn first_errors(f: &mut fmt::Formatter<'_>, report: &Report) -> fmt::Result {
    for (kind, first) in &report.first_errors {
        writeln!(f, "  first {:<16} {first}", kind.name())?;
    }
    Ok(())
}

/// A window as `2026-12-01 20:45:00.123 UTC + 10.00 s`, readable without a calendar library:
/// UNIX seconds when the time is before 1970 or far ahead.
pub(super) fn human_window(w: &Window) -> String {
    format!("{} + {:.2} s", human_time(w.start), w.length())
}

/// UNIX seconds as a UTC date and time.
fn human_time(unix: f64) -> String {
    let Ok(d) = Duration::try_from_secs_f64(unix) else {
        return format!("{unix:.3}");
    };
    let secs = d.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        d.subsec_millis()
    )
}

/// A duration given in microseconds, in the unit that reads best.
/// The two rows of a latency summary: `label` and the column names, then the figures.
pub(super) fn percentile_rows(
    f: &mut fmt::Formatter<'_>,
    label: &str,
    l: &super::histogram::Percentiles,
) -> fmt::Result {
    writeln!(
        f,
        "{label:<11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
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
    )
}

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
