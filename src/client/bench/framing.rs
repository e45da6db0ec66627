//! Requests and how their replies end: the echo payloads, the [`Template`]s written on the
//! command line (escapes and the `{conn}` and `{seq}` placeholders), the [`Reply`] rules, and
//! how a byte that does not belong is shown in an error.

use std::fmt;
use std::sync::Arc;

use crate::server::protocol::LineEnding;

/// Distinct echo payloads per run; connection `i` sends payload `i % PAYLOAD_VARIANTS`.
pub(super) const PAYLOAD_VARIANTS: usize = 16;

/// Payload bytes: printable, without `q` so that no stretch of the stream can spell `quit`,
/// and without `\r` or `\n`, which belong to the line ending.
pub(super) const ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnoprstuvwxyz0123456789-_.:";

/// At most this many bytes of a request or reply are shown in an error.
const SHOWN: usize = 60;

/// What each connection sends and how a reply is recognised.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Protocol {
    /// The verifying echo client: each connection sends a fixed printable payload of
    /// [`Options::size`](super::Options::size) bytes and expects it back byte for byte.
    #[default]
    Echo,
    /// Any request/response protocol: `send` is rendered for every message, and `reply` says
    /// where its answer ends.
    Request {
        /// The request (`--send` or `--send-file`).
        send: Template,
        /// Where the reply ends (`--expect`, `--until` or `--reply-size`).
        reply: Reply,
    },
}

/// How the reply to one request ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The reply is exactly these bytes (placeholders filled in); anything else is a
    /// `mismatch`.
    Exact(Template),
    /// The reply ends at the first occurrence of these bytes; its content is not checked.
    Until(Vec<u8>),
    /// The reply is exactly this many bytes; its content is not checked.
    Size(usize),
}

/// Sent once on each connection right after it connects (`--first-message`, such as `AUTH`
/// or `SELECT`); its reply runs up to `until` and is neither checked, timed nor counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Greeting {
    /// The message; `{conn}` is the connection's index, `{seq}` is 0.
    pub message: Template,
    /// Where its reply ends (`\n` by default, `--first-until`).
    pub until: Vec<u8>,
}

/// Bytes with placeholders: `{conn}` (the connection's index, from 0) and `{seq}` (the
/// message's number on its connection, from 0).
///
/// # Examples
///
/// ```
/// use tcpool::client::bench::Template;
///
/// let t = Template::parse(r"SET key:{conn}:{seq} v\r\n")?;
/// let mut out = Vec::new();
/// t.render(3, 7, &mut out);
/// assert_eq!(out, b"SET key:3:7 v\r\n");
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Bytes(Vec<u8>),
    Conn,
    Seq,
}

impl Template {
    /// Parses C-style escapes (`\r`, `\n`, `\t`, `\0`, `\\`, `\xHH`) and the placeholders
    /// `{conn}` and `{seq}`; any other `{` is itself.
    ///
    /// # Errors
    ///
    /// An unknown escape or a `\x` without two hex digits, saying where.
    pub fn parse(text: &str) -> Result<Template, String> {
        let bytes = text.as_bytes();
        let mut pieces = Vec::new();
        let mut lit = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let rest = &bytes[i..];
            let placeholder = if rest.starts_with(b"{conn}") {
                Some((Piece::Conn, 6))
            } else if rest.starts_with(b"{seq}") {
                Some((Piece::Seq, 5))
            } else {
                None
            };
            if let Some((piece, len)) = placeholder {
                if !lit.is_empty() {
                    pieces.push(Piece::Bytes(std::mem::take(&mut lit)));
                }
                pieces.push(piece);
                i += len;
                continue;
            }
            if bytes[i] != b'\\' {
                lit.push(bytes[i]);
                i += 1;
                continue;
            }
            let (byte, len) = match bytes.get(i + 1) {
                Some(b'r') => (b'\r', 2),
                Some(b'n') => (b'\n', 2),
                Some(b't') => (b'\t', 2),
                Some(b'0') => (0, 2),
                Some(b'\\') => (b'\\', 2),
                Some(b'x') => {
                    let hex = bytes
                        .get(i + 2..i + 4)
                        .and_then(|h| std::str::from_utf8(h).ok());
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(byte) => (byte, 4),
                        None => return Err(format!("\\x at byte {i} needs two hex digits")),
                    }
                }
                Some(&other) => {
                    return Err(format!(
                        "unknown escape \\{} at byte {i} (known: \\r \\n \\t \\0 \\\\ \\xHH)",
                        other as char
                    ));
                }
                None => return Err("a lone \\ at the end (write \\\\ for a backslash)".into()),
            };
            lit.push(byte);
            i += len;
        }
        if !lit.is_empty() {
            pieces.push(Piece::Bytes(lit));
        }
        Ok(Template { pieces })
    }

    /// These bytes exactly, with no escapes or placeholders (`--send-file`).
    pub fn raw(bytes: Vec<u8>) -> Template {
        Template {
            pieces: vec![Piece::Bytes(bytes)],
        }
    }

    /// Appends the bytes for message `seq` of connection `conn` to `out`.
    pub fn render(&self, conn: usize, seq: u64, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match piece {
                Piece::Bytes(b) => out.extend_from_slice(b),
                Piece::Conn => out.extend_from_slice(conn.to_string().as_bytes()),
                Piece::Seq => out.extend_from_slice(seq.to_string().as_bytes()),
            }
        }
    }

    /// True when the template renders to no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.pieces
            .iter()
            .all(|p| matches!(p, Piece::Bytes(b) if b.is_empty()))
    }
}

impl fmt::Display for Template {
    /// The template as it could be written again: bytes escaped, placeholders as written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for piece in &self.pieces {
            match piece {
                Piece::Bytes(b) => f.write_str(&escape(b))?,
                Piece::Conn => f.write_str("{conn}")?,
                Piece::Seq => f.write_str("{seq}")?,
            }
        }
        Ok(())
    }
}

/// Finds a delimiter in a stream that arrives in pieces: a Knuth-Morris-Pratt matcher whose
/// state (how much of the delimiter the bytes so far end with) survives between reads.
#[derive(Debug, Clone)]
pub(super) struct Delimiter {
    bytes: Vec<u8>,
    /// `fallback[i]`: the longest proper prefix of `bytes[..=i]` that is also its suffix.
    fallback: Vec<usize>,
}

impl Delimiter {
    pub(super) fn new(bytes: &[u8]) -> Self {
        let mut fallback = vec![0; bytes.len()];
        let mut k = 0;
        for i in 1..bytes.len() {
            while k > 0 && bytes[i] != bytes[k] {
                k = fallback[k - 1];
            }
            if bytes[i] == bytes[k] {
                k += 1;
            }
            fallback[i] = k;
        }
        Delimiter {
            bytes: bytes.to_vec(),
            fallback,
        }
    }

    /// Feeds `chunk` from matcher state `*matched`; returns how many bytes of `chunk` end
    /// with the first complete match (the state is then back at 0), or `None` when the whole
    /// chunk was consumed without one.
    pub(super) fn find(&self, chunk: &[u8], matched: &mut usize) -> Option<usize> {
        for (i, &b) in chunk.iter().enumerate() {
            let mut k = *matched;
            while k > 0 && b != self.bytes[k] {
                k = self.fallback[k - 1];
            }
            if b == self.bytes[k] {
                k += 1;
            }
            if k == self.bytes.len() {
                *matched = 0;
                return Some(i + 1);
            }
            *matched = k;
        }
        None
    }
}

/// One echo message: printable bytes (a different pseudo-random sequence per `variant`, so a
/// byte flipped anywhere is caught), then the line ending, `size` bytes in all.
pub(super) fn payload(variant: usize, size: usize, line_ending: LineEnding) -> Arc<[u8]> {
    let ending = line_ending.as_bytes();
    let mut out = Vec::with_capacity(size);
    // xorshift64: cheap, deterministic, never zero from a non-zero seed.
    let mut x = (variant as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for _ in 0..size - ending.len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(ALPHABET[(x % ALPHABET.len() as u64) as usize]);
    }
    out.extend_from_slice(ending);
    out.into()
}

/// Bytes as they would be written in a `--send` argument: printable ASCII as is, the rest as
/// `\r`, `\n`, `\t`, `\\` or `\xHH`.
pub(super) fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// What an error shows of some bytes: up to the first line ending (included) and at most
/// [`SHOWN`] bytes, escaped, with `...` when something was left out.
pub(super) fn shown(bytes: &[u8]) -> String {
    let line = bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    let cut = line.min(SHOWN);
    let mut s = escape(&bytes[..cut]);
    if cut < bytes.len() {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_its_size_ending_and_no_quit() {
        for ending in [LineEnding::None, LineEnding::Lf, LineEnding::CrLf] {
            for size in [2, 3, 64, 1000] {
                let p = payload(3, size, ending);
                assert_eq!(p.len(), size);
                assert!(p.ends_with(ending.as_bytes()));
                let body = &p[..size - ending.as_bytes().len()];
                assert!(!body.iter().any(|b| matches!(b, b'q' | b'\r' | b'\n')));
                assert!(body.iter().all(|b| b.is_ascii_graphic()));
            }
        }
        assert_ne!(
            payload(0, 64, LineEnding::Lf),
            payload(1, 64, LineEnding::Lf)
        );
    }

    #[test]
    fn templates_read_escapes_and_placeholders() {
        let t = Template::parse(r"a\r\n\t\\\x00\xFF{conn}-{seq}{x}").unwrap();
        let mut out = Vec::new();
        t.render(12, 345, &mut out);
        assert_eq!(out, b"a\r\n\t\\\x00\xff12-345{x}");
        assert_eq!(t.to_string(), r"a\r\n\t\\\x00\xff{conn}-{seq}{x}");
        for bad in [r"\q", r"\x4", r"\xZZ", "end\\"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        assert!(Template::parse("").unwrap().is_empty());
        assert!(!Template::parse("{seq}").unwrap().is_empty());
        let mut raw = Vec::new();
        Template::raw(b"{conn}\\n".to_vec()).render(1, 1, &mut raw);
        assert_eq!(raw, b"{conn}\\n");
    }

    #[test]
    fn delimiter_is_found_across_reads() {
        let d = Delimiter::new(b"\r\n");
        let mut m = 0;
        assert_eq!(d.find(b"+PONG\r", &mut m), None);
        assert_eq!(m, 1);
        assert_eq!(d.find(b"\n+PO", &mut m), Some(1));
        assert_eq!(m, 0);
        // Overlapping prefixes: "aab" inside "aaab".
        let d = Delimiter::new(b"aab");
        let mut m = 0;
        assert_eq!(d.find(b"aa", &mut m), None);
        assert_eq!(d.find(b"ab", &mut m), Some(2));
        let d = Delimiter::new(b"END\r\n");
        let mut m = 0;
        assert_eq!(d.find(b"VALUE k 0 1\r\nv\r\nEN", &mut m), None);
        assert_eq!(d.find(b"D\r\nx", &mut m), Some(3));
    }

    #[test]
    fn shown_bytes_are_escaped_and_cut_to_a_line() {
        assert_eq!(
            shown(b"HTTP/1.0 400\r\nServer: x\r\n"),
            r"HTTP/1.0 400\r\n..."
        );
        assert_eq!(shown(b"\xff\x00ok"), r"\xff\x00ok");
        let long = vec![b'a'; 100];
        assert_eq!(shown(&long), format!("{}...", "a".repeat(SHOWN)));
    }
}
