//! `tcpool bench --udp` against real datagram servers on free loopback ports: `tcpool serve
//! --udp`, memcached's UDP port, dnsmasq, and small Python echoes here that drop, double,
//! swap or stamp datagrams in ways the report must count exactly.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use serde_json::Value;

use crate::bench::External;
use crate::support::*;

/// Runs `tcpool bench --udp --json ARGS...`; its exit code and report, decoded by serde_json.
pub(crate) fn bench_udp(args: &[&str]) -> (Option<i32>, Value) {
    let mut command = Command::new(tcpool_bin());
    command
        .args(["bench", "--udp", "--json", "--threads", "2"])
        .args(args)
        .env("RUST_LOG", "warn");
    let done = run_to_end(command, Duration::from_secs(60));
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

pub(crate) fn n(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count: {report}"))
}

/// The report's round-trip histogram, decoded by the hdrhistogram crate itself.
fn histogram(report: &Value) -> Histogram<u64> {
    let text = report["rtt_histogram"].as_str().expect("a histogram");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64");
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .expect("an HdrHistogram")
}

/// Nothing lost, doubled, reordered, late or wrong.
fn assert_clean(code: Option<i32>, r: &Value, datagrams: u64) {
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(n(r, "sent"), datagrams, "{r}");
    assert_eq!(n(r, "answered"), datagrams, "{r}");
    assert_eq!(n(r, "datagrams_received"), datagrams, "{r}");
    for key in [
        "lost",
        "late",
        "duplicates",
        "corrupt",
        "foreign",
        "send_errors",
        "refused",
        "unresolved",
        "skipped",
    ] {
        assert_eq!(n(r, key), 0, "{key}: {r}");
    }
}

#[test]
fn bench_udp_against_serve_answers_every_datagram_and_the_numbers_add_up() {
    let server = Binary::serve(&["--udp"]);
    server.wait_stderr("the udp line", |l| l.contains("udp echo on"));
    let target = server.addr.to_string();
    let began = Instant::now();
    let (code, r) = bench_udp(&[
        &target,
        "-c",
        "4",
        "-n",
        "2000",
        "--pipeline",
        "4",
        "-s",
        "100",
    ]);
    let wall = began.elapsed();
    assert_clean(code, &r, 2000);
    assert_eq!(r["transport"], "udp");
    assert_eq!(n(&r, "bytes_sent"), 2000 * 100, "{r}");
    assert_eq!(n(&r, "bytes_received"), 2000 * 100, "{r}");
    // serve --udp without a stamp: the loss cannot be split.
    assert!(
        r["request_loss"].is_null() && r["reply_loss"].is_null(),
        "{r}"
    );
    // The histogram holds one round trip per answer, and none longer than the whole run.
    let h = histogram(&r);
    assert_eq!(h.len(), 2000);
    let wall_us = wall.as_micros() as u64;
    let p = &r["rtt_us"];
    assert_eq!(p["max"].as_u64(), Some(h.max()), "{r}");
    assert_eq!(p["p50"].as_u64(), Some(h.value_at_quantile(0.5)), "{r}");
    assert!(h.min() >= 1 && h.max() <= wall_us, "{} {wall_us}", h.max());
    let (p50, p99) = (n(p, "p50"), n(p, "p99"));
    assert!(
        n(p, "min") <= p50 && p50 <= p99 && p99 <= n(p, "max"),
        "{r}"
    );
    // Every answer is in exactly one second of the timeline.
    let timeline: u64 = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| n(s, "messages"))
        .sum();
    assert_eq!(timeline, 2000, "{r}");
    // Each second's jitter, a mean of RFC 3550 estimates, is bounded as the run's is: an
    // estimate never exceeds the largest |D| before it.
    let max_delta = n(&r["jitter_delta_us"], "max") as f64 + 1.0;
    for second in r["timeline"].as_array().unwrap() {
        if n(second, "messages") > 1 {
            let j = second["jitter_us"]
                .as_f64()
                .unwrap_or_else(|| panic!("{second}"));
            assert!((0.0..=max_delta).contains(&j), "{second} {max_delta}");
        }
    }
    // Jitter: an average of |D|s, so never above the largest.
    let jitter = r["jitter_us"].as_f64().unwrap();
    assert!(
        jitter >= 0.0 && jitter <= n(&r["jitter_delta_us"], "max") as f64 + 1.0,
        "{r}"
    );
}

#[test]
fn bench_udp_open_loop_uses_every_slot_of_its_schedule_once() {
    let server = Binary::serve(&["--udp"]);
    server.wait_stderr("the udp line", |l| l.contains("udp echo on"));
    let target = server.addr.to_string();
    // 200 a second for one second over two sockets: 100 slots each, 10 ms apart.
    let (code, r) = bench_udp(&[&target, "-c", "2", "--rate", "200", "-d", "1s"]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(n(&r, "sent") + n(&r, "skipped"), 200, "{r}");
    assert_eq!(n(&r, "answered"), n(&r, "sent"), "{r}");
    assert_eq!(n(&r, "lost"), 0, "{r}");
    assert_eq!(r["rate"].as_f64(), Some(200.0), "{r}");
}

/// A UDP echo in Python, behaving as `mode` says; it prints its port first.
const PY_ECHO: &str = r#"
import socket, struct, sys, threading
mode = sys.argv[1]
v6 = len(sys.argv) > 2
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("::1" if v6 else "127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
n = 0
counts = {}
held = None
while True:
    data, peer = s.recvfrom(65535)
    n += 1
    if mode == "drop10":
        if n % 10 != 0:
            s.sendto(data, peer)
    elif mode == "dup5":
        s.sendto(data, peer)
        if n % 5 == 0:
            s.sendto(data, peer)
    elif mode == "swap":
        if held is None:
            held = (data, peer)
        else:
            s.sendto(data, peer)
            s.sendto(held[0], held[1])
            held = None
    elif mode == "echo":
        s.sendto(data, peer)
    elif mode == "late3":
        if n in (10, 20, 30):
            threading.Timer(0.4, s.sendto, (data, peer)).start()
        else:
            s.sendto(data, peer)
    elif mode == "corrupt10":
        if n % 10 == 0:
            data = data[:-1] + bytes([data[-1] ^ 1])
        s.sendto(data, peer)
    elif mode in ("stamp-request", "stamp-reply"):
        if mode == "stamp-request" and n % 10 == 0:
            continue
        counts[peer] = counts.get(peer, 0) + 1
        if mode == "stamp-reply" and n % 10 == 0:
            continue
        s.sendto(struct.pack(">Q", counts[peer]) + data[8:], peer)
"#;

/// Starts [`PY_ECHO`] in `mode` on 127.0.0.1; the guard and its address.
fn py_echo(mode: &str) -> (External, String) {
    py_echo_on(mode, false)
}

/// Starts [`PY_ECHO`] in `mode`, on ::1 if `v6`; the guard and its address.
fn py_echo_on(mode: &str, v6: bool) -> (External, String) {
    let mut child = Command::new("python3")
        .args(["-c", PY_ECHO, mode])
        .args(v6.then_some("6"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 (scripts/test.sh installs it)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the echo's port");
    let host = if v6 { "[::1]" } else { "127.0.0.1" };
    (External(child), format!("{host}:{port}"))
}

#[test]
fn bench_udp_over_ipv6_gets_every_datagram_back() {
    let (_echo, target) = py_echo_on("echo", true);
    let (code, r) = bench_udp(&[&target, "-c", "3", "-n", "300", "--pipeline", "2"]);
    assert_clean(code, &r, 300);
    assert_eq!(r["target"], target, "{r}");
}

#[test]
fn an_echo_that_drops_every_tenth_datagram_shows_ten_percent_loss() {
    let (_echo, target) = py_echo("drop10");
    let (code, r) = bench_udp(&[&target, "-c", "2", "-n", "100", "--reply-timeout", "300ms"]);
    assert_eq!(code, Some(1), "loss is a failed run: {r}");
    assert_eq!(n(&r, "sent"), 100, "{r}");
    assert_eq!(n(&r, "lost"), 10, "{r}");
    assert_eq!(n(&r, "answered"), 90, "{r}");
    assert_eq!(r["loss_ratio"].as_f64(), Some(0.1), "{r}");
    assert_eq!(n(&r, "unattributed_loss"), 10, "{r}");
    let lost_by_second: u64 = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| n(s, "errors"))
        .sum();
    assert_eq!(lost_by_second, 10, "{r}");
}

#[test]
fn late_and_corrupt_replies_are_counted_apart_from_the_answers() {
    // The 10th, 20th and 30th replies 400 ms late against a 200 ms timeout: lost, then
    // late. Open loop, 50 ms apart for 2.5 s: the last late one comes long before the end.
    let (_echo, target) = py_echo("late3");
    let (code, r) = bench_udp(&[
        &target,
        "-c",
        "1",
        "-n",
        "50",
        "--rate",
        "20",
        "--reply-timeout",
        "200ms",
    ]);
    assert_eq!(code, Some(1), "{r}");
    assert_eq!(n(&r, "sent") + n(&r, "skipped"), 50, "{r}");
    assert_eq!(n(&r, "lost"), 3, "{r}");
    assert_eq!(n(&r, "late"), 3, "{r}");
    assert_eq!(n(&r, "answered"), n(&r, "sent") - 3, "{r}");
    // Every tenth reply with its last byte flipped: matched, and wrong.
    let (_echo, target) = py_echo("corrupt10");
    let (code, r) = bench_udp(&[&target, "-c", "1", "-n", "100"]);
    assert_eq!(code, Some(1), "{r}");
    assert_eq!(n(&r, "corrupt"), 10, "{r}");
    assert_eq!(n(&r, "answered"), 90, "{r}");
    assert_eq!(n(&r, "lost"), 0, "{r}");
}

#[test]
fn an_echo_that_answers_every_fifth_datagram_twice_shows_the_duplicates() {
    let (_echo, target) = py_echo("dup5");
    // 99, so that the last doubled reply (the 95th) comes well before the run ends.
    let (code, r) = bench_udp(&[&target, "-c", "1", "-n", "99"]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(n(&r, "answered"), 99, "{r}");
    assert_eq!(n(&r, "duplicates"), 19, "{r}");
    assert_eq!(n(&r, "datagrams_received"), 118, "{r}");
    assert_eq!(n(&r, "lost"), 0, "{r}");
}

#[test]
fn an_echo_that_swaps_pairs_shows_one_reordered_reply_a_pair() {
    let (_echo, target) = py_echo("swap");
    // Two out at once, so that each pair reaches the echo before either is answered.
    let (code, r) = bench_udp(&[&target, "-c", "1", "-n", "100", "--pipeline", "2"]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(n(&r, "answered"), 100, "{r}");
    assert_eq!(n(&r, "reordered"), 50, "{r}");
    assert_eq!(n(&r, "duplicates"), 0, "{r}");
}

#[test]
fn the_stamp_tells_requests_that_never_arrived_from_replies_that_never_came() {
    // 101 datagrams, every tenth arrival dropped: 10 lost, the last one answered, so every
    // loss is before the last stamp.
    let (_echo, target) = py_echo("stamp-request");
    let (_, r) = bench_udp(&[&target, "-c", "1", "-n", "101", "--reply-timeout", "200ms"]);
    assert_eq!(n(&r, "lost"), 10, "{r}");
    assert_eq!(n(&r, "stamped_replies"), 91, "{r}");
    assert_eq!(r["request_loss"].as_u64(), Some(10), "{r}");
    assert_eq!(r["reply_loss"].as_u64(), Some(0), "{r}");
    assert_eq!(n(&r, "unattributed_loss"), 0, "{r}");
    assert_eq!(n(&r, "corrupt"), 0, "the stamp slot is not checked: {r}");

    let (_echo, target) = py_echo("stamp-reply");
    let (_, r) = bench_udp(&[&target, "-c", "1", "-n", "101", "--reply-timeout", "200ms"]);
    assert_eq!(n(&r, "lost"), 10, "{r}");
    assert_eq!(r["request_loss"].as_u64(), Some(0), "{r}");
    assert_eq!(r["reply_loss"].as_u64(), Some(10), "{r}");
}

/// A UDP port that was free a moment ago.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// dnsmasq answering `bench.test` on a free port of 127.0.0.1, and that port. It listens on
/// TCP too, and a port free for UDP may be taken for TCP by another test's server: dnsmasq
/// then exits at once, and another port is tried.
fn start_dnsmasq() -> (u16, External) {
    for _ in 0..10 {
        let port = free_udp_port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut child = Command::new(dnsmasq())
            .args([
                "--no-daemon",
                &format!("--port={port}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--address=/bench.test/127.0.0.1",
                "--conf-file=/dev/null",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (scripts/test.sh installs dnsmasq-base)");
        std::thread::sleep(Duration::from_millis(200));
        if child.try_wait().unwrap().is_none() {
            return (port, External(child));
        }
    }
    panic!("dnsmasq exited at once on 10 free ports in a row");
}

/// Sends `request` to 127.0.0.1:`port` until a reply comes (the server may still be
/// starting); the reply.
fn first_reply(port: u16, request: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = [0u8; 1500];
    loop {
        let _ = socket.send(request);
        if let Ok(n) = socket.recv(&mut buf) {
            return buf[..n].to_vec();
        }
        assert!(Instant::now() < deadline, "no reply on UDP port {port}");
    }
}

/// `bytes` written with the `\xHH` escapes of --send and --expect.
fn escaped(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\x{b:02x}")).collect()
}

#[test]
fn memcached_udp_answers_every_get_matched_by_its_request_id() {
    let port = free_udp_port();
    let mut command = Command::new("memcached");
    command.args(["-U", &port.to_string(), "-p", "0", "-l", "127.0.0.1"]);
    if Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
    {
        command.args(["-u", "root"]);
    }
    let _memcached = External(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("memcached (scripts/test.sh installs it)"),
    );
    // The UDP frame header: request id, sequence 0, 1 datagram, reserved; then the command.
    let header = b"\x00\x07\x00\x00\x00\x01\x00\x00";
    let reply = first_reply(port, &[&header[..], b"get k\r\n"].concat());
    assert_eq!(reply, [&header[..], b"END\r\n"].concat());
    let (code, r) = bench_udp(&[
        &port.to_string(),
        "-c",
        "2",
        "-n",
        "400",
        "--pipeline",
        "2",
        "--send",
        r"\x00\x00\x00\x00\x00\x01\x00\x00get k\r\n",
        "--expect",
        r"\x00\x00\x00\x00\x00\x01\x00\x00END\r\n",
        "--id-field",
        "0:2",
    ]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(n(&r, "answered"), 400, "{r}");
    for key in ["lost", "corrupt", "duplicates", "foreign"] {
        assert_eq!(n(&r, key), 0, "{key}: {r}");
    }
    assert_eq!(r["id_field"], "0:2", "{r}");
    assert_eq!(r["reply"], "exact", "{r}");
    assert_eq!(
        r["request"], r"\x00\x00\x00\x00\x00\x01\x00\x00get k\r\n",
        "{r}"
    );
}

/// dnsmasq on PATH, or where Debian puts it.
fn dnsmasq() -> String {
    let on_path = Command::new("dnsmasq")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if on_path {
        "dnsmasq".into()
    } else {
        "/usr/sbin/dnsmasq".into()
    }
}

#[test]
fn dnsmasq_answers_every_query_matched_by_its_dns_id() {
    let (port, _dnsmasq) = start_dnsmasq();
    // A query for bench.test A, recursion desired, id 0x0102.
    let query =
        b"\x01\x02\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05bench\x04test\x00\x00\x01\x00\x01";
    let reply = first_reply(port, query);
    assert_eq!(&reply[..2], b"\x01\x02", "the id comes back");
    assert_eq!(&reply[6..8], b"\x00\x01", "one answer: {reply:?}");
    assert!(reply.ends_with(&[127, 0, 0, 1]), "{reply:?}");
    // Every reply must be that one, with its own id.
    let (code, r) = bench_udp(&[
        &port.to_string(),
        "-c",
        "2",
        "-n",
        "300",
        "--send",
        &escaped(query),
        "--expect",
        &escaped(&reply),
        "--id-field",
        "0:2",
    ]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(n(&r, "answered"), 300, "{r}");
    for key in ["lost", "corrupt", "duplicates", "foreign"] {
        assert_eq!(n(&r, key), 0, "{key}: {r}");
    }
    assert_eq!(n(&r, "bytes_received"), 300 * reply.len() as u64, "{r}");
}

#[test]
fn bench_udp_refuses_what_cannot_work() {
    for (args, message) in [
        (&["-s", "8"][..], "16 to 65507 bytes"),
        (&["--send", "x"][..], "--id-field"),
        (&["--id-field", "0:2"][..], "--id-field goes with --send"),
        (&["--id-field", "0:9", "--send", "x"][..], "1 to 8 bytes"),
        // The TCP reply timeout is not the datagrams' one (--reply-timeout).
        (&["--timeout", "1s"][..], "cannot be used with '--timeout"),
    ] {
        let out = Command::new(tcpool_bin())
            .args(["bench", "--udp", "-n", "1", "127.0.0.1:9"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn a_port_where_nothing_listens_refuses_and_every_datagram_is_lost() {
    let port = free_udp_port().to_string();
    let (code, r) = bench_udp(&[&port, "-c", "1", "-n", "3", "--reply-timeout", "100ms"]);
    assert_eq!(code, Some(1), "{r}");
    assert_eq!(n(&r, "sent"), 3, "{r}");
    assert_eq!(n(&r, "lost"), 3, "{r}");
    assert_eq!(n(&r, "answered"), 0, "{r}");
    // Linux reports each ICMP port unreachable on the connected socket.
    assert!(n(&r, "refused") >= 1, "{r}");
    let first = r["first_error"].as_str().unwrap_or_default();
    assert!(first.contains("refused"), "{r}");
}
