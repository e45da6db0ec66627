//! Graceful shutdown: every client told `quit` in its own line ending, within the deadline,
//! from SIGINT, SIGTERM, `quit` on the console or the library's handle.

use std::io::Write;
use std::net::TcpStream;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use tcpool::Config;

use crate::support::*;

/// Connects `n` clients; every other one speaks a line first (so it is line-based), and so
/// does the last: its echo shows that the server accepted every one before it (one acceptor
/// takes the kernel's queue in order). A silent last client could still be in that queue
/// when a shutdown begins, and be told `quit` without being counted as a session.
fn connect_clients(addr: std::net::SocketAddr, n: usize) -> Vec<(TcpStream, bool)> {
    (0..n)
        .map(|i| {
            let mut c = connect(addr);
            let spoke = i % 2 == 0 || i == n - 1;
            if spoke {
                assert_eq!(round_trip(&mut c, b"hi\n"), b"hi\n");
            }
            (c, spoke)
        })
        .collect()
}

/// Each client reads `quit` (no terminator if it never sent one, `\n` if it did), then EOF.
fn assert_all_told_quit(clients: Vec<(TcpStream, bool)>) {
    let readers: Vec<_> = clients
        .into_iter()
        .map(|(mut c, spoke)| {
            thread::spawn(move || {
                let got = read_to_close(&mut c);
                let want: &[u8] = if spoke { b"quit\n" } else { b"quit" };
                assert_eq!(got, want, "line-based: {spoke}");
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn library_shutdown_tells_every_session_quit_and_returns() {
    let server = TestServer::start(Config {
        workers: 2,
        ..Config::default()
    });
    let clients = connect_clients(server.addr, 40);
    let crlf = {
        let mut c = connect(server.addr);
        assert_eq!(round_trip(&mut c, b"x\r\n"), b"x\r\n");
        c
    };
    server.wait_for("41 sessions", |r| r.len() == 41);
    let started = Instant::now();
    let summary = server.stop();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(summary.sessions, 41);
    assert_eq!(summary.peak, 41);
    assert!(!summary.forced);
    assert_all_told_quit(clients);
    let mut crlf = crlf;
    assert_eq!(read_to_close(&mut crlf), b"quit\r\n");
}

#[test]
fn queued_replies_are_flushed_before_quit() {
    let server = TestServer::start(Config::default());
    let mut c = connect(server.addr);
    assert_eq!(round_trip(&mut c, b"spoke\n"), b"spoke\n");
    let handle = server.registry.handles().pop().unwrap();
    handle
        .send(std::sync::Arc::from(&b"queued before shutdown\n"[..]))
        .unwrap();
    server.shutdown.trigger();
    assert_eq!(read_to_close(&mut c), b"queued before shutdown\nquit\n");
}

fn signal_with_500_clients(signal: &str) {
    raise_fd_limit();
    let mut server = Binary::serve(&["--workers", "2"]);
    let clients = connect_clients(server.addr, 500);
    let started = Instant::now();
    server.signal(signal);
    assert_all_told_quit(clients);
    let code = server.wait_timeout(Duration::from_secs(5 + 2));
    assert_eq!(code, Some(0), "stderr: {:?}", server.stderr_lines());
    assert!(started.elapsed() < Duration::from_secs(7));
    let summary = server.wait_stdout("the summary", |l| l.starts_with("tcpool served"));
    assert!(summary.contains("served 500 session(s)"), "{summary}");
}

#[test]
fn sigint_with_500_clients_says_quit_to_each_and_exits_0() {
    signal_with_500_clients("INT");
}

#[test]
fn sigterm_with_500_clients_says_quit_to_each_and_exits_0() {
    signal_with_500_clients("TERM");
}

#[test]
fn quit_on_the_console_shuts_down_and_prints_a_summary() {
    let mut server = Binary::serve(&[]);
    let mut c = connect(server.addr);
    assert_eq!(round_trip(&mut c, b"hello"), b"hello");
    server.type_line("quit");
    assert_eq!(read_to_close(&mut c), b"quit");
    assert_eq!(server.wait_timeout(Duration::from_secs(10)), Some(0));
    let summary = server.wait_stdout("the summary", |l| l.starts_with("tcpool served"));
    assert!(summary.contains("1 session(s)"), "{summary}");
}

#[test]
fn end_of_stdin_keeps_the_server_serving() {
    let mut server = Binary::serve_with(&[], Stdio::null(), |_| {});
    server.wait_stderr("console off", |l| l.contains("console off"));
    thread::sleep(Duration::from_millis(200));
    let mut c = connect(server.addr);
    assert_eq!(round_trip(&mut c, b"still serving\n"), b"still serving\n");
    assert_eq!(server.wait_timeout(Duration::ZERO), None, "server exited");
    server.signal("TERM");
    assert_eq!(server.wait_timeout(Duration::from_secs(10)), Some(0));
}

/// A client that sends a lot and reads nothing keeps its session flushing at shutdown.
fn stuck_reader(addr: std::net::SocketAddr) -> TcpStream {
    let c = connect(addr);
    let mut w = c.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![b'z'; 64 * 1024];
    // Stops once both directions' buffers are full (the write times out).
    for _ in 0..256 {
        if w.write_all(&chunk).is_err() {
            break;
        }
    }
    c
}

#[test]
fn shutdown_deadline_bounds_a_stuck_client() {
    let mut server = Binary::serve(&["--shutdown-timeout", "1"]);
    let _stuck = stuck_reader(server.addr);
    let started = Instant::now();
    server.signal("TERM");
    assert_eq!(server.wait_timeout(Duration::from_secs(5)), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// A client with a small receive buffer that floods and never reads: its replies cannot all
/// go out, so its goodbye is still queued at the shutdown deadline.
fn small_stuck_reader(addr: std::net::SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .unwrap();
    let mut c: TcpStream = socket.into();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![b'z'; 64 * 1024];
    for _ in 0..256 {
        if c.write_all(&chunk).is_err() {
            break;
        }
    }
    c
}

#[test]
fn sessions_forced_closed_at_the_deadline_are_one_warning_with_a_count() {
    let mut server = Binary::serve(&["--shutdown-timeout", "1"]);
    let _stuck = [
        small_stuck_reader(server.addr),
        small_stuck_reader(server.addr),
    ];
    server.signal("TERM");
    assert_eq!(server.wait_timeout(Duration::from_secs(10)), Some(0));
    let lines = server.stderr_lines();
    let warned: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("goodbye was out"))
        .collect();
    assert_eq!(warned.len(), 1, "{lines:?}");
    let count = warned[0]
        .split_once(" session(s) closed before their goodbye was out")
        .and_then(|(head, _)| head.rsplit(' ').next())
        .and_then(|n| n.parse::<usize>().ok());
    assert!(matches!(count, Some(1..=2)), "{warned:?}");
}

#[test]
fn second_sigint_exits_at_once_with_130() {
    let mut server = Binary::serve(&["--shutdown-timeout", "60"]);
    let _stuck = stuck_reader(server.addr);
    server.signal("INT");
    server.wait_stderr("the shutdown to start", |l| l.contains("shutting down"));
    let started = Instant::now();
    server.signal("INT");
    assert_eq!(server.wait_timeout(Duration::from_secs(5)), Some(130));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn bind_failure_exits_1_with_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    assert_serve_refuses(
        &["--port", &port],
        &format!("cannot listen on 127.0.0.1:{port}"),
    );
}

#[test]
fn bad_flags_get_a_clear_clap_error() {
    for args in [
        &["serve", "--workers", "0"][..],
        &["serve", "--mode", "shout"],
        &["serve", "--overflow", "maybe"],
        &["serve", "--backlog", "-1"],
        &["serve", "--shutdown-timeout", "0"],
        &["serve", "--port", "70000"],
    ] {
        let out = std::process::Command::new(tcpool_bin())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
    }
}

#[test]
fn connect_during_shutdown_never_hangs() {
    let server = TestServer::start(Config::default());
    let addr = server.addr;
    let stopping = thread::spawn(move || server.stop());
    // Whatever the timing, a client is served, told quit, refused or reset — never stuck.
    for _ in 0..20 {
        if let Ok(mut c) = TcpStream::connect(addr) {
            c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let _ = c.write_all(b"late");
            let got = read_to_close(&mut c);
            assert!(
                got.is_empty() || got == b"quit" || got == b"late" || got == b"latequit",
                "{got:?}"
            );
        }
    }
    stopping.join().unwrap();
}

#[test]
fn a_huge_shutdown_timeout_crashes_no_worker() {
    // As `--shutdown-timeout 1e19` once did: the first session to end added the timeout to an
    // instant and panicked its worker.
    let server = TestServer::start(Config {
        workers: 1,
        shutdown_timeout: Duration::MAX,
        outbox_grace: Duration::MAX,
        idle_timeout: Some(Duration::MAX),
        ..Config::default()
    });
    for round in 0..3 {
        let mut client = connect(server.addr);
        assert_eq!(
            round_trip(&mut client, b"hello\n"),
            b"hello\n",
            "round {round}"
        );
        client.write_all(b"quit\n").unwrap();
        assert_eq!(read_to_close(&mut client), b"");
    }
    let mut last = connect(server.addr);
    assert_eq!(round_trip(&mut last, b"still served"), b"still served");
    let summary = server.stop();
    assert_eq!(read_to_close(&mut last), b"quit");
    assert_eq!(summary.sessions, 4);
    assert!(!summary.forced);
}

#[test]
fn kicked_clients_that_do_not_read_are_gone_within_a_second_whatever_the_shutdown_timeout() {
    // As `--shutdown-timeout 8760h`: a kicked session that cannot be flushed was held that
    // long, not the 250 ms drain the wire contract states.
    let server = TestServer::start(Config {
        workers: 2,
        shutdown_timeout: Duration::from_secs(8760 * 3600),
        ..Config::default()
    });
    let addr = server.addr;
    let stuck: Vec<TcpStream> = (0..20)
        .map(|_| thread::spawn(move || small_stuck_reader(addr)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    server.wait_for("the 20 sessions", |r| r.len() == 20);
    let started = Instant::now();
    for handle in server.registry.handles() {
        assert!(server.registry.kick(handle.id()));
    }
    let until = Instant::now() + Duration::from_secs(5);
    while !server.registry.is_empty() && Instant::now() < until {
        thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed();
    let held = server.registry.len();
    eprintln!("20 kicked non-readers: {held} held after {took:?}");
    assert_eq!(held, 0, "{held} of 20 still held after {took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    drop(stuck);
    assert!(!server.stop().forced);
}

#[test]
fn clients_connecting_during_a_shutdown_are_refused_never_reset() {
    let mut server = Binary::serve(&["--shutdown-timeout", "5s"]);
    let addr = server.addr;
    // A client that neither reads nor closes keeps the shutdown going a while.
    let _holder = small_stuck_reader(addr);
    server.signal("TERM");
    server.wait_stderr("the shutdown to start", |l| l.contains("shutting down"));
    let mut late = Vec::new();
    let mut refused = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while server.child.try_wait().unwrap().is_none() && Instant::now() < until {
        match TcpStream::connect(addr) {
            Ok(c) => late.push(c),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
            Err(e) => panic!("connect during the shutdown: {e}"),
        }
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.wait_timeout(Duration::from_secs(10)), Some(0));
    assert!(
        refused + late.len() > 0,
        "no connect was tried during the shutdown"
    );
    // An accepted one was told `quit` or `busy` the careful way; none was reset.
    for mut c in late {
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut got = Vec::new();
        let result = std::io::Read::read_to_end(&mut c, &mut got);
        assert!(
            result.is_ok() && (got == b"quit" || got.starts_with(b"busy")),
            "a late client got {got:?} and {result:?} ({refused} refused)"
        );
    }
}
