//! Many generators, one result: `--start-at` puts every generator's window at one time, the
//! JSON report carries the whole histogram, and `tcpool bench merge` adds reports exactly.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tcpool::Config;
use tcpool::client::bench;

use crate::bench::bench as run_bench;
use crate::support::*;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A scratch directory for report files, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tcpool-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, report: &Value) -> String {
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

fn merge(args: &[&str]) -> (i32, String, String) {
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
    // Connecting happened before: the connect phase is the wait for the start.
    assert!(
        run.report["connect_s"].as_f64().unwrap() >= 1.0,
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
