//! `--balance auto` in chat and manual mode: relayed lines keep their order, a lagging
//! reader is dropped alone and the operator's replies reach their session while the
//! balance moves sessions between workers.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tcpool::{Config, Mode};

use crate::admin::Served;
use crate::balance::{PATIENCE, connect, worker_sessions};
use crate::balance_hostile::{auto, in_use, moved_in};
use crate::support::{self, read_line, read_to_close};

#[test]
fn chat_floods_reach_every_reader_in_order_while_sessions_gather() {
    let served = Served::start(auto(Config {
        mode: Mode::Chat,
        ..Config::default()
    }));
    let mut senders: Vec<TcpStream> = (0..3).map(|_| support::chatter(served.addr)).collect();
    let mut readers: Vec<TcpStream> = (0..3).map(|_| support::chatter(served.addr)).collect();
    // Every sender's lines carry its number and a count: each reader must see every line
    // of every sender once, in each sender's order, however its session moves.
    let mut next: Vec<Vec<usize>> = vec![vec![0; senders.len()]; readers.len()];
    let mut sent = 0usize;
    let started = Instant::now();
    let mut gathered_at = None;
    loop {
        for (s, sender) in senders.iter_mut().enumerate() {
            let block: String = (0..20).map(|k| format!("s{s} n{}\n", sent + k)).collect();
            sender.write_all(block.as_bytes()).unwrap();
        }
        sent += 20;
        // Each reader reads until it has everything each other sender sent.
        for (r, reader) in readers.iter_mut().enumerate() {
            while next[r].iter().any(|&n| n < sent) {
                let line = String::from_utf8(read_line(reader)).unwrap();
                if line.starts_with("* ") {
                    continue;
                }
                let text = line.split_once("> ").map(|(_, t)| t).unwrap_or(&line);
                let (s, n) = text
                    .trim_end()
                    .strip_prefix('s')
                    .and_then(|t| t.split_once(" n"))
                    .unwrap_or_else(|| panic!("reader {r} got {line:?}"));
                let (s, n): (usize, usize) = (s.parse().unwrap(), n.parse().unwrap());
                assert_eq!(
                    n, next[r][s],
                    "reader {r}: sender {s} out of order ({line:?})"
                );
                next[r][s] += 1;
            }
        }
        // The senders hear each other too: drain what they got.
        for sender in &mut senders {
            sender
                .set_read_timeout(Some(Duration::from_millis(1)))
                .unwrap();
            let mut buf = [0u8; 65536];
            while let Ok(n) = std::io::Read::read(sender, &mut buf) {
                if n == 0 {
                    break;
                }
            }
        }
        if gathered_at.is_none() && sent.is_multiple_of(100) {
            let m = served.scrape();
            if in_use(&m) == 1.0 && worker_sessions(&m)[1] == 0.0 {
                gathered_at = Some(sent);
            }
        }
        if gathered_at.is_some_and(|at| sent >= at + 400) {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "no gathering after {sent} lines"
        );
    }
    assert!(moved_in(&served.scrape()) >= 1.0);
}

/// A chat client that never reads, with a small receive buffer, past its greeting.
fn laggard(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(support::IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(support::IO_TIMEOUT)).unwrap();
    assert!(read_line(&mut stream).starts_with(b"* you are #"));
    stream
}

#[test]
fn a_chat_reader_that_lags_is_dropped_alone_while_sessions_gather() {
    use std::io::BufRead;
    let served = Served::start(auto(Config {
        mode: Mode::Chat,
        max_line: 1024,
        outbox_limit: 64 * 1024,
        outbox_grace: Duration::from_millis(500),
        ..Config::default()
    }));
    let mut sender = support::chatter(served.addr);
    let mut readers: Vec<std::io::BufReader<TcpStream>> = (0..3)
        .map(|_| std::io::BufReader::new(support::chatter(served.addr)))
        .collect();
    // It joins last and never reads.
    let mut laggard = laggard(served.addr);
    let filler = "x".repeat(900);
    let mut sent = 0usize;
    let started = Instant::now();
    let mut dropped = false;
    let mut gathered = false;
    let mut line = String::new();
    // Every line reaches every reader that keeps up, in order, before, while and after the
    // laggard is dropped and the sessions gather.
    while !(dropped && gathered) {
        // A flood until the laggard is dropped, then a light load, which gathers.
        let (lines, filler) = if dropped {
            (1, "light")
        } else {
            (20, filler.as_str())
        };
        let block: String = (0..lines)
            .map(|k| format!("n{} {filler}\n", sent + k))
            .collect();
        sender.write_all(block.as_bytes()).unwrap();
        for (r, reader) in readers.iter_mut().enumerate() {
            let mut k = 0;
            while k < lines {
                line.clear();
                assert!(
                    reader.read_line(&mut line).unwrap() > 0,
                    "reader {r} closed"
                );
                if line.starts_with("* ") {
                    continue;
                }
                let want = format!("> n{} ", sent + k);
                assert!(
                    line.contains(&want),
                    "reader {r} wanted {want:?}, got {:?}",
                    &line[..line.len().min(40)]
                );
                k += 1;
            }
        }
        sent += lines;
        if sent.is_multiple_of(100) {
            let m = served.scrape();
            dropped |=
                m.get(r#"tcpool_sessions_closed_total{reason="outbox-overflow"}"#) == Some(&1.0);
            gathered |= in_use(&m) == 1.0 && worker_sessions(&m)[1] == 0.0;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "after {sent} lines: dropped={dropped} gathered={gathered}"
        );
    }
    // The laggard got a prefix of the lines and the close (its `quit` waited behind a
    // line it never read, past the closing deadline).
    let got = read_to_close(&mut laggard);
    assert!(
        got.starts_with(b"<#1> n0 "),
        "{:?}",
        &got[..got.len().min(60)]
    );
    let m = served.scrape();
    assert_eq!(worker_sessions(&m).iter().sum::<f64>(), 4.0, "{m:?}");
}

#[test]
fn manual_replies_reach_their_session_while_it_moves() {
    use tcpool::server::{Server, bind};
    support::init_logger();
    let server = Server::new(
        bind("127.0.0.1:0".parse().unwrap()).unwrap(),
        auto(Config {
            mode: Mode::Manual,
            ..Config::default()
        }),
    );
    let (console, exposition, shutdown) =
        (server.console(), server.exposition(), server.shutdown());
    let running = server.start().unwrap();
    let addr = running.local_addr();
    let scrape = || crate::admin::parse_with_prometheus_client(&exposition.encode());
    // Session ids are given in connection order, from 1; each connects once the one before
    // it is known, so the ids match.
    let mut clients: Vec<TcpStream> = Vec::new();
    for i in 0..6u64 {
        clients.push(connect(addr));
        support::wait_until("the session registered", || {
            worker_sessions(&scrape()).iter().sum::<f64>() == (i + 1) as f64
        });
    }
    // A first line from each, so that each session speaks in lines before it is answered.
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .write_all(format!("c{i} hello\n").as_bytes())
            .unwrap();
    }
    support::wait_until("the first lines read", || {
        scrape().get(r#"tcpool_messages_total{direction="in"}"#) == Some(&6.0)
    });
    let started = Instant::now();
    let mut gathered_at = None;
    for round in 0.. {
        // Each client speaks, and the operator answers it alone, by id.
        for (i, client) in clients.iter_mut().enumerate() {
            client
                .write_all(format!("c{i} r{round}\n").as_bytes())
                .unwrap();
            console.execute(&format!("@{} to c{i} r{round}", i + 1));
            let want = format!("to c{i} r{round}\n");
            assert_eq!(read_line(client), want.as_bytes(), "client {i}");
        }
        if round % 25 == 24 && gathered_at.is_none() {
            let m = scrape();
            if in_use(&m) == 1.0 && worker_sessions(&m)[1] == 0.0 {
                gathered_at = Some(round);
            }
        }
        if gathered_at.is_some_and(|at| round >= at + 50) {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "no gathering after {round} rounds"
        );
    }
    assert!(moved_in(&scrape()) >= 1.0);
    shutdown.trigger();
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_to_close(client), b"quit\n", "client {i}");
    }
    running.wait().unwrap();
}
