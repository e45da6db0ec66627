//! `--allow` / `--deny`: IPv4 and IPv6 clients let in or closed at once without a reply.

use std::net::{IpAddr, SocketAddr, TcpStream};

use socket2::{Domain, Socket, Type};
use tcpool::server::{Access, Config, Server, bind_all};

use crate::support::*;

/// A server on 127.0.0.1 and ::1 (one port) with `access`; returns it unstarted.
fn server_with(access: Access) -> Server {
    init_logger();
    let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    let mut listeners = bind_all(&ips, 0).unwrap().into_iter();
    let config = Config {
        access,
        ..Config::default()
    };
    let first = Server::new(listeners.next().unwrap(), config);
    listeners.fold(first, Server::also_on)
}

/// A client connecting from `from` (any loopback address) to `to`, with timeouts.
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    socket.connect_timeout(&to.into(), IO_TIMEOUT).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// The server closed `stream` without sending a byte.
fn assert_closed_silently(stream: &mut TcpStream) {
    assert_eq!(read_to_close(stream), b"", "a denied client got a reply");
}

#[test]
fn deny_closes_ipv6_clients_at_once_and_serves_ipv4() {
    let server = server_with(Access {
        allow: vec![],
        deny: vec!["::1".parse().unwrap()],
    });
    let addrs = server.local_addrs().unwrap();
    let exposition = server.exposition();
    let (registry, shutdown) = (server.registry(), server.shutdown());
    let running = std::thread::spawn(move || server.run());

    let mut v6 = connect(addrs[1]);
    assert_closed_silently(&mut v6);
    let mut v4 = connect(addrs[0]);
    assert_eq!(round_trip(&mut v4, b"in\n"), b"in\n");
    let mut v6 = connect(addrs[1]);
    assert_closed_silently(&mut v6);
    assert_eq!(registry.len(), 1, "a denied client was registered");
    assert_eq!(rejected_count(&exposition.encode(), "denied"), "2");

    shutdown.trigger();
    assert_eq!(read_to_close(&mut v4), b"quit\n");
    let summary = running.join().unwrap().unwrap();
    assert_eq!(summary.sessions, 1);
    assert_eq!(summary.rejected, 0, "denied is not busy");
}

#[test]
fn allow_lets_in_only_its_blocks_in_both_families() {
    let server = server_with(Access {
        allow: vec!["127.0.0.2/32".parse().unwrap(), "::1/128".parse().unwrap()],
        deny: vec![],
    });
    let addrs = server.local_addrs().unwrap();
    let exposition = server.exposition();
    let shutdown = server.shutdown();
    let running = std::thread::spawn(move || server.run());

    let mut outsider = connect_from("127.0.0.1".parse().unwrap(), addrs[0]);
    assert_closed_silently(&mut outsider);
    let mut v4 = connect_from("127.0.0.2".parse().unwrap(), addrs[0]);
    assert_eq!(round_trip(&mut v4, b"two"), b"two");
    let mut v6 = connect(addrs[1]);
    assert_eq!(round_trip(&mut v6, b"six"), b"six");
    assert_eq!(rejected_count(&exposition.encode(), "denied"), "1");

    shutdown.trigger();
    assert_eq!(read_to_close(&mut v4), b"quit");
    assert_eq!(read_to_close(&mut v6), b"quit");
    assert_eq!(running.join().unwrap().unwrap().sessions, 2);
}

#[test]
fn deny_wins_over_allow_on_the_real_binary() {
    let mut server = Binary::serve(&["--allow", "127.0.0.0/8", "--deny", "127.0.0.3"]);
    let mut denied = connect_from("127.0.0.3".parse().unwrap(), server.addr);
    assert_closed_silently(&mut denied);
    let mut client = connect(server.addr);
    assert_eq!(round_trip(&mut client, b"ok\n"), b"ok\n");
    server.type_line("quit");
    assert_eq!(read_to_close(&mut client), b"quit\n");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}

#[test]
fn a_bad_block_is_a_usage_error() {
    let out = std::process::Command::new(tcpool_bin())
        .args(["serve", "--port", "0", "--allow", "10.0.0.1/8"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("did you mean 10.0.0.0/8"), "{stderr}");
}

#[test]
fn allow_everything_in_ipv6_lets_ipv4_clients_of_a_dual_stack_listener_in() {
    init_logger();
    let Ok(mut listeners) = bind_all(&["::".parse().unwrap()], 0) else {
        eprintln!("no IPv6 here: the mapping is covered by the block's unit tests");
        return;
    };
    let config = Config {
        access: Access {
            allow: vec!["::/0".parse().unwrap()],
            deny: vec![],
        },
        ..Config::default()
    };
    let server = Server::new(listeners.remove(0), config);
    let port = server.local_addr().unwrap().port();
    let shutdown = server.shutdown();
    let running = std::thread::spawn(move || server.run());

    let mut v4 = connect(SocketAddr::new("127.0.0.1".parse().unwrap(), port));
    assert_eq!(round_trip(&mut v4, b"mapped\n"), b"mapped\n");
    let mut v6 = connect(SocketAddr::new("::1".parse().unwrap(), port));
    assert_eq!(round_trip(&mut v6, b"six\n"), b"six\n");

    shutdown.trigger();
    assert_eq!(read_to_close(&mut v4), b"quit\n");
    assert_eq!(read_to_close(&mut v6), b"quit\n");
    assert_eq!(running.join().unwrap().unwrap().sessions, 2);
}
