//! Peer text: UTF-8 boundaries, and bytes made safe to show on a terminal or in a log.

use std::fmt::Write as _;

/// How many bytes at the end of `bytes` are the start of a UTF-8 character that is not
/// complete yet (0 to 3). Bytes that can never become valid UTF-8 are not kept.
pub fn incomplete_utf8_tail(bytes: &[u8]) -> usize {
    for k in 1..=3.min(bytes.len()) {
        let b = bytes[bytes.len() - k];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: the lead is further back
        }
        return match std::str::from_utf8(&bytes[bytes.len() - k..]) {
            Err(e) if e.valid_up_to() == 0 && e.error_len().is_none() => k,
            _ => 0,
        };
    }
    0
}

/// The largest cut at or before `at` (and after 0) that does not split a UTF-8 character;
/// `at` itself when the bytes there are not UTF-8 anyway.
pub fn char_boundary_at_or_before(bytes: &[u8], at: usize) -> usize {
    let at = at.min(bytes.len());
    let keep = incomplete_utf8_tail(&bytes[..at]);
    if keep > 0 && keep < at { at - keep } else { at }
}

/// Peer bytes made safe to print: UTF-8 text as it is, with control characters, terminal
/// escape sequences and bidirectional overrides shown as escapes instead of acting on the
/// operator's terminal or log, and each byte that is not UTF-8 shown as `\xNN`.
///
/// ```
/// use tcpool::server::protocol::escape;
/// assert_eq!(escape(b"\x1b[2Jhi\tthere\r\n"), r"\x1b[2Jhi\tthere\r\n");
/// assert_eq!(escape("你好".as_bytes()), "你好");
/// assert_eq!(escape(b"\xff!"), r"\xff!");
/// assert_eq!(escape(b"caf\xc3"), r"caf\xc3");
/// ```
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        let mut text = chunk.valid();
        while !text.is_empty() {
            // Copy the run that needs no escaping in one go; look closer only where it stops.
            let plain = plain_len(text.as_bytes());
            let (run, rest) = text.split_at(plain);
            out.push_str(run);
            let mut chars = rest.chars();
            if let Some(c) = chars.next() {
                push_escaped(&mut out, c);
            }
            text = chars.as_str();
        }
        push_invalid(&mut out, chunk.invalid());
    }
    out
}

/// Bytes that are not UTF-8, shown as what they are (`\xff`) rather than as U+FFFD, which
/// would hide which bytes came and how many.
pub(super) fn push_invalid(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, r"\x{b:02x}");
    }
}

/// How many leading bytes of the UTF-8 text `bytes` can be shown as they are, looked at a
/// word at a time. It stops at every byte that may start something [`push_escaped`] changes:
/// an ASCII control (below 0x20, or 0x7f), 0xc2 (the C1 controls' lead byte) and 0xe2 (the
/// bidirectional controls' and line separators'); the character there is decided one by one.
fn plain_len(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    /// Whether any byte of `x` is zero (exact as a whole-word test).
    fn has_zero(x: u64) -> bool {
        x.wrapping_sub(ONES) & !x & HIGH != 0
    }
    /// Whether any byte of `x` is below `n` (`n` at most 0x80).
    fn has_less(x: u64, n: u8) -> bool {
        x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0
    }
    let mut done = 0;
    for word in bytes.chunks_exact(8) {
        let x = u64::from_ne_bytes(word.try_into().expect("chunks of 8"));
        if has_less(x, 0x20)
            || has_zero(x ^ (ONES * 0x7f))
            || has_zero(x ^ (ONES * 0xc2))
            || has_zero(x ^ (ONES * 0xe2))
        {
            break;
        }
        done += 8;
    }
    let special = |&b: &u8| b < 0x20 || b == 0x7f || b == 0xc2 || b == 0xe2;
    // At most one word and a tail of under 8 bytes are looked at one by one.
    done + bytes[done..]
        .iter()
        .position(special)
        .unwrap_or(bytes.len() - done)
}

pub(super) fn push_escaped(out: &mut String, c: char) {
    match c {
        '\t' => out.push_str(r"\t"),
        '\n' => out.push_str(r"\n"),
        '\r' => out.push_str(r"\r"),
        c if (c as u32) < 0x100 && c.is_control() => {
            let _ = write!(out, r"\x{:02x}", c as u32);
        }
        // Bidirectional overrides and isolates can make text display in another order than it
        // is stored ("Trojan Source"); the line separators break a log line in two.
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}' => {
            let _ = write!(out, r"\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// Turns a stream of byte chunks into text without splitting a UTF-8 character across two
/// chunks: the incomplete end of one chunk is kept for the next. Used where peer text is
/// shown a read at a time.
#[derive(Debug, Default, Clone)]
pub struct Utf8Carry {
    carry: Vec<u8>,
}

impl Utf8Carry {
    /// Bytes of `chunk` (after any carried bytes) that end on a character boundary; the
    /// incomplete rest is kept. Returns the bytes to show.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(chunk);
        let keep = incomplete_utf8_tail(&bytes);
        self.carry = bytes.split_off(bytes.len() - keep);
        bytes
    }

    /// Whatever is still carried, at end of input.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.carry)
    }
}
