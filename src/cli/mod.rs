//! The binary's subcommands, one file each; `main` only parses and dispatches.

pub(crate) mod bench;
pub(crate) mod serve;
pub(crate) mod talk;
pub(crate) mod terminal;

use std::io::{self, Write};
use std::time::Duration;

use tcpool::server::Printer;

/// Starts logging to stderr, `RUST_LOG` over the default `info`; with a printer (a terminal
/// with a prompt), each log line goes through it instead.
pub(crate) fn init_logging(printer: Option<Printer>) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(printer) = printer {
        builder.target(env_logger::Target::Pipe(Box::new(LineWriter {
            printer,
            line: Vec::new(),
        })));
    }
    builder.init();
}

/// Hands each complete line written to it to a printer.
struct LineWriter {
    printer: Printer,
    line: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        while let Some(end) = self.line.iter().position(|&b| b == b'\n') {
            let rest = self.line.split_off(end + 1);
            let line = std::mem::replace(&mut self.line, rest);
            self.printer
                .print(String::from_utf8_lossy(&line[..end]).trim_end_matches('\r'));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Parses a number of seconds (fractions allowed, 0 allowed).
pub(crate) fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a valid number of seconds"))
}

/// Parses a number of seconds greater than zero.
pub(crate) fn parse_positive_seconds(s: &str) -> Result<Duration, String> {
    let d = parse_seconds(s)?;
    if d.is_zero() {
        return Err("must be more than 0 seconds".into());
    }
    Ok(d)
}
