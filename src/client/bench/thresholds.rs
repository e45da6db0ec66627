//! `--fail-if`: thresholds a run must meet, such as `p99<5ms,errors<0.1%,rate>=0.95`, judged
//! on its report (a fleet's: on the merged report, never per generator).

use std::fmt;
use std::str::FromStr;

use super::histogram::Percentiles;
use super::report::Report;
use super::udp::UdpReport;

/// What thresholds judge, from a TCP or a UDP report: for UDP a message is a datagram
/// answered, its latency the round trip, and its errors the datagrams lost or answered
/// wrong, the foreign replies and the failed sends.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures<'a> {
    latency: &'a Percentiles,
    messages: u64,
    errors: u64,
    msgs_per_sec: f64,
    rate: Option<f64>,
}

impl<'a> From<&'a Report> for Figures<'a> {
    fn from(r: &'a Report) -> Self {
        Figures {
            latency: &r.latency_us,
            messages: r.messages,
            errors: r.errors,
            msgs_per_sec: r.msgs_per_sec,
            rate: r.rate,
        }
    }
}

impl<'a> From<&'a UdpReport> for Figures<'a> {
    fn from(r: &'a UdpReport) -> Self {
        Figures {
            latency: &r.rtt_us,
            messages: r.answered,
            errors: r.lost + r.corrupt + r.foreign + r.send_errors,
            msgs_per_sec: if r.duration_s > 0.0 {
                r.answered as f64 / r.duration_s
            } else {
                0.0
            },
            rate: r.rate,
        }
    }
}

/// One threshold: a figure of the report, a comparison and a bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    text: String,
    figure: Figure,
    op: Op,
    bound: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Figure {
    /// A latency percentile (or `max`, `mean`), microseconds.
    Latency(&'static str),
    /// Errors: a count, or with `%` a share of the messages and errors.
    Errors { share: bool },
    /// The share of `--rate` reached.
    Rate,
    /// Messages per second.
    Throughput,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

/// What a threshold made of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The threshold as written.
    pub threshold: String,
    /// The report's figure, in the threshold's unit.
    pub value: f64,
    /// The bound, in the same unit.
    pub bound: f64,
    /// Whether the figure met it.
    pub passed: bool,
    /// The unit: `ms`, `%`, `` (a count or a share).
    pub unit: &'static str,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by = (self.value - self.bound).abs();
        let (u, sep) = (self.unit, if self.unit == "ms" { " " } else { "" });
        if self.passed {
            write!(
                f,
                "{}: passed ({}{sep}{u})",
                self.threshold,
                show(self.value)
            )
        } else {
            write!(
                f,
                "{}: FAILED: it was {}{sep}{u}, {}{sep}{u} past the bound",
                self.threshold,
                show(self.value),
                show(by)
            )
        }
    }
}

fn show(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

impl FromStr for Threshold {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let at = text.find(['<', '>']).ok_or_else(|| {
            format!("{text:?}: write FIGURE<BOUND or FIGURE>=BOUND, such as p99<5ms")
        })?;
        let (name, rest) = text.split_at(at);
        let (op, bound) = match rest.as_bytes() {
            [b'<', b'=', ..] => (Op::Le, &rest[2..]),
            [b'>', b'=', ..] => (Op::Ge, &rest[2..]),
            [b'<', ..] => (Op::Lt, &rest[1..]),
            _ => (Op::Gt, &rest[1..]),
        };
        let (name, bound) = (name.trim(), bound.trim());
        let number = |t: &str| -> Result<f64, String> {
            t.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("{text:?}: {t:?} is not a number"))
        };
        let (figure, bound) = match name {
            "p50" | "p90" | "p99" | "p999" | "max" | "mean" => {
                let figure = Figure::Latency(match name {
                    "p50" => "p50",
                    "p90" => "p90",
                    "p99" => "p99",
                    "p999" => "p999",
                    "max" => "max",
                    _ => "mean",
                });
                let d =
                    crate::units::parse_duration(bound).map_err(|e| format!("{text:?}: {e}"))?;
                (figure, d.as_secs_f64() * 1e3)
            }
            "errors" => match bound.strip_suffix('%') {
                Some(pct) => (Figure::Errors { share: true }, number(pct)?),
                None => (Figure::Errors { share: false }, number(bound)?),
            },
            "rate" => (Figure::Rate, number(bound)?),
            "throughput" => (Figure::Throughput, number(bound)?),
            _ => {
                return Err(format!(
                    "{text:?}: {name:?} is not a figure: p50, p90, p99, p999, max, mean, errors, rate or throughput"
                ));
            }
        };
        Ok(Threshold {
            text: text.to_owned(),
            figure,
            op,
            bound,
        })
    }
}

/// `p99<5ms,errors<0.1%`: thresholds separated by commas.
///
/// # Errors
///
/// The first threshold that does not parse, or none at all.
pub fn parse(s: &str) -> Result<Vec<Threshold>, String> {
    let list = s
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .map(str::parse)
        .collect::<Result<Vec<Threshold>, String>>()?;
    if list.is_empty() {
        return Err("no threshold given".into());
    }
    Ok(list)
}

impl Threshold {
    /// Judges `report`. A `rate` threshold on a run without `--rate` fails, saying so by a
    /// value of 0.
    pub fn judge<'a>(&self, report: impl Into<Figures<'a>>) -> Verdict {
        let report: Figures<'a> = report.into();
        let (value, unit) = match self.figure {
            Figure::Latency(which) => {
                let p = report.latency;
                let us = match which {
                    "p50" => p.p50 as f64,
                    "p90" => p.p90 as f64,
                    "p99" => p.p99 as f64,
                    "p999" => p.p999 as f64,
                    "max" => p.max as f64,
                    _ => p.mean,
                };
                (us / 1e3, "ms")
            }
            Figure::Errors { share: false } => (report.errors as f64, ""),
            Figure::Errors { share: true } => {
                let all = (report.messages + report.errors).max(1) as f64;
                (report.errors as f64 * 100.0 / all, "%")
            }
            Figure::Rate => match report.rate {
                Some(rate) if rate > 0.0 => (report.msgs_per_sec / rate, ""),
                _ => (0.0, ""),
            },
            Figure::Throughput => (report.msgs_per_sec, ""),
        };
        let passed = match self.op {
            Op::Lt => value < self.bound,
            Op::Le => value <= self.bound,
            Op::Gt => value > self.bound,
            Op::Ge => value >= self.bound,
        };
        Verdict {
            threshold: self.text.clone(),
            value,
            bound: self.bound,
            passed,
            unit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_or_say_why_not() {
        let list =
            parse("p99<5ms, p999<=20ms,errors<0.1%,rate>=0.95,errors<3,throughput>100").unwrap();
        assert_eq!(list.len(), 6);
        assert_eq!(list[0].bound, 5.0);
        assert_eq!(list[1].op, Op::Le);
        assert_eq!(list[2].figure, Figure::Errors { share: true });
        assert_eq!(list[4].figure, Figure::Errors { share: false });
        for bad in [
            "",
            "p99",
            "p98<5ms",
            "p99<fast",
            "errors<-1",
            "rate>=x",
            "p99=5ms",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_failed_threshold_says_by_how_much() {
        let v = Verdict {
            threshold: "p99<5ms".into(),
            value: 7.25,
            bound: 5.0,
            passed: false,
            unit: "ms",
        };
        assert_eq!(
            v.to_string(),
            "p99<5ms: FAILED: it was 7.250 ms, 2.250 ms past the bound"
        );
    }
}
