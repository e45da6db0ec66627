//! The binary's subcommands, one file each; `main` only parses and dispatches.

pub(crate) mod bench;
pub(crate) mod bench_chat;
pub(crate) mod bench_files;
pub(crate) mod bench_udp;
pub(crate) mod completions;
pub(crate) mod log_format;
pub(crate) mod man;
pub(crate) mod report_out;
pub(crate) mod serve;
pub(crate) mod talk;
pub(crate) mod terminal;
pub(crate) mod tls;

use std::io::{self, Write as _};
use std::time::Duration;

use anyhow::Context as _;

use tcpool::server::Printer;
use tcpool::units;

/// Starts logging at `level` (a `--log-level` filter), else `RUST_LOG`, else `info`: to
/// stderr, or with a printer (a terminal with a prompt) through it instead. Either way the
/// log lines go through a [`Printer`]'s queue, so a stalled stderr or terminal never blocks
/// the thread that logs.
pub(crate) fn init_logging(printer: Option<Printer>, level: Option<&LogLevel>) {
    init_logging_as(printer, log_format::LogFormat::Text, level);
}

/// [`init_logging`] in the given format.
pub(crate) fn init_logging_as(
    printer: Option<Printer>,
    format: log_format::LogFormat,
    level: Option<&LogLevel>,
) {
    use std::io::IsTerminal;
    // The flag wins over the variable: with it, `RUST_LOG` is not read at all.
    let filters = match level {
        Some(level) => level.0.clone(),
        None => std::env::var(env_logger::DEFAULT_FILTER_ENV).unwrap_or_else(|_| "info".into()),
    };
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&filters);
    // rustls warns once per handshake about what a peer did (an IP address as the server
    // name, say): any client could fill the log with it. tcpool logs its own line for a
    // failed handshake, at most once a second; rustls's own lines only when named
    // (`--log-level info,rustls=debug`).
    if !filters.contains("rustls") {
        builder.filter_module("rustls", log::LevelFilter::Error);
    }
    let style = match &printer {
        None if io::stderr().is_terminal() => env_logger::WriteStyle::Always,
        _ => env_logger::WriteStyle::Never,
    };
    match std::env::var(env_logger::DEFAULT_WRITE_STYLE_ENV) {
        Ok(chosen) => builder.parse_write_style(&chosen),
        Err(_) => builder.write_style(style),
    };
    let printer = printer.unwrap_or_else(Printer::stderr);
    builder.target(env_logger::Target::Pipe(Box::new(printer.line_writer())));
    if format == log_format::LogFormat::Json {
        builder.format(log_format::write_json);
    }
    builder.init();
}

/// Gives the log lines still queued for stderr a moment (0.2 s at most) to be written: a
/// command that returns right after logging would otherwise end the process with them in
/// the queue. `serve` waits for them itself, with its other output.
pub(crate) fn flush_logs() {
    let _ = Printer::stderr().flush_timeout(Duration::from_millis(200));
}

/// A `--log-level` value: a level, or an env_logger filter that [`parse_log_level`] checked.
#[derive(Debug, Clone)]
pub(crate) struct LogLevel(String);

/// Parses `--log-level`: `error`, `warn`, `info`, `debug`, `trace` or `off`, or an env_logger
/// filter (`info,tcpool::server::worker=debug`, `warn/regex`). Stricter than env_logger,
/// which reads a bare word that is no level as a target to log in full: here a target needs
/// its level (`tcpool=trace`), so that a misspelt level is an error, not a silent filter.
pub(crate) fn parse_log_level(s: &str) -> Result<LogLevel, String> {
    let directives = s.split_once('/').map_or(s, |(directives, _)| directives);
    if directives.trim().is_empty() {
        return Err(format!(
            "{s:?} names no level: error, warn, info, debug, trace or off"
        ));
    }
    for directive in directives.split(',').map(str::trim) {
        if directive.starts_with('=') {
            return Err(format!("{directive:?} names no target before its `=`"));
        }
        if !directive.is_empty()
            && !directive.contains('=')
            && directive.parse::<log::LevelFilter>().is_err()
        {
            return Err(format!(
                "{directive:?} is not a level: error, warn, info, debug, trace or off (a target \
                 takes one: TARGET=LEVEL)"
            ));
        }
    }
    env_filter::Builder::new()
        .try_parse(s)
        .map_err(|e| e.to_string())?;
    Ok(LogLevel(s.to_owned()))
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

/// A command's `Examples:` section for the end of its `--help` (and its man page): `text` is
/// its lines after a first line break, each indented by two spaces, a `# comment` line before
/// each example.
pub(crate) fn examples(text: &str) -> clap::builder::StyledStr {
    let header = clap::builder::Styles::styled().get_header().to_owned();
    let text = text.strip_prefix('\n').unwrap_or(text);
    format!("{header}Examples:{header:#}\n{text}").into()
}

/// Writes `bytes` to stdout. A closed stdout (`| head`) is no failure: whoever closed it has
/// read what they wanted; any other write error (a full disk) lost `what`, and is.
pub(crate) fn print_stdout(bytes: &[u8], what: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        written => written.with_context(|| format!("cannot write {what} to stdout")),
    }
}
