//! `tcpool bench --reconnect-every` and `--tls-resume`: a new connection (and handshake) every
//! N messages, full and resumed handshakes counted apart. The counts are checked against a
//! server that is not tcpool: Python's `ssl` (OpenSSL) echo server below, which counts the
//! connections it accepted and the sessions it resumed, as OpenSSL reports them.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use serde_json::Value;

use crate::support::tcpool_bin;

/// An echo server in Python: TLS (OpenSSL) when given a certificate, plaintext otherwise.
/// Prints its port, serves each connection on a thread, and once its standard input closes
/// waits for them all and prints `connections N resumed M`.
const ECHO: &str = r#"
import socket, ssl, sys, threading
cert, key = (sys.argv[1], sys.argv[2]) if len(sys.argv) > 2 else (None, None)
ctx = None
if cert:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(512)
listener.settimeout(0.1)
print(listener.getsockname()[1], flush=True)
lock = threading.Lock()
counts = {"connections": 0, "resumed": 0}
threads = []
stop = threading.Event()

def serve(sock):
    sock.settimeout(10)
    try:
        if ctx:
            sock = ctx.wrap_socket(sock, server_side=True)
        with lock:
            counts["connections"] += 1
            if ctx and sock.session_reused:
                counts["resumed"] += 1
        while True:
            data = sock.recv(65536)
            if not data:
                break
            sock.sendall(data)
    except (OSError, ssl.SSLError):
        pass
    finally:
        sock.close()

def accept():
    while not stop.is_set():
        try:
            sock, _ = listener.accept()
        except socket.timeout:
            continue
        t = threading.Thread(target=serve, args=(sock,))
        t.start()
        threads.append(t)

acceptor = threading.Thread(target=accept)
acceptor.start()
sys.stdin.read()
stop.set()
acceptor.join()
for t in threads:
    t.join()
print("connections %d resumed %d" % (counts["connections"], counts["resumed"]), flush=True)
"#;

/// The Python echo server, killed on drop if not finished.
struct PyEcho {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<std::process::ChildStdout>,
    port: u16,
}

impl PyEcho {
    fn start(tls: Option<(&Path, &Path)>) -> PyEcho {
        let mut command = Command::new("python3");
        command.arg("-c").arg(ECHO);
        if let Some((cert, key)) = tls {
            command.arg(cert).arg(key);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (scripts/test.sh installs it)");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port = line.trim().parse().expect("the server's port");
        PyEcho {
            stdin: child.stdin.take(),
            child,
            out,
            port,
        }
    }

    /// Ends the server once its connections are done: (connections, resumed).
    fn counts(mut self) -> (u64, u64) {
        drop(self.stdin.take());
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"connections"), "{line}");
        (words[1].parse().unwrap(), words[3].parse().unwrap())
    }
}

impl Drop for PyEcho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory with `tcpool tls gen`'s certificates, removed on drop.
struct Certs(PathBuf);

impl Certs {
    fn new(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("tcpool-hs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        tcpool::tls::make::set(&dir).unwrap();
        Certs(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `tcpool bench --json` with `args` and returns its report.
fn bench(args: &[&str]) -> Value {
    let out = Command::new(tcpool_bin())
        .args(["bench", "--json", "--timeout", "10s"])
        .args(args)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report}");
    report
}

/// [`bench`] over TLS, verifying with `ca` as `localhost`.
fn bench_tls(ca: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--tls", "--tls-servername", "localhost", "--tls-ca"]);
    all.push(ca.to_str().unwrap());
    bench(&all)
}

#[test]
fn full_and_resumed_handshakes_are_counted_as_openssl_counts_them() {
    let certs = Certs::new("resume");
    let (cert, key, ca) = (
        certs.path("server.pem"),
        certs.path("server-key.pem"),
        certs.path("ca.pem"),
    );
    // 4 connections, 30 messages each, a new connection for every message.
    let runs = [("tickets", 116, 116), ("off", 0, 0), ("mix=0.5", 1, 115)];
    for (resume, least, most) in runs {
        let server = PyEcho::start(Some((&cert, &key)));
        let target = format!("127.0.0.1:{}", server.port);
        let report = bench_tls(
            &ca,
            &[
                &target,
                "-c",
                "4",
                "-n",
                "120",
                "--reconnect-every",
                "1",
                "--tls-resume",
                resume,
            ],
        );
        let (connections, resumed) = server.counts();
        assert_eq!(report["messages"], 120, "{resume}: {report}");
        assert_eq!(report["errors"], 0, "{resume}: {report}");
        assert_eq!(report["reconnects"], 116, "{resume}: {report}");
        assert_eq!(report["reconnect_every"], 1, "{resume}: {report}");
        let tls = &report["tls"];
        assert_eq!(tls["resume"], resume);
        let (full, mine) = (
            tls["full"].as_u64().unwrap(),
            tls["resumed"].as_u64().unwrap(),
        );
        // What bench counts is what the server saw: every connection a handshake, and the
        // same ones resumed.
        assert_eq!(full + mine, connections, "{resume}: {tls}");
        assert_eq!(mine, resumed, "{resume}: {tls}");
        assert!((least..=most).contains(&mine), "{resume}: {mine} resumed");
        assert_eq!(
            tls["full_us"]["min"].as_u64().is_some_and(|m| m > 0),
            full > 0
        );
        let histogram = tls["resumed_histogram"].as_str().unwrap();
        let decoded = tcpool::client::bench::decode(histogram).unwrap();
        assert_eq!(decoded.len(), mine, "{resume}");
        // Python's OpenSSL speaks TLS 1.3 with X25519 by default.
        let negotiated = tls["negotiated"].as_object().unwrap();
        assert_eq!(
            negotiated
                .values()
                .map(|n| n.as_u64().unwrap())
                .sum::<u64>(),
            connections
        );
        assert!(
            negotiated.keys().all(|k| k.starts_with("TLSv1_3 ")),
            "{negotiated:?}"
        );
    }
}

#[test]
fn a_plaintext_bench_reconnects_every_n_replies() {
    let server = PyEcho::start(None);
    let target = format!("127.0.0.1:{}", server.port);
    // 2 connections, 15 messages each, 3 a connection: 5 connections each, 10 in all.
    let report = bench(&[&target, "-c", "2", "-n", "30", "--reconnect-every", "3"]);
    let (connections, resumed) = server.counts();
    assert_eq!(report["messages"], 30, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["reconnects"], 8, "{report}");
    assert_eq!(report["connected"], 2, "{report}");
    assert!(report.get("tls").is_none(), "{report}");
    assert_eq!((connections, resumed), (10, 0));
}

#[test]
fn handshake_flags_that_make_no_sense_are_usage_errors() {
    for (args, says) in [
        (&["--reconnect-every", "0"][..], "need a duration"),
        (&["--tls-resume", "tickets"][..], "--tls"),
        (
            &["--tls", "--tls-insecure", "--tls-resume", "mix=1.5"][..],
            "mix=P",
        ),
        (
            &["--tls", "--tls-insecure", "--tls-resume", "sometimes"][..],
            "mix=P",
        ),
    ] {
        let out = Command::new(tcpool_bin())
            .args(["bench", "127.0.0.1:9", "-n", "1"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn merged_reports_add_their_handshakes() {
    let certs = Certs::new("merge");
    let (cert, key, ca) = (
        certs.path("server.pem"),
        certs.path("server-key.pem"),
        certs.path("ca.pem"),
    );
    let server = PyEcho::start(Some((&cert, &key)));
    let target = format!("127.0.0.1:{}", server.port);
    let mut files = Vec::new();
    for (i, n) in ["20", "40"].into_iter().enumerate() {
        let report = bench_tls(
            &ca,
            &[&target, "-c", "2", "-n", n, "--reconnect-every", "2"],
        );
        let file = certs.path(&format!("run{i}.json"));
        std::fs::File::create(&file)
            .unwrap()
            .write_all(report.to_string().as_bytes())
            .unwrap();
        files.push(file);
    }
    let out = Command::new(tcpool_bin())
        .args(["bench", "merge", "--json"])
        .args(&files)
        .output()
        .unwrap();
    let merged: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let (connections, resumed) = server.counts();
    let tls = &merged["tls"];
    // 10 + 20 connections, every one a handshake.
    assert_eq!(connections, 30);
    assert_eq!(
        tls["full"].as_u64().unwrap() + tls["resumed"].as_u64().unwrap(),
        30
    );
    assert_eq!(tls["resumed"].as_u64().unwrap(), resumed, "{tls}");
    assert_eq!(merged["reconnect_every"], 2);
    assert_eq!(merged["connected"], 4);
}

#[test]
fn connections_that_carry_no_message_are_handshakes_alone() {
    let certs = Certs::new("bare");
    let (cert, key, ca) = (
        certs.path("server.pem"),
        certs.path("server-key.pem"),
        certs.path("ca.pem"),
    );
    for (resume, versions) in [("tickets", "1.3"), ("tickets", "1.2"), ("off", "1.3")] {
        let server = PyEcho::start(Some((&cert, &key)));
        let target = format!("127.0.0.1:{}", server.port);
        let report = bench_tls(
            &ca,
            &[
                &target,
                "-c",
                "2",
                "-d",
                "0.5",
                "--reconnect-every",
                "0",
                "--tls-resume",
                resume,
                "--tls-versions",
                versions,
            ],
        );
        let (connections, resumed) = server.counts();
        let what = format!("{resume} {versions}: {report}");
        assert_eq!(report["messages"], 0, "{what}");
        assert_eq!(report["sent"], 0, "{what}");
        assert_eq!(report["errors"], 0, "{what}");
        let tls = &report["tls"];
        let (full, mine) = (
            tls["full"].as_u64().unwrap(),
            tls["resumed"].as_u64().unwrap(),
        );
        assert!(full + mine > 10, "{what}");
        // What OpenSSL counted, but for the two handshakes that may have been under way
        // when the run ended.
        assert!(
            (full + mine).abs_diff(connections) <= 2,
            "{what}: server saw {connections}"
        );
        assert!(
            mine.abs_diff(resumed) <= 2,
            "{what}: server resumed {resumed}"
        );
        if resume == "off" {
            assert_eq!(mine, 0, "{what}");
        } else {
            // Every reconnect resumes (TLS 1.3's tickets were awaited before each close):
            // only each connection's first handshake, and perhaps one that raced it, is full.
            assert!(full <= 4, "{what}");
        }
    }
}

#[test]
fn many_connections_reconnecting_together_all_find_a_ticket() {
    let certs = Certs::new("many");
    let (cert, key, ca) = (
        certs.path("server.pem"),
        certs.path("server-key.pem"),
        certs.path("ca.pem"),
    );
    let server = PyEcho::start(Some((&cert, &key)));
    let target = format!("127.0.0.1:{}", server.port);
    // 64 connections, 5 messages each, a new connection for every one: 64 first handshakes,
    // then 256 reconnects, many at once. rustls's own store keeps 8 tickets per server, so
    // most of those would find none and be full; bench's keeps two per connection.
    let report = bench_tls(
        &ca,
        &[&target, "-c", "64", "-n", "320", "--reconnect-every", "1"],
    );
    let (connections, resumed) = server.counts();
    assert_eq!(report["errors"], 0, "{report}");
    let tls = &report["tls"];
    assert_eq!(connections, 320, "{tls}");
    assert_eq!(tls["resumed"].as_u64(), Some(resumed), "{tls}");
    assert_eq!(tls["full"], 64, "{tls}");
    assert_eq!(resumed, 256, "{tls}");
}

#[test]
fn a_connections_first_handshake_offers_no_ticket_of_another() {
    let certs = Certs::new("first");
    let (cert, key, ca) = (
        certs.path("server.pem"),
        certs.path("server-key.pem"),
        certs.path("ca.pem"),
    );
    let server = PyEcho::start(Some((&cert, &key)));
    let target = format!("127.0.0.1:{}", server.port);
    // One connection every 100 ms: each earlier one has its tickets by the time the next
    // connects. The clients a bench stands for are strangers to the server: each first
    // handshake is full.
    let report = bench_tls(
        &ca,
        &[
            &target,
            "-c",
            "4",
            "-n",
            "8",
            "--threads",
            "1",
            "--connect-rate",
            "10",
        ],
    );
    let (connections, resumed) = server.counts();
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!((connections, resumed), (4, 0), "{report}");
    assert_eq!(report["tls"]["full"], 4, "{report}");
}
