//! The acceptor at its limits: the descriptor limit, a full backlog with `--overflow reject`,
//! and clients still in the kernel's queue at shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tcpool::server::{Context, Handler, Message};
use tcpool::{Config, Overflow};

use crate::support::*;

const BUSY: &[u8] = b"busy: server full, try again later\n";

/// Sends `ping\n` and reads the first answer: the echo, `busy`, or whatever the server said.
fn answer(c: &mut TcpStream) -> Vec<u8> {
    let _ = c.write_all(b"ping\n");
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"\n") {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

#[test]
fn a_burst_past_the_descriptor_limit_is_answered_busy() {
    raise_fd_limit();
    let mut command = Command::new("prlimit");
    command
        .args(["--nofile=256:256", tcpool_bin()])
        .args(["serve", "--port", "0", "--workers", "2"])
        .env("RUST_LOG", "info")
        .env("RUST_LOG_STYLE", "never");
    let server = Binary::launch(command);
    let max_conns: usize = server
        .wait_stderr("the listening line", |l| l.contains("listening on"))
        .split("max-conns=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("max-conns in the listening line");
    assert!(max_conns < 256, "max-conns {max_conns} was not lowered");

    let mut clients: Vec<TcpStream> = (0..300).map(|_| connect(server.addr)).collect();
    let answers: Vec<Vec<u8>> = clients.iter_mut().map(answer).collect();
    let served = answers.iter().filter(|a| a.as_slice() == b"ping\n").count();
    let busy = answers.iter().filter(|a| a.as_slice() == BUSY).count();
    assert_eq!(served, max_conns, "{answers:?}");
    assert_eq!(busy, 300 - max_conns, "{answers:?}");
    let stderr = server.stderr_lines().join("\n");
    assert!(!stderr.contains("accept failed"), "{stderr}");
}

#[test]
fn overflow_reject_gives_an_idle_server_a_grace_before_busy() {
    let server = TestServer::start(Config {
        overflow: Overflow::Reject,
        ..Config::default()
    });
    let mut clients: Vec<TcpStream> = (0..200).map(|_| connect(server.addr)).collect();
    let answers: Vec<Vec<u8>> = clients.iter_mut().map(answer).collect();
    let busy = answers.iter().filter(|a| a.as_slice() == BUSY).count();
    let served = answers.iter().filter(|a| a.as_slice() == b"ping\n").count();
    assert_eq!(busy + served, 200, "{answers:?}");
    assert!(
        busy <= 100,
        "{busy} of 200 sequential connects were told busy"
    );
    // Served sessions are counted, rejected connections are not.
    assert_eq!(server.registry.stats().rejected, busy as u64);
    drop(clients);
    let summary = server.stop();
    assert_eq!(summary.sessions, served as u64, "{summary}");
}

/// Echoes; on `stall` it holds its worker until `open` is set (at most `IO_TIMEOUT`).
struct Stall {
    stalled: Arc<AtomicBool>,
    open: Arc<AtomicBool>,
}

impl Handler for Stall {
    fn on_message(&self, ctx: &mut Context<'_>, message: Message<'_>) {
        if message.text == b"stall" {
            self.stalled.store(true, Ordering::SeqCst);
            let until = Instant::now() + IO_TIMEOUT;
            while !self.open.load(Ordering::SeqCst) && Instant::now() < until {
                thread::sleep(Duration::from_millis(5));
            }
        }
        ctx.send(message.raw);
    }
}

#[test]
fn clients_still_in_the_kernel_queue_at_shutdown_are_told_quit() {
    let (stalled, open) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let server = TestServer::with_handler(
        Config {
            workers: 1,
            backlog: 1,
            ..Config::default()
        },
        Stall {
            stalled: stalled.clone(),
            open: open.clone(),
        },
    );
    let mut staller = connect(server.addr);
    staller.write_all(b"stall\n").unwrap();
    wait_until("the worker to stall", || stalled.load(Ordering::SeqCst));
    // One waits in the backlog, one in the acceptor's hand; the rest in the kernel's queue.
    let mut in_backlog = connect(server.addr);
    server.wait_for("a full backlog", |r| r.stats().backlog == 1);
    let mut in_hand = connect(server.addr);
    server.wait_for("the acceptor to hold one", |r| r.len() == 3);
    // Each is told `quit` in the line ending of what it sent already: none when it sent
    // nothing or no line (seed-style), else its first line's.
    in_hand.write_all(b"hand\r\n").unwrap();
    in_backlog.write_all(b"backlog\n").unwrap();
    let sent: [&[u8]; 4] = [b"", b"q\r\n", b"q\n", b"partial"];
    let told: [&[u8]; 4] = [b"quit", b"quit\r\n", b"quit\n", b"quit"];
    let mut queued: Vec<TcpStream> = sent
        .iter()
        .map(|bytes| {
            let mut c = connect(server.addr);
            c.write_all(bytes).unwrap();
            c
        })
        .collect();
    thread::sleep(Duration::from_millis(50));

    let stopping = thread::spawn(move || server.stop());
    assert_eq!(read_to_close(&mut in_hand), b"quit\r\n");
    for (c, told) in queued.iter_mut().zip(told) {
        assert_eq!(read_to_close(c), told);
    }
    open.store(true, Ordering::SeqCst);
    assert_eq!(read_to_close(&mut staller), b"stall\nquit\n");
    assert_eq!(read_to_close(&mut in_backlog), b"quit\n");
    let summary = stopping.join().unwrap();
    // Served: the staller and the one adopted from the backlog; the rest were only told quit.
    assert_eq!(summary.sessions, 2, "{summary}");
}

#[test]
fn sizes_that_imply_too_much_memory_are_refused_at_once() {
    for (args, message) in [
        (
            &["--workers", "65535"][..],
            "--workers 65535 is more than 1024",
        ),
        (
            &["--workers", "1025"][..],
            "--workers 1025 is more than 1024",
        ),
        (&["--idle-timeout", "1e-12"][..], "shorter than 1ns"),
        (
            &["--idle-timeout", "500us"][..],
            "--idle-timeout 500us is below 1ms",
        ),
    ] {
        let started = Instant::now();
        let out = Command::new(tcpool_bin())
            .args(["serve", "--port", "0"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    // A library user is refused the same way, before anything is sized by it.
    let listener = tcpool::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let config = Config {
        workers: 65535,
        ..Config::default()
    };
    assert_eq!(config.worker_count(), tcpool::server::MAX_WORKERS);
    match tcpool::server::Server::new(listener, config).start() {
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput),
        Ok(_) => panic!("65535 workers were not refused"),
    }
}
