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

use tcpool::Config;
use tcpool::server::{Balancing, ProxyProtocol};

use crate::admin::{Served, sample};
use crate::balance::{PATIENCE, connect, echo_round, worker_sessions};
use crate::support::{self, read_to_close};

/// The calling test thread stays on one CPU from here on: connections from two CPUs would be
/// placed on their CPUs' workers as they arrive, not in turn as these tests expect.
pub fn auto(config: Config) -> Config {
    crate::balance_grouping::pin(0);
    Config {
        workers: 2,
        balance: Balancing::Auto,
        workers_at_start: 2,
        ..config
    }
}

pub fn moved_in(m: &HashMap<String, f64>) -> f64 {
    (0..2)
        .map(|w| {
            sample(
                m,
                &format!("tcpool_worker_sessions_moved_in_total{{worker=\"{w}\"}}"),
            )
        })
        .sum()
}

pub fn in_use(m: &HashMap<String, f64>) -> f64 {
    sample(m, "tcpool_workers_in_use{}")
}

/// Echo rounds until `done` holds for a scrape (looked at every 25 rounds); the gauges must
/// never count more sessions than are connected (an underflow reads as a huge number).
pub fn rounds_until(
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
