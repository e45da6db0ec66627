//! `tcpool talk`: connect, then either a line-editing prompt (on a terminal) or the scripted,
//! seed-compatible mode (piped stdin).

use std::io::{self, IsTerminal, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::Args;

use tcpool::client::talk::{self, End, Event, Options};
use tcpool::server::LineEnding;
use tcpool::server::console::Printer;

use super::{parse_positive_seconds, terminal};

/// `tcpool talk` flags.
#[derive(Debug, Args)]
pub(crate) struct TalkArgs {
    /// Server to talk to.
    #[arg(default_value = "127.0.0.1:8900")]
    addr: String,
    /// What ends each line sent: none (the seed client's way), lf or crlf.
    #[arg(long, default_value = "none")]
    eol: LineEnding,
    /// Piped input: send every line without waiting for its reply (use with --eol lf|crlf
    /// so the server can tell the lines apart).
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait for a reply before going on with a warning.
    #[arg(long, default_value = "5", value_parser = parse_positive_seconds)]
    reply_timeout: Duration,
}

/// Resolves `host:port` (a bare host gets the default port).
pub(crate) fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    let with_port = if addr
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        addr.to_owned()
    } else {
        format!("{addr}:{}", tcpool::DEFAULT_PORT)
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to no address"))
}

/// Talks to the server; exit code 0 whenever the conversation ended normally.
pub(crate) fn run(args: TalkArgs) -> anyhow::Result<ExitCode> {
    let addr = resolve(&args.addr)?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("cannot connect to {addr}"))?;
    let _ = stream.set_nodelay(true);
    let options = Options {
        eol: args.eol,
        wait: !args.no_wait,
        reply_timeout: args.reply_timeout,
    };
    if io::stdin().is_terminal() && io::stdout().is_terminal() {
        interactive(stream, options)
    } else {
        piped(stream, options)
    }
}

fn piped(stream: TcpStream, options: Options) -> anyhow::Result<ExitCode> {
    let print = Printer::stdout();
    let end = talk::run_piped(
        stream,
        io::BufReader::new(io::stdin()),
        options,
        move |line| print.print(line),
        |warning| eprintln!("warning: {warning}"),
    )
    .context("connection failed")?;
    announce(end);
    Ok(ExitCode::SUCCESS)
}

fn announce(end: End) {
    match end {
        End::QuitReceived => eprintln!("server said quit: bye"),
        End::ServerClosed => eprintln!("server closed the connection"),
        End::QuitSent | End::InputEnded => {}
    }
}

fn interactive(mut stream: TcpStream, options: Options) -> anyhow::Result<ExitCode> {
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
    // The reader ends the process when the server does: the prompt cannot be interrupted.
    std::thread::Builder::new()
        .name("tcpool-talk-watch".into())
        .spawn(move || {
            for event in events {
                let end = match event {
                    Event::Message(_) => continue,
                    Event::Quit => End::QuitReceived,
                    Event::Closed | Event::Failed(_) => End::ServerClosed,
                };
                terminal::restore();
                announce(end);
                std::process::exit(0);
            }
        })?;
    loop {
        match editor.readline("client>> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
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
                let _ = io::stdout().flush();
                terminal::restore();
                return Ok(ExitCode::from(130));
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("cannot read the terminal"),
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    terminal::restore();
    Ok(ExitCode::SUCCESS)
}
