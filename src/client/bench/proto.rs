//! Replies framed by what they say: incremental parsers for RESP (Redis), the memcached text
//! protocol and HTTP/1.1, which find where each reply ends and what kind of reply it is
//! ([`Class`]: ok, error or miss).
//!
//! Each parser is a state machine fed the connection's bytes as they come, split anywhere: it
//! keeps only the current line (at most [`MAX_LINE`] bytes) and counters, and skips bodies
//! without holding them. A declared length or element count beyond the reply limit, a line
//! longer than [`MAX_LINE`], nesting deeper than [`MAX_DEPTH`] or bytes that do not belong to
//! the protocol are a protocol error, which ends the connection: nothing a server declares is
//! ever allocated.
//!
//! Longer than the other files: one incremental parser for three protocols, which share the
//! line reader, the limits and the skipping of bodies; each protocol is one arm of the parser's
//! `feed`. Split it by protocol when one of them grows.

use std::ops::RangeInclusive;

use super::bytes::shown;

/// The longest line (a RESP header, a memcached line, an HTTP status line or header).
pub(super) const MAX_LINE: usize = 64 * 1024;

/// RESP aggregates nested deeper than this are a protocol error.
pub(super) const MAX_DEPTH: usize = 128;

/// HTTP: at most this many header lines in one response (trailers included).
const MAX_HEADERS: usize = 256;

/// At most this many bytes of a reply are kept to show and to classify.
const HEAD: usize = 64;

/// What a reply was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A reply that did what was asked.
    Ok,
    /// A reply that says the data was not there: a RESP null, memcached `END` without a
    /// `VALUE`.
    Miss,
    /// An error reply: RESP `-ERR ...` or `!`, memcached `ERROR`, `CLIENT_ERROR` or
    /// `SERVER_ERROR`, an HTTP status outside the ok range, or a line starting with the
    /// error prefix.
    Error,
}

/// The protocols a reply can be framed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// RESP2 and RESP3 (`--reply resp`).
    Resp,
    /// The memcached text protocol (`--reply memcache`).
    Memcache,
    /// HTTP/1.x responses (`--reply http1`); statuses in `ok` are ok, the others errors.
    Http1 {
        /// The statuses that count as ok (`--ok-status`, 200-299 by default).
        ok: RangeInclusive<u16>,
    },
}

impl std::fmt::Display for Framed {
    /// As written after `--reply` (with `--ok-status` when it is not 2xx).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Framed::Resp => f.write_str("resp"),
            Framed::Memcache => f.write_str("memcache"),
            Framed::Http1 { ok } if *ok == (200..=299) => f.write_str("http1"),
            Framed::Http1 { ok } => write!(f, "http1 ok {}-{}", ok.start(), ok.end()),
        }
    }
}

/// One complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Done {
    /// Bytes of the chunk that belonged to it.
    pub(super) used: usize,
    pub(super) class: Class,
    /// An error's kind: the RESP error's first word (`ERR`, `NOAUTH`), memcached's error word,
    /// the HTTP status.
    pub(super) prefix: Option<String>,
    /// HTTP: the server will close the connection after this response.
    pub(super) close: bool,
    /// An error reply's first bytes, escaped and cut to a line.
    pub(super) shown: Option<String>,
}

/// What feeding a chunk gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// The whole chunk belongs to a reply that is not complete yet.
    Need,
    /// A reply ended inside the chunk.
    Done(Done),
}

/// An incremental parser for one connection's replies.
#[derive(Debug, Clone)]
pub(super) struct Parser {
    framed: Framed,
    /// The reply limit: declared lengths (and the whole reply) above this are an error.
    max: u64,
    /// The current line, without its end yet.
    line: Vec<u8>,
    /// Bytes of body still to skip, then `crlf` line-end bytes to check.
    skip: u64,
    crlf: u8,
    /// Bytes of the current reply so far.
    total: u64,
    /// The first bytes of the current reply.
    head: Vec<u8>,
    /// The current reply's class once known.
    class: Option<Class>,
    /// RESP: open aggregates, (elements left, is an attribute).
    stack: Vec<(u64, bool)>,
    /// memcached: values seen in this reply, and whether lines are read until `END`.
    values: u64,
    until_end: bool,
    /// HTTP.
    http: Http,
}

#[derive(Debug, Clone, Default)]
struct Http {
    phase: Phase,
    status: u16,
    close: bool,
    length: Option<u64>,
    chunked: bool,
    headers: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
enum Phase {
    #[default]
    Status,
    Headers,
    Body,
    ChunkSize,
    ChunkData,
    Trailers,
}

/// A protocol error: the reply cannot be framed; `shown` is what came.
pub(super) struct Bad {
    pub(super) message: String,
    pub(super) shown: String,
}

impl Parser {
    pub(super) fn new(framed: Framed, max: u64) -> Self {
        Parser {
            framed,
            max,
            line: Vec::new(),
            skip: 0,
            crlf: 0,
            total: 0,
            head: Vec::new(),
            class: None,
            stack: Vec::new(),
            values: 0,
            until_end: false,
            http: Http::default(),
        }
    }

    /// Forgets a reply in progress (a new connection).
    pub(super) fn reset(&mut self) {
        *self = Parser::new(self.framed.clone(), self.max);
    }

    /// True between replies.
    #[cfg(test)]
    pub(super) fn idle(&self) -> bool {
        self.total == 0
    }

    /// The current reply's first bytes, escaped and cut to a line.
    pub(super) fn shown(&self) -> String {
        shown(&self.head)
    }

    /// Reads `chunk`, the next bytes; `head_request`: the reply answers an HTTP `HEAD`.
    pub(super) fn feed(&mut self, chunk: &[u8], head_request: bool) -> Result<Step, Bad> {
        let mut i = 0;
        let result = loop {
            if self.skip > 0 || self.crlf > 0 {
                match self.skip_body(&chunk[i..]) {
                    Ok(n) => i += n,
                    Err(message) => break Err(message),
                }
                if self.skip > 0 || self.crlf > 0 {
                    break Ok(None);
                }
                let after = match self.framed {
                    Framed::Resp => self.resp_element_done(),
                    Framed::Memcache => self.memcache_after_value(),
                    Framed::Http1 { .. } => self.http_body_done(),
                };
                if after.is_some() {
                    break Ok(after);
                }
                continue;
            }
            let rest = &chunk[i..];
            let (piece, complete) = match memchr::memchr(b'\n', rest) {
                Some(at) => (&rest[..=at], true),
                None => (rest, false),
            };
            if self.head.len() < HEAD {
                let take = piece.len().min(HEAD - self.head.len());
                self.head.extend_from_slice(&piece[..take]);
            }
            if self.line.len() + piece.len() > MAX_LINE {
                break Err(format!("a line longer than {MAX_LINE} bytes"));
            }
            i += piece.len();
            self.total += piece.len() as u64;
            if !complete {
                self.line.extend_from_slice(piece);
                break Ok(None);
            }
            // A line whole in this chunk is read where it is; a line that came in pieces, from
            // the pieces put together.
            let step = if self.line.is_empty() {
                self.read_line(piece, head_request)
            } else {
                self.line.extend_from_slice(piece);
                let line = std::mem::take(&mut self.line);
                let step = self.read_line(&line, head_request);
                self.line = line;
                self.line.clear();
                step
            };
            match step {
                Ok(Some(done)) => break Ok(Some(done)),
                Ok(None) => {}
                Err(message) => break Err(message),
            }
            if i == chunk.len() {
                break Ok(None);
            }
        };
        if self.total > self.max {
            return Err(self.bad(format!(
                "a reply longer than the limit of {} bytes",
                self.max
            )));
        }
        match result {
            Ok(None) => Ok(Step::Need),
            Ok(Some((class, close))) => {
                let prefix = (class == Class::Error).then(|| self.prefix());
                let shown = (class == Class::Error).then(|| self.shown());
                self.reset_reply();
                Ok(Step::Done(Done {
                    used: i,
                    class,
                    prefix,
                    close,
                    shown,
                }))
            }
            Err(message) => Err(self.bad(message)),
        }
    }

    /// One whole line, by the protocol.
    fn read_line(
        &mut self,
        line: &[u8],
        head_request: bool,
    ) -> Result<Option<(Class, bool)>, String> {
        match &self.framed {
            Framed::Resp => self.resp_line(line),
            Framed::Memcache => self.memcache_line(line),
            Framed::Http1 { ok } => {
                let ok = ok.clone();
                self.http_line(line, &ok, head_request)
            }
        }
    }

    fn bad(&self, message: String) -> Bad {
        Bad {
            message: format!("protocol error: {message}"),
            shown: self.shown(),
        }
    }

    fn reset_reply(&mut self) {
        self.line.clear();
        self.total = 0;
        self.head.clear();
        self.class = None;
        self.stack.clear();
        self.values = 0;
        self.until_end = false;
        self.http = Http::default();
    }

    /// Skips body bytes, then checks the `\r\n` after them; returns the bytes used.
    fn skip_body(&mut self, chunk: &[u8]) -> Result<usize, String> {
        let n = usize::try_from(self.skip)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        if self.head.len() < HEAD {
            let take = n.min(HEAD - self.head.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        self.skip -= n as u64;
        self.total += n as u64;
        let mut used = n;
        while self.skip == 0 && self.crlf > 0 && used < chunk.len() {
            let want = if self.crlf == 2 { b'\r' } else { b'\n' };
            if chunk[used] != want {
                return Err("a body not followed by \\r\\n (a wrong length?)".into());
            }
            self.crlf -= 1;
            used += 1;
            self.total += 1;
        }
        Ok(used)
    }

    /// A body of `len` bytes and its `\r\n` follow.
    fn expect_body(&mut self, len: u64) -> Result<(), String> {
        if len > self.max {
            return Err(format!(
                "a declared length of {len} bytes, above the reply limit of {}",
                self.max
            ));
        }
        self.skip = len;
        self.crlf = 2;
        Ok(())
    }

    /// An error's kind: its first word (RESP, memcached) or the HTTP status.
    fn prefix(&self) -> String {
        match self.framed {
            Framed::Http1 { .. } => self.http.status.to_string(),
            Framed::Resp => {
                let mut head = &self.head[1.min(self.head.len())..];
                if self.head.first() == Some(&b'!')
                    && let Some(at) = memchr::memchr(b'\n', head)
                {
                    head = &head[at + 1..];
                }
                first_word(head)
            }
            Framed::Memcache => first_word(&self.head),
        }
    }

    // RESP.

    /// One RESP header line; `Some` when the reply is complete.
    fn resp_line(&mut self, line: &[u8]) -> Result<Option<(Class, bool)>, String> {
        let Some(body) = line.strip_suffix(b"\r\n") else {
            return Err("a line that does not end with \\r\\n".into());
        };
        let Some((&kind, rest)) = body.split_first() else {
            return Err("an empty line".into());
        };
        let top = self.stack.iter().all(|&(_, attr)| attr) && kind != b'|';
        let mut class = Class::Ok;
        let mut element = true;
        match kind {
            b'+' | b':' | b',' | b'(' | b'#' => {}
            b'_' => class = Class::Miss,
            b'-' => class = Class::Error,
            b'$' | b'!' | b'=' => {
                let len = number(rest)?;
                if kind == b'!' {
                    class = Class::Error;
                }
                if len == -1 && kind == b'$' {
                    class = Class::Miss;
                } else if len < 0 {
                    return Err(format!("a length of {len}"));
                } else {
                    self.expect_body(len as u64)?;
                    element = false;
                }
            }
            b'*' | b'%' | b'~' | b'>' | b'|' => {
                let n = number(rest)?;
                if n == -1 && kind == b'*' {
                    class = Class::Miss;
                } else if n < 0 {
                    return Err(format!("an element count of {n}"));
                } else if n as u64 > self.max / 3 {
                    return Err(format!(
                        "{n} elements, more than a reply of {} bytes holds",
                        self.max
                    ));
                } else if n > 0 {
                    if self.stack.len() >= MAX_DEPTH {
                        return Err(format!("aggregates nested deeper than {MAX_DEPTH}"));
                    }
                    let pairs = matches!(kind, b'%' | b'|');
                    self.stack
                        .push((if pairs { n as u64 * 2 } else { n as u64 }, kind == b'|'));
                    element = false;
                } else if kind == b'|' {
                    element = false;
                }
            }
            other => return Err(format!("a reply starting with {:?}", other as char)),
        }
        if top && self.class.is_none() {
            self.class = Some(class);
        }
        Ok(if element {
            self.resp_element_done()
        } else {
            None
        })
    }

    /// An element ended: counts it in the aggregates it closes; `Some` at the reply's end.
    fn resp_element_done(&mut self) -> Option<(Class, bool)> {
        loop {
            match self.stack.last_mut() {
                None => return Some((self.class.unwrap_or(Class::Ok), false)),
                Some((left, attr)) => {
                    *left -= 1;
                    if *left > 0 {
                        return None;
                    }
                    let attr = *attr;
                    self.stack.pop();
                    // An attribute is not an element: the value it describes follows.
                    if attr {
                        return None;
                    }
                }
            }
        }
    }

    // memcached.

    fn memcache_line(&mut self, line: &[u8]) -> Result<Option<(Class, bool)>, String> {
        let body = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        let word = body.split(|&b| b == b' ').next().unwrap_or(b"");
        if self.until_end {
            return match word {
                b"VALUE" => self.memcache_value(body, 3).map(|()| None),
                b"STAT" => Ok(None),
                b"END" if body == b"END" => Ok(Some((
                    if self.values > 0 || self.class == Some(Class::Ok) {
                        Class::Ok
                    } else {
                        Class::Miss
                    },
                    false,
                ))),
                _ => Err("a line other than VALUE, STAT or END in a multi-line reply".into()),
            };
        }
        let class = match word {
            b"VALUE" => {
                self.until_end = true;
                return self.memcache_value(body, 3).map(|()| None);
            }
            b"STAT" => {
                self.until_end = true;
                self.class = Some(Class::Ok);
                return Ok(None);
            }
            b"VA" => {
                // Meta get with a value: `VA <size> <flags>*`, then the data.
                self.memcache_value(body, 1)?;
                self.values = 1;
                self.class = Some(Class::Ok);
                return Ok(None);
            }
            b"END" | b"EN" | b"NF" => Class::Miss,
            b"ERROR" | b"CLIENT_ERROR" | b"SERVER_ERROR" => Class::Error,
            b"STORED" | b"NOT_STORED" | b"EXISTS" | b"NOT_FOUND" | b"DELETED" | b"TOUCHED"
            | b"OK" | b"RESET" | b"VERSION" | b"HD" | b"NS" | b"EX" | b"MN" => Class::Ok,
            w if !w.is_empty() && w.iter().all(u8::is_ascii_digit) => Class::Ok,
            _ => return Err("not a memcached reply".into()),
        };
        Ok(Some((class, false)))
    }

    /// `VALUE key flags bytes [cas]` (the length is field 3) or `VA bytes ...` (field 1).
    fn memcache_value(&mut self, body: &[u8], field: usize) -> Result<(), String> {
        let len = body
            .split(|&b| b == b' ')
            .nth(field)
            .and_then(|f| std::str::from_utf8(f).ok())
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or("a VALUE line without a length")?;
        self.values += 1;
        self.expect_body(len)
    }

    /// After a VA value the reply is complete; after a VALUE lines go on until END.
    fn memcache_after_value(&mut self) -> Option<(Class, bool)> {
        (!self.until_end).then_some((Class::Ok, false))
    }

    // HTTP/1.x.

    fn http_line(
        &mut self,
        line: &[u8],
        ok: &RangeInclusive<u16>,
        head_request: bool,
    ) -> Result<Option<(Class, bool)>, String> {
        let body = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        match self.http.phase {
            Phase::Status => {
                let mut parts = body.splitn(3, |&b| b == b' ');
                let version = parts.next().unwrap_or(b"");
                let status = parts
                    .next()
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .filter(|s| s.len() == 3)
                    .and_then(|s| s.parse::<u16>().ok());
                let (Some(status), true) = (status, version.starts_with(b"HTTP/1.")) else {
                    return Err("not an HTTP/1 status line".into());
                };
                self.http = Http {
                    phase: Phase::Headers,
                    status,
                    // HTTP/1.0 closes unless told to keep the connection alive.
                    close: version == b"HTTP/1.0",
                    ..Http::default()
                };
                Ok(None)
            }
            Phase::Headers | Phase::Trailers => {
                if !body.is_empty() {
                    self.http.headers += 1;
                    if self.http.headers > MAX_HEADERS {
                        return Err(format!("more than {MAX_HEADERS} header lines"));
                    }
                    if self.http.phase == Phase::Headers {
                        self.http_header(body)?;
                    }
                    return Ok(None);
                }
                if self.http.phase == Phase::Trailers {
                    return Ok(Some(self.http_done(ok)));
                }
                let status = self.http.status;
                if status == 101 {
                    return Err("101 Switching Protocols: not HTTP/1 any more".into());
                }
                if (100..200).contains(&status) {
                    // An interim response: the final one follows.
                    self.http.phase = Phase::Status;
                    return Ok(None);
                }
                if head_request || status == 204 || status == 304 {
                    return Ok(Some(self.http_done(ok)));
                }
                if self.http.chunked {
                    self.http.phase = Phase::ChunkSize;
                    return Ok(None);
                }
                match self.http.length {
                    Some(0) => Ok(Some(self.http_done(ok))),
                    Some(len) => {
                        self.http.phase = Phase::Body;
                        if len > self.max {
                            return Err(format!(
                                "a Content-Length of {len}, above the reply limit of {}",
                                self.max
                            ));
                        }
                        self.skip = len;
                        self.crlf = 0;
                        Ok(None)
                    }
                    None => Err("a body without Content-Length or chunked encoding".into()),
                }
            }
            Phase::ChunkSize => {
                let size = body.split(|&b| b == b';').next().unwrap_or(b"");
                let size = std::str::from_utf8(size.trim_ascii())
                    .ok()
                    .filter(|s| !s.is_empty() && s.len() <= 16)
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .ok_or("a chunk size that is not a hex number")?;
                if size == 0 {
                    self.http.phase = Phase::Trailers;
                    return Ok(None);
                }
                self.http.phase = Phase::ChunkData;
                self.expect_body(size)?;
                Ok(None)
            }
            // Bodies are skipped, never read as lines; should one be, it is not a reply.
            Phase::Body | Phase::ChunkData => Err("a line inside a body".into()),
        }
    }

    fn http_header(&mut self, line: &[u8]) -> Result<(), String> {
        let Some(colon) = memchr::memchr(b':', line) else {
            return Err("a header line without a colon".into());
        };
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let len = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("a Content-Length that is not a number")?;
            if self.http.length.is_some_and(|l| l != len) {
                return Err("two different Content-Lengths".into());
            }
            self.http.length = Some(len);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or(b"")
                .trim_ascii();
            self.http.chunked = last.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    self.http.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.http.close = false;
                }
            }
        }
        Ok(())
    }

    /// After a Content-Length body or a chunk's data.
    fn http_body_done(&mut self) -> Option<(Class, bool)> {
        match self.http.phase {
            Phase::ChunkData => {
                self.http.phase = Phase::ChunkSize;
                None
            }
            _ => match self.framed.clone() {
                Framed::Http1 { ok } => Some(self.http_done(&ok)),
                _ => None,
            },
        }
    }

    fn http_done(&self, ok: &RangeInclusive<u16>) -> (Class, bool) {
        let class = if ok.contains(&self.http.status) {
            Class::Ok
        } else {
            Class::Error
        };
        (class, self.http.close)
    }
}

/// A RESP length or count: an optional `-` and digits, at most 18 of them.
fn number(text: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(text)
        .ok()
        .filter(|t| t.len() <= 19)
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| format!("{:?} is not a length", String::from_utf8_lossy(text)))
}

/// The first word of a line: up to a space or the line's end, at most 32 bytes, escaped.
fn first_word(line: &[u8]) -> String {
    let end = line
        .iter()
        .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(line.len())
        .min(32);
    super::bytes::escape(&line[..end])
}

/// `--until` with `--error-prefix`: the kind of an error reply is its first word.
pub(super) fn until_prefix(head: &[u8]) -> String {
    first_word(head)
}

#[cfg(test)]
mod tests;
