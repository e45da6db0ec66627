//! `tcpool bench`: flags, Ctrl-C, the progress bar and the report around
//! [`tcpool::client::bench::run`].

use std::io::{IsTerminal as _, Write as _};
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use tcpool::client::bench::{self, Limit, Options, Progress};
use tcpool::server::LineEnding;

use super::{parse_positive_seconds, parse_seconds};

/// `tcpool bench` flags.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The echo server to load, as HOST:PORT (a bare PORT means 127.0.0.1:PORT).
    #[arg(value_name = "HOST:PORT", default_value_t = format!("127.0.0.1:{}", tcpool::DEFAULT_PORT))]
    target: String,
    /// Connections to open; one that fails is not reopened.
    #[arg(short = 'c', long, default_value_t = bench::DEFAULT_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// Seconds to measure, after the warm-up [default: 10 unless -n is given].
    #[arg(short = 'd', long, value_name = "SECS", value_parser = parse_positive_seconds,
          conflicts_with = "messages")]
    duration: Option<Duration>,
    /// Measured messages to send in all, split across connections (warm-up not included).
    #[arg(short = 'n', long, value_name = "TOTAL", value_parser = clap::value_parser!(u64).range(1..))]
    messages: Option<u64>,
    /// Bytes per message, line ending included.
    #[arg(short = 's', long, value_name = "BYTES", default_value_t = bench::DEFAULT_SIZE as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    size: u32,
    /// Messages in flight per connection at most.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pipeline: u32,
    /// Total messages per second over all connections (open loop: latency counts from each
    /// message's intended send time) [default: as fast as replies come].
    #[arg(long, value_name = "R", value_parser = parse_rate)]
    rate: Option<f64>,
    /// Seconds of unmeasured load before measuring.
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_seconds)]
    warmup: Duration,
    /// Seconds a reply may take before it counts as a `timeout` error.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_positive_seconds)]
    timeout: Duration,
    /// Seconds a connect may take before it counts as a `connect_timeout` error.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_positive_seconds)]
    connect_timeout: Duration,
    /// How each message ends: none, lf or crlf.
    #[arg(long, value_name = "EOL", default_value = "lf")]
    eol: LineEnding,
    /// Threads driving the connections [default: the number of CPUs].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// Print the report as one JSON object on stdout (and nothing else there).
    #[arg(long)]
    json: bool,
}

/// Set by Ctrl-C (or SIGTERM): the run stops and reports what it measured.
static STOP: AtomicBool = AtomicBool::new(false);

/// Runs the benchmark and prints its report; exit code 1 when any error happened.
pub(crate) fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let addr = resolve(&args.target)?;
    let options = Options {
        addr,
        connections: args.connections as usize,
        limit: match (args.messages, args.duration) {
            (Some(n), _) => Limit::Messages(n),
            (None, Some(d)) => Limit::Duration(d),
            (None, None) => Limit::Duration(bench::DEFAULT_DURATION),
        },
        size: args.size as usize,
        pipeline: args.pipeline as usize,
        rate: args.rate,
        warmup: args.warmup,
        connect_timeout: args.connect_timeout,
        timeout: args.timeout,
        line_ending: args.eol,
        threads: args.threads.map_or(0, usize::from),
    };
    options
        .validate()
        .unwrap_or_else(|e| super::bad_value(format!("invalid options: {e}")));

    // The first Ctrl-C stops the run and still prints the report; a second exits at once.
    let interrupts = AtomicUsize::new(0);
    ctrlc::set_handler(move || {
        if interrupts.fetch_add(1, Ordering::SeqCst) == 0 {
            STOP.store(true, Ordering::SeqCst);
        } else {
            std::process::exit(130);
        }
    })
    .context("cannot install the signal handler")?;

    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| progress_bar(&options));
    let show = |p: &Progress| {
        if let Some(bar) = &bar {
            bar.set_position((p.done * 1000.0) as u64);
            let phase = if p.warming_up { "warm-up " } else { "" };
            bar.set_message(format!(
                "{phase}{:.0} msg/s  {} done  {} open  {} err",
                p.msgs_per_sec, p.messages, p.open, p.errors
            ));
        }
    };
    let report = bench::run(
        &options,
        &STOP,
        bar.as_ref().map(|_| &show as &dyn Fn(&Progress)),
    )
    .with_context(|| format!("benchmark against {addr} failed"))?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }

    let mut out = std::io::stdout().lock();
    let printed = if args.json {
        let json = serde_json::to_string(&report).context("cannot encode the report")?;
        writeln!(out, "{json}")
    } else {
        write!(out, "{report}")
    };
    // A closed stdout (`| head`) is not the benchmark's failure.
    if let Err(e) = printed.and_then(|()| out.flush()) {
        log::debug!("cannot print the report: error={e}");
    }
    Ok(if report.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `HOST:PORT` through the resolver (the first address wins), or a bare port on loopback.
fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(port) = target.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    target
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {target:?} (expected HOST:PORT)"))?
        .next()
        .with_context(|| format!("{target:?} resolves to no address"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{s:?} is not a positive number of messages per second"
        )),
    }
}

fn progress_bar(options: &Options) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{elapsed_precise} [{bar:20}] {wide_msg}")
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(format!("connecting to {}", options.addr));
    bar
}
