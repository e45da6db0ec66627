//! The run second by second: every second of a `tcpool bench` timeline, of its `--hdr-log`
//! and of a `bench merge` holds the same latencies as the whole run, in histograms of the same
//! bounds and precision, from microseconds to seconds (the slow ones made by the server's own
//! latency fault). The log is read back by the Python `hdrhistogram` package, an HdrHistogram
//! written by others (`scripts/test.sh` installs it).

use std::process::{Command, Stdio};
use std::thread;

use hdrhistogram::Histogram;
use serde_json::Value;
use tcpool::Config;
use tcpool::client::bench;

use crate::bench::{Run, bench};
use crate::bench_fleet::{Scratch, merge, unix_now};
use crate::support::*;

/// A tcpool server in this process whose replies go through `fault`.
fn faulted(fault: &str) -> TestServer {
    TestServer::start(Config {
        workers: 2,
        faults: vec![fault.parse().unwrap()],
        seed: Some(1),
        ..Config::default()
    })
}

fn decode(histogram: &Value) -> Histogram<u64> {
    bench::decode(histogram.as_str().expect("a histogram in base64")).unwrap()
}

fn number(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number: {report}"))
}

/// Checks every second of `report`'s timeline against its own histogram and against the
/// whole run's, and returns the seconds added together: the whole run less its late replies.
fn seconds_of(report: &Value) -> Histogram<u64> {
    let whole = decode(&report["latency_histogram"]);
    let mut union = Histogram::<u64>::new_from(&whole);
    for second in report["timeline"].as_array().unwrap() {
        let h = decode(&second["histogram"]);
        assert_eq!(
            (h.low(), h.high(), h.sigfig()),
            (whole.low(), whole.high(), whole.sigfig()),
            "a second has the whole run's bounds and precision: {second}"
        );
        let n = number(second, "messages");
        assert_eq!(h.len(), n, "{second}");
        let (p50, p99, max) = (
            number(second, "p50_us"),
            number(second, "p99_us"),
            number(second, "max_us"),
        );
        if n == 0 {
            assert_eq!((p50, p99, max), (0, 0, 0), "{second}");
            continue;
        }
        assert_eq!(p50, h.value_at_quantile(0.5), "{second}");
        assert_eq!(p99, h.value_at_quantile(0.99), "{second}");
        assert_eq!(max, h.max(), "{second}");
        assert!(
            whole.min() <= p50 && p50 <= p99 && p99 <= max && max <= whole.max(),
            "second {second} outside the run's {}..{} us",
            whole.min(),
            whole.max()
        );
        union.add(&h).unwrap();
    }
    let late = number(report, "late_replies");
    assert_eq!(union.len(), number(report, "messages"), "{report}");
    assert_eq!(whole.len(), union.len() + late, "{report}");
    // Bucket by bucket, every second's count is in the whole; what is left is the late replies.
    let mut rest = whole.clone();
    rest.subtract(&union)
        .expect("the seconds hold no value the whole run does not");
    assert_eq!(rest.len(), late);
    union
}

/// A run without late replies: its seconds added together are its whole histogram, and read
/// the same percentiles as its report.
fn assert_seconds_are_the_whole(run: &Run) {
    run.assert_clean();
    assert_eq!(run.u64("late_replies"), 0, "{}", run.report);
    let union = seconds_of(&run.report);
    let whole = decode(&run.report["latency_histogram"]);
    assert_eq!(union, whole);
    let summary = &run.report["latency_us"];
    for (key, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
        assert_eq!(
            union.value_at_quantile(q),
            summary[key].as_u64().unwrap(),
            "{key}: {summary}"
        );
    }
    assert_eq!(union.min(), summary["min"].as_u64().unwrap());
    assert_eq!(union.max(), summary["max"].as_u64().unwrap());
}

/// The replies in the seconds that hold some.
fn busy_seconds(report: &Value) -> Vec<&Value> {
    report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["messages"].as_u64().unwrap() > 0)
        .collect()
}

#[test]
fn seconds_add_up_to_the_whole_run_from_microseconds_to_seconds() {
    // Microseconds: a plain echo server, open loop over a second and a half.
    let plain = TestServer::start(Config::default());
    let run = bench(plain.addr, &["-c", "2", "-n", "1500", "--rate", "1000"]);
    assert_seconds_are_the_whole(&run);
    assert!(busy_seconds(&run.report).len() >= 2, "{}", run.report);

    // Milliseconds: 5 to 35 ms, a second and more of them.
    let jittered = faulted("latency,delay=20ms,jitter=15ms");
    let run = bench(jittered.addr, &["-c", "8", "-n", "600"]);
    assert_seconds_are_the_whole(&run);
    let seconds = busy_seconds(&run.report);
    assert!(seconds.len() >= 2, "{}", run.report);
    for s in seconds {
        assert!(s["p50_us"].as_u64().unwrap() >= 5_000, "{s}");
    }

    // Seconds: three replies held two seconds each, all in the window's third second.
    let slow = faulted("latency,delay=2s");
    let run = bench(slow.addr, &["-c", "3", "-n", "3"]);
    assert_seconds_are_the_whole(&run);
    let seconds = busy_seconds(&run.report);
    assert_eq!(seconds.len(), 1, "{}", run.report);
    assert_eq!(seconds[0]["messages"], 3);
    assert!(seconds[0]["p99_us"].as_u64().unwrap() >= 2_000_000);
}

#[test]
fn late_replies_are_in_the_whole_run_and_in_no_second() {
    // The issue's run: every reply held 20 ms, each connection's last one still in flight
    // when the window closes.
    let server = faulted("latency,delay=20ms");
    let run = bench(server.addr, &["-c", "8", "-d", "2"]);
    run.assert_clean();
    seconds_of(&run.report);
    assert_eq!(busy_seconds(&run.report).len(), 2, "{}", run.report);
    assert_eq!(
        run.u64("late_replies"),
        run.u64("in_flight_at_end"),
        "{}",
        run.report
    );
    for s in busy_seconds(&run.report) {
        assert!(s["p50_us"].as_u64().unwrap() >= 20_000, "{s}");
    }

    // Two-second replies: one each in the window, the next one after it.
    let slow = faulted("latency,delay=2s");
    let run = bench(slow.addr, &["-c", "2", "-d", "3"]);
    run.assert_clean();
    seconds_of(&run.report);
    assert_eq!(run.u64("messages"), 2, "{}", run.report);
    assert_eq!(run.u64("late_replies"), 2, "{}", run.report);
}

/// Reads an interval log with the Python `hdrhistogram` package: one JSON line per interval
/// (its start from the log's start, count, p50, p99, min, max), then one for all of them
/// added together.
const HDRH_READER: &str = r#"
import json, math, sys
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

def summary(h):
    n = h.get_total_count()
    if n == 0:
        return {"count": 0}
    def at(q):
        # tcpool reads a quantile at rank ceil(q * n), as the Rust crate does; hdrh rounds the
        # rank to the nearest instead, so it is asked for the percentile of that exact rank.
        rank = max(1, math.ceil(q * n))
        return h.get_value_at_percentile(100.0 * rank / n)
    return {"count": n, "p50": at(0.5), "p99": at(0.99),
            "min": h.get_min_value(), "max": h.get_max_value()}

reader = HistogramLogReader(sys.argv[1], HdrHistogram(1, 3600000000, 3))
union = HdrHistogram(1, 3600000000, 3)
while True:
    h = reader.get_next_interval_histogram()
    if h is None:
        break
    union.add(h)
    line = summary(h)
    line["start_s"] = h.get_start_time_stamp() / 1000.0 - reader.get_start_time_sec()
    print(json.dumps(line))
print(json.dumps(summary(union)))
"#;

pub(crate) fn read_with_hdrh(log: &std::path::Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args(["-c", HDRH_READER])
        .arg(log)
        .stdin(Stdio::null())
        .output()
        .expect("python3 (scripts/test.sh installs it and the hdrhistogram package)");
    assert!(
        out.status.success(),
        "hdrh could not read the log: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_hdr_log_reads_the_same_in_python_hdrhistogram() {
    let server = faulted("latency,delay=20ms,jitter=15ms");
    let scratch = Scratch::new("timeline-hdrh");
    let log = scratch.0.join("run.hlog");
    let run = bench(
        server.addr,
        &["-c", "8", "-n", "800", "--hdr-log", log.to_str().unwrap()],
    );
    assert_seconds_are_the_whole(&run);
    let mut lines = read_with_hdrh(&log);
    let all = lines.pop().expect("the intervals added together");
    let timeline = run.report["timeline"].as_array().unwrap();
    assert!(timeline.len() >= 2, "{}", run.report);
    assert_eq!(lines.len(), timeline.len(), "{lines:?}");
    for (i, (interval, second)) in lines.iter().zip(timeline).enumerate() {
        let start = interval["start_s"].as_f64().unwrap();
        assert!((start - i as f64).abs() < 1e-3, "{interval}");
        assert_eq!(interval["count"], second["messages"], "{interval} {second}");
        if second["messages"] == 0 {
            continue;
        }
        assert_eq!(interval["p50"], second["p50_us"], "{interval} {second}");
        assert_eq!(interval["p99"], second["p99_us"], "{interval} {second}");
        assert_eq!(interval["max"], second["max_us"], "{interval} {second}");
    }
    let whole = &run.report["latency_us"];
    assert_eq!(all["count"], run.report["messages"], "{all}");
    for key in ["p50", "p99", "min", "max"] {
        assert_eq!(all[key], whole[key], "{key}: {all} {whole}");
    }
}

#[test]
fn merged_seconds_are_the_generators_seconds_added() {
    let server = faulted("latency,delay=20ms,jitter=15ms");
    let at = format!("{:.3}", unix_now() + 1.5);
    let runs: Vec<Run> = thread::scope(|scope| {
        let generators: Vec<_> = ["3", "5"]
            .map(|c| {
                let at = &at;
                let addr = server.addr;
                scope.spawn(move || bench(addr, &["-c", c, "-d", "2", "--start-at", at]))
            })
            .into_iter()
            .collect();
        generators.into_iter().map(|g| g.join().unwrap()).collect()
    });
    let scratch = Scratch::new("timeline-merge");
    let files: Vec<String> = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            run.assert_clean();
            seconds_of(&run.report);
            scratch.write(&format!("gen-{i}.json"), &run.report)
        })
        .collect();
    let (code, out, err) = merge(&[&files[0], &files[1], "--json"]);
    assert_eq!(code, 0, "{err}");
    let merged: Value = serde_json::from_str(&out).unwrap();
    seconds_of(&merged);

    // Each generator's second lands on the merged second of the same wall-clock second.
    let start = merged["window"]["start"].as_f64().unwrap();
    let timeline = merged["timeline"].as_array().unwrap();
    let mut expected: Vec<Histogram<u64>> = timeline
        .iter()
        .map(|s| Histogram::new_from(&decode(&s["histogram"])))
        .collect();
    for run in &runs {
        let offset = (run.report["window"]["start"].as_f64().unwrap() - start).round() as usize;
        for s in run.report["timeline"].as_array().unwrap() {
            let at = s["second"].as_u64().unwrap() as usize + offset;
            expected[at].add(decode(&s["histogram"])).unwrap();
        }
    }
    for (s, want) in timeline.iter().zip(&expected) {
        assert_eq!(&decode(&s["histogram"]), want, "{s}");
        assert_eq!(s["messages"].as_u64().unwrap(), want.len(), "{s}");
        if !want.is_empty() {
            assert_eq!(s["p99_us"].as_u64().unwrap(), want.value_at_quantile(0.99));
            assert!(s["p50_us"].as_u64().unwrap() >= 5_000, "{s}");
        }
    }
}
