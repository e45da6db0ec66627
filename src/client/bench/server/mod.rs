//! `tcpool bench --server-metrics URL`: the server's own view of a run, beside the client's.
//!
//! The target's Prometheus `/metrics` (tcpool's `--admin`) is scraped before the run and
//! after it; the difference is what the server counted meanwhile: sessions opened, closed and
//! rejected by reason, messages and bytes each way, and its reply-time percentiles, estimated
//! from the `tcpool_reply_seconds` buckets as Prometheus' `histogram_quantile` does. Where the
//! two views should agree and do not — sessions the client opened that the server never
//! counted, messages the client sent that the server never received — [`ServerView`] carries
//! a warning.
//!
//! The scrape before is taken before connecting and the one after once the server has counted
//! the connections closed (or after [`SETTLE`]), so the server's counts cover the whole run:
//! with a warm-up its messages include the warm-up's, and only a shortfall is a warning. The
//! server counts every client it has, so compare on a server nobody else is using.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::clean;
use super::report::Report;
use super::text::human_us;
use crate::client::addr::{self, Target};

/// How long the scrape after the run waits for the server to count the connections closed.
pub const SETTLE: Duration = Duration::from_secs(2);

/// The most a `/metrics` answer may be.
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// Where the server's metrics are: `http://HOST:PORT/PATH`, or `HOST:PORT` for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsUrl {
    target: Target,
    path: String,
}

impl std::str::FromStr for MetricsUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        if url.starts_with("https://") {
            return Err(format!("{url:?}: only http:// is supported"));
        }
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        let target = addr::parse(host).map_err(|e| format!("{url:?}: {e}"))?;
        if !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("{url:?}: the path must be printable ASCII"));
        }
        Ok(MetricsUrl {
            target,
            path: path.to_owned(),
        })
    }
}

impl fmt::Display for MetricsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.target, self.path)
    }
}

impl MetricsUrl {
    /// Fetches and parses the metrics (HTTP/1.0 GET): the connect, and then the whole
    /// request and answer, each bounded by `timeout`.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached, does not answer 200 within `timeout`, answers more
    /// than 16 MiB, or answers something without tcpool's metrics in it.
    pub fn scrape(&self, timeout: Duration) -> io::Result<Samples> {
        let (mut stream, _) = self.target.connect(timeout)?;
        let deadline = Instant::now() + timeout;
        let late = || {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{self} did not answer within {timeout:?}"),
            )
        };
        let timed_out = |e: io::Error| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => late(),
            _ => e,
        };
        stream.set_write_timeout(Some(timeout))?;
        // One write for the whole head, so the server reads the request in one piece.
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: {}\r\nAccept: text/plain\r\n\r\n",
            self.path, self.target
        );
        stream.write_all(request.as_bytes()).map_err(timed_out)?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(late());
            }
            stream.set_read_timeout(Some(left))?;
            let n = match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(timed_out(e)),
            };
            if (answer.len() + n) as u64 > MAX_ANSWER {
                return Err(io::Error::other(format!(
                    "{self} answered more than {MAX_ANSWER} bytes"
                )));
            }
            answer.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.lines().next().unwrap_or("");
        if status.split_whitespace().nth(1) != Some("200") {
            return Err(io::Error::other(format!("{self} answered {status:?}")));
        }
        let samples = Samples::parse(body);
        // Every tcpool server exposes some `tcpool_` family (`tcpool_build_info` at least).
        if !samples
            .series
            .iter()
            .any(|(name, _, _)| name.starts_with("tcpool_"))
        {
            return Err(io::Error::other(format!(
                "{self} answered, but not with tcpool's metrics (no tcpool_ series in it)"
            )));
        }
        Ok(samples)
    }

    /// Scrapes after a run until the server has counted `connections` more sessions closed
    /// than `before` did, or [`SETTLE`] passed.
    ///
    /// # Errors
    ///
    /// As [`MetricsUrl::scrape`].
    pub fn scrape_settled(
        &self,
        before: &Samples,
        connections: usize,
        timeout: Duration,
    ) -> io::Result<Samples> {
        let deadline = Instant::now() + SETTLE;
        loop {
            let after = self.scrape(timeout)?;
            let closed = after.sum(CLOSED, &[]) - before.sum(CLOSED, &[]);
            if closed >= connections as f64 || Instant::now() >= deadline {
                return Ok(after);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

const CLOSED: &str = "tcpool_sessions_closed_total";

/// One scrape: every sample's name, labels and value.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    series: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Samples {
    /// Reads the Prometheus text format; lines it does not understand are skipped.
    pub fn parse(text: &str) -> Samples {
        let series = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(parse_line)
            .collect();
        Samples { series }
    }

    /// The sum of the series named `name` that have every label in `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// The series named `name`, by the value of their label `key`.
    fn by_label(&self, name: &str, key: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (n, labels, v) in &self.series {
            if let (true, Some(value)) = (n == name, labels.get(key)) {
                *out.entry(value.clone()).or_insert(0.0) += v;
            }
        }
        out
    }
}

/// `name{k="v",...} value [timestamp]`.
fn parse_line(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &inner[i + 1..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

/// The server's reply time over the run, estimated from its histogram's buckets.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ReplyTimes {
    /// Replies the server timed.
    pub count: u64,
    /// Median, in microseconds.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
}

/// What the server counted during the run, and where it disagrees with the client.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServerView {
    /// Where the metrics were read.
    pub url: String,
    /// Sessions the server opened.
    pub sessions_opened: u64,
    /// Sessions it closed, by reason (only reasons that happened).
    pub sessions_closed: BTreeMap<String, u64>,
    /// Connections it answered `busy`, by reason (only reasons that happened).
    pub sessions_rejected: BTreeMap<String, u64>,
    /// Messages it received.
    pub messages_in: u64,
    /// Messages it sent.
    pub messages_out: u64,
    /// Bytes it read.
    pub bytes_in: u64,
    /// Bytes it wrote.
    pub bytes_out: u64,
    /// Its time from reading a message to writing the reply.
    pub reply: ReplyTimes,
    /// Faults that touched sessions during the run (`#1 latency,delay=20ms`): the server's
    /// reply times leave out the delays they injected.
    #[serde(default)]
    pub faults: Vec<String>,
    /// The server's process changed between the scrapes (a restart or a hand-over): its
    /// counts cannot be set against the client's.
    #[serde(default)]
    pub restarted: bool,
    /// Where the client's and the server's counts differ.
    pub warnings: Vec<String>,
}

impl ServerView {
    /// The difference between two scrapes, set against the client's `report`.
    pub fn between(url: &MetricsUrl, before: &Samples, after: &Samples, report: &Report) -> Self {
        let delta = |name: &str, labels: &[(&str, &str)]| {
            (after.sum(name, labels) - before.sum(name, labels)).max(0.0) as u64
        };
        let by_reason = |name: &str| -> BTreeMap<String, u64> {
            let was = before.by_label(name, "reason");
            after
                .by_label(name, "reason")
                .into_iter()
                .map(|(k, v)| {
                    let d = (v - was.get(&k).copied().unwrap_or(0.0)).max(0.0) as u64;
                    (k, d)
                })
                .filter(|&(_, d)| d > 0)
                .collect()
        };
        let mut view = ServerView {
            url: url.to_string(),
            sessions_opened: delta("tcpool_sessions_total", &[]),
            sessions_closed: by_reason(CLOSED),
            sessions_rejected: by_reason("tcpool_sessions_rejected_total"),
            messages_in: delta("tcpool_messages_total", &[("direction", "in")]),
            messages_out: delta("tcpool_messages_total", &[("direction", "out")]),
            bytes_in: delta("tcpool_bytes_total", &[("direction", "in")]),
            bytes_out: delta("tcpool_bytes_total", &[("direction", "out")]),
            reply: reply_times(before, after),
            faults: before_after(before, after, FAULTS, "fault")
                .filter(|&(_, was, is)| is > was)
                .map(|(name, _, _)| clean(&name))
                .collect(),
            restarted: after.sum(STARTED, &[]) != before.sum(STARTED, &[]),
            warnings: Vec::new(),
        };
        view.warnings = if view.restarted {
            vec![format!(
                "the server's process changed between the scrapes (started at {:.0}, then at \
                 {:.0}: a restart or a hand-over); its counts are not the run's",
                before.sum(STARTED, &[]),
                after.sum(STARTED, &[])
            )]
        } else {
            view.disagreements(report)
        };
        view
    }

    fn disagreements(&self, report: &Report) -> Vec<String> {
        let mut out = Vec::new();
        if self.sessions_opened != report.connected as u64 {
            out.push(format!(
                "the client connected {} time(s); the server counted {} session(s) opened",
                report.connected, self.sessions_opened
            ));
        }
        let warm = report.warmup_s > 0.0;
        // tcpool counts a line as a message once the peer speaks in lines; before that, each
        // read. Seed-style (`--eol none`) echo is compared in bytes instead.
        if report.request == "echo" && report.eol != "none" {
            let short = self.messages_in < report.sent;
            if short || (!warm && self.messages_in != report.sent) {
                out.push(format!(
                    "the client sent {} measured message(s){}; the server counted {} received",
                    report.sent,
                    if warm { " after its warm-up" } else { "" },
                    self.messages_in
                ));
            }
        } else if report.request == "echo" && !warm && report.errors == 0 {
            let sent = report.sent * report.size as u64;
            if self.bytes_in != sent {
                out.push(format!(
                    "the client sent {sent} byte(s); the server counted {} read",
                    self.bytes_in
                ));
            }
        }
        let unusual: Vec<String> = self
            .sessions_closed
            .iter()
            .filter(|(reason, _)| !matches!(reason.as_str(), "eof" | "quit"))
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        if !unusual.is_empty() {
            out.push(format!(
                "the server closed sessions: {}",
                unusual.join(", ")
            ));
        }
        if !self.sessions_rejected.is_empty() {
            let why: Vec<String> = self
                .sessions_rejected
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            out.push(format!(
                "the server rejected connections: {}",
                why.join(", ")
            ));
        }
        out
    }
}

/// The series of the process's start time: a different value is a different process.
const STARTED: &str = "process_start_time_seconds";
/// Sessions each fault touched, by fault.
const FAULTS: &str = "tcpool_fault_sessions_total";

/// Each value of `name`'s `key` label after the run, with its value before and after.
fn before_after<'a>(
    before: &'a Samples,
    after: &'a Samples,
    name: &str,
    key: &str,
) -> impl Iterator<Item = (String, f64, f64)> + 'a {
    let was = before.by_label(name, key);
    after.by_label(name, key).into_iter().map(move |(k, v)| {
        let w = was.get(&k).copied().unwrap_or(0.0);
        (k, w, v)
    })
}

/// The reply-time percentiles of the run: the bucket counts' difference, then the linear
/// interpolation within the bucket that holds each rank (Prometheus' `histogram_quantile`).
fn reply_times(before: &Samples, after: &Samples) -> ReplyTimes {
    const NAME: &str = "tcpool_reply_seconds_bucket";
    let was = before.by_label(NAME, "le");
    let mut buckets: Vec<(f64, f64)> = after
        .by_label(NAME, "le")
        .into_iter()
        .filter_map(|(le, n)| {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, n - was.get(&le).copied().unwrap_or(0.0)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = buckets.last().map_or(0.0, |b| b.1);
    if count <= 0.0 {
        return ReplyTimes::default();
    }
    let quantile = |q: f64| {
        let rank = q * count;
        let mut lower = (0.0, 0.0);
        for &(bound, cumulative) in &buckets {
            if cumulative >= rank {
                if bound.is_infinite() {
                    return lower.0 * 1e6;
                }
                let share = (rank - lower.1) / (cumulative - lower.1).max(f64::MIN_POSITIVE);
                return (lower.0 + (bound - lower.0) * share) * 1e6;
            }
            lower = (bound, cumulative);
        }
        lower.0 * 1e6
    };
    ReplyTimes {
        count: count as u64,
        p50_us: quantile(0.5),
        p90_us: quantile(0.9),
        p99_us: quantile(0.99),
    }
}

impl fmt::Display for ServerView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |m: &BTreeMap<String, u64>| {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
            if parts.is_empty() {
                String::new()
            } else {
                format!(" ({})", parts.join(", "))
            }
        };
        writeln!(f, "Server      {} (its own counts over the run)", self.url)?;
        writeln!(
            f,
            "  Sessions  {} opened, {} closed{}, {} rejected{}",
            self.sessions_opened,
            self.sessions_closed.values().sum::<u64>(),
            list(&self.sessions_closed),
            self.sessions_rejected.values().sum::<u64>(),
            list(&self.sessions_rejected),
        )?;
        writeln!(
            f,
            "  Messages  {} in, {} out ({:.2} MB in, {:.2} MB out)",
            self.messages_in,
            self.messages_out,
            self.bytes_in as f64 / 1e6,
            self.bytes_out as f64 / 1e6
        )?;
        let r = &self.reply;
        writeln!(
            f,
            "  Reply     p50 {}  p90 {}  p99 {} ({} timed, read to reply, from buckets)",
            human_us(r.p50_us),
            human_us(r.p90_us),
            human_us(r.p99_us),
            r.count
        )?;
        if !self.faults.is_empty() {
            writeln!(
                f,
                "  Faults    active on the server: {}; its reply time excludes injected delays",
                self.faults.join(", ")
            )?;
        }
        for warning in &self.warnings {
            writeln!(f, "  Warning   {}", clean(warning))?;
        }
        Ok(())
    }
}

mod udp;
pub use udp::UdpServerView;

#[cfg(test)]
mod tests;
