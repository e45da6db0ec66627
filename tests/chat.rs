//! Chat mode: every message reaches every other session, in that session's own line ending,
//! never the sender; join, leave and nickname notices.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use tcpool::{Config, Mode};

use crate::support::*;

fn chat() -> TestServer {
    TestServer::start(Config {
        mode: Mode::Chat,
        ..Config::default()
    })
}

const QUIET: Duration = Duration::from_millis(150);

#[test]
fn messages_reach_the_others_in_their_own_line_endings() {
    let server = chat();
    let mut a = chatter(server.addr); // #1, will speak `\n`
    let mut b = chatter(server.addr); // #2, will speak seed-style
    expect_bytes(&mut a, b"* #2 joined\n");

    // #3 is ncat speaking `\r\n` (-C turns its input's `\n` into `\r\n`).
    let mut c = Command::new("ncat")
        .args(["-C", "127.0.0.1", &server.addr.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ncat is needed for this test (scripts/test.sh installs it)");
    let mut c_in = c.stdin.take().unwrap();
    let c_out = collect_text(c.stdout.take().unwrap());
    // Sessions that have not spoken get `\n`, so notices do not run together.
    expect_bytes(&mut a, b"* #3 joined\n");
    expect_bytes(&mut b, b"* #3 joined\n");

    a.write_all(b"one\n").unwrap();
    expect_bytes(&mut b, b"<#1> one\n");
    wait_text(&c_out, "<#1> one\n");

    b.write_all(b"two").unwrap();
    expect_bytes(&mut a, b"<#2> two\n");
    wait_text(&c_out, "<#2> two\n");

    c_in.write_all(b"three\n").unwrap();
    c_in.flush().unwrap();
    expect_bytes(&mut a, b"<#3> three\n");
    expect_bytes(&mut b, b"<#3> three"); // seed-style: no terminator

    a.write_all(b"four\n").unwrap();
    expect_bytes(&mut b, b"<#1> four");
    wait_text(&c_out, "<#1> four\r\n");

    // Nobody ever got their own message back.
    expect_silence(&mut a, QUIET);
    expect_silence(&mut b, QUIET);
    assert_eq!(
        *c_out.lock().unwrap(),
        "* you are #3; 2 here: #1, #2\n<#1> one\n<#2> two\n<#1> four\r\n"
    );

    drop(c_in);
    wait_child(&mut c, IO_TIMEOUT);
    expect_bytes(&mut a, b"* #3 left\n");
    expect_bytes(&mut b, b"* #3 left");
}

#[test]
fn nicknames_name_the_sender() {
    let server = chat();
    let mut a = chatter(server.addr);
    let mut b = chatter(server.addr);
    expect_bytes(&mut a, b"* #2 joined\n");
    a.write_all(b"/nick alice\n").unwrap();
    expect_bytes(&mut a, b"* you are now alice\n");
    expect_bytes(&mut b, b"* #1 is now alice\n");
    a.write_all(b"hello\n").unwrap();
    expect_bytes(&mut b, b"<alice> hello\n");
    a.write_all(b"/nick has space\n").unwrap();
    let refusal = read_line(&mut a);
    assert!(refusal.starts_with(b"* nick refused"), "{refusal:?}");
    expect_silence(&mut b, QUIET);
    a.write_all(b"quit\n").unwrap();
    expect_bytes(&mut b, b"* alice left\n");
}

#[test]
fn a_partial_line_waits_for_its_end() {
    let server = chat();
    let mut a = chatter(server.addr);
    let mut b = chatter(server.addr);
    expect_bytes(&mut a, b"* #2 joined\n");
    a.write_all(b"first\nhalf a ").unwrap();
    expect_bytes(&mut b, b"<#1> first\n");
    expect_silence(&mut b, QUIET);
    a.write_all("line, 你好\n".as_bytes()).unwrap();
    expect_bytes(&mut b, "<#1> half a line, 你好\n".as_bytes());
}

#[test]
fn fan_out_never_waits_for_a_reader_that_does_not_read() {
    let server = TestServer::start(Config {
        mode: Mode::Chat,
        max_line: 1024,
        outbox_limit: 64 * 1024,
        ..Config::default()
    });
    let mut speaker = chatter(server.addr);
    let mut listener = chatter(server.addr);
    let _sleeper = connect(server.addr); // never reads
    // #2 and #3 may be adopted by different workers: their notices can come in either order.
    let mut joined = [read_line(&mut speaker), read_line(&mut speaker)];
    joined.sort();
    assert_eq!(
        joined,
        [b"* #2 joined\n".to_vec(), b"* #3 joined\n".to_vec()]
    );
    expect_bytes(&mut listener, b"* #3 joined\n");
    let line = format!("{}\n", "x".repeat(1000));
    let relayed = format!("<#1> {line}");
    // Far more than the sleeper's socket buffers and outbox hold: its outbox overflows, it
    // is dropped, and the others see it leave while every relayed line still arrives.
    let mut left = false;
    let mut relayed_lines = 0;
    for _ in 0..8000 {
        speaker.write_all(line.as_bytes()).unwrap();
        let got = read_line(&mut listener);
        if got == b"* #3 left\n" {
            left = true;
            assert_eq!(read_line(&mut listener), relayed.as_bytes());
        } else {
            assert_eq!(got, relayed.as_bytes());
        }
        relayed_lines += 1;
        if left && relayed_lines % 100 == 0 {
            break;
        }
    }
    assert!(left, "the sleeper was never dropped");
    server.wait_for("the sleeper to be gone", |r| r.len() == 2);
}

#[test]
fn a_newcomer_is_told_who_is_here_and_commands_are_answered_not_relayed() {
    let server = chat();
    let (mut a, greeting) = join_chat(server.addr);
    assert_eq!(greeting, "* you are #1; nobody else is here\n");
    a.write_all(b"/nick ann\n").unwrap();
    expect_bytes(&mut a, b"* you are now ann\n");
    let (mut b, greeting) = join_chat(server.addr);
    assert_eq!(greeting, "* you are #2; 1 here: ann\n");
    expect_bytes(&mut a, b"* #2 joined\n");

    b.write_all(b"/nick\n").unwrap();
    expect_bytes(&mut b, b"* you are #2; usage: /nick NAME\n");
    b.write_all(b"/frobnicate now\n").unwrap();
    let answer = read_line(&mut b);
    assert!(
        answer.starts_with(b"* unknown command /frobnicate: not sent."),
        "{answer:?}"
    );
    b.write_all(b"/who\n").unwrap();
    expect_bytes(&mut b, b"* 2 here: ann, #2 (you)\n");
    // Empty and blank lines are not relayed; `//` sends a line that starts with `/`.
    b.write_all(b"\n   \n//shrug\n").unwrap();
    expect_bytes(&mut a, b"<#2> /shrug\n");
    expect_silence(&mut a, QUIET);
}

#[test]
fn nicknames_are_unique_and_look_alikes_are_refused() {
    let server = chat();
    let mut ann = chatter(server.addr);
    let mut other = chatter(server.addr);
    expect_bytes(&mut ann, b"* #2 joined\n");
    ann.write_all(b"/nick ann\n").unwrap();
    expect_bytes(&mut ann, b"* you are now ann\n");
    expect_bytes(&mut other, b"* #1 is now ann\n");
    for fake in [
        "ann",
        "ANN",
        "\u{ff41}nn",  // fullwidth a: NFKC makes it `ann`
        "\u{430}nn",   // Cyrillic a
        "ann\u{200b}", // zero-width space
        "\u{202e}nna", // right-to-left override
        "#1",          // a session number
        "*",           // the server's notices
    ] {
        other
            .write_all(format!("/nick {fake}\n").as_bytes())
            .unwrap();
        let answer = String::from_utf8(read_line(&mut other)).unwrap();
        assert!(
            answer.starts_with("* nick refused: "),
            "{fake:?}: {answer:?}"
        );
    }
    // Nothing changed for anyone.
    expect_silence(&mut ann, QUIET);
    other.write_all(b"who am i\n").unwrap();
    expect_bytes(&mut ann, b"<#2> who am i\n");
    // Once ann leaves, the name is free.
    ann.write_all(b"quit\n").unwrap();
    expect_bytes(&mut other, b"* ann left\n");
    other.write_all(b"/nick Ann\n").unwrap();
    expect_bytes(&mut other, b"* you are now Ann\n");
    let me = server.registry.get(tcpool::server::SessionId(2)).unwrap();
    assert_eq!(me.nick().as_deref(), Some("Ann"));
}

#[test]
fn relayed_text_shows_control_characters_and_escapes_but_keeps_printable_text() {
    let server = chat();
    let mut talker = chatter(server.addr);
    let mut reader = chatter(server.addr);
    expect_bytes(&mut talker, b"* #2 joined\n");
    // A carriage return to overwrite the line with a fake one, a window title (OSC), a
    // screen clear (CSI), a C1 control, NUL, a bidi override; then CJK and an emoji.
    talker
        .write_all("a\r<ann> run this\x1b]0;pwned\x07\x1b[2J\u{9b}\0\u{202e}x 你好 👋\n".as_bytes())
        .unwrap();
    let got = String::from_utf8(read_line(&mut reader)).unwrap();
    assert_eq!(
        got,
        "<#1> a\\r<ann> run this\\x1b]0;pwned\\x07\\x1b[2J\\x9b\\x00\\u{202e}x 你好 👋\n"
    );
    assert!(
        !got[..got.len() - 1].chars().any(char::is_control),
        "{got:?}"
    );
}

#[test]
fn a_client_that_never_spoke_is_told_quit_with_a_newline_like_its_notices() {
    let server = chat();
    let mut silent = chatter(server.addr);
    let summary = {
        let server = server;
        server.stop()
    };
    assert_eq!(read_to_close(&mut silent), b"quit\n");
    assert_eq!(summary.sessions, 1);
}

#[test]
fn chat_clients_caught_in_the_kernel_queue_at_shutdown_get_quit_in_their_line_ending() {
    init_logger();
    let listener = tcpool::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tcpool::server::Server::new(
        listener,
        Config {
            mode: Mode::Chat,
            ..Config::default()
        },
    );
    // Connected and spoken before the server takes anyone: they wait in the kernel's queue,
    // and the shutdown comes first.
    let cases: [(&[u8], &[u8]); 4] = [
        (b"hi\r\n", b"quit\r\n"),
        (b"hi\n", b"quit\n"),
        (b"", b"quit\n"),
        (b"hi", b"quit"),
    ];
    let mut clients: Vec<std::net::TcpStream> = cases
        .iter()
        .map(|(said, _)| {
            let mut c = connect(addr);
            c.write_all(said).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    server.shutdown().trigger();
    let summary = server.run().unwrap();
    for (c, (said, told)) in clients.iter_mut().zip(cases) {
        let got = read_to_close(c);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(told),
            "after {:?}",
            String::from_utf8_lossy(said)
        );
    }
    assert_eq!(summary.sessions, 0);
}
