//! `tcpool bench` against real request/response servers: `redis-server` and `memcached` on
//! free loopback ports, and small line and binary protocols served here. Requests with
//! placeholders, each way a reply can end, the first message, and the flags every protocol
//! shares (pipeline, rate, -n, warm-up, connect rate).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use crate::bench::{BrokenServer, External, bench};
use crate::support::*;

/// A `redis-server` on a free loopback port, with nothing saved to disk.
pub(crate) fn redis() -> (External, u16) {
    redis_with(&[])
}

/// A `redis-server` as [`redis`], with more arguments.
pub(crate) fn redis_with(extra: &[&str]) -> (External, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is needed: scripts/test.sh installs it");
    let guard = External(child);
    wait_listening(port);
    (guard, port)
}

/// A `memcached` on a free loopback port (TCP only).
pub(crate) fn memcached() -> (External, u16) {
    memcached_with(&[])
}

/// A `memcached` as [`memcached`], with more arguments.
pub(crate) fn memcached_with(extra: &[&str]) -> (External, u16) {
    let port = free_port();
    let mut command = Command::new("memcached");
    command.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"]);
    command.args(extra);
    // As root, memcached wants to be told which user to run as.
    if nix_is_root() {
        command.args(["-u", "root"]);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("memcached is needed: scripts/test.sh installs it");
    let guard = External(child);
    wait_listening(port);
    (guard, port)
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Sends one command to a Redis server and returns its one-line reply.
pub(crate) fn redis_command(port: u16, command: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(command.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

#[test]
fn redis_ping_is_answered_pong_with_any_pipeline() {
    let (_redis, port) = redis();
    for pipeline in ["1", "16"] {
        let run = bench(
            port,
            &[
                "-c",
                "4",
                "-n",
                "4000",
                "--pipeline",
                pipeline,
                "--send",
                r"PING\r\n",
                "--expect",
                r"+PONG\r\n",
            ],
        );
        assert_eq!(run.code, 0, "{}", run.report);
        assert_eq!(run.u64("messages"), 4000, "{}", run.report);
        assert_eq!(run.u64("bytes"), 4000 * 7, "{}", run.report);
        assert_eq!(run.u64("errors"), 0);
        assert_eq!(run.report["request"], r"PING\r\n");
    }
}

#[test]
fn redis_set_with_placeholders_writes_one_key_per_message() {
    let (_redis, port) = redis();
    let run = bench(
        port,
        &[
            "-c",
            "5",
            "-n",
            "1000",
            "--send",
            r"SET key:{conn}:{seq} value\r\n",
            "--expect",
            r"+OK\r\n",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(run.u64("messages"), 1000);
    // 5 connections x 200 messages, every key distinct: {conn} 0-4 and {seq} 0-199.
    assert_eq!(redis_command(port, "DBSIZE\r\n"), ":1000\r\n");
    assert_eq!(redis_command(port, "GET key:4:199\r\n"), "$5\r\n");
    assert_eq!(redis_command(port, "EXISTS key:5:0\r\n"), ":0\r\n");
}

#[test]
fn a_wrong_expect_is_a_mismatch_showing_both_replies() {
    let (_redis, port) = redis();
    let run = bench(
        port,
        &[
            "-c",
            "3",
            "-d",
            "1",
            "--send",
            r"PING\r\n",
            "--expect",
            r"+PANG\r\n",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("mismatch"), 3, "{}", run.report);
    let first = &run.report["first_errors"]["mismatch"];
    assert_eq!(first["expected"], r"+PANG\r\n", "{first}");
    assert_eq!(first["received"], r"+PONG\r\n", "{first}");
    assert_eq!(first["offset"], 0);
}

#[test]
fn redis_first_message_selects_a_database_before_the_load() {
    let (_redis, port) = redis();
    let run = bench(
        port,
        &[
            "-c",
            "2",
            "-n",
            "100",
            "--first-message",
            r"SELECT 3\r\n",
            "--send",
            r"SET k{conn}:{seq} v\r\n",
            "--expect",
            r"+OK\r\n",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(run.u64("messages"), 100, "{}", run.report);
    // The keys went to database 3, and the SELECT's own +OK was not counted.
    assert_eq!(redis_command(port, "DBSIZE\r\n"), ":0\r\n");
    assert_eq!(redis_command(port, "SELECT 3\r\nDBSIZE\r\n"), "+OK\r\n");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(b"SELECT 3\r\nDBSIZE\r\n").unwrap();
    assert_eq!(read_n(&mut stream, 5 + 6), b"+OK\r\n:100\r\n");
}

#[test]
fn memcached_set_then_get_until_end() {
    let (_mc, port) = memcached();
    let set = bench(
        port,
        &[
            "-c",
            "4",
            "-n",
            "800",
            "--pipeline",
            "4",
            "--send",
            r"set key{conn} 0 0 5\r\nhello\r\n",
            "--expect",
            r"STORED\r\n",
        ],
    );
    assert_eq!(set.code, 0, "{}", set.report);
    assert_eq!(set.u64("messages"), 800);
    // A get's reply is VALUE ... END: --until finds its end whatever the value.
    let get = bench(
        port,
        &[
            "-c",
            "4",
            "-n",
            "800",
            "--send",
            r"get key{conn}\r\n",
            "--until",
            r"END\r\n",
        ],
    );
    assert_eq!(get.code, 0, "{}", get.report);
    assert_eq!(get.u64("messages"), 800);
    assert_eq!(
        get.u64("bytes"),
        800 * "VALUE key0 0 5\r\nhello\r\nEND\r\n".len() as u64
    );
    // The same reply, exactly.
    let exact = bench(
        port,
        &[
            "-c",
            "2",
            "-n",
            "100",
            "--send",
            r"get key{conn}\r\n",
            "--expect",
            r"VALUE key{conn} 0 5\r\nhello\r\nEND\r\n",
        ],
    );
    assert_eq!(exact.code, 0, "{}", exact.report);
}

/// A line protocol: each line `X` is answered `ok X`.
fn ok_line(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if stream.write_all(format!("ok {line}").as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

#[test]
fn a_line_protocol_is_checked_message_by_message() {
    let server = BrokenServer::start(ok_line);
    // Every request differs, and so does every expected reply.
    let run = bench(
        server.addr,
        &[
            "-c",
            "3",
            "-n",
            "300",
            "--send",
            r"{conn}:{seq}\n",
            "--expect",
            r"ok {conn}:{seq}\n",
            "--rate",
            "2000",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(run.u64("messages"), 300);
    // Expecting the wrong connection's reply fails at its first byte that differs.
    let wrong = bench(
        server.addr,
        &[
            "-c",
            "1",
            "-n",
            "10",
            "--send",
            r"{conn}:{seq}\n",
            "--expect",
            r"ok 7:{seq}\n",
        ],
    );
    assert_eq!(wrong.code, 1, "{}", wrong.report);
    let first = &wrong.report["first_errors"]["mismatch"];
    assert_eq!(first["received"], r"ok 0:0\n", "{first}");
    let until = bench(
        server.addr,
        &[
            "-c", "2", "-d", "0.5", "--warmup", "0.2", "--send", r"{seq}\n", "--until", r"\n",
        ],
    );
    assert_eq!(until.code, 0, "{}", until.report);
    assert!(until.u64("messages") > 0);
}

/// A binary protocol: every 4-byte request is answered with 8 bytes.
fn eight_for_four(mut stream: TcpStream) {
    let mut request = [0u8; 4];
    while stream.read_exact(&mut request).is_ok() {
        let mut reply = [0u8; 8];
        reply[..4].copy_from_slice(&request);
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}

#[test]
fn reply_size_counts_bytes_of_a_binary_protocol() {
    let server = BrokenServer::start(eight_for_four);
    let dir = std::env::temp_dir().join(format!("tcpool-send-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let request = dir.join("request.bin");
    std::fs::write(&request, [0u8, 0xff, b'\n', b'{']).unwrap();
    let run = bench(
        server.addr,
        &[
            "-c",
            "2",
            "-n",
            "500",
            "--pipeline",
            "8",
            "--send-file",
            request.to_str().unwrap(),
            "--reply-size",
            "8",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(run.u64("messages"), 500);
    assert_eq!(run.u64("bytes"), 500 * 8);
    assert_eq!(run.report["request"], r"\x00\xff\n{");
}

#[test]
fn connect_rate_spaces_the_connects_and_measures_after_the_last() {
    let server = crate::support::TestServer::start(tcpool::Config::default());
    let run = bench(
        server.addr,
        &["-c", "5", "-d", "0.5", "--connect-rate", "10"],
    );
    run.assert_clean();
    // Five connects at 10/s take about 0.4 s: reported as the connect phase, not measured.
    let connect_s = run.report["connect_s"].as_f64().unwrap();
    assert!(connect_s >= 0.35, "{}", run.report);
    let duration_s = run.report["duration_s"].as_f64().unwrap();
    assert!((duration_s - 0.5).abs() < 0.05, "{}", run.report);
}

#[test]
fn send_without_a_reply_rule_is_a_usage_error() {
    for args in [
        &["--send", "PING"][..],
        &["--expect", "x"],
        &["--send", "x", "--expect", "x", "--until", "y"],
        &["--send", "x", "-s", "10", "--until", "y"],
        &["--send", r"\q", "--until", "y"],
    ] {
        let out = Command::new(tcpool_bin())
            .arg("bench")
            .arg("127.0.0.1:9")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn a_silent_server_times_out_for_any_protocol() {
    let server = BrokenServer::start(crate::bench::swallow);
    let run = bench(
        server.addr,
        &[
            "-c",
            "2",
            "-n",
            "10",
            "--send",
            r"GET\r\n",
            "--until",
            r"\r\n",
            "--timeout",
            "300ms",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("timeout"), 2, "{}", run.report);
    let first = &run.report["first_errors"]["timeout"];
    assert_eq!(first["message"], "no reply within 300ms", "{first}");
    // A first message that is never answered times out too, before any load.
    let run = bench(
        server.addr,
        &[
            "-c",
            "1",
            "-d",
            "1",
            "--first-message",
            r"HELLO\n",
            "--timeout",
            "300ms",
        ],
    );
    assert_eq!(run.kind("timeout"), 1, "{}", run.report);
    assert_eq!(run.u64("sent"), 0, "{}", run.report);
}
