//! `tcpool bench --chat`: the flags of a chat run and its report around
//! [`tcpool::client::bench::chat::run`].

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use tcpool::client::addr::Target;
use tcpool::client::bench::chat::{self, ChatOptions, ChatProtocol};

/// The flags only `--chat` takes.
#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    /// Measure a chat room's fan-out instead of request/reply: senders send numbered, timed
    /// lines for -d, --rate lines/s each; every reader checks it gets every line once and in
    /// order per sender, and times each delivery. Clients are spread round robin over the
    /// targets (the nodes of a cluster).
    #[arg(long, conflicts_with_all = [
        "connections", "messages", "size", "pipeline", "warmup", "send", "requests", "send_file",
        "reply", "expect", "until", "reply_size", "first_message", "connect_rate",
        "reconnect_every", "start_at", "server_metrics", "hdr_log", "plot", "send_proxy",
    ])]
    pub(crate) chat: bool,
    /// --chat: clients that send lines.
    #[arg(long, value_name = "N", default_value_t = 10, requires = "chat",
          value_parser = clap::value_parser!(u32).range(1..))]
    senders: u32,
    /// --chat: clients that read and check every line.
    #[arg(long, value_name = "N", default_value_t = 90, requires = "chat",
          value_parser = clap::value_parser!(u32).range(1..))]
    readers: u32,
    /// --chat: what the targets speak: chat (tcpool serve --mode chat) or redis (senders
    /// PUBLISH, readers SUBSCRIBE, on one channel).
    #[arg(
        long,
        value_name = "PROTOCOL",
        default_value = "chat",
        requires = "chat"
    )]
    chat_protocol: Protocol,
    /// --chat: how long readers may read on after the window for lines still on their way
    /// (such as 500ms, 2s; bare = seconds).
    #[arg(long, value_name = "TIME", default_value = "2s", requires = "chat",
          value_parser = super::parse_seconds)]
    drain: Duration,
}

/// `--chat-protocol`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Protocol {
    /// tcpool's chat mode.
    Chat,
    /// Redis pub/sub.
    Redis,
}

/// What the shared `bench` flags say to a chat run.
pub(crate) struct Common<'a> {
    pub(crate) targets: &'a [Target],
    pub(crate) rate: Option<f64>,
    pub(crate) duration: Duration,
    pub(crate) timeout: Duration,
    pub(crate) threads: usize,
    pub(crate) json: bool,
}

/// Runs the chat benchmark and prints its report; exit code 1 when a line was missing,
/// doubled or out of order, or a client failed.
pub(crate) fn run(
    args: &ChatArgs,
    common: &Common<'_>,
    stop: &AtomicBool,
) -> anyhow::Result<ExitCode> {
    let mut targets = Vec::with_capacity(common.targets.len());
    for target in common.targets {
        let addrs = target
            .resolve()
            .with_context(|| format!("cannot resolve {target}"))?;
        let first = addrs
            .first()
            .with_context(|| format!("{target} has no address"))?;
        targets.push(*first);
    }
    let options = ChatOptions {
        targets,
        protocol: match args.chat_protocol {
            Protocol::Chat => ChatProtocol::Chat,
            Protocol::Redis => ChatProtocol::Redis,
        },
        senders: args.senders as usize,
        readers: args.readers as usize,
        rate: common.rate,
        duration: common.duration,
        drain: args.drain,
        timeout: common.timeout,
        threads: common.threads,
    };
    if !common.json {
        eprintln!(
            "chat bench: {} senders and {} readers over {} target(s)...",
            options.senders,
            options.readers,
            options.targets.len()
        );
    }
    let report = chat::run(&options, stop).context("the chat benchmark failed")?;
    let mut out = std::io::stdout().lock();
    let printed = if common.json {
        let json = serde_json::to_string(&report).context("cannot encode the report")?;
        writeln!(out, "{json}")
    } else {
        write!(out, "{report}")
    };
    match printed.and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e).context("cannot write the report to stdout"),
        Ok(()) => {}
    }
    Ok(if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
