//! The files and merges of `tcpool bench --udp` runs against `tcpool serve --udp` on free
//! loopback ports: `--hdr-log` read back by Python's `hdrhistogram` package, `--plot`, and
//! `bench merge` of reports from generators run at once, checked against their inputs.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::bench_fleet::Scratch;
use crate::bench_timeline::read_with_hdrh;
use crate::support::*;

/// Starts `tcpool serve --udp ARGS...` and waits until its datagram port is open.
fn udp_server(args: &[&str]) -> Binary {
    let mut all = vec!["--udp"];
    all.extend_from_slice(args);
    let server = Binary::serve(&all);
    server.wait_stderr("the udp line", |l| l.contains("udp echo on"));
    server
}

/// `tcpool bench --udp TARGET --json ARGS...` to its end: exit code and report.
fn run(target: &str, args: &[&str]) -> (Option<i32>, Value) {
    let mut command = Command::new(tcpool_bin());
    command
        .args(["bench", "--udp", target, "--json", "--threads", "2"])
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

fn n(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count: {report}"))
}

#[test]
fn udp_hdr_log_reads_in_python_and_the_plot_draws_loss_and_round_trips() {
    let server = udp_server(&[]);
    let target = server.addr.to_string();
    let scratch = Scratch::new("udp-files");
    let log = scratch.0.join("udp.hlog");
    let svg = scratch.0.join("udp.svg");
    let (code, report) = run(
        &target,
        &[
            "-c",
            "4",
            "-n",
            "3000",
            "--pipeline",
            "4",
            "--hdr-log",
            log.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(n(&report, "answered"), 3000, "{report}");

    // Python's reader: one interval per second of the timeline, each with that second's
    // replies, and all of them together the whole run (every reply came within the run).
    let mut lines = read_with_hdrh(&log);
    let all = lines.pop().expect("the intervals added together");
    let timeline = report["timeline"].as_array().unwrap();
    assert_eq!(lines.len(), timeline.len(), "{lines:?}");
    for (interval, second) in lines.iter().zip(timeline) {
        assert_eq!(interval["count"], second["messages"], "{interval} {second}");
        if n(second, "messages") > 0 {
            assert_eq!(interval["p99"], second["p99_us"], "{interval} {second}");
        }
    }
    assert_eq!(n(&all, "count"), 3000, "{all}");
    let rtt = &report["rtt_us"];
    for key in ["p50", "p99", "max"] {
        assert_eq!(all[key], rtt[key], "{key}: {all} {rtt}");
    }

    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    for caption in [
        "Round trip by percentile",
        "Round trip per second",
        "Datagrams lost, by the second they were sent",
        "3,000 sent, 0 lost",
    ] {
        assert!(svg.contains(caption), "no {caption:?} in the plot");
    }
}
