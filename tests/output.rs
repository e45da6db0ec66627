//! Operator output that nobody reads: a stalled stdout or stderr holds up no session and no
//! shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn stalled_stdout_and_stderr_hold_up_no_session_and_no_shutdown() {
    // Pipes whose read ends stay open and are never read: every write blocks once the
    // kernel's pipe buffer (64 KiB) is full.
    let (out_reader, out_writer) = std::io::pipe().unwrap();
    let (err_reader, err_writer) = std::io::pipe().unwrap();
    let mut child = serve_command(&[
        "--mode",
        "manual",
        "--workers",
        "1",
        "--shutdown-timeout",
        "2",
    ])
    .env("RUST_LOG", "trace")
    .stdin(Stdio::piped())
    .stdout(Stdio::from(out_writer))
    .stderr(Stdio::from(err_writer))
    .spawn()
    .unwrap();
    // Read stderr only up to the `listening on` line; from then on nobody reads it.
    let mut err = BufReader::new(err_reader);
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "no `listening on` line"
        );
    }
    let addr = listening_addr(&line).unwrap();

    // Manual mode prints every client line on stdout, and trace logs each read on stderr:
    // 4,000 lines of 100 bytes are far more than both pipes hold.
    let mut talker = connect(addr);
    let text = format!("{}\n", "x".repeat(99));
    for _ in 0..4000 {
        talker.write_all(text.as_bytes()).unwrap();
    }
    // The worker is not stuck behind the output: a newcomer is served and answered.
    let mut newcomer = connect(addr);
    newcomer.write_all(b"hello\n").unwrap();
    // Once read, the newcomer is line-based and answered with `\n`.
    std::thread::sleep(Duration::from_millis(300));
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "@all still here").unwrap();
    stdin.flush().unwrap();
    assert_eq!(read_n(&mut newcomer, 10), b"still here");

    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The rest of the reply's line, then the goodbye.
    assert_eq!(read_to_close(&mut newcomer), b"\nquit\n");
    let code = wait_child(&mut child, Duration::from_secs(8));
    let took = started.elapsed();
    assert_eq!(code, Some(0), "exit after {took:?}");
    // Generous: the deadline is 2 s; the exit waits a moment more for the stalled streams.
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    drop(stdin);
    drop(out_reader);
    let mut rest = Vec::new();
    let _ = err.read_to_end(&mut rest);
}
