//! `--reuse-port`: two processes listening on one port (SO_REUSEPORT), both serving.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::support::*;

/// The total in a `/stats` line: `... sessions 3 now / 3 peak / 7 total ...`.
fn total_sessions(server: &mut Binary) -> u64 {
    server.type_line("/stats");
    let line = server.wait_stdout("a /stats line", |l| l.contains(" total"));
    let before_total = line.split(" total").next().unwrap();
    before_total.rsplit(' ').next().unwrap().parse().unwrap()
}

/// `tcpool serve --reuse-port --port PORT` with its console on a pipe.
fn serve_on(port: &str) -> Binary {
    let mut command = Command::new(tcpool_bin());
    command
        .args(["serve", "--reuse-port", "--port", port, "--workers", "1"])
        .env("RUST_LOG", "info")
        .env("RUST_LOG_STYLE", "never")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    Binary::launch(command)
}

#[test]
fn two_reuse_port_processes_share_one_port_and_both_serve() {
    let port = free_port().to_string();
    let mut one = serve_on(&port);
    let mut two = serve_on(&port);
    assert_eq!(one.addr, two.addr);
    let addr: SocketAddr = one.addr;

    // The kernel spreads connections over the two listeners by their addresses: with 40
    // clients, both get some unless something is wrong (chance 2 in 2^40).
    let mut clients = Vec::new();
    for i in 0..40 {
        let mut client = connect(addr);
        let msg = format!("client {i}\n");
        assert_eq!(round_trip(&mut client, msg.as_bytes()), msg.as_bytes());
        clients.push(client);
    }
    let (a, b) = (total_sessions(&mut one), total_sessions(&mut two));
    assert_eq!(a + b, 40, "one={a} two={b}");
    assert!(a > 0 && b > 0, "one={a} two={b}");

    // Without --reuse-port the port is taken.
    assert_serve_refuses(&["--port", &port], "cannot listen on");
    // One stops while the other still listens on the port: its acceptor must stop at once
    // (not be woken through a connection the kernel may give to the other), and both exit 0.
    for server in [&mut one, &mut two] {
        server.type_line("quit");
        assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
        let stderr = server.stderr_lines().join("\n");
        assert!(!stderr.contains("did not stop"), "{stderr}");
        assert!(!stderr.contains("deadline"), "{stderr}");
    }
    for client in &mut clients {
        assert_eq!(read_to_close(client), b"quit\n");
    }
}
