//! Chat under load: a burst slows its sender instead of dropping the readers that keep up, a
//! reader that does not read is dropped after the grace, and memory stays within what the
//! outbox limit allows.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use tcpool::{Config, Mode};

use crate::support::*;

/// The sender's `n`th line of a burst: its number, then padding to `LINE` bytes in all.
fn burst_line(n: usize) -> Vec<u8> {
    let mut line = format!("{n} ").into_bytes();
    line.resize(LINE - 1, b'x');
    line.push(b'\n');
    line
}

const LINE: usize = 400;

#[test]
fn a_3_mb_burst_reaches_ten_fast_readers_whole_and_in_order() {
    const LINES: usize = 7500; // 3 MB in 400-byte lines
    const READERS: usize = 10;
    let server = TestServer::start(Config {
        mode: Mode::Chat,
        workers: 2,
        ..Config::default()
    });
    let readers: Vec<TcpStream> = (0..READERS).map(|_| chatter(server.addr)).collect();
    let mut sender = chatter(server.addr);
    server.wait_for("everyone in the room", |r| r.len() == READERS + 1);
    let sender_id = READERS + 1;
    let reading: Vec<_> = readers
        .into_iter()
        .map(|stream| {
            thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut next = 0;
                let mut line = Vec::new();
                while next < LINES {
                    line.clear();
                    let n = reader
                        .read_until(b'\n', &mut line)
                        .expect("a reader is served");
                    assert!(n > 0, "a reader was closed after {next} lines");
                    if line.starts_with(b"* ") {
                        continue; // join notices still arriving
                    }
                    let mut want = format!("<#{sender_id}> ").into_bytes();
                    want.extend_from_slice(&burst_line(next));
                    assert_eq!(line, want, "line {next}");
                    next += 1;
                }
                (next, reader)
            })
        })
        .collect();
    let burst: Vec<u8> = (0..LINES).flat_map(burst_line).collect();
    sender.write_all(&burst).unwrap();
    let done: Vec<_> = reading.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(done.iter().all(|(got, _)| *got == LINES));
    // Every reader and the sender are still connected.
    assert_eq!(server.registry.len(), READERS + 1, "someone was dropped");
}

#[test]
fn a_reader_that_does_not_read_stalls_the_room_only_for_the_grace() {
    let server = TestServer::start(Config {
        mode: Mode::Chat,
        workers: 2,
        outbox_limit: 256 * 1024,
        // The reader below falls behind whenever this thread is not scheduled; 2 s of grace
        // keeps a loaded machine from dropping it along with the sleeper.
        outbox_grace: Duration::from_secs(2),
        ..Config::default()
    });
    let sleeper = small_receiver(server.addr);
    let mut reader = chatter(server.addr);
    let mut sender = chatter(server.addr);
    server.wait_for("everyone in the room", |r| r.len() == 3);
    let started = Instant::now();
    let writing = thread::spawn(move || {
        for n in 0..20_000 {
            sender.write_all(&burst_line(n)).unwrap();
        }
        sender
    });
    let mut buffered = BufReader::new(reader.try_clone().unwrap());
    let (mut next, mut left) = (0, false);
    let mut line = Vec::new();
    while next < 20_000 {
        line.clear();
        assert!(buffered.read_until(b'\n', &mut line).unwrap() > 0);
        if line == b"* #1 left\n" {
            left = true;
            continue;
        }
        if line.starts_with(b"* ") {
            continue;
        }
        assert!(
            line.starts_with(format!("<#3> {next} ").as_bytes()),
            "line {next}"
        );
        next += 1;
    }
    assert!(left, "the sleeper was never dropped");
    let mut sender = writing.join().unwrap();
    server.wait_for("the sleeper to be gone", |r| r.len() == 2);
    // Generous: one grace, and then the time to move 8 MB.
    assert!(started.elapsed() < Duration::from_secs(30));
    sender.write_all(b"after\n").unwrap();
    expect_bytes(&mut reader, b"<#3> after\n");
    drop(sleeper);
}

/// A client that never reads, with a small receive buffer, past its greeting.
fn small_receiver(addr: std::net::SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

#[test]
fn two_hundred_readers_that_do_not_read_cost_at_most_what_their_limit_allows() {
    raise_fd_limit();
    const SLEEPERS: usize = 200;
    let mut server = Binary::serve(&["--mode", "chat", "--workers", "2", "--outbox-grace", "30s"]);
    let sleepers: Vec<TcpStream> = (0..SLEEPERS).map(|_| small_receiver(server.addr)).collect();
    thread::sleep(Duration::from_millis(300));
    let (mut sender, greeting) = join_chat(server.addr);
    assert!(greeting.contains(&format!("{SLEEPERS} here")), "{greeting}");
    thread::sleep(Duration::from_millis(300));
    let start = server.rss_kib();
    // 2.4 MB of 4-byte lines: 600,000 relayed lines of 11 bytes each for every sleeper,
    // far more than its outbox may hold. The sender is paused once the sleepers are behind.
    let lines = b"abc\n".repeat(600_000);
    sender.set_nonblocking(true).unwrap();
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut peak = start;
    while Instant::now() < deadline && sent < lines.len() {
        match sender.write(&lines[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("{e}"),
        }
        peak = peak.max(server.rss_kib());
    }
    thread::sleep(Duration::from_millis(500));
    peak = peak.max(server.rss_kib());
    let grown_mib = peak.saturating_sub(start) / 1024;
    println!(
        "{SLEEPERS} sleepers: rss {start} KiB at start, {peak} KiB at most, {sent} bytes sent"
    );
    assert!(
        grown_mib <= 200,
        "{SLEEPERS} sleepers grew the server by {grown_mib} MiB"
    );
    assert_eq!(server.wait_timeout(Duration::ZERO), None, "the server died");
    drop(sleepers);
}
