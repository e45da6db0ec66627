//! The operator console on stdin: `quit`, `/list`, `/stats`, `/kick ID`, `/help`, and in
//! manual mode the replies (`text`, `@ID text`, `@all text`, `@ID quit`).
//!
//! [`parse`] turns a typed line into a [`Command`] and knows nothing else; a [`Console`]
//! carries commands out through the registry and the shutdown handle; [`Console::run_lines`]
//! (piped stdin) and [`Console::run_terminal`] (line editing) feed it. Operator-facing output
//! goes through a [`Printer`], which never blocks and never fails: a closed or stalled stdout
//! does not hold up the server, and on a terminal it prints above the prompt instead of
//! through it. End of input turns the
//! console off; it never shuts the server down.

use std::io::{self, BufRead};
use std::time::Duration;

use super::modes::Mode;
use super::output::Printer;
use super::protocol::escape;
use super::registry::Registry;
use super::session::SessionId;
use super::shutdown::Shutdown;

/// Whom a manual-mode reply goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The session that spoke last.
    Last,
    /// One session.
    Session(SessionId),
    /// Every session.
    All,
}

/// One typed console line, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `quit`: shut the whole server down gracefully.
    Quit,
    /// `/list`: one line per session.
    List,
    /// `/stats`: server-wide counts.
    Stats,
    /// `/kick ID`: end one session with `quit`.
    Kick(SessionId),
    /// `/help`.
    Help,
    /// A reply (manual mode): a plain line, `@ID text` or `@all text`.
    Reply {
        /// Whom it is for.
        to: Target,
        /// What to send, without line ending.
        text: String,
    },
    /// A blank line: nothing to do.
    Empty,
    /// Not understood; the hint to show.
    Invalid(String),
}

/// Understands one console line. Pure: the same line always gives the same command.
///
/// ```
/// use tcpool::server::console::{parse, Command, Target};
/// use tcpool::server::SessionId;
///
/// assert_eq!(parse("quit"), Command::Quit);
/// assert_eq!(parse("/kick 7"), Command::Kick(SessionId(7)));
/// assert_eq!(
///     parse("@7 hello there"),
///     Command::Reply { to: Target::Session(SessionId(7)), text: "hello there".into() }
/// );
/// assert!(matches!(parse("/frobnicate"), Command::Invalid(_)));
/// ```
pub fn parse(line: &str) -> Command {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() {
        return Command::Empty;
    }
    if line == "quit" {
        return Command::Quit;
    }
    if let Some(rest) = line.strip_prefix('/') {
        let mut words = rest.split_whitespace();
        let name = words.next().unwrap_or("");
        let arg = words.next();
        let extra = words.next().is_some();
        return match (name, arg, extra) {
            ("list", None, false) => Command::List,
            ("stats", None, false) => Command::Stats,
            ("help", None, false) => Command::Help,
            ("kick", Some(id), false) => match id.parse() {
                Ok(id) => Command::Kick(id),
                Err(_) => Command::Invalid(format!("not a session id: {id:?}; usage: /kick ID")),
            },
            ("kick", _, _) => Command::Invalid("usage: /kick ID".into()),
            ("list" | "stats" | "help", _, _) => {
                Command::Invalid(format!("/{name} takes no argument"))
            }
            _ => Command::Invalid(format!("unknown command /{name}; type /help for the list")),
        };
    }
    if let Some(rest) = line.strip_prefix('@') {
        let (who, text) = rest.split_once(' ').unwrap_or((rest, ""));
        if text.is_empty() {
            return Command::Invalid("usage: @ID text, @all text or @ID quit".into());
        }
        let to = if who == "all" {
            Target::All
        } else {
            match who.parse() {
                Ok(id) => Target::Session(id),
                Err(_) => {
                    return Command::Invalid(format!(
                        "not a session id: {who:?}; usage: @ID text or @all text"
                    ));
                }
            }
        };
        return Command::Reply {
            to,
            text: text.to_owned(),
        };
    }
    Command::Reply {
        to: Target::Last,
        text: line.to_owned(),
    }
}

const HELP: &str = "\
commands:
  quit          shut the server down gracefully (every client is told quit)
  /list         one line per session: id, peer, connected for, messages and bytes in/out
  /stats        uptime, sessions now/peak/total, rejected, traffic, queue depth
  /kick ID      end session ID (it is told quit)
  /help         this text
manual mode replies:
  text          answer the client that spoke last
  @ID text      answer client ID
  @all text     answer every client
  @ID quit      say goodbye to client ID";

/// Carries out console commands against a running server.
#[derive(Debug, Clone)]
pub struct Console {
    registry: Registry,
    shutdown: Shutdown,
    mode: Mode,
    printer: Printer,
}

impl Console {
    /// A console for a server in `mode`, printing through `printer`.
    pub fn new(registry: Registry, shutdown: Shutdown, mode: Mode, printer: Printer) -> Self {
        Console {
            registry,
            shutdown,
            mode,
            printer,
        }
    }

    /// The printer this console writes to.
    pub fn printer(&self) -> &Printer {
        &self.printer
    }

    /// Carries out one typed line. Returns `false` once the console should stop reading
    /// (after `quit`).
    pub fn execute(&self, line: &str) -> bool {
        match parse(line) {
            Command::Quit => {
                self.shutdown.trigger();
                return false;
            }
            Command::List => self.printer.print(&self.list()),
            Command::Stats => self.printer.print(&self.stats()),
            Command::Kick(id) => {
                let done = if self.registry.kick(id) {
                    format!("kicked #{id}")
                } else {
                    format!("no session #{id}")
                };
                self.printer.print(&done);
            }
            Command::Help => self.printer.print(HELP),
            Command::Reply { to, text } => self.reply(to, &text),
            Command::Empty => {}
            Command::Invalid(hint) => self.printer.print(&hint),
        }
        true
    }

    fn reply(&self, to: Target, text: &str) {
        if self.mode != Mode::Manual {
            self.printer.print(&format!(
                "replies are for --mode manual (this server is in {} mode); type /help",
                self.mode
            ));
            return;
        }
        let ids = match to {
            Target::Session(id) => vec![id],
            Target::All => self.registry.handles().iter().map(|h| h.id()).collect(),
            Target::Last => match self.registry.last_speaker() {
                Some(id) => vec![id],
                None => {
                    let hint = if self.registry.is_empty() {
                        "no client is connected"
                    } else {
                        "no client has spoken yet: answer one with @ID text"
                    };
                    self.printer.print(hint);
                    return;
                }
            },
        };
        for id in ids {
            let sent = if text == "quit" {
                self.registry.kick(id)
            } else {
                self.registry.send_line(id, text).is_ok()
            };
            if !sent && to != Target::All {
                self.printer.print(&format!("no session #{id}"));
            }
        }
    }

    /// The `/list` text.
    pub fn list(&self) -> String {
        let sessions = self.registry.list();
        if sessions.is_empty() {
            return "no sessions".into();
        }
        // As wide as the longest peer (an IPv6 one can be 47 characters), so columns line up.
        let peers: Vec<String> = sessions.iter().map(|s| s.peer.to_string()).collect();
        let width = peers.iter().map(String::len).max().unwrap_or(0).max(21);
        let mut out = format!(
            "{:>6}  {:<width$}  {:>9}  {:>9}  {:>11}  {:>9}  {:>11}  nick / state",
            "id", "peer", "connected", "msgs in", "bytes in", "msgs out", "bytes out"
        );
        for (s, peer) in sessions.iter().zip(&peers) {
            out.push_str(&format!(
                "\n{:>6}  {:<width$}  {:>9}  {:>9}  {:>11}  {:>9}  {:>11}  {}{}",
                format!("#{}", s.id),
                peer,
                human_duration(s.connected_for),
                s.traffic.messages_in,
                s.traffic.bytes_in,
                s.traffic.messages_out,
                s.traffic.bytes_out,
                s.nick
                    .as_deref()
                    .map(|n| escape(n.as_bytes()))
                    .unwrap_or_default(),
                if s.closing { " (closing)" } else { "" },
            ));
        }
        out
    }

    /// The `/stats` text.
    pub fn stats(&self) -> String {
        let s = self.registry.stats();
        format!(
            "uptime {}  sessions {} now / {} peak / {} total  rejected {}  queue {}\n\
             in: {} messages, {} bytes  out: {} messages, {} bytes",
            human_duration(s.uptime),
            s.sessions,
            s.peak,
            s.total,
            s.rejected,
            s.backlog,
            s.traffic.messages_in,
            s.traffic.bytes_in,
            s.traffic.messages_out,
            s.traffic.bytes_out,
        )
    }

    /// Reads commands line by line from `input` (piped stdin: no prompt) until `quit` or end
    /// of input. Invalid UTF-8 is decoded lossily.
    pub fn run_lines(&self, mut input: impl BufRead) {
        let mut line = Vec::new();
        loop {
            line.clear();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if !self.execute(&String::from_utf8_lossy(&line)) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("console input failed: error={e}");
                    break;
                }
            }
        }
        log::info!("console off: end of input (the server keeps running)");
    }

    /// Reads commands with line editing and history until `quit` or Ctrl-D. Ctrl-C at the
    /// prompt calls `on_interrupt`, which should do what SIGINT does.
    pub fn run_terminal(&self, mut editor: Editor, on_interrupt: &dyn Fn()) {
        use rustyline::error::ReadlineError;
        let prompt = if self.mode == Mode::Manual {
            "server>> "
        } else {
            "tcpool> "
        };
        loop {
            match editor.readline(prompt) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    if !self.execute(&line) {
                        return;
                    }
                }
                Err(ReadlineError::Interrupted) => on_interrupt(),
                Err(ReadlineError::Eof) => break,
                Err(e) => {
                    log::warn!("console input failed: error={e}");
                    break;
                }
            }
        }
        log::info!("console off: end of input (the server keeps running)");
    }
}

/// The line editor the console uses on a terminal.
pub type Editor = rustyline::DefaultEditor;

/// A line editor on the terminal and a [`Printer`] that prints above its prompt, when both
/// stdin and stdout are terminals; `None` otherwise (piped or redirected).
pub fn terminal() -> Option<(Editor, Printer)> {
    use rustyline::ExternalPrinter as _;
    use std::io::IsTerminal;
    if !io::stdin().is_terminal() || !io::stdout().is_terminal() {
        return None;
    }
    let mut editor = Editor::new().ok()?;
    let mut external = editor.create_external_printer().ok()?;
    let printer = Printer::new(move |line| {
        let _ = external.print(format!("{line}\n"));
    });
    Some((editor, printer))
}

/// `1h02m`, `3m05s`, `12.3s`: short and readable.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_are_replies_to_the_last_speaker() {
        assert_eq!(
            parse("你好，世界\n"),
            Command::Reply {
                to: Target::Last,
                text: "你好，世界".into()
            }
        );
    }

    #[test]
    fn quit_is_exact() {
        assert_eq!(parse("quit\r\n"), Command::Quit);
        assert!(matches!(parse(" quit"), Command::Reply { .. }));
        assert!(matches!(parse("QUIT"), Command::Reply { .. }));
    }

    #[test]
    fn at_commands() {
        assert_eq!(
            parse("@all hi all"),
            Command::Reply {
                to: Target::All,
                text: "hi all".into()
            }
        );
        assert_eq!(
            parse("@#3 quit"),
            Command::Reply {
                to: Target::Session(SessionId(3)),
                text: "quit".into()
            }
        );
        assert!(matches!(parse("@3"), Command::Invalid(_)));
        assert!(matches!(parse("@x hi"), Command::Invalid(_)));
    }

    #[test]
    fn slash_commands() {
        assert_eq!(parse("/list"), Command::List);
        assert_eq!(parse("/stats "), Command::Stats);
        assert_eq!(parse("/help"), Command::Help);
        assert!(matches!(parse("/kick"), Command::Invalid(_)));
        assert!(matches!(parse("/kick x"), Command::Invalid(_)));
        assert!(matches!(parse("/kick 1 2"), Command::Invalid(_)));
        assert!(matches!(parse("/list all"), Command::Invalid(_)));
        assert!(matches!(parse("/"), Command::Invalid(_)));
        assert_eq!(parse("  "), Command::Empty);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(human_duration(Duration::from_secs(3720)), "1h02m");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(line in any::<String>()) {
                let _ = parse(&line);
            }

            #[test]
            fn kick_takes_any_id(id in any::<u64>()) {
                prop_assert_eq!(parse(&format!("/kick {id}")), Command::Kick(SessionId(id)));
            }

            #[test]
            fn at_replies_keep_their_text(id in any::<u64>(), text in "[^\r\n]*[^ \r\n]") {
                let command = parse(&format!("@{id} {text}"));
                let expected = Command::Reply { to: Target::Session(SessionId(id)), text };
                prop_assert_eq!(command, expected);
            }

            #[test]
            fn plain_lines_are_never_commands(text in "[^/@\r\n][^\r\n]*") {
                prop_assume!(text != "quit" && !text.trim().is_empty());
                prop_assert_eq!(parse(&text), Command::Reply { to: Target::Last, text });
            }
        }
    }
}
