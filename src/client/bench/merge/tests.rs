use super::*;
use crate::client::bench::ErrorKind;
use crate::client::bench::report::RequestKind;

/// A report that recorded exactly `values`, over `window`.
fn run(values: &[u64], window: (f64, f64), errors: u64) -> Report {
    let mut h = histogram();
    for &v in values {
        h.record(v).unwrap();
    }
    let second = SparseHistogram::of(&h).unwrap();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut r = Report::empty("127.0.0.1:8900".into());
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    r.runs = vec![format!("test-{id}")];
    r.messages = values.len() as u64;
    r.bytes = values.len() as u64 * 64;
    r.connections = 4;
    r.window = Window {
        start: window.0,
        end: window.1,
    };
    r.timeline = vec![Second::new(0, second, 0)];
    if errors > 0 {
        r.errors_by_kind.insert(ErrorKind::Timeout, errors);
    }
    let mut connect = histogram();
    connect.record(100).unwrap();
    r.connected = 1;
    r.assemble(h, connect)
}

#[test]
fn merged_percentiles_are_those_of_one_histogram_of_both_runs() {
    let a: Vec<u64> = (1..=900).collect();
    let b: Vec<u64> = (1..=100).map(|i| i * 1_000).collect();
    let mut both = histogram();
    for &v in a.iter().chain(&b) {
        both.record(v).unwrap();
    }
    let (ra, rb) = (run(&a, (100.0, 110.0), 1), run(&b, (100.2, 110.2), 2));
    // Through JSON, as `bench merge` reads them.
    let back = |r: &Report| -> Report {
        serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap()
    };
    let merged = merge(&mut [("a.json".into(), back(&ra)), ("b.json".into(), back(&rb))]).unwrap();
    let m = &merged.report;
    assert_eq!(m.messages, 1_000);
    assert_eq!(m.bytes, 64_000);
    assert_eq!(m.errors, 3);
    assert_eq!(m.errors_by_kind[&ErrorKind::Timeout], 3);
    assert_eq!(m.connections, 8);
    assert_eq!(m.connected, 2);
    assert_eq!(m.latency_histogram(), &both);
    for (q, got) in [
        (0.5, m.latency_us.p50),
        (0.99, m.latency_us.p99),
        (0.999, m.latency_us.p999),
    ] {
        assert_eq!(got, both.value_at_quantile(q), "quantile {q}");
    }
    assert_eq!(m.latency_us.max, both.max());
    // p50 of the merge is not the mean of the two p50s.
    assert_ne!(
        m.latency_us.p50,
        (ra.latency_us.p50 + rb.latency_us.p50) / 2
    );
    assert_eq!(
        m.window,
        Window {
            start: 100.0,
            end: 110.2
        }
    );
    assert!((m.msgs_per_sec - 1_000.0 / 10.2).abs() < 1e-9);
    assert!((merged.overlap - 9.8 / 10.2).abs() < 1e-9);
    assert!(merged.warning().is_none());
    assert_eq!(m.generators.len(), 2);
    assert_eq!(m.generators[1].source, "b.json");
    // Both runs' first second is the same wall-clock second.
    assert_eq!(m.timeline.len(), 1);
    assert_eq!(m.timeline[0].messages, 1_000);
}

#[test]
fn windows_that_barely_overlap_are_warned_about() {
    let merged = merge(&mut [
        ("a".into(), run(&[10], (0.0, 10.0), 0)),
        ("b".into(), run(&[10], (5.0, 15.0), 0)),
    ])
    .unwrap();
    assert!((merged.overlap - 5.0 / 15.0).abs() < 1e-9);
    assert!(merged.warning().unwrap().contains("33%"));
    // The second generator's first second lands five seconds in.
    assert_eq!(merged.report.timeline.len(), 6);
    assert_eq!(merged.report.timeline[5].messages, 1);
    // The empty seconds between go through JSON and come back empty.
    let json = serde_json::to_string(&merged.report).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert!(back.timeline[1..5].iter().all(|s| s.histogram.is_empty()));
    assert_eq!(
        back.timeline[5].histogram,
        merged.report.timeline[5].histogram
    );
    assert_eq!(merged.report.request, "echo");
    assert!(merge(&mut []).is_err());
    let mut redis = run(&[10], (0.0, 10.0), 0);
    redis.request = "PING\\r\\n".into();
    let mixed = merge(&mut [
        ("a".into(), run(&[10], (0.0, 10.0), 0)),
        ("b".into(), redis),
    ])
    .unwrap();
    assert_eq!(mixed.report.request, MIXED);
}

#[test]
fn hostile_reports_are_refused_not_trusted() {
    let window = |start, end| {
        let mut r = run(&[10], (0.0, 10.0), 0);
        r.window = Window { start, end };
        r
    };
    for (r, why) in [
        (window(-1e308, 1e308), "not in UNIX time"),
        (window(f64::NAN, 10.0), "not in UNIX time"),
        (window(10.0, 5.0), "not in UNIX time"),
    ] {
        let error = merge(&mut [("a".into(), r)]).unwrap_err();
        assert!(error.contains(why), "{error}");
    }
    let mut far = run(&[10], (0.0, 10.0), 0);
    far.timeline[0].second = 1_000_000_000_000;
    let error = merge(&mut [("a".into(), far)]).unwrap_err();
    assert!(error.contains("timeline has second"), "{error}");
    let error = merge(&mut [
        ("a".into(), run(&[10], (0.0, 10.0), 0)),
        ("b".into(), run(&[10], (4e9, 4e9 + 1.0), 0)),
    ])
    .unwrap_err();
    assert!(error.contains("windows span"), "{error}");
    // Within the longest span, but a second of timeline each, a month apart.
    let error = merge(&mut [
        ("a".into(), run(&[10], (0.0, 1.0), 0)),
        ("b".into(), run(&[10], (2_999_000.0, 2_999_001.0), 0)),
    ])
    .unwrap_err();
    assert!(error.contains("hold 2 s of timeline"), "{error}");
    let huge = || {
        let mut r = run(&[10], (0.0, 10.0), 0);
        r.messages = u64::MAX;
        r
    };
    let error = merge(&mut [("a".into(), huge()), ("b".into(), huge())]).unwrap_err();
    assert!(error.contains("b: the counts overflow"), "{error}");
    let mut errors = run(&[10], (0.0, 10.0), 0);
    errors.errors_by_kind.insert(ErrorKind::Timeout, u64::MAX);
    errors.errors_by_kind.insert(ErrorKind::ConnectRefused, 1);
    let error = merge(&mut [("a".into(), errors)]).unwrap_err();
    assert!(error.contains("error counts overflow"), "{error}");
}

#[test]
fn classified_replies_add_up_and_kinds_are_left_out_with_a_note() {
    let with = |ok, error, miss, prefix: &str| {
        let mut r = run(&[10], (0.0, 10.0), 0);
        r.replies = Some(Replies {
            ok,
            error,
            miss,
            hit_ratio: None,
            errors_by_prefix: [(prefix.to_owned(), error)].into(),
        });
        r.reconnects = 2;
        r
    };
    let m = merge(&mut [
        ("a".into(), with(60, 1, 40, "ERR")),
        ("b".into(), with(30, 2, 10, "NOAUTH")),
    ])
    .unwrap();
    let replies = m.report.replies.clone().unwrap();
    assert_eq!((replies.ok, replies.error, replies.miss), (90, 3, 50));
    assert_eq!(replies.hit_ratio, Some(90.0 / 140.0));
    assert_eq!(replies.errors_by_prefix["NOAUTH"], 2);
    assert_eq!(m.report.reconnects, 4);
    assert_eq!(m.note(), None);
    let mut mix = with(1, 0, 0, "x");
    mix.kinds = vec![RequestKind {
        request: "GET".into(),
        weight: 1,
        messages: 1,
        msgs_per_sec: 0.1,
        latency_us: Default::default(),
        replies: Replies::default(),
    }];
    let m = merge(&mut [("mix".into(), mix)]).unwrap();
    assert!(m.report.kinds.is_empty());
    assert!(m.note().unwrap().contains("left out"));
}

#[test]
fn a_run_is_never_counted_twice() {
    let (a, b) = (run(&[10], (0.0, 10.0), 0), run(&[20], (0.0, 10.0), 0));
    // The same report twice.
    let error = merge(&mut [("a".into(), a.clone()), ("a".into(), a.clone())]).unwrap_err();
    assert!(error.contains("a is given twice"), "{error}");
    // A merged report beside one of its inputs.
    let ab = merge(&mut [("a".into(), a.clone()), ("b".into(), b.clone())]).unwrap();
    assert_eq!(ab.report.runs, [a.runs[0].clone(), b.runs[0].clone()]);
    let error = merge(&mut [("ab".into(), ab.report.clone()), ("b".into(), b)]).unwrap_err();
    assert!(error.contains("ab and b both hold run"), "{error}");
    // Merged reports that do not overlap merge, and list every run.
    let (c, d) = (run(&[30], (0.0, 10.0), 0), run(&[40], (0.0, 10.0), 0));
    let cd = merge(&mut [("c".into(), c), ("d".into(), d)]).unwrap();
    let all = merge(&mut [("ab".into(), ab.report), ("cd".into(), cd.report)]).unwrap();
    assert_eq!(all.report.runs.len(), 4);
    assert_eq!(all.report.messages, 4);
    // A report from before run ids: the same file twice is still caught.
    let mut old = a;
    old.runs.clear();
    let error = merge(&mut [("x".into(), old.clone()), ("y".into(), old)]).unwrap_err();
    assert!(error.contains("x and y both hold run"), "{error}");
}
