//! Listening on several addresses: `--bind` repeated, IPv6 loopback, one port for all.

use std::net::{IpAddr, SocketAddr};

use tcpool::server::{Config, Server, bind_all};

use crate::support::*;

#[test]
fn bind_twice_serves_ipv4_and_ipv6_loopback_on_one_port() {
    let mut server = Binary::serve(&["--bind", "127.0.0.1", "--bind", "::1"]);
    let line = server.wait_stderr("the listening line", |l| l.contains("listening on"));
    let port = server.addr.port();
    let v6 = SocketAddr::new("::1".parse().unwrap(), port);
    assert!(
        line.contains(&format!("127.0.0.1:{port} [::1]:{port} ")),
        "{line}"
    );

    let mut a = connect(server.addr);
    let mut b = connect(v6);
    assert_eq!(round_trip(&mut a, b"four\n"), b"four\n");
    assert_eq!(round_trip(&mut b, b"six\n"), b"six\n");

    server.type_line("/list");
    let b_peer = b.local_addr().unwrap().to_string();
    server.wait_stdout("the IPv6 client in /list", |l| l.contains(&b_peer));
    server.type_line("quit");
    assert_eq!(read_to_close(&mut a), b"quit\n");
    assert_eq!(read_to_close(&mut b), b"quit\n");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}

#[test]
fn ipv6_loopback_alone_is_served_and_listed_as_ipv6() {
    init_logger();
    let ips: Vec<IpAddr> = vec!["::1".parse().unwrap()];
    let listener = bind_all(&ips, 0).unwrap().pop().unwrap();
    let server = Server::new(listener, Config::default());
    let addr = server.local_addr().unwrap();
    let registry = server.registry();
    let shutdown = server.shutdown();
    let running = std::thread::spawn(move || server.run());

    let mut client = connect(addr);
    assert_eq!(round_trip(&mut client, b"hi"), b"hi");
    let peers: Vec<SocketAddr> = registry.list().iter().map(|s| s.peer).collect();
    assert_eq!(peers, [client.local_addr().unwrap()]);
    assert!(peers[0].is_ipv6());
    shutdown.trigger();
    assert_eq!(read_to_close(&mut client), b"quit");
    assert_eq!(running.join().unwrap().unwrap().sessions, 1);
}

#[test]
fn a_second_listener_shares_the_workers_and_stops_with_the_first() {
    init_logger();
    let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    let mut listeners = bind_all(&ips, 0).unwrap().into_iter();
    let config = Config {
        workers: 1,
        ..Config::default()
    };
    let first = Server::new(listeners.next().unwrap(), config);
    let server = listeners.fold(first, Server::also_on);
    let addrs = server.local_addrs().unwrap();
    assert_eq!(addrs.len(), 2);
    let shutdown = server.shutdown();
    let running = std::thread::spawn(move || server.run());

    let mut clients: Vec<_> = addrs.iter().map(|&a| connect(a)).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let msg = format!("client {i}\n");
        assert_eq!(round_trip(client, msg.as_bytes()), msg.as_bytes());
    }
    shutdown.trigger();
    for client in &mut clients {
        assert_eq!(read_to_close(client), b"quit\n");
    }
    let summary = running.join().unwrap().unwrap();
    assert_eq!(summary.sessions, 2);
    assert!(!summary.forced);
}

#[test]
fn the_same_bind_twice_is_refused_at_start() {
    assert_serve_refuses(
        &["--port", "0", "--bind", "::1", "--bind", "::1"],
        "::1 is given twice",
    );
}
