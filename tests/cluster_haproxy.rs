//! Two chat nodes of one cluster behind a real HAProxy (round robin, PROXY v2), the way a
//! cluster is deployed: clients that land on different nodes talk to each other, and each
//! node sees its own clients' addresses, not HAProxy's.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use crate::cluster::Nats;
use crate::support::*;

/// A process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_quiet(command: &mut Command, what: &str) -> Killed {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} (scripts/test.sh installs it): {e}"));
    Killed(child)
}

/// HAProxy on a free loopback port, balancing round robin over `backends` with PROXY v2.
fn haproxy(backends: &[SocketAddr], config_path: &std::path::Path) -> (Killed, SocketAddr) {
    let port = free_port();
    let mut config = format!(
        "global\n  maxconn 256\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend front\n  bind 127.0.0.1:{port}\n  default_backend back\n\
         backend back\n  balance roundrobin\n"
    );
    for (i, backend) in backends.iter().enumerate() {
        config.push_str(&format!("  server node{i} {backend} send-proxy-v2\n"));
    }
    std::fs::write(config_path, config).unwrap();
    let child = spawn_quiet(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(config_path),
        "haproxy",
    );
    wait_listening(port);
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The second field of the `/list` row of session `#1`: the client's address as the node
/// sees it.
fn first_client_seen_by(node: &mut Binary) -> String {
    let before = node.stdout_lines().len();
    node.type_line("/list");
    let row = node.wait_stdout("the client's row in /list", |l| {
        l.trim_start().starts_with("#1 ")
    });
    assert!(node.stdout_lines().len() > before);
    row.split_whitespace().nth(1).unwrap_or_default().to_owned()
}

#[test]
fn clients_landing_on_different_nodes_behind_haproxy_talk_to_each_other() {
    let nats = Nats::start();
    let url = nats.url();
    let start = |name: &str| {
        let node = Binary::serve(&[
            "--mode",
            "chat",
            "--proxy-protocol",
            "v2",
            "--cluster",
            &url,
            "--node",
            name,
        ]);
        node.wait_stderr("the link up", |l| l.contains("cluster link up"));
        node
    };
    let mut one = start("one");
    let mut two = start("two");
    let dir = TempDir::new("cluster-haproxy");
    let (_haproxy, front) = haproxy(&[one.addr, two.addr], &dir.path.join("haproxy.cfg"));

    // Round robin: the first client lands on one node, the second on the other.
    let mut ann = chatter(front);
    let mut bob = chatter(front);
    let ann_port = ann.local_addr().unwrap().to_string();
    let bob_port = bob.local_addr().unwrap().to_string();
    let (seen_one, seen_two) = (
        first_client_seen_by(&mut one),
        first_client_seen_by(&mut two),
    );
    // Each node names its own client's address (PROXY v2), and they are different clients.
    let mut seen = [seen_one.clone(), seen_two.clone()];
    seen.sort();
    let mut want = [ann_port.clone(), bob_port.clone()];
    want.sort();
    assert_eq!(seen, want, "node one saw {seen_one}, node two {seen_two}");
    let ann_node = if seen_one == ann_port { "one" } else { "two" };
    let bob_node = if ann_node == "one" { "two" } else { "one" };

    // Ann hears Bob join from the other node (once the link has carried it).
    let joined = format!("* #1@{bob_node} joined\n");
    expect_bytes(&mut ann, joined.as_bytes());

    ann.write_all(b"/nick ann\n").unwrap();
    expect_bytes(&mut ann, b"* you are now ann\n");
    // Ann's join may reach Bob's node after Bob joined it, or before: either is right.
    let mut next = String::from_utf8(read_line(&mut bob)).unwrap();
    if next == format!("* #1@{ann_node} joined\n") {
        next = String::from_utf8(read_line(&mut bob)).unwrap();
    }
    assert_eq!(next, format!("* #1@{ann_node} is now ann\n"));
    ann.write_all(b"hello across\n").unwrap();
    expect_bytes(&mut bob, b"<ann> hello across\n");
    bob.write_all(b"hello back\n").unwrap();
    expect_bytes(&mut ann, format!("<#1@{bob_node}> hello back\n").as_bytes());
    expect_silence(&mut bob, std::time::Duration::from_millis(200));
}
