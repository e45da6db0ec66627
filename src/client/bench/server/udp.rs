//! `tcpool bench --udp --server-metrics URL`: where the lost datagrams went, as the server
//! counted it over the run. Of the datagrams bench lost, the server's kernel dropped some
//! before the echo read them (`tcpool_udp_kernel_drops_total`: a full receive buffer), its
//! datagram faults dropped some (`tcpool_udp_faulted_total`: `drop-request`, `drop-reply`,
//! `rate` and `overflow`), it read and did not answer some (`tcpool_udp_unanswered_total`:
//! `--allow`/`--deny`, `--udp-rate-per-source`, an echo its kernel would not take), and the
//! rest was lost elsewhere: on the way, or in the client's own receive buffer, or answered
//! after the reply timeout.
//!
//! The server counts every source it has, so compare on a server nobody else is using.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{MetricsUrl, STARTED, Samples};
use crate::client::bench::error::clean;

/// The faults' counts that are drops: a datagram these touched was never answered.
const DROPS: [&str; 4] = ["drop-request", "drop-reply", "rate", "overflow"];

/// What the server counted of a UDP run, and where bench's lost datagrams went.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UdpServerView {
    /// Where the metrics were read.
    pub url: String,
    /// Datagrams the server read.
    pub datagrams_in: u64,
    /// Echoes it sent.
    pub datagrams_out: u64,
    /// Datagrams its kernel dropped before they were read (a full receive buffer).
    pub kernel_drops: u64,
    /// Datagrams its faults dropped: requests, replies, over `udp-rate`, over the hold.
    pub faulted_drops: u64,
    /// What each datagram fault did, by kind (only kinds that happened).
    pub faulted: BTreeMap<String, u64>,
    /// Datagrams read and not answered, by reason (only reasons that happened).
    pub unanswered: BTreeMap<String, u64>,
    /// Bench's lost datagrams that none of the above accounts for.
    pub lost_elsewhere: u64,
    /// The server's process changed between the scrapes: its counts are not the run's.
    pub restarted: bool,
    /// Where the client's and the server's counts differ.
    pub warnings: Vec<String>,
}

impl UdpServerView {
    /// The difference between two scrapes, set against the `lost` datagrams of the run.
    pub fn between(url: &MetricsUrl, before: &Samples, after: &Samples, lost: u64) -> Self {
        let delta = |name: &str, labels: &[(&str, &str)]| {
            (after.sum(name, labels) - before.sum(name, labels)).max(0.0) as u64
        };
        let by = |name: &str, key: &str| -> BTreeMap<String, u64> {
            let was = before.by_label(name, key);
            after
                .by_label(name, key)
                .into_iter()
                .map(|(k, v)| {
                    let d = (v - was.get(&k).copied().unwrap_or(0.0)).max(0.0) as u64;
                    (k, d)
                })
                .filter(|&(_, d)| d > 0)
                .collect()
        };
        let faulted = by("tcpool_udp_faulted_total", "kind");
        let faulted_drops = DROPS.iter().filter_map(|k| faulted.get(*k)).sum();
        let unanswered = by("tcpool_udp_unanswered_total", "reason");
        let kernel_drops = delta("tcpool_udp_kernel_drops_total", &[]);
        let accounted = kernel_drops + faulted_drops + unanswered.values().sum::<u64>();
        let mut view = UdpServerView {
            url: url.to_string(),
            datagrams_in: delta("tcpool_udp_datagrams_total", &[("direction", "in")]),
            datagrams_out: delta("tcpool_udp_datagrams_total", &[("direction", "out")]),
            kernel_drops,
            faulted_drops,
            faulted,
            unanswered,
            lost_elsewhere: lost.saturating_sub(accounted),
            restarted: after.sum(STARTED, &[]) != before.sum(STARTED, &[]),
            warnings: Vec::new(),
        };
        if view.restarted {
            view.warnings.push(
                "the server's process changed between the scrapes (a restart or a hand-over); \
                 its counts are not the run's"
                    .into(),
            );
        } else if !after
            .series
            .iter()
            .any(|(name, _, _)| name == "tcpool_udp_datagrams_total")
        {
            view.warnings
                .push("the server has no UDP counts (is it serving --udp?)".into());
        } else if accounted > lost {
            view.warnings.push(format!(
                "the server dropped {accounted} datagram(s), more than the {lost} the client \
                 lost: someone else is using it"
            ));
        }
        view
    }
}

impl fmt::Display for UdpServerView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |m: &BTreeMap<String, u64>| {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
            if parts.is_empty() {
                String::new()
            } else {
                format!(" ({})", parts.join(", "))
            }
        };
        let drops: BTreeMap<String, u64> = self
            .faulted
            .iter()
            .filter(|(k, _)| DROPS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        writeln!(f, "Server      {} (its own counts over the run)", self.url)?;
        writeln!(
            f,
            "  Datagrams {} in, {} out",
            self.datagrams_in, self.datagrams_out
        )?;
        writeln!(
            f,
            "  Lost      {} dropped by its kernel, {} by its faults{}, {} not answered{}, {} \
             elsewhere",
            self.kernel_drops,
            self.faulted_drops,
            list(&drops),
            self.unanswered.values().sum::<u64>(),
            list(&self.unanswered),
            self.lost_elsewhere
        )?;
        for warning in &self.warnings {
            writeln!(f, "  Warning   {}", clean(warning))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_datagrams_are_split_by_where_the_server_dropped_them() {
        let url: MetricsUrl = "127.0.0.1:9900".parse().unwrap();
        let before = Samples::parse(
            "process_start_time_seconds 100\n\
             tcpool_udp_datagrams_total{direction=\"in\"} 10\n\
             tcpool_udp_datagrams_total{direction=\"out\"} 10\n\
             tcpool_udp_kernel_drops_total 2\n\
             tcpool_udp_faulted_total{kind=\"drop-reply\"} 5\n",
        );
        let after = Samples::parse(
            "process_start_time_seconds 100\n\
             tcpool_udp_datagrams_total{direction=\"in\"} 1010\n\
             tcpool_udp_datagrams_total{direction=\"out\"} 900\n\
             tcpool_udp_kernel_drops_total 5\n\
             tcpool_udp_faulted_total{kind=\"drop-reply\"} 95\n\
             tcpool_udp_faulted_total{kind=\"dup\"} 7\n\
             tcpool_udp_faulted_total{kind=\"rate\"} 10\n\
             tcpool_udp_unanswered_total{reason=\"rate-limited\"} 4\n\
             tcpool_udp_unanswered_total{reason=\"refused\"} 0\n",
        );
        let view = UdpServerView::between(&url, &before, &after, 120);
        assert_eq!((view.datagrams_in, view.datagrams_out), (1000, 890));
        assert_eq!(view.kernel_drops, 3);
        assert_eq!(view.faulted_drops, 100);
        assert_eq!(view.faulted.get("dup"), Some(&7));
        assert_eq!(view.unanswered.len(), 1);
        assert_eq!(view.lost_elsewhere, 120 - 3 - 100 - 4);
        assert!(view.warnings.is_empty(), "{:?}", view.warnings);
        let text = view.to_string();
        assert!(
            text.contains(
                "3 dropped by its kernel, 100 by its faults (drop-reply 90, rate 10), 4 not \
                 answered (rate-limited 4), 13 elsewhere"
            ),
            "{text}"
        );
        // More dropped than lost: another client's.
        let view = UdpServerView::between(&url, &before, &after, 50);
        assert_eq!(view.lost_elsewhere, 0);
        assert_eq!(view.warnings.len(), 1);
    }
}
