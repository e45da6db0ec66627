//! Hardening: whatever one client does, the server keeps serving everyone else, loses
//! nothing it was given and holds its memory flat. Each test does the bad thing for real:
//! slowloris and half-open clients, half-closes, descriptor exhaustion under `prlimit`,
//! connection churn, a panicking handler, random bytes and disconnects, a thousand idle
//! sessions, stalled workers, unwritable output, hostile control characters, SIGTERM under
//! fire, a 50 MB flood — and the CI short run of `scripts/soak.sh`.
//!
//! Process-level facts (RSS, descriptors, CPU time, exit codes) come from the real binary and
//! `/proc`; handler behaviour (panics, stalls) from an in-process server with a test handler.
//! Every loop is bounded in count and time; nothing asserts on speed except one generous
//! CPU-time bound on the `accept()` back-off.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown as Direction, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tcpool::server::{Context, Handler, Message};
use tcpool::{Config, Overflow};

use crate::support::*;

mod descriptors;
mod fuzz;
mod limits;
mod memory;
mod output;
mod panics;
mod regressions;
mod slow_clients;
mod soak;
mod stalled_workers;
mod under_fire;

// ---------------------------------------------------------------------------------------------
// Helpers: /proc figures, a launcher for wrapped commands, a small deterministic RNG.

/// Open descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"))
}

/// User plus system CPU time of a process, in clock ticks (`/proc/PID/stat` fields 14, 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    (stat_field(&stat, 14) + stat_field(&stat, 15)) as u64
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot be asked).
fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Starts `command` with stdin piped (for the console) and waits for it to listen; see
/// [`Binary::launch`].
fn launch(mut command: Command) -> Binary {
    command.stdin(Stdio::piped());
    Binary::launch(command)
}

/// `tcpool serve` under `prlimit --nofile=64:64`, with an explicit `--max-conns 1000` that the
/// descriptor limit cannot cover.
fn at_the_descriptor_limit(extra: &[&str]) -> Command {
    let mut command = Command::new("prlimit");
    command
        .args(["--nofile=64:64", tcpool_bin()])
        .args([
            "serve",
            "--port",
            "0",
            "--workers",
            "2",
            "--max-conns",
            "1000",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .env("RUST_LOG_STYLE", "never");
    command
}

/// xorshift64*: a fixed, dependency-free random sequence, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 56) as u8).collect()
    }
}

/// Closes with SO_LINGER 0: the peer gets a reset instead of a FIN.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The last 60 bytes of `bytes`, as text, for a failure message.
fn tail(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(60)..]).into_owned()
}

/// Reads whatever arrives until EOF, a reset, or `quiet` without any byte.
fn read_available(stream: &mut TcpStream, quiet: Duration) -> Vec<u8> {
    stream.set_read_timeout(Some(quiet)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    out
}

/// Sends `/nick NAME` (chat mode) and returns the server's answer, skipping the relayed lines
/// and notices that may arrive before it.
fn nick(stream: &mut TcpStream, name: &str) -> Vec<u8> {
    stream
        .write_all(format!("/nick {name}\n").as_bytes())
        .unwrap();
    for _ in 0..1000 {
        let line = read_line(stream);
        if line.starts_with(b"* you are now ") || line.starts_with(b"* nick refused") {
            return line;
        }
    }
    panic!("no answer to /nick");
}

/// Echoes complete lines upper-cased in the peer's own line ending; holds partial lines.
struct Upper;

impl Handler for Upper {
    fn on_message(&self, ctx: &mut Context<'_>, message: Message<'_>) {
        ctx.send_line(&String::from_utf8_lossy(message.text).to_uppercase());
    }
}
