//! The binary's subcommands, one file each; `main` only parses and dispatches.

pub(crate) mod bench;
pub(crate) mod bench_files;
pub(crate) mod log_format;
pub(crate) mod report_out;
pub(crate) mod serve;
pub(crate) mod talk;
pub(crate) mod terminal;

use std::io;
use std::time::Duration;

use tcpool::server::Printer;
use tcpool::units;

/// Starts logging, `RUST_LOG` over the default `info`: to stderr, or with a printer (a
/// terminal with a prompt) through it instead. Either way the log lines go through a
/// [`Printer`]'s queue, so a stalled stderr or terminal never blocks the thread that logs.
pub(crate) fn init_logging(printer: Option<Printer>) {
    init_logging_as(printer, log_format::LogFormat::Text);
}

/// [`init_logging`] in the given format.
pub(crate) fn init_logging_as(printer: Option<Printer>, format: log_format::LogFormat) {
    use std::io::IsTerminal;
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    let style = match &printer {
        None if io::stderr().is_terminal() => env_logger::WriteStyle::Always,
        _ => env_logger::WriteStyle::Never,
    };
    if std::env::var_os("RUST_LOG_STYLE").is_none() {
        builder.write_style(style);
    }
    let printer = printer.unwrap_or_else(Printer::stderr);
    builder.target(env_logger::Target::Pipe(Box::new(printer.line_writer())));
    if format == log_format::LogFormat::Json {
        builder.format(log_format::write_json);
    }
    builder.init();
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
/// checked once the flags are parsed together; the usage shown is `subcommand`'s.
pub(crate) fn bad_value(subcommand: &str, message: impl std::fmt::Display) -> ! {
    use clap::CommandFactory as _;
    let mut cli = crate::Cli::command();
    // Building gives each subcommand its full name (`tcpool bench`) for its usage line.
    cli.build();
    let mut command = cli.find_subcommand(subcommand).cloned().unwrap_or(cli);
    command
        .error(clap::error::ErrorKind::ValueValidation, message)
        .exit()
}
