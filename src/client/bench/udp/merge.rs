//! `bench merge` of UDP reports: several generators' runs (against one server, at one time)
//! made into one. Counts are added, the round-trip and |D| histograms added exactly (every
//! percentile is that of all the datagrams together), the timelines aligned on the wall
//! clock, the loss ratio and the rates taken again over the common span. The RFC 3550 jitter
//! is an estimate per socket that cannot be added: the merge gives the mean over all sockets,
//! each input's mean weighted by its sockets (exact when each of them had a jitter, that is
//! two replies or more).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use super::UdpReport;
use crate::client::bench::histogram::{Percentiles, SparseHistogram, decode, encode, histogram};
use crate::client::bench::report::Second;

/// The longest span of windows one merge covers, in seconds (a timeline entry each).
const MAX_SPAN_S: f64 = 3_000_000.0;

/// How far the span may exceed twice the seconds of timeline the inputs hold.
const SPAN_SLACK_S: f64 = 3600.0;

/// `value` if every input has the same, else `mixed`.
fn alike(reports: &[(String, UdpReport)], value: impl Fn(&UdpReport) -> String) -> String {
    let first = value(&reports[0].1);
    if reports.iter().all(|(_, r)| value(r) == first) {
        first
    } else {
        "mixed".into()
    }
}

/// Adds the histogram `text` of `source` (`what` names it) to `into`.
fn add(into: &mut Histogram<u64>, text: &str, source: &str, what: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err(format!(
            "{source} has no {what}: it was written by an older tcpool, whose figures cannot \
             be added exactly"
        ));
    }
    let h = decode(text).map_err(|e| format!("{source}: its {what}: {e}"))?;
    into.add(&h)
        .map_err(|e| format!("{source}: cannot add its {what}: {e:?}"))
}

impl UdpReport {
    /// Merges `reports`, each named by where it came from.
    ///
    /// # Errors
    ///
    /// No reports, one given twice, a window not in UNIX time or runs too far apart to be
    /// one load, a histogram that does not decode or add, counts that overflow.
    pub fn merge(reports: &[(String, UdpReport)]) -> Result<UdpReport, String> {
        let Some((_, first)) = reports.first() else {
            return Err("nothing to merge".into());
        };
        let in_range = |t: f64| t.is_finite() && (0.0..4.2e9).contains(&t);
        for (source, r) in reports {
            if !(in_range(r.start) && r.duration_s >= 0.0 && r.duration_s < MAX_SPAN_S) {
                return Err(format!("{source}: its window is not in UNIX time"));
            }
        }
        for (i, (a, ra)) in reports.iter().enumerate() {
            if let Some((b, _)) = reports[..i]
                .iter()
                .find(|(_, rb)| rb.start == ra.start && rb.rtt_histogram == ra.rtt_histogram)
            {
                return Err(format!(
                    "{b} and {a} hold the same run: merging them would count it twice"
                ));
            }
        }
        let start = reports
            .iter()
            .map(|(_, r)| r.start)
            .fold(f64::MAX, f64::min);
        let end = reports
            .iter()
            .map(|(_, r)| r.start + r.duration_s)
            .fold(f64::MIN, f64::max);
        let span = end - start;
        let present: f64 = reports.iter().map(|(_, r)| r.timeline.len() as f64).sum();
        if span > 2.0 * present + SPAN_SLACK_S {
            return Err(format!(
                "the runs span {span:.0} s but hold {present:.0} s of timeline: runs that far \
                 apart are not one load"
            ));
        }

        let mut m = first.clone();
        let mut rtt = histogram();
        let mut delta = histogram();
        // A second of the merge: its round trips, errors, and its jitter times the replies it
        // is the mean of, and those replies.
        let mut seconds: BTreeMap<u64, (SparseHistogram, u64, f64, u64)> = BTreeMap::new();
        let mut targets: Vec<String> = Vec::new();
        let (mut jitter_weighted, mut stamped) = (0.0, false);
        let counts = |r: &UdpReport| {
            [
                r.sent,
                r.answered,
                r.datagrams_received,
                r.bytes_sent,
                r.bytes_received,
                r.skipped,
                r.lost,
                r.stamped_replies,
                r.request_loss.unwrap_or(0),
                r.reply_loss.unwrap_or(0),
                r.unattributed_loss,
                r.late,
                r.duplicates,
                r.reordered,
                r.corrupt,
                r.foreign,
                r.send_errors,
                r.refused,
                r.unresolved,
            ]
        };
        let mut sums = [0u64; 19];
        m.sockets = 0;
        m.rate = Some(0.0);
        m.first_error = None;
        for (source, r) in reports {
            add(&mut rtt, &r.rtt_histogram, source, "round-trip histogram")?;
            add(
                &mut delta,
                &r.jitter_delta_histogram,
                source,
                "|D| histogram",
            )?;
            for (sum, n) in sums.iter_mut().zip(counts(r)) {
                *sum = sum
                    .checked_add(n)
                    .ok_or_else(|| format!("{source}: the counts overflow when added"))?;
            }
            let offset = (r.start - start).round().max(0.0) as u64;
            for s in &r.timeline {
                let entry = seconds.entry(s.second + offset).or_default();
                entry.0.add(&s.histogram);
                entry.1 = entry.1.saturating_add(s.errors);
                // The second's jitter, weighted by the replies it is the mean of.
                if let Some(j) = s.jitter_us {
                    entry.2 += j * s.messages as f64;
                    entry.3 += s.messages;
                }
            }
            if !targets.contains(&r.target) {
                targets.push(r.target.clone());
            }
            m.sockets = m.sockets.saturating_add(r.sockets);
            m.rate = m.rate.zip(r.rate).map(|(a, b)| a + b);
            m.pipeline = m.pipeline.max(r.pipeline);
            m.reply_timeout_s = m.reply_timeout_s.max(r.reply_timeout_s);
            jitter_weighted += r.jitter_us * r.sockets as f64;
            stamped |= r.request_loss.is_some();
            if m.first_error.is_none() {
                m.first_error = r.first_error.as_ref().map(|e| format!("{source}: {e}"));
            }
        }
        let [
            sent,
            answered,
            received,
            bytes_sent,
            bytes_received,
            skipped,
            lost,
            stamped_replies,
            request_loss,
            reply_loss,
            unattributed,
            late,
            duplicates,
            reordered,
            corrupt,
            foreign,
            send_errors,
            refused,
            unresolved,
        ] = sums;
        let per = |n: u64| n as f64 / span.max(1e-9);
        m.target = targets.join(", ");
        m.request = alike(reports, |r| r.request.clone());
        m.reply = alike(reports, |r| r.reply.clone());
        m.id_field = alike(reports, |r| r.id_field.clone());
        if reports.iter().any(|(_, r)| r.size != first.size) {
            m.size = 0;
        }
        m.start = start;
        m.duration_s = span;
        (m.sent, m.answered, m.datagrams_received) = (sent, answered, received);
        (m.bytes_sent, m.bytes_received) = (bytes_sent, bytes_received);
        m.sent_per_sec = per(sent);
        m.received_per_sec = per(received);
        m.bytes_sent_per_sec = per(bytes_sent);
        m.bytes_received_per_sec = per(bytes_received);
        (m.skipped, m.lost) = (skipped, lost);
        m.loss_ratio = if sent == 0 {
            0.0
        } else {
            lost as f64 / sent as f64
        };
        m.stamped_replies = stamped_replies;
        // An input without stamps has its loss in `unattributed_loss`: the placed loss of the
        // others still adds up.
        m.request_loss = stamped.then_some(request_loss);
        m.reply_loss = stamped.then_some(reply_loss);
        m.unattributed_loss = unattributed;
        (m.late, m.duplicates, m.reordered) = (late, duplicates, reordered);
        (m.corrupt, m.foreign, m.send_errors) = (corrupt, foreign, send_errors);
        (m.refused, m.unresolved) = (refused, unresolved);
        m.rtt_us = Percentiles::of(&rtt);
        m.rtt_histogram = encode(&rtt);
        m.jitter_us = if m.sockets == 0 {
            0.0
        } else {
            jitter_weighted / m.sockets as f64
        };
        m.jitter_delta_us = Percentiles::of(&delta);
        m.jitter_delta_histogram = encode(&delta);
        let last = seconds.keys().next_back().copied();
        m.timeline = match last {
            Some(last) => (0..=last)
                .map(|i| {
                    let (h, errors, jitter, replies) = seconds.remove(&i).unwrap_or_default();
                    let jitter = (replies > 0).then(|| jitter / replies as f64);
                    Second::new(i, h, errors).with_jitter(jitter)
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(m)
    }
}
