//! `--cluster-history`: what an outage loses comes back. Lines typed while the broker is away
//! are held and sent when it returns; lines other nodes sent while one node's link alone was
//! down are fetched from the broker's JetStream stream when it comes back. A real
//! `nats-server -js` on a free loopback port, and `socat` as the one node's way to it, cut
//! and restored.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use crate::cluster::{cluster_report, count};
use crate::support::*;

/// A process started in a process group of its own, the whole group killed on drop.
struct Group(Child);

impl Group {
    fn spawn(command: &mut Command, what: &str) -> Group {
        use std::os::unix::process::CommandExt as _;
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} (scripts/test.sh installs it): {e}"));
        Group(child)
    }

    fn kill(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(-i32::try_from(self.0.id()).unwrap());
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `nats-server` with JetStream, its store in `dir`, on `port`.
fn jetstream_broker(port: u16, dir: &TempDir) -> Group {
    let broker = Group::spawn(
        Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir.path),
        "nats-server",
    );
    wait_listening(port);
    broker
}

fn history_node(port: u16, name: &str) -> Binary {
    let url = format!("nats://127.0.0.1:{port}");
    let node = Binary::serve(&[
        "--mode",
        "chat",
        "--cluster",
        &url,
        "--node",
        name,
        "--cluster-history",
        "100",
    ]);
    node.wait_stderr("the link up", |l| l.contains("cluster link up"));
    node
}

/// Waits until `node` has logged `what` `n` times.
fn logged(node: &Binary, what: &str, n: usize) {
    wait_until(&format!("{n} x {what:?}"), || {
        node.stderr_lines()
            .iter()
            .filter(|l| l.contains(what))
            .count()
            >= n
    });
}

fn say(stream: &mut TcpStream, line: &str) {
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// The number after `name ` in the `/cluster` report of `node`.
fn cluster_count(node: &mut Binary, name: &str) -> u64 {
    count(&cluster_report(node), name)
}

#[test]
fn lines_typed_while_the_broker_is_away_arrive_once_it_is_back_in_order() {
    let port = free_port();
    let store = TempDir::new("nats-js");
    let mut broker = jetstream_broker(port, &store);
    let mut a = history_node(port, "a");
    let b = history_node(port, "b");
    let mut b1 = chatter(b.addr);
    let mut a1 = chatter(a.addr);
    expect_bytes(&mut b1, b"* #1@a joined\n");

    broker.kill();
    logged(&a, "cluster link down", 1);
    for line in ["while away 1", "while away 2", "while away 3"] {
        say(&mut a1, line);
    }
    wait_until("three lines held", || cluster_count(&mut a, "held") == 3);

    let _broker = jetstream_broker(port, &store);
    logged(&a, "line(s) held while the link was down sent", 1);
    for line in ["while away 1", "while away 2", "while away 3"] {
        expect_bytes(&mut b1, format!("<#1@a> {line}\n").as_bytes());
    }
    say(&mut a1, "and after");
    expect_bytes(&mut b1, b"<#1@a> and after\n");
    assert_eq!(cluster_count(&mut a, "broker-down"), 0);
}

#[test]
fn a_node_whose_link_was_cut_fetches_what_the_others_said_meanwhile() {
    let port = free_port();
    let store = TempDir::new("nats-js");
    let _broker = jetstream_broker(port, &store);
    // Node b reaches the broker through socat, which the test cuts and restores.
    let relay_port = free_port();
    let relay = || {
        let relay = Group::spawn(
            Command::new("socat").args([
                format!("TCP-LISTEN:{relay_port},bind=127.0.0.1,reuseaddr,fork"),
                format!("TCP:127.0.0.1:{port}"),
            ]),
            "socat",
        );
        wait_listening(relay_port);
        relay
    };
    let mut cut = relay();
    let a = history_node(port, "a");
    let mut b = history_node(relay_port, "b");
    let mut b1 = chatter(b.addr);
    let mut a1 = chatter(a.addr);
    expect_bytes(&mut b1, b"* #1@a joined\n");
    say(&mut a1, "before the cut");
    expect_bytes(&mut b1, b"<#1@a> before the cut\n");

    cut.kill();
    logged(&b, "cluster link down", 1);
    for line in ["meanwhile 1", "meanwhile 2"] {
        say(&mut a1, line);
    }
    // The lines are in the stream before b is back.
    let _restored = relay();
    logged(
        &b,
        "line(s) the other nodes sent while the link was down fetched",
        1,
    );
    for line in ["meanwhile 1", "meanwhile 2"] {
        expect_bytes(&mut b1, format!("<#1@a> {line}\n").as_bytes());
    }
    // Fetched once: "before the cut" (inside the fetch's margin) is not shown again.
    say(&mut a1, "after");
    expect_bytes(&mut b1, b"<#1@a> after\n");
    assert_eq!(cluster_count(&mut b, "recovered"), 2);
    assert_eq!(cluster_count(&mut b, "duplicates"), 0);
}

#[test]
fn without_jetstream_on_the_broker_history_says_so_and_still_holds() {
    let port = free_port();
    let _broker = Group::spawn(
        Command::new("nats-server").args(["-a", "127.0.0.1", "-p", &port.to_string()]),
        "nats-server",
    );
    wait_listening(port);
    let a = history_node(port, "a");
    a.wait_stderr("the warning", |l| {
        l.contains("cluster history: no stream TCPOOL_tcpool") && l.contains("nats-server -js")
    });
    let b = history_node(port, "b");
    let mut b1 = chatter(b.addr);
    let mut a1 = chatter(a.addr);
    expect_bytes(&mut b1, b"* #1@a joined\n");
    say(&mut a1, "plain core NATS");
    expect_bytes(&mut b1, b"<#1@a> plain core NATS\n");
}
