//! Requests and how their replies end: the echo payloads, the [`Template`]s written on the
//! command line (escapes, the `{conn}` and `{seq}` placeholders and the key spaces `{key:N}`,
//! `{key:N:zipf=S}` and `{rand:LEN}`), the [`Reply`] rules, and how a byte that does not
//! belong is shown in an error.

use std::fmt;
use std::sync::Arc;

use crate::server::protocol::LineEnding;

use super::bytes::escape;
use super::proto::Framed;

/// Distinct echo payloads per run; connection `i` sends payload `i % PAYLOAD_VARIANTS`.
pub(super) const PAYLOAD_VARIANTS: usize = 16;

/// Payload bytes: printable, without `q` so that no stretch of the stream can spell `quit`,
/// and without `\r` or `\n`, which belong to the line ending.
pub(super) const ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnoprstuvwxyz0123456789-_.:";

/// What each connection sends and how a reply is recognised.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Protocol {
    /// The verifying echo client: each connection sends a fixed printable payload of
    /// [`Options::size`](super::Options::size) bytes and expects it back byte for byte.
    #[default]
    Echo,
    /// Any request/response protocol: one of `send` is rendered for every message (drawn by
    /// weight), and `reply` says where its answer ends.
    Request {
        /// The requests (`--send`, each with its `--weight`, or `--send-file`); at least one.
        send: Vec<Request>,
        /// Where the reply ends (`--expect`, `--until`, `--reply-size` or `--reply`).
        reply: Reply,
    },
}

/// One kind of request in a mix.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// What is sent.
    pub template: Template,
    /// Its share of the messages: `weight / sum of weights` (at least 1).
    pub weight: u32,
}

impl Request {
    /// A request of weight 1.
    pub fn new(template: Template) -> Self {
        Request {
            template,
            weight: 1,
        }
    }
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
    /// The reply is framed by its protocol (`--reply resp`, `memcache`, `http1`), and
    /// classified as ok, error or miss.
    Framed(Framed),
}

/// Sent once on each connection right after it connects (`--first-message`, such as `AUTH`
/// or `SELECT`); its reply is neither timed nor counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Greeting {
    /// The message; `{conn}` is the connection's index, `{seq}` is 0.
    pub message: Template,
    /// Where its reply ends (`--first-until`); `None`: as the reply framing says
    /// ([`Reply::Framed`]; an error reply ends the connection), or at `\n` without one.
    pub until: Option<Vec<u8>>,
    /// The reply must be exactly these bytes (`--first-expect`); anything else ends the
    /// connection as a `first_reply` error.
    pub expect: Option<Vec<u8>>,
}

/// Bytes with placeholders: `{conn}` (the connection's index, from 0), `{seq}` (the
/// message's number on its connection, from 0), `{key:N}` (a number drawn uniformly from
/// 0..N), `{key:N:zipf=S}` (drawn from 0..N with Zipf exponent S: 0 the most often), either
/// with `:pad=W` (zero-padded to W digits, for requests that state their length) and
/// `{rand:LEN}` (LEN random printable bytes). Each placeholder draws on its own, from the
/// connection's [`Draw`].
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
    /// `{key:N}`, or with `zipf` the exponent's bits; zero-padded to `pad` digits.
    Key {
        n: u64,
        zipf: Option<u64>,
        pad: u8,
    },
    Rand(usize),
}

/// The longest `{rand:LEN}`.
pub const MAX_RAND: usize = 1 << 20;

/// A connection's random draws: a small fast generator (xoshiro256**), seeded from the run's
/// seed and the connection's index, so that a run with the same `--seed` draws the same keys
/// in the same order on each connection.
#[derive(Debug, Clone)]
pub struct Draw {
    s: [u64; 4],
}

impl Draw {
    /// The generator of connection `conn` in a run seeded `seed`.
    pub fn new(seed: u64, conn: usize) -> Self {
        let mut x = seed ^ (conn as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut next = || {
            // splitmix64
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Draw {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (`n` at least 1), without modulo bias worth measuring (Lemire's
    /// multiply).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Zipf-distributed in `0..n` with exponent `s` (> 0): rank 1 (drawn as 0) the most often.
    /// Rejection-inversion (Hörmann and Derflinger), constant time whatever `n`.
    pub fn zipf(&mut self, n: u64, s: f64) -> u64 {
        let nf = n as f64;
        let one = (s - 1.0).abs() < 1e-9;
        let t = if one {
            1.0 + nf.ln()
        } else {
            (nf.powf(1.0 - s) - s) / (1.0 - s)
        };
        let inv_cdf = |p: f64| {
            let pt = p * t;
            if pt <= 1.0 {
                pt
            } else if one {
                (pt - 1.0).exp()
            } else {
                (pt * (1.0 - s) + s).powf(1.0 / (1.0 - s))
            }
        };
        loop {
            let inv_b = inv_cdf(self.unit());
            let x = (inv_b + 1.0).floor();
            let mut ratio = x.powf(-s);
            if x > 1.0 {
                ratio *= inv_b.powf(s);
            }
            if self.unit() < ratio {
                return (x as u64).clamp(1, n) - 1;
            }
        }
    }

    /// Picks an index by weight; `total` is the weights' sum.
    pub(super) fn pick(&mut self, weights: &[u32], total: u64) -> usize {
        let mut at = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if at < u64::from(w) {
                return i;
            }
            at -= u64::from(w);
        }
        weights.len() - 1
    }
}

impl Template {
    /// Parses C-style escapes (`\r`, `\n`, `\t`, `\0`, `\\`, `\xHH`) and the placeholders
    /// `{conn}`, `{seq}`, `{key:N}`, `{key:N:zipf=S}` and `{rand:LEN}`; any other `{` is
    /// itself.
    ///
    /// # Errors
    ///
    /// An unknown escape or a `\x` without two hex digits, saying where; a key space of 0
    /// keys, a Zipf exponent that is not a positive number, a `{rand}` of 0 bytes or more than
    /// [`MAX_RAND`].
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
            } else if rest.starts_with(b"{key:") || rest.starts_with(b"{rand:") {
                let end = rest
                    .iter()
                    .position(|&b| b == b'}')
                    .ok_or_else(|| format!("{{ at byte {i} is not closed"))?;
                let inner = std::str::from_utf8(&rest[1..end]).map_err(|e| e.to_string())?;
                Some((
                    placeholder(inner).map_err(|e| format!("{{{inner}}}: {e}"))?,
                    end + 1,
                ))
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

    /// Appends the bytes for message `seq` of connection `conn` to `out`; key spaces draw
    /// from a generator seeded by `conn` and `seq` alone.
    pub fn render(&self, conn: usize, seq: u64, out: &mut Vec<u8>) {
        let mut draw = Draw::new(seq, conn);
        self.render_drawn(conn, seq, &mut draw, out);
    }

    /// Appends the bytes for message `seq` of connection `conn` to `out`, key spaces drawn
    /// from `draw`.
    pub fn render_drawn(&self, conn: usize, seq: u64, draw: &mut Draw, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match piece {
                Piece::Bytes(b) => out.extend_from_slice(b),
                Piece::Conn => number(out, conn as u64),
                Piece::Seq => number(out, seq),
                Piece::Key { n, zipf, pad } => {
                    let key = match zipf {
                        None => draw.below(*n),
                        Some(s) => draw.zipf(*n, f64::from_bits(*s)),
                    };
                    let digits = key.checked_ilog10().unwrap_or(0) as usize + 1;
                    for _ in digits..usize::from(*pad) {
                        out.push(b'0');
                    }
                    number(out, key);
                }
                Piece::Rand(len) => {
                    out.reserve(*len);
                    let mut left = *len;
                    while left > 0 {
                        let mut bits = draw.next_u64();
                        for _ in 0..left.min(8) {
                            out.push(ALPHABET[(bits & 0xff) as usize % ALPHABET.len()]);
                            bits >>= 8;
                        }
                        left -= left.min(8);
                    }
                }
            }
        }
    }

    /// True when the template draws from a key space.
    pub fn draws(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Key { .. } | Piece::Rand(_)))
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
                Piece::Key { n, zipf, pad } => {
                    write!(f, "{{key:{n}")?;
                    if let Some(s) = zipf {
                        write!(f, ":zipf={}", f64::from_bits(*s))?;
                    }
                    if *pad > 0 {
                        write!(f, ":pad={pad}")?;
                    }
                    f.write_str("}")?;
                }
                Piece::Rand(len) => write!(f, "{{rand:{len}}}")?,
            }
        }
        Ok(())
    }
}

/// Appends `n` in decimal, without an allocation.
fn number(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A key space placeholder's inside: `key:N` with options `zipf=S` and `pad=W`, or
/// `rand:LEN`.
fn placeholder(inner: &str) -> Result<Piece, String> {
    let mut parts = inner.split(':');
    match (parts.next(), parts.next()) {
        (Some("key"), Some(n)) => {
            let n: u64 = n
                .parse()
                .map_err(|_| format!("{n:?} is not a number of keys"))?;
            if n == 0 {
                return Err("a key space needs at least 1 key".into());
            }
            let (mut zipf, mut pad) = (None, 0);
            for option in parts {
                if let Some(s) = option.strip_prefix("zipf=") {
                    let s = s
                        .parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 100.0)
                        .ok_or_else(|| format!("{option:?}: zipf=S with S above 0 (0.99)"))?;
                    zipf = Some(s.to_bits());
                } else if let Some(w) = option.strip_prefix("pad=") {
                    pad = w
                        .parse::<u8>()
                        .ok()
                        .filter(|w| *w <= 20)
                        .ok_or_else(|| format!("{option:?}: pad=W with W from 0 to 20"))?;
                } else {
                    return Err(format!("{option:?}: the options are zipf=S and pad=W"));
                }
            }
            Ok(Piece::Key { n, zipf, pad })
        }
        (Some("rand"), Some(len)) if parts.next().is_none() => match len.parse::<usize>() {
            Ok(len) if (1..=MAX_RAND).contains(&len) => Ok(Piece::Rand(len)),
            _ => Err(format!("{len:?}: a length from 1 to {MAX_RAND}")),
        },
        _ => Err("write {key:N}, {key:N:zipf=S}, {key:N:pad=W} or {rand:LEN}".into()),
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

#[cfg(test)]
mod tests;
