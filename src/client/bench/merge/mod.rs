//! `bench merge`: several generators' [`Report`]s made into one, exactly. Counts are summed,
//! histograms added (so every percentile is that of all the replies together, never an
//! average of percentiles), the timelines aligned on the wall clock, and throughput taken
//! over the common window: from the earliest start to the latest end.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use super::histogram::{SparseHistogram, histogram};
use super::report::{Generator, MIXED, Replies, Report, Second, Window};
use super::text::human_window;

/// Below this overlap of the generators' windows, [`Merged::warning`] says so.
pub const OVERLAP_WARNING: f64 = 0.9;

/// The merged report, and how well the windows overlapped.
#[derive(Debug, Clone)]
pub struct Merged {
    /// One report, with the same keys as a single run's and one [`Generator`] per input.
    pub report: Report,
    /// The windows' intersection over their union, from 0 to 1 (1 for a single input).
    pub overlap: f64,
}

impl Merged {
    /// A warning for windows that overlap by less than [`OVERLAP_WARNING`].
    pub fn warning(&self) -> Option<String> {
        (self.overlap < OVERLAP_WARNING).then(|| {
            format!(
                "the generators' windows overlap by only {:.0}% ({}): start them with one --start-at",
                self.overlap * 100.0,
                human_window(&self.report.window)
            )
        })
    }

    /// A note for reports of a mix: their figures per request kind are not merged.
    pub fn note(&self) -> Option<&'static str> {
        self.report.kinds_left_out.then_some(
            "the figures per request kind are left out: they hold percentiles without their \
             histograms, which cannot be added exactly",
        )
    }
}

/// Merges `reports`, each named by where it came from.
///
/// # Errors
///
/// No reports, or a histogram that cannot be added (values beyond this build's bounds),
/// naming the input.
pub fn merge(reports: &mut [(String, Report)]) -> Result<Merged, String> {
    let Some((_, first)) = reports.first() else {
        return Err("nothing to merge".into());
    };
    for (source, r) in reports.iter() {
        check(r).map_err(|e| format!("{source} is not a report this build wrote: {e}"))?;
    }
    let runs = distinct_runs(reports)?;
    let start = reports
        .iter()
        .map(|(_, r)| r.window.start)
        .fold(f64::INFINITY, f64::min);
    let end = reports
        .iter()
        .map(|(_, r)| r.window.end)
        .fold(f64::NEG_INFINITY, f64::max);
    let common_start = reports
        .iter()
        .map(|(_, r)| r.window.start)
        .fold(f64::NEG_INFINITY, f64::max);
    let common_end = reports
        .iter()
        .map(|(_, r)| r.window.end)
        .fold(f64::INFINITY, f64::min);
    let union = end - start;
    if union > MAX_SPAN_S as f64 {
        return Err(format!(
            "the windows span {union:.0} s, more than the {MAX_SPAN_S} s one merge covers"
        ));
    }
    // The merged timeline has an entry a second of the span: runs far apart in time would
    // make millions of empty seconds out of a few present ones.
    let present: f64 = reports.iter().map(|(_, r)| r.timeline.len() as f64).sum();
    if union > 2.0 * present + SPAN_SLACK_S {
        return Err(format!(
            "the windows span {union:.0} s but hold {present:.0} s of timeline: runs that far \
             apart are not one load; merge the runs of one --start-at"
        ));
    }
    let overlap = if union > 0.0 {
        ((common_end - common_start) / union).clamp(0.0, 1.0)
    } else {
        1.0
    };

    let mut latency = histogram();
    let mut connect = histogram();
    // Generators that sent different requests are merged all the same, and said to differ.
    let alike = reports
        .iter()
        .all(|(_, r)| r.request == first.request && r.reply == first.reply);
    let (request, reply) = if alike {
        (first.request.clone(), first.reply.clone())
    } else {
        (MIXED.to_owned(), MIXED.to_owned())
    };
    let reconnect_every = reports
        .iter()
        .all(|(_, r)| r.reconnect_every == first.reconnect_every)
        .then_some(first.reconnect_every)
        .flatten();
    let (size, eol, pipeline, warmup_s) = (
        first.size,
        first.eol.clone(),
        first.pipeline,
        first.warmup_s,
    );
    // Each second's latencies and errors. The inputs' seconds are moved in, not copied: a
    // long run's timeline is most of its report.
    let mut seconds: BTreeMap<u64, (SparseHistogram, u64)> = BTreeMap::new();
    let mut merged = Report::empty(String::new());
    let mut targets: Vec<String> = Vec::new();
    let mut rates = Some(0.0);
    for (source, r) in reports.iter_mut() {
        let source: &str = source;
        latency
            .add(r.latency_histogram())
            .map_err(|e| format!("{source}: cannot add its latency histogram: {e:?}"))?;
        connect
            .add(&r.connect)
            .map_err(|e| format!("{source}: cannot add its connect histogram: {e:?}"))?;
        // Seconds of this generator's window, placed on the common clock.
        let offset = (r.window.start - start).round().max(0.0) as u64;
        for s in std::mem::take(&mut r.timeline) {
            let at = s.second + offset;
            match seconds.entry(at) {
                Entry::Vacant(v) => {
                    v.insert((s.histogram, s.errors));
                }
                Entry::Occupied(mut o) => {
                    let entry = o.get_mut();
                    entry.0.add(&s.histogram);
                    entry.1 = add(entry.1, s.errors, source)?;
                }
            }
        }
        if !targets.contains(&r.target) {
            targets.push(r.target.clone());
        }
        rates = rates.zip(r.rate).map(|(a, b)| a + b);
        for (kind, n) in &r.errors_by_kind {
            let total = merged.errors_by_kind.entry(*kind).or_default();
            *total = add(*total, *n, source)?;
        }
        for (kind, e) in &r.first_errors {
            merged
                .first_errors
                .entry(*kind)
                .or_insert_with(|| e.clone());
        }
        merged.connections = merged
            .connections
            .checked_add(r.connections)
            .ok_or_else(|| overflow(source))?;
        merged.threads = merged
            .threads
            .checked_add(r.threads)
            .ok_or_else(|| overflow(source))?;
        merged.sent = add(merged.sent, r.sent, source)?;
        merged.messages = add(merged.messages, r.messages, source)?;
        merged.bytes = add(merged.bytes, r.bytes, source)?;
        merged.in_flight_at_end = add(merged.in_flight_at_end, r.in_flight_at_end, source)?;
        merged.late_replies = add(merged.late_replies, r.late_replies, source)?;
        merged.reconnects = add(merged.reconnects, r.reconnects, source)?;
        merged.connected = merged
            .connected
            .checked_add(r.connected)
            .ok_or_else(|| overflow(source))?;
        if let Some(theirs) = &r.tls {
            match merged.tls.as_mut() {
                Some(ours) => ours.add(theirs).map_err(|e| format!("{source}: {e}"))?,
                None => merged.tls = Some(theirs.clone()),
            }
        }
        if let Some(theirs) = &r.replies {
            let ours = merged.replies.get_or_insert_with(Replies::default);
            ours.ok = add(ours.ok, theirs.ok, source)?;
            ours.error = add(ours.error, theirs.error, source)?;
            ours.miss = add(ours.miss, theirs.miss, source)?;
            for (prefix, n) in &theirs.errors_by_prefix {
                let total = ours.errors_by_prefix.entry(prefix.clone()).or_default();
                *total = add(*total, *n, source)?;
            }
        }
        // A mix's figures per request kind are percentiles without their histograms: they
        // cannot be added exactly, so a merged report leaves them out and says so.
        merged.kinds_left_out |= !r.kinds.is_empty();
        merged.interrupted |= r.interrupted;
        merged.connect_s = merged.connect_s.max(r.connect_s);
        merged.generators.push(Generator {
            source: source.to_owned(),
            window: r.window,
            messages: r.messages,
            errors: r.errors,
            msgs_per_sec: r.msgs_per_sec,
            latency_us: r.latency_us,
        });
    }
    let last = seconds.keys().next_back().copied();
    merged.timeline = match last {
        Some(last) => (0..=last)
            .map(|i| {
                let (latency, errors) = seconds.remove(&i).unwrap_or_default();
                Second::new(i, latency, errors)
            })
            .collect(),
        None => Vec::new(),
    };
    merged.target = targets.join(", ");
    merged.request = request;
    merged.reply = reply;
    merged.size = size;
    merged.eol = eol;
    merged.pipeline = pipeline;
    merged.warmup_s = warmup_s;
    merged.reconnect_every = reconnect_every;
    merged.rate = rates;
    merged.window = Window { start, end };
    merged.runs = runs;
    if let Some(r) = merged.replies.as_mut() {
        r.hit_ratio = (r.miss > 0).then(|| r.ok as f64 / (r.ok + r.miss) as f64);
    }
    Ok(Merged {
        report: merged.assemble(latency, connect),
        overlap,
    })
}

/// Every input's runs, refusing a run that two inputs hold: the same file given twice, or a
/// merged report beside one of the reports it was made from. A report from before run ids
/// stands for one run named by its window and counts.
fn distinct_runs(reports: &[(String, Report)]) -> Result<Vec<String>, String> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    let mut all = Vec::new();
    for (source, r) in reports {
        let ids = if r.runs.is_empty() {
            let h = &r.latency;
            vec![format!(
                "{}@{}-{}/{}/{}/{}",
                r.target,
                r.window.start,
                r.window.end,
                h.len(),
                h.mean(),
                h.max()
            )]
        } else {
            r.runs.clone()
        };
        for id in ids {
            if let Some(earlier) = seen.insert(id.clone(), source) {
                let why = if earlier == source {
                    format!("{source} is given twice")
                } else {
                    format!("{earlier} and {source} both hold run {id}")
                };
                return Err(format!("{why}: merging them would count that run twice"));
            }
            all.push(id);
        }
    }
    Ok(all)
}

/// The longest span of windows one merge covers, in seconds (a timeline entry each): more
/// than a month of runs.
const MAX_SPAN_S: u64 = 3_000_000;

/// How far the span of the windows may exceed twice the seconds of timeline they hold: an
/// hour of generators that started late or ran short.
const SPAN_SLACK_S: f64 = 3600.0;

/// What a report read from a file must hold before it is merged: a window in UNIX time, a
/// timeline within it, error counts that add up.
fn check(r: &Report) -> Result<(), String> {
    let Window { start, end } = r.window;
    // Before 2100 in UNIX seconds.
    let in_range = |t: f64| t.is_finite() && (0.0..4.2e9).contains(&t);
    if !in_range(start) || !in_range(end) || end < start {
        return Err(format!("its window {start:?}..{end:?} is not in UNIX time"));
    }
    let length = (end - start).ceil() as u64;
    if let Some(s) = r.timeline.iter().find(|s| s.second > length) {
        return Err(format!(
            "its timeline has second {} in a window of {length} s",
            s.second
        ));
    }
    r.errors_by_kind
        .values()
        .try_fold(0u64, |a, &b| a.checked_add(b))
        .ok_or("its error counts overflow when added")?;
    Ok(())
}

fn overflow(source: &str) -> String {
    format!("{source}: the counts overflow when added")
}

fn add(a: u64, b: u64, source: &str) -> Result<u64, String> {
    a.checked_add(b).ok_or_else(|| overflow(source))
}

#[cfg(test)]
mod tests;
