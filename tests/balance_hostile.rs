//! `--balance auto` under attack: sessions that are kicked, timed out, half-closed, faulted,
//! behind a PROXY header or shut down while the balance moves them between workers.
//!
//! Moves are forced the one way a test can count on: a light load on two workers gathers
//! on the first. What moved is read from the admin endpoint's metrics, never timed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tcpool::server::{Balancing, ProxyProtocol};
use tcpool::{Config, Mode};

use crate::admin::{Served, sample};
use crate::balance::{PATIENCE, connect, echo_round, worker_sessions};
use crate::support::{self, read_line, read_to_close};

fn auto(config: Config) -> Config {
    Config {
        workers: 2,
        balance: Balancing::Auto,
        ..config
    }
}

fn moved_in(m: &HashMap<String, f64>) -> f64 {
    (0..2)
        .map(|w| {
            sample(
                m,
                &format!("tcpool_worker_sessions_moved_in_total{{worker=\"{w}\"}}"),
            )
        })
        .sum()
}

fn in_use(m: &HashMap<String, f64>) -> f64 {
    sample(m, "tcpool_workers_in_use{}")
}

/// Echo rounds until `done` holds for a scrape (looked at every 25 rounds); the gauges must
/// never count more sessions than are connected (an underflow reads as a huge number).
fn rounds_until(
    served: &Served,
    clients: &mut [TcpStream],
    round: &mut usize,
    mut done: impl FnMut(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let started = Instant::now();
    loop {
        echo_round(clients, *round);
        *round += 1;
        if round.is_multiple_of(25) {
            let m = served.scrape();
            for (w, n) in worker_sessions(&m).into_iter().enumerate() {
                assert!(n <= clients.len() as f64, "worker {w} counts {n}: {m:?}");
            }
            if done(&m) {
                return m;
            }
        }
        assert!(
            started.elapsed() < PATIENCE,
            "not done after {round} rounds"
        );
    }
}

/// Echo rounds until every session is on worker 0.
fn gather(served: &Served, clients: &mut [TcpStream], round: &mut usize) {
    rounds_until(served, clients, round, |m| {
        in_use(m) == 1.0 && worker_sessions(m)[1] == 0.0
    });
}

/// One request with no body to the admin endpoint; returns the whole answer.
fn admin(served: &Served, method: &str, path: &str) -> String {
    let mut stream = support::connect(served.admin_addr());
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    String::from_utf8_lossy(&read_to_close(&mut stream)).into_owned()
}

/// `POST /sessions/ID/kick` on the admin endpoint; returns the status line.
fn kick(served: &Served, id: u64) -> String {
    let answer = admin(served, "POST", &format!("/sessions/{id}/kick"));
    answer.lines().next().unwrap_or_default().to_owned()
}

/// `GET PATH` on the admin endpoint; returns the answer.
fn admin_get(served: &Served, path: &str) -> String {
    admin(served, "GET", path)
}

#[test]
fn moved_sessions_still_time_out_when_idle() {
    let served = Served::start(auto(Config {
        idle_timeout: Some(Duration::from_millis(1_500)),
        ..Config::default()
    }));
    let mut clients: Vec<TcpStream> = (0..6).map(|_| connect(served.addr)).collect();
    let mut round = 0;
    gather(&served, &mut clients, &mut round);
    // Quiet now: every session, moved or not, is told `quit` and closed.
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_to_close(client), b"quit\n", "client {i}");
    }
    support::wait_until("the idle closes counted", || {
        served
            .scrape()
            .get(r#"tcpool_sessions_closed_total{reason="idle"}"#)
            == Some(&6.0)
    });
    assert_eq!(worker_sessions(&served.scrape()), [0.0, 0.0]);
}

#[test]
fn kicks_reach_sessions_wherever_the_balance_put_them() {
    let served = Served::start(auto(Config::default()));
    let mut clients: Vec<TcpStream> = (0..8).map(|_| connect(served.addr)).collect();
    // Session ids are handed out in connection order, from 1.
    let mut ids: Vec<u64> = (1..=8).collect();
    let mut round = 0;
    // Once the sessions have gathered, each is kicked in turn: each kicked client gets
    // `quit` and the close, the others keep their echo.
    let mut kicked = 0;
    gather(&served, &mut clients, &mut round);
    while let Some(id) = ids.pop() {
        assert!(kick(&served, id).contains("200"), "kick {id}");
        let mut client = clients.pop().unwrap();
        assert_eq!(read_to_close(&mut client), b"quit\n", "session {id}");
        kicked += 1;
        echo_round(&mut clients, round);
        round += 1;
    }
    assert_eq!(kicked, 8);
    support::wait_until("every kick counted", || {
        let m = served.scrape();
        m.get(r#"tcpool_sessions_closed_total{reason="kick"}"#) == Some(&8.0)
            && worker_sessions(&m) == [0.0, 0.0]
    });
}

#[test]
fn kicks_during_the_gathering_close_the_right_session() {
    let served = Served::start(auto(Config::default()));
    let mut ids: Vec<u64> = (1..=12).collect();
    let mut clients: Vec<TcpStream> = ids.iter().map(|_| connect(served.addr)).collect();
    let mut round = 0;
    let started = Instant::now();
    // One kick every 40 rounds, aimed at the last client, while the light load gathers.
    loop {
        for _ in 0..40 {
            echo_round(&mut clients, round);
            round += 1;
        }
        let m = served.scrape();
        if in_use(&m) == 1.0 && worker_sessions(&m)[1] == 0.0 || clients.len() <= 4 {
            break;
        }
        let (id, mut victim) = (ids.pop().unwrap(), clients.pop().unwrap());
        assert!(kick(&served, id).contains("200"), "kick {id}");
        assert_eq!(read_to_close(&mut victim), b"quit\n", "session {id}");
        assert!(started.elapsed() < PATIENCE);
    }
    echo_round(&mut clients, round);
    support::wait_until("the gauges count the clients left", || {
        worker_sessions(&served.scrape()).iter().sum::<f64>() == clients.len() as f64
    });
}

#[test]
fn a_shutdown_while_sessions_move_tells_every_client_quit() {
    let served = Served::start(auto(Config {
        shutdown_timeout: Duration::from_secs(3),
        ..Config::default()
    }));
    let mut clients: Vec<TcpStream> = (0..10).map(|_| connect(served.addr)).collect();
    let mut round = 0;
    // The first moves are seen, and the shutdown comes while the rest may be on their way.
    rounds_until(&served, &mut clients, &mut round, |m| moved_in(m) > 0.0);
    let started = Instant::now();
    let closing = std::thread::spawn(move || drop(served));
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_to_close(client), b"quit\n", "client {i}");
    }
    closing.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the server took {:?} to stop",
        started.elapsed()
    );
}

#[test]
fn half_closed_peers_get_every_echo_while_sessions_gather() {
    let served = Served::start(auto(Config::default()));
    let mut clients: Vec<TcpStream> = (0..6).map(|_| connect(served.addr)).collect();
    let mut round = 0;
    gather(&served, &mut clients, &mut round);
    // Each moved client says its last line and shuts its write side: the echo and the close
    // still come.
    for (i, client) in clients.iter_mut().enumerate() {
        let line = format!("last words of {i}\n");
        client.write_all(line.as_bytes()).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_to_close(client), line.as_bytes(), "client {i}");
    }
    support::wait_until("every session gone", || {
        worker_sessions(&served.scrape()) == [0.0, 0.0]
    });
}

#[test]
fn faulted_sessions_stay_on_their_worker_and_keep_their_faults() {
    let delay = Duration::from_millis(100);
    let served = Served::start(auto(Config {
        faults: vec!["latency,delay=100ms".parse().unwrap()],
        ..Config::default()
    }));
    // A fault is drawn at connect: both sessions, one on each worker, are faulted, and
    // neither may move, even once only one worker is in use.
    let mut faulted: Vec<TcpStream> = (0..2).map(|_| connect(served.addr)).collect();
    let started = Instant::now();
    let mut round = 0;
    let mut after = 0;
    while after < 5 {
        let asked = Instant::now();
        echo_round(&mut faulted, round);
        round += 1;
        assert!(asked.elapsed() >= delay, "a reply came without its latency");
        let m = served.scrape();
        assert_eq!(moved_in(&m), 0.0, "{m:?}");
        assert_eq!(worker_sessions(&m), [1.0, 1.0]);
        if in_use(&m) == 1.0 {
            after += 1;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "no gathering after {round} rounds"
        );
    }
}

#[test]
fn proxied_sessions_move_and_keep_their_peer() {
    let served = Served::start(auto(Config {
        proxy: Some(ProxyProtocol::V1),
        ..Config::default()
    }));
    let mut clients: Vec<TcpStream> = (0..6)
        .map(|i| {
            let mut c = connect(served.addr);
            write!(c, "PROXY TCP4 192.0.2.{i} 127.0.0.1 4000{i} 8900\r\n").unwrap();
            c
        })
        .collect();
    let mut round = 0;
    gather(&served, &mut clients, &mut round);
    assert!(moved_in(&served.scrape()) >= 3.0);
    for _ in 0..50 {
        echo_round(&mut clients, round);
        round += 1;
    }
    // Each is still listed as the client its header named, moved or not.
    let listed = admin_get(&served, "/sessions");
    for i in 0..6 {
        let peer = format!("\"peer\":\"192.0.2.{i}:4000{i}\"");
        assert!(listed.contains(&peer), "{peer} not in {listed}");
    }
    drop(served);
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_to_close(client), b"quit\n", "client {i}");
    }
}

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

#[test]
fn three_workers_gather_on_one_and_lose_nothing() {
    let served = Served::start(Config {
        workers: 3,
        ..auto(Config::default())
    });
    let mut clients: Vec<TcpStream> = (0..9).map(|_| connect(served.addr)).collect();
    let mut round = 0;
    let gauges = |m: &HashMap<String, f64>| {
        [0, 1, 2].map(|w| sample(m, &format!("tcpool_worker_sessions{{worker=\"{w}\"}}")))
    };
    let m = rounds_until(&served, &mut clients, &mut round, |m| {
        in_use(m) == 1.0 && gauges(m)[1..] == [0.0, 0.0]
    });
    assert_eq!(gauges(&m), [9.0, 0.0, 0.0]);
    for _ in 0..100 {
        echo_round(&mut clients, round);
        round += 1;
    }
    drop(served);
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_to_close(client), b"quit\n", "client {i}");
    }
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

/// A client that writes 16 KiB blocks until `stop` (or until the server closes) and reads
/// the echo back; returns the bytes it read.
fn flooder(addr: SocketAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut stream = connect(addr);
        let mut reader = stream.try_clone().unwrap();
        let writer = thread::spawn(move || {
            let block = vec![b'f'; 16 * 1024];
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && sent < 4 << 30 {
                if stream.write_all(&block).is_err() {
                    break;
                }
                sent += block.len() as u64;
            }
        });
        let mut got = 0u64;
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        writer.join().unwrap();
        got
    })
}

#[test]
fn a_shutdown_right_after_a_flood_spreads_the_sessions_tells_every_idle_client_quit() {
    let served = Served::start(auto(Config {
        shutdown_timeout: Duration::from_secs(3),
        ..Config::default()
    }));
    let mut idle: Vec<TcpStream> = (0..6).map(|_| connect(served.addr)).collect();
    let mut round = 0;
    gather(&served, &mut idle, &mut round);
    // The idle sessions are the ones that move when the flood brings worker 1 back.
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..3).map(|_| flooder(served.addr, stop.clone())).collect();
    let flood_started = Instant::now();
    let moved = |m: &HashMap<String, f64>| {
        sample(m, r#"tcpool_worker_sessions_moved_in_total{worker="1"}"#)
    };
    while moved(&served.scrape()) == 0.0 {
        assert!(
            flood_started.elapsed() < PATIENCE,
            "the flood never spread the sessions"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let closing = thread::spawn(move || drop(served));
    for (i, client) in idle.iter_mut().enumerate() {
        assert_eq!(read_to_close(client), b"quit\n", "idle client {i}");
    }
    closing.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        assert!(flooder.join().unwrap() > 0);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the server took {:?} to stop",
        started.elapsed()
    );
}

#[test]
fn clients_that_connect_while_sessions_gather_are_served_and_counted() {
    let served = Served::start(auto(Config::default()));
    let mut clients: Vec<TcpStream> = (0..4).map(|_| connect(served.addr)).collect();
    let mut round = 0;
    let started = Instant::now();
    let mut gathered = false;
    // A newcomer every 10 rounds, until the sessions have gathered and 12 have come: each
    // lands on whichever worker takes new sessions then, or on one that hands it on.
    while !(gathered && clients.len() >= 16) {
        for _ in 0..10 {
            echo_round(&mut clients, round);
            round += 1;
        }
        if clients.len() < 40 {
            clients.push(connect(served.addr));
        }
        let m = served.scrape();
        gathered |= in_use(&m) == 1.0;
        for (w, n) in worker_sessions(&m).into_iter().enumerate() {
            assert!(n <= clients.len() as f64, "worker {w} counts {n}: {m:?}");
        }
        assert!(
            started.elapsed() < PATIENCE,
            "not gathered after {round} rounds"
        );
    }
    echo_round(&mut clients, round);
    support::wait_until("every session counted by a worker", || {
        worker_sessions(&served.scrape()).iter().sum::<f64>() == clients.len() as f64
    });
    drop(served);
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_to_close(client), b"quit\n", "client {i}");
    }
}
