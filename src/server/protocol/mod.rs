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

mod splitter;
#[cfg(test)]
mod tests;
mod text;

use std::fmt;

pub use splitter::{IDLE_CAPACITY, Splitter};
pub use text::{Utf8Carry, char_boundary_at_or_before, escape, incomplete_utf8_tail};

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

    /// `quit` in this ending, as a static buffer.
    pub fn quit(self) -> &'static [u8] {
        match self {
            LineEnding::None => b"quit",
            LineEnding::Lf => b"quit\n",
            LineEnding::CrLf => b"quit\r\n",
        }
    }

    /// The ending a peer whose first input is `data` speaks in: that of its first line, or
    /// none (seed-style) when `data` holds no `\n`.
    pub fn of_input(data: &[u8]) -> LineEnding {
        match memchr::memchr(b'\n', data) {
            None => LineEnding::None,
            Some(i) if i > 0 && data[i - 1] == b'\r' => LineEnding::CrLf,
            Some(_) => LineEnding::Lf,
        }
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
