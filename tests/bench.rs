//! `tcpool bench`, run as the real binary with `--json`: against tcpool (in this process and
//! as `tcpool serve`), against third-party echo servers (Python `socketserver`, socat), and
//! against deliberately broken ones (a flipped byte, a close after five messages, silence,
//! nobody listening). Every server binds 127.0.0.1; every run is bounded in time.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tcpool::Config;

use crate::support::*;

/// The longest any single `tcpool bench` run in this file may take before the test fails.
pub const RUN_LIMIT: Duration = Duration::from_secs(30);

/// One finished `tcpool bench` run.
pub struct Run {
    pub report: Value,
    pub code: i32,
    pub elapsed: Duration,
    pub stderr: Vec<String>,
}

impl Run {
    pub fn u64(&self, key: &str) -> u64 {
        self.report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} is not a number: {}", self.report))
    }

    pub fn kind(&self, kind: &str) -> u64 {
        self.report["errors_by_kind"][kind].as_u64().unwrap_or(0)
    }

    /// A clean run: exit 0, no errors, something measured, every byte accounted for.
    pub fn assert_clean(&self) {
        assert_eq!(self.code, 0, "{}; stderr: {:?}", self.report, self.stderr);
        assert_eq!(self.u64("errors"), 0, "{}", self.report);
        assert_eq!(self.report["errors_by_kind"], serde_json::json!({}));
        assert!(self.u64("messages") > 0, "{}", self.report);
        assert_eq!(
            self.u64("bytes"),
            self.u64("messages") * self.u64("size"),
            "{}",
            self.report
        );
    }
}

/// Starts `tcpool bench TARGET ARGS...` (stdout and stderr collected).
pub fn spawn_bench(target: &str, args: &[&str]) -> (Child, SharedLines, SharedLines) {
    let mut child = Command::new(tcpool_bin())
        .arg("bench")
        .arg(target)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpool bench");
    let stdout = collect_lines(child.stdout.take().unwrap());
    let stderr = collect_lines(child.stderr.take().unwrap());
    (child, stdout, stderr)
}

pub type SharedLines = Arc<std::sync::Mutex<Vec<String>>>;

/// Waits for a spawned run, at most [`RUN_LIMIT`]; its stdout must be one JSON object.
pub fn finish(mut child: Child, stdout: SharedLines, stderr: SharedLines, started: Instant) -> Run {
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().expect("exited, not killed");
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!("tcpool bench still running after {RUN_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    // The collectors see end of file right after exit.
    let lines = wait_for_output(&stdout);
    assert_eq!(
        lines.len(),
        1,
        "stdout must be exactly one JSON line: {lines:?}"
    );
    let report: Value = serde_json::from_str(&lines[0]).expect("stdout is JSON");
    let stderr = stderr.lock().unwrap().clone();
    Run {
        report,
        code,
        elapsed,
        stderr,
    }
}

fn wait_for_output(lines: &SharedLines) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let got = lines.lock().unwrap().clone();
        if !got.is_empty() || Instant::now() > deadline {
            return got;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `tcpool bench TARGET --json ARGS...` to the end.
pub fn bench(target: impl ToString, args: &[&str]) -> Run {
    let started = Instant::now();
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (child, stdout, stderr) = spawn_bench(&target.to_string(), &all);
    finish(child, stdout, stderr, started)
}

/// A third-party server process, killed on drop.
pub struct External(pub Child);

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A deliberately broken echo server in this process: each connection runs `behave` on its
/// own thread. Stops accepting on drop.
pub struct BrokenServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl BrokenServer {
    pub fn start(behave: impl Fn(TcpStream) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let behave = Arc::new(behave);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                // Every connection thread ends by itself: reads time out.
                stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                let behave = Arc::clone(&behave);
                thread::spawn(move || behave(stream));
            }
        });
        BrokenServer { addr, stop }
    }
}

impl Drop for BrokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Echoes faithfully, except that the byte at stream offset `at` has one bit flipped.
pub fn echo_flipping_byte(mut stream: TcpStream, at: usize) {
    let mut buf = [0u8; 4096];
    let mut offset = 0;
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        if (offset..offset + n).contains(&at) {
            buf[at - offset] ^= 0x20;
        }
        offset += n;
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Echoes exactly `limit` bytes, then closes.
fn echo_then_close(mut stream: TcpStream, limit: usize) {
    let mut buf = [0u8; 4096];
    let mut left = limit;
    while left > 0 {
        let want = left.min(buf.len());
        match stream.read(&mut buf[..want]) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
                left -= n;
            }
        }
    }
}

/// Reads everything and never answers.
pub fn swallow(mut stream: TcpStream) {
    let _ = io::copy(&mut stream, &mut io::sink());
}

// ---- against tcpool ----------------------------------------------------------------------

#[test]
fn bench_against_tcpool_in_process_is_clean() {
    let server = TestServer::start(Config::default());
    let run = bench(server.addr, &["-c", "8", "-d", "1"]);
    run.assert_clean();
    let r = &run.report;
    for key in [
        "connections",
        "messages",
        "bytes",
        "errors",
        "errors_by_kind",
        "duration_s",
        "msgs_per_sec",
        "latency_us",
        "connect_us",
    ] {
        assert!(r.get(key).is_some(), "no {key} in {r}");
    }
    for key in ["min", "p50", "p90", "p99", "p999", "max", "mean"] {
        assert!(
            r["latency_us"][key].is_number(),
            "no latency_us.{key} in {r}"
        );
    }
    assert_eq!(run.u64("connections"), 8);
    assert_eq!(run.u64("connected"), 8);
    assert!(r["duration_s"].as_f64().unwrap() >= 1.0, "{r}");
    assert!(r["msgs_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    let l = &r["latency_us"];
    assert!(l["min"].as_u64() <= l["p50"].as_u64() && l["p50"].as_u64() <= l["max"].as_u64());
    // The server saw at least every verified byte.
    let stats = server.registry.stats();
    assert!(stats.traffic.bytes_out >= run.u64("bytes"));
}

#[test]
fn every_line_ending_and_pipelining_is_verified() {
    let server = TestServer::start(Config::default());
    for eol in ["none", "lf", "crlf"] {
        let run = bench(
            server.addr,
            &[
                "-c",
                "4",
                "-n",
                "2000",
                "-s",
                "100",
                "--pipeline",
                "8",
                "--eol",
                eol,
            ],
        );
        run.assert_clean();
        assert_eq!(run.u64("messages"), 2000, "{}", run.report);
        assert_eq!(run.report["eol"], eol);
    }
    // The smallest messages: just the line ending, and a single seed-style byte.
    run_small(&server, "crlf", "2");
    run_small(&server, "none", "1");
}

fn run_small(server: &TestServer, eol: &str, size: &str) {
    let run = bench(
        server.addr,
        &["-c", "2", "-n", "200", "-s", size, "--eol", eol],
    );
    run.assert_clean();
    assert_eq!(run.u64("messages"), 200);
}

#[test]
fn bench_against_tcpool_serve_binary_is_clean() {
    let server = Binary::serve(&["--workers", "2"]);
    let run = bench(server.addr, &["-c", "16", "-d", "1", "--pipeline", "4"]);
    run.assert_clean();
    assert_eq!(run.u64("connected"), 16);
}

#[test]
fn thousand_connections_on_two_threads() {
    let server = Binary::serve(&["--workers", "2"]);
    let run = bench(
        server.addr,
        &[
            "-c",
            "1000",
            "-d",
            "1",
            "--threads",
            "2",
            "--connect-timeout",
            "10",
        ],
    );
    run.assert_clean();
    assert_eq!(run.u64("connected"), 1000, "{}", run.report);
    assert_eq!(run.u64("threads"), 2);
}

#[test]
fn messages_limit_sends_exactly_that_many() {
    let server = TestServer::start(Config::default());
    let run = bench(server.addr, &["-n", "1000", "-c", "10"]);
    run.assert_clean();
    assert_eq!(run.u64("messages"), 1000);
    assert_eq!(run.u64("sent"), 1000);
    assert_eq!(run.u64("bytes"), 64_000);

    // Warm-up messages are extra: still exactly 1000 measured.
    let before = server.registry.stats().traffic.bytes_in;
    let run = bench(server.addr, &["-n", "1000", "-c", "10", "--warmup", "0.3"]);
    run.assert_clean();
    assert_eq!(run.u64("messages"), 1000);
    assert_eq!(run.u64("sent"), 1000);
    let received = server.registry.stats().traffic.bytes_in - before;
    assert!(received > 64_000, "warm-up sent nothing: {received} bytes");

    // Fewer messages than connections: only as many connections as messages.
    let run = bench(server.addr, &["-n", "7", "-c", "10"]);
    run.assert_clean();
    assert_eq!(run.u64("messages"), 7);
    assert_eq!(run.u64("connections"), 7);
}

#[test]
fn rate_sends_about_rate_times_duration() {
    let server = TestServer::start(Config::default());
    let run = bench(server.addr, &["--rate", "200", "-d", "2", "-c", "8"]);
    run.assert_clean();
    let messages = run.u64("messages");
    assert!(
        (300..=500).contains(&messages),
        "expected about 400: {}",
        run.report
    );
    assert_eq!(run.report["rate"].as_f64(), Some(200.0));
}

#[test]
fn human_report_has_percentiles_chart_and_errors() {
    let server = TestServer::start(Config::default());
    let started = Instant::now();
    let (child, stdout, stderr) = spawn_bench(&server.addr.to_string(), &["-c", "2", "-n", "500"]);
    let mut child = child;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < RUN_LIMIT, "bench did not finish");
        thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{:?}", stderr.lock().unwrap());
    wait_line(&stdout, "the errors line", |l| l.starts_with("Errors"));
    let text = stdout.lock().unwrap().join("\n");
    for needle in [
        "Target",
        "Throughput",
        "msg/s",
        "MB/s",
        "p50",
        "p99.9",
        "mean",
        "Latency distribution",
        "Connect",
        "Errors      none",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    // No progress bar when stderr is not a terminal.
    assert!(
        stderr.lock().unwrap().is_empty(),
        "{:?}",
        stderr.lock().unwrap()
    );
}

#[test]
fn ctrl_c_stops_the_run_and_still_reports() {
    let server = TestServer::start(Config::default());
    let started = Instant::now();
    let (child, stdout, stderr) =
        spawn_bench(&server.addr.to_string(), &["--json", "-c", "4", "-d", "60"]);
    thread::sleep(Duration::from_millis(800));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let run = finish(child, stdout, stderr, started);
    assert!(
        run.elapsed < Duration::from_secs(10),
        "took {:?}",
        run.elapsed
    );
    run.assert_clean();
    assert_eq!(run.report["interrupted"], true);
    assert!(run.report["duration_s"].as_f64().unwrap() < 10.0);
}

#[test]
fn size_too_small_for_the_line_ending_is_refused() {
    let out = Command::new(tcpool_bin())
        .args(["bench", "127.0.0.1:9", "-s", "1", "--eol", "crlf", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("size 1 is too small"), "{stderr}");

    let out = Command::new(tcpool_bin())
        .args(["bench", "-d", "1", "-n", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "-d and -n conflict");
}

// ---- against third-party echo servers ----------------------------------------------------

const PYTHON_ECHO: &str = r#"
import socketserver, sys

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)

class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

with Server(("127.0.0.1", 0), Echo) as server:
    print(server.server_address[1], flush=True)
    server.serve_forever()
"#;

#[test]
fn bench_against_python_socketserver_echo_is_clean() {
    let mut child = Command::new("python3")
        .args(["-c", PYTHON_ECHO])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python3");
    let lines = collect_lines(child.stdout.take().unwrap());
    let _server = External(child);
    let port: u16 = wait_line(&lines, "the Python server's port", |l| {
        l.parse::<u16>().is_ok()
    })
    .parse()
    .unwrap();
    let run = bench(format!("127.0.0.1:{port}"), &["-c", "4", "-d", "1"]);
    run.assert_clean();
    assert_eq!(run.u64("connected"), 4);
}

#[test]
fn bench_against_socat_cat_is_clean() {
    let port = free_port();
    let child = Command::new("socat")
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
        .arg("EXEC:cat")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat is needed for this test (apt install socat; .ci/run installs it)");
    let _server = External(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(port);
    let run = bench(addr, &["-c", "4", "-d", "1", "--eol", "crlf"]);
    run.assert_clean();
    assert_eq!(run.u64("connected"), 4);
}

#[test]
fn a_tcpool_shutdown_mid_run_counts_as_closed_not_mismatch() {
    let server = TestServer::start(Config::default());
    let addr = server.addr.to_string();
    let started = Instant::now();
    let (child, stdout, stderr) = spawn_bench(&addr, &["--json", "-c", "4", "-d", "20"]);
    server.wait_for("the bench's connections", |r| r.len() == 4);
    server.wait_for("some traffic", |r| r.stats().traffic.messages_in > 100);
    // Every connection is told `quit` and closed: that is not a wrong byte.
    server.stop();
    let run = finish(child, stdout, stderr, started);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("mismatch"), 0, "{}", run.report);
    assert_eq!(run.kind("closed") + run.kind("reset"), 4, "{}", run.report);
    assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);
}

// ---- against broken servers --------------------------------------------------------------

#[test]
fn flipped_byte_is_a_mismatch() {
    let server = BrokenServer::start(|stream| echo_flipping_byte(stream, 1000));
    let run = bench(server.addr, &["-c", "3", "-d", "1"]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("mismatch"), 3, "{}", run.report);
    assert_eq!(run.u64("errors"), 3);
    // Everything before the flipped byte was verified: 15 messages of 64 bytes each.
    assert_eq!(run.u64("messages"), 3 * 15, "{}", run.report);
}

#[test]
fn close_after_five_messages_is_counted_as_closed() {
    let server = BrokenServer::start(|stream| echo_then_close(stream, 5 * 64));
    let run = bench(server.addr, &["-c", "4", "-d", "5"]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.u64("messages"), 4 * 5, "{}", run.report);
    assert_eq!(run.u64("errors"), 4);
    // An orderly close, or a reset when the sixth message was still unread at the close.
    assert_eq!(run.kind("closed") + run.kind("reset"), 4, "{}", run.report);
    // The run ended when the last connection failed, not at the deadline.
    assert!(
        run.elapsed < Duration::from_secs(4),
        "took {:?}",
        run.elapsed
    );
}

#[test]
fn silent_server_times_out_without_hanging() {
    let server = BrokenServer::start(swallow);
    let run = bench(server.addr, &["-c", "3", "-n", "100", "--timeout", "0.5"]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("timeout"), 3, "{}", run.report);
    assert_eq!(run.u64("messages"), 0);
    assert!(
        run.elapsed < Duration::from_secs(5),
        "took {:?}",
        run.elapsed
    );

    // With a duration shorter than the reply timeout the replies still in flight at the
    // deadline are awaited, and time out: silence is never a clean run.
    let run = bench(server.addr, &["-c", "2", "-d", "0.3", "--timeout", "0.5"]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("timeout"), 2, "{}", run.report);
    assert!(
        run.elapsed < Duration::from_secs(5),
        "took {:?}",
        run.elapsed
    );
}

#[test]
fn open_loop_charges_a_stall_to_every_message_it_delayed() {
    // Echoes faithfully, but stops for 300 ms once, after 20 messages of 64 bytes.
    let server = BrokenServer::start(|mut stream| {
        let mut buf = [0u8; 4096];
        let mut echoed = 0;
        let mut stalled = false;
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            if !stalled && echoed >= 20 * 64 {
                stalled = true;
                thread::sleep(Duration::from_millis(300));
            }
            echoed += n;
            if stream.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    // Closed loop: the one message caught in the stall sees it, and nobody else does.
    let closed = bench(server.addr, &["-c", "1", "-n", "150"]);
    closed.assert_clean();
    assert!(closed.report["latency_us"]["max"].as_u64().unwrap() >= 250_000);
    // Open loop at 100/s: the ~30 messages due during the stall all count it, from their
    // intended send times, so a tenth of all messages took 150 ms or more.
    let open = bench(server.addr, &["-c", "1", "--rate", "100", "-d", "1.5"]);
    open.assert_clean();
    let p90 = open.report["latency_us"]["p90"].as_u64().unwrap();
    assert!(p90 >= 100_000, "the stall is hidden: {}", open.report);
}

#[test]
fn refused_connects_are_counted_and_fail_the_run() {
    let port = free_port();
    let run = bench(format!("127.0.0.1:{port}"), &["-c", "5", "-d", "1"]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("connect_refused"), 5, "{}", run.report);
    assert_eq!(run.u64("connected"), 0);
    assert_eq!(run.u64("messages"), 0);
    assert!(
        run.elapsed < Duration::from_secs(5),
        "took {:?}",
        run.elapsed
    );
}

#[test]
fn one_failing_connection_does_not_stop_the_others() {
    // The first connection is answered wrongly; the others are echoed faithfully.
    let first = Arc::new(AtomicBool::new(true));
    let server = BrokenServer::start(move |stream| {
        if first.swap(false, Ordering::SeqCst) {
            echo_flipping_byte(stream, 0);
        } else {
            echo_flipping_byte(stream, usize::MAX);
        }
    });
    let run = bench(server.addr, &["-c", "4", "-n", "3000"]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("mismatch"), 1, "{}", run.report);
    // The failed connection's 750 messages are lost, the other three connections' are not.
    assert_eq!(run.u64("messages"), 3 * 750, "{}", run.report);
}
