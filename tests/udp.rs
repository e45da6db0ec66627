//! `serve --udp`: every datagram echoed to its sender, by real peers (`ncat -u`, `socat`) and
//! by 200 sockets at once, each getting its own datagrams back and nobody else's.

use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tcpool::server::{Config, Exposition, Server, bind};

use crate::admin::parse_with_prometheus_client;
use crate::support::*;

/// A server with `--udp` in process, its UDP address and its metrics.
fn udp_server() -> (tcpool::server::Running, SocketAddr, Exposition) {
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let server = Server::new(
        listener,
        Config {
            udp: Some(0),
            ..Config::default()
        },
    );
    let exposition = server.exposition();
    let running = server.start().unwrap();
    let udp = running.udp_addr().expect("a UDP address");
    (running, udp, exposition)
}

#[test]
fn the_udp_echo_shares_the_tcp_port_number_and_tcp_goes_on() {
    let (running, udp, exposition) = udp_server();
    assert_eq!(udp, running.local_addr());
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    peer.send_to(b"over udp", udp).unwrap();
    let mut buf = [0; 64];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"over udp"[..], udp));
    let mut tcp = connect(running.local_addr());
    assert_eq!(round_trip(&mut tcp, b"over tcp\n"), b"over tcp\n");
    // The largest datagram comes back whole, and no larger.
    let big: Vec<u8> = (0..65_507u32).map(|i| (i % 251) as u8).collect();
    peer.send_to(&big, udp).unwrap();
    let mut back = vec![0; 70_000];
    let (n, _) = peer.recv_from(&mut back).unwrap();
    assert_eq!(&back[..n], &big[..]);
    // The counts are added once a batch, just after its echoes leave: the echo can be here
    // a moment before its count.
    let counts = running.udp_counts();
    let out = || {
        counts
            .datagrams_out
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    wait_until("the echoes counted", || out() >= 2);
    assert_eq!(out(), 2);
    // The same counts on /metrics, read by Prometheus' own parser.
    let m = parse_with_prometheus_client(&exposition.encode());
    let bytes = (8 + 65_507) as f64;
    for (key, want) in [
        (r#"tcpool_udp_datagrams_total{direction="in"}"#, 2.0),
        (r#"tcpool_udp_datagrams_total{direction="out"}"#, 2.0),
        (r#"tcpool_udp_bytes_total{direction="in"}"#, bytes),
        (r#"tcpool_udp_bytes_total{direction="out"}"#, bytes),
        (r#"tcpool_udp_unanswered_total{reason="dropped"}"#, 0.0),
        (r#"tcpool_udp_unanswered_total{reason="refused"}"#, 0.0),
    ] {
        assert_eq!(m.get(key), Some(&want), "{key}: {m:?}");
    }
}

#[test]
fn two_hundred_peers_each_get_their_own_datagrams_back_and_none_other() {
    let (_running, udp, _) = udp_server();
    let peers: Vec<UdpSocket> = (0..200)
        .map(|_| {
            let p = UdpSocket::bind("127.0.0.1:0").unwrap();
            p.set_nonblocking(true).unwrap();
            p
        })
        .collect();
    const EACH: usize = 5;
    // Every peer has one datagram in flight at a time, all 200 at once: UDP has no
    // back-pressure, and a burst past the kernel's buffers is lost, which is not what this
    // test is about.
    for (i, peer) in peers.iter().enumerate() {
        peer.send_to(format!("peer {i} datagram 0").as_bytes(), udp)
            .unwrap();
    }
    let mut got: Vec<HashSet<String>> = vec![HashSet::new(); peers.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0; 256];
    while got.iter().any(|g| g.len() < EACH) {
        assert!(
            Instant::now() < deadline,
            "{} peers still waiting",
            got.iter().filter(|g| g.len() < EACH).count()
        );
        let mut idle = true;
        for (i, peer) in peers.iter().enumerate() {
            while let Ok((n, from)) = peer.recv_from(&mut buf) {
                idle = false;
                assert_eq!(from, udp);
                let text = String::from_utf8(buf[..n].to_vec()).unwrap();
                assert!(
                    text.starts_with(&format!("peer {i} ")),
                    "peer {i} got {text:?}"
                );
                assert!(got[i].insert(text), "peer {i} got a datagram twice");
                let k = got[i].len();
                if k < EACH {
                    peer.send_to(format!("peer {i} datagram {k}").as_bytes(), udp)
                        .unwrap();
                }
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn ncat_and_socat_get_their_datagrams_back_from_the_binary() {
    let server = Binary::serve(&["--udp"]);
    server.wait_stderr("the udp line", |l| l.contains("udp echo on"));
    let port = server.addr.port().to_string();
    // ncat -u: a line is a datagram; it keeps reading for a second after its input ends.
    let mut ncat = Command::new("ncat")
        .args(["-u", "127.0.0.1", &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ncat (scripts/test.sh installs it)");
    ncat.stdin
        .as_mut()
        .unwrap()
        .write_all(b"from ncat\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let _ = ncat.kill();
    let out = ncat.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from ncat\n");
    let out = Command::new("socat")
        .args(["-t", "1", "-", &format!("UDP:127.0.0.1:{port}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .and_then(|mut socat| {
            socat.stdin.take().unwrap().write_all(b"from socat\n")?;
            socat.wait_with_output()
        })
        .expect("socat (scripts/test.sh installs it)");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from socat\n");
}
