//! What `tcpool bench` reports, and when: the measured window of `-d` (late replies are
//! awaited outside it), the error kinds and the first error of each, a run where nothing
//! worked, a rate that was not reached, fewer connections than asked, and a terminal left
//! clean after Ctrl-C.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tcpool::Config;

use crate::bench::{BrokenServer, bench, echo_flipping_byte, swallow};
use crate::support::*;

/// The report of `-d` is over the measured window, within this.
const WINDOW_SLACK: f64 = 0.02;

#[test]
fn duration_is_the_measured_window_even_when_a_reply_is_late() {
    // The first connection is never answered; the others are echoed.
    let first = Arc::new(AtomicBool::new(true));
    let server = BrokenServer::start(move |stream| {
        if first.swap(false, Ordering::SeqCst) {
            swallow(stream);
        } else {
            echo_flipping_byte(stream, usize::MAX);
        }
    });
    let run = bench(server.addr, &["-c", "4", "-d", "1", "--timeout", "2s"]);
    // The silent connection's message was awaited for its whole timeout, after the window.
    assert!(run.elapsed >= Duration::from_secs(2), "{:?}", run.elapsed);
    assert_eq!(run.kind("timeout"), 1, "{}", run.report);
    let duration = run.report["duration_s"].as_f64().unwrap();
    assert!((duration - 1.0).abs() < WINDOW_SLACK, "{}", run.report);
    let window = &run.report["window"];
    let length = window["end"].as_f64().unwrap() - window["start"].as_f64().unwrap();
    assert!((length - 1.0).abs() < WINDOW_SLACK, "{}", run.report);
    let rate = run.report["msgs_per_sec"].as_f64().unwrap();
    assert!(
        (rate - run.u64("messages") as f64 / duration).abs() < 1.0,
        "{}",
        run.report
    );
    // At least the silent connection's message was still in flight when the window closed.
    assert!(run.u64("in_flight_at_end") >= 1, "{}", run.report);
    // The others' last replies came late; the silent one never did.
    assert!(
        run.u64("late_replies") < run.u64("in_flight_at_end"),
        "{}",
        run.report
    );
    assert!(run.u64("in_flight_at_end") <= 4, "{}", run.report);
}

#[test]
fn duration_against_a_healthy_server_is_what_was_asked() {
    let server = TestServer::start(Config::default());
    let run = bench(server.addr, &["-c", "2", "-d", "0.5s", "--warmup", "200ms"]);
    run.assert_clean();
    let duration = run.report["duration_s"].as_f64().unwrap();
    assert!((duration - 0.5).abs() < WINDOW_SLACK, "{}", run.report);
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
    // One timeline entry per measured second (a last, partial one included).
    let timeline = run.report["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 1, "{}", run.report);
    let counted: u64 = timeline
        .iter()
        .map(|s| s["messages"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, run.u64("messages"));
}

#[test]
fn a_low_rate_still_measures_the_whole_duration() {
    // Each connection sends once at the start and its next send falls after the end: the
    // window is still -d, not the time of the last reply.
    let server = TestServer::start(Config::default());
    let run = bench(server.addr, &["-c", "4", "-d", "0.6s", "--rate", "0.5"]);
    run.assert_clean();
    let duration = run.report["duration_s"].as_f64().unwrap();
    assert!((duration - 0.6).abs() < WINDOW_SLACK, "{}", run.report);
    let rate = run.report["msgs_per_sec"].as_f64().unwrap();
    assert!(
        (rate - run.u64("messages") as f64 / duration).abs() < 0.01,
        "{}",
        run.report
    );
    assert!(rate < 20.0, "{}", run.report);
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
}

#[test]
fn a_full_tcpool_server_is_busy_not_mismatch() {
    let server = TestServer::start(Config {
        max_conns: Some(2),
        ..Config::default()
    });
    let run = bench(server.addr, &["-c", "5", "-d", "0.5", "--timeout", "1s"]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("busy"), 3, "{}", run.report);
    assert_eq!(run.kind("mismatch"), 0, "{}", run.report);
    assert_eq!(run.kind("timeout"), 0, "{}", run.report);
    let first = &run.report["first_errors"]["busy"];
    assert!(
        first["received"]
            .as_str()
            .unwrap()
            .starts_with("busy: server full"),
        "{first}"
    );
    assert!(run.u64("messages") > 0, "the two admitted connections ran");
}

/// Answers anything like an HTTP server refusing it, then closes.
fn http_refusal(mut stream: std::net::TcpStream) {
    let mut buf = [0u8; 1024];
    let _ = std::io::Read::read(&mut stream, &mut buf);
    let _ = stream.write_all(b"HTTP/1.0 400 Bad request\r\nServer: test\r\n\r\n<html>");
}

#[test]
fn the_first_error_of_each_kind_shows_where_and_what() {
    let server = BrokenServer::start(http_refusal);
    let run = bench(server.addr, &["-c", "2", "-n", "10"]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("mismatch"), 2, "{}", run.report);
    let first = &run.report["first_errors"]["mismatch"];
    assert_eq!(first["offset"], 0, "{first}");
    // Escaped and cut at the first line's end.
    assert_eq!(
        first["received"], r"HTTP/1.0 400 Bad request\r\n...",
        "{first}"
    );
    // The echo payload expected there, cut to sixty bytes.
    let expected = first["expected"].as_str().unwrap();
    assert!(
        expected.ends_with("...") && expected.len() == 60 + 3,
        "{first}"
    );
    assert!(first["connection"].as_u64().unwrap() < 2);

    // The human report says it in one line, and nothing of an empty latency table.
    let out = Command::new(tcpool_bin())
        .args(["bench", &server.addr.to_string(), "-c", "2", "-n", "10"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Result      replies came, none right: every connection failed (mismatch 2)"),
        "{text}"
    );
    assert!(
        text.contains(r#"received "HTTP/1.0 400 Bad request\r\n...""#),
        "{text}"
    );
    assert!(!text.contains("p99.9"), "{text}");
}

#[test]
fn refused_connects_name_the_address_in_the_first_error() {
    let port = free_port();
    let run = bench(port, &["-c", "2", "-d", "0.5"]);
    assert_eq!(run.kind("connect_refused"), 2, "{}", run.report);
    let message = run.report["first_errors"]["connect_refused"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with(&format!("127.0.0.1:{port}: ")),
        "{message}"
    );
}

#[test]
fn a_rate_that_was_not_reached_is_reported() {
    let server = TestServer::start(Config::default());
    let out = Command::new(tcpool_bin())
        .args(["bench", &server.addr.to_string(), "-c", "1", "-d", "0.5"])
        .args(["--rate", "100000000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("rate not reached: asked 100000000 msg/s, delivered"),
        "{text}"
    );
    let run = bench(
        server.addr,
        &["-c", "1", "-d", "0.5", "--rate", "100000000"],
    );
    assert_eq!(run.report["rate_reached"], false, "{}", run.report);
    // Throughput counts the replies that came back inside the window, so the last sends'
    // replies, still in flight at its end, are not in it: over 0.5 s at 50/s one reply
    // delayed by 20 ms (a loaded machine) already fell below 95 %. Over 4 s the same 5 %
    // leaves the end of the window 200 ms of slack.
    let met = bench(server.addr, &["-c", "1", "-d", "4", "--rate", "50"]);
    assert_eq!(met.report["rate_reached"], true, "{}", met.report);
}

#[test]
fn fewer_messages_than_connections_says_how_many_run() {
    let server = TestServer::start(Config::default());
    let run = bench(server.addr, &["-n", "3", "-c", "8"]);
    run.assert_clean();
    assert_eq!(run.u64("connections"), 3);
    assert!(
        run.stderr
            .iter()
            .any(|l| l.contains("running 3 connection(s), not 8")),
        "{:?}",
        run.stderr
    );
}

#[test]
fn ctrl_c_on_a_terminal_leaves_no_progress_bar_behind() {
    let server = TestServer::start(Config::default());
    let mut command = Command::new(tcpool_bin());
    command.args(["bench", &server.addr.to_string(), "-c", "2", "-d", "30"]);
    let mut pty = rexpect::session::spawn_command(command, Some(10_000)).unwrap();
    pty.exp_string("msg/s").unwrap();
    pty.send_control('c').unwrap();
    let (before, _) = pty.exp_regex("Errors +none").unwrap();
    pty.exp_eof().unwrap();
    // The terminal did not echo the Ctrl-C (which would push the bar onto a line that clearing
    // it does not reach), and the bar was cleared before the report.
    assert!(!before.contains("^C"), "{before:?}");
    let report = &before[before.rfind("Target").expect("a report")..];
    assert!(!report.contains("msg/s  "), "{report:?}");
    assert!(report.contains("(interrupted)"), "{report:?}");
}
