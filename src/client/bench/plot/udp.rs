//! The picture of UDP runs: the round trip by percentile, its p50 and p99 second by second,
//! and the datagrams lost of those sent in each second.

use super::super::error::clean;
use super::super::histogram::{decode, histogram};
use super::super::report::Second;
use super::super::udp::UdpReport;
use super::{Run, Unit, draw, micros, thousands};

impl Run for UdpReport {
    fn title(&self, name: &str) -> String {
        let load = match self.rate {
            Some(rate) => format!("rate {}/s", thousands(rate)),
            None => format!("pipeline {}", self.pipeline),
        };
        let line = format!(
            "{name}: udp {}, {} socket{}, {load}: {} sent, {} lost ({:.2}%), p50 {}, p99 {}, \
             p99.9 {}",
            self.target,
            thousands(self.sockets as f64),
            if self.sockets == 1 { "" } else { "s" },
            thousands(self.sent as f64),
            thousands(self.lost as f64),
            self.loss_ratio * 100.0,
            micros(self.rtt_us.p50 as f64),
            micros(self.rtt_us.p99 as f64),
            micros(self.rtt_us.p999 as f64),
        );
        clean(&line)
    }
    fn histogram(&self) -> hdrhistogram::Histogram<u64> {
        decode(&self.rtt_histogram).unwrap_or_else(|_| histogram())
    }
    fn timeline(&self) -> &[Second] {
        &self.timeline
    }
    fn duration_s(&self) -> f64 {
        self.duration_s
    }
}

/// Draws UDP runs (each named, for its title line) as one SVG document: the round trip by
/// percentile, its p50 (thin) and p99 (thick) second by second, and the datagrams lost of
/// those sent in each second.
///
/// # Errors
///
/// No runs, or a drawing error, said in words.
pub fn plot_udp(runs: &[(String, &UdpReport)]) -> Result<String, String> {
    let runs: Vec<(String, &dyn Run)> = runs
        .iter()
        .map(|(n, r)| (n.clone(), *r as &dyn Run))
        .collect();
    let p99 = |r: &dyn Run, i: usize| {
        let s = &r.timeline()[i];
        (s.messages > 0).then_some(s.p99_us as f64)
    };
    let p50 = |r: &dyn Run, i: usize| {
        let s = &r.timeline()[i];
        (s.messages > 0).then_some(s.p50_us as f64)
    };
    let lost = |r: &dyn Run, i: usize| Some(r.timeline()[i].errors as f64);
    draw(
        &runs,
        "Round trip by percentile",
        [
            (
                "Round trip per second: p99 (thick), p50 (thin)",
                Unit::Micros,
                &[&p99, &p50],
            ),
            (
                "Datagrams lost, by the second they were sent",
                Unit::Count,
                &[&lost],
            ),
        ],
    )
}
