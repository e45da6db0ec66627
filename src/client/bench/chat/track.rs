//! What a chat line carries and how a reader checks what it is given: every line of every
//! sender once, in order per sender.

use std::io::Write as _;

/// The most gaps a reader remembers per sender. A line from a gap that was forgotten (beyond
/// this many open gaps at once) is counted as a duplicate when it comes late, and the gap as
/// missing: a server that loses and reorders that much is broken either way.
const MAX_GAPS: usize = 4096;

/// The payload a sender sends: `tcb:RUN:SENDER:SEQ:MICROS`, the run's id in hex, the sender's
/// number, the line's number for that sender (from 0) and its intended send time in µs since
/// the run's epoch. No space (Redis inline splitting), no `/` first (a chat command).
pub(super) fn payload(out: &mut Vec<u8>, run: u32, sender: usize, seq: u64, micros: u64) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "tcb:{run:08x}:{sender}:{seq}:{micros}");
}

/// The prefix every payload of run `run` starts with.
pub(super) fn prefix(run: u32) -> Vec<u8> {
    format!("tcb:{run:08x}:").into_bytes()
}

/// A payload read back: sender, sequence number, intended send time (µs since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) sender: usize,
    pub(super) seq: u64,
    pub(super) micros: u64,
}

/// The payload in a received line (without its line ending): the line itself (Redis' bulk
/// string), or what follows `<NAME> ` (a chat relay). `None` for anything else: notices,
/// protocol framing, other people's lines, other runs' lines, a payload cut short.
pub(super) fn parse(line: &[u8], prefix: &[u8]) -> Option<Line> {
    let mut text = line;
    if text.first() == Some(&b'<') {
        let at = memchr::memmem::find(text, b"> ")?;
        text = &text[at + 2..];
    }
    let rest = text.strip_prefix(prefix)?;
    let mut fields = rest.split(|&b| b == b':');
    let mut number = || -> Option<u64> {
        let f = fields.next()?;
        if f.is_empty() || f.len() > 19 || !f.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(f.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
    };
    let sender = usize::try_from(number()?).ok()?;
    let seq = number()?;
    let micros = number()?;
    if fields.next().is_some() {
        return None;
    }
    Some(Line {
        sender,
        seq,
        micros,
    })
}

/// How one line counted for a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The first time, and later than every line of its sender seen before (any skipped
    /// become gaps, missing unless they come late).
    InOrder,
    /// The first time, but a later line of its sender came before it.
    OutOfOrder,
    /// Seen before.
    Duplicate,
}

/// One sender as one reader saw it.
#[derive(Debug, Clone, Default)]
struct Stream {
    /// The sequence number after the highest seen.
    next: u64,
    /// Sequence ranges `[from, to)` skipped and not seen since.
    gaps: Vec<(u64, u64)>,
}

/// What one reader has seen of every sender.
#[derive(Debug, Clone)]
pub(super) struct Tracker {
    streams: Vec<Stream>,
}

impl Tracker {
    pub(super) fn new(senders: usize) -> Tracker {
        Tracker {
            streams: vec![Stream::default(); senders],
        }
    }

    /// Counts line `seq` of `sender`; `None` for a sender number out of range.
    pub(super) fn see(&mut self, sender: usize, seq: u64) -> Option<Verdict> {
        let s = self.streams.get_mut(sender)?;
        Some(if seq == s.next {
            s.next += 1;
            Verdict::InOrder
        } else if seq > s.next {
            if s.gaps.len() < MAX_GAPS {
                s.gaps.push((s.next, seq));
            }
            s.next = seq + 1;
            Verdict::InOrder
        } else if let Some(i) = s.gaps.iter().position(|&(a, b)| a <= seq && seq < b) {
            let (a, b) = s.gaps[i];
            match (seq == a, seq + 1 == b) {
                (true, true) => {
                    s.gaps.swap_remove(i);
                }
                (true, false) => s.gaps[i].0 = seq + 1,
                (false, true) => s.gaps[i].1 = seq,
                (false, false) => {
                    s.gaps[i].1 = seq;
                    if s.gaps.len() < MAX_GAPS {
                        s.gaps.push((seq + 1, b));
                    }
                }
            }
            Verdict::OutOfOrder
        } else {
            Verdict::Duplicate
        })
    }

    /// The lines never seen, given how many each sender sent.
    pub(super) fn missing(&self, sent: impl Fn(usize) -> u64) -> u64 {
        self.streams
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let gaps: u64 = s.gaps.iter().map(|(a, b)| b - a).sum();
                gaps + sent(i).saturating_sub(s.next)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_back_from_a_chat_relay_and_alone() {
        let mut out = Vec::new();
        payload(&mut out, 0xab, 7, 42, 123_456);
        let prefix = prefix(0xab);
        let want = Line {
            sender: 7,
            seq: 42,
            micros: 123_456,
        };
        assert_eq!(parse(&out, &prefix), Some(want));
        let mut relayed = b"<tcb000000abs3> ".to_vec();
        relayed.extend_from_slice(&out);
        assert_eq!(parse(&relayed, &prefix), Some(want));
        let mut remote = b"<#4@b> ".to_vec();
        remote.extend_from_slice(&out);
        assert_eq!(parse(&remote, &prefix), Some(want));
        assert_eq!(parse(&out, &super::prefix(0xac)), None, "another run");
        assert_eq!(parse(b"* #3 joined", &prefix), None);
        assert_eq!(parse(&out[..out.len() - 7], &prefix), None, "cut short");
        assert_eq!(parse(b"tcb:000000ab:1:2:3:4", &prefix), None);
    }

    #[test]
    fn lines_count_as_in_order_late_or_duplicate_and_the_rest_is_missing() {
        let mut t = Tracker::new(2);
        assert_eq!(t.see(0, 0), Some(Verdict::InOrder));
        assert_eq!(t.see(0, 3), Some(Verdict::InOrder)); // 1 and 2 skipped
        assert_eq!(t.see(0, 2), Some(Verdict::OutOfOrder));
        assert_eq!(t.see(0, 2), Some(Verdict::Duplicate));
        assert_eq!(t.see(0, 0), Some(Verdict::Duplicate));
        assert_eq!(t.see(1, 0), Some(Verdict::InOrder));
        assert_eq!(t.see(1, 0), Some(Verdict::Duplicate));
        assert_eq!(t.see(2, 0), None);
        // Sender 0 sent 6 (1, 4 and 5 never came), sender 1 sent 3 (1 and 2 never came).
        assert_eq!(t.missing(|s| [6, 3][s]), 5);
    }

    #[test]
    fn a_line_from_the_middle_of_a_gap_splits_it() {
        let mut t = Tracker::new(1);
        t.see(0, 10);
        assert_eq!(t.see(0, 5), Some(Verdict::OutOfOrder));
        assert_eq!(t.see(0, 5), Some(Verdict::Duplicate));
        assert_eq!(t.see(0, 0), Some(Verdict::OutOfOrder));
        assert_eq!(t.see(0, 9), Some(Verdict::OutOfOrder));
        assert_eq!(t.missing(|_| 11), 7);
    }
}
