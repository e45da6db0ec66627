//! `tcpool bench --udp`: the flags of a datagram run and its report around
//! [`tcpool::client::bench::udp::run`].

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use tcpool::client::addr::Target;
use tcpool::client::bench::udp::{self, Check, IdField, Payload, UdpLimit, UdpOptions, UdpReport};
use tcpool::client::bench::{self, MetricsUrl, Template, UdpServerView};

/// How long a scrape of `--server-metrics` may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// The flags only `--udp` takes.
#[derive(Debug, Args)]
pub(crate) struct UdpArgs {
    /// Send UDP datagrams instead of TCP messages: -c sockets, each its own source port;
    /// replies matched by sequence number (or --id-field), with loss, duplicates, reordering,
    /// late and corrupt replies and jitter in the report. Without --send, -s is the
    /// datagram's size (at least 16 bytes) [default: off, TCP].
    #[arg(long, conflicts_with_all = [
        "chat", "tls", "reply", "until", "first_message", "connect_rate", "reconnect_every",
        "requests", "send_file", "weight", "start_at",
        "send_proxy", "eol", "warmup", "timeout", "connect_timeout", "seed",
    ])]
    pub(crate) udp: bool,
    /// --udp: how long a datagram's reply may take before the datagram counts as lost
    /// (such as 250ms, 5s, 2m; bare = seconds).
    #[arg(allow_hyphen_values = true, long, value_name = "TIME", default_value = "1s",
          requires = "udp", value_parser = super::parse_positive_seconds)]
    reply_timeout: Duration,
    /// --udp --send: where in the request (and its reply) the datagram's number goes, as
    /// OFFSET:LEN bytes, big-endian, cut to LEN bytes (0:2 for a DNS id or memcached's
    /// request id); replies are matched by it [default: 8:8, bench's own payload's number].
    #[arg(long, value_name = "OFFSET:LEN", requires = "udp", value_parser = IdField::parse)]
    id_field: Option<IdField>,
}

/// What the shared `bench` flags say to a UDP run.
pub(crate) struct Common<'a> {
    pub(crate) target: &'a Target,
    /// `--fail-if`: thresholds the report must meet.
    pub(crate) fail_if: Option<&'a [tcpool::client::bench::thresholds::Threshold]>,
    pub(crate) sockets: usize,
    pub(crate) messages: Option<u64>,
    pub(crate) duration: Duration,
    pub(crate) size: usize,
    pub(crate) pipeline: usize,
    pub(crate) rate: Option<f64>,
    pub(crate) threads: usize,
    pub(crate) send: &'a [String],
    pub(crate) expect: Option<&'a str>,
    pub(crate) reply_size: Option<usize>,
    pub(crate) json: bool,
    pub(crate) server_metrics: Option<&'a MetricsUrl>,
    /// `--hdr-log`: the round trips' interval log, one histogram a second.
    pub(crate) hdr_log: Option<&'a Path>,
    /// `--plot`: the run as an SVG.
    pub(crate) plot: Option<&'a Path>,
}

/// The library's options; an error is a usage error.
pub(crate) fn options(args: &UdpArgs, common: &Common<'_>) -> anyhow::Result<UdpOptions> {
    let template = |flag: &str, text: &str| {
        Template::parse(text).map_err(|e| anyhow::anyhow!("invalid {flag} {text:?}: {e}"))
    };
    let send = match common.send {
        [] => None,
        [one] => Some(template("--send", one)?),
        _ => anyhow::bail!("--udp takes one --send, not a mix"),
    };
    let check = match (&send, common.expect, common.reply_size) {
        (None, None, None) => Check::Own,
        (None, _, _) => anyhow::bail!("--expect and --reply-size go with --send"),
        (Some(_), Some(text), _) => Check::Exact(template("--expect", text)?),
        (Some(_), None, Some(n)) => Check::Size(n),
        (Some(_), None, None) => Check::Any,
    };
    let id = match (&send, args.id_field) {
        (None, Some(_)) => anyhow::bail!("--id-field goes with --send"),
        (None, None) => IdField::OWN,
        (Some(_), Some(id)) => id,
        (Some(_), None) => {
            anyhow::bail!("--udp --send needs --id-field OFFSET:LEN to match replies")
        }
    };
    let target = *common
        .target
        .resolve()
        .with_context(|| format!("cannot resolve {}", common.target))?
        .first()
        .with_context(|| format!("{} has no address", common.target))?;
    let options = UdpOptions {
        target,
        sockets: common.sockets,
        pipeline: common.pipeline,
        rate: common.rate,
        limit: match common.messages {
            Some(n) => UdpLimit::Datagrams(n),
            None => UdpLimit::Duration(common.duration),
        },
        reply_timeout: args.reply_timeout,
        payload: Payload {
            send,
            size: common.size,
            id,
            check,
        },
        threads: common.threads,
    };
    options.validate()?;
    Ok(options)
}

/// Runs the UDP benchmark and prints its report; exit code 1 when a datagram was lost or
/// answered wrongly, or a send failed.
pub(crate) fn run(
    args: &UdpArgs,
    common: &Common<'_>,
    stop: &AtomicBool,
) -> anyhow::Result<ExitCode> {
    let options =
        options(args, common).unwrap_or_else(|e| super::bad_value("bench", format!("{e:#}")));
    if !common.json {
        eprintln!(
            "udp bench: {} socket(s) to {}...",
            options.sockets, options.target
        );
    }
    let scrape = |url: &MetricsUrl| {
        url.scrape(SCRAPE_TIMEOUT)
            .with_context(|| format!("cannot read the server's metrics at {url}"))
    };
    let before = common.server_metrics.map(scrape).transpose()?;
    // The files are created before the load: a path that cannot be written is said at once.
    let create = |path: &Path| {
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))
    };
    let hdr_log = common.hdr_log.map(create).transpose()?;
    let plot = common.plot.map(create).transpose()?;
    let mut report = udp::run(&options, stop)
        .with_context(|| format!("benchmark against udp {} failed", options.target))?;
    if let [text] = common.send {
        text.clone_into(&mut report.request);
    }
    let server = match (common.server_metrics, &before) {
        (Some(url), Some(before)) => {
            let view = UdpServerView::between(url, before, &scrape(url)?, report.lost);
            for warning in &view.warnings {
                eprintln!("warning: client and server disagree: {warning}");
            }
            Some(view)
        }
        _ => None,
    };
    write_opened(common, &report, hdr_log, plot)?;
    let mut out = std::io::stdout().lock();
    let printed = if common.json {
        let mut value = serde_json::to_value(&report).context("cannot encode the report")?;
        if let (Some(server), Some(object)) = (&server, value.as_object_mut()) {
            let server = serde_json::to_value(server).context("cannot encode the report")?;
            object.insert("server".into(), server);
        }
        writeln!(out, "{value}")
    } else {
        match &server {
            Some(server) => write!(out, "{report}\n{server}"),
            None => write!(out, "{report}"),
        }
    };
    match printed.and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e).context("cannot write the report to stdout"),
        Ok(()) => {}
    }
    let code = if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    Ok(super::report_out::judge_figures(
        common.fail_if,
        (&report).into(),
        code,
    ))
}

/// Creates `--hdr-log` and `--plot`, and writes them for `report`.
pub(crate) fn write_files(common: &Common<'_>, report: &UdpReport) -> anyhow::Result<()> {
    let create = |path: &Path| {
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))
    };
    let hdr_log = common.hdr_log.map(create).transpose()?;
    let plot = common.plot.map(create).transpose()?;
    write_opened(common, report, hdr_log, plot)
}

/// Writes `--hdr-log` and `--plot` for `report` into the files opened for them.
fn write_opened(
    common: &Common<'_>,
    report: &UdpReport,
    hdr_log: Option<std::fs::File>,
    plot: Option<std::fs::File>,
) -> anyhow::Result<()> {
    if let (Some(path), Some(file)) = (common.hdr_log, hdr_log) {
        let mut file = std::io::BufWriter::new(file);
        let target = format!("udp {}", report.target);
        bench::write_seconds(
            &target,
            report.start,
            report.duration_s,
            &report.timeline,
            &mut file,
        )
        .and_then(|()| file.flush())
        .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let (Some(path), Some(mut file)) = (common.plot, plot) {
        let svg =
            bench::plot_udp(&[(common.target.to_string(), report)]).map_err(anyhow::Error::msg)?;
        file.write_all(svg.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
