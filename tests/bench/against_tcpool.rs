//! `tcpool bench` against tcpool itself: clean runs, every line ending, limits, rates, the report and Ctrl-C.

use super::*;

#[test]
fn bench_against_tcpool_in_process_is_clean() {
    let server = TestServer::start(Config::default());
    let run = bench(server.addr, &["-c", "8", "-d", "1"]);
    run.assert_clean();
    let r = &run.report;
    for key in [
        "connections",
        "messages",
        "bytes",
        "errors",
        "errors_by_kind",
        "duration_s",
        "msgs_per_sec",
        "latency_us",
        "connect_us",
    ] {
        assert!(r.get(key).is_some(), "no {key} in {r}");
    }
    for key in ["min", "p50", "p90", "p99", "p999", "max", "mean"] {
        assert!(
            r["latency_us"][key].is_number(),
            "no latency_us.{key} in {r}"
        );
    }
    assert_eq!(run.u64("connections"), 8);
    assert_eq!(run.u64("connected"), 8);
    assert!(r["duration_s"].as_f64().unwrap() >= 1.0, "{r}");
    assert!(r["msgs_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    let l = &r["latency_us"];
    assert!(l["min"].as_u64() <= l["p50"].as_u64() && l["p50"].as_u64() <= l["max"].as_u64());
    // The server saw at least every verified byte.
    let stats = server.registry.stats();
    assert!(stats.traffic.bytes_out >= run.u64("bytes"));
}

#[test]
fn every_line_ending_and_pipelining_is_verified() {
    let server = TestServer::start(Config::default());
    for eol in ["none", "lf", "crlf"] {
        let run = bench(
            server.addr,
            &[
                "-c",
                "4",
                "-n",
                "2000",
                "-s",
                "100",
                "--pipeline",
                "8",
                "--eol",
                eol,
            ],
        );
        run.assert_clean();
        assert_eq!(run.u64("messages"), 2000, "{}", run.report);
        assert_eq!(run.report["eol"], eol);
    }
    // The smallest messages: just the line ending, and a single seed-style byte.
    run_small(&server, "crlf", "2");
    run_small(&server, "none", "1");
}

fn run_small(server: &TestServer, eol: &str, size: &str) {
    let run = bench(
        server.addr,
        &["-c", "2", "-n", "200", "-s", size, "--eol", eol],
    );
    run.assert_clean();
    assert_eq!(run.u64("messages"), 200);
}

#[test]
fn bench_against_tcpool_serve_binary_is_clean() {
    let server = Binary::serve(&["--workers", "2"]);
    let run = bench(server.addr, &["-c", "16", "-d", "1", "--pipeline", "4"]);
    run.assert_clean();
    assert_eq!(run.u64("connected"), 16);
}

#[test]
fn thousand_connections_on_two_threads() {
    let server = Binary::serve(&["--workers", "2"]);
    let run = bench(
        server.addr,
        &[
            "-c",
            "1000",
            "-d",
            "1",
            "--threads",
            "2",
            "--connect-timeout",
            "10",
        ],
    );
    run.assert_clean();
    assert_eq!(run.u64("connected"), 1000, "{}", run.report);
    assert_eq!(run.u64("threads"), 2);
}

#[test]
fn messages_limit_sends_exactly_that_many() {
    let server = TestServer::start(Config::default());
    let run = bench(server.addr, &["-n", "1000", "-c", "10"]);
    run.assert_clean();
    assert_eq!(run.u64("messages"), 1000);
    assert_eq!(run.u64("sent"), 1000);
    assert_eq!(run.u64("bytes"), 64_000);

    // Warm-up messages are extra: still exactly 1000 measured.
    let before = server.registry.stats().traffic.bytes_in;
    let run = bench(server.addr, &["-n", "1000", "-c", "10", "--warmup", "0.3"]);
    run.assert_clean();
    assert_eq!(run.u64("messages"), 1000);
    assert_eq!(run.u64("sent"), 1000);
    let received = server.registry.stats().traffic.bytes_in - before;
    assert!(received > 64_000, "warm-up sent nothing: {received} bytes");

    // Fewer messages than connections: only as many connections as messages.
    let run = bench(server.addr, &["-n", "7", "-c", "10"]);
    run.assert_clean();
    assert_eq!(run.u64("messages"), 7);
    assert_eq!(run.u64("connections"), 7);
}

#[test]
fn rate_sends_about_rate_times_duration() {
    let server = TestServer::start(Config::default());
    let run = bench(server.addr, &["--rate", "200", "-d", "2", "-c", "8"]);
    run.assert_clean();
    let messages = run.u64("messages");
    assert!(
        (300..=500).contains(&messages),
        "expected about 400: {}",
        run.report
    );
    assert_eq!(run.report["rate"].as_f64(), Some(200.0));
}

#[test]
fn human_report_has_percentiles_chart_and_errors() {
    let server = TestServer::start(Config::default());
    let started = Instant::now();
    let (child, stdout, stderr) = spawn_bench(&server.addr.to_string(), &["-c", "2", "-n", "500"]);
    let mut child = child;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < RUN_LIMIT, "bench did not finish");
        thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{:?}", stderr.lock().unwrap());
    wait_line(&stdout, "the errors line", |l| l.starts_with("Errors"));
    let text = stdout.lock().unwrap().join("\n");
    for needle in [
        "Target",
        "Throughput",
        "msg/s",
        "MB/s",
        "p50",
        "p99.9",
        "mean",
        "Latency distribution",
        "Connect",
        "Errors      none",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    // No progress bar when stderr is not a terminal.
    assert!(
        stderr.lock().unwrap().is_empty(),
        "{:?}",
        stderr.lock().unwrap()
    );
}

#[test]
fn ctrl_c_stops_the_run_and_still_reports() {
    let server = TestServer::start(Config::default());
    let started = Instant::now();
    let (child, stdout, stderr) =
        spawn_bench(&server.addr.to_string(), &["--json", "-c", "4", "-d", "60"]);
    thread::sleep(Duration::from_millis(800));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let run = finish(child, stdout, stderr, started);
    assert!(
        run.elapsed < Duration::from_secs(10),
        "took {:?}",
        run.elapsed
    );
    // The report is printed whole, and the exit code says it was interrupted (130).
    assert_eq!(run.code, 130, "{}", run.report);
    assert_eq!(run.u64("errors"), 0, "{}", run.report);
    assert!(run.u64("messages") > 0, "{}", run.report);
    assert_eq!(run.report["interrupted"], true);
    assert!(run.report["duration_s"].as_f64().unwrap() < 10.0);
}

#[test]
fn an_output_path_that_cannot_be_written_is_said_before_the_run() {
    let server = TestServer::start(Config::default());
    for flag in ["--plot", "--hdr-log"] {
        let started = Instant::now();
        let out = Command::new(tcpool_bin())
            .args(["bench", &server.addr.to_string(), "-c", "2", "-d", "30"])
            .args([flag, "/nonexistent-dir/out"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("cannot create /nonexistent-dir/out"),
            "{stderr}"
        );
        // Refused before connecting, not after the 30 s run.
        assert!(started.elapsed() < Duration::from_secs(10), "{flag}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn size_too_small_for_the_line_ending_is_refused() {
    let out = Command::new(tcpool_bin())
        .args(["bench", "127.0.0.1:9", "-s", "1", "--eol", "crlf", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("size 1 is too small"), "{stderr}");

    let out = Command::new(tcpool_bin())
        .args(["bench", "-d", "1", "-n", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "-d and -n conflict");
}
