//! `tcpool talk`: the seed's client, made comfortable.
//!
//! Full duplex: a reader thread prints every message from the server the moment it arrives
//! (`server>> text`, with control characters escaped) and reports it as an [`Event`], while the
//! caller sends lines. Messages are cut as the server cuts them (see
//! [`protocol`](crate::server::protocol)): one read is one message until the server sends a
//! `\n`, lines after that. `quit` from the server ends the conversation.
//!
//! [`run_piped`] is the scripted mode: it sends each input line and, unless told not to, waits
//! for a reply before the next, as the seed's client does. The interactive mode (line editing,
//! prompt) lives in the binary and uses [`spawn_reader`] the same way.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, RecvTimeoutError};

use crate::server::protocol::{Flow, LineEnding, Splitter, escape};

pub mod udp;

/// A connection to talk over: a TCP socket, or the plaintext end of a TLS link
/// ([`crate::tls::pump`]).
pub trait Stream: Read + Write + Send + Sized + 'static {
    /// A second handle on the same connection, for the reader thread.
    ///
    /// # Errors
    ///
    /// As the socket's `try_clone`.
    fn try_clone(&self) -> io::Result<Self>;
    /// Ends one or both directions.
    ///
    /// # Errors
    ///
    /// As the socket's `shutdown`.
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    /// How long a read may block.
    ///
    /// # Errors
    ///
    /// As the socket's `set_read_timeout`.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

macro_rules! stream_of_socket {
    ($socket:ty) => {
        impl Stream for $socket {
            fn try_clone(&self) -> io::Result<Self> {
                <$socket>::try_clone(self)
            }
            fn shutdown(&self, how: Shutdown) -> io::Result<()> {
                <$socket>::shutdown(self, how)
            }
            fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
                <$socket>::set_read_timeout(self, timeout)
            }
        }
    };
}
stream_of_socket!(TcpStream);
stream_of_socket!(UnixStream);

/// What the reader thread saw.
#[derive(Debug)]
pub enum Event {
    /// A message (already printed).
    Message(Vec<u8>),
    /// The server sent `quit`.
    Quit,
    /// The server closed the connection.
    Closed,
    /// The server answered `busy` (it is full) and closed: the whole conversation was that one
    /// line, given here without its line ending.
    Busy(String),
    /// Reading failed.
    Failed(io::Error),
}

/// How the scripted mode behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// What ends each line sent: nothing (the seed's way), `\n` or `\r\n`.
    pub eol: LineEnding,
    /// Wait for a reply to each line before sending the next.
    pub wait: bool,
    /// How long to wait for a reply, and for what is still due at the end of input.
    pub reply_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            eol: LineEnding::None,
            wait: true,
            reply_timeout: Duration::from_secs(5),
        }
    }
}

/// How a conversation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// We sent `quit`.
    QuitSent,
    /// The server sent `quit`.
    QuitReceived,
    /// The server closed the connection.
    ServerClosed,
    /// The server was full: it answered with this `busy` line and closed.
    Busy(String),
    /// Our input ended (and what was due has arrived or timed out).
    InputEnded,
}

/// The longest line the reader holds before showing it anyway.
const MAX_LINE: usize = 64 * 1024;

/// With `--no-wait`, how long the server must stay quiet after the input ended before the
/// talk ends (at most the reply timeout): replies cannot be counted, since a server that
/// cannot tell the lines apart answers several in one message.
const QUIET: Duration = Duration::from_millis(500);

/// What a full server's `busy` line starts with.
const BUSY_PREFIX: &[u8] = b"busy: ";

/// How long a first message that reads `busy: ...` waits for the server to close, which
/// makes it a full server's answer.
const BUSY_WAIT: Duration = Duration::from_secs(1);

/// Starts the reader thread on a clone of `stream`: each message is printed with `print` as
/// `server>> text` and reported on the returned channel, followed by one final [`Event`]
/// (`Quit`, `Closed` or `Failed`).
///
/// # Errors
///
/// When the stream cannot be cloned or the thread cannot start.
pub fn spawn_reader<S: Stream>(
    stream: &S,
    print: impl Fn(&str) + Send + 'static,
) -> io::Result<Receiver<Event>> {
    let mut stream = stream.try_clone()?;
    let (tx, rx) = channel::unbounded();
    thread::Builder::new()
        .name("tcpool-talk-reader".into())
        .spawn(move || {
            let mut splitter = Splitter::holding(MAX_LINE);
            let mut buf = vec![0u8; 64 * 1024];
            // A first message that is a `busy` line is held back (shown, not yet reported)
            // for up to BUSY_WAIT: if the server closes then, it was full, and the message and
            // `Busy` are reported together, so nobody sees the one without the other.
            let mut held: Option<Vec<u8>> = None;
            let mut messages = 0usize;
            let end = loop {
                let n = match stream.read(&mut buf) {
                    Ok(0) => {
                        let mut last = None;
                        let flow = splitter.finish(&mut |m| last = Some(m.text.to_vec()));
                        if let Some(text) = last {
                            print(&format!("server>> {}", escape(&text)));
                            release(&tx, &mut held, &stream);
                            let _ = tx.send(Event::Message(text));
                        }
                        break match (flow, held.take()) {
                            (Flow::Quit, _) => Event::Quit,
                            (_, Some(busy)) => {
                                let line = String::from_utf8_lossy(&busy).into_owned();
                                let _ = tx.send(Event::Message(busy));
                                Event::Busy(line)
                            }
                            _ => Event::Closed,
                        };
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e)
                        if held.is_some()
                            && matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                    {
                        // Still open after the wait: an ordinary message after all.
                        release(&tx, &mut held, &stream);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                        break match held.take() {
                            Some(busy) => {
                                let line = String::from_utf8_lossy(&busy).into_owned();
                                let _ = tx.send(Event::Message(busy));
                                Event::Busy(line)
                            }
                            None => Event::Closed,
                        };
                    }
                    Err(e) => break Event::Failed(e),
                };
                release(&tx, &mut held, &stream);
                let flow = splitter.feed(&buf[..n], &mut |m| {
                    print(&format!("server>> {}", escape(m.text)));
                    messages += 1;
                    if messages == 1 && m.text.starts_with(BUSY_PREFIX) {
                        let _ = stream.set_read_timeout(Some(BUSY_WAIT));
                        held = Some(m.text.to_vec());
                    } else {
                        release(&tx, &mut held, &stream);
                        let _ = tx.send(Event::Message(m.text.to_vec()));
                    }
                });
                if flow == Flow::Quit {
                    release(&tx, &mut held, &stream);
                    break Event::Quit;
                }
            };
            let _ = tx.send(end);
        })?;
    Ok(rx)
}

/// Reports a held-back `busy` message as an ordinary one, and stops waiting for the close.
fn release<S: Stream>(tx: &channel::Sender<Event>, held: &mut Option<Vec<u8>>, stream: &S) {
    if let Some(text) = held.take() {
        let _ = stream.set_read_timeout(None);
        let _ = tx.send(Event::Message(text));
    }
}

/// Sends `line` with the chosen ending, in one write.
///
/// # Errors
///
/// The write's error.
pub fn send_line(stream: &mut impl Write, line: &str, eol: LineEnding) -> io::Result<()> {
    stream.write_all(&eol.terminate(line.as_bytes()))
}

/// The scripted conversation: sends each line of `input` on `stream`, printing replies with
/// `print` and warnings with `warn`, until `quit` is sent or received, the server closes, or
/// the input ends (then it waits, up to the reply timeout, for what is still due). Input is
/// read on a thread of its own, so a server that ends the talk is noticed at once, even
/// while no input comes.
///
/// # Errors
///
/// When reading the input fails, or sending fails for another reason than the server having
/// closed.
pub fn run_piped<S: Stream>(
    mut stream: S,
    input: impl BufRead + Send + 'static,
    options: Options,
    print: impl Fn(&str) + Send + 'static,
    warn: impl Fn(&str),
) -> io::Result<End> {
    let events = spawn_reader(&stream, print)?;
    let lines = spawn_line_reader(input)?;
    let mut due = 0usize;
    let mut sent = 0usize;
    loop {
        let line = crossbeam::select! {
            recv(events) -> event => {
                match event.map(|e| settle(e, &mut due, &warn)) {
                    Ok(None) => continue,
                    Ok(Some(end)) => return Ok(end),
                    Err(_) => return Ok(End::ServerClosed),
                }
            }
            recv(lines) -> line => match line {
                Ok(Ok(line)) => line,
                Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                    warn("input line is not UTF-8: skipped");
                    continue;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => break, // end of input
            },
        };
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if let Err(e) = send_line(&mut stream, line, options.eol) {
            return closed_or(e, &events, &warn);
        }
        if line == "quit" {
            let _ = stream.shutdown(Shutdown::Write);
            return Ok(End::QuitSent);
        }
        due += 1;
        sent += 1;
        if options.wait
            && let Some(end) = wait_for_replies(&events, &mut due, 1, options.reply_timeout, &warn)
        {
            return Ok(end);
        }
    }
    // End of input: wait for what is still due, then close.
    let still_due = due;
    if still_due > 0 {
        let end = if options.wait {
            wait_for_replies(&events, &mut due, still_due, options.reply_timeout, &warn)
        } else {
            wait_for_quiet(&events, still_due < sent, options.reply_timeout, &warn)
        };
        if let Some(end) = end {
            return Ok(end);
        }
    }
    // A full server's answer paid the last reply off; its `Busy` came with it.
    let busy = events.try_iter().find_map(|event| match event {
        Event::Busy(line) => Some(line),
        _ => None,
    });
    if let Some(line) = busy {
        return Ok(End::Busy(line));
    }
    let _ = stream.shutdown(Shutdown::Both);
    Ok(End::InputEnded)
}

/// Reads `input` line by line on its own thread. The thread may stay blocked on input after
/// the talk has ended; it holds nothing.
fn spawn_line_reader(
    input: impl BufRead + Send + 'static,
) -> io::Result<Receiver<io::Result<String>>> {
    let (tx, rx) = channel::bounded(1);
    thread::Builder::new()
        .name("tcpool-talk-input".into())
        .spawn(move || {
            for line in input.lines() {
                if tx.send(line).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}

/// Waits until `want` messages arrived, each within `timeout` of the previous one.
fn wait_for_replies(
    events: &Receiver<Event>,
    due: &mut usize,
    want: usize,
    timeout: Duration,
    warn: &impl Fn(&str),
) -> Option<End> {
    let target = due.saturating_sub(want);
    let mut deadline = Instant::now() + timeout;
    while *due > target {
        match events.recv_deadline(deadline) {
            Ok(event) => {
                let before = *due;
                if let Some(end) = settle(event, due, warn) {
                    return Some(end);
                }
                if *due < before {
                    deadline = Instant::now() + timeout;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                warn(&format!(
                    "no reply within {}; going on",
                    crate::units::human_duration(timeout)
                ));
                *due = target;
                return None;
            }
            Err(RecvTimeoutError::Disconnected) => return Some(End::ServerClosed),
        }
    }
    None
}

/// With `--no-wait`, at the end of input: waits until the server has been quiet for
/// [`QUIET`] (or the reply timeout, if shorter); until the first reply of the talk (`heard`),
/// up to the reply timeout. Warns only when nothing at all came back.
fn wait_for_quiet(
    events: &Receiver<Event>,
    mut heard: bool,
    timeout: Duration,
    warn: &impl Fn(&str),
) -> Option<End> {
    let quiet = QUIET.min(timeout);
    let mut deadline = Instant::now() + if heard { quiet } else { timeout };
    loop {
        match events.recv_deadline(deadline) {
            Ok(event) => {
                let mut due = 1;
                if let Some(end) = settle(event, &mut due, warn) {
                    return Some(end);
                }
                heard = true;
                deadline = Instant::now() + quiet;
            }
            Err(RecvTimeoutError::Timeout) => {
                if !heard {
                    warn(&format!(
                        "no reply within {}",
                        crate::units::human_duration(timeout)
                    ));
                }
                return None;
            }
            Err(RecvTimeoutError::Disconnected) => return Some(End::ServerClosed),
        }
    }
}

/// Accounts for one event: a message pays off one due reply; the others end the talk.
fn settle(event: Event, due: &mut usize, warn: &impl Fn(&str)) -> Option<End> {
    match event {
        Event::Message(_) => {
            *due = due.saturating_sub(1);
            None
        }
        Event::Quit => Some(End::QuitReceived),
        Event::Closed => Some(End::ServerClosed),
        Event::Busy(line) => Some(End::Busy(line)),
        Event::Failed(e) => {
            warn(&format!("connection failed: {e}"));
            Some(End::ServerClosed)
        }
    }
}

/// A send failed: if the reader saw the server go, that is how the talk ended.
fn closed_or(error: io::Error, events: &Receiver<Event>, warn: &impl Fn(&str)) -> io::Result<End> {
    let deadline = Instant::now() + Duration::from_millis(500);
    while let Ok(event) = events.recv_deadline(deadline) {
        let mut due = 0;
        if let Some(end) = settle(event, &mut due, warn) {
            return Ok(end);
        }
    }
    Err(error)
}

#[cfg(test)]
mod tests;
