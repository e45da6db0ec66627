//! The admin endpoint against hostile clients: request smuggling after a refused body,
//! bodies and answers that never finish, huge heads, and more connections than it serves.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tcpool::server::Config;
use tcpool::server::operator::admin::{HEAD_LIMIT, MAX_CONNECTIONS};

use crate::admin::Served;
use crate::support::{Binary, IO_TIMEOUT, connect, read_to_close};

/// Sends `bytes` and reads everything until the server closes; the answer as text.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = connect(addr);
    stream.write_all(bytes).unwrap();
    String::from_utf8_lossy(&read_to_close(&mut stream)).into_owned()
}

fn healthz(addr: SocketAddr) -> String {
    exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
}

#[test]
fn bytes_after_a_refused_body_never_run_as_a_request() {
    let served = Served::start(Config::default());
    let smuggled =
        "GET /stats HTTP/1.1\r\nHost: x\r\n\r\nPOST /shutdown HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut chunked =
        b"POST /faults HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10001\r\n".to_vec();
    chunked.extend(vec![b'a'; 65537]);
    chunked.extend(b"\r\n0\r\n\r\n");
    chunked.extend(smuggled.as_bytes());
    let bad_length = |length: &str| {
        format!("POST /faults HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{smuggled}")
            .into_bytes()
    };
    for (request, status) in [
        (chunked, "413"),
        (bad_length("abc"), "400"),
        (bad_length("-1"), "400"),
        (bad_length("99999999999999999999999"), "413"),
        (bad_length("1, 1"), "400"),
    ] {
        let answer = exchange(served.admin_addr(), &request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
        assert!(answer.contains("Connection: close\r\n"), "{answer}");
        assert!(!answer.contains("uptime_seconds"), "{answer}");
    }
    // A pipelined second request is not read either: one answer, then the close.
    let two = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nPOST /shutdown HTTP/1.1\r\nHost: x\r\n\r\n";
    let answer = exchange(served.admin_addr(), two.as_bytes());
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(!served.shutdown.is_triggered());
    assert!(healthz(served.admin_addr()).ends_with("\r\n\r\nok\n"));
}

#[test]
fn an_unfinished_body_is_timed_out_and_closed() {
    let served = Served::start(Config::default());
    let mut holders: Vec<TcpStream> = [
        &b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n"[..],
        b"POST /faults HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nabc",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
    ]
    .iter()
    .map(|head| {
        let mut s = connect(served.admin_addr());
        s.write_all(head).unwrap();
        s
    })
    .collect();
    // The endpoint answers meanwhile.
    assert!(healthz(served.admin_addr()).ends_with("\r\n\r\nok\n"));
    // Each holder is answered 408 and closed by the server, well before the test's timeout.
    let started = Instant::now();
    for holder in &mut holders {
        let answer = String::from_utf8_lossy(&read_to_close(holder)).into_owned();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    }
    assert!(started.elapsed() < IO_TIMEOUT);
}

#[test]
fn a_client_that_never_reads_holds_nothing_past_the_deadline() {
    let served = Served::start(Config::default());
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    socket
        .connect_timeout(&served.admin_addr().into(), IO_TIMEOUT)
        .unwrap();
    let mut greedy: TcpStream = socket.into();
    greedy
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let pipeline = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
    let _ = greedy.write_all(&pipeline);
    for _ in 0..5 {
        assert!(healthz(served.admin_addr()).ends_with("\r\n\r\nok\n"));
    }
    // It got one answer at most, then the close.
    greedy.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut answer = Vec::new();
    let _ = greedy.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.matches("HTTP/1.1 ").count() <= 1, "{answer}");
}

#[test]
fn a_huge_header_is_refused_at_the_head_limit() {
    let served = Served::start(Config::default());
    let mut stream = connect(served.admin_addr());
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: ")
        .unwrap();
    let block = vec![b'a'; 64 * 1024];
    // Far more than the limit; the server stops reading (and closes) after HEAD_LIMIT.
    for _ in 0..64 {
        if stream.write_all(&block).is_err() {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&read_to_close(&mut stream)).into_owned();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
        "{answer}"
    );
    assert!(answer.is_empty() || answer.contains(&HEAD_LIMIT.to_string()));
    assert!(healthz(served.admin_addr()).ends_with("\r\n\r\nok\n"));
}

#[test]
fn connections_over_the_cap_are_answered_503_without_a_thread() {
    let served = Served::start(Config::default());
    let extra = 24;
    let mut open: Vec<TcpStream> = (0..MAX_CONNECTIONS + extra)
        .map(|_| {
            let mut s = connect(served.admin_addr());
            s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    // The ones over the cap are refused at once; the others time out (408).
    let mut busy = 0;
    for s in &mut open {
        let answer = String::from_utf8_lossy(&read_to_close(s)).into_owned();
        if answer.starts_with("HTTP/1.1 503 ") {
            busy += 1;
        } else {
            assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        }
    }
    assert!(busy >= extra, "{busy} refused");
    drop(open);
    // Once they are gone the endpoint serves again.
    crate::support::wait_until("the admin slots freed", || {
        healthz(served.admin_addr()).ends_with("\r\n\r\nok\n")
    });
}

#[test]
fn sigterm_ends_the_process_on_time_despite_an_unfinished_admin_request() {
    let mut server = Binary::serve_with(
        &["--admin", "127.0.0.1:0", "--shutdown-timeout", "1s"],
        Stdio::null(),
        |_| {},
    );
    let admin = server.admin_addr();
    let mut holder = connect(admin);
    holder
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.signal("TERM");
    // Generous: 1 s of drain plus the admin deadline at most.
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
    drop(holder);
}
