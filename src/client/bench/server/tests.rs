use super::*;

#[test]
fn samples_read_labels_escapes_and_infinities() {
    let s = Samples::parse(
        "# HELP x y\nx_total{a=\"1\",b=\"q\\\"z\"} 3\nx_total{a=\"2\"} 4 1700000000\n\
         h_bucket{le=\"+Inf\"} 7\nbare 1.5e3\ngarbage\n",
    );
    assert_eq!(s.sum("x_total", &[]), 7.0);
    assert_eq!(s.sum("x_total", &[("b", "q\"z")]), 3.0);
    assert_eq!(s.sum("h_bucket", &[("le", "+Inf")]), 7.0);
    assert_eq!(s.sum("bare", &[]), 1500.0);
    assert_eq!(s.sum("garbage", &[]), 0.0);
}

#[test]
fn percentiles_interpolate_within_the_bucket() {
    let before = Samples::parse(
        "tcpool_reply_seconds_bucket{le=\"0.00001\"} 0\n\
         tcpool_reply_seconds_bucket{le=\"0.00002\"} 0\n\
         tcpool_reply_seconds_bucket{le=\"+Inf\"} 0\n",
    );
    let after = Samples::parse(
        "tcpool_reply_seconds_bucket{le=\"0.00001\"} 50\n\
         tcpool_reply_seconds_bucket{le=\"0.00002\"} 100\n\
         tcpool_reply_seconds_bucket{le=\"+Inf\"} 100\n",
    );
    let r = reply_times(&before, &after);
    assert_eq!(r.count, 100);
    assert!((r.p50_us - 10.0).abs() < 1e-6, "{r:?}");
    assert!((r.p90_us - 18.0).abs() < 1e-6, "{r:?}");
}

/// A loopback HTTP server that reads the request and then runs `answer` on the stream.
fn http_server(answer: impl FnOnce(std::net::TcpStream) + Send + 'static) -> MetricsUrl {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // Read the whole request head: closing a socket with unread input would reset
        // the connection and could wipe out the answer before the client reads it.
        let mut request = Vec::new();
        let mut chunk = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&chunk[..n]),
            }
        }
        answer(stream);
    });
    url.parse().unwrap()
}

#[test]
fn a_scrape_wants_tcpool_metrics_in_bounded_size_and_time() {
    let timeout = Duration::from_millis(500);
    let not_ours = http_server(|mut s| {
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nhello\n");
    });
    let error = not_ours.scrape(timeout).unwrap_err().to_string();
    assert!(error.contains("not with tcpool's metrics"), "{error}");

    let ours = http_server(|mut s| {
        let _ = s.write_all(
            b"HTTP/1.0 200 OK\r\n\r\n# TYPE tcpool_sessions_closed_total counter\n\
              tcpool_sessions_closed_total 3\n",
        );
    });
    assert_eq!(ours.scrape(timeout).unwrap().sum(CLOSED, &[]), 3.0);

    // Held open, never answering: the scrape gives up at its timeout and says so.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let stalled = http_server(move |_s| {
        let _ = held.recv_timeout(Duration::from_secs(10));
    });
    let started = Instant::now();
    let error = stalled.scrape(timeout).unwrap_err().to_string();
    assert!(error.contains("did not answer within 500ms"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(release);

    // An endless answer, in small pieces: refused at the cap or at the timeout.
    let endless = http_server(|mut s| {
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n");
        let line = [b'#'; 4096];
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) && s.write_all(&line).is_ok() {}
    });
    let started = Instant::now();
    let error = endless.scrape(timeout).unwrap_err().to_string();
    assert!(
        error.contains("answered more than") || error.contains("did not answer within"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn urls_take_a_path_or_default_to_metrics() {
    let u: MetricsUrl = "http://127.0.0.1:9900".parse().unwrap();
    assert_eq!(u.to_string(), "http://127.0.0.1:9900/metrics");
    let u: MetricsUrl = "localhost:9/m".parse().unwrap();
    assert_eq!(u.to_string(), "http://localhost:9/m");
    assert!("https://x:1/".parse::<MetricsUrl>().is_err());
    assert!("http://:x/".parse::<MetricsUrl>().is_err());
}

#[test]
fn a_restart_between_the_scrapes_is_said_instead_of_disagreements() {
    let url: MetricsUrl = "127.0.0.1:9".parse().unwrap();
    let report = Report::empty("127.0.0.1:1".into());
    let mut report = report;
    report.connected = 4;
    let before = Samples::parse("tcpool_sessions_total 10\nprocess_start_time_seconds 100\n");
    // The same process: four sessions the client opened that the server did not count.
    let same = Samples::parse("tcpool_sessions_total 10\nprocess_start_time_seconds 100\n");
    let view = ServerView::between(&url, &before, &same, &report);
    assert!(!view.restarted);
    assert!(
        view.warnings[0].contains("the server counted 0 session(s)"),
        "{view:?}"
    );
    // Another process: its counts start again; that is what is said.
    let other = Samples::parse("tcpool_sessions_total 0\nprocess_start_time_seconds 200\n");
    let view = ServerView::between(&url, &before, &other, &report);
    assert!(view.restarted);
    assert_eq!(view.warnings.len(), 1, "{view:?}");
    assert!(
        view.warnings[0].contains("process changed between the scrapes"),
        "{view:?}"
    );
}

#[test]
fn faults_that_touched_sessions_during_the_run_are_named() {
    let url: MetricsUrl = "127.0.0.1:9".parse().unwrap();
    let report = Report::empty("127.0.0.1:1".into());
    let before = Samples::parse(
        "tcpool_fault_sessions_total{fault=\"#1 latency,delay=20ms\"} 3\n\
         tcpool_fault_sessions_total{fault=\"#2 stall\"} 5\n",
    );
    let after = Samples::parse(
        "tcpool_fault_sessions_total{fault=\"#1 latency,delay=20ms\"} 7\n\
         tcpool_fault_sessions_total{fault=\"#2 stall\"} 5\n\
         tcpool_fault_sessions_total{fault=\"#3 \\u001b[2J\"} 1\n",
    );
    let view = ServerView::between(&url, &before, &after, &report);
    assert_eq!(view.faults[0], "#1 latency,delay=20ms");
    assert_eq!(view.faults.len(), 2, "{view:?}");
    let text = view.to_string();
    assert!(
        text.contains("Faults    active on the server: #1 latency,delay=20ms"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "{text:?}");
}
