//! `tcpool bench --chat` against real servers on free loopback ports: one `tcpool serve --mode
//! chat`, two nodes of a cluster through a real `nats-server`, `redis-server` pub/sub, and
//! small chat servers here that lose or repeat one line, which the report must catch.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bench::External;
use crate::support::*;

const SENDERS: u64 = 3;
const READERS: u64 = 5;
/// Lines per second per sender, for one second.
const RATE: u64 = 20;

/// Runs `tcpool bench --chat --json` with the test's counts over `targets`; its exit code and
/// report.
fn chat_bench(targets: &[SocketAddr], extra: &[&str]) -> (Option<i32>, Value) {
    let mut command = Command::new(tcpool_bin());
    command
        .args(["bench", "--chat", "--json", "-d", "1s", "--drain", "2s"])
        .args(["--senders", &SENDERS.to_string()])
        .args(["--readers", &READERS.to_string()])
        .args(["--rate", &RATE.to_string(), "--threads", "2"])
        .args(extra)
        .args(targets.iter().map(ToString::to_string))
        .env("RUST_LOG", "warn");
    let done = run_to_end(command, Duration::from_secs(30));
    let line = done
        .stdout
        .iter()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON report: {:?} {:?}", done.stdout, done.stderr));
    (
        done.code,
        serde_json::from_str(line).expect("a JSON report"),
    )
}

fn n(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key}: {report}"))
}

/// Every line reached every reader once, in order, and the report adds up.
fn assert_clean(code: Option<i32>, r: &Value) {
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(n(r, "senders_ready"), SENDERS, "{r}");
    assert_eq!(n(r, "readers_ready"), READERS, "{r}");
    assert_eq!(n(r, "lines_sent"), SENDERS * RATE, "{r}");
    assert_eq!(n(r, "lines_not_sent"), 0, "{r}");
    let expected = SENDERS * RATE * READERS;
    assert_eq!(n(r, "deliveries_expected"), expected, "{r}");
    assert_eq!(n(r, "delivered"), expected, "{r}");
    assert_eq!(
        n(r, "local_deliveries") + n(r, "cross_node_deliveries"),
        expected,
        "{r}"
    );
    for key in ["missing", "duplicates", "out_of_order", "foreign"] {
        assert_eq!(n(r, key), 0, "{key}: {r}");
    }
    assert!(r["errors"]["first"].is_null(), "{r}");
    assert!(n(&r["local_us"], "p50") <= n(&r["local_us"], "max"), "{r}");
}

#[test]
fn every_line_reaches_every_reader_of_one_chat_server() {
    let server = Binary::serve(&["--mode", "chat"]);
    let (code, r) = chat_bench(&[server.addr], &[]);
    assert_clean(code, &r);
    assert_eq!(n(&r, "cross_node_deliveries"), 0, "one target: {r}");
    assert_eq!(r["chat_protocol"], "chat");
}

/// A `nats-server` on a free loopback port, or `None` (the test says it is skipped).
fn nats() -> Option<(External, String)> {
    let port = free_port();
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        eprintln!("skipped: nats-server is not installed (scripts/test.sh installs it)");
        return None;
    };
    let guard = External(child);
    wait_listening(port);
    Some((guard, format!("nats://127.0.0.1:{port}")))
}

#[test]
fn every_line_reaches_every_reader_on_two_nodes_of_a_cluster() {
    let Some((_nats, url)) = nats() else { return };
    let nodes: Vec<Binary> = ["a", "b"]
        .iter()
        .map(|name| {
            let node = Binary::serve(&["--mode", "chat", "--cluster", &url, "--node", name]);
            node.wait_stderr("the link up", |l| l.contains("cluster link up"));
            node
        })
        .collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let (code, r) = chat_bench(&addrs, &[]);
    assert_clean(code, &r);
    // Senders 0 and 2 and readers 1 and 3 are on node a; the rest on b.
    assert!(n(&r, "local_deliveries") > 0, "{r}");
    assert!(n(&r, "cross_node_deliveries") > 0, "{r}");
}

#[test]
fn every_message_reaches_every_redis_subscriber() {
    if Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipped: redis-server is not installed (scripts/test.sh installs it)");
        return;
    }
    let (_redis, port) = crate::bench_protocols::redis();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (code, r) = chat_bench(&[addr], &["--chat-protocol", "redis"]);
    assert_clean(code, &r);
    assert_eq!(r["chat_protocol"], "redis");
}

/// What the fake chat server does wrong to the relayed line with this number (from 0).
#[derive(Clone, Copy)]
enum Fault {
    Drop(usize),
    Repeat(usize),
}

/// A chat server that relays `<NICK> line` to everyone else like tcpool's, and gets line
/// number `fault` wrong; it serves until `until`.
fn broken_chat(fault: Fault, until: Instant) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let members: Arc<Mutex<Vec<(usize, TcpStream)>>> = Arc::default();
    let relayed = Arc::new(Mutex::new(0usize));
    thread::spawn(move || {
        let mut next_id = 0;
        while Instant::now() < until {
            let Ok((stream, _)) = listener.accept() else {
                thread::sleep(Duration::from_millis(5));
                continue;
            };
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            next_id += 1;
            let id = next_id;
            let mut out = stream.try_clone().unwrap();
            writeln!(out, "* you are #{id}; somebody is here").unwrap();
            members
                .lock()
                .unwrap()
                .push((id, stream.try_clone().unwrap()));
            let (members, relayed) = (members.clone(), relayed.clone());
            thread::spawn(move || {
                let mut name = format!("#{id}");
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while Instant::now() < until {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(_) => continue,
                    }
                    let text = line.trim_end();
                    if let Some(nick) = text.strip_prefix("/nick ") {
                        name = nick.to_owned();
                        writeln!(out, "* you are now {name}").unwrap();
                        continue;
                    }
                    // One lock over numbering and relaying keeps each sender's order.
                    let mut count = relayed.lock().unwrap();
                    let times = match fault {
                        Fault::Drop(k) if *count == k => 0,
                        Fault::Repeat(k) if *count == k => 2,
                        _ => 1,
                    };
                    *count += 1;
                    for (other, stream) in members.lock().unwrap().iter_mut() {
                        for _ in 0..times {
                            if *other != id {
                                let _ = writeln!(stream, "<{name}> {text}");
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_line_the_server_loses_is_missing_for_every_reader() {
    let addr = broken_chat(Fault::Drop(7), Instant::now() + Duration::from_secs(20));
    let (code, r) = chat_bench(&[addr], &[]);
    assert_eq!(code, Some(1), "{r}");
    assert_eq!(n(&r, "lines_sent"), SENDERS * RATE, "{r}");
    assert_eq!(n(&r, "missing"), READERS, "{r}");
    assert_eq!(
        n(&r, "delivered") + READERS,
        n(&r, "deliveries_expected"),
        "{r}"
    );
    assert_eq!(n(&r, "duplicates"), 0, "{r}");
    assert_eq!(n(&r, "out_of_order"), 0, "{r}");
}

#[test]
fn a_line_the_server_repeats_is_a_duplicate_for_every_reader() {
    let addr = broken_chat(Fault::Repeat(11), Instant::now() + Duration::from_secs(20));
    let (code, r) = chat_bench(&[addr], &[]);
    assert_eq!(code, Some(1), "{r}");
    assert_eq!(n(&r, "duplicates"), READERS, "{r}");
    assert_eq!(n(&r, "missing"), 0, "{r}");
    assert_eq!(n(&r, "delivered"), n(&r, "deliveries_expected"), "{r}");
}

#[test]
fn two_chat_reports_merge_into_their_sum() {
    let server = Binary::serve(&["--mode", "chat"]);
    let dir = std::env::temp_dir().join(format!("tcpool-chat-merge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    let mut reports = Vec::new();
    for name in ["a.json", "b.json"] {
        let (code, r) = chat_bench(&[server.addr], &[]);
        assert_clean(code, &r);
        let path = dir.join(name);
        std::fs::write(&path, r.to_string()).unwrap();
        files.push(path);
        reports.push(r);
    }
    let mut command = Command::new(tcpool_bin());
    command.args(["bench", "merge", "--json"]).args(&files);
    let done = run_to_end(command, Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(done.code, Some(0), "{:?}", done.stderr);
    let merged: Value = serde_json::from_str(&done.stdout[0]).unwrap();
    for key in [
        "lines_sent",
        "delivered",
        "deliveries_expected",
        "local_deliveries",
    ] {
        assert_eq!(
            n(&merged, key),
            n(&reports[0], key) + n(&reports[1], key),
            "{key}: {merged}"
        );
    }
    assert_eq!(n(&merged, "generators"), 2);
    assert_eq!(n(&merged, "missing"), 0);
}
