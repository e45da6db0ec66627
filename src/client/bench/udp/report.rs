//! What a UDP run measured, for people ([`fmt::Display`]) and for JSON.

use std::fmt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::track::Tally;
use super::{Check, Shared, UdpLimit, UdpOptions};
use crate::client::bench::error::clean;
use crate::client::bench::histogram::{Percentiles, decode, encode};
use crate::client::bench::report::Second;
use crate::client::bench::text::{chart, human_us, percentile_rows};

/// A UDP run's result. Every datagram sent is, at the end, answered, corrupt, lost or
/// unresolved: `sent = answered + corrupt + lost + unresolved`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UdpReport {
    /// Always `udp`: tells this report from a TCP one.
    pub transport: String,
    /// Where the datagrams went.
    pub target: String,
    /// Sockets (source ports).
    pub sockets: usize,
    /// Datagrams out per socket at most (closed loop).
    pub pipeline: usize,
    /// Datagrams per second asked for (open loop); `None`: closed loop.
    pub rate: Option<f64>,
    /// `own` (bench's payload of `size` bytes) or the request (--send) as written.
    pub request: String,
    /// How replies were judged: `own` (the request back, the stamp slot aside), `exact`
    /// (--expect), `size N` (--reply-size) or `any` (only matched by the id).
    pub reply: String,
    /// Bench's own payload's size in bytes (with --send, 0).
    pub size: usize,
    /// The id field as `OFFSET:LEN`.
    pub id_field: String,
    /// How long a reply may take, in seconds.
    pub reply_timeout_s: f64,
    /// When the run started, UNIX seconds.
    pub start: f64,
    /// The measured span, in seconds: the window, or (with -n) until the last datagram was
    /// sent or answered.
    pub duration_s: f64,
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams answered rightly within the timeout (once each).
    pub answered: u64,
    /// Every datagram that came from the target (duplicates, late and corrupt ones too).
    pub datagrams_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes of every datagram that came.
    pub bytes_received: u64,
    /// Datagrams sent per second of the span.
    pub sent_per_sec: f64,
    /// Datagrams that came per second of the span.
    pub received_per_sec: f64,
    /// Bytes sent per second.
    pub bytes_sent_per_sec: f64,
    /// Bytes received per second.
    pub bytes_received_per_sec: f64,
    /// Open loop: datagrams whose send time passed by more than one interval, never sent.
    pub skipped: u64,
    /// Datagrams with no reply within the timeout (late ones included).
    pub lost: u64,
    /// `lost / sent`.
    pub loss_ratio: f64,
    /// Replies that carried the server's stamp.
    pub stamped_replies: u64,
    /// From the stamps: requests that never reached the server (`None`: no stamp seen).
    pub request_loss: Option<u64>,
    /// From the stamps: replies that never came back.
    pub reply_loss: Option<u64>,
    /// Loss the stamps cannot place (after the last stamped reply, or all of it without
    /// stamps).
    pub unattributed_loss: u64,
    /// Replies that came after their datagram was given up on (also in `lost`).
    pub late: u64,
    /// Replies to a datagram already answered.
    pub duplicates: u64,
    /// Replies that came after the reply of a later datagram of their socket.
    pub reordered: u64,
    /// Replies matched to a datagram whose bytes were not what was expected.
    pub corrupt: u64,
    /// Datagrams that answered no datagram sent.
    pub foreign: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// ICMP port-unreachable errors reported on the sockets.
    pub refused: u64,
    /// Datagrams still out when the run was stopped.
    pub unresolved: u64,
    /// Round trips, µs (open loop: from each datagram's intended send time).
    pub rtt_us: Percentiles,
    /// The round trips' histogram (HdrHistogram V2 deflate, base64).
    pub rtt_histogram: String,
    /// RFC 3550 interarrival jitter, µs: the mean over sockets of each one's estimate.
    pub jitter_us: f64,
    /// |D|, the difference of consecutive replies' transit times, µs.
    pub jitter_delta_us: Percentiles,
    /// The |D| histogram (HdrHistogram V2 deflate, base64): what `bench merge` adds up.
    #[serde(default)]
    pub jitter_delta_histogram: String,
    /// One entry a second: replies that came in it (their round trips), and datagrams sent in
    /// it that were lost (`errors`).
    pub timeline: Vec<Second>,
    /// The first thing that went wrong, in words.
    pub first_error: Option<String>,
}

pub(super) fn report(
    options: &UdpOptions,
    shared: &Shared<'_>,
    started: SystemTime,
    t: Tally,
) -> UdpReport {
    let end = match options.limit {
        UdpLimit::Duration(d) => Instant::now().min(shared.start + d),
        UdpLimit::Datagrams(_) => t.last_activity.unwrap_or(shared.start),
    };
    let duration_s = end.saturating_duration_since(shared.start).as_secs_f64();
    let per = |n: u64| n as f64 / duration_s.max(1e-9);
    let stamped = t.stamped > 0;
    let placed = if stamped {
        t.request_loss + t.reply_loss
    } else {
        0
    };
    let payload = &options.payload;
    let timeline = t
        .seconds
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let jitter = s.jitter_us();
            Second::new(i as u64, s.rtt, s.lost).with_jitter(jitter)
        })
        .collect();
    UdpReport {
        transport: "udp".into(),
        target: options.target.to_string(),
        sockets: options.sockets,
        pipeline: options.pipeline,
        rate: options.rate,
        request: match &payload.send {
            None => "own".into(),
            Some(_) => "template".into(),
        },
        reply: match &payload.check {
            Check::Own => "own".into(),
            Check::Exact(_) => "exact".into(),
            Check::Size(n) => format!("size {n}"),
            Check::Any => "any".into(),
        },
        size: if payload.send.is_none() {
            payload.size
        } else {
            0
        },
        id_field: format!("{}:{}", payload.id.offset, payload.id.len),
        reply_timeout_s: options.reply_timeout.as_secs_f64(),
        start: started
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        duration_s,
        sent: t.sent,
        answered: t.answered,
        datagrams_received: t.datagrams_in,
        bytes_sent: t.bytes_sent,
        bytes_received: t.bytes_in,
        sent_per_sec: per(t.sent),
        received_per_sec: per(t.datagrams_in),
        bytes_sent_per_sec: per(t.bytes_sent),
        bytes_received_per_sec: per(t.bytes_in),
        skipped: t.skipped,
        lost: t.lost,
        loss_ratio: if t.sent == 0 {
            0.0
        } else {
            t.lost as f64 / t.sent as f64
        },
        stamped_replies: t.stamped,
        request_loss: stamped.then_some(t.request_loss),
        reply_loss: stamped.then_some(t.reply_loss),
        unattributed_loss: t.lost - placed,
        late: t.late,
        duplicates: t.duplicates,
        reordered: t.reordered,
        corrupt: t.corrupt,
        foreign: t.foreign,
        send_errors: t.send_errors,
        refused: t.refused,
        unresolved: t.unresolved,
        rtt_us: Percentiles::of(&t.rtt),
        rtt_histogram: encode(&t.rtt),
        jitter_us: if t.jitter_sockets == 0 {
            0.0
        } else {
            t.jitter_sum / t.jitter_sockets as f64
        },
        jitter_delta_us: Percentiles::of(&t.delta),
        jitter_delta_histogram: encode(&t.delta),
        timeline,
        first_error: t.first_error,
    }
}

impl UdpReport {
    /// Every datagram answered rightly, once, and nothing failed.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.corrupt == 0
            && self.send_errors == 0
            && self.refused == 0
            && self.foreign == 0
    }
}

/// A share as a percentage with enough digits to show a small one.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0%".into();
    }
    format!("{:.2}%", part as f64 * 100.0 / whole as f64)
}

impl fmt::Display for UdpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let load = match self.rate {
            Some(r) => {
                format!("open loop at {r} datagrams/s (round trips from each intended send time)")
            }
            None => format!("closed loop, {} out per socket", self.pipeline),
        };
        let what = if self.size > 0 {
            format!("{}-byte datagrams of bench's payload", self.size)
        } else {
            format!(
                "\"{}\" (id at {}), replies {}",
                clean(&self.request),
                self.id_field,
                self.reply
            )
        };
        writeln!(
            f,
            "Target      udp {} ({} socket(s))",
            self.target, self.sockets
        )?;
        writeln!(f, "Load        {what}, {load}")?;
        writeln!(f, "Duration    {:.2} s", self.duration_s)?;
        writeln!(
            f,
            "Datagrams   {} answered of {} sent; {} came back in all",
            self.answered, self.sent, self.datagrams_received
        )?;
        writeln!(
            f,
            "Throughput  out {:.1} dgram/s, {:.2} MB/s; in {:.1} dgram/s, {:.2} MB/s",
            self.sent_per_sec,
            self.bytes_sent_per_sec / 1e6,
            self.received_per_sec,
            self.bytes_received_per_sec / 1e6
        )?;
        write!(
            f,
            "Loss        {} ({}) with no reply within {} ms",
            self.lost,
            percent(self.lost, self.sent),
            (self.reply_timeout_s * 1000.0).round()
        )?;
        match (self.request_loss, self.reply_loss) {
            (Some(request), Some(reply)) => writeln!(
                f,
                ": request loss {request}, reply loss {reply}, not placed {} (from {} stamped replies)",
                self.unattributed_loss, self.stamped_replies
            )?,
            _ => writeln!(f, " (no stamp from the server: not split)")?,
        }
        writeln!(
            f,
            "Anomalies   late {}  duplicates {}  reordered {}  corrupt {}  foreign {}  skipped {}",
            self.late, self.duplicates, self.reordered, self.corrupt, self.foreign, self.skipped
        )?;
        if self.unresolved > 0 {
            writeln!(f, "            {} still out when stopped", self.unresolved)?;
        }
        writeln!(f)?;
        percentile_rows(f, "Round trip", &self.rtt_us)?;
        let d = &self.jitter_delta_us;
        writeln!(
            f,
            "Jitter      {} (RFC 3550); |D| p50 {}, p99 {}, max {}",
            human_us(self.jitter_us),
            human_us(d.p50 as f64),
            human_us(d.p99 as f64),
            human_us(d.max as f64)
        )?;
        if let Ok(h) = decode(&self.rtt_histogram)
            && !h.is_empty()
        {
            writeln!(f)?;
            chart(f, &h)?;
        }
        match &self.first_error {
            None => Ok(()),
            Some(first) => writeln!(
                f,
                "\nErrors      send {}, refused {}\n            first: {}",
                self.send_errors,
                self.refused,
                clean(first)
            ),
        }
    }
}
