//! The binary's subcommands, one file each; `main` only parses and dispatches.

pub(crate) mod bench;
pub(crate) mod serve;
pub(crate) mod talk;
pub(crate) mod terminal;

use std::io::{self, Write};
use std::time::Duration;

use tcpool::server::Printer;
use tcpool::units;

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

/// Parses a duration in the one grammar ([`tcpool::units`]: `250ms`, `5m`, bare seconds);
/// 0 allowed.
pub(crate) fn parse_seconds(s: &str) -> Result<Duration, String> {
    units::parse_duration(s).map_err(|e| e.to_string())
}

/// Parses a duration greater than zero.
pub(crate) fn parse_positive_seconds(s: &str) -> Result<Duration, String> {
    let d = parse_seconds(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} must be more than 0"));
    }
    Ok(d)
}

/// Parses a size in the one grammar ([`tcpool::units`]: `64KiB`, `1MB`, bare bytes) that is
/// at least 1 byte and fits in 32 bits.
pub(crate) fn parse_size_u32(s: &str) -> Result<u32, String> {
    let bytes = units::parse_size(s).map_err(|e| e.to_string())?;
    match u32::try_from(bytes) {
        Ok(0) => Err(format!("{s:?} must be at least 1 byte")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "{s:?} is more than {}",
            units::show_size(u32::MAX.into())
        )),
    }
}

/// Ends the process as clap does for a bad value (exit code 2), for values that can only be
/// checked once the flags are parsed together.
pub(crate) fn bad_value(message: impl std::fmt::Display) -> ! {
    use clap::CommandFactory as _;
    crate::Cli::command()
        .error(clap::error::ErrorKind::ValueValidation, message)
        .exit()
}
