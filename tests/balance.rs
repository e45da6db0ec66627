//! `--balance`: sessions gather on the workers that keep up with them, move between workers
//! without losing or reordering a byte, and stay put with `--balance round-robin`.
//!
//! What moves is watched through the admin endpoint's metrics (`tcpool_workers_in_use`,
//! `tcpool_worker_sessions`, `tcpool_worker_sessions_moved_in_total`), never timed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tcpool::server::Balancing;
use tcpool::{Config, Mode};

use crate::admin::{Served, sample};
use crate::support::{self, read_line, read_to_close};

/// How long a test waits for the balance to act: the first gathering comes a second after
/// the start at the earliest.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn worker_sessions(m: &HashMap<String, f64>) -> [f64; 2] {
    [0, 1].map(|w| sample(m, &format!("tcpool_worker_sessions{{worker=\"{w}\"}}")))
}

fn moved_in(m: &HashMap<String, f64>, worker: usize) -> f64 {
    sample(
        m,
        &format!("tcpool_worker_sessions_moved_in_total{{worker=\"{worker}\"}}"),
    )
}

/// Two workers, both in use from the start, so that a light load has a gathering to show.
/// The calling test thread stays on one CPU from here on: connections from two CPUs would be
/// placed on their CPUs' workers as they arrive, not in turn as these tests expect.
fn two_workers(balance: Balancing) -> Config {
    crate::balance_grouping::pin(0);
    Config {
        workers: 2,
        balance,
        workers_at_start: 2,
        ..Config::default()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = support::connect(addr);
    stream.set_nodelay(true).unwrap();
    stream
}

/// One round of a light load: every client sends a line of its own and reads it back.
pub fn echo_round(clients: &mut [TcpStream], round: usize) {
    for (i, client) in clients.iter_mut().enumerate() {
        let line = format!("client {i} round {round}\n");
        client.write_all(line.as_bytes()).unwrap();
        assert_eq!(read_line(client), line.as_bytes(), "client {i}");
    }
}

#[test]
fn a_server_starts_on_one_worker_and_a_lone_client_threads_connections_share_it() {
    let served = Served::start(Config {
        workers: 2,
        ..Config::default()
    });
    assert_eq!(sample(&served.scrape(), "tcpool_workers_in_use{}"), 1.0);
    let mut clients: Vec<TcpStream> = (0..8).map(|_| connect(served.addr)).collect();
    echo_round(&mut clients, 0);
    let m = served.scrape();
    assert_eq!(worker_sessions(&m), [8.0, 0.0], "one worker holds them all");
    assert_eq!(moved_in(&m, 0) + moved_in(&m, 1), 0.0, "nothing moved");
}

#[test]
fn a_light_load_gathers_on_one_worker_and_every_byte_comes_back() {
    let served = Served::start(two_workers(Balancing::Auto));
    let mut clients: Vec<TcpStream> = (0..8).map(|_| connect(served.addr)).collect();
    let mut round = 0;
    echo_round(&mut clients, round);
    let m = served.scrape();
    assert_eq!(
        worker_sessions(&m),
        [4.0, 4.0],
        "new sessions go in turn at first"
    );
    assert_eq!(sample(&m, "tcpool_workers_in_use{}"), 2.0);

    let started = Instant::now();
    let m = loop {
        round += 1;
        echo_round(&mut clients, round);
        if round % 50 == 0 {
            let m = served.scrape();
            if sample(&m, "tcpool_workers_in_use{}") == 1.0 && worker_sessions(&m)[1] == 0.0 {
                break m;
            }
        }
        assert!(
            started.elapsed() < PATIENCE,
            "no gathering after {round} rounds"
        );
    };
    assert_eq!(worker_sessions(&m), [8.0, 0.0]);
    // Worker 1's four, and any that the two workers swapped while both were in use (sessions
    // whose packets arrive on one CPU share a worker).
    assert!(moved_in(&m, 0) >= 4.0, "{m:?}");
    // The moved sessions are served as before, and so is a newcomer.
    for _ in 0..200 {
        round += 1;
        echo_round(&mut clients, round);
    }
    clients.push(connect(served.addr));
    echo_round(&mut clients, round + 1);
    assert_eq!(worker_sessions(&served.scrape()).iter().sum::<f64>(), 9.0);
    let totals = served.scrape();
    let messages = (round + 1) * 8 + 9;
    assert_eq!(
        sample(&totals, r#"tcpool_messages_total{direction="in"}"#),
        messages as f64
    );
    // At shutdown every client, moved or not, is told `quit` in its own line ending.
    let closing = thread::spawn(move || drop(served));
    for client in &mut clients {
        assert_eq!(read_to_close(client), b"quit\n");
    }
    closing.join().unwrap();
}

#[test]
fn round_robin_keeps_every_session_where_it_was_put() {
    let served = Served::start(two_workers(Balancing::RoundRobin));
    let mut clients: Vec<TcpStream> = (0..8).map(|_| connect(served.addr)).collect();
    // The same light load, for longer than `auto` takes to gather it.
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_millis(2_500) && round < 100_000 {
        echo_round(&mut clients, round);
        round += 1;
    }
    let m = served.scrape();
    assert_eq!(worker_sessions(&m), [4.0, 4.0]);
    assert_eq!(moved_in(&m, 0) + moved_in(&m, 1), 0.0);
    assert_eq!(sample(&m, "tcpool_workers_in_use{}"), 2.0);
    drop(served);
}

/// A chat server on two workers with a sender and five readers split over both, three on
/// each, none moved yet. A gathering may come a second after the start: should one come
/// before the first line, the server is started again (a few times at most).
fn chat_split_over_two_workers() -> (Served, TcpStream, Vec<TcpStream>) {
    for _ in 0..5 {
        let served = Served::start(Config {
            mode: Mode::Chat,
            ..two_workers(Balancing::Auto)
        });
        // Each is greeted before the next joins, so every reader is there for the first line;
        // the later joins' notices are passed over.
        let mut streams: Vec<TcpStream> =
            (0..6).map(|_| support::join_chat(served.addr).0).collect();
        let m = served.scrape();
        if worker_sessions(&m) == [3.0, 3.0] && moved_in(&m, 0) + moved_in(&m, 1) == 0.0 {
            let sender = streams.remove(0);
            return (served, sender, streams);
        }
    }
    panic!("five servers in a row gathered their sessions before the first line");
}

#[test]
fn chat_lines_keep_their_order_while_their_readers_move() {
    let (served, mut sender, mut readers) = chat_split_over_two_workers();
    for reader in &mut readers {
        reader
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }
    let in_use = |m: &HashMap<String, f64>| sample(m, "tcpool_workers_in_use{}");
    let mut sent = 0;
    let started = Instant::now();
    let mut gathered_at = None;
    // Lines go out one at a time, each read by every reader before the next, until the
    // sessions have gathered, then 100 more.
    loop {
        let line = format!("line {sent}\n");
        sender.write_all(line.as_bytes()).unwrap();
        for (i, reader) in readers.iter_mut().enumerate() {
            loop {
                let got = read_line(reader);
                if got.starts_with(b"* ") {
                    continue; // a notice: someone joined
                }
                let got = String::from_utf8(got).unwrap();
                assert!(
                    got.ends_with(&format!("> line {sent}\n")),
                    "reader {i} got {got:?} for line {sent}"
                );
                break;
            }
        }
        sent += 1;
        // Gathered once worker 1 has handed over all it held: `in_use` alone drops before the
        // handover, and a busy machine may spread again before the handover is done.
        if gathered_at.is_none() && sent % 20 == 0 {
            let m = served.scrape();
            if in_use(&m) == 1.0 && worker_sessions(&m)[1] == 0.0 {
                gathered_at = Some(sent);
            }
        }
        if gathered_at.is_some_and(|at| sent >= at + 100) {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "no gathering after {sent} lines"
        );
    }
    // Worker 1's three sessions moved while the lines went out. (On a machine this busy the
    // load may have spread again since: only the moves count.)
    let m = served.scrape();
    assert_eq!(worker_sessions(&m).iter().sum::<f64>(), 6.0);
    assert!(moved_in(&m, 0) >= 3.0, "{m:?}");
    drop(served);
}

#[test]
fn a_heavy_load_spreads_again_and_loses_nothing() {
    let served = Served::start(two_workers(Balancing::Auto));
    let addr = served.addr;
    // Gather first, with a light load.
    let mut light: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    let started = Instant::now();
    let mut round = 0;
    while sample(&served.scrape(), "tcpool_workers_in_use{}") != 1.0 {
        for _ in 0..20 {
            echo_round(&mut light, round);
            round += 1;
        }
        assert!(started.elapsed() < PATIENCE, "no gathering");
    }
    // Then flood: clients that write 16 KiB blocks of numbered lines as fast as the server
    // takes them and check every byte that comes back, until a session moved to the second
    // worker (bounded in time and in bytes).
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..4)
        .map(|f| {
            let stop = stop.clone();
            thread::spawn(move || {
                let block: Vec<u8> = (0..)
                    .flat_map(|n| format!("flooder {f} line {n:06}\n").into_bytes())
                    .take(16 * 1024)
                    .collect();
                let block = Arc::new(block);
                let mut stream = connect(addr);
                let mut reader = stream.try_clone().unwrap();
                let (writer_stop, written) = (stop.clone(), block.clone());
                let writer = thread::spawn(move || {
                    let mut sent = 0u64;
                    while !writer_stop.load(Ordering::Relaxed) && sent < 8 << 30 {
                        stream.write_all(&written).unwrap();
                        sent += written.len() as u64;
                    }
                    stream.shutdown(std::net::Shutdown::Write).unwrap();
                    sent
                });
                let mut got = 0u64;
                let mut buf = vec![0; 64 * 1024];
                loop {
                    let n = reader.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    // Compared a run at a time: the check must not be what slows the flood.
                    let mut done = 0;
                    while done < n {
                        let at = ((got + done as u64) % block.len() as u64) as usize;
                        let run = (block.len() - at).min(n - done);
                        assert!(
                            buf[done..done + run] == block[at..at + run],
                            "flooder {f}: the echo differs at byte {}",
                            got + done as u64
                        );
                        done += run;
                    }
                    got += n as u64;
                }
                let sent = writer.join().unwrap();
                assert_eq!(got, sent, "flooder {f}");
                sent
            })
        })
        .collect();
    let flood_started = Instant::now();
    let spread = loop {
        let m = served.scrape();
        if moved_in(&m, 1) > 0.0 {
            break true;
        }
        if flood_started.elapsed() > PATIENCE {
            break false;
        }
        thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        assert!(flooder.join().unwrap() > 0);
    }
    assert!(
        spread,
        "the flood never brought the second worker back in use"
    );
    // The light clients are served wherever they are now.
    for _ in 0..20 {
        echo_round(&mut light, round);
        round += 1;
    }
    drop(served);
}
