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

mod against_tcpool;
mod broken_servers;
mod third_party;

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
pub fn echo_then_close(mut stream: TcpStream, limit: usize) {
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
