//! The console as a newcomer meets it: the words people type, what `/help` offers, a console
//! that goes away, long lines in and out, and manual mode's hints.

use std::io::Write;
use std::process::Stdio;

use crate::support::*;

#[test]
fn slash_quit_and_slash_exit_shut_the_server_down() {
    for word in ["/quit", "/exit"] {
        let mut server = Binary::serve(&[]);
        let mut c = connect(server.addr);
        assert_eq!(round_trip(&mut c, b"hi"), b"hi");
        server.type_line(word);
        assert_eq!(read_to_close(&mut c), b"quit", "{word}");
        assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0), "{word}");
    }
}

#[test]
fn command_words_without_a_slash_point_to_the_commands_outside_manual_mode() {
    let mut server = Binary::serve(&[]);
    for word in ["help", "list", "stats"] {
        server.type_line(word);
        server.wait_stdout(word, |l| {
            l == format!("commands start with /: /help lists them (did you mean /{word}?)")
        });
    }
    server.type_line("exit");
    server.wait_stdout("exit", |l| {
        l.starts_with("to stop the server type quit (or /quit)")
    });
    // The server is still up: `exit` is not `quit`.
    let mut c = connect(server.addr);
    assert_eq!(round_trip(&mut c, b"still"), b"still");
}

#[test]
fn help_lists_only_what_the_mode_offers() {
    let mut echo = Binary::serve(&[]);
    echo.type_line("/help");
    echo.wait_stdout("the help", |l| l.contains("/help         this text"));
    let mut manual = Binary::serve(&["--mode", "manual"]);
    manual.type_line("/help");
    manual.wait_stdout("the replies", |l| {
        l.contains("@all text     answer every client")
    });
    // Both printed everything they had by the time the manual one printed its replies.
    echo.type_line("/stats");
    echo.wait_stdout("stats", |l| l.starts_with("uptime "));
    assert!(
        !echo.stdout_lines().iter().any(|l| l.contains("@ID")),
        "{:?}",
        echo.stdout_lines()
    );
}

#[test]
fn stats_says_backlog_as_the_readme_does() {
    let mut server = Binary::serve(&[]);
    server.type_line("/stats");
    let line = server.wait_stdout("stats", |l| l.starts_with("uptime "));
    assert!(line.contains("  backlog 0"), "{line}");
}

#[test]
fn manual_mode_with_stdin_closed_warns_that_nobody_can_reply() {
    let server = Binary::serve_with(&["--mode", "manual"], Stdio::null(), |_| {});
    server.wait_stderr("the warning", |l| {
        l.contains("WARN") && l.contains("nobody can reply to the clients")
    });
    let echo = Binary::serve_with(&[], Stdio::null(), |_| {});
    echo.wait_stderr("console off", |l| l.contains("console off"));
    assert!(
        !echo
            .stderr_lines()
            .iter()
            .any(|l| l.contains("nobody can reply")),
        "echo mode needs nobody to reply"
    );
}

#[test]
fn manual_hint_after_the_last_speaker_left_names_who_is_there() {
    let mut server = Binary::serve(&["--mode", "manual"]);
    let mut clients: Vec<_> = (0..3).map(|_| connect(server.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(format!("from {}\n", i + 1).as_bytes()).unwrap();
        server.wait_stdout("the line", |l| {
            l == format!("client#{}>> from {}", i + 1, i + 1)
        });
    }
    drop(clients.pop());
    server.wait_stdout("the departure", |l| l == "* client#3 left");
    server.type_line("anyone?");
    server.wait_stdout("the hint", |l| {
        l == "client#3, who spoke last, has left: answer one with @ID text \
              (connected: #1, #2) or everyone with @all text"
    });
}

#[test]
fn kick_of_a_closing_session_says_it_is_closing() {
    let mut server = Binary::serve(&[]);
    // A client that does not close stays listed, `(closing)`, while its input is drained
    // after the goodbye (250 ms): the second /kick, typed with the first, finds it so.
    let mut c = connect(server.addr);
    assert_eq!(round_trip(&mut c, b"x"), b"x");
    server.type_line("/kick 1\n/kick 1");
    server.wait_stdout("kicked", |l| l == "kicked #1");
    server.wait_stdout("the answer", |l| l == "session #1 is already closing");
    assert_eq!(read_to_close(&mut c), b"quit");
}

#[test]
fn long_client_messages_are_cut_on_the_console_with_a_count() {
    let server = Binary::serve(&["--mode", "manual"]);
    let mut c = connect(server.addr);
    let mut long = "é".repeat(1000).into_bytes(); // 2000 bytes
    long.push(b'\n');
    c.write_all(&long).unwrap();
    let line = server.wait_stdout("the cut line", |l| l.starts_with("client#1>> "));
    let shown = line
        .strip_prefix("client#1>> ")
        .unwrap()
        .strip_suffix(" [... 976 more bytes not shown]")
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(shown, "é".repeat(512));
}

#[test]
fn a_short_message_ending_inside_a_character_is_shown_whole() {
    let server = Binary::serve(&["--mode", "manual"]);
    let mut c = connect(server.addr);
    c.write_all(b"\xff\xfe\x1b[2J\xe4\xbd\n").unwrap();
    let line = server.wait_stdout("the line", |l| l.starts_with("client#1>> "));
    assert_eq!(line, r"client#1>> \xff\xfe\x1b[2J\xe4\xbd");
}

#[test]
fn a_console_fed_without_newlines_stays_bounded() {
    let mut server = Binary::serve(&[]);
    let before = server.rss_kib();
    let stdin = server.stdin.as_mut().unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..100 {
        stdin.write_all(&chunk).unwrap();
    }
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
    server.wait_stdout("the note", |l| {
        l == "console line of 104857601 bytes ignored: longer than 65536"
    });
    let grown = server.rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "100 MiB typed grew RSS by {grown} KiB");
    // The console still works.
    server.type_line("/stats");
    server.wait_stdout("stats", |l| l.starts_with("uptime "));
}

#[test]
fn ctrl_d_on_a_terminal_says_the_console_is_off_and_how_to_stop() {
    let mut command = std::process::Command::new(tcpool_bin());
    command.args(["serve", "--port", "0"]);
    let mut pty = rexpect::session::spawn_command(command, Some(10_000)).unwrap();
    let (_, addr) = pty.exp_regex(r"127\.0\.0\.1:\d+").unwrap();
    pty.exp_string("tcpool> ").unwrap();
    pty.send_control('d').unwrap();
    pty.exp_string("console off (Ctrl-D); the server keeps running: stop it with Ctrl-C")
        .unwrap();
    // Still serving; Ctrl-C still stops it.
    let mut c = connect(addr.parse().unwrap());
    assert_eq!(round_trip(&mut c, b"up"), b"up");
    pty.send_control('c').unwrap();
    pty.exp_string("tcpool served 1 session(s)").unwrap();
    pty.exp_eof().unwrap();
}

#[test]
fn no_prompt_is_left_between_the_last_log_line_and_the_summary() {
    for stop in ["ctrl-c", "sigterm"] {
        let mut command = std::process::Command::new(tcpool_bin());
        command.args(["serve", "--port", "0"]);
        let mut pty = rexpect::session::spawn_command(command, Some(10_000)).unwrap();
        pty.exp_string("tcpool> ").unwrap();
        if stop == "ctrl-c" {
            pty.send_control('c').unwrap();
        } else {
            pty.process_mut()
                .signal(nix::sys::signal::Signal::SIGTERM)
                .unwrap();
        }
        pty.exp_string("stopped: took_ms=").unwrap();
        let (between, _) = pty.exp_regex("tcpool served [^\r\n]*").unwrap();
        // What a person sees: a prompt drawn here must have been erased before the summary.
        if let Some(at) = between.rfind("tcpool> ") {
            assert!(between[at..].contains("\x1b[2K"), "{stop}: {between:?}");
        }
        pty.exp_eof().unwrap();
    }
}

/// A tmux server of its own (killed on drop) running one bash window, as a person's terminal.
struct Tmux(String);

impl Tmux {
    fn start() -> Tmux {
        let tmux = Tmux(format!("tcpool-test-{}", std::process::id()));
        tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "150",
            "-y",
            "40",
            "bash --norc --noprofile",
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Waits until the screen shows `text`; returns the screen.
    fn wait_for(&self, text: &str) -> String {
        let mut screen = String::new();
        wait_until(&format!("{text:?} on the screen"), || {
            screen = self.run(&["capture-pane", "-p"]);
            screen.contains(text)
        });
        screen
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

#[test]
fn ctrl_z_then_fg_gives_the_prompt_back_in_raw_mode() {
    let tmux = Tmux::start();
    tmux.keys(&[&format!("'{}' serve --port 0", tcpool_bin()), "Enter"]);
    tmux.wait_for("tcpool>");
    tmux.keys(&["C-z"]);
    tmux.wait_for("Stopped");
    tmux.keys(&["fg", "Enter"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Typed in two goes, as a person types: in cooked mode the terminal echoes it too.
    tmux.keys(&["/sta"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    tmux.keys(&["ts", "Enter"]);
    let screen = tmux.wait_for("uptime ");
    assert_eq!(screen.matches("/stats").count(), 1, "{screen}");
    tmux.keys(&["quit", "Enter"]);
    tmux.wait_for("tcpool served 0 session(s)");
}
