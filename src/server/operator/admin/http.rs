//! The admin endpoint's HTTP/1.1: one bounded request per connection, then one answer and
//! the close.
//!
//! Every read and write is bounded in bytes ([`HEAD_LIMIT`], [`BODY_LIMIT`](super::BODY_LIMIT))
//! and in time (one deadline for the whole request, one for the whole answer), so a client
//! that sends slowly, never finishes or never reads holds its connection's thread only until
//! the deadline. The connection is always closed after the answer (`Connection: close`): no
//! byte after a request, or after a body refused as too large or malformed, is ever read as
//! another request.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The largest request head (request line and headers) read; a longer one is 431.
pub const HEAD_LIMIT: usize = 8 * 1024;

/// How long a client has to send its whole request, and to read its whole answer.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// A request read whole: method, target and body.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) body: Vec<u8>,
}

/// Why no request could be read: an answer to give (status and line), or nothing to answer.
#[derive(Debug)]
pub(super) enum Refusal {
    Answer(u16, String),
    Silent,
}

/// Reads one request from `stream` within [`DEADLINE`], its body up to `body_limit` bytes.
pub(super) fn read_request(stream: &mut TcpStream, body_limit: usize) -> Result<Request, Refusal> {
    let mut reader = Timed {
        stream,
        until: Instant::now() + DEADLINE,
        buf: Vec::with_capacity(1024),
        pos: 0,
    };
    let head = reader.head()?;
    let head = std::str::from_utf8(&head)
        .ok()
        .filter(|h| h.is_ascii())
        .ok_or_else(|| bad("the request head is not ASCII"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("a malformed request line"));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(bad("a malformed request line"));
    }
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad("a malformed header line"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(value)?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("two different Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") || chunked {
                return Err(Refusal::Answer(
                    501,
                    format!("unsupported Transfer-Encoding: {value}"),
                ));
            }
            chunked = true;
        }
    }
    if chunked && length.is_some() {
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    let too_big = || {
        Refusal::Answer(
            413,
            format!("body too large: the limit is {body_limit} bytes"),
        )
    };
    let body = if chunked {
        reader.chunked(body_limit, too_big)?
    } else {
        let n = length.unwrap_or(0);
        if n > body_limit {
            return Err(too_big());
        }
        reader.exactly(n)?
    };
    Ok(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        body,
    })
}

fn bad(why: &str) -> Refusal {
    Refusal::Answer(400, format!("bad request: {why}"))
}

/// A Content-Length: decimal digits only, no sign, no overflow.
fn parse_length(value: &str) -> Result<usize, Refusal> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("an invalid Content-Length"));
    }
    // Longer than any usize: too large rather than invalid.
    Ok(value.parse::<usize>().unwrap_or(usize::MAX))
}

/// Reads from the stream with a deadline for the whole request.
struct Timed<'a> {
    stream: &'a mut TcpStream,
    until: Instant,
    buf: Vec<u8>,
    pos: usize,
}

impl Timed<'_> {
    /// Reads more bytes into the buffer, at most `max`; an error once the deadline passed.
    fn fill(&mut self, max: usize) -> Result<(), Refusal> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Refusal::Answer(408, "request timeout".into()));
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|_| Refusal::Silent)?;
        let start = self.buf.len();
        self.buf.resize(start + max, 0);
        let got = self.stream.read(&mut self.buf[start..]);
        let n = match got {
            Ok(0) => {
                self.buf.truncate(start);
                return Err(Refusal::Silent);
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => 0,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                self.buf.truncate(start);
                return Err(Refusal::Answer(408, "request timeout".into()));
            }
            Err(_) => {
                self.buf.truncate(start);
                return Err(Refusal::Silent);
            }
        };
        self.buf.truncate(start + n);
        Ok(())
    }

    /// The request head up to its blank line (exclusive), at most [`HEAD_LIMIT`] bytes.
    fn head(&mut self) -> Result<Vec<u8>, Refusal> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = self.buf[..end].to_vec();
                self.pos = end + 4;
                return Ok(head);
            }
            if self.buf.len() >= HEAD_LIMIT {
                return Err(Refusal::Answer(
                    431,
                    format!("request head too large: the limit is {HEAD_LIMIT} bytes"),
                ));
            }
            self.fill(HEAD_LIMIT - self.buf.len())?;
        }
    }

    /// Exactly `n` more bytes (the caller bounds `n`).
    fn exactly(&mut self, n: usize) -> Result<Vec<u8>, Refusal> {
        while self.buf.len() - self.pos < n {
            let want = n - (self.buf.len() - self.pos);
            self.fill(want.min(16 * 1024))?;
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    /// One CRLF-ended line, at most 256 bytes (a chunk size or a trailer).
    fn line(&mut self) -> Result<String, Refusal> {
        loop {
            let rest = &self.buf[self.pos..];
            if let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&rest[..end]).into_owned();
                self.pos += end + 2;
                return Ok(line);
            }
            if rest.len() >= 256 {
                return Err(bad("a chunk line too long"));
            }
            self.fill(256)?;
        }
    }

    /// A chunked body, decoded, up to `limit` bytes.
    fn chunked(&mut self, limit: usize, too_big: impl Fn() -> Refusal) -> Result<Vec<u8>, Refusal> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            if size.is_empty() || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("an invalid chunk size"));
            }
            let size = usize::from_str_radix(size, 16).unwrap_or(usize::MAX);
            if size == 0 {
                // Trailers, up to the blank line.
                for _ in 0..32 {
                    if self.line()?.is_empty() {
                        return Ok(body);
                    }
                }
                return Err(bad("too many trailers"));
            }
            if size > limit - body.len() {
                return Err(too_big());
            }
            body.extend(self.exactly(size)?);
            if !self.line()?.is_empty() {
                return Err(bad("a chunk not ended by CRLF"));
            }
        }
    }
}

/// Writes a whole answer (always `Connection: close`) within [`DEADLINE`]; `with_body` is
/// false for a HEAD request.
pub(super) fn respond(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    with_body: bool,
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = out.into_bytes();
    if with_body {
        bytes.extend_from_slice(body);
    }
    let until = Instant::now() + DEADLINE;
    let mut sent = 0;
    while sent < bytes.len() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "answer not read"));
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(&bytes[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // Let the client read the answer before the close: a close with its unread bytes
    // still queued would reset the connection and could discard the answer. A short,
    // bounded drain of what it still sends, then the close.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let until = Instant::now() + Duration::from_millis(500);
    let mut sink = [0u8; 16 * 1024];
    let mut drained = 0;
    while drained < 1024 * 1024 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}
