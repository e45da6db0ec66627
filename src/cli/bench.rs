//! `tcpool bench`: flags, Ctrl-C, the progress bar and the report around
//! [`tcpool::client::bench::run`]; `bench merge` and `bench plot` over saved JSON reports.
//!
//! Longer than 500 lines on purpose: every `bench` flag is here with the help text a user reads
//! in `--help`, and the run around the library; a third of it is that help.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use parking_lot::Mutex;

use tcpool::client::addr::{self, Target};
use tcpool::client::bench::{
    self, Framed, Greeting, Limit, MetricsUrl, Options, Progress, Protocol, Reply, Request,
    ServerView, Template,
};
use tcpool::server::LineEnding;
use tcpool::units;

mod fleet;
mod fleet_udp;

/// `tcpool bench` flags, or one of its subcommands.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = super::examples(EXAMPLES)
)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    run: Box<RunArgs>,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Merge the JSON reports of several generators into one exact report.
    Merge(super::bench_files::MergeArgs),
    /// Draw JSON reports (latency by percentile, throughput and p99 per second) as one SVG.
    Plot(super::bench_files::PlotArgs),
    /// Wait on a NATS broker for a fleet's work (`tcpool bench --fleet`) and run it.
    Agent(fleet::AgentArgs),
}

/// The flags of one run.
#[derive(Debug, Args)]
struct RunArgs {
    /// The server: PORT (on 127.0.0.1), HOST, HOST:PORT or [IPv6]:PORT; a name is tried at
    /// each of its addresses in turn. A host called `merge` or `plot` is written with its
    /// port. With --chat, several: the clients are spread over them round robin (each at its
    /// first address).
    #[arg(value_name = "HOST:PORT", default_value = "127.0.0.1:8900", value_parser = parse_target,
          num_args = 1..)]
    targets: Vec<Target>,
    #[command(flatten)]
    chat: super::bench_chat::ChatArgs,
    #[command(flatten)]
    udp: super::bench_udp::UdpArgs,
    /// Connections to open, all before the load starts; one that fails is not reopened.
    #[arg(short = 'c', long, value_name = "N", default_value_t = bench::DEFAULT_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// How long to measure, after the warm-up (such as 250ms, 5s, 2m; bare = seconds) [default: 10s, unless -n is
    /// given].
    #[arg(short = 'd', long, value_name = "TIME", value_parser = super::parse_positive_seconds,
          conflicts_with = "messages")]
    duration: Option<Duration>,
    /// Send exactly TOTAL measured messages in all, split across the connections, instead of
    /// measuring for a duration (warm-up not included) [default: none, -d decides].
    #[arg(short = 'n', long, value_name = "TOTAL", value_parser = clap::value_parser!(u64).range(1..))]
    messages: Option<u64>,
    /// Echo: bytes per message, line ending included, at most 64MiB (such as 64, 1KiB; bare =
    /// bytes).
    #[arg(allow_hyphen_values = true, short = 's', long, value_name = "SIZE", default_value = "64", value_parser = parse_size)]
    size: usize,
    /// Messages in flight per connection at most (1: the next is sent once the reply came).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pipeline: u32,
    /// Messages per second in all, over all connections, at least 0.001 (open loop: latency
    /// counts from each message's intended send time) [default: none, as fast as replies
    /// come].
    #[arg(allow_hyphen_values = true, long, value_name = "R", value_parser = parse_rate)]
    rate: Option<f64>,
    /// Load before measuring, its messages checked but not counted (such as 250ms, 5s, 2m; bare = seconds).
    #[arg(long, value_name = "TIME", default_value = "0", value_parser = super::parse_seconds)]
    warmup: Duration,
    /// How long a reply may take before it counts as a `timeout` error (such as 250ms, 5s, 2m; bare = seconds).
    #[arg(allow_hyphen_values = true, long, value_name = "TIME", default_value = "5s", value_parser = super::parse_positive_seconds)]
    timeout: Duration,
    /// How long a connect may take (per address) before it counts as a `connect_timeout`
    /// error (such as 250ms, 5s, 2m; bare = seconds).
    #[arg(allow_hyphen_values = true, long, value_name = "TIME", default_value = "5s", value_parser = super::parse_positive_seconds)]
    connect_timeout: Duration,
    #[command(flatten)]
    tls: super::tls::TlsClientArgs,
    /// Echo: how each message ends, none, lf or crlf.
    #[arg(long, value_name = "EOL", default_value = "lf")]
    eol: LineEnding,
    /// Threads driving the connections, at most one per connection [default: the number of
    /// CPUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// The request to send instead of the echo payload: escapes \r \n \t \0 \\ \xHH, and
    /// {conn} (connection index), {seq} (message number), {key:N} (a key drawn from 0..N),
    /// {key:N:zipf=S} (drawn with Zipf exponent S), either with :pad=W (zero-padded to W
    /// digits) and {rand:LEN} (LEN random printable bytes) filled in. Needs one of --reply,
    /// --expect, --until or --reply-size [default: none, an echo load]. Given more than once,
    /// each message is one of them, drawn by --weight, and each is reported apart.
    #[arg(long, value_name = "BYTES", conflicts_with_all = ["send_file", "size", "eol"])]
    send: Vec<String>,
    /// The share of the --send before it in a mix: `--send A --weight 9 --send B --weight 1`
    /// sends A nine times in ten. Give one per --send, or none [default: 1 each].
    #[arg(long, value_name = "W", value_parser = clap::value_parser!(u32).range(1..), requires = "send")]
    weight: Vec<u32>,
    /// A mix of requests from a file: one a line, `WEIGHT REQUEST`, the request written as for
    /// --send (escapes, placeholders); empty lines and lines starting with # are skipped
    /// [default: none].
    #[arg(long, value_name = "PATH", conflicts_with_all = ["send", "send_file", "weight", "size", "eol"])]
    requests: Option<PathBuf>,
    /// Seeds {key:N}, {rand:LEN} and the mix: the same seed draws the same requests in the
    /// same order on each connection [default: 0].
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Replies framed by their protocol and classified ok, error or miss: resp (Redis: RESP2
    /// and RESP3; errors `-` and `!`, misses null), memcache (text protocol; errors ERROR,
    /// CLIENT_ERROR, SERVER_ERROR; misses END without VALUE) or http1 (statuses outside
    /// --ok-status are errors; a response with `Connection: close` ends its connection, which
    /// is opened again and counted in reconnects). Error replies make the exit code 1
    /// [default: none, replies framed by --expect, --until or --reply-size].
    #[arg(long, value_name = "PROTOCOL", conflicts_with_all = ["expect", "until", "reply_size"])]
    reply: Option<ReplyProtocol>,
    /// --reply: the longest reply taken; a declared length above it is a protocol error that
    /// ends the connection (such as 64KiB, 1MiB; bare = bytes) [default: 512MiB].
    #[arg(allow_hyphen_values = true, long, value_name = "SIZE", requires = "reply", value_parser = parse_max_reply)]
    max_reply: Option<u64>,
    /// --reply http1: the statuses that count as ok, such as 200-399 or 204 [default: 200-299].
    #[arg(long, value_name = "RANGE", requires = "reply", value_parser = parse_status_range)]
    ok_status: Option<(u16, u16)>,
    /// --until: a reply that starts with these bytes is an error reply (`-`, `ERR `);
    /// counted by its first word [default: none].
    #[arg(long, value_name = "BYTES", requires = "until")]
    error_prefix: Option<String>,
    /// The request's raw bytes, read from a file of at most 64MiB (no escapes or
    /// placeholders).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["size", "eol"])]
    send_file: Option<PathBuf>,
    /// The reply is exactly these bytes (escapes and placeholders as for --send); anything
    /// else is a `mismatch`.
    #[arg(long, value_name = "BYTES", conflicts_with_all = ["until", "reply_size"])]
    expect: Option<String>,
    /// The reply ends at the first occurrence of these bytes (escapes allowed); not checked.
    #[arg(long, value_name = "BYTES", conflicts_with = "reply_size")]
    until: Option<String>,
    /// The reply is exactly this many bytes, at most 64MiB; not checked (such as 32, 1KiB;
    /// bare = bytes).
    #[arg(allow_hyphen_values = true, long, value_name = "SIZE", value_parser = parse_size)]
    reply_size: Option<usize>,
    /// Sent once on each connection right after it connects (AUTH, SELECT, HELLO); its reply
    /// is read up to \n (or --first-until; with --reply, as the protocol frames it, and an
    /// error reply ends the connection), not timed or counted.
    #[arg(long, value_name = "BYTES")]
    first_message: Option<String>,
    /// Where the first message's reply ends [default: \n, or as --reply frames it].
    #[arg(long, value_name = "BYTES", requires = "first_message")]
    first_until: Option<String>,
    /// The first message's reply must be exactly these bytes (+OK\r\n); anything else ends
    /// the connection as a first_reply error, showing the bytes that came [default: not
    /// checked, but an error reply under --reply still ends the connection].
    #[arg(long, value_name = "BYTES", requires = "first_message")]
    first_expect: Option<String>,
    /// Open at most R connections per second (at least 0.001), evenly spaced; the load starts
    /// once the last one is open [default: all at once].
    #[arg(allow_hyphen_values = true, long, value_name = "R", value_parser = parse_rate)]
    connect_rate: Option<f64>,
    /// Close each connection after N replies and open a new one at once, within the window
    /// (with --tls a handshake every N messages: 1 = one per request; 0 = no message at all,
    /// a connect and a handshake each, with -d). Connects and handshakes are timed apart
    /// from the messages [default: connections stay open].
    #[arg(long, value_name = "N")]
    reconnect_every: Option<u64>,
    /// Which TLS handshakes resume a session: off (every one full), tickets (each
    /// reconnect offers a ticket from an earlier handshake) or mix=P (that share offers one,
    /// such as mix=0.3) [default: tickets].
    #[arg(long, value_name = "HOW", requires = "tls", value_parser = parse_resume)]
    tls_resume: Option<bench::Resume>,
    /// Send a PROXY protocol header (v1 or v2) first on every connection, naming its own
    /// addresses, to load a server or proxy that expects one; before TLS with --tls
    /// [default: none].
    #[arg(long, value_name = "VERSION")]
    send_proxy: Option<tcpool::client::send_proxy::SendProxy>,
    /// Connect first, then start the warm-up at TIME: UNIX seconds (1767225600.5), or +TIME
    /// from now (+5s; bare = seconds), so that several generators measure the same window
    /// [default: at once].
    #[arg(allow_hyphen_values = true, long, value_name = "TIME", value_parser = parse_start_at)]
    start_at: Option<SystemTime>,
    /// Also read the server's own counts from its Prometheus metrics (tcpool serve --admin)
    /// before and after the run: `http://127.0.0.1:9900/metrics`, or HOST:PORT [default:
    /// off].
    #[arg(long, value_name = "URL")]
    server_metrics: Option<MetricsUrl>,
    /// Print the report as one JSON object on stdout (and nothing else there).
    #[arg(long)]
    json: bool,
    /// Also write the standard HdrHistogram interval log here (one interval a second, values
    /// in µs).
    #[arg(long, value_name = "FILE")]
    hdr_log: Option<PathBuf>,
    /// Also draw the run as an SVG picture here (see `tcpool bench plot`).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    fleet: fleet::FleetArgs,
}

const EXAMPLES: &str = r"
  # 200 connections at 20,000 msg/s in all, for 30 s after a 2 s warm-up
  tcpool bench 127.0.0.1:8900 -c 200 --rate 20000 -d 30s --warmup 2s
  # Redis PING on port 6379, 16 in flight per connection, the report saved as JSON
  tcpool bench 6379 --send 'PING\r\n' --expect '+PONG\r\n' --pipeline 16 --json > ping.json
  # A chat room's fan-out over three nodes: 30 senders at 10 lines/s each, 270 readers
  tcpool bench --chat --senders 30 --readers 270 --rate 10 -d 5s 9000 9001 9002
  # The same fan-out through Redis pub/sub
  tcpool bench --chat --chat-protocol redis --senders 30 --readers 270 --rate 10 -d 5s 6379";

/// `--reply`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReplyProtocol {
    /// Redis: RESP2 and RESP3.
    Resp,
    /// The memcached text protocol.
    Memcache,
    /// HTTP/1.1 (and 1.0) responses.
    Http1,
}

/// Set by Ctrl-C (or SIGTERM): the run stops and reports what it measured.
static STOP: AtomicBool = AtomicBool::new(false);

/// Runs the benchmark (or a subcommand) and prints its report; exit code 1 when any error
/// happened, 2 for options that cannot work together.
pub(crate) fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(BenchCommand::Merge(merge)) => return super::bench_files::merge(merge),
        Some(BenchCommand::Plot(plot)) => return super::bench_files::plot(plot),
        Some(BenchCommand::Agent(agent)) => return fleet::agent(agent),
        None => {}
    }
    let args = *args.run;
    if args.targets.len() > 1 && !args.chat.chat {
        super::bad_value(
            "bench",
            "several targets are for --chat; a run loads one server",
        );
    }
    if args.chat.chat && args.fleet.fleet.is_some() {
        super::bad_value("bench", "--chat runs from one machine, not with --fleet");
    }
    let target = &args.targets[0];
    if args.udp.udp {
        signals()?;
        let common = udp_common(&args);
        let code = if args.fleet.fleet.is_some() {
            fleet_udp::coordinate(&args, &common)?
        } else {
            super::bench_udp::run(&args.udp, &common, &STOP)?
        };
        return Ok(if STOP.load(Ordering::SeqCst) {
            ExitCode::from(130)
        } else {
            code
        });
    }
    // Failing to resolve is failing to start (exit 1), not a usage error.
    let addrs = target
        .resolve()
        .with_context(|| format!("cannot resolve {target}"))?;
    let options =
        options(&args, addrs).unwrap_or_else(|e| super::bad_value("bench", format!("{e:#}")));
    if let Some(n) = args.messages
        && options.connections_used() < options.connections
    {
        eprintln!(
            "note: running {} connection(s), not {}: -n {n} leaves no message for the others",
            options.connections_used(),
            options.connections
        );
    }

    signals()?;
    if args.fleet.fleet.is_some() {
        return fleet::coordinate(&args, &options);
    }

    if args.chat.chat {
        let common = super::bench_chat::Common {
            targets: &args.targets,
            rate: args.rate,
            duration: args.duration.unwrap_or(bench::DEFAULT_DURATION),
            timeout: args.timeout,
            threads: args.threads.map_or(0, usize::from),
            json: args.json,
        };
        let code = super::bench_chat::run(&args.chat, &common, &STOP)?;
        return Ok(if STOP.load(Ordering::SeqCst) {
            ExitCode::from(130)
        } else {
            code
        });
    }

    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| {
        // A Ctrl-C echoed as `^C` would push the bar onto a second line that clearing it
        // does not reach: the terminal stops echoing control characters until the end.
        quiet_control_chars();
        progress_bar(target)
    });
    let show = |p: &Progress| {
        if let Some(bar) = &bar {
            bar.set_position((p.done * 1000.0) as u64);
            let phase = if p.connecting {
                "connecting "
            } else if p.warming_up {
                "warm-up "
            } else {
                ""
            };
            bar.set_message(format!(
                "{phase}{:.0} msg/s  {} done  {} open  {} err",
                p.msgs_per_sec, p.messages, p.open, p.errors
            ));
        }
    };
    // Every output file is opened before the first connect: a path that cannot be written
    // is said at once, not after the whole run.
    let create = |path: &std::path::Path| {
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))
    };
    let hdr_log = args.hdr_log.as_deref().map(create).transpose()?;
    let plot = args.plot.as_deref().map(create).transpose()?;
    let scrape_timeout = options.connect_timeout;
    let before = match &args.server_metrics {
        Some(url) => Some(
            url.scrape(scrape_timeout)
                .with_context(|| format!("cannot read the server's metrics at {url}"))?,
        ),
        None => None,
    };
    let result = bench::run(
        &options,
        &STOP,
        bar.as_ref().map(|_| &show as &dyn Fn(&Progress)),
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
        restore_control_chars();
    }
    let report = result.with_context(|| format!("benchmark against {target} failed"))?;
    write_opened(&args, &report, hdr_log, plot)?;
    let server = match (&args.server_metrics, &before) {
        (Some(url), Some(before)) => Some(server_view(url, before, &report, scrape_timeout)?),
        _ => None,
    };

    let code = super::report_out::print_with(&report, server.as_ref(), args.json)?;
    let code = fleet::judge(&args, &report, code);
    // Stopped by Ctrl-C or SIGTERM: the report is out, and the exit code says how it ended.
    Ok(if STOP.load(Ordering::SeqCst) {
        ExitCode::from(130)
    } else {
        code
    })
}

/// What the shared flags say to a `--udp` run.
fn udp_common(args: &RunArgs) -> super::bench_udp::Common<'_> {
    super::bench_udp::Common {
        target: &args.targets[0],
        fail_if: args.fleet.fail_if.as_ref().map(fleet::FailIf::list),
        sockets: args.connections as usize,
        messages: args.messages,
        duration: args.duration.unwrap_or(bench::DEFAULT_DURATION),
        size: args.size,
        pipeline: args.pipeline as usize,
        rate: args.rate,
        threads: args.threads.map_or(0, usize::from),
        send: &args.send,
        expect: args.expect.as_deref(),
        reply_size: args.reply_size,
        json: args.json,
        server_metrics: args.server_metrics.as_ref(),
        hdr_log: args.hdr_log.as_deref(),
        plot: args.plot.as_deref(),
    }
}

/// Creates and writes `--hdr-log` and `--plot` for `report`.
fn write_files(args: &RunArgs, report: &bench::Report) -> anyhow::Result<()> {
    let create = |path: &std::path::Path| {
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))
    };
    let hdr_log = args.hdr_log.as_deref().map(create).transpose()?;
    let plot = args.plot.as_deref().map(create).transpose()?;
    write_opened(args, report, hdr_log, plot)
}

/// Writes `--hdr-log` and `--plot` for `report` into the files opened for them.
fn write_opened(
    args: &RunArgs,
    report: &bench::Report,
    hdr_log: Option<std::fs::File>,
    plot: Option<std::fs::File>,
) -> anyhow::Result<()> {
    if let (Some(path), Some(file)) = (&args.hdr_log, hdr_log) {
        let mut file = std::io::BufWriter::new(file);
        bench::write_interval_log(report, &mut file)
            .and_then(|()| file.flush())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let (Some(path), Some(mut file)) = (&args.plot, plot) {
        let svg =
            bench::plot(&[(args.targets[0].to_string(), report)]).map_err(anyhow::Error::msg)?;
        file.write_all(svg.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The server's view of the run (`--server-metrics`), read again after it.
fn server_view(
    url: &MetricsUrl,
    before: &bench::Samples,
    report: &bench::Report,
    timeout: Duration,
) -> anyhow::Result<ServerView> {
    let after = url
        .scrape_settled(before, report.connected, timeout)
        .with_context(|| format!("cannot read the server's metrics at {url}"))?;
    let view = ServerView::between(url, before, &after, report);
    for warning in &view.warnings {
        eprintln!("warning: client and server disagree: {warning}");
    }
    Ok(view)
}

/// The first Ctrl-C (or SIGTERM) stops the run (or the agent) and still prints the report; a
/// second exits at once.
fn signals() -> anyhow::Result<()> {
    let interrupts = Arc::new(AtomicUsize::new(0));
    let on_interrupt = move || {
        if interrupts.fetch_add(1, Ordering::SeqCst) == 0 {
            STOP.store(true, Ordering::SeqCst);
        } else {
            // No report follows: take the progress bar's line off the screen too.
            if SAVED.lock().is_some() {
                eprint!("\r\x1b[2K");
            }
            restore_control_chars();
            std::process::exit(130);
        }
    };
    ctrlc::set_handler(on_interrupt.clone()).context("cannot install the signal handler")?;
    let mut terms = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM])
        .context("cannot install the signal handler")?;
    std::thread::Builder::new()
        .name("tcpool-signals".into())
        .spawn(move || terms.forever().for_each(|_| on_interrupt()))
        .context("cannot start the signal thread")?;
    Ok(())
}

/// The library's options from the flags; an error is a usage error.
fn options(args: &RunArgs, addrs: Vec<SocketAddr>) -> anyhow::Result<Options> {
    let template = |flag: &str, text: &str| {
        Template::parse(text).map_err(|e| anyhow::anyhow!("invalid {flag} {text:?}: {e}"))
    };
    let bytes = |flag: &str, text: &str| -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        template(flag, text)?.render(0, 0, &mut out);
        Ok(out)
    };
    if !args.weight.is_empty() && args.weight.len() != args.send.len() {
        anyhow::bail!(
            "{} --weight for {} --send: give one per --send, or none",
            args.weight.len(),
            args.send.len()
        );
    }
    let send = match (&args.send[..], &args.send_file, &args.requests) {
        ([], _, Some(path)) => Some(requests_file(path)?),
        ([], Some(path), None) => Some(vec![Request::new(Template::raw(
            super::bench_files::read_capped(path, MAX_MESSAGE as u64)?,
        ))]),
        ([], None, None) => None,
        (texts, _, _) => Some(
            texts
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    Ok(Request {
                        template: template("--send", text)?,
                        weight: args.weight.get(i).copied().unwrap_or(1),
                    })
                })
                .collect::<anyhow::Result<Vec<Request>>>()?,
        ),
    };
    let reply = match (&args.expect, &args.until, args.reply_size, args.reply) {
        (Some(text), _, _, _) => Some(Reply::Exact(template("--expect", text)?)),
        (None, Some(text), _, _) => Some(Reply::Until(bytes("--until", text)?)),
        (None, None, Some(n), _) => Some(Reply::Size(n)),
        (None, None, None, Some(protocol)) => Some(Reply::Framed(match protocol {
            ReplyProtocol::Resp => Framed::Resp,
            ReplyProtocol::Memcache => Framed::Memcache,
            ReplyProtocol::Http1 => {
                let (low, high) = args.ok_status.unwrap_or((200, 299));
                Framed::Http1 { ok: low..=high }
            }
        })),
        (None, None, None, None) => None,
    };
    if args.ok_status.is_some() && !matches!(args.reply, Some(ReplyProtocol::Http1)) {
        anyhow::bail!("--ok-status is for --reply http1");
    }
    let protocol = match (send, reply) {
        (None, None) => Protocol::Echo,
        (Some(send), Some(reply)) => Protocol::Request { send, reply },
        (Some(_), None) => anyhow::bail!(
            "--send needs one of --reply, --expect, --until or --reply-size to end replies"
        ),
        (None, Some(_)) => {
            anyhow::bail!("--reply, --expect, --until and --reply-size need --send")
        }
    };
    let greeting = match &args.first_message {
        Some(text) => Some(Greeting {
            message: template("--first-message", text)?,
            until: match &args.first_until {
                Some(until) => Some(bytes("--first-until", until)?),
                None if args.reply.is_some() => None,
                None => Some(b"\n".to_vec()),
            },
            expect: match &args.first_expect {
                Some(text) => Some(bytes("--first-expect", text)?),
                None => None,
            },
        }),
        None => None,
    };
    let tls = match args.tls.settings("bench") {
        Some(settings) => Some(bench::BenchTls {
            config: tcpool::tls::client_config(&settings)?,
            name: tcpool::tls::server_name(&settings, &args.targets[0].host())?,
            resume: args.tls_resume.unwrap_or_default(),
        }),
        None => None,
    };
    let options = Options {
        tls,
        addrs,
        protocol,
        greeting,
        connect_rate: args.connect_rate,
        reconnect_every: args.reconnect_every,
        send_proxy: args.send_proxy,
        start_at: args.start_at,
        connections: args.connections as usize,
        limit: match (args.messages, args.duration) {
            (Some(n), _) => Limit::Messages(n),
            (None, Some(d)) => Limit::Duration(d),
            (None, None) => Limit::Duration(bench::DEFAULT_DURATION),
        },
        size: args.size,
        pipeline: args.pipeline as usize,
        rate: args.rate,
        warmup: args.warmup,
        connect_timeout: args.connect_timeout,
        timeout: args.timeout,
        line_ending: args.eol,
        threads: args.threads.map_or(0, usize::from),
        seed: args.seed,
        max_reply: args.max_reply.unwrap_or(bench::DEFAULT_MAX_REPLY),
        error_prefix: match &args.error_prefix {
            Some(text) => Some(bytes("--error-prefix", text)?),
            None => None,
        },
        conn_offset: 0,
    };
    options.validate().context("invalid options")?;
    Ok(options)
}

fn parse_target(s: &str) -> Result<Target, String> {
    addr::parse(s).map_err(|e| e.to_string())
}

/// The largest message `-s`, `--reply-size` and `--send-file` take (it is held in memory).
const MAX_MESSAGE: usize = 64 << 20;

fn parse_size(s: &str) -> Result<usize, String> {
    let n = units::parse_size(s).map_err(|e| e.to_string())?;
    match usize::try_from(n) {
        Ok(0) => Err("must be at least 1 byte".into()),
        Ok(n) if n <= MAX_MESSAGE => Ok(n),
        _ => Err(format!(
            "{s:?} is more than {}, the largest message",
            units::show_size(MAX_MESSAGE as u64)
        )),
    }
}

/// `--requests FILE`: `WEIGHT REQUEST` lines.
fn requests_file(path: &std::path::Path) -> anyhow::Result<Vec<Request>> {
    let bytes = super::bench_files::read_capped(path, MAX_MESSAGE as u64)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))?;
    let mut requests = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let (weight, request) = line
            .split_once(' ')
            .ok_or_else(|| anyhow::anyhow!("{}: write WEIGHT REQUEST", at()))?;
        let weight = weight
            .parse::<u32>()
            .ok()
            .filter(|w| *w > 0)
            .ok_or_else(|| anyhow::anyhow!("{}: {weight:?} is not a weight of 1 or more", at()))?;
        let template =
            Template::parse(request).map_err(|e| anyhow::anyhow!("{}: {request:?}: {e}", at()))?;
        requests.push(Request { template, weight });
    }
    if requests.is_empty() {
        anyhow::bail!("{} holds no request", path.display());
    }
    Ok(requests)
}

/// `--max-reply`: any size of at least 1 byte.
fn parse_max_reply(s: &str) -> Result<u64, String> {
    match units::parse_size(s).map_err(|e| e.to_string())? {
        0 => Err("must be at least 1 byte".into()),
        n => Ok(n),
    }
}

/// `--ok-status`: `200-399`, or one status `204`.
fn parse_status_range(s: &str) -> Result<(u16, u16), String> {
    let status = |t: &str| match t.trim().parse::<u16>() {
        Ok(n) if (100..=999).contains(&n) => Ok(n),
        _ => Err(format!("{t:?} is not an HTTP status (100 to 999)")),
    };
    let (low, high) = match s.split_once('-') {
        Some((low, high)) => (status(low)?, status(high)?),
        None => (status(s)?, status(s)?),
    };
    if low > high {
        return Err(format!("{s:?}: the range is empty"));
    }
    Ok((low, high))
}

/// The lowest `--rate` and `--connect-rate`: one every 1,000 s. Slower rates would only wait,
/// and an interval of `connections / rate` must stay a time the clock can count to.
const MIN_RATE: f64 = 0.001;

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= MIN_RATE => Ok(rate),
        Ok(rate) if rate.is_finite() && rate > 0.0 => Err(format!(
            "{s:?} is below {MIN_RATE} per second, the lowest rate"
        )),
        _ => Err(format!("{s:?} is not a positive number per second")),
    }
}

/// UNIX seconds (`1767225600`, fractions allowed) or `+SECS` from now (`+5`, `+1.5s`).
/// `--tls-resume`.
fn parse_resume(s: &str) -> Result<bench::Resume, String> {
    s.parse()
}

fn parse_start_at(s: &str) -> Result<SystemTime, String> {
    if let Some(ahead) = s.strip_prefix('+') {
        let ahead = units::parse_duration(ahead).map_err(|e| e.to_string())?;
        return Ok(SystemTime::now() + ahead);
    }
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is neither UNIX seconds nor +SECS"))?;
    if secs.is_sign_negative() {
        return Err(format!("{s:?} is not a time: it is negative"));
    }
    let at = Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a time"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    if at > now + units::MAX_DURATION {
        return Err(format!("{s:?} is more than a year ahead"));
    }
    Ok(UNIX_EPOCH + at)
}

fn progress_bar(target: &Target) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{elapsed_precise} [{bar:20}] {wide_msg}")
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(format!("connecting to {target}"));
    bar
}

/// stderr's terminal settings before [`quiet_control_chars`].
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Stops the terminal on stderr from echoing control characters (`^C`).
fn quiet_control_chars() {
    let stderr = std::io::stderr();
    let Ok(settings) = termios::tcgetattr(&stderr) else {
        return;
    };
    let mut quiet = settings.clone();
    quiet.local_flags.remove(LocalFlags::ECHOCTL);
    if termios::tcsetattr(&stderr, SetArg::TCSANOW, &quiet).is_ok() {
        *SAVED.lock() = Some(settings);
    }
}

/// Puts back what [`quiet_control_chars`] changed.
fn restore_control_chars() {
    if let Some(settings) = SAVED.lock().take() {
        let _ = termios::tcsetattr(std::io::stderr(), SetArg::TCSANOW, &settings);
    }
}
