//! `tcpool talk`: connect, then either a line-editing prompt (on a terminal) or the scripted,
//! seed-compatible mode (piped stdin).

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use tcpool::client::addr::{self, Target};
use tcpool::client::talk::{self, End, Event, Options};
use tcpool::server::LineEnding;

use super::{parse_positive_seconds, terminal};

/// `tcpool talk` flags.
#[derive(Debug, Args)]
#[command(after_help = super::examples(EXAMPLES))]
pub(crate) struct TalkArgs {
    /// Server to talk to: PORT (on 127.0.0.1), HOST, HOST:PORT or [IPv6]:PORT. A name is
    /// tried at each of its addresses in turn.
    #[arg(value_name = "HOST:PORT", default_value = "127.0.0.1:8900", value_parser = addr::parse)]
    addr: Target,
    /// What ends each line sent: none (each line a write of its own, with no terminator), lf
    /// or crlf [default: none, or lf with --no-wait].
    #[arg(long, value_name = "EOL")]
    eol: Option<LineEnding>,
    /// Piped input: send every line without waiting for its reply; at the end of input, wait
    /// until the server has been quiet for half a second. Lines end in lf unless --eol says
    /// otherwise, so that the server can tell them apart.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for a reply before going on with a warning (such as 250ms, 5s, 2m; bare = seconds).
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", default_value = "5s", value_parser = parse_positive_seconds)]
    reply_timeout: Duration,
    /// How long each address may take to accept the connection (such as 250ms, 5s, 2m; bare = seconds).
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", default_value = "5s", value_parser = parse_positive_seconds)]
    connect_timeout: Duration,
    #[command(flatten)]
    tls: super::tls::TlsClientArgs,
    /// Send a PROXY protocol header (v1 or v2) first, naming this connection's own addresses,
    /// to talk to a server or proxy that expects one; before TLS with --tls [default: none].
    #[arg(long, value_name = "VERSION")]
    send_proxy: Option<tcpool::client::send_proxy::SendProxy>,
    /// Talk UDP: each line is one datagram to HOST:PORT, and every datagram that comes back
    /// is printed with the address that sent it; after each line, wait up to
    /// --reply-timeout for a reply, and say when none came [default: off, TCP].
    #[arg(long, conflicts_with_all = ["no_wait", "tls", "send_proxy"])]
    udp: bool,
}

const EXAMPLES: &str = r"
  # Type lines to the server on 127.0.0.1:8900 and read its replies; `quit` leaves
  tcpool talk
  # One scripted exchange with the server on port 9000 of this machine
  printf 'hello\nquit\n' | tcpool talk 9000
  # A thousand lines sent at once, without waiting for each reply
  seq 1000 | tcpool talk --no-wait localhost:8900
  # Over TLS, to `tcpool serve --tls auto`, verifying with the CA file its log names
  tcpool talk --tls --tls-ca /tmp/tcpool-ca-PID.pem localhost:8900";

/// Talks to the server; exit code 0 whenever the conversation ended normally.
pub(crate) fn run(args: TalkArgs) -> anyhow::Result<ExitCode> {
    if args.udp {
        return udp(&args);
    }
    // Flags that do not go together are a usage error before anything is tried.
    let tls = args.tls.settings("talk");
    let (mut stream, _) = args
        .addr
        .connect(args.connect_timeout)
        .with_context(|| format!("cannot connect to {}", args.addr))?;
    let _ = stream.set_nodelay(true);
    if let Some(version) = args.send_proxy {
        version
            .send(&mut stream)
            .with_context(|| format!("cannot send the PROXY header to {}", args.addr))?;
    }
    let options = Options {
        // Unterminated lines sent back to back reach the server as one message.
        eol: args.eol.unwrap_or(if args.no_wait {
            LineEnding::Lf
        } else {
            LineEnding::None
        }),
        wait: !args.no_wait,
        reply_timeout: args.reply_timeout,
    };
    let interactive_here = io::stdin().is_terminal() && io::stdout().is_terminal();
    if let Some(settings) = tls {
        let config = tcpool::tls::client_config(&settings)?;
        let name = tcpool::tls::server_name(&settings, &args.addr.host())?;
        let conn = tcpool::tls::pump::handshake(&mut stream, config, name, args.connect_timeout)
            .map_err(|e| anyhow::anyhow!(super::tls::handshake_failed(&e)))
            .with_context(|| format!("cannot talk to {}", args.addr))?;
        if let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) {
            eprintln!("tls: {}", tcpool::tls::peer::describe_cert(cert));
        }
        eprintln!("tls: {}", tcpool::tls::peer::describe_session(&conn));
        let (stream, pump) =
            tcpool::tls::pump::pump(stream, conn).context("cannot start the TLS link")?;
        let ended = if interactive_here {
            interactive(stream, options)
        } else {
            piped(stream, options)
        };
        // The last line and `close_notify` may still be on their way.
        if let Some(why) = pump.finish(Duration::from_secs(2)) {
            let hint = if why.contains("CertificateRequired") {
                " (the server asks for a client certificate: --tls-cert FILE --tls-key FILE)"
            } else {
                ""
            };
            eprintln!("error: the TLS session failed: {why}{hint}");
            return Ok(ExitCode::from(1));
        }
        if pump.closed_without_notify() {
            eprintln!(
                "warning: the server closed without TLS close_notify: what it sent may have \
                 been cut short"
            );
        }
        return ended;
    }
    if interactive_here {
        interactive(stream, options)
    } else {
        piped(stream, options)
    }
}

fn piped(stream: impl talk::Stream, options: Options) -> anyhow::Result<ExitCode> {
    terminal::take_stop_signal();
    // A client's replies wait for a slow stdout rather than being dropped (the server's
    // lossy printer is for output that must never hold anything up).
    let print = |line: &str| {
        use io::Write as _;
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    };
    let end = talk::run_piped(
        stream,
        io::BufReader::new(io::stdin()),
        options,
        print,
        |warning| eprintln!("warning: {warning}"),
    )
    .context("connection failed")?;
    Ok(announce(&end))
}

/// Says how the talk ended, on stderr, and gives the exit code: 1 when the server was full.
fn announce(end: &End) -> ExitCode {
    match end {
        End::QuitReceived => eprintln!("server said quit: bye"),
        End::ServerClosed => eprintln!("server closed the connection"),
        End::Busy(line) => {
            eprintln!("error: the server is full and did not take the connection ({line})");
            return ExitCode::from(1);
        }
        End::QuitSent | End::InputEnded => {}
    }
    ExitCode::SUCCESS
}

fn interactive(mut stream: impl talk::Stream, options: Options) -> anyhow::Result<ExitCode> {
    use rustyline::ExternalPrinter as _;
    use rustyline::error::ReadlineError;

    terminal::save();
    let mut editor = rustyline::DefaultEditor::new().context("cannot start the line editor")?;
    let external = parking_lot::Mutex::new(
        editor
            .create_external_printer()
            .context("cannot print above the prompt")?,
    );
    let events = talk::spawn_reader(&stream, move |line| {
        let _ = external.lock().print(format!("{line}\n"));
    })?;
    // Set once we typed `quit`: the server closing after it is no news.
    let leaving = Arc::new(AtomicBool::new(false));
    // The reader ends the process when the server does: the prompt cannot be interrupted.
    let watching = leaving.clone();
    std::thread::Builder::new()
        .name("tcpool-talk-watch".into())
        .spawn(move || {
            for event in events {
                let end = match event {
                    Event::Message(_) => continue,
                    Event::Quit => End::QuitReceived,
                    Event::Busy(line) => End::Busy(line),
                    Event::Closed | Event::Failed(_) => End::ServerClosed,
                };
                if watching.load(Ordering::SeqCst) {
                    return;
                }
                terminal::restore();
                let code = if announce(&end) == ExitCode::SUCCESS {
                    0
                } else {
                    1
                };
                std::process::exit(code);
            }
        })?;
    // Every other thread is started: Ctrl-Z is this one's to take (see `terminal`).
    terminal::take_stop_signal();
    loop {
        match editor.readline("client>> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if line == "quit" {
                    leaving.store(true, Ordering::SeqCst);
                }
                if talk::send_line(&mut stream, &line, options.eol).is_err() {
                    // The watcher reports how the server went.
                    std::thread::sleep(Duration::from_secs(1));
                    break;
                }
                if line == "quit" {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => {
                leaving.store(true, Ordering::SeqCst);
                let _ = io::stdout().flush();
                terminal::restore();
                return Ok(ExitCode::from(130));
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("cannot read the terminal"),
        }
    }
    leaving.store(true, Ordering::SeqCst);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    terminal::restore();
    Ok(ExitCode::SUCCESS)
}

/// `talk --udp`: a datagram a line, with a prompt on a terminal.
fn udp(args: &TalkArgs) -> anyhow::Result<ExitCode> {
    let target = *args
        .addr
        .resolve()
        .with_context(|| format!("cannot resolve {}", args.addr))?
        .first()
        .with_context(|| format!("{} has no address", args.addr))?;
    let socket = talk::udp::socket(target).context("cannot open a UDP socket")?;
    let eol = args.eol.unwrap_or(LineEnding::None);
    let print = |line: &str| {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    };
    let warn = |warning: &str| eprintln!("warning: {warning}");
    if !(io::stdin().is_terminal() && io::stdout().is_terminal()) {
        terminal::take_stop_signal();
        talk::udp::run_piped(
            &socket,
            target,
            io::BufReader::new(io::stdin()),
            eol,
            args.reply_timeout,
            print,
            warn,
        )
        .with_context(|| format!("cannot talk to udp {target}"))?;
        return Ok(ExitCode::SUCCESS);
    }
    use rustyline::error::ReadlineError;
    terminal::save();
    let mut editor = rustyline::DefaultEditor::new().context("cannot start the line editor")?;
    terminal::take_stop_signal();
    eprintln!("talking udp to {target}: a datagram a line, Ctrl-D leaves");
    let ended = loop {
        match editor.readline("udp>> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if let Err(e) = talk::udp::exchange(
                    &socket,
                    target,
                    &line,
                    eol,
                    args.reply_timeout,
                    &print,
                    &warn,
                ) {
                    break Err(e).with_context(|| format!("cannot talk to udp {target}"));
                }
            }
            Err(ReadlineError::Interrupted) => {
                terminal::restore();
                return Ok(ExitCode::from(130));
            }
            Err(ReadlineError::Eof) => break Ok(ExitCode::SUCCESS),
            Err(e) => break Err(e).context("cannot read the terminal"),
        }
    };
    terminal::restore();
    ended
}
