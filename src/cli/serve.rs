//! `tcpool serve`: flags, signals and the console around [`tcpool::server::Server`].
//!
//! SIGINT (and Ctrl-C at the prompt) and SIGTERM shut down gracefully, a second one exits at
//! once; SIGHUP hands the listening sockets over to a fresh copy of the program
//! ([`server::handover`]) and then shuts this one down — unless a terminal is attached
//! (stdin, stdout or stderr): there SIGHUP means the terminal hung up, and the server shuts
//! down; in manual mode SIGHUP is ignored (the operator's console cannot be handed over).
//!
//! Longer than 500 lines on purpose: every `serve` flag is here with the help text a user reads
//! in `--help`, and the run that wires them together; a third of it is that help.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use parking_lot::Mutex;
use signal_hook::consts::{SIGHUP, SIGTERM};

use tcpool::Shutdown;
use tcpool::server::arrival::handover::{self, Sockets};
use tcpool::server::arrival::notify::Notify;
use tcpool::server::{
    self, Balancing, Config, FaultSpec, Mode, Overflow, Printer, Server, WorkerSched,
    control::ControlPlane, operator::admin::Admin, operator::audit::Source,
};

use super::LogLevel;
use super::log_format::LogFormat;
use super::terminal;
use super::{bad_value, parse_positive_seconds, parse_seconds, parse_size_u32};

/// How long the exit waits for stdout and stderr to take the last lines, at least.
const EXIT_FLUSH: Duration = Duration::from_millis(200);

/// How long the line editor is given to draw the last lines handed to it (and its prompt
/// after them) before the terminal is given back.
const PROMPT_SETTLE: Duration = Duration::from_millis(50);

/// `tcpool serve` flags.
#[derive(Debug, Args)]
#[command(after_help = super::examples(EXAMPLES))]
pub(crate) struct ServeArgs {
    /// Address to listen on (repeatable: `--bind 127.0.0.1 --bind ::1`). 0.0.0.0 is every
    /// IPv4 interface; `::` is every interface, IPv4 too, unless an IPv4 address is bound
    /// beside it.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    bind: Vec<IpAddr>,
    /// Port to listen on; 0 picks a free one (the log shows which).
    #[arg(short = 'p', long, default_value_t = tcpool::DEFAULT_PORT)]
    port: u16,
    /// Worker threads, each serving many clients [default: the number of CPUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
    /// How sessions are shared among the workers: gathered on as few as keep up, one at the
    /// start (`auto`), or each connection to the next worker in turn, for good.
    #[arg(long, value_enum, default_value_t = BalanceArg::Auto)]
    balance: BalanceArg,
    /// How the worker threads are scheduled (Linux): the policy the process started with, a
    /// woken worker answering at once (`normal`); or SCHED_BATCH (`batch`), where a woken
    /// worker waits for the running thread's turn to end and handles more at each wake, at
    /// the cost of a p99 up to ten times longer. A policy set from outside (`chrt`, systemd)
    /// is kept either way.
    #[arg(long, value_enum, value_name = "POLICY", default_value_t = SchedArg::Normal)]
    worker_sched: SchedArg,
    /// Connections accepted but not yet taken by a worker; while it is full, --overflow
    /// decides.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    backlog: u32,
    /// Most clients served at once; one more is answered `busy` and closed [default: 10000,
    /// lowered to fit the file descriptor limit].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_conns: Option<u32>,
    /// What the server replies.
    #[arg(long, value_enum, default_value_t = ModeArg::Echo)]
    mode: ModeArg,
    /// What to do while the backlog is full: let clients wait in the kernel's queue, or
    /// answer `busy` and close.
    #[arg(long, value_enum, default_value_t = OverflowArg::Wait)]
    overflow: OverflowArg,
    /// Close a session when no byte moved either way for this long; 0 = never
    /// (such as 250ms, 5s, 2m; bare = seconds).
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", default_value = "0", value_parser = parse_seconds)]
    idle_timeout: Duration,
    /// In chat and manual mode, the longest partial line held for a client; a longer one is
    /// cut into messages. At most 2147483583 bytes, so that an --outbox-limit can hold two of
    /// them (such as 64KiB, 1MB; bare = bytes).
    #[arg(allow_hyphen_values = true, long, value_name = "SIZE", default_value = "64KiB", value_parser = parse_max_line)]
    max_line: u32,
    /// Most bytes queued for one client; a reader that falls further behind is disconnected.
    /// At least 2 × (--max-line + 64) (such as 512KiB, 1MB; bare = bytes).
    #[arg(allow_hyphen_values = true, long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size_u32)]
    outbox_limit: u32,
    /// In chat, how long a client may stay more than half --outbox-limit behind before it is
    /// disconnected; meanwhile the senders it lags behind are not read (such as 250ms, 5s, 2m; bare = seconds).
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", default_value = "3s", value_parser = parse_positive_seconds)]
    outbox_grace: Duration,
    /// How long a graceful shutdown may take; sessions still open then are closed without a
    /// goodbye (such as 250ms, 5s, 2m; bare = seconds).
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", default_value = "5s", value_parser = parse_positive_seconds)]
    shutdown_timeout: Duration,
    /// Serve the admin HTTP endpoint (/metrics, /healthz, /sessions, /stats, /faults,
    /// /tls/reload) on this address, such as 127.0.0.1:9900 or localhost:9900. Any address
    /// but loopback needs --admin-token-file [default: off].
    #[arg(long, value_name = "ADDR", value_parser = parse_admin_addr)]
    admin: Option<SocketAddr>,
    /// A file holding the admin endpoint's bearer token: every route but /healthz then needs
    /// `Authorization: Bearer TOKEN`. Read once, at start [default: none, no token asked;
    /// loopback only].
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<std::path::PathBuf>,
    /// Let /metrics answer without the admin token (for a Prometheus without it).
    #[arg(long)]
    admin_public_metrics: bool,
    /// Chat mode: share the room with the other nodes of a cluster through the NATS broker at
    /// this URL, such as nats://127.0.0.1:4222 (core NATS: at most once; losses are counted)
    /// [default: off, one room per process].
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// With --cluster: the cluster's name; nodes with the same name share a room.
    #[arg(long, value_name = "NAME", default_value = "tcpool")]
    cluster_name: String,
    /// With --cluster: this node's name, shown to the other nodes' clients as `<#ID@NODE>`
    /// [default: the host name and the process id].
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// With --cluster: connect to the broker with this NATS credentials file (a user JWT and
    /// its nkey seed, as `nsc` writes them) [default: none].
    #[arg(long, value_name = "FILE")]
    cluster_creds: Option<std::path::PathBuf>,
    /// With --cluster: TLS to the broker, its certificate checked against the CA
    /// certificates (PEM) in this file [default: no TLS].
    #[arg(long, value_name = "FILE")]
    cluster_tls_ca: Option<std::path::PathBuf>,
    /// With --cluster: bring back what an outage loses, up to this many lines: lines typed
    /// while the broker is away are held and sent when it is back, and the broker keeps the
    /// room's last N lines (JetStream, `nats-server -js`) for a node whose link was down to
    /// fetch [default: 0, none: core NATS, at most once].
    #[arg(long, value_name = "N", default_value_t = 0)]
    cluster_history: usize,
    /// A fault for new sessions, `KIND[,key=value...][,p=P]` (repeatable; several combine):
    /// `latency,delay=20ms,jitter=5ms`, `bandwidth,rate=64KiB`, `slice,size=4,delay=10ms`,
    /// `stall,after=3,for=2s`, `reset,after=5`, `close,after=2s`, `truncate,bytes=3`; on TLS
    /// connections `tls-delay,delay=2s`, `tls-abort[,at=mid-handshake]`,
    /// `tls-alert,alert=protocol_version`, `tls-cert,cert=expired|wrong-name|self-signed`,
    /// `tls-truncate,after=3`; on --udp datagrams, each one, with no `p`: `udp-drop=0.1`
    /// (`,dir=request`), `udp-dup=0.2`, `udp-reorder=8`, `udp-delay=50ms±10ms`,
    /// `udp-corrupt=0.01`, `udp-truncate=8`, `udp-rate=1000`.
    /// `p` is the chance a new session gets it (default 1); a bare `after` counts replies
    /// [default: none].
    #[arg(long = "fault", value_name = "SPEC")]
    faults: Vec<FaultSpec>,
    /// Seed of the per-session fault draws: the same seed and order of connections give the
    /// same sessions the same faults and jitter (and the same datagrams the same udp-* draws)
    /// [default: a new one each run, logged].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Let other processes with --reuse-port listen on the same port (SO_REUSEPORT); the
    /// kernel spreads new connections over them.
    #[arg(long)]
    reuse_port: bool,
    /// Also echo UDP datagrams, on the same port number as the first listener (each echoed
    /// to its sender, never larger than it; with --mode manual shown on the console as
    /// `udp#N` and answered with `@uN text`) [default: off, TCP only].
    #[arg(long)]
    udp: bool,
    /// With --udp: its port, if not the first listener's (implies --udp) [default: the
    /// first listener's port number].
    #[arg(long, value_name = "PORT")]
    udp_port: Option<u16>,
    /// With --udp: the sources remembered at most (for the stamp and the rate limit), split
    /// evenly over the workers; past it, the least recently seen is forgotten.
    #[arg(long, value_name = "N", default_value_t = tcpool::server::udp::DEFAULT_UDP_PEERS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    udp_peers: u32,
    /// With --udp: datagrams a second answered at most for one source (IP and port), with a
    /// burst of as many; the rest are read and not answered [default: none, no limit].
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u32).range(1..))]
    udp_rate_per_source: Option<u32>,
    /// With --udp: the first 8 bytes of each echo of 8 bytes or more become the number of
    /// datagrams received from its source so far, big-endian [default: off].
    #[arg(long)]
    udp_stamp: bool,
    /// With --udp: send runs of same-sized echoes to one peer as one UDP_SEGMENT message
    /// (GSO); off if the kernel refuses it.
    #[arg(long, value_enum, value_name = "on|off", default_value_t = OnOff::On)]
    udp_gso: OnOff,
    /// With --udp: let the kernel hand over datagrams of one source coalesced (UDP_GRO),
    /// each still echoed on its own.
    #[arg(long, value_enum, value_name = "on|off", default_value_t = OnOff::On)]
    udp_gro: OnOff,
    /// With --udp: what a datagram gets back: `echo`, itself; `sockperf`, sockperf's answer
    /// (only a message that asks for one, marked as the server's), so that `sockperf
    /// ping-pong` and `under-load` can load this server as they load `sockperf server`.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = UdpReplyArg::Echo)]
    udp_reply: UdpReplyArg,
    /// Speak TLS with a certificate made at start (`auto`): ECDSA P-256, for localhost,
    /// 127.0.0.1, ::1 and the host name, signed by a CA whose certificate goes to
    /// --tls-ca-out for clients to verify with. Without --tls-port, every listener speaks
    /// TLS [default: off].
    #[arg(long, value_enum, value_name = "auto", conflicts_with_all = ["tls_cert", "tls_key"])]
    tls: Option<TlsArg>,
    /// Speak TLS with this certificate chain (PEM, the server's certificate first); with
    /// --tls-key. Given more than once, each with its --tls-key in the same order, a client
    /// gets the certificate for the name it asks for (SNI), or the first. Without
    /// --tls-port, every listener speaks TLS [default: none].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Vec<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC), one for each [default: none].
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Vec<std::path::PathBuf>,
    /// Speak TLS on this port (on every --bind address), plaintext staying on --port
    /// [default: none, TLS on --port].
    #[arg(long, value_name = "PORT")]
    tls_port: Option<u16>,
    /// How long a TLS client may take to finish its handshake before it is closed (such as
    /// 250ms, 5s, 2m; bare = seconds).
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_seconds)]
    tls_handshake_timeout: Duration,
    /// Most new TLS connections a second, server-wide (HAProxy's maxsslrate): beyond it a TLS
    /// connection is closed at once, before its handshake, and counted as `tls-rate`. A
    /// bucket of a tenth of a second's worth (at least 1), refilled continuously; plaintext
    /// connections never count [default: no cap].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    tls_max_handshake_rate: Option<u32>,
    /// Ask TLS clients for a certificate signed by these CAs (PEM): mutual TLS. Each
    /// session's certificate name shows in /list [default: none asked].
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// With --tls-client-ca: turn away a client without a certificate (`required`), or serve
    /// it without one (`optional`).
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        default_value = "required",
        requires = "tls_client_ca"
    )]
    tls_client_auth: ClientAuthArg,
    /// With --tls-client-ca: let in only clients whose certificate has this name (its
    /// common name, exactly; repeatable) [default: any the CA signed].
    #[arg(long = "allow-cn", value_name = "NAME", requires = "tls_client_ca")]
    allow_cn: Vec<String>,
    /// With --tls-client-ca: turn away clients whose certificate has this name (repeatable;
    /// wins over --allow-cn) [default: nobody].
    #[arg(long = "deny-cn", value_name = "NAME", requires = "tls_client_ca")]
    deny_cn: Vec<String>,
    #[command(flatten)]
    tls_offer: super::tls::TlsOfferArgs,
    /// Encrypt TLS session tickets with the keys of this file, made with a new key (mode
    /// 0600) if it does not exist: every process given the same file (--reuse-port, the new
    /// process of a hand-over) resumes the sessions of the others. One key a line, 64 hex
    /// digits; the first encrypts, all decrypt [default: a key made at start, for this
    /// process alone].
    #[arg(long, value_name = "FILE")]
    tls_ticket_key_file: Option<std::path::PathBuf>,
    /// With --tls-cert: how often the certificate, key and ticket key files are looked at;
    /// once changed, they are reloaded for new handshakes (POST /tls/reload and /tls reload
    /// do it at once); 0 = never (such as 250ms, 5s, 2m; bare = seconds).
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", default_value = "1s", value_parser = parse_seconds)]
    tls_watch: Duration,
    /// Where `--tls auto` writes its CA's certificate [default: tcpool-ca-PID.pem in the
    /// temporary directory].
    #[arg(long, value_name = "FILE")]
    tls_ca_out: Option<std::path::PathBuf>,
    /// Let only clients in this address block connect, `10.0.0.0/8`, `::1` (repeatable; any
    /// one matching lets a client in) [default: everyone].
    #[arg(long = "allow", value_name = "CIDR")]
    allow: Vec<server::Cidr>,
    /// Turn away clients in this address block at once, without a reply (repeatable; wins
    /// over --allow) [default: nobody].
    #[arg(long = "deny", value_name = "CIDR")]
    deny: Vec<server::Cidr>,
    /// Expect a PROXY protocol header (HAProxy's `send-proxy` / `send-proxy-v2`) at the
    /// start of every connection; its client becomes the session's peer [default: off].
    #[arg(long, value_enum, value_name = "VERSION")]
    proxy_protocol: Option<ProxyArg>,
    /// How long a connection may take to send its PROXY header (such as 250ms, 5s, 2m; bare = seconds).
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", default_value = "5s", value_parser = parse_positive_seconds)]
    proxy_timeout: Duration,
    /// How long a hand-over (SIGHUP) waits for the new process to say it is ready before it
    /// gives up, stops it and keeps serving (such as 250ms, 5s, 2m; bare = seconds).
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", default_value = "5s", value_parser = parse_positive_seconds)]
    handover_timeout: Duration,
    /// How log lines are written (to stderr): env_logger's text, or one JSON object per line.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

const EXAMPLES: &str = "
  # Echo on 127.0.0.1:8900 until Ctrl-C, or `quit` typed on its console
  tcpool serve
  # A chat room on port 9000 for 100 people at most, shared with other nodes through NATS
  tcpool serve --mode chat --port 9000 --max-conns 100 --cluster nats://127.0.0.1:4222
  # Metrics and health on 127.0.0.1:9900, and a JSON log line for each session
  tcpool serve --admin 127.0.0.1:9900 --log-format json --log-level debug
  # A slow server: half the sessions get every reply 20 ms (± 5 ms) late
  tcpool serve --fault latency,delay=20ms,jitter=5ms,p=0.5";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum UdpReplyArg {
    /// Every datagram back as it came.
    Echo,
    /// sockperf's protocol.
    Sockperf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Send back the exact bytes received.
    Echo,
    /// Relay each message to every other client.
    Chat,
    /// The operator reads each message and types the replies.
    Manual,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProxyArg {
    /// Text headers (`send-proxy`).
    V1,
    /// Binary headers (`send-proxy-v2`).
    V2,
    /// Either.
    Any,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BalanceArg {
    /// Gather sessions on as few workers as keep up; spread them when those fall behind.
    Auto,
    /// Each connection to the next worker in turn; sessions never move.
    RoundRobin,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SchedArg {
    /// SCHED_BATCH: no preemption at wake-up, fewer context switches a message, a longer tail.
    Batch,
    /// The policy the process started with.
    Normal,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OverflowArg {
    /// Stop accepting until a worker catches up.
    Wait,
    /// Answer `busy` and close.
    Reject,
}

/// Parses `--max-line`: a size that leaves room for a valid `--outbox-limit`, which must be
/// at least [`server::min_outbox_limit`] of it and at most `u32::MAX`.
fn parse_max_line(s: &str) -> Result<u32, String> {
    let n = parse_size_u32(s)?;
    // min_outbox_limit is 2 × (max_line + overhead).
    let most = u32::MAX as usize / 2 - server::min_outbox_limit(0) / 2;
    if n as usize > most {
        return Err(format!(
            "{s:?} is more than {most} bytes, the longest line an --outbox-limit \
             (at most {}) can hold twice",
            u32::MAX
        ));
    }
    Ok(n)
}

/// Parses `--admin`: `IP:PORT`, or `NAME:PORT` for a name that resolves to loopback
/// (`localhost:9900`), which becomes that loopback address (IPv4 first).
fn parse_admin_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs as _;
    let mut found: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("{s:?} is not IP:PORT or NAME:PORT ({e})"))?
        .filter(|a| a.ip().is_loopback())
        .collect();
    found.sort_by_key(|a| !a.is_ipv4());
    found
        .first()
        .copied()
        .ok_or_else(|| format!("{s:?}: a name must resolve to a loopback address; give an IP"))
}

/// The admin token of `--admin-token-file`: exit 1 when the file cannot be read, 2 when what
/// it holds is not a token.
fn admin_token(path: &std::path::Path) -> anyhow::Result<server::operator::admin::Token> {
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
    match std::str::from_utf8(&text)
        .map_err(|_| std::io::Error::other("the token is not UTF-8"))
        .and_then(server::operator::admin::Token::new)
    {
        Ok(token) => Ok(token),
        Err(e) => bad_value(
            "serve",
            format!("--admin-token-file {}: {e}", path.display()),
        ),
    }
}

/// Runs the server until a shutdown; exit code 0 after any requested shutdown.
/// `--tls-client-auth`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClientAuthArg {
    /// A client without a certificate fails its handshake.
    Required,
    /// A client may come without one.
    Optional,
}

/// `--tls`'s one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TlsArg {
    /// Make a certificate at start.
    Auto,
}

/// Where the server's certificate comes from, if it speaks TLS.
fn tls_certs(args: &ServeArgs) -> Option<tcpool::tls::ServerCerts> {
    if args.tls_cert.len() != args.tls_key.len() {
        bad_value(
            "serve",
            format!(
                "{} --tls-cert and {} --tls-key: give a key for each certificate, in the same \
                 order",
                args.tls_cert.len(),
                args.tls_key.len()
            ),
        );
    }
    match (&args.tls, args.tls_cert.as_slice(), args.tls_key.as_slice()) {
        (Some(TlsArg::Auto), _, _) => Some(tcpool::tls::ServerCerts::Auto {
            ca_out: args.tls_ca_out.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("tcpool-ca-{}.pem", std::process::id()))
            }),
        }),
        (None, [chain], [key]) => Some(tcpool::tls::ServerCerts::Files {
            chain: chain.clone(),
            key: key.clone(),
        }),
        (None, [], []) => None,
        (None, chains, keys) => Some(tcpool::tls::ServerCerts::Several(
            chains.iter().cloned().zip(keys.iter().cloned()).collect(),
        )),
    }
}

pub(crate) fn run(args: ServeArgs, log_level: Option<&LogLevel>) -> anyhow::Result<ExitCode> {
    let manual = matches!(args.mode, ModeArg::Manual);
    let tls_certs = tls_certs(&args);
    let config = Config {
        udp: match (args.udp, args.udp_port) {
            (_, Some(port)) => Some(port),
            (true, None) => Some(0),
            (false, None) => None,
        },
        udp_options: tcpool::server::udp::UdpOptions {
            peers: args.udp_peers as usize,
            rate_per_source: args.udp_rate_per_source,
            stamp: args.udp_stamp,
            gso: args.udp_gso == OnOff::On,
            gro: args.udp_gro == OnOff::On,
            reply: match args.udp_reply {
                UdpReplyArg::Echo => tcpool::server::udp::UdpReply::Echo,
                UdpReplyArg::Sockperf => tcpool::server::udp::UdpReply::Sockperf,
            },
        },
        workers: args.workers.map_or(0, usize::from),
        balance: match args.balance {
            BalanceArg::Auto => Balancing::Auto,
            BalanceArg::RoundRobin => Balancing::RoundRobin,
        },
        workers_at_start: Config::default().workers_at_start,
        worker_sched: match args.worker_sched {
            SchedArg::Batch => WorkerSched::Batch,
            SchedArg::Normal => WorkerSched::Normal,
        },
        backlog: args.backlog as usize,
        max_conns: args.max_conns.map(|n| n as usize),
        mode: match args.mode {
            ModeArg::Echo => Mode::Echo,
            ModeArg::Chat => Mode::Chat,
            ModeArg::Manual => Mode::Manual,
        },
        overflow: match args.overflow {
            OverflowArg::Wait => Overflow::Wait,
            OverflowArg::Reject => Overflow::Reject,
        },
        idle_timeout: Some(args.idle_timeout).filter(|d| !d.is_zero()),
        max_line: args.max_line as usize,
        outbox_limit: args.outbox_limit as usize,
        shutdown_timeout: args.shutdown_timeout,
        outbox_grace: args.outbox_grace,
        faults: args.faults,
        seed: args.seed,
        access: server::Access {
            allow: args.allow,
            deny: args.deny,
        },
        proxy: args.proxy_protocol.map(|p| match p {
            ProxyArg::V1 => server::ProxyProtocol::V1,
            ProxyArg::V2 => server::ProxyProtocol::V2,
            ProxyArg::Any => server::ProxyProtocol::Any,
        }),
        proxy_timeout: args.proxy_timeout,
        tls_handshake_timeout: args.tls_handshake_timeout,
        tls_max_handshake_rate: args.tls_max_handshake_rate,
        allow_cn: args.allow_cn.clone(),
        deny_cn: args.deny_cn.clone(),
        tls_watch: Some(args.tls_watch).filter(|d| !d.is_zero()),
    };
    // A bad combination of values is a usage error, like a bad value: exit 2, before binding.
    if let Err(e) = config.validate() {
        bad_value("serve", e);
    }
    let cluster = args.cluster.as_ref().map(|url| {
        let mut options = server::cluster::ClusterOptions::new(url.clone());
        options.name = args.cluster_name.clone();
        if let Some(node) = &args.node {
            options.node = node.clone();
        }
        options.creds.clone_from(&args.cluster_creds);
        options.tls_ca.clone_from(&args.cluster_tls_ca);
        options.history = args.cluster_history;
        options
    });
    if let Some(options) = &cluster {
        if !matches!(args.mode, ModeArg::Chat) {
            bad_value("serve", "--cluster is for --mode chat");
        }
        if let Err(e) = server::cluster::check_url(&options.url) {
            bad_value("serve", format!("--cluster {:?}: {e}", options.url));
        }
        if let Err(e) = server::cluster::check_name(&options.node, true) {
            bad_value("serve", format!("--node {:?}: {e}", options.node));
        }
        if let Err(e) = server::cluster::check_name(&options.name, false) {
            bad_value("serve", format!("--cluster-name {:?}: {e}", options.name));
        }
        if let Err(e) = server::cluster::check_files(options) {
            bad_value("serve", e);
        }
        if options.history > server::cluster::MAX_HISTORY {
            bad_value(
                "serve",
                format!(
                    "--cluster-history {}: at most {}",
                    options.history,
                    server::cluster::MAX_HISTORY
                ),
            );
        }
    } else if args.node.is_some()
        || args.cluster_name != "tcpool"
        || args.cluster_creds.is_some()
        || args.cluster_tls_ca.is_some()
        || args.cluster_history > 0
    {
        bad_value(
            "serve",
            "--node, --cluster-name, --cluster-creds, --cluster-tls-ca and --cluster-history go \
             with --cluster nats://HOST:PORT",
        );
    }
    if !args.udp
        && args.udp_port.is_none()
        && (args.udp_peers as usize != tcpool::server::udp::DEFAULT_UDP_PEERS
            || args.udp_rate_per_source.is_some()
            || args.udp_stamp
            || args.udp_gso == OnOff::Off
            || args.udp_gro == OnOff::Off
            || args.udp_reply != UdpReplyArg::Echo)
    {
        bad_value(
            "serve",
            "--udp-peers, --udp-rate-per-source, --udp-stamp, --udp-gso, --udp-gro and \
             --udp-reply go with --udp (or --udp-port PORT)",
        );
    }
    if args.udp_stamp && args.udp_reply == UdpReplyArg::Sockperf {
        // The stamp would overwrite sockperf's sequence number.
        bad_value(
            "serve",
            "--udp-stamp and --udp-reply sockperf do not go together: the stamp would \
             overwrite the sequence number in sockperf's header",
        );
    }
    if tls_certs.is_none()
        && (args.tls_port.is_some()
            || args.tls_ca_out.is_some()
            || args.tls_client_ca.is_some()
            || args.tls_ticket_key_file.is_some()
            || args.tls_max_handshake_rate.is_some()
            || args.tls_offer.given())
    {
        bad_value(
            "serve",
            "--tls-port, --tls-ca-out, --tls-client-ca, --tls-ticket-key-file, \
             --tls-max-handshake-rate, --tls-versions, --tls-alpn and --tls-groups need a \
             certificate: --tls auto, or --tls-cert FILE --tls-key FILE",
        );
    }
    let client_auth = args
        .tls_client_ca
        .clone()
        .map(|ca| tcpool::tls::ClientAuth {
            ca,
            required: args.tls_client_auth == ClientAuthArg::Required,
        });
    // Sockets a service manager bound for us, taken before any thread starts (it edits the
    // environment); otherwise the --bind addresses.
    let notify = Notify::from_env();
    let inherited =
        server::arrival::listen::inherited().context("cannot take the inherited sockets")?;
    let activated = inherited.listeners.len();
    let (listeners, tls_listeners) = if activated > 0 {
        (inherited.listeners, inherited.tls)
    } else {
        let options = server::BindOptions {
            reuse_port: args.reuse_port,
        };
        let tls = match args.tls_port {
            Some(port) => server::bind_all_with(&args.bind, port, &options)
                .with_context(|| format!("cannot listen on port {port} (--tls-port)"))?,
            None => Vec::new(),
        };
        (server::bind_all_with(&args.bind, args.port, &options)?, tls)
    };
    let admin_token = args
        .admin_token_file
        .as_deref()
        .map(admin_token)
        .transpose()?;
    let admin_listener = match (inherited.admin, args.admin) {
        (Some(listener), _) => Some(listener),
        (None, Some(addr)) => {
            Some(server::bind(addr).with_context(|| format!("cannot listen on {addr} (--admin)"))?)
        }
        (None, None) => None,
    };
    // Anyone who reaches the endpoint can kick sessions and stop the server: only loopback
    // goes without a token.
    if let Some(listener) = &admin_listener
        && admin_token.is_none()
        && let Ok(addr) = listener.local_addr()
        && !addr.ip().to_canonical().is_loopback()
    {
        bad_value(
            "serve",
            format!(
                "--admin {addr} is not a loopback address: give --admin-token-file FILE, or \
                 bind the admin endpoint to 127.0.0.1 or ::1"
            ),
        );
    }
    // Second handles on every listening socket, for a hand-over to pass on.
    let sockets = Sockets::new(&listeners, &tls_listeners, admin_listener.as_ref())
        .context("cannot keep the sockets for a hand-over")?;
    let mut listeners = listeners.into_iter();
    let first = listeners.next().context("no address to listen on")?;

    terminal::save();
    let shutdown = tcpool::Shutdown::new();
    let editor = server::operator::console::terminal(&shutdown);
    // With a terminal on stdin, stdout or stderr, SIGHUP is the terminal hanging up (its
    // window closed, the SSH connection lost): a shutdown, as before hand-overs existed, not a
    // new process left running on a terminal that is gone.
    let on_terminal = {
        use std::io::IsTerminal;
        editor.is_some()
            || std::io::stdin().is_terminal()
            || std::io::stdout().is_terminal()
            || std::io::stderr().is_terminal()
    };
    let printer = editor
        .as_ref()
        .map_or_else(Printer::stdout, |(_, printer)| printer.clone());
    // On a terminal, log lines go above the prompt too, instead of through it.
    super::init_logging_as(
        editor.as_ref().map(|(_, printer)| printer.clone()),
        args.log_format,
        log_level,
    );
    let shutdown_timeout = config.shutdown_timeout;
    let mut server = listeners
        .fold(Server::new(first, config), Server::also_on)
        .printer(printer.clone())
        .with_shutdown(shutdown.clone())
        .udp_sockets(inherited.udp, Some(sockets.clone()));
    if let Some(certs) = &tls_certs {
        let options = tcpool::tls::ServerOptions {
            clients: client_auth.clone(),
            offer: args.tls_offer.offer(),
            ticket_key_file: args.tls_ticket_key_file.clone(),
        };
        let made = tcpool::tls::server_config_opts(certs, &options).context("cannot set up TLS")?;
        log::info!(
            "TLS certificate: {}",
            tcpool::tls::peer::describe_cert(&made.served)
        );
        let identity = made.certificates.identity();
        if identity.expired_at(unix_now()) {
            log::warn!(
                "TLS certificate expired on {}: clients that check it will refuse it",
                identity.expires
            );
        }
        if let Some((keys, opened)) = &made.ticket_keys {
            let path = keys.path().display();
            match opened {
                tcpool::tls::Opened::Created => log::info!(
                    "TLS ticket key file {path} made with a new key (mode 0600): give it to \
                     every process that is to resume the others' sessions"
                ),
                tcpool::tls::Opened::Read => log::info!(
                    "TLS ticket keys: {} from {path}, the first encrypts",
                    keys.count()
                ),
            }
            if let Some(why) = keys.loose_mode() {
                log::warn!("TLS ticket key file {path}: {why}");
            }
        }
        if let Some(ca) = &made.ca_file {
            log::info!(
                "TLS auto: clients verify with --tls-ca {} (the CA made at start)",
                ca.display()
            );
        }
        if let Some(path) = tcpool::tls::key_log_file() {
            log::warn!(
                "SSLKEYLOGFILE={path}: the secrets of every TLS session are written there, for \
                 Wireshark; anyone who reads it can decrypt them"
            );
        }
        // Without --tls-port (or inherited sockets named `tls`), every listener speaks TLS.
        server = if args.tls_port.is_none() && tls_listeners.is_empty() {
            server.all_tls()
        } else {
            tls_listeners.into_iter().fold(server, Server::also_on_tls)
        }
        .tls(made.config)
        .tls_signer(made.ca_signer)
        .tls_certificates(made.certificates);
    }

    // SIGINT, SIGTERM and Ctrl-C at the console prompt: the first shuts down gracefully,
    // a second exits at once. SIGHUP is the hand-over.
    let interrupts = Arc::new(AtomicUsize::new(0));
    let audit = server.audit();
    let on_interrupt = {
        let shutdown = shutdown.clone();
        let audit = audit.clone();
        move |signal: &'static str| {
            if interrupts.fetch_add(1, Ordering::SeqCst) == 0 {
                // Triggered first, so that on a terminal this line is not left to the editor.
                audit.shutdown(&shutdown, Source::Signal(signal));
                log::info!("signal received: shutting down gracefully; a second one exits at once");
            } else {
                terminal::restore();
                std::process::exit(130);
            }
        }
    };
    let handler = on_interrupt.clone();
    ctrlc::set_handler(move || handler("SIGINT")).context("cannot install the signal handler")?;
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGHUP])
        .context("cannot install the signal handler")?;

    if activated > 0 {
        // A hand-over names the service manager's socket (perhaps none) beside its own.
        let passed_by = match std::env::var_os(server::arrival::notify::SERVICE_SOCKET_VAR) {
            Some(_) => "hand-over",
            None => "socket activation",
        };
        log::info!(
            "{passed_by}: serving {activated} inherited socket(s); --bind and --port are not used"
        );
    }
    // The service manager hears when a stop begins (`READY=1` follows the start below);
    // without NOTIFY_SOCKET both are no-ops. After a hand-over the new process is the
    // service, and this one's stop is none of the manager's business.
    // A shutdown that is not a hand-over lets the second handles go, so the listening
    // sockets close with the acceptors: a late client is refused, not reset at exit.
    shutdown.on_trigger({
        let (shutdown, notify, sockets) = (shutdown.clone(), notify.clone(), sockets.clone());
        move || {
            if !shutdown.is_handed_over() {
                let _ = notify.stopping();
                sockets.release();
            }
        }
    });
    // One control plane for what steers the server from outside: the cluster link and the
    // admin endpoint run as tasks on its thread, never on a worker.
    let control = if cluster.is_some() || admin_listener.is_some() {
        Some(ControlPlane::start().context("cannot start the control plane")?)
    } else {
        None
    };
    let link = match (cluster, &control) {
        (Some(options), Some(control)) => {
            let link = server::cluster::Link::start(options, server.registry(), control)
                .context("cannot start the cluster link")?;
            // A node whose name another live node has does not join; a broker not reached
            // by then asks when the link comes up, and a refusal then stops the link only.
            link.wait_admitted(server::cluster::START_WAIT)
                .map_err(|e| anyhow::anyhow!(e))?;
            server = server.cluster(std::sync::Arc::clone(&link));
            Some(link)
        }
        _ => None,
    };
    let admin = match (admin_listener, &control) {
        (Some(listener), Some(control)) => {
            let options = server::operator::admin::Options {
                token: admin_token,
                public_metrics: args.admin_public_metrics,
                ..Default::default()
            };
            Some(
                Admin::start_on(control, listener, &server, options)
                    .context("cannot start the admin endpoint")?,
            )
        }
        _ => None,
    };
    let admin = Arc::new(Mutex::new(admin));
    let console = server.console();
    let faults = server.faults();
    let running = server.start().context("cannot start the server")?;
    if let Err(e) = notify.ready() {
        log::warn!("cannot tell the service manager it is ready: error={e}");
    }
    let reload = Arc::new(Reload {
        sockets,
        notify,
        timeout: args.handover_timeout,
        shutdown: shutdown.clone(),
        admin: Arc::clone(&admin),
        acceptors: running.acceptors(),
        busy: AtomicBool::new(false),
        manual,
    });
    let handing_over = Arc::clone(&reload);
    {
        let on_interrupt = on_interrupt.clone();
        std::thread::Builder::new()
            .name("tcpool-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    match signal {
                        SIGHUP if on_terminal => hung_up(&reload.shutdown, &audit),
                        SIGHUP => reload.on_hangup(),
                        _ => on_interrupt("SIGTERM"),
                    }
                }
            })
            .context("cannot start the signal thread")?;
    }
    // The console may stay blocked on stdin at exit: it holds nothing, and is not joined.
    std::thread::Builder::new()
        .name("tcpool-console".into())
        .spawn(move || {
            terminal::take_stop_signal();
            match editor {
                Some((editor, _)) => console.run_terminal(editor, &|| on_interrupt("Ctrl-C")),
                None => console.run_lines(std::io::stdin().lock()),
            }
        })
        .context("cannot start the console")?;

    let summary = running.wait().context("server failed")?;
    if let Some(link) = &link {
        link.stop();
    }
    // A hand-over begun just before a stop is told to stop the new process too: this one
    // waits for that, rather than leave it serving on after the stop it was asked for.
    handing_over.wait_done(args.handover_timeout + shutdown_timeout + EXIT_FLUSH);
    // It answered through the shutdown (`/healthz` 503); now the server is gone.
    drop(admin.lock().take());
    if let Some(control) = control {
        control.stop();
    }
    if summary.forced {
        log::warn!("shutdown deadline passed; some sessions were closed without a goodbye");
    }
    // On a terminal, the lines since the shutdown began are written straight over the prompt
    // line: wait for them, and give the editor a moment for any it still draws, so that the
    // summary follows them on a clean line (`restore` erases a prompt redrawn last).
    if terminal::is_saved() {
        let _ = printer.flush_timeout(EXIT_FLUSH);
        std::thread::sleep(PROMPT_SETTLE);
    }
    // The line editor's printer draws asynchronously and would lose a last line at exit:
    // give the terminal back first, then print to stdout. A stalled stdout or stderr gets
    // what is left of the deadline (and a moment), never more.
    terminal::restore();
    let stdout = Printer::stdout();
    stdout.print(&summary.to_string());
    let touched = faults.touched();
    if !touched.is_empty() {
        stdout.print(&format!("faults: {touched}"));
    }
    let deadline = shutdown
        .triggered_at()
        .and_then(|at| at.checked_add(shutdown_timeout));
    let left = deadline.map_or(EXIT_FLUSH, |at| {
        at.saturating_duration_since(std::time::Instant::now())
    });
    let linger = left.max(EXIT_FLUSH);
    let _ = Printer::stderr().flush_timeout(EXIT_FLUSH);
    let _ = stdout.flush_timeout(linger);
    Ok(ExitCode::SUCCESS)
}

/// Seconds since the Unix epoch now.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// SIGHUP with a terminal on stdin, stdout or stderr: the terminal hung up, so the server
/// shuts down gracefully. It is not a second Ctrl-C: a hang-up may bring SIGHUP twice (from the shell
/// and from the kernel), and neither cuts the shutdown short.
fn hung_up(shutdown: &Shutdown, audit: &server::Audit) {
    if audit.shutdown(shutdown, Source::Signal("SIGHUP")) {
        log::info!(
            "SIGHUP with a terminal attached: the terminal hung up; shutting down \
             gracefully (a hand-over is for a server with no terminal on stdin, stdout or \
             stderr)"
        );
    }
}

/// The hand-over on `SIGHUP`: what it passes on, whom it tells, and what it stops.
struct Reload {
    sockets: Sockets,
    notify: Notify,
    timeout: Duration,
    shutdown: Shutdown,
    /// Stopped once the new process serves, so that every admin request reaches it.
    admin: Arc<Mutex<Option<Admin>>>,
    /// Stopped before the sessions are: what they accepted is still served.
    acceptors: server::Acceptors,
    /// A hand-over is under way.
    busy: AtomicBool,
    /// Manual mode: the operator answers on this process's console, so there is no
    /// hand-over.
    manual: bool,
}

impl Reload {
    /// Starts a hand-over on a thread of its own, unless one is under way or the server is
    /// shutting down.
    fn on_hangup(self: &Arc<Self>) {
        if self.manual {
            log::warn!(
                "SIGHUP ignored: in manual mode the replies come from this process's console, \
                 which a new process would not have; restart the server to upgrade it"
            );
            return;
        }
        if self.shutdown.is_triggered() {
            log::info!("SIGHUP ignored: shutting down");
            return;
        }
        if self.busy.swap(true, Ordering::SeqCst) {
            log::info!("SIGHUP ignored: a hand-over is under way");
            return;
        }
        let this = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("tcpool-handover".into())
            .spawn(move || {
                this.hand_over();
                this.busy.store(false, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            log::warn!("hand-over failed, still serving: cannot start its thread: error={e}");
            self.busy.store(false, Ordering::SeqCst);
        }
    }

    /// Waits, at most `limit`, until no hand-over is under way.
    fn wait_done(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.busy.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the new process and, once it is ready, shuts this one down; on any failure
    /// this one serves on as before.
    fn hand_over(&self) {
        log::info!("hand-over: starting the new process (SIGHUP)");
        let successor = match handover::start_successor(
            &self.sockets,
            self.notify.service_socket(),
            self.timeout,
        ) {
            Ok(successor) => successor,
            Err(e) => {
                log::warn!("hand-over failed, still serving: error={e}");
                return;
            }
        };
        let pid = successor.pid;
        let handed_over = !self.shutdown.is_triggered() && {
            // Every admin request goes to the new process from now on.
            if let Some(admin) = self.admin.lock().take() {
                admin.stop();
            }
            // No new connection from now on, but those already taken reach a worker, which
            // serves them until the shutdown below tells them `quit`.
            if !self.acceptors.stop(self.timeout) {
                log::warn!(
                    "hand-over: an acceptor did not stop in time: timeout_ms={}",
                    tcpool::units::Millis(self.timeout)
                );
            }
            std::thread::sleep(handover::SETTLE);
            self.shutdown.hand_over()
        };
        if !handed_over {
            // A stop was asked for meanwhile: it is for the new process too.
            log::warn!(
                "hand-over: a shutdown began meanwhile; stopping the new process: pid={pid}"
            );
            successor.stop();
            return;
        }
        if let Err(e) = self.notify.main_pid(pid) {
            log::warn!("cannot tell the service manager the new main pid {pid}: error={e}");
        }
        log::info!(
            "hand-over: pid {pid} serves now; this process (pid {}) stops accepting and shuts down",
            std::process::id()
        );
    }
}
