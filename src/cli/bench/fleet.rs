//! `tcpool bench agent` and `tcpool bench --fleet`: the command line around
//! [`tcpool::client::fleet`], and `--fail-if` for a run and a fleet alike.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser};

use tcpool::client::bench::{self, Limit, Options, Report, thresholds};
use tcpool::client::fleet::{
    self, Agent, Broker, Cidr, Coordinator, FleetProgress, FleetRun, Load, OnLoss, Wanted,
    wire::Token,
};

use super::{RunArgs, STOP};

use crate::cli::report_out::judge_figures;

/// The exit code of a fleet run that lost an agent (its report is partial).
pub(super) const AGENT_LOST: u8 = 4;

/// The environment variable that offsets an agent's clock by this many seconds: for tests
/// only, to play a machine whose clock is off.
const CLOCK_OFFSET_ENV: &str = "TCPOOL_TEST_CLOCK_OFFSET";

/// How the agents and the coordinator reach the broker and prove themselves.
#[derive(Debug, Clone, Args)]
pub(super) struct BrokerArgs {
    /// A shared token file (at least 16 bytes): every fleet message is signed with it
    /// (HMAC-SHA256), and agents ignore work not signed with it [default: none; then
    /// --nats-creds must guard the subjects].
    #[arg(long, value_name = "FILE")]
    fleet_token_file: Option<PathBuf>,
    /// A NATS credentials file (user JWT and nkey seed) for a broker that asks for one
    /// [default: none].
    #[arg(long, value_name = "FILE")]
    nats_creds: Option<PathBuf>,
    /// Speak TLS to the broker, its certificate checked against this CA [default: plain].
    #[arg(long, value_name = "FILE")]
    nats_tls_ca: Option<PathBuf>,
}

impl BrokerArgs {
    pub(super) fn broker(&self, url: &str) -> anyhow::Result<Broker> {
        let token = match &self.fleet_token_file {
            Some(path) => {
                Some(Token::read(path).map_err(|e| anyhow::anyhow!("--fleet-token-file {e}"))?)
            }
            None => None,
        };
        let broker = Broker {
            url: url.to_owned(),
            creds: self.nats_creds.clone(),
            tls_ca: self.nats_tls_ca.clone(),
            token,
        };
        broker.check().map_err(anyhow::Error::msg)?;
        if !broker.guarded() {
            super::super::bad_value(
                "bench",
                "a fleet needs --fleet-token-file or --nats-creds: an agent takes work only from a coordinator that proves itself",
            );
        }
        Ok(broker)
    }
}

/// `tcpool bench agent` flags.
#[derive(Debug, Args)]
#[command(after_help = super::super::examples(AGENT_EXAMPLES))]
pub(super) struct AgentArgs {
    /// The NATS broker: nats://HOST:PORT.
    #[arg(long, value_name = "URL")]
    nats: String,
    /// This agent's name in the fleet: letters, digits, - and _ [default: the host name and
    /// process id].
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    name: Option<String>,
    /// A block of addresses this agent may load, such as 10.0.0.0/8 or 192.0.2.7; given more
    /// than once, any of them. Work for any other target is refused [default: loopback
    /// only, 127.0.0.0/8 and ::1].
    #[arg(long, value_name = "CIDR")]
    allow_target: Vec<Cidr>,
    #[command(flatten)]
    broker: BrokerArgs,
}

const AGENT_EXAMPLES: &str = "
  # An agent on the broker at 127.0.0.1:4222, loading loopback targets only
  tcpool bench agent --nats nats://127.0.0.1:4222 --fleet-token-file fleet.token --name gen1
  # One that may load the servers of 10.1.0.0/16
  tcpool bench agent --nats nats://broker:4222 --fleet-token-file fleet.token --allow-target 10.1.0.0/16
  # Drive three agents as one generator, failing (exit 3) if the fleet's p99 is 5 ms or more
  tcpool bench 127.0.0.1:8900 --fleet nats://127.0.0.1:4222 --fleet-token-file fleet.token --agents 3 --fail-if 'p99<5ms'";

/// The fleet's flags on a run, and `--fail-if`.
#[derive(Debug, Args)]
pub(super) struct FleetArgs {
    /// Drive a fleet of `tcpool bench agent`s on this NATS broker (nats://HOST:PORT) instead
    /// of running here: the connections, -n and --rate are split between them exactly
    /// [default: run here].
    #[arg(long, value_name = "URL", conflicts_with_all = ["requests", "send_file"])]
    pub(super) fleet: Option<String>,
    /// --fleet: how many agents (any idle ones, by name), or which (a,b,c), each with a
    /// weight for unequal machines (a:3,b:1) [default: 1].
    #[arg(long, value_name = "N|NAMES", requires = "fleet", value_parser = parse_agents)]
    pub(super) agents: Option<Wanted>,
    /// --fleet: when an agent stops ticking for 2 s: continue (the report is partial,
    /// naming it) or abort (every agent stops) [default: continue].
    #[arg(long, value_name = "WHAT", requires = "fleet", value_parser = parse_on_loss)]
    pub(super) on_agent_loss: Option<OnLoss>,
    /// --fleet: how long to look for the agents on the broker (such as 5s; bare = seconds).
    #[arg(long, value_name = "TIME", default_value = "10s", requires = "fleet", value_parser = super::super::parse_positive_seconds)]
    pub(super) agents_wait: Duration,
    /// --fleet: also write each agent's own report here, as agent-NAME.json (for `bench
    /// merge`, `bench plot`) [default: not kept].
    #[arg(long, value_name = "DIR", requires = "fleet")]
    pub(super) keep_reports: Option<PathBuf>,
    #[command(flatten)]
    pub(super) broker: BrokerArgs,
    /// Thresholds judged on the (merged) report, such as 'p99<5ms,p999<20ms,errors<0.1%,rate>=0.95':
    /// p50 p90 p99 p999 max mean (a time), errors (a count, or % of messages), rate (the share
    /// of --rate reached) and throughput (msg/s), with <, <=, > or >=; with --udp a message is
    /// a datagram answered and an error one lost or wrong. Any failed: exit code 3, each named
    /// on stderr with how far off [default: none].
    #[arg(long, value_name = "LIST", value_parser = parse_fail_if)]
    pub(super) fail_if: Option<FailIf>,
}

/// `--fail-if`'s thresholds (one value holding a list, for clap).
#[derive(Debug, Clone)]
pub(super) struct FailIf(Vec<thresholds::Threshold>);

impl FailIf {
    pub(super) fn list(&self) -> &[thresholds::Threshold] {
        &self.0
    }
}

fn parse_fail_if(s: &str) -> Result<FailIf, String> {
    thresholds::parse(s).map(FailIf)
}

fn parse_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| s.to_owned())
        .ok_or_else(|| format!("{s:?}: a name is 1 to 64 letters, digits, - and _"))
}

fn parse_agents(s: &str) -> Result<Wanted, String> {
    if let Ok(n) = s.parse::<usize>() {
        return if n == 0 {
            Err("at least 1 agent".into())
        } else {
            Ok(Wanted::Count(n))
        };
    }
    let mut names = Vec::new();
    for part in s.split(',') {
        let (name, weight) = match part.split_once(':') {
            Some((name, w)) => (
                name,
                w.parse::<u32>()
                    .ok()
                    .filter(|w| *w > 0)
                    .ok_or_else(|| format!("{part:?}: a weight is a whole number of 1 or more"))?,
            ),
            None => (part, 1),
        };
        let name = parse_name(name)?;
        if names.iter().any(|(n, _)| *n == name) {
            return Err(format!("agent {name} is named twice"));
        }
        names.push((name, weight));
    }
    Ok(Wanted::Named(names))
}

fn parse_on_loss(s: &str) -> Result<OnLoss, String> {
    match s {
        "continue" => Ok(OnLoss::Continue),
        "abort" => Ok(OnLoss::Abort),
        _ => Err(format!("{s:?}: continue or abort")),
    }
}

/// The flags of a coordinator's run, parsed on an agent.
#[derive(Debug, Parser)]
#[command(no_binary_name = true)]
struct WorkArgs {
    #[command(flatten)]
    run: RunArgs,
}

/// Runs `tcpool bench agent` until Ctrl-C or SIGTERM.
pub(super) fn agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let broker = args.broker.broker(&args.nats)?;
    let name = match args.name {
        Some(name) => name,
        // HOST-PID, as a cluster node names itself, without the dots a subject would split at.
        None => tcpool::server::cluster::default_node().replace('.', "-"),
    };
    let clock_offset = std::env::var(CLOCK_OFFSET_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .unwrap_or(0.0);
    if clock_offset != 0.0 {
        log::warn!(
            "bench agent {name}: its clock is offset by {clock_offset} s ({CLOCK_OFFSET_ENV}, a test hook)"
        );
    }
    let agent = Agent {
        broker,
        name,
        allow: if args.allow_target.is_empty() {
            Cidr::loopback()
        } else {
            args.allow_target
        },
        clock_offset,
    };
    super::signals()?;
    let build = |work: &fleet::wire::Work| -> Result<Load, String> {
        let parsed =
            WorkArgs::try_parse_from(&work.args).map_err(|e| format!("flags: {}", e.kind()))?;
        if parsed.run.targets.len() != 1 || parsed.run.chat.chat {
            return Err("an agent runs one target, not --chat".into());
        }
        if parsed.run.udp.udp {
            let common = super::udp_common(&parsed.run);
            return super::super::bench_udp::options(&parsed.run.udp, &common)
                .map(|o| Load::Udp(Box::new(o)))
                .map_err(|e| format!("{e:#}"));
        }
        let target = &parsed.run.targets[0];
        let addrs = target
            .resolve()
            .map_err(|e| format!("cannot resolve {target}: {e}"))?;
        super::options(&parsed.run, addrs)
            .map(|o| Load::Tcp(Box::new(o)))
            .map_err(|e| format!("{e:#}"))
    };
    agent.serve(&build, &STOP).map_err(anyhow::Error::msg)?;
    Ok(ExitCode::SUCCESS)
}

/// The flags after `bench` on this command line: what the agents are sent.
pub(super) fn bench_args() -> Vec<String> {
    std::env::args()
        .skip_while(|a| a != "bench")
        .skip(1)
        .collect()
}

/// A fleet's share of a run: connections (or sockets), messages (or datagrams), the rate,
/// and the window, as the run's own options say them.
pub(super) struct Share {
    pub(super) connections: usize,
    pub(super) messages: Option<u64>,
    pub(super) rate: Option<f64>,
    pub(super) window: Option<Duration>,
}

/// Finds the agents, has them run `share` of the load and waits for their reports, showing
/// progress on a terminal; `--keep-reports` gets each agent's report, TCP or UDP.
pub(super) fn drive(args: &RunArgs, share: Share) -> anyhow::Result<FleetRun> {
    let url = args.fleet.fleet.as_deref().unwrap_or_default();
    let coordinator = Coordinator {
        broker: args.fleet.broker.broker(url)?,
        wanted: args.fleet.agents.clone().unwrap_or(Wanted::Count(1)),
        args: bench_args(),
        connections: share.connections,
        messages: share.messages,
        rate: share.rate,
        window: share.window,
        start_at: args.start_at,
        lead: Duration::from_secs(2),
        find_for: args.fleet.agents_wait,
        on_loss: args.fleet.on_agent_loss.unwrap_or_default(),
    };
    let terminal = !args.json && std::io::stderr().is_terminal();
    let show = |p: &FleetProgress| {
        if terminal {
            eprint!("\r\x1b[2K{}", progress_line(p));
        }
    };
    let run = coordinator.run(&STOP, &show);
    if terminal {
        eprint!("\r\x1b[2K");
    }
    let run = run.map_err(anyhow::Error::msg)?;
    if let Some(dir) = &args.fleet.keep_reports {
        for a in &run.agents {
            let text = match (&a.report, &a.udp) {
                (Some(report), _) => serde_json::to_string(report),
                (None, Some(report)) => serde_json::to_string(report),
                (None, None) => continue,
            };
            let path = dir.join(format!("agent-{}.json", a.name));
            std::fs::write(&path, text.context("cannot encode a report")?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(run)
}

/// Drives the fleet for `args` and prints the merged report.
pub(super) fn coordinate(args: &RunArgs, options: &Options) -> anyhow::Result<ExitCode> {
    let before = match &args.server_metrics {
        Some(url) => Some(
            url.scrape(options.connect_timeout)
                .with_context(|| format!("cannot read the server's metrics at {url}"))?,
        ),
        None => None,
    };
    let run = drive(
        args,
        Share {
            connections: options.connections,
            messages: match options.limit {
                Limit::Messages(n) => Some(n),
                Limit::Duration(_) => None,
            },
            rate: options.rate,
            window: match options.limit {
                Limit::Duration(d) => Some(d),
                Limit::Messages(_) => None,
            },
        },
    )?;
    let mut reports = run.reports();
    if reports.is_empty() {
        anyhow::bail!("no agent sent a report: {}", agent_failures(&run));
    }
    let merged = bench::merge(&mut reports).map_err(anyhow::Error::msg)?;
    let report = merged.report;
    super::write_files(args, &report)?;
    let server = match (&args.server_metrics, &before) {
        (Some(url), Some(before)) => Some(super::server_view(
            url,
            before,
            &report,
            options.connect_timeout,
        )?),
        _ => None,
    };
    let value = fleet_json(&run);
    let code = super::super::report_out::print_extra(
        &report,
        server.as_ref(),
        args.json,
        Some(("fleet", value)),
    )?;
    if !args.json {
        print_fleet(&run)?;
    }
    let code = judge(args, &report, code);
    Ok(if STOP.load(Ordering::SeqCst) {
        ExitCode::from(130)
    } else if !run.lost.is_empty() && code == ExitCode::SUCCESS {
        ExitCode::from(AGENT_LOST)
    } else {
        code
    })
}

pub(super) fn agent_failures(run: &FleetRun) -> String {
    let mut why: Vec<String> = run
        .agents
        .iter()
        .filter_map(|a| Some(format!("{}: {}", a.name, a.failed.as_ref()?)))
        .collect();
    why.extend(run.lost.iter().map(|l| format!("{}: lost", l.agent)));
    why.join("; ")
}

pub(super) fn progress_line(p: &FleetProgress) -> String {
    let phase = if p.connecting { "connecting " } else { "" };
    let lost = if p.lost > 0 {
        format!("  {} LOST", p.lost)
    } else {
        String::new()
    };
    format!(
        "fleet {} agent(s){lost}  {phase}{:.0} msg/s  {} done  p50 {} µs  p99 {} µs  {} err",
        p.agents, p.msgs_per_sec, p.messages, p.p50_us, p.p99_us, p.errors
    )
}

/// The fleet's part of the JSON report: the agents, their clocks and shares, and what was
/// lost.
pub(super) fn fleet_json(run: &FleetRun) -> serde_json::Value {
    let agents: Vec<serde_json::Value> = run
        .agents
        .iter()
        .map(|a| {
            serde_json::json!({
                "name": a.name,
                "connections": a.share.connections,
                "conn_offset": a.share.conn_offset,
                "messages_asked": a.share.messages,
                "rate_asked": a.share.rate,
                "clock_offset_s": a.clock.offset,
                "rtt_s": a.clock.rtt,
                "start": a.start,
                "messages": a.report.as_ref().map(|r| r.messages),
                "errors": a.report.as_ref().map(|r| r.errors),
                "latency_us": a.report.as_ref().map(|r| r.latency_us),
                "datagrams_sent": a.udp.as_ref().map(|r| r.sent),
                "datagrams_lost": a.udp.as_ref().map(|r| r.lost),
                "rtt_us": a.udp.as_ref().map(|r| r.rtt_us),
                "failed": a.failed,
            })
        })
        .collect();
    let lost: Vec<serde_json::Value> = run
        .lost
        .iter()
        .map(|l| serde_json::json!({"agent": l.agent, "seconds": l.seconds}))
        .collect();
    serde_json::json!({
        "run": run.run,
        "agents": agents,
        "skew_s": run.skew_s(),
        "uncertainty_s": run.uncertainty_s,
        "partial": !run.lost.is_empty()
            || run.agents.iter().any(|a| a.report.is_none() && a.udp.is_none()),
        "lost": lost,
        "stopped": run.stopped,
    })
}

pub(super) fn print_fleet(run: &FleetRun) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nFleet     run {}: {} agent(s)",
        run.run,
        run.agents.len()
    )?;
    for a in &run.agents {
        let what = match (&a.report, &a.failed) {
            (Some(r), _) => format!(
                "{} msgs, {} err, p99 {} µs",
                r.messages, r.errors, r.latency_us.p99
            ),
            (None, _) if a.udp.is_some() => a.udp.as_ref().map_or_else(String::new, |r| {
                format!("{} sent, {} lost, p99 {} µs", r.sent, r.lost, r.rtt_us.p99)
            }),
            (None, Some(why)) => format!("no report: {why}"),
            (None, None) => "no report".into(),
        };
        writeln!(
            out,
            "  {:<12} {:>6} conn from #{:<6} clock {:+.4} s ±{:.2} ms  {what}",
            a.name,
            a.share.connections,
            a.share.conn_offset,
            a.clock.offset,
            a.clock.uncertainty() * 1e3
        )?;
    }
    if let Some(skew) = run.skew_s() {
        writeln!(
            out,
            "  starts within {:.2} ms of each other (clocks known to ±{:.2} ms)",
            skew * 1e3,
            run.uncertainty_s * 1e3
        )?;
    }
    for l in &run.lost {
        writeln!(
            out,
            "  PARTIAL: agent {} was lost after {} s of the window; its data is left out of the totals",
            l.agent, l.seconds
        )?;
    }
    Ok(())
}

/// `--fail-if`: judges `report`, names each failed threshold on stderr, and turns `code`
/// into exit code 3 if any failed.
pub(super) fn judge(args: &RunArgs, report: &Report, code: ExitCode) -> ExitCode {
    judge_figures(
        args.fleet.fail_if.as_ref().map(FailIf::list),
        report.into(),
        code,
    )
}
