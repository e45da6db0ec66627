//! `serve --mode manual --udp`: a datagram is shown on the console under its source's
//! pseudo-session id (`udp#N`), not echoed, and the operator answers it with `@uN text`.

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::support::*;

fn peer() -> UdpSocket {
    let p = UdpSocket::bind("127.0.0.1:0").unwrap();
    p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    p
}

/// The next datagram `p` receives, within its read timeout.
fn next(p: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let (n, _) = p.recv_from(&mut buf).expect("a datagram");
    buf[..n].to_vec()
}

/// `p` receives nothing for `quiet`.
fn silent(p: &UdpSocket, quiet: Duration) {
    p.set_read_timeout(Some(quiet)).unwrap();
    let mut buf = [0u8; 2048];
    match p.recv_from(&mut buf) {
        Ok((n, _)) => panic!(
            "unexpected datagram {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{e}"
        ),
    }
    p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
}

fn manual(extra: &[&str]) -> Binary {
    let mut args = vec!["--mode", "manual", "--udp"];
    args.extend_from_slice(extra);
    let server = Binary::serve(&args);
    server.wait_stderr("the udp line", |l| l.contains("udp manual"));
    server
}

fn introduced(server: &Binary, id: u64, from: SocketAddr) {
    let want = format!("* udp#{id} is {from} (answer with @u{id} text)");
    server.wait_stdout("the new source", |l| l == want);
}

#[test]
fn a_datagram_shows_under_its_pseudo_id_and_the_reply_reaches_only_its_source() {
    let mut server = manual(&[]);
    let (a, b) = (peer(), peer());
    a.send_to(b"hello from a", server.addr).unwrap();
    introduced(&server, 1, a.local_addr().unwrap());
    server.wait_stdout("a's datagram", |l| l == "udp#1>> hello from a");
    b.send_to(b"hello from b\n", server.addr).unwrap();
    introduced(&server, 2, b.local_addr().unwrap());
    server.wait_stdout("b's datagram", |l| l == "udp#2>> hello from b");
    // a's second datagram keeps its id, and is shown escaped and not echoed.
    a.send_to(b"\x1b[2J again", server.addr).unwrap();
    server.wait_stdout("a again", |l| l == r"udp#1>> \x1b[2J again");

    server.type_line("@u1 only a");
    assert_eq!(
        next(&a),
        b"only a",
        "the first datagram a gets is the reply"
    );
    // b's last datagram ended in a newline: its reply does too.
    server.type_line("@udp#2 only b");
    assert_eq!(next(&b), b"only b\n");
    silent(&a, Duration::from_millis(200));
    // A plain line answers the source that spoke last.
    a.send_to(b"last word", server.addr).unwrap();
    server.wait_stdout("a's last word", |l| l == "udp#1>> last word");
    server.type_line("to the last speaker");
    assert_eq!(next(&a), b"to the last speaker");
    silent(&b, Duration::from_millis(200));
    // `@uN quit` tells the source and forgets it: it comes back under a new id.
    server.type_line("@u2 quit");
    assert_eq!(next(&b), b"quit\n");
    server.type_line("@u2 still there?");
    server.wait_stdout("the forgotten id", |l| l.starts_with("no udp#2: "));
    b.send_to(b"back", server.addr).unwrap();
    introduced(&server, 3, b.local_addr().unwrap());
    server.type_line("quit");
    assert_eq!(server.wait_timeout(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_tcp_client_and_a_udp_source_each_get_only_their_own_answer() {
    let mut server = manual(&[]);
    let mut tcp = connect(server.addr);
    let udp = peer();
    tcp.write_all(b"from tcp\n").unwrap();
    server.wait_stdout("the tcp message", |l| l == "client#1>> from tcp");
    udp.send_to(b"from udp", server.addr).unwrap();
    server.wait_stdout("the datagram", |l| l == "udp#1>> from udp");

    server.type_line("@1 to tcp");
    server.type_line("@u1 to udp");
    expect_bytes(&mut tcp, b"to tcp\n");
    assert_eq!(next(&udp), b"to udp");
    expect_silence(&mut tcp, Duration::from_millis(200));
    silent(&udp, Duration::from_millis(200));

    server.type_line("@all to both");
    expect_bytes(&mut tcp, b"to both\n");
    assert_eq!(next(&udp), b"to both");

    server.type_line("/list");
    let udp_at = udp.local_addr().unwrap().to_string();
    let row = server.wait_stdout("the udp row", |l| l.trim_start().starts_with("u1 "));
    assert!(row.contains(&udp_at) && row.ends_with("udp"), "{row}");
    // The TCP client speaks last and leaves: a plain line says whom else to answer.
    tcp.write_all(b"bye\n").unwrap();
    server.wait_stdout("the last tcp message", |l| l == "client#1>> bye");
    drop(tcp);
    server.wait_stdout("the tcp client leaving", |l| l == "* client#1 left");
    server.type_line("anyone?");
    let hint = server.wait_stdout("the hint", |l| l.starts_with("client#1, who spoke last"));
    assert!(hint.contains("(connected: u1)"), "{hint}");
    silent(&udp, Duration::from_millis(100));
    server.type_line("quit");
    assert_eq!(server.wait_timeout(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_line_to_an_unknown_or_forgotten_udp_id_is_an_error_and_serving_goes_on() {
    // One source at most: a second one pushes the first out.
    let mut server = manual(&["--workers", "1", "--udp-peers", "1"]);
    server.type_line("@u9 anyone there");
    server.wait_stdout("the unknown id", |l| l.starts_with("no udp#9: "));

    let (a, b) = (peer(), peer());
    a.send_to(b"a", server.addr).unwrap();
    server.wait_stdout("a", |l| l == "udp#1>> a");
    b.send_to(b"b", server.addr).unwrap();
    server.wait_stdout("b", |l| l == "udp#2>> b");
    server.type_line("@u1 gone");
    server.wait_stdout("the forgotten id", |l| l.starts_with("no udp#1: "));
    // Back again, a is a new pseudo-session.
    a.send_to(b"a again", server.addr).unwrap();
    introduced(&server, 3, a.local_addr().unwrap());
    server.wait_stdout("a again", |l| l == "udp#3>> a again");
    server.type_line("@u3 welcome back");
    assert_eq!(next(&a), b"welcome back");
    // Nonsense ids are hints, not crashes.
    server.type_line("@u hi");
    server.type_line("@udp#0 hi");
    server.wait_stdout("the hint", |l| l.starts_with("not a session id: \"udp#0\""));
    assert_eq!(
        server.wait_timeout(Duration::ZERO),
        None,
        "the server stopped"
    );
    silent(&b, Duration::from_millis(100));
    server.type_line("quit");
    assert_eq!(server.wait_timeout(Duration::from_secs(10)), Some(0));
}

#[test]
fn chat_mode_keeps_the_udp_echo() {
    let mut server = Binary::serve(&["--mode", "chat", "--udp"]);
    server.wait_stderr("the udp line", |l| l.contains("udp echo on"));
    let p = peer();
    p.send_to(b"ping", server.addr).unwrap();
    assert_eq!(next(&p), b"ping");
    server.type_line("quit");
    assert_eq!(server.wait_timeout(Duration::from_secs(10)), Some(0));
}

#[test]
fn an_ipv6_source_is_a_pseudo_session_too() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: nothing to test");
        return;
    }
    let mut server = manual(&["--bind", "::1"]);
    let p = UdpSocket::bind("[::1]:0").unwrap();
    p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    p.send_to("héllo six".as_bytes(), server.addr).unwrap();
    introduced(&server, 1, p.local_addr().unwrap());
    server.wait_stdout("the datagram", |l| l == "udp#1>> héllo six");
    server.type_line("@u1 ça va");
    assert_eq!(next(&p), "ça va".as_bytes());
    server.type_line("quit");
    assert_eq!(server.wait_timeout(Duration::from_secs(10)), Some(0));
}
