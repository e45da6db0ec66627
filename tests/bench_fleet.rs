//! Many generators, one result: `--start-at` puts every generator's window at one time, the
//! JSON report carries the whole histogram, and `tcpool bench merge` adds reports exactly.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tcpool::Config;
use tcpool::client::bench;

use crate::bench::bench as run_bench;
use crate::support::*;

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A scratch directory for report files, removed on drop.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tcpool-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn write(&self, name: &str, report: &Value) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, report.to_string()).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `tcpool bench merge ARGS...`: exit code, stdout, stderr.
pub fn merge(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(tcpool_bin())
        .args(["bench", "merge"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn start_at_connects_first_and_starts_the_window_then() {
    let server = TestServer::start(Config::default());
    let at = unix_now() + 1.5;
    let run = run_bench(
        server.addr,
        &["-c", "2", "-d", "0.5", "--start-at", &format!("{at:.3}")],
    );
    run.assert_clean();
    let start = run.report["window"]["start"].as_f64().unwrap();
    // The window starts at the time given (give or take the clock's reading).
    assert!(
        (start - at).abs() < 0.05,
        "start {start} at {at}: {}",
        run.report
    );
    assert!(
        run.elapsed >= Duration::from_millis(1900),
        "{:?}",
        run.elapsed
    );
    // Connecting happened before, and the connect phase is the connects alone, not the
    // wait for the start that followed them (two loopback connects: milliseconds).
    assert!(
        run.report["connect_s"].as_f64().unwrap() < 0.5,
        "{}",
        run.report
    );

    let relative = run_bench(server.addr, &["-c", "1", "-n", "10", "--start-at", "+1"]);
    relative.assert_clean();
    assert!(
        relative.elapsed >= Duration::from_millis(900),
        "{:?}",
        relative.elapsed
    );
}

#[test]
fn json_carries_the_whole_histogram() {
    let server = TestServer::start(Config::default());
    let run = run_bench(server.addr, &["-c", "2", "-n", "500"]);
    run.assert_clean();
    let h = bench::decode(run.report["latency_histogram"].as_str().unwrap()).unwrap();
    assert_eq!(h.len(), 500);
    assert_eq!(
        h.value_at_quantile(0.99),
        run.report["latency_us"]["p99"].as_u64().unwrap()
    );
    assert_eq!(h.max(), run.report["latency_us"]["max"].as_u64().unwrap());
}

#[test]
fn merge_sums_two_runs_and_reads_percentiles_from_both_histograms() {
    let server = TestServer::start(Config::default());
    let a = run_bench(server.addr, &["-c", "2", "-n", "400"]);
    let b = run_bench(server.addr, &["-c", "3", "-n", "600", "--pipeline", "4"]);
    let scratch = Scratch::new("merge");
    let (fa, fb) = (
        scratch.write("a.json", &a.report),
        scratch.write("b.json", &b.report),
    );
    let (code, out, err) = merge(&[&fa, &fb, "--json"]);
    assert_eq!(code, 0, "{err}");
    let m: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(m["messages"], 1000);
    assert_eq!(m["bytes"], 1000 * 64);
    assert_eq!(m["connections"], 5);
    assert_eq!(m["errors"], 0);
    let mut both = bench::decode(a.report["latency_histogram"].as_str().unwrap()).unwrap();
    both.add(bench::decode(b.report["latency_histogram"].as_str().unwrap()).unwrap())
        .unwrap();
    assert_eq!(
        m["latency_us"]["p50"].as_u64().unwrap(),
        both.value_at_quantile(0.5)
    );
    assert_eq!(
        m["latency_us"]["p99"].as_u64().unwrap(),
        both.value_at_quantile(0.99)
    );
    assert_eq!(m["generators"].as_array().unwrap().len(), 2);
    // Run one after the other, the windows do not overlap: said on stderr.
    assert!(err.contains("overlap by only"), "{err}");

    let (code, text, _) = merge(&[&fa, &fb]);
    assert_eq!(code, 0);
    assert!(
        text.contains("Messages    1000 echoed and verified"),
        "{text}"
    );
    assert!(text.contains(&fa) && text.contains(&fb), "{text}");

    // A run is never counted twice: not a file given twice, not a merged report beside
    // the reports it was made from (`results/*.json` after a fleet run wrote merged.json).
    assert_eq!(m["runs"].as_array().unwrap().len(), 2, "{m}");
    let (code, out, err) = merge(&[&fa, &fa]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("is given twice"), "{err}");
    let fm = scratch.write("merged.json", &m);
    let (code, out, err) = merge(&[&fa, &fb, &fm]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains(&format!("and {fm} both hold run")), "{err}");
}

#[test]
fn merge_names_the_input_it_cannot_read() {
    let scratch = Scratch::new("merge-bad");
    let good = {
        let server = TestServer::start(Config::default());
        run_bench(server.addr, &["-c", "1", "-n", "10"]).report
    };
    let good = scratch.write("good.json", &good);
    let missing = scratch.0.join("missing.json").to_str().unwrap().to_owned();
    let (code, _, err) = merge(&[&good, &missing]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("cannot read {missing}")), "{err}");
    let garbage = scratch.write("garbage.json", &serde_json::json!({"messages": 1}));
    let (code, _, err) = merge(&[&good, &garbage]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{garbage} is not a tcpool bench --json report")),
        "{err}"
    );
}

#[test]
fn merge_is_a_subcommand_and_needs_reports() {
    let (code, _, err) = merge(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("REPORT.json"), "{err}");
}

/// The series of an SVG drawn by `bench plot`: the distinct colours of its 2-pixel curves,
/// and its texts. Fails unless the document parses as XML.
fn series(svg: &str) -> (Vec<String>, Vec<String>) {
    let doc = roxmltree::Document::parse(svg).expect("the SVG parses as XML");
    let mut colors: Vec<String> = Vec::new();
    let mut texts = Vec::new();
    for node in doc.descendants() {
        match node.tag_name().name() {
            "polyline" if node.attribute("stroke-width") == Some("2") => {
                let color = node.attribute("stroke").unwrap().to_owned();
                if !colors.contains(&color) {
                    colors.push(color);
                }
            }
            "text" => texts.push(node.text().unwrap_or("").trim().to_owned()),
            _ => {}
        }
    }
    (colors, texts)
}

#[test]
fn plot_draws_one_series_per_input() {
    let server = TestServer::start(Config::default());
    let scratch = Scratch::new("plot");
    let svg = scratch.0.join("run.svg");
    let a = run_bench(
        server.addr,
        &["-c", "2", "-d", "1.5", "--plot", svg.to_str().unwrap()],
    );
    a.assert_clean();
    let (colors, texts) = series(&std::fs::read_to_string(&svg).unwrap());
    assert_eq!(colors.len(), 1, "{colors:?}");
    assert!(texts.iter().any(|t| t == "99%"), "{texts:?}");

    let b = run_bench(server.addr, &["-c", "2", "-n", "300", "--pipeline", "4"]);
    let c = run_bench(server.addr, &["-c", "1", "-n", "100"]);
    let files: Vec<String> = [("a.json", &a), ("b.json", &b), ("c.json", &c)]
        .iter()
        .map(|(name, run)| scratch.write(name, &run.report))
        .collect();
    let out = scratch.0.join("all.svg");
    let status = Command::new(tcpool_bin())
        .args(["bench", "plot"])
        .args(&files)
        .args(["-o", out.to_str().unwrap()])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (colors, texts) = series(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(colors.len(), 3, "{colors:?}");
    // One title line per run, outside the panels: its name, target, load and figures.
    for (file, run) in files.iter().zip([&a, &b, &c]) {
        let title = texts
            .iter()
            .find(|t| t.starts_with(&format!("{file}: ")))
            .unwrap_or_else(|| panic!("no title for {file}: {texts:?}"));
        let connections = run.report["connections"].as_u64().unwrap();
        assert!(
            title.contains(&format!("{connections} connection")),
            "{title}"
        );
        assert!(
            title.contains(" msg/s, p50 ") && title.contains(", p99 "),
            "{title}"
        );
    }
    // Readable ticks: the latency axis in units, the throughput with separators.
    assert!(
        texts
            .iter()
            .any(|t| t.ends_with(" µs") || t.ends_with(" ms")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.contains(',')), "{texts:?}");
}

#[test]
fn hdr_log_has_one_interval_a_second_readable_by_hdrhistogram() {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    let server = TestServer::start(Config::default());
    let scratch = Scratch::new("hdr-log");
    let log = scratch.0.join("run.hlog");
    let run = run_bench(
        server.addr,
        &["-c", "2", "-d", "2.5", "--hdr-log", log.to_str().unwrap()],
    );
    run.assert_clean();
    let text = std::fs::read(&log).unwrap();
    let mut intervals = 0;
    let mut counted = 0;
    let mut base = None;
    for entry in IntervalLogIterator::new(&text) {
        match entry.expect("a well-formed log") {
            LogEntry::BaseTime(t) => base = Some(t),
            LogEntry::StartTime(_) => {}
            LogEntry::Interval(i) => {
                assert_eq!(i.start_timestamp(), Duration::from_secs(intervals));
                // V2 deflate, base64: what the JSON report carries too.
                counted += bench::decode(i.encoded_histogram()).unwrap().len();
                intervals += 1;
            }
        }
    }
    assert_eq!(intervals, 3, "2.5 s is three intervals");
    assert_eq!(counted, run.u64("messages"));
    let start = run.report["window"]["start"].as_f64().unwrap();
    assert!((base.unwrap().as_secs_f64() - start).abs() < 0.01);
}

#[test]
fn the_fleet_script_drives_agents_over_nats_on_one_window_and_merges_them() {
    let server = TestServer::start(Config::default());
    let scratch = Scratch::new("fleet");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench-fleet.sh");
    let mut command = Command::new("bash");
    command
        .arg(script)
        // -c is the fleet's total: two connections an agent.
        .args(["3", &server.addr.to_string(), "-c", "6", "-d", "0.5"])
        .env("TCPOOL", tcpool_bin())
        .env("OUT", &scratch.0)
        .stdin(Stdio::null());
    let finished = run_to_end(command, Duration::from_secs(30));
    assert_eq!(finished.code, Some(0), "{finished:?}");
    let merged: Value =
        serde_json::from_str(&std::fs::read_to_string(scratch.0.join("merged.json")).unwrap())
            .unwrap();
    assert_eq!(merged["generators"].as_array().unwrap().len(), 3);
    assert_eq!(merged["connections"], 6);
    // One start time for all: the windows coincide, so there is no overlap warning.
    let window =
        merged["window"]["end"].as_f64().unwrap() - merged["window"]["start"].as_f64().unwrap();
    assert!(window < 0.6, "{merged}");
    assert!(
        !finished.stderr.iter().any(|l| l.contains("overlap")),
        "{finished:?}"
    );
    assert!(
        finished
            .stdout
            .iter()
            .any(|l| l.contains("agent-gen-3.json")),
        "{finished:?}"
    );
    // The coordinator's own report agrees with the merge of the agents' reports.
    let fleet: Value =
        serde_json::from_str(&std::fs::read_to_string(scratch.0.join("fleet.json")).unwrap())
            .unwrap();
    assert_eq!(fleet["messages"], merged["messages"], "{fleet}");
    assert_eq!(fleet["latency_us"], merged["latency_us"], "{fleet}");
}
