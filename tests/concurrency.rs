//! Many clients at once: every reply accounted for exactly once, idle clients holding no
//! worker, a reset client disturbing nobody.

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;

use tcpool::Config;

use crate::support::*;

fn two_workers() -> Config {
    Config {
        workers: 2,
        backlog: 4,
        ..Config::default()
    }
}

/// `clients` threads, each doing `rounds` round trips with its own payloads; returns the
/// number of correct replies.
fn run_clients(addr: std::net::SocketAddr, clients: usize, rounds: usize) -> usize {
    let start = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let start = start.clone();
            thread::spawn(move || {
                let mut s = connect(addr);
                start.wait();
                let mut correct = 0;
                for r in 0..rounds {
                    let msg = format!("client {c} round {r} {}\n", "x".repeat(c % 50));
                    if round_trip(&mut s, msg.as_bytes()) == msg.as_bytes() {
                        correct += 1;
                    }
                }
                correct
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

#[test]
fn three_hundred_clients_on_two_workers_all_answered() {
    raise_fd_limit();
    let server = TestServer::start(two_workers());
    // Idle clients first: a worker must never be held by one of them.
    let idle: Vec<TcpStream> = (0..10).map(|_| connect(server.addr)).collect();
    server.wait_for("idle clients adopted", |r| r.len() == 10);
    assert_eq!(run_clients(server.addr, 300, 20), 300 * 20);
    drop(idle);
    let summary = server.stop();
    assert_eq!(summary.sessions, 310);
    assert!(summary.traffic.messages_in >= 6000);
}

#[test]
fn thousand_mostly_idle_clients_on_two_workers() {
    raise_fd_limit();
    let server = TestServer::start(two_workers());
    let idle: Vec<TcpStream> = (0..1000).map(|_| connect(server.addr)).collect();
    server.wait_for("1000 sessions", |r| r.len() == 1000);
    // The active ones among them (every 50th) are answered while the rest stay idle.
    let mut active: Vec<TcpStream> = idle
        .iter()
        .step_by(50)
        .map(|s| s.try_clone().unwrap())
        .collect();
    for (i, s) in active.iter_mut().enumerate() {
        let msg = format!("active {i}\n");
        assert_eq!(round_trip(s, msg.as_bytes()), msg.as_bytes());
    }
    assert_eq!(server.registry.len(), 1000);
}

#[test]
fn a_reset_client_disturbs_nobody() {
    let server = TestServer::start(two_workers());
    let mut steady = connect(server.addr);
    assert_eq!(round_trip(&mut steady, b"steady 0\n"), b"steady 0\n");
    for i in 0..20 {
        let mut rude = connect(server.addr);
        // Half a line, then a reset (SO_LINGER 0 makes close send RST).
        rude.write_all(b"half a mess").unwrap();
        socket2::SockRef::from(&rude)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(rude);
        let msg = format!("steady {}\n", i + 1);
        assert_eq!(round_trip(&mut steady, msg.as_bytes()), msg.as_bytes());
    }
    server.wait_for("reset sessions gone", |r| r.len() == 1);
}

#[test]
fn pipelined_writes_without_reading_are_back_pressured_not_dropped() {
    let server = TestServer::start(two_workers());
    let mut c = connect(server.addr);
    let mut writer = c.try_clone().unwrap();
    // 8 MiB sent before anything is read: far more than socket buffers hold.
    let total = 8 << 20;
    let sending = thread::spawn(move || {
        let chunk = vec![b'p'; 64 * 1024];
        for _ in 0..total / chunk.len() {
            writer.write_all(&chunk).unwrap();
        }
    });
    thread::sleep(std::time::Duration::from_millis(300));
    let got = read_n(&mut c, total);
    assert!(got.iter().all(|&b| b == b'p'));
    sending.join().unwrap();
    assert_eq!(round_trip(&mut c, b"still here"), b"still here");
}
