//! The operator console on stdin: `quit`, `/list`, `/stats`, `/kick ID`, `/fault`,
//! `/tls reload`, `/cluster`, `/help`, and in manual mode the replies (`text`, `@ID text`, `@all text`,
//! `@ID quit`).
//!
//! [`parse`] (in [`command`](crate::server::operator::command)) turns a typed line into a [`Command`]; a [`Console`]
//! carries commands out through the registry and the shutdown handle; [`Console::run_lines`]
//! (piped stdin) and [`Console::run_terminal`] (line editing) feed it. Operator-facing output
//! goes through a [`Printer`], which never blocks and never fails: a closed or stalled stdout
//! does not hold up the server, and on a terminal it prints above the prompt instead of
//! through it. End of input turns the
//! console off; it never shuts the server down.

use std::io::{self, BufRead};

use super::lines::{Line, read_bounded_line};
use super::udp_replies;
use std::sync::Arc;

use crate::server::cluster::Link;
use crate::server::faults::Faults;
use crate::server::modes::Mode;
use crate::server::modes::chat::{Elsewhere, WHO_MAX};
use crate::server::operator::audit::{Audit, Source};
use crate::server::operator::output::Printer;
use crate::server::protocol::escape;
use crate::server::session::registry::{Kick, Registry};
use crate::server::shutdown::Shutdown;
use crate::server::udp::manual::Desk;
use crate::tls::{Certificates, ReloadError};
use crate::units::human_duration;

pub use crate::server::operator::command::{Command, Target, parse};

const HELP: &str = "\
commands:
  quit, /quit   shut the server down gracefully (every client is told quit); also /exit
  /list         one line per session: id, peer, connected for, messages and bytes in/out
  /stats        uptime, sessions now/peak/total, rejected, traffic, backlog depth, the cluster link
  /kick ID      end session ID (it is told quit)
  /fault SPEC   add a fault for new sessions: KIND[,key=value...][,p=P], such as latency,delay=20ms;
                or for every --udp datagram: udp-KIND=VALUE, such as udp-drop=0.1
  /fault        the faults, their ids and how many sessions (or datagrams) each touched
  /fault clear [ID]  end fault ID, or every fault
  /tls reload   read the TLS certificate and key files again (new handshakes get them)
  /cluster      the cluster link (--cluster): its state, this node's name, lines published, dropped, received, lost
  /who          the chat room's members: on this node, and on the other nodes of the cluster (@NODE)
  /help         this text";

/// The rest of `/help` in manual mode, the only mode with replies.
const HELP_MANUAL: &str = "\
replies:
  text          answer the client that spoke last
  @ID text      answer client ID
  @all text     answer every client
  @ID quit      say goodbye to client ID
  @uN text      answer UDP source udp#N (--udp): one datagram; @uN quit forgets it";

/// Words a newcomer types for a command; outside manual mode they get a pointer to it.
const COMMAND_WORDS: &[&str] = &["help", "list", "stats", "kick", "exit", "?"];

/// Most bytes of one typed console line; the rest of a longer line is skipped unread into
/// memory, so a console fed without newlines cannot grow the server.
pub const MAX_CONSOLE_LINE: usize = 64 * 1024;

/// Carries out console commands against a running server.
#[derive(Debug, Clone)]
pub struct Console {
    registry: Registry,
    shutdown: Shutdown,
    mode: Mode,
    printer: Printer,
    faults: Faults,
    audit: Audit,
    tls: Option<Certificates>,
    cluster: Option<Arc<Link>>,
    /// Manual mode with `--udp`: the recent datagram sources, answered with `@uN text`.
    udp: Option<Arc<Desk>>,
}

impl Console {
    /// A console for a server in `mode`, printing through `printer`.
    pub fn new(registry: Registry, shutdown: Shutdown, mode: Mode, printer: Printer) -> Self {
        Console {
            registry,
            shutdown,
            mode,
            printer,
            faults: Faults::default(),
            audit: Audit::new(),
            tls: None,
            cluster: None,
            udp: None,
        }
    }

    /// Shows and answers the UDP pseudo-sessions of `desk` (a manual-mode server's with
    /// `--udp`).
    pub fn with_udp(mut self, desk: Arc<Desk>) -> Self {
        self.udp = Some(desk);
        self
    }

    /// Shows `link` on `/cluster` (a clustered server's: [`Server::cluster`]).
    ///
    /// [`Server::cluster`]: crate::server::Server::cluster
    pub fn with_cluster(mut self, link: Arc<Link>) -> Self {
        self.cluster = Some(link);
        self
    }

    /// Reloads `certificates` on `/tls reload` (a server's: [`Server::tls_certificates`]).
    ///
    /// [`Server::tls_certificates`]: crate::server::Server::tls_certificates
    pub fn with_tls(mut self, certificates: Certificates) -> Self {
        self.tls = Some(certificates);
        self
    }

    /// Logs and counts the changes it makes (faults, kicks, `quit`) in `audit` (a server's:
    /// [`Server::audit`]).
    ///
    /// [`Server::audit`]: crate::server::Server::audit
    pub fn with_audit(mut self, audit: Audit) -> Self {
        self.audit = audit;
        self
    }

    /// Adds and clears faults in `faults` (a running server's: [`Server::faults`]).
    ///
    /// [`Server::faults`]: crate::server::Server::faults
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
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
                self.audit.shutdown(&self.shutdown, Source::Console);
                return false;
            }
            Command::List => self.printer.print(&self.list()),
            Command::Stats => self.printer.print(&self.stats()),
            Command::Kick(id) => {
                let done = match self.audit.kick(&self.registry, id, Source::Console) {
                    Kick::Kicked => format!("kicked #{id}"),
                    Kick::AlreadyClosing => format!("session #{id} is already closing"),
                    Kick::Unknown => format!("no session #{id}"),
                };
                self.printer.print(&done);
            }
            Command::Help => self.printer.print(&self.help()),
            Command::FaultAdd(spec) => {
                let id = self.audit.add_fault(&self.faults, spec, Source::Console);
                let whom = match spec.kind.is_udp() {
                    true => "every UDP datagram from now on",
                    false => "sessions that connect from now on",
                };
                self.printer
                    .print(&format!("fault #{id} added: {spec} ({whom})"));
            }
            Command::FaultList => self.printer.print(&self.fault_list()),
            Command::FaultClear(id) => {
                let done = match (
                    id,
                    self.audit.clear_faults(&self.faults, id, Source::Console),
                ) {
                    (Some(id), 0) => format!("no active fault #{id}"),
                    (Some(id), _) => format!("fault #{id} cleared"),
                    (None, 0) => "no active fault".to_owned(),
                    (None, n) => format!("{n} fault(s) cleared"),
                };
                self.printer.print(&done);
            }
            Command::TlsReload => self.printer.print(&self.tls_reload()),
            Command::Cluster => match &self.cluster {
                Some(link) => self.printer.print(&link.describe()),
                None => self
                    .printer
                    .print("not in a cluster: serve --mode chat --cluster nats://HOST:PORT"),
            },
            Command::Who => self.printer.print(&self.who()),
            Command::Reply { to, text } => self.reply(to, &text),
            Command::Empty => {}
            Command::Invalid(hint) => self.printer.print(&hint),
        }
        true
    }

    /// The `/help` text: only what this mode offers.
    pub fn help(&self) -> String {
        if self.mode == Mode::Manual {
            format!("{HELP}\n{HELP_MANUAL}")
        } else {
            HELP.to_owned()
        }
    }

    fn reply(&self, to: Target, text: &str) {
        if self.mode != Mode::Manual {
            let word = text.trim();
            let hint = if word == "exit" {
                "to stop the server type quit (or /quit); commands start with /, /help lists them"
                    .to_owned()
            } else if to == Target::Last && COMMAND_WORDS.contains(&word) {
                let command = if word == "?" { "help" } else { word };
                format!("commands start with /: /help lists them (did you mean /{command}?)")
            } else {
                format!(
                    "replies are for --mode manual (this server is in {} mode); /help lists the commands",
                    self.mode
                )
            };
            self.printer.print(&hint);
            return;
        }
        let ids = match to {
            Target::Udp(id) => {
                return udp_replies::reply(self.udp.as_deref(), &self.printer, id, text);
            }
            Target::Session(id) => vec![id],
            Target::All => {
                udp_replies::reply_all(self.udp.as_deref(), &self.printer, text);
                self.registry.handles().iter().map(|h| h.id()).collect()
            }
            Target::Last => match self.registry.last_speaker() {
                Some(id) => vec![id],
                None => {
                    // A datagram after every session's message: its source spoke last.
                    if self.registry.last_speaker_even_if_gone().is_none()
                        && let Some(id) = self.udp.as_ref().and_then(|d| d.last_speaker())
                    {
                        return udp_replies::reply(self.udp.as_deref(), &self.printer, id, text);
                    }
                    self.printer.print(&self.no_last_speaker());
                    return;
                }
            },
        };
        for id in ids {
            let sent = if text == "quit" {
                self.audit.kick(&self.registry, id, Source::Console) == Kick::Kicked
            } else {
                self.registry.send_line(id, text).is_ok()
            };
            if !sent && to != Target::All {
                self.printer.print(&format!("no session #{id}"));
            }
        }
    }

    /// Why a plain reply has nobody to go to, and how to address those who are there.
    fn no_last_speaker(&self) -> String {
        let mut ids: Vec<String> = self
            .registry
            .handles()
            .iter()
            .map(|h| format!("#{}", h.id()))
            .collect();
        // Recent UDP sources can be answered too (`@uN text`).
        let udp = self.udp.as_ref().map(|d| d.ids()).unwrap_or_default();
        ids.extend(udp.iter().rev().take(8).map(|id| format!("u{id}")));
        if ids.is_empty() {
            return match self.registry.last_speaker_even_if_gone() {
                Some(id) => {
                    format!("client#{id}, who spoke last, has left; no client is connected")
                }
                None => "no client is connected".to_owned(),
            };
        }
        let who = match self.registry.last_speaker_even_if_gone() {
            Some(id) => format!("client#{id}, who spoke last, has left"),
            None => "no client has spoken yet".to_owned(),
        };
        format!(
            "{who}: answer one with @ID text (connected: {}) or everyone with @all text",
            ids.join(", ")
        )
    }

    /// The `/who` text: a count line, then one line per node with its members' names
    /// (at most [`WHO_MAX`] in all).
    pub fn who(&self) -> String {
        if self.mode != Mode::Chat {
            return "/who lists a chat room: serve --mode chat".into();
        }
        let local: Vec<String> = self
            .registry
            .handles()
            .iter()
            .filter(|h| !h.is_closing())
            .map(|h| escape(h.display_name().as_bytes()))
            .collect();
        let elsewhere = match &self.cluster {
            Some(link) => link.elsewhere(WHO_MAX.saturating_sub(local.len())),
            None => Elsewhere::default(),
        };
        let here = match &self.cluster {
            Some(link) => format!("{} (this node)", link.options().node),
            None => "this node".into(),
        };
        let total = local.len() + elsewhere.nodes.iter().map(|(_, n)| n).sum::<usize>();
        let mut out = format!(
            "{total} in the room on {} node(s): {} on {here}",
            1 + elsewhere.nodes.len(),
            local.len()
        );
        for (node, n) in &elsewhere.nodes {
            out.push_str(&format!(", {n} on {node}"));
        }
        let mut listed = 0;
        let names = |names: &[String]| match names.is_empty() {
            true => "nobody".to_owned(),
            false => names.join(", "),
        };
        let shown: Vec<String> = local.into_iter().take(WHO_MAX).collect();
        listed += shown.len();
        out.push_str(&format!("\n{here}: {}", names(&shown)));
        let mut remote = elsewhere.names.iter();
        for (node, n) in &elsewhere.nodes {
            let theirs: Vec<String> = remote.by_ref().take(*n).cloned().collect();
            listed += theirs.len();
            out.push_str(&format!("\n{node}: {}", names(&theirs)));
        }
        if total > listed {
            out.push_str(&format!("\n(and {} more not listed)", total - listed));
        }
        out
    }

    /// The `/list` text.
    pub fn list(&self) -> String {
        let sessions = self.registry.list();
        let udp_ids = self.udp.as_ref().map(|d| d.ids().len()).unwrap_or(0);
        if sessions.is_empty() && udp_ids == 0 {
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
                "\n{:>6}  {:<width$}  {:>9}  {:>9}  {:>11}  {:>9}  {:>11}  {}{}{}",
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
                s.tls
                    .as_deref()
                    .map(|t| format!(" (tls {t})"))
                    .unwrap_or_default(),
            ));
        }
        if let Some(desk) = &self.udp {
            for line in desk.list_lines(width) {
                out.push('\n');
                out.push_str(&line);
            }
        }
        out
    }

    /// `/tls reload`: what it did, in one line.
    fn tls_reload(&self) -> String {
        let Some(certificates) = &self.tls else {
            return "this server speaks no TLS: there is no certificate to reload".to_owned();
        };
        match self.audit.tls_reload(certificates, Source::Console) {
            Ok(done) => format!(
                "TLS certificate reloaded{}: {}",
                if done.changed {
                    ""
                } else {
                    " (the same as before)"
                },
                done.identity
            ),
            Err(ReloadError::NoFiles) => ReloadError::NoFiles.to_string(),
            Err(e) => format!("TLS reload refused, the certificate in use stays: {e}"),
        }
    }

    /// The `/fault` text: one line per active fault.
    pub fn fault_list(&self) -> String {
        let active = self.faults.active();
        if active.is_empty() {
            return "no active fault (add one with /fault SPEC)".to_owned();
        }
        let lines: Vec<String> = active
            .iter()
            .map(|f| format!("#{} {}  {} {}", f.id, f.spec, f.spec.touches(), f.sessions))
            .collect();
        lines.join("\n")
    }

    /// The `/stats` text.
    pub fn stats(&self) -> String {
        let s = self.registry.stats();
        let faults = self.faults.touched();
        let faults = match faults.is_empty() {
            true => String::new(),
            false => format!("\nfaults: {faults}"),
        };
        let cluster = match &self.cluster {
            Some(link) => format!("\n{}", link.stats_line()),
            None => String::new(),
        };
        format!(
            "uptime {}  sessions {} now / {} peak / {} total  rejected {}  backlog {}\n\
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
        ) + &faults
            + &cluster
    }

    /// Reads commands line by line from `input` (piped stdin: no prompt) until `quit` or end
    /// of input. Invalid UTF-8 is decoded lossily; a line longer than [`MAX_CONSOLE_LINE`] is
    /// skipped with a note.
    pub fn run_lines(&self, mut input: impl BufRead) {
        let mut line = Vec::new();
        loop {
            match read_bounded_line(&mut input, &mut line, MAX_CONSOLE_LINE) {
                Ok(Line::End) => break,
                Ok(Line::Whole) => {
                    if !self.execute(&String::from_utf8_lossy(&line)) {
                        return;
                    }
                }
                Ok(Line::TooLong(n)) => self.printer.print(&format!(
                    "console line of {n} bytes ignored: longer than {MAX_CONSOLE_LINE}"
                )),
                Err(e) => {
                    log::warn!("console input failed: error={e}");
                    break;
                }
            }
        }
        self.console_off("end of input");
    }

    /// Says that the console is off, why, and what that means for the operator.
    fn console_off(&self, why: &str) {
        log::info!("console off: {why} (the server keeps running)");
        if self.mode == Mode::Manual {
            log::warn!(
                "manual mode without a console: nobody can reply to the clients; \
                 they are still served and can leave with quit"
            );
        }
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
                Err(ReadlineError::Interrupted) => {
                    on_interrupt();
                    // Shutting down: no new prompt that nobody will answer.
                    if self.shutdown.is_triggered() {
                        return;
                    }
                }
                Err(ReadlineError::Eof) => {
                    self.printer.print(&format!(
                        "console off (Ctrl-D); the server keeps running: stop it with Ctrl-C \
                         or `kill {}`",
                        std::process::id()
                    ));
                    self.console_off("Ctrl-D");
                    return;
                }
                Err(e) => {
                    log::warn!("console input failed: error={e}");
                    break;
                }
            }
        }
        self.console_off("end of input");
    }
}

/// The line editor the console uses on a terminal.
pub type Editor = rustyline::DefaultEditor;

/// A line editor on the terminal and a [`Printer`] that prints above its prompt, when both
/// stdin and stdout are terminals; `None` otherwise (piped or redirected).
///
/// Once `shutdown` is triggered the printer writes straight to the terminal, over the prompt
/// line, instead of through the editor: the editor would draw each line later, on its own
/// thread, and redraw its prompt after it, so that a prompt nobody will answer could land
/// between the last log line and the summary.
pub fn terminal(shutdown: &Shutdown) -> Option<(Editor, Printer)> {
    use rustyline::ExternalPrinter as _;
    use std::io::{IsTerminal, Write as _};
    if !io::stdin().is_terminal() || !io::stdout().is_terminal() {
        return None;
    }
    let mut editor = Editor::new().ok()?;
    let mut external = editor.create_external_printer().ok()?;
    let shutdown = shutdown.clone();
    let printer = Printer::new(move |line| {
        if shutdown.is_triggered() {
            // The editor may hold the terminal in raw mode: say `\r\n` where it would.
            let text = format!("\r\x1b[2K{}\r\n", line.replace('\n', "\r\n"));
            let mut out = io::stdout().lock();
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        } else {
            let _ = external.print(format!("{line}\n"));
        }
    });
    Some((editor, printer))
}
