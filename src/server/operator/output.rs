//! Operator output that never blocks the server: a [`Printer`] is a bounded queue in front of
//! one writer thread.
//!
//! Workers, the acceptor, the console and the logger all print through a printer. Printing
//! only queues the line; the writer thread does the blocking write to stdout, stderr, the line
//! editor's terminal or a test's sink. While that destination stalls (a pipe nobody reads, a
//! terminal stopped with Ctrl-S), the queue fills and further lines are dropped and counted;
//! once the writer gets through again it prints one note saying how many were lost. Nothing a
//! destination does can hold up a session or the shutdown: the one wait is
//! [`Printer::flush_timeout`], which is bounded.
//!
//! This module knows nothing of sessions or commands; the console and the modes sit above it.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender, TrySendError};

/// Lines a printer queues for its writer before it drops new ones.
pub const QUEUE_LINES: usize = 1024;

/// Bytes a printer queues for its writer before it drops new lines (one line is always
/// taken when the queue is empty).
pub const QUEUE_BYTES: usize = 1024 * 1024;

/// What travels from the printing threads to the writer.
enum Item {
    Line(String),
    /// `n` lines were dropped before the next one: say so.
    Dropped(u64),
    /// Answer once everything queued before has been written.
    Flush(Sender<()>),
}

/// The counts both sides of the queue keep.
#[derive(Debug, Default)]
struct Counts {
    /// Bytes of lines queued and not yet written.
    queued_bytes: AtomicUsize,
    /// Lines dropped since the last note was queued.
    unreported: AtomicU64,
    /// Lines dropped in all.
    dropped: AtomicU64,
}

/// Where operator-facing lines go: stdout by default, above the prompt on a terminal, stderr
/// for logs, or any function (tests capture with one). Cheap to clone; printing never blocks,
/// never fails and never panics.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use tcpool::server::Printer;
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&seen);
/// let printer = Printer::new(move |line| sink.lock().unwrap().push(line.to_owned()));
/// printer.print("* client#1 connected");
/// assert!(printer.flush_timeout(Duration::from_secs(5)));
/// assert_eq!(*seen.lock().unwrap(), ["* client#1 connected"]);
/// ```
#[derive(Clone)]
pub struct Printer {
    /// `None` when the writer thread could not be started: every line is dropped.
    tx: Option<Sender<Item>>,
    counts: Arc<Counts>,
}

impl fmt::Debug for Printer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Printer")
            .field(
                "queued_bytes",
                &self.counts.queued_bytes.load(Ordering::Relaxed),
            )
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Default for Printer {
    fn default() -> Self {
        Printer::stdout()
    }
}

impl Printer {
    /// The process's printer for stdout (one writer thread, shared by every clone); write
    /// errors such as a closed pipe are ignored.
    pub fn stdout() -> Self {
        static STDOUT: OnceLock<Printer> = OnceLock::new();
        STDOUT
            .get_or_init(|| Printer::spawn("tcpool-stdout", |line| write_line(io::stdout(), line)))
            .clone()
    }

    /// The process's printer for stderr, where logs go.
    pub fn stderr() -> Self {
        static STDERR: OnceLock<Printer> = OnceLock::new();
        STDERR
            .get_or_init(|| Printer::spawn("tcpool-stderr", |line| write_line(io::stderr(), line)))
            .clone()
    }

    /// Prints each line with `sink`, on a writer thread of its own that ends when the last
    /// clone of the printer is dropped. `sink` may block: only the writer waits for it.
    pub fn new(sink: impl FnMut(&str) + Send + 'static) -> Self {
        Printer::spawn("tcpool-output", sink)
    }

    fn spawn(name: &str, mut sink: impl FnMut(&str) + Send + 'static) -> Self {
        let (tx, rx) = channel::bounded(QUEUE_LINES);
        let counts = Arc::new(Counts::default());
        let theirs = Arc::clone(&counts);
        let started = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || write_all(&rx, &theirs, &mut sink));
        Printer {
            tx: started.is_ok().then_some(tx),
            counts,
        }
    }

    /// Queues one line (which may contain newlines for a multi-line block) for the writer, or
    /// drops and counts it when the queue is full.
    pub fn print(&self, line: &str) {
        let Some(tx) = &self.tx else {
            self.count_dropped(1);
            return;
        };
        let queued = self.counts.queued_bytes.load(Ordering::Relaxed);
        if queued > 0 && queued.saturating_add(line.len()) > QUEUE_BYTES {
            self.count_dropped(1);
            return;
        }
        let unreported = self.counts.unreported.swap(0, Ordering::Relaxed);
        if unreported > 0 && tx.try_send(Item::Dropped(unreported)).is_err() {
            self.counts
                .unreported
                .fetch_add(unreported, Ordering::Relaxed);
            self.count_dropped(1);
            return;
        }
        // Counted before sending, so the writer never subtracts what was not added yet.
        self.counts
            .queued_bytes
            .fetch_add(line.len(), Ordering::Relaxed);
        match tx.try_send(Item::Line(line.to_owned())) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counts
                    .queued_bytes
                    .fetch_sub(line.len(), Ordering::Relaxed);
                self.count_dropped(1);
            }
        }
    }

    fn count_dropped(&self, n: u64) {
        self.counts.unreported.fetch_add(n, Ordering::Relaxed);
        self.counts.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Lines dropped so far because the destination was stalled.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }

    /// Waits at most `timeout` for every line queued so far to be written. Returns whether
    /// they were.
    pub fn flush_timeout(&self, timeout: Duration) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        let deadline = Instant::now().checked_add(timeout);
        let (ack, done) = channel::bounded(1);
        let sent = match deadline {
            Some(at) => tx.send_deadline(Item::Flush(ack), at).is_ok(),
            None => tx.send(Item::Flush(ack)).is_ok(),
        };
        sent && match deadline {
            Some(at) => done.recv_deadline(at).is_ok(),
            None => done.recv().is_ok(),
        }
    }

    /// A writer that hands each complete line written to it to this printer, for a logger's
    /// output (`env_logger::Target::Pipe`). It never blocks and never fails.
    pub fn line_writer(&self) -> LineWriter {
        LineWriter {
            printer: self.clone(),
            line: Vec::new(),
        }
    }
}

/// The writer thread: writes each line in order until every printer is gone.
fn write_all(rx: &Receiver<Item>, counts: &Counts, sink: &mut dyn FnMut(&str)) {
    for item in rx {
        match item {
            Item::Line(line) => {
                sink(&line);
                counts.queued_bytes.fetch_sub(line.len(), Ordering::Relaxed);
            }
            Item::Dropped(n) => sink(&format!(
                "({n} line(s) of output dropped: the output was not being read)"
            )),
            Item::Flush(ack) => {
                let _ = ack.try_send(());
            }
        }
    }
}

fn write_line(stream: impl Write, line: &str) {
    let mut stream = io::BufWriter::new(stream);
    let _ = writeln!(stream, "{line}").and_then(|()| stream.flush());
}

/// Hands each complete line written to it to a [`Printer`]; made by
/// [`Printer::line_writer`].
#[derive(Debug)]
pub struct LineWriter {
    printer: Printer,
    line: Vec<u8>,
}

/// A partial line longer than this is printed as it is rather than held for its end.
const MAX_HELD: usize = 64 * 1024;

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        let mut start = 0;
        while let Some(end) = self.line[start..].iter().position(|&b| b == b'\n') {
            let text = &self.line[start..start + end];
            self.printer
                .print(String::from_utf8_lossy(text).trim_end_matches('\r'));
            start += end + 1;
        }
        self.line.drain(..start);
        if self.line.len() > MAX_HELD {
            self.printer.print(&String::from_utf8_lossy(&self.line));
            self.line = Vec::new();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::{Condvar, Mutex};

    fn capture() -> (Printer, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let printer = Printer::new(move |line| sink.lock().push(line.to_owned()));
        (printer, seen)
    }

    #[test]
    fn lines_arrive_in_order() {
        let (printer, seen) = capture();
        for i in 0..100 {
            printer.print(&format!("line {i}"));
        }
        assert!(printer.flush_timeout(Duration::from_secs(10)));
        let expected: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        assert_eq!(*seen.lock(), expected);
        assert_eq!(printer.dropped(), 0);
    }

    #[test]
    fn a_stalled_sink_drops_and_counts_then_notes_once() {
        // The sink blocks until released, as a pipe nobody reads does.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let entered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, s, e) = (Arc::clone(&gate), Arc::clone(&seen), Arc::clone(&entered));
        let printer = Printer::new(move |line| {
            e.store(true, Ordering::SeqCst);
            let mut open = g.0.lock();
            while !*open {
                g.1.wait(&mut open);
            }
            s.lock().push(line.to_owned());
        });
        let started = Instant::now();
        let total = QUEUE_LINES as u64 * 3;
        // The writer takes the first line and is stuck in it; the queue then fills.
        printer.print("line 0");
        while !entered.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        for i in 1..total {
            printer.print(&format!("line {i}"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "printing blocked"
        );
        assert!(!printer.flush_timeout(Duration::from_millis(50)));
        let dropped = printer.dropped();
        assert_eq!(dropped, total - QUEUE_LINES as u64 - 1);
        *gate.0.lock() = true;
        gate.1.notify_all();
        assert!(printer.flush_timeout(Duration::from_secs(10)));
        printer.print("after");
        assert!(printer.flush_timeout(Duration::from_secs(10)));
        let seen = seen.lock();
        assert_eq!(seen.len() as u64, total - dropped + 2);
        assert_eq!(seen[seen.len() - 1], "after");
        let note = &seen[seen.len() - 2];
        assert!(note.contains(&format!("{dropped} line(s)")), "{note}");
        assert_eq!(seen.iter().filter(|l| l.contains("dropped")).count(), 1);
    }

    #[test]
    fn line_writer_splits_lines_and_bounds_a_partial_one() {
        let (printer, seen) = capture();
        let mut w = printer.line_writer();
        w.write_all(b"one\r\ntw").unwrap();
        w.write_all(b"o\nthree").unwrap();
        w.write_all(&vec![b'x'; MAX_HELD]).unwrap();
        assert!(printer.flush_timeout(Duration::from_secs(10)));
        let seen = seen.lock();
        assert_eq!(seen[..2], ["one", "two"]);
        assert_eq!(seen.len(), 3);
        assert!(seen[2].starts_with("threexxx"));
    }
}
