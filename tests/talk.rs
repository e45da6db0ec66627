//! `tcpool talk` and the seed programs, in both directions; the terminal experience through a
//! pseudo-terminal.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use tcpool::{Config, Mode};

use crate::support::*;

fn talk_piped(
    addr: &str,
    extra: &[&str],
) -> (
    Child,
    ChildStdin,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let mut child = Command::new(tcpool_bin())
        .arg("talk")
        .arg(addr)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = collect_lines(child.stdout.take().unwrap());
    (child, stdin, stdout)
}

fn seed_client(port: u16) -> (Child, ChildStdin, std::sync::Arc<std::sync::Mutex<String>>) {
    let mut child = Command::new("python3")
        .arg(seed_dir().join("seed_client.py"))
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let stdin = child.stdin.take().unwrap();
    let stdout = collect_text(child.stdout.take().unwrap());
    (child, stdin, stdout)
}

/// Runs `printf INPUT | tcpool talk ADDR ARGS...` in a shell, exactly as a user would.
fn talk_printf(input: &str, addr: impl std::fmt::Display, args: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '{input}' | '{}' talk {addr} {args}",
            tcpool_bin()
        ))
        .output()
        .unwrap()
}

fn say(stdin: &mut ChildStdin, line: &str) {
    writeln!(stdin, "{line}").unwrap();
    stdin.flush().unwrap();
}

#[test]
fn talk_against_the_seed_server() {
    let port = free_port();
    let mut seed = Command::new("python3")
        .arg(seed_dir().join("seed_server.py"))
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut seed_in = seed.stdin.take().unwrap();
    let seed_out = collect_text(seed.stdout.take().unwrap());
    wait_listening(port);

    let (mut talk, mut talk_in, talk_out) = talk_piped(&format!("127.0.0.1:{port}"), &[]);
    say(&mut talk_in, "hello");
    wait_text(&seed_out, "client>> hello\n");
    // The seed server's operator answers through its stdin.
    say(&mut seed_in, "你好 from the seed");
    wait_line(&talk_out, "the answer", |l| {
        l == "server>> 你好 from the seed"
    });
    say(&mut talk_in, "quit");
    assert_eq!(wait_child(&mut talk, IO_TIMEOUT), Some(0));
    assert_eq!(wait_child(&mut seed, IO_TIMEOUT), Some(0));
    wait_text(&seed_out, "client>> quit\n");
}

#[test]
fn piped_talk_against_tcpool_serve() {
    let server = TestServer::start(Config::default());
    let output = talk_printf("hello\\nworld\\nquit\\n", server.addr, "");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "server>> hello\nserver>> world\n"
    );
}

#[test]
fn talk_exits_0_when_the_server_says_quit() {
    let server = TestServer::start(Config::default());
    let (mut talk, mut talk_in, talk_out) = talk_piped(&server.addr.to_string(), &["--eol", "lf"]);
    say(&mut talk_in, "hi");
    wait_line(&talk_out, "the echo", |l| l == "server>> hi");
    server.stop();
    assert_eq!(wait_child(&mut talk, IO_TIMEOUT), Some(0));
    drop(talk_in);
}

#[test]
fn talk_to_a_closed_port_is_a_one_line_error() {
    let port = free_port();
    let output = Command::new(tcpool_bin())
        .args(["talk", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn talk_no_wait_sends_lines_and_collects_the_replies() {
    let server = TestServer::start(Config::default());
    let output = talk_printf("one\\ntwo\\nthree\\n", server.addr, "--no-wait --eol crlf");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "server>> one\nserver>> two\nserver>> three\n"
    );
}

#[test]
fn talk_warns_and_goes_on_when_no_reply_comes() {
    let server = TestServer::start(Config {
        mode: Mode::Manual,
        ..Config::default()
    });
    // Nobody at the console answers.
    let output = talk_printf("anyone?\\n", server.addr, "--reply-timeout 0.3");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("warning: no reply within"), "{stderr}");
}

#[test]
fn seed_clients_against_manual_mode() {
    let mut server = Binary::serve(&["--mode", "manual"]);
    let port = server.addr.port();
    let (mut a, mut a_in, a_out) = seed_client(port);
    say(&mut a_in, "hello from a");
    server.wait_stdout("a", |l| l == "client#1>> hello from a");
    // One client: a plain line answers it, exactly as the seed server's operator did.
    server.type_line("hi a");
    wait_text(&a_out, "server>> hi a\n");

    let (mut b, mut b_in, b_out) = seed_client(port);
    say(&mut b_in, "hello from b");
    server.wait_stdout("b", |l| l == "client#2>> hello from b");
    say(&mut a_in, "a again");
    server.wait_stdout("a again", |l| l == "client#1>> a again");
    server.type_line("@2 just for b");
    wait_text(&b_out, "server>> just for b\n");
    server.type_line("@1 just for a");
    wait_text(&a_out, "server>> just for a\n");
    assert!(!a_out.lock().unwrap().contains("just for b"));
    assert!(!b_out.lock().unwrap().contains("just for a"));

    // The operator's quit: each seed client reads `quit` at its next turn and exits 0.
    server.type_line("quit");
    say(&mut a_in, "still there?");
    say(&mut b_in, "still there?");
    assert_eq!(wait_child(&mut a, IO_TIMEOUT), Some(0));
    assert_eq!(wait_child(&mut b, IO_TIMEOUT), Some(0));
    assert_eq!(server.wait_timeout(Duration::from_secs(10)), Some(0));
}

#[test]
fn terminal_talk_keeps_the_typed_line_when_a_chat_line_arrives() {
    let server = TestServer::start(Config {
        mode: Mode::Chat,
        ..Config::default()
    });
    let mut other = chatter(server.addr);
    let mut command = Command::new(tcpool_bin());
    command.args(["talk", &server.addr.to_string()]);
    let mut pty = rexpect::session::spawn_command(command, Some(10_000)).unwrap();
    pty.exp_string("client>> ").unwrap();
    expect_bytes(&mut other, b"* #2 joined\n");

    pty.send("hello wor").unwrap();
    pty.flush().unwrap();
    pty.exp_string("hello wor").unwrap();
    other.write_all(b"ping\n").unwrap();
    // The chat line appears above the prompt, and the half-typed line is drawn again.
    pty.exp_string("server>> <#1> ping").unwrap();
    pty.exp_string("client>> hello wor").unwrap();
    pty.send_line("ld").unwrap();
    expect_bytes(&mut other, b"<#2> hello world\n");

    pty.send_line("quit").unwrap();
    pty.exp_eof().unwrap();
}

#[test]
fn terminal_console_prompt_survives_client_lines_and_ctrl_c_shuts_down() {
    let mut command = Command::new(tcpool_bin());
    command.args(["serve", "--port", "0", "--mode", "manual"]);
    let mut pty = rexpect::session::spawn_command(command, Some(10_000)).unwrap();
    let (_, addr) = pty.exp_regex(r"127\.0\.0\.1:\d+").unwrap();
    pty.exp_string("server>> ").unwrap();
    let mut client = connect(addr.parse().unwrap());

    pty.send("hel").unwrap();
    pty.flush().unwrap();
    pty.exp_string("hel").unwrap();
    client.write_all(b"question?").unwrap();
    pty.exp_string("client#1>> question?").unwrap();
    pty.exp_string("server>> hel").unwrap();
    pty.send_line("lo there").unwrap();
    expect_bytes(&mut client, b"hello there");

    // Ctrl-C at the prompt does what SIGINT does: a graceful shutdown.
    pty.send_control('c').unwrap();
    assert_eq!(read_to_close(&mut client), b"quit");
    pty.exp_string("tcpool served 1 session(s)").unwrap();
    pty.exp_eof().unwrap();
}

/// A one-client echo server that lets the client's lines pile up, then answers all of them
/// in one write, as a loaded server may: lines without an ending run together.
fn echo_all_at_once() -> std::net::SocketAddr {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        // Everything that arrives until 300 ms of quiet, then one write.
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        stream.write_all(&got).unwrap();
        // Then silence until the client leaves (longer than the tests' 15 s bound).
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        while let Ok(1..) = stream.read(&mut buf) {}
    });
    addr
}

#[test]
fn talk_no_wait_without_eol_gets_every_reply_and_no_false_warning() {
    let addr = echo_all_at_once();
    let started = std::time::Instant::now();
    // A long reply timeout: waiting it out instead of for a short quiet spell would show.
    let output = talk_printf("1\\n2\\n3\\n4\\n", addr, "--no-wait --reply-timeout 30s");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "server>> 1\nserver>> 2\nserver>> 3\nserver>> 4\n"
    );
    assert!(stderr.is_empty(), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn talk_no_wait_with_unterminated_lines_waits_for_quiet_not_for_a_count() {
    let addr = echo_all_at_once();
    let started = std::time::Instant::now();
    let output = talk_printf(
        "1\\n2\\n3\\n4\\n",
        addr,
        "--no-wait --eol none --reply-timeout 30s",
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    // Four lines, one reply: every byte came back, so nothing is missing to warn about.
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "server>> 1234\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn talk_exits_1_with_the_message_when_the_server_is_busy() {
    let server = TestServer::start(Config {
        max_conns: Some(1),
        ..Config::default()
    });
    let mut first = connect(server.addr);
    assert_eq!(round_trip(&mut first, b"mine"), b"mine");
    let output = talk_printf("hello\\n", server.addr, "");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "server>> busy: server full, try again later\n"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the server is full") && stderr.contains("try again later"),
        "{stderr}"
    );
}

#[test]
fn terminal_talk_quit_says_nothing_about_the_server_closing() {
    let server = TestServer::start(Config::default());
    // The server closes right after our `quit`: the race showed only now and then.
    for _ in 0..3 {
        let mut command = Command::new(tcpool_bin());
        command.args(["talk", &server.addr.to_string()]);
        let mut pty = rexpect::session::spawn_command(command, Some(10_000)).unwrap();
        pty.exp_string("client>> ").unwrap();
        pty.send_line("quit").unwrap();
        let rest = pty.exp_eof().unwrap();
        assert!(!rest.contains("server closed"), "{rest:?}");
    }
}
