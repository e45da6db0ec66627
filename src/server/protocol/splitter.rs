//! [`Splitter`]: one session's input cut into messages, by the rules in the module above.

use memchr::memchr;

use super::text::{char_boundary_at_or_before, incomplete_utf8_tail};
use super::{Flow, LineEnding, Message, QUIT};

/// The longest `raw` of an unfinished line that can still turn out to be `quit`: `quit\r`.
pub(super) const QUIT_PREFIX_MAX: usize = QUIT.len() + 1;

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
    pub(super) hold: bool,
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
