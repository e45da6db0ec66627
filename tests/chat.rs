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
    let mut a = connect(server.addr); // #1, will speak `\n`
    let mut b = connect(server.addr); // #2, will speak seed-style
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
    assert_eq!(*c_out.lock().unwrap(), "<#1> one\n<#2> two\n<#1> four\r\n");

    drop(c_in);
    wait_child(&mut c, IO_TIMEOUT);
    expect_bytes(&mut a, b"* #3 left\n");
    expect_bytes(&mut b, b"* #3 left");
}

#[test]
fn nicknames_name_the_sender() {
    let server = chat();
    let mut a = connect(server.addr);
    let mut b = connect(server.addr);
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
    let mut a = connect(server.addr);
    let mut b = connect(server.addr);
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
    let mut speaker = connect(server.addr);
    let mut listener = connect(server.addr);
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
