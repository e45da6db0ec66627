//! `tcpool bench` against a server with each fault: the report says what the fault did, the
//! way a user reads it — added latency in the percentiles, `reset`, `closed`, `timeout`,
//! `mismatch`, a throughput held to the rate. Bounds are one-sided (a loaded machine is
//! slower, never faster) and every run is bounded in time.

use tcpool::Config;

use crate::bench::{Run, bench};
use crate::support::*;

fn served(fault: &str) -> TestServer {
    TestServer::start(Config {
        workers: 2,
        faults: vec![fault.parse().unwrap()],
        seed: Some(1),
        ..Config::default()
    })
}

fn run(fault: &str, args: &[&str]) -> Run {
    let server = served(fault);
    bench(server.addr, args)
}

fn latency_us(run: &Run, key: &str) -> u64 {
    run.report["latency_us"][key].as_u64().unwrap()
}

#[test]
fn latency_shows_in_the_percentiles() {
    let run = run("latency,delay=20ms", &["-c", "4", "-d", "1s"]);
    run.assert_clean();
    assert!(latency_us(&run, "min") >= 19_000, "{}", run.report);
    assert!(latency_us(&run, "p50") >= 20_000, "{}", run.report);
}

#[test]
fn slice_adds_the_pauses_between_pieces() {
    // 64 bytes in pieces of 16, 10 ms apart: three pauses per reply.
    let run = run("slice,size=16,delay=10ms", &["-c", "2", "-d", "1s"]);
    run.assert_clean();
    assert!(latency_us(&run, "p50") >= 29_000, "{}", run.report);
}

#[test]
fn bandwidth_holds_the_throughput_to_the_rate() {
    let run = run(
        "bandwidth,rate=64KiB",
        &["-c", "1", "-s", "4KiB", "-d", "2s"],
    );
    run.assert_clean();
    let per_second = run.report["mb_per_sec"].as_f64().unwrap() * 1e6;
    // 64 KiB/s after one burst of at most 64 KiB over a two-second window.
    assert!(per_second <= 100_000.0, "{}", run.report);
}

#[test]
fn reset_shows_as_reset() {
    let run = run("reset,after=20", &["-c", "2", "-n", "200"]);
    assert!(run.kind("reset") >= 1, "{}", run.report);
    assert_eq!(run.kind("closed"), 0, "{}", run.report);
}

#[test]
fn close_shows_as_closed() {
    let run = run("close,after=20", &["-c", "2", "-n", "200"]);
    assert!(run.kind("closed") >= 1, "{}", run.report);
    assert_eq!(run.kind("reset"), 0, "{}", run.report);
}

#[test]
fn stall_shows_as_timeout() {
    let run = run(
        "stall,after=20",
        &["-c", "2", "-n", "200", "--timeout", "500ms"],
    );
    assert!(run.kind("timeout") >= 1, "{}", run.report);
}

#[test]
fn truncate_shows_as_mismatch() {
    // Lines in flight four at a time: the cut line is followed by the next one's bytes.
    let run = run(
        "truncate,bytes=10",
        &["-c", "2", "-n", "200", "--pipeline", "4"],
    );
    assert!(run.kind("mismatch") >= 1, "{}", run.report);
}

#[test]
fn an_open_loop_that_falls_behind_counts_in_flight_only_what_had_gone_out() {
    // 20 ms a reply: 8 connections at pipeline 1 manage some 400 msg/s of the 2,000 asked,
    // so messages meant for the window are still going out after it.
    let server = served("latency,delay=20ms");
    let run = bench(
        server.addr,
        &[
            "-c",
            "8",
            "--pipeline",
            "1",
            "--rate",
            "1000",
            "-d",
            "2",
            "--timeout",
            "1",
        ],
    );
    assert_eq!(run.u64("errors"), 0, "{}", run.report);
    let in_flight = run.u64("in_flight_at_end");
    assert!(
        in_flight <= 8,
        "{in_flight} in flight at most 8 x 1: {}",
        run.report
    );
    assert!(run.u64("late_replies") >= in_flight, "{}", run.report);
}
