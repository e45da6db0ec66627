//! The operator console on the real binary's stdin: `/list`, `/stats`, `/kick`, hints, and
//! manual mode's replies; hostile peer text never reaches the operator's terminal raw.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

/// The `/list` row for session `id`, split into its columns.
fn list_row(server: &Binary, id: u64) -> Vec<String> {
    let tag = format!("#{id} ");
    server
        .wait_stdout(&format!("the /list row of #{id}"), |l| {
            l.trim_start().starts_with(&tag)
        })
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The last `/list` row printed for session `id`, split into its columns.
fn last_list_row(server: &Binary, id: u64) -> Vec<String> {
    let tag = format!("#{id} ");
    server
        .stdout_lines()
        .iter()
        .rev()
        .find(|l| l.trim_start().starts_with(&tag))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[test]
fn list_and_stats_show_what_the_clients_did() {
    let mut server = Binary::serve(&[]);
    let mut a = connect(server.addr);
    assert_eq!(round_trip(&mut a, b"hello\n"), b"hello\n");
    assert_eq!(round_trip(&mut a, b"again\n"), b"again\n");
    let mut b = connect(server.addr);
    assert_eq!(round_trip(&mut b, b"x"), b"x");

    // A worker counts the bytes it wrote just after the write, so a client can read its
    // reply a moment before the count moves (longer if the worker is descheduled right
    // there): ask again, until a generous deadline, until the counts have settled.
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut rows;
    loop {
        server.stdout.lock().unwrap().clear();
        server.type_line("/list");
        server.wait_stdout("the end of a /list", |l| l.trim_start().starts_with("#2 "));
        rows = (last_list_row(&server, 1), last_list_row(&server, 2));
        let settled =
            rows.0[3..7] == ["2", "12", "2", "12"] && rows.1[3..7] == ["1", "1", "1", "1"];
        if settled || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (a_row, b_row) = rows;
    // id, peer, connected for, msgs in, bytes in, msgs out, bytes out
    assert_eq!(a_row[1], a.local_addr().unwrap().to_string());
    assert_eq!(&a_row[3..7], ["2", "12", "2", "12"]);
    assert_eq!(&b_row[3..7], ["1", "1", "1", "1"]);

    server.type_line("/stats");
    let sessions = server.wait_stdout("/stats", |l| l.contains("sessions "));
    assert!(
        sessions.contains("sessions 2 now / 2 peak / 2 total"),
        "{sessions}"
    );
    assert!(sessions.contains("rejected 0"), "{sessions}");
    let traffic = server.wait_stdout("/stats traffic", |l| l.starts_with("in: "));
    assert_eq!(
        traffic,
        "in: 3 messages, 13 bytes  out: 3 messages, 13 bytes"
    );
}

#[test]
fn kick_closes_exactly_one_session() {
    let mut server = Binary::serve(&[]);
    let mut a = connect(server.addr);
    assert_eq!(round_trip(&mut a, b"a\n"), b"a\n");
    let mut b = connect(server.addr);
    assert_eq!(round_trip(&mut b, b"b\r\n"), b"b\r\n");

    server.type_line("/kick 1");
    assert_eq!(read_to_close(&mut a), b"quit\n");
    server.wait_stdout("the kick", |l| l == "kicked #1");
    assert_eq!(round_trip(&mut b, b"still\r\n"), b"still\r\n");

    server.type_line("/kick 1");
    // Gone, or still saying its goodbye: either way not kicked twice.
    server.wait_stdout("the second kick", |l| {
        l == "no session #1" || l == "session #1 is already closing"
    });
    // Listed as closing until its goodbye is done, then gone.
    server.type_line("/list");
    list_row(&server, 2);
    for line in server.stdout_lines() {
        if line.trim_start().starts_with("#1 ") {
            assert!(line.ends_with("(closing)"), "{line}");
        }
    }
}

#[test]
fn unknown_commands_get_a_one_line_hint() {
    let mut server = Binary::serve(&[]);
    server.type_line("/frobnicate");
    server.wait_stdout("the hint", |l| {
        l == "unknown command /frobnicate; type /help for the list"
    });
    server.type_line("/help");
    server.wait_stdout("the help", |l| l.contains("/kick ID"));
    server.type_line("hello?");
    server.wait_stdout("the mode hint", |l| {
        l.starts_with("replies are for --mode manual")
    });
    server.type_line("/kick nobody");
    server.wait_stdout("the usage", |l| l.contains("usage: /kick ID"));
    // Still serving, console still reading.
    let mut c = connect(server.addr);
    assert_eq!(round_trip(&mut c, b"ok"), b"ok");
    server.type_line("quit");
    assert_eq!(server.wait_timeout(Duration::from_secs(10)), Some(0));
}

#[test]
fn manual_mode_replies_reach_the_right_session_in_its_line_ending() {
    let mut server = Binary::serve(&["--mode", "manual"]);
    let mut a = connect(server.addr);
    a.write_all(b"hello from a").unwrap(); // seed-style
    server.wait_stdout("a's message", |l| l == "client#1>> hello from a");
    server.type_line("hi a");
    expect_bytes(&mut a, b"hi a");

    let mut b = connect(server.addr);
    b.write_all(b"hello from b\r\n").unwrap();
    server.wait_stdout("b's message", |l| l == "client#2>> hello from b");
    server.type_line("plain goes to the last speaker");
    expect_bytes(&mut b, b"plain goes to the last speaker\r\n");
    server.type_line("@1 only a");
    expect_bytes(&mut a, b"only a");
    server.type_line("@all everyone");
    expect_bytes(&mut a, b"everyone");
    expect_bytes(&mut b, b"everyone\r\n");
    server.type_line("@9 nobody");
    server.wait_stdout("the unknown id", |l| l == "no session #9");

    server.type_line("@2 quit");
    assert_eq!(read_to_close(&mut b), b"quit\r\n");
    expect_silence(&mut a, Duration::from_millis(100));
}

#[test]
fn hostile_peer_text_changes_nothing_for_the_operator() {
    let mut server = Binary::serve(&["--mode", "manual"]);
    let mut good = connect(server.addr);
    good.write_all(b"hello").unwrap();
    server.wait_stdout("the good client", |l| l == "client#1>> hello");

    let mut evil = connect(server.addr);
    evil.write_all(b"\x1b[2J\x1b]0;owned\x07").unwrap();
    server.wait_stdout("the escaped text", |l| {
        l == r"client#2>> \x1b[2J\x1b]0;owned\x07"
    });
    evil.write_all(b"/kick 1").unwrap();
    server.wait_stdout("the command-looking text", |l| l == "client#2>> /kick 1");
    // Its `quit` ends its own session only.
    evil.write_all(b"\nquit\n").unwrap();
    assert_eq!(read_to_close(&mut evil), b"");

    server.type_line("@1 you are fine");
    expect_bytes(&mut good, b"you are fine");
    assert!(
        server
            .stdout_lines()
            .iter()
            .all(|l| !l.contains('\x1b') && !l.contains('\x07')),
        "raw control characters reached the operator: {:?}",
        server.stdout_lines()
    );
    assert_eq!(
        server.wait_timeout(Duration::ZERO),
        None,
        "the server stopped"
    );
    server.type_line("/list");
    list_row(&server, 1);
}

#[test]
fn a_character_split_across_reads_is_shown_whole() {
    let server = Binary::serve(&["--mode", "manual"]);
    let mut c = connect(server.addr);
    c.set_nodelay(true).unwrap();
    let text = "你好，世界".as_bytes();
    c.write_all(&text[..4]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    c.write_all(&text[4..]).unwrap();
    server.wait_stdout("the first part", |l| l == "client#1>> 你");
    server.wait_stdout("the rest", |l| l == "client#1>> 好，世界");
    assert!(
        server
            .stdout_lines()
            .iter()
            .all(|l| !l.contains('\u{fffd}'))
    );
}

#[test]
fn invalid_utf8_is_shown_as_its_bytes_on_the_console_and_in_trace_logs() {
    let server = Binary::serve(&["--mode", "manual"]);
    let mut c = connect(server.addr);
    c.write_all(b"bad \xff\xfe byte\n").unwrap();
    server.wait_stdout("the line", |l| l == r"client#1>> bad \xff\xfe byte");

    let server = Binary::serve_with(&[], Stdio::piped(), |command| {
        command.env("RUST_LOG", "tcpool=trace");
    });
    let mut c = connect(server.addr);
    assert_eq!(round_trip(&mut c, b"x\xffy"), b"x\xffy");
    server.wait_stderr("the trace line", |l| {
        l.contains("read:") && l.contains(r"data=x\xffy")
    });
}

#[test]
fn a_dual_stack_server_lists_ipv4_clients_as_ipv4_in_aligned_columns() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: nothing to test");
        return;
    }
    let mut server = Binary::serve(&["--bind", "::"]);
    let port = server.addr.port();
    let mut v4 = connect(([127, 0, 0, 1], port).into());
    assert_eq!(round_trip(&mut v4, b"four"), b"four");
    let mut v6 = connect((std::net::Ipv6Addr::LOCALHOST, port).into());
    assert_eq!(round_trip(&mut v6, b"six"), b"six");

    server.type_line("/list");
    let row = list_row(&server, 1);
    assert_eq!(row[1], v4.local_addr().unwrap().to_string());
    list_row(&server, 2);
    // The column after the peer ends at the same place in the header and in every row.
    let lines = server.stdout_lines();
    let header = lines.iter().find(|l| l.contains("connected")).unwrap();
    let end = header.find("connected").unwrap() + "connected".len();
    for line in lines.iter().filter(|l| l.trim_start().starts_with('#')) {
        let connected = line.split_whitespace().nth(2).unwrap();
        let at = line.find(&format!(" {connected} ")).unwrap() + 1 + connected.len();
        assert_eq!(at, end, "{header}\n{line}");
    }
}
