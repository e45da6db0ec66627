//! `serve --udp` beyond the plain echo: the per-source rate limit, the stamp, the bounded
//! peer table, the echo leaving from the address a wildcard-bound socket was sent to, and the
//! hand-over of the UDP sockets to a new process.

use std::net::{SocketAddr, UdpSocket};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use tcpool::server::udp::{UdpCounts, UdpOptions};
use tcpool::server::{Config, Exposition, Running, Server, bind};

use crate::admin::parse_with_prometheus_client;
use crate::handover::{Adopted, successor_pid};
use crate::support::*;

/// A server with `--udp` and `options` in process, bound to `at`.
fn udp_server(at: &str, workers: usize, options: UdpOptions) -> (Running, SocketAddr, Exposition) {
    let listener = bind(at.parse().unwrap()).unwrap();
    let server = Server::new(
        listener,
        Config {
            workers,
            udp: Some(0),
            udp_options: options,
            ..Config::default()
        },
    );
    let exposition = server.exposition();
    let running = server.start().unwrap();
    let udp = running.udp_addr().expect("a UDP address");
    (running, udp, exposition)
}

fn peer() -> UdpSocket {
    let p = UdpSocket::bind("127.0.0.1:0").unwrap();
    p.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    p
}

/// Sends `msg` and returns the echo.
fn echo_of(peer: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    peer.send_to(msg, to).unwrap();
    let mut buf = [0; 2048];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(from, to);
    buf[..n].to_vec()
}

fn wait_in(counts: &UdpCounts, n: u64) {
    wait_until("the datagrams read", || {
        counts.datagrams_in.load(Relaxed) >= n
    });
}

#[test]
fn a_source_over_its_rate_is_cut_and_counted_while_another_keeps_its_answers() {
    let options = UdpOptions {
        rate_per_source: Some(2),
        ..UdpOptions::default()
    };
    let (running, udp, exposition) = udp_server("127.0.0.1:0", 1, options);
    let greedy = peer();
    greedy.set_nonblocking(true).unwrap();
    const SENT: u64 = 40;
    for i in 0..SENT {
        greedy
            .send_to(format!("greedy {i}").as_bytes(), udp)
            .unwrap();
    }
    wait_in(running.udp_counts(), SENT);
    // Another source has its own bucket: answered while the first is over its limit.
    let polite = peer();
    for i in 0..2 {
        let msg = format!("polite {i}");
        assert_eq!(echo_of(&polite, udp, msg.as_bytes()), msg.as_bytes());
    }
    // The counts are added at the end of a batch, just after its echoes leave.
    let counts = running.udp_counts();
    let settled = || counts.datagrams_out.load(Relaxed) + counts.rate_limited.load(Relaxed);
    wait_until("every datagram answered or cut", || settled() == SENT + 2);
    let answered = counts.datagrams_out.load(Relaxed);
    let limited = counts.rate_limited.load(Relaxed);
    assert!(limited > 0, "none cut");
    // What the greedy source got back is what was answered of it, each its own.
    greedy.set_nonblocking(false).unwrap();
    greedy.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut buf = [0; 64];
    for _ in 0..answered - 2 {
        let (n, _) = greedy.recv_from(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"greedy "));
    }
    let m = parse_with_prometheus_client(&exposition.encode());
    let key = r#"tcpool_udp_unanswered_total{reason="rate-limited"}"#;
    assert_eq!(m.get(key), Some(&(limited as f64)), "{m:?}");
}

#[test]
fn the_binary_logs_a_sources_limit_episode_once_not_once_a_datagram() {
    let server = Binary::serve(&["--udp", "--udp-rate-per-source", "1", "--workers", "1"]);
    server.wait_stderr("the udp line", |l| l.contains("udp echo on"));
    let greedy = peer();
    for i in 0..30 {
        greedy
            .send_to(format!("{i}").as_bytes(), server.addr)
            .unwrap();
    }
    // A datagram from another source after the greedy ones: once it is answered, the
    // greedy ones have all been read.
    let late = peer();
    assert_eq!(echo_of(&late, server.addr, b"late"), b"late");
    let line = server.wait_stderr("the limit line", |l| l.contains("--udp-rate-per-source"));
    assert!(
        line.contains(&greedy.local_addr().unwrap().to_string()),
        "{line}"
    );
    let episodes = server
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("--udp-rate-per-source"))
        .count();
    assert_eq!(episodes, 1);
}

#[test]
fn the_stamp_counts_a_sources_datagrams_and_leaves_short_ones_alone() {
    let options = UdpOptions {
        stamp: true,
        ..UdpOptions::default()
    };
    let (_running, udp, _) = udp_server("127.0.0.1:0", 2, options);
    let p = peer();
    let mut last = Vec::new();
    for k in 1..=5u64 {
        last = echo_of(&p, udp, b"........payload");
        assert_eq!(&last[..8], &k.to_be_bytes());
    }
    assert_eq!(&last[..8], &5u64.to_be_bytes());
    assert_eq!(&last[8..], b"payload");
    // Shorter than the stamp: unchanged (and counted: the next one says 7).
    assert_eq!(echo_of(&p, udp, b"tiny"), b"tiny");
    assert_eq!(&echo_of(&p, udp, &[0; 8])[..], &7u64.to_be_bytes());
    // Another source counts from 1.
    assert_eq!(&echo_of(&peer(), udp, &[0; 8])[..], &1u64.to_be_bytes());
}

#[test]
fn the_peer_table_stays_bounded_when_ten_times_its_size_send() {
    const TABLE: usize = 8;
    let options = UdpOptions {
        peers: TABLE,
        stamp: true,
        ..UdpOptions::default()
    };
    let (running, udp, exposition) = udp_server("127.0.0.1:0", 1, options);
    let first = peer();
    assert_eq!(&echo_of(&first, udp, &[0; 8])[..], &1u64.to_be_bytes());
    let crowd: Vec<UdpSocket> = (0..TABLE * 10).map(|_| peer()).collect();
    for p in &crowd {
        assert_eq!(&echo_of(p, udp, &[0; 8])[..], &1u64.to_be_bytes());
        assert!(running.udp_counts().peers() <= TABLE as u64);
    }
    assert_eq!(running.udp_counts().peers(), TABLE as u64);
    // The first was forgotten long ago and starts again at 1; the last is remembered.
    assert_eq!(&echo_of(&first, udp, &[0; 8])[..], &1u64.to_be_bytes());
    let last = crowd.last().unwrap();
    assert_eq!(&echo_of(last, udp, &[0; 8])[..], &2u64.to_be_bytes());
    let m = parse_with_prometheus_client(&exposition.encode());
    assert_eq!(m.get("tcpool_udp_peers{}"), Some(&(TABLE as f64)), "{m:?}");
}

#[test]
fn bound_to_a_wildcard_each_echo_leaves_from_the_address_its_peer_targeted() {
    let (_running, udp, _) = udp_server("0.0.0.0:0", 2, UdpOptions::default());
    for target in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        let to = SocketAddr::new(target.parse().unwrap(), udp.port());
        let p = peer();
        p.send_to(target.as_bytes(), to).unwrap();
        let mut buf = [0; 64];
        let (n, from) = p.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (target.as_bytes(), to));
    }
}

#[test]
fn a_reply_a_fault_holds_leaves_from_the_address_its_peer_targeted_too() {
    let listener = bind("0.0.0.0:0".parse().unwrap()).unwrap();
    let running = Server::new(
        listener,
        Config {
            workers: 1,
            udp: Some(0),
            faults: vec!["udp-delay=5ms".parse().unwrap()],
            ..Config::default()
        },
    )
    .start()
    .unwrap();
    let port = running.udp_addr().expect("a UDP address").port();
    for target in ["127.0.0.2", "127.0.0.3"] {
        let to = SocketAddr::new(target.parse().unwrap(), port);
        let p = peer();
        p.send_to(target.as_bytes(), to).unwrap();
        let mut buf = [0; 64];
        let (n, from) = p.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (target.as_bytes(), to));
    }
}

#[test]
fn bound_to_the_ipv6_wildcard_the_echo_leaves_from_the_loopback_it_was_sent_to() {
    let (_running, udp, _) = udp_server("[::]:0", 1, UdpOptions::default());
    let to = SocketAddr::new("::1".parse().unwrap(), udp.port());
    let p = UdpSocket::bind("[::1]:0").unwrap();
    p.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(echo_of(&p, to, b"six"), b"six");
}

#[test]
fn ipv6_datagrams_larger_than_ipv4_allows_come_back_whole() {
    let (running, udp, _) = udp_server("[::1]:0", 1, UdpOptions::default());
    let p = UdpSocket::bind("[::1]:0").unwrap();
    p.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // 65,527 bytes: the largest UDP payload over IPv6, 20 more than over IPv4.
    let big: Vec<u8> = (0..65_527u32).map(|i| (i % 251) as u8).collect();
    p.send_to(&big, udp).unwrap();
    let mut back = vec![0; 70_000];
    let (n, _) = p.recv_from(&mut back).unwrap();
    assert_eq!(&back[..n], &big[..]);
    assert_eq!(running.udp_counts().truncated.load(Relaxed), 0);
}

/// What a client sending one datagram at a time saw: echoes back, datagrams refused (an
/// ICMP port unreachable: no socket on the port), and datagrams that got no echo in time.
#[derive(Default)]
struct Seen {
    echoed: AtomicU64,
    refused: AtomicU64,
    unanswered: AtomicU64,
}

/// Sends numbered datagrams to `to`, one at a time, until `stop` (or a bound on rounds).
fn keep_sending(
    to: SocketAddr,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Seen>,
) -> thread::JoinHandle<()> {
    let (stop, seen) = (Arc::clone(stop), Arc::clone(seen));
    thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(to).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0; 64];
        for round in 0..100_000u64 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let msg = round.to_be_bytes();
            let result = socket.send(&msg).and_then(|_| socket.recv(&mut buf));
            match result {
                Ok(n) if buf[..n] == msg => seen.echoed.fetch_add(1, Ordering::SeqCst),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    seen.refused.fetch_add(1, Ordering::SeqCst)
                }
                _ => seen.unanswered.fetch_add(1, Ordering::SeqCst),
            };
        }
    })
}

#[test]
fn sighup_hands_the_udp_sockets_over_and_no_datagram_is_refused_or_lost() {
    let mut old = Binary::serve_with(&["--udp", "--workers", "2"], Stdio::null(), |_| {});
    old.wait_stderr("the udp line", |l| l.contains("udp echo on"));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let clients: Vec<_> = (0..3)
        .map(|_| keep_sending(old.addr, &stop, &seen))
        .collect();
    wait_until("echoes from the old process", || {
        seen.echoed.load(Ordering::SeqCst) >= 200
    });
    old.signal("HUP");
    let pid = successor_pid(&old);
    let new = Adopted(pid);
    assert_eq!(
        old.wait_timeout(IO_TIMEOUT * 2),
        Some(0),
        "{:?}",
        old.stderr_lines()
    );
    let after = seen.echoed.load(Ordering::SeqCst);
    wait_until("echoes from the new process alone", || {
        seen.echoed.load(Ordering::SeqCst) >= after + 200
    });
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let counts = [&seen.echoed, &seen.refused, &seen.unanswered].map(|n| n.load(Ordering::SeqCst));
    assert_eq!(
        counts[1..],
        [0, 0],
        "echoed, refused, unanswered: {counts:?}"
    );
    assert!(
        old.stderr_lines()
            .iter()
            .any(|l| l.contains("udp echo on") && l.contains("handed over")),
        "{:?}",
        old.stderr_lines()
    );
    // A shutdown that is not a hand-over closes the sockets: a late datagram is refused.
    assert!(new.stop(), "the new process did not stop on SIGTERM");
    let late = UdpSocket::bind("127.0.0.1:0").unwrap();
    late.connect(old.addr).unwrap();
    late.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    late.send(b"late").unwrap();
    let refused = late.recv(&mut [0; 8]).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn udp_options_without_udp_are_refused_before_serving() {
    for args in [
        &["--udp-stamp"][..],
        &["--udp-rate-per-source", "5"],
        &["--udp-gso", "off"],
    ] {
        let out = std::process::Command::new(tcpool_bin())
            .args(["serve", "--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("go with --udp"), "{args:?}: {stderr}");
    }
}
