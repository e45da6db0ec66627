//! The wire contract in exact bytes: framing, line endings, `quit`, `busy`.

use std::io::{Read, Write};
use std::net::Shutdown as Direction;
use std::time::Duration;

use tcpool::Config;

use crate::support::*;

#[test]
fn seed_style_hello_comes_back_unterminated() {
    let server = TestServer::start(Config::default());
    let mut c = connect(server.addr);
    assert_eq!(round_trip(&mut c, b"hello"), b"hello");
    assert_eq!(
        round_trip(&mut c, "你好，世界".as_bytes()),
        "你好，世界".as_bytes()
    );
}

#[test]
fn echo_returns_line_endings_unchanged() {
    let server = TestServer::start(Config::default());
    let mut lf = connect(server.addr);
    assert_eq!(round_trip(&mut lf, b"one\ntwo\n"), b"one\ntwo\n");
    let mut crlf = connect(server.addr);
    assert_eq!(round_trip(&mut crlf, b"one\r\ntwo\r\n"), b"one\r\ntwo\r\n");
    // A lone \r and an empty line are data like any other.
    assert_eq!(round_trip(&mut crlf, b"a\rb\r\n\r\n"), b"a\rb\r\n\r\n");
}

#[test]
fn client_quit_ends_only_that_session_without_reply() {
    let server = TestServer::start(Config::default());
    let mut other = connect(server.addr);
    assert_eq!(round_trip(&mut other, b"before\n"), b"before\n");

    let mut quitter = connect(server.addr);
    quitter.write_all(b"first\nquit\nnever echoed\n").unwrap();
    // What came before `quit` in the same read is echoed; `quit` gets no reply.
    assert_eq!(read_to_close(&mut quitter), b"first\n");

    let mut seed = connect(server.addr);
    seed.write_all(b"quit").unwrap();
    assert_eq!(read_to_close(&mut seed), b"");

    assert_eq!(round_trip(&mut other, b"after\n"), b"after\n");
    server.wait_for("the quitters to be gone", |r| r.len() == 1);
}

#[test]
fn quit_split_across_reads_still_ends_the_session() {
    let server = TestServer::start(Config::default());
    let mut c = connect(server.addr);
    assert_eq!(round_trip(&mut c, b"x\nqu"), b"x\nqu");
    c.write_all(b"it\r\n").unwrap();
    assert_eq!(read_to_close(&mut c), b"");
}

#[test]
fn quit_is_case_sensitive_and_untrimmed() {
    let server = TestServer::start(Config::default());
    let mut c = connect(server.addr);
    for msg in [&b"Quit\n"[..], b" quit\n", b"quit \n", b"QUIT"] {
        assert_eq!(round_trip(&mut c, msg), msg);
    }
}

#[test]
fn a_mebibyte_without_newline_is_echoed_byte_for_byte() {
    let server = TestServer::start(Config::default());
    let mut c = connect(server.addr);
    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8 | 1).collect();
    assert!(!payload.contains(&b'\n'));
    let mut writer = c.try_clone().unwrap();
    let sent = payload.clone();
    let sending = std::thread::spawn(move || writer.write_all(&sent).unwrap());
    assert_eq!(read_n(&mut c, payload.len()), payload);
    sending.join().unwrap();
}

#[test]
fn random_binary_with_nuls_and_invalid_utf8_is_echoed_exactly() {
    let server = TestServer::start(Config::default());
    let mut c = connect(server.addr);
    // A fixed xorshift sequence: NULs, newlines, lone \r, invalid UTF-8 all occur.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let payload: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    assert!(payload.contains(&0) && payload.contains(&b'\n') && payload.contains(&0xff));
    // `quit` on a line of its own would end the session; this sequence has none.
    let mut writer = c.try_clone().unwrap();
    let sent = payload.clone();
    let sending = std::thread::spawn(move || {
        for chunk in sent.chunks(7919) {
            writer.write_all(chunk).unwrap();
        }
    });
    assert_eq!(read_n(&mut c, payload.len()), payload);
    sending.join().unwrap();
}

#[test]
fn half_closed_client_still_gets_every_reply() {
    let server = TestServer::start(Config::default());
    let mut c = connect(server.addr);
    c.write_all(b"one\ntwo\nthree").unwrap();
    c.shutdown(Direction::Write).unwrap();
    assert_eq!(read_to_close(&mut c), b"one\ntwo\nthree");
}

#[test]
fn max_conns_answers_busy_to_exactly_the_extra_clients() {
    let server = TestServer::start(Config {
        max_conns: Some(50),
        ..Config::default()
    });
    let mut admitted = Vec::new();
    let mut busy = 0;
    for i in 0..60 {
        let mut c = connect(server.addr);
        // A round trip proves admission; a busy client reads the busy line, then EOF.
        c.write_all(format!("{i}\n").as_bytes()).unwrap();
        let line = read_line(&mut c);
        if line.starts_with(b"busy") {
            assert_eq!(line, b"busy: server full, try again later\n");
            assert_eq!(read_to_close(&mut c), b"");
            busy += 1;
        } else {
            assert_eq!(line, format!("{i}\n").as_bytes());
            admitted.push(c);
        }
    }
    assert_eq!(busy, 10);
    assert_eq!(admitted.len(), 50);
    assert_eq!(server.registry.stats().rejected, 10);

    // A slot frees when a client leaves.
    let mut leaving = admitted.pop().unwrap();
    leaving.write_all(b"quit\n").unwrap();
    assert_eq!(read_to_close(&mut leaving), b"");
    server.wait_for("a free slot", |r| r.len() == 49);
    let mut c = connect(server.addr);
    assert_eq!(round_trip(&mut c, b"in\n"), b"in\n");
}

#[test]
fn session_ids_are_never_reused() {
    let server = TestServer::start(Config::default());
    let mut seen = Vec::new();
    for _ in 0..5 {
        let mut c = connect(server.addr);
        assert_eq!(round_trip(&mut c, b"x"), b"x");
        let ids: Vec<_> = server.registry.handles().iter().map(|h| h.id()).collect();
        assert_eq!(ids.len(), 1);
        seen.push(ids[0]);
        c.write_all(b"quit").unwrap();
        read_to_close(&mut c);
        server.wait_for("the session to end", |r| r.is_empty());
    }
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique, seen);
}

#[test]
fn accepted_sockets_have_nodelay_and_answer_at_once() {
    // Many tiny round trips: with Nagle on both sides this would stall ~40 ms each.
    let server = TestServer::start(Config::default());
    let mut c = connect(server.addr);
    c.set_nodelay(true).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..200u32 {
        let msg = i.to_le_bytes();
        assert_eq!(round_trip(&mut c, &msg), msg);
    }
}

#[test]
fn custom_handler_replies_in_the_peers_line_ending() {
    use tcpool::server::{Context, Handler, Message};
    struct Upper;
    impl Handler for Upper {
        fn on_message(&self, ctx: &mut Context<'_>, message: Message<'_>) {
            ctx.send_line(&String::from_utf8_lossy(message.text).to_uppercase());
        }
    }
    let server = TestServer::with_handler(Config::default(), Upper);
    let mut seed = connect(server.addr);
    assert_eq!(round_trip(&mut seed, b"hello"), b"HELLO");
    let mut crlf = connect(server.addr);
    crlf.write_all(b"one\r\ntw").unwrap();
    assert_eq!(read_n(&mut crlf, 5), b"ONE\r\n");
    crlf.write_all(b"o\r\n").unwrap();
    assert_eq!(read_n(&mut crlf, 5), b"TWO\r\n");
    let mut byte = [0u8; 1];
    crlf.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(crlf.read(&mut byte).is_err(), "nothing more expected");
}
