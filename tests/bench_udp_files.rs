//! The files and merges of `tcpool bench --udp` runs against `tcpool serve --udp` on free
//! loopback ports: `--hdr-log` read back by Python's `hdrhistogram` package, `--plot`, and
//! `bench merge` of reports from generators run at once, checked against their inputs.

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use serde_json::Value;

use crate::bench_fleet::{Scratch, merge};
use crate::bench_fleet_nats::{Fleet, json};
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

/// A histogram of the report, decoded by the hdrhistogram crate itself.
fn decoded(report: &Value, key: &str) -> Histogram<u64> {
    let text = report[key].as_str().expect("a histogram");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64");
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .expect("an HdrHistogram")
}

#[test]
fn udp_merge_adds_two_generators_run_at_once_and_refuses_a_tcp_report() {
    let server = udp_server(&["--udp-stamp"]);
    let target = server.addr.to_string();
    let scratch = Scratch::new("udp-merge");
    let other = {
        let target = target.clone();
        std::thread::spawn(move || run(&target, &["-c", "3", "-n", "4000", "--pipeline", "4"]))
    };
    let (code, a) = run(&target, &["-c", "2", "-n", "3001", "--pipeline", "2"]);
    let (code_b, b) = other.join().unwrap();
    assert_eq!((code, code_b), (Some(0), Some(0)), "{a} {b}");
    let files = [scratch.write("a.json", &a), scratch.write("b.json", &b)];
    let (code, out, err) = merge(&[&files[0], &files[1], "--json"]);
    assert_eq!(code, 0, "{err}");
    let m: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(m["transport"], "udp", "{m}");
    for key in [
        "sent",
        "answered",
        "datagrams_received",
        "bytes_sent",
        "lost",
        "stamped_replies",
        "request_loss",
        "reply_loss",
        "sockets",
    ] {
        assert_eq!(n(&m, key), n(&a, key) + n(&b, key), "{key}: {m}");
    }
    assert_eq!(n(&m, "sent"), 7001, "{m}");
    assert_eq!(m["loss_ratio"], 0.0, "{m}");

    // The histograms are the inputs' added together, by the crate's own reader and adder.
    for (key, summary) in [
        ("rtt_histogram", "rtt_us"),
        ("jitter_delta_histogram", "jitter_delta_us"),
    ] {
        let mut sum = decoded(&a, key);
        sum.add(decoded(&b, key)).unwrap();
        let merged = decoded(&m, key);
        assert_eq!(merged.len(), sum.len(), "{key}");
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.value_at_quantile(q),
                sum.value_at_quantile(q),
                "{key} {q}"
            );
        }
        assert_eq!(n(&m[summary], "p99"), sum.value_at_quantile(0.99), "{m}");
    }
    assert_eq!(merged_answered(&m), 7001, "{m}");
    // The sockets' mean jitter, each input weighted by its sockets.
    let weighted =
        (a["jitter_us"].as_f64().unwrap() * 2.0 + b["jitter_us"].as_f64().unwrap() * 3.0) / 5.0;
    assert!(
        (m["jitter_us"].as_f64().unwrap() - weighted).abs() < 1e-6,
        "{m}"
    );

    // A file given twice, and a TCP report beside a UDP one, are refused.
    let (code, _, err) = merge(&[&files[0], &files[0]]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the same run"), "{err}");
    let tcp = Command::new(tcpool_bin())
        .args(["bench", &target, "-c", "1", "-n", "10", "--json"])
        .output()
        .unwrap();
    assert!(tcp.status.success(), "{tcp:?}");
    let tcp_file = scratch.0.join("tcp.json");
    std::fs::write(&tcp_file, &tcp.stdout).unwrap();
    let (code, _, err) = merge(&[&files[0], tcp_file.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is a UDP report and"), "{err}");
    assert!(err.contains("cannot be merged"), "{err}");
}

/// The replies in the merged timeline, second by second, added up.
fn merged_answered(report: &Value) -> u64 {
    report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| n(s, "messages"))
        .sum()
}

#[test]
fn a_udp_fleet_splits_sockets_and_datagrams_and_merges_a_udp_report() {
    let server = udp_server(&["--udp-stamp"]);
    let target = server.addr.to_string();
    let mut fleet = Fleet::new("udp-fleet");
    fleet.agent("a", 0.0, &[]);
    // A machine whose clock is 2 s ahead: its report comes back on the coordinator's clock.
    fleet.agent("b", 2.0, &[]);
    let out = fleet.bench(
        &target,
        &[
            "--udp",
            "-c",
            "5",
            "-n",
            "3001",
            "--pipeline",
            "2",
            "--agents",
            "2",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["transport"], "udp", "{report}");
    assert_eq!(n(&report, "sockets"), 5, "{report}");
    for key in ["sent", "answered", "datagrams_received", "stamped_replies"] {
        assert_eq!(n(&report, key), 3001, "{key}: {report}");
    }
    assert_eq!(n(&report, "lost"), 0, "{report}");
    assert_eq!(decoded(&report, "rtt_histogram").len(), 3001, "{report}");

    // The split is one run's: 3 and 2 sockets, each with the datagrams of its sockets.
    let agents = report["fleet"]["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2, "{report}");
    let shares: Vec<(u64, u64, u64)> = agents
        .iter()
        .map(|a| {
            (
                n(a, "connections"),
                n(a, "messages_asked"),
                n(a, "datagrams_sent"),
            )
        })
        .collect();
    assert_eq!(shares.iter().map(|s| s.0).sum::<u64>(), 5, "{report}");
    assert_eq!(shares.iter().map(|s| s.1).sum::<u64>(), 3001, "{report}");
    for (_, asked, sent) in &shares {
        assert_eq!(asked, sent, "{report}");
    }
    // Both windows on one clock: the merged span is seconds, not the 2 s of b's offset.
    assert!(report["duration_s"].as_f64().unwrap() < 1.9, "{report}");
}
