//! Pure framing: how a session's bytes become messages, which line ending the peer speaks,
//! when a message is `quit`, and how peer text is made safe to show.
//!
//! Nothing here does I/O or knows about sessions; the worker feeds each read to a
//! [`Splitter`] and acts on what comes out. The rules are DESIGN.md's wire contract:
//!
//! - A session is *seed-style* until it first sends a `\n`; the data of one read is then one
//!   message. From its first `\n` on it is *line-based* for good, and its line ending is `\r\n`
//!   if that first line ended so, else `\n`.
//! - Line-based data is split after each `\n`; a `\r` right before it belongs to the ending, a
//!   lone `\r` is data, an empty line is a message.
//! - Holding (chat, manual, custom handlers): a partial line waits for its `\n`, up to
//!   `max_line` bytes, beyond which the held bytes become a message, cut at a UTF-8 character
//!   boundary. A seed-style read that ends inside a UTF-8 character keeps those few bytes for
//!   the next read, so composed text is never cut inside a character.
//! - Passing (echo): nothing is held back; an unfinished line is passed on at once as an
//!   incomplete piece, and only its first few bytes are remembered, to recognise a `quit`
//!   that arrives split across reads.
//! - `quit` is the message whose text (without its ending) is exactly `quit`. The splitter
//!   stops there: nothing after it is looked at.

use std::fmt::{self, Write as _};

use memchr::memchr;

/// The line ending a peer speaks, and that the server answers it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LineEnding {
    /// Seed-style: no terminator; one read is one message.
    #[default]
    None,
    /// `\n`.
    Lf,
    /// `\r\n`.
    CrLf,
}

impl LineEnding {
    /// The ending's bytes: empty, `\n` or `\r\n`.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            LineEnding::None => b"",
            LineEnding::Lf => b"\n",
            LineEnding::CrLf => b"\r\n",
        }
    }

    /// The name used on the command line: `none`, `lf` or `crlf`.
    pub fn name(self) -> &'static str {
        match self {
            LineEnding::None => "none",
            LineEnding::Lf => "lf",
            LineEnding::CrLf => "crlf",
        }
    }

    /// `text` followed by this ending, as one buffer ready for one write.
    pub fn terminate(self, text: &[u8]) -> Vec<u8> {
        let mut line = Vec::with_capacity(text.len() + 2);
        line.extend_from_slice(text);
        line.extend_from_slice(self.as_bytes());
        line
    }
}

impl fmt::Display for LineEnding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LineEnding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(LineEnding::None),
            "lf" => Ok(LineEnding::Lf),
            "crlf" => Ok(LineEnding::CrLf),
            other => Err(format!(
                "unknown line ending {other:?}: expected none, lf or crlf"
            )),
        }
    }
}

/// One message (or, when passing, one piece of a line) cut from a session's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The bytes as received, line ending included.
    pub raw: &'a [u8],
    /// `raw` without its line ending: what the message says.
    pub text: &'a [u8],
    /// False only for a piece of a line that has not ended yet, passed on at once.
    pub complete: bool,
}

/// Whether the session goes on after a [`Splitter::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Every byte was looked at.
    Continue,
    /// The peer sent `quit`: its session ends, and nothing after `quit` was looked at.
    Quit,
}

/// The text that ends a session.
pub const QUIT: &[u8] = b"quit";

/// The longest `raw` of an unfinished line that can still turn out to be `quit`: `quit\r`.
const QUIT_PREFIX_MAX: usize = QUIT.len() + 1;

/// A held buffer larger than this is given back to the allocator once it empties, so a
/// session's memory returns to its idle size after a burst.
pub const IDLE_CAPACITY: usize = 1024;

/// Cuts one session's input into messages. See the module documentation for the rules.
///
/// # Examples
///
/// ```
/// use tcpool::server::protocol::{Flow, LineEnding, Splitter};
///
/// let mut splitter = Splitter::holding(64 * 1024);
/// let mut seen = Vec::new();
/// let flow = splitter.feed(b"hel", &mut |m| seen.push(m.text.to_vec()));
/// assert_eq!(flow, Flow::Continue);
/// assert_eq!(seen, [b"hel".to_vec()]); // seed-style: one read, one message
/// splitter.feed(b"lo\r\nwor", &mut |m| seen.push(m.text.to_vec()));
/// splitter.feed(b"ld\r\nquit\r\nignored\n", &mut |m| seen.push(m.text.to_vec()));
/// assert_eq!(seen, [b"hel".to_vec(), b"lo".to_vec(), b"world".to_vec()]);
/// assert_eq!(splitter.line_ending(), LineEnding::CrLf);
/// ```
#[derive(Debug, Clone)]
pub struct Splitter {
    ending: LineEnding,
    hold: bool,
    max_line: usize,
    /// Holding: the unfinished message. Passing: the raw start of the unfinished line while
    /// it can still be `quit` (at most [`QUIT_PREFIX_MAX`] bytes).
    held: Vec<u8>,
    /// Passing: the unfinished line is already longer than any `quit`.
    long_line: bool,
}

impl Splitter {
    /// A splitter that holds partial lines until they end (chat, manual, custom handlers).
    /// `max_line` bounds what is held (at least 1).
    pub fn holding(max_line: usize) -> Self {
        Splitter {
            ending: LineEnding::None,
            hold: true,
            max_line: max_line.max(1),
            held: Vec::new(),
            long_line: false,
        }
    }

    /// A splitter that passes every byte on at once (echo).
    pub fn passing() -> Self {
        Splitter {
            hold: false,
            ..Splitter::holding(usize::MAX)
        }
    }

    /// The session's line ending so far: [`LineEnding::None`] until its first `\n`.
    pub fn line_ending(&self) -> LineEnding {
        self.ending
    }

    /// The line ending the session will have once `data` is fed: the caller can publish it
    /// before any reply to `data` is composed.
    pub fn ending_after(&self, data: &[u8]) -> LineEnding {
        if self.ending != LineEnding::None {
            return self.ending;
        }
        match memchr(b'\n', data) {
            None => LineEnding::None,
            Some(0) if self.held.last() == Some(&b'\r') => LineEnding::CrLf,
            Some(i) if i > 0 && data[i - 1] == b'\r' => LineEnding::CrLf,
            Some(_) => LineEnding::Lf,
        }
    }

    /// Bytes held for an unfinished message.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Capacity of the held buffer (its memory, for tests of the idle size).
    pub fn held_capacity(&self) -> usize {
        self.held.capacity()
    }

    /// Cuts one read's `data` into messages, handing each to `sink` in order.
    /// Returns [`Flow::Quit`] at a `quit` message, which is not handed to `sink`.
    pub fn feed(&mut self, data: &[u8], sink: &mut dyn FnMut(Message<'_>)) -> Flow {
        self.ending = self.ending_after(data);
        if self.ending == LineEnding::None {
            return self.feed_seed(data, sink);
        }
        if self.hold {
            self.feed_lines_holding(data, sink)
        } else {
            self.feed_lines_passing(data, sink)
        }
    }

    /// End of input: a held partial message becomes a message.
    pub fn finish(&mut self, sink: &mut dyn FnMut(Message<'_>)) -> Flow {
        if self.held.is_empty() || !self.hold {
            self.held.clear();
            return Flow::Continue;
        }
        let held = std::mem::take(&mut self.held);
        let flow = emit_whole(&held, sink);
        self.held = held;
        self.release_held();
        flow
    }

    fn feed_seed(&mut self, data: &[u8], sink: &mut dyn FnMut(Message<'_>)) -> Flow {
        if data.is_empty() {
            return Flow::Continue;
        }
        if !self.hold {
            return emit_whole(data, sink);
        }
        // Holding: never hand on half a UTF-8 character; keep its bytes for the next read.
        if self.held.is_empty() {
            let keep = incomplete_utf8_tail(data);
            let flow = if keep < data.len() {
                emit_whole(&data[..data.len() - keep], sink)
            } else {
                Flow::Continue
            };
            self.held.extend_from_slice(&data[data.len() - keep..]);
            return flow;
        }
        self.held.extend_from_slice(data);
        let keep = incomplete_utf8_tail(&self.held);
        let mut held = std::mem::take(&mut self.held);
        let flow = if keep < held.len() {
            emit_whole(&held[..held.len() - keep], sink)
        } else {
            Flow::Continue
        };
        held.drain(..held.len() - keep);
        self.held = held;
        flow
    }

    fn feed_lines_holding(&mut self, data: &[u8], sink: &mut dyn FnMut(Message<'_>)) -> Flow {
        let mut rest = data;
        while let Some(i) = memchr(b'\n', rest) {
            let (line, tail) = rest.split_at(i + 1);
            rest = tail;
            let flow = if self.held.is_empty() {
                emit_line_cut(line, self.max_line, sink)
            } else {
                self.held.extend_from_slice(line);
                let held = std::mem::take(&mut self.held);
                let flow = emit_line_cut(&held, self.max_line, sink);
                self.held = held;
                self.release_held();
                flow
            };
            if flow == Flow::Quit {
                return Flow::Quit;
            }
        }
        // One byte of slack: a held line may end in the `\r` of its ending. The held bytes
        // never go more than one byte past that before they are cut, so a partial line costs
        // about `max_line`, however large the reads that bring it.
        let limit = self.max_line.saturating_add(1);
        while !rest.is_empty() {
            let take = rest.len().min(limit + 1 - self.held.len().min(limit));
            self.reserve_held(take);
            self.held.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            while self.held.len() > limit {
                let cut = char_boundary_at_or_before(&self.held, self.max_line);
                let held = std::mem::take(&mut self.held);
                let flow = emit_whole(&held[..cut], sink);
                self.held = held;
                self.held.drain(..cut);
                if flow == Flow::Quit {
                    return Flow::Quit;
                }
            }
        }
        Flow::Continue
    }

    /// Makes room for `more` held bytes: doubling, as `Vec` does, but never past the most a
    /// held line can reach.
    fn reserve_held(&mut self, more: usize) {
        let needed = self.held.len() + more;
        if needed > self.held.capacity() {
            let cap = self.max_line.saturating_add(2);
            let target = needed.max(self.held.capacity() * 2).min(cap).max(needed);
            self.held.reserve_exact(target - self.held.len());
        }
    }

    fn feed_lines_passing(&mut self, data: &[u8], sink: &mut dyn FnMut(Message<'_>)) -> Flow {
        let mut rest = data;
        while let Some(i) = memchr(b'\n', rest) {
            let (line, tail) = rest.split_at(i + 1);
            rest = tail;
            let started = !self.held.is_empty() || self.long_line;
            if started && !self.long_line && self.held.len() + line.len() <= QUIT_PREFIX_MAX + 1 {
                // The line began in an earlier read: it is `quit` if its whole raw form is.
                let mut whole = [0u8; QUIT_PREFIX_MAX + 1];
                let n = self.held.len();
                whole[..n].copy_from_slice(&self.held);
                whole[n..n + line.len()].copy_from_slice(line);
                if line_text(&whole[..n + line.len()]) == QUIT {
                    self.end_line();
                    return Flow::Quit;
                }
            }
            let text = line_text(line);
            self.end_line();
            if !started && text == QUIT {
                return Flow::Quit;
            }
            sink(Message {
                raw: line,
                text,
                complete: true,
            });
        }
        if !rest.is_empty() {
            if !self.long_line && self.held.len() + rest.len() <= QUIT_PREFIX_MAX {
                self.held.extend_from_slice(rest);
            } else {
                self.held.clear();
                self.long_line = true;
            }
            sink(Message {
                raw: rest,
                text: rest,
                complete: false,
            });
        }
        Flow::Continue
    }

    fn end_line(&mut self) {
        self.held.clear();
        self.long_line = false;
    }

    fn release_held(&mut self) {
        self.held.clear();
        if self.held.capacity() > IDLE_CAPACITY {
            self.held = Vec::new();
        }
    }
}

/// `line` (ending in `\n`) without its ending: `\n`, or `\r\n` when the `\r` is there.
fn line_text(line: &[u8]) -> &[u8] {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    body.strip_suffix(b"\r").unwrap_or(body)
}

fn emit_line(line: &[u8], sink: &mut dyn FnMut(Message<'_>)) -> Flow {
    let text = line_text(line);
    if text == QUIT {
        return Flow::Quit;
    }
    sink(Message {
        raw: line,
        text,
        complete: true,
    });
    Flow::Continue
}

/// A complete line, cut into messages of at most `max_line` bytes of text; only the last
/// carries the ending. The cuts depend on the line alone, not on how it arrived.
fn emit_line_cut(mut line: &[u8], max_line: usize, sink: &mut dyn FnMut(Message<'_>)) -> Flow {
    while line_text(line).len() > max_line {
        let cut = char_boundary_at_or_before(line, max_line);
        if emit_whole(&line[..cut], sink) == Flow::Quit {
            return Flow::Quit;
        }
        line = &line[cut..];
    }
    emit_line(line, sink)
}

/// A message with no line ending: a seed-style read, a cut over-long line, held end of input.
fn emit_whole(data: &[u8], sink: &mut dyn FnMut(Message<'_>)) -> Flow {
    if data == QUIT {
        return Flow::Quit;
    }
    sink(Message {
        raw: data,
        text: data,
        complete: true,
    });
    Flow::Continue
}

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
fn push_invalid(out: &mut String, bytes: &[u8]) {
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

fn push_escaped(out: &mut String, c: char) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(splitter: &mut Splitter, reads: &[&[u8]]) -> (Vec<(Vec<u8>, bool)>, Flow) {
        let mut out = Vec::new();
        let mut flow = Flow::Continue;
        for read in reads {
            flow = splitter.feed(read, &mut |m| out.push((m.text.to_vec(), m.complete)));
            if flow == Flow::Quit {
                break;
            }
        }
        (out, flow)
    }

    fn texts(splitter: &mut Splitter, reads: &[&[u8]]) -> Vec<Vec<u8>> {
        messages(splitter, reads)
            .0
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    #[test]
    fn seed_style_read_is_one_message() {
        let mut s = Splitter::holding(64);
        assert_eq!(texts(&mut s, &[b"hello", b"world"]), [b"hello", b"world"]);
        assert_eq!(s.line_ending(), LineEnding::None);
    }

    #[test]
    fn first_newline_decides_the_line_ending() {
        let mut s = Splitter::holding(64);
        texts(&mut s, &[b"a\r\nb\n"]);
        assert_eq!(s.line_ending(), LineEnding::CrLf);
        let mut s = Splitter::holding(64);
        texts(&mut s, &[b"a\nb\r\n"]);
        assert_eq!(s.line_ending(), LineEnding::Lf);
    }

    #[test]
    fn a_seed_read_is_delivered_before_the_first_newline_arrives() {
        // "ab\r" is a whole seed-style message; the `\n` that follows starts an empty line.
        let mut s = Splitter::holding(64);
        assert_eq!(
            texts(&mut s, &[b"ab\r", b"\ncd\n"]),
            [&b"ab\r"[..], b"", b"cd"]
        );
        assert_eq!(s.line_ending(), LineEnding::Lf);
    }

    #[test]
    fn lone_cr_is_data_and_empty_line_is_a_message() {
        let mut s = Splitter::holding(64);
        assert_eq!(
            texts(&mut s, &[b"a\rb\n\n\r\n"]),
            [b"a\rb".to_vec(), b"".to_vec(), b"".to_vec()]
        );
    }

    #[test]
    fn holding_waits_for_the_end_of_a_line() {
        let mut s = Splitter::holding(64);
        assert_eq!(
            texts(&mut s, &[b"one\ntw", b"o", b"\nthr"]),
            [b"one", b"two"]
        );
        assert_eq!(s.held_len(), 3);
        let mut out = Vec::new();
        s.finish(&mut |m| out.push(m.text.to_vec()));
        assert_eq!(out, [b"thr"]);
    }

    #[test]
    fn overlong_line_is_cut_the_same_however_it_arrives() {
        // The leading `\n` makes the session line-based before the interesting part.
        let input = b"\nabcd\r\nabcde\nabcd\rx\n";
        let whole = texts(&mut Splitter::holding(4), &[input]);
        assert_eq!(whole, [&b""[..], b"abcd", b"abcd", b"e", b"abcd", b"\rx"]);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(texts(&mut Splitter::holding(4), &bytes), whole);
    }

    #[test]
    fn overlong_line_is_cut_at_max_line() {
        let mut s = Splitter::holding(4);
        assert_eq!(
            texts(&mut s, &[b"x\nabcdefghij\n"]),
            [
                b"x".to_vec(),
                b"abcd".to_vec(),
                b"efgh".to_vec(),
                b"ij".to_vec()
            ]
        );
    }

    #[test]
    fn overlong_line_is_not_cut_inside_a_character() {
        let mut s = Splitter::holding(4);
        let text = "\nab你好".as_bytes();
        let mut got = texts(&mut s, &[text]);
        s.finish(&mut |m| got.push(m.text.to_vec()));
        assert_eq!(
            got,
            [
                "".as_bytes(),
                "ab".as_bytes(),
                "你".as_bytes(),
                "好".as_bytes()
            ]
        );
    }

    #[test]
    fn seed_style_holding_keeps_a_split_character_whole() {
        let bytes = "你好".as_bytes();
        let mut s = Splitter::holding(64);
        let got = texts(&mut s, &[&bytes[..2], &bytes[2..4], &bytes[4..]]);
        assert_eq!(got, ["你".as_bytes(), "好".as_bytes()]);
    }

    #[test]
    fn passing_never_holds_bytes_back() {
        let mut s = Splitter::passing();
        let (got, _) = messages(&mut s, &[b"x\nab", b"cd\nef"]);
        assert_eq!(
            got,
            [
                (b"x".to_vec(), true),
                (b"ab".to_vec(), false),
                (b"cd".to_vec(), true),
                (b"ef".to_vec(), false)
            ]
        );
    }

    #[test]
    fn quit_stops_the_splitter() {
        for reads in [
            &[&b"quit"[..]][..],
            &[b"a\nquit\nb\n"],
            &[b"a\r\nquit\r\nb"],
            &[b"a\nqu", b"it\n"],
            &[b"a\nquit\r", b"\n"],
        ] {
            for mut s in [Splitter::holding(64), Splitter::passing()] {
                let (_, flow) = messages(&mut s, reads);
                assert_eq!(flow, Flow::Quit, "{reads:?} hold={}", s.hold);
            }
        }
    }

    #[test]
    fn quit_is_exact() {
        for read in [&b"Quit"[..], b" quit", b"quit ", b"\nquit\t\n", b"quitquit"] {
            let mut s = Splitter::holding(64);
            let (got, flow) = messages(&mut s, &[read]);
            assert_eq!(flow, Flow::Continue, "{read:?}");
            assert!(!got.is_empty());
        }
        // `quit\n` from a seed-style session is a line `quit`.
        let mut s = Splitter::passing();
        assert_eq!(messages(&mut s, &[b"quit\n"]).1, Flow::Quit);
        // A long line that starts with `quit` is not `quit`.
        let mut s = Splitter::passing();
        assert_eq!(messages(&mut s, &[b"\nquitt", b"\n"]).1, Flow::Continue);
    }

    #[test]
    fn held_memory_stays_near_max_line_whatever_the_reads() {
        let mut s = Splitter::holding(1000);
        let big = vec![b'x'; 64 * 1024];
        let mut pieces = 0;
        s.feed(b"\n", &mut |_| {});
        for _ in 0..4 {
            s.feed(&big, &mut |m| {
                assert!(m.text.len() <= 1000);
                pieces += 1;
            });
            assert!(s.held_len() <= 1001);
            assert!(s.held_capacity() <= 1002, "{}", s.held_capacity());
        }
        assert_eq!(pieces, 4 * 64 * 1024 / 1000);
    }

    #[test]
    fn held_buffer_shrinks_after_a_burst() {
        let mut s = Splitter::holding(1 << 20);
        let big = vec![b'x'; 100_000];
        texts(&mut s, &[b"\n", &big]);
        assert!(s.held_capacity() >= 100_000);
        texts(&mut s, &[b"\n"]);
        assert_eq!(s.held_len(), 0);
        assert!(s.held_capacity() <= IDLE_CAPACITY);
    }

    #[test]
    fn incomplete_tail_counts_only_real_prefixes() {
        let ni = "你".as_bytes();
        assert_eq!(incomplete_utf8_tail(&ni[..1]), 1);
        assert_eq!(incomplete_utf8_tail(&ni[..2]), 2);
        assert_eq!(incomplete_utf8_tail(ni), 0);
        assert_eq!(incomplete_utf8_tail(b"abc\xff"), 0);
        assert_eq!(incomplete_utf8_tail(b"\x80\x80"), 0);
        assert_eq!(incomplete_utf8_tail(b""), 0);
    }

    #[test]
    fn escape_neutralises_terminal_control() {
        assert_eq!(escape(b"\x1b[2J\x07\x00"), r"\x1b[2J\x07\x00");
        assert_eq!(escape(b"a\xff\xfeb\xe4\xbd"), r"a\xff\xfeb\xe4\xbd");
        assert_eq!(escape("a\u{202e}b\u{85}".as_bytes()), r"a\u{202e}b\x85");
    }

    #[test]
    fn utf8_carry_joins_split_characters() {
        let bytes = "é你".as_bytes();
        let mut carry = Utf8Carry::default();
        assert_eq!(carry.push(&bytes[..1]), b"");
        assert_eq!(carry.push(&bytes[1..3]), "é".as_bytes());
        assert_eq!(carry.push(&bytes[3..]), "你".as_bytes());
        assert!(carry.finish().is_empty());
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// Input built from pieces that matter to the splitter: line endings, `quit` lines,
        /// multi-byte characters, arbitrary bytes.
        fn input() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(b"\n".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"\r".to_vec()),
                Just(b"quit".to_vec()),
                Just(b"quit\n".to_vec()),
                Just(b"quit\r\n".to_vec()),
                Just("你好".as_bytes().to_vec()),
                vec(any::<u8>(), 0..12),
                vec(b'a'..=b'z', 0..80),
            ];
            vec(piece, 0..40).prop_map(|pieces| pieces.concat())
        }

        /// Cuts `data` at the given points (taken modulo its length) into reads.
        fn split_at<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
            points.sort_unstable();
            let mut reads = Vec::new();
            let mut start = 0;
            for p in points {
                reads.push(&data[start..p]);
                start = p;
            }
            reads.push(&data[start..]);
            reads
        }

        /// Every message a holding splitter hands on (with end of input), and whether it quit.
        fn held_messages(max_line: usize, reads: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
            let mut s = Splitter::holding(max_line);
            let mut out = Vec::new();
            for read in reads {
                if s.feed(read, &mut |m| out.push(m.text.to_vec())) == Flow::Quit {
                    return (out, true);
                }
            }
            let quit = s.finish(&mut |m| out.push(m.text.to_vec())) == Flow::Quit;
            (out, quit)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn a_line_based_session_gets_the_same_messages_however_reads_split(
                body in input(),
                cuts in vec(any::<usize>(), 0..24),
                max_line in 1usize..48,
            ) {
                // The leading newline makes the session line-based before the body.
                let data = [b"\n".as_slice(), &body].concat();
                let whole = held_messages(max_line, &[&data]);
                let split = held_messages(max_line, &split_at(&data, &cuts));
                prop_assert_eq!(whole, split);
            }

            #[test]
            fn echo_returns_the_input_unchanged_up_to_quit(
                body in input(),
                cuts in vec(any::<usize>(), 0..24),
            ) {
                let data = [b"\n".as_slice(), &body].concat();
                let run = |reads: &[&[u8]]| {
                    let mut s = Splitter::passing();
                    let mut echoed = Vec::new();
                    for read in reads {
                        if s.feed(read, &mut |m| echoed.extend_from_slice(m.raw)) == Flow::Quit {
                            return (echoed, true);
                        }
                    }
                    (echoed, false)
                };
                let (whole, whole_quit) = run(&[&data]);
                let (split, split_quit) = run(&split_at(&data, &cuts));
                // `quit` is recognised however the reads split.
                prop_assert_eq!(whole_quit, split_quit);
                prop_assert!(data.starts_with(&split));
                if whole_quit {
                    // Split reads may have passed on the start of the `quit` line already.
                    prop_assert!(split.len() >= whole.len());
                    prop_assert!(split.len() - whole.len() <= QUIT_PREFIX_MAX);
                } else {
                    prop_assert_eq!(&split, &data);
                    prop_assert_eq!(&whole, &data);
                }
            }

            #[test]
            fn nothing_panics_and_held_memory_stays_bounded(
                reads in vec(vec(any::<u8>(), 0..300), 0..20),
                max_line in 1usize..64,
                hold in any::<bool>(),
            ) {
                let mut s = if hold { Splitter::holding(max_line) } else { Splitter::passing() };
                for read in &reads {
                    let mut seen = 0usize;
                    if s.feed(read, &mut |m| seen += m.raw.len()) == Flow::Quit {
                        break;
                    }
                    let bound = if hold { max_line + 1 } else { QUIT_PREFIX_MAX };
                    prop_assert!(s.held_len() <= bound.max(3));
                }
                s.finish(&mut |_| {});
            }

            #[test]
            fn escape_matches_escaping_every_character_one_by_one(
                pieces in vec(prop_oneof![
                    vec(any::<u8>(), 0..20),
                    vec(b' '..=b'~', 0..40),
                    Just("\u{85}\u{9f}\u{a0}\u{202e}\u{2066}\u{2028}\u{2029}\u{2030}".as_bytes().to_vec()),
                    Just("你好, €\t\x1b\x7f".as_bytes().to_vec()),
                ], 0..12),
            ) {
                let bytes = pieces.concat();
                let mut expected = String::new();
                for chunk in bytes.utf8_chunks() {
                    chunk.valid().chars().for_each(|c| push_escaped(&mut expected, c));
                    push_invalid(&mut expected, chunk.invalid());
                }
                prop_assert_eq!(escape(&bytes), expected);
            }

            #[test]
            fn escape_never_lets_a_control_character_through(bytes in vec(any::<u8>(), 0..200)) {
                let shown = escape(&bytes);
                prop_assert!(!shown.chars().any(|c| c.is_control()));
            }
        }
    }
}
