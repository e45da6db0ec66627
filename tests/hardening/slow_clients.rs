//! Slowloris, half-open and half-closed clients hold no worker and lose no reply.

use super::*;

#[test]
fn slowloris_holds_no_worker_and_idle_timeout_closes_it() {
    raise_fd_limit();
    // One worker: if a trickling or silent client held it, the steady client would starve.
    let server = TestServer::start(Config {
        workers: 1,
        idle_timeout: Some(Duration::from_secs(2)),
        ..Config::default()
    });
    let silent: Vec<TcpStream> = (0..100).map(|_| connect(server.addr)).collect();
    let mut trickling: Vec<(TcpStream, Vec<u8>)> = (0..100)
        .map(|_| (connect(server.addr), Vec::new()))
        .collect();
    let steady_stop = Arc::new(AtomicBool::new(false));
    let steady = {
        let stop = steady_stop.clone();
        let mut c = connect(server.addr);
        thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) && n < 1000 {
                let msg = format!("steady {n}\n");
                assert_eq!(round_trip(&mut c, msg.as_bytes()), msg.as_bytes());
                n += 1;
                thread::sleep(Duration::from_millis(50));
            }
            (c, n)
        })
    };
    // One byte per client a second, no newline: a request that never ends.
    for &byte in b"GET" {
        for (c, sent) in &mut trickling {
            if c.write_all(&[byte]).is_ok() {
                sent.push(byte);
            }
        }
        thread::sleep(Duration::from_secs(1));
    }
    // Then they stall: silent and trickling clients alike are told `quit` and closed.
    for mut c in silent {
        assert_eq!(read_to_close(&mut c), b"quit", "a silent client");
    }
    for (mut c, sent) in trickling {
        let got = read_to_close(&mut c);
        let echoed = got
            .strip_suffix(b"quit")
            .unwrap_or_else(|| panic!("no quit: {got:?}"));
        assert!(sent.starts_with(echoed), "{got:?} for {sent:?}");
    }
    server.wait_for("only the steady client left", |r| r.len() == 1);
    steady_stop.store(true, Ordering::Relaxed);
    let (mut c, rounds) = steady.join().unwrap();
    assert!(rounds >= 10, "{rounds} round trips");
    assert_eq!(round_trip(&mut c, b"after\n"), b"after\n");
}

/// The `in: N messages, M bytes` figure of the console's `/stats`.
fn bytes_in(server: &mut Binary) -> u64 {
    let before = server.stdout_lines().len();
    server.type_line("/stats");
    let deadline = Instant::now() + IO_TIMEOUT;
    let line = loop {
        let fresh = server.stdout_lines()[before..]
            .iter()
            .find(|l| l.starts_with("in: "))
            .cloned();
        if let Some(line) = fresh {
            break line;
        }
        assert!(Instant::now() < deadline, "no answer to /stats");
        thread::sleep(Duration::from_millis(5));
    };
    line.split(", ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {line:?}"))
}

#[test]
fn slowloris_partial_lines_cost_only_bounded_buffers_and_idle_timeout_drops_them_by_name() {
    const MAX_LINE: u64 = 4096;
    const CLIENTS: usize = 300;
    raise_fd_limit();
    // Manual mode holds partial lines (echo holds nothing), up to --max-line.
    let mut server = Binary::serve(&[
        "--mode",
        "manual",
        "--workers",
        "2",
        "--max-line",
        &MAX_LINE.to_string(),
        "--idle-timeout",
        "4",
    ]);
    let pid = server.child.id();
    let idle_fds = fd_count(pid);
    for i in 0..50 {
        let mut c = connect(server.addr);
        c.write_all(format!("warm {i}\r\n{}", "w".repeat(10_000)).as_bytes())
            .unwrap();
        c.write_all(b"\r\nquit\r\n").unwrap();
        assert_eq!(read_to_close(&mut c), b"");
    }
    wait_until("the warm-up sessions to end", || fd_count(pid) <= idle_fds);
    let before_rss = server.rss_kib();
    let before_in = bytes_in(&mut server);

    // Each sends a request line, then 10,000 bytes of a header line that never ends.
    let request = format!("GET / HTTP/1.1\r\nX-Slow: {}", "s".repeat(10_000));
    let clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut c = connect(server.addr);
            c.write_all(request.as_bytes()).unwrap();
            c
        })
        .collect();
    let want_in = before_in + (CLIENTS * request.len()) as u64;
    let deadline = Instant::now() + IO_TIMEOUT;
    while bytes_in(&mut server) < want_in {
        assert!(Instant::now() < deadline, "the server did not read it all");
        thread::sleep(Duration::from_millis(20));
    }
    let after_rss = server.rss_kib();
    // Measured while every one of them was still connected (none timed out yet).
    assert!(
        fd_count(pid) >= idle_fds + CLIENTS,
        "sessions ended too early"
    );
    let per_session = after_rss.saturating_sub(before_rss) as f64 / CLIENTS as f64;
    // Bounded by --max-line plus one read (64 KiB) of held bytes, plus the idle session.
    let bound = (MAX_LINE + 64 * 1024) as f64 / 1024.0 + 16.0;
    println!(
        "slowloris: {CLIENTS} sessions holding partial lines: rss {before_rss} -> {after_rss} \
         KiB: {per_session:.2} KiB per session (bound {bound:.0} KiB)"
    );
    assert!(
        per_session <= bound,
        "{per_session:.2} KiB per slowloris session"
    );

    // Stalled for --idle-timeout: each is told `quit` in its own line ending, and a warning
    // names it.
    let mut ports = Vec::new();
    for mut c in clients {
        ports.push(c.local_addr().unwrap().port());
        assert_eq!(read_to_close(&mut c), b"quit\r\n");
    }
    let named = |port: &u16| {
        let peer = format!("peer=127.0.0.1:{port} ");
        let stderr = server.stderr.lock().unwrap();
        stderr
            .iter()
            .any(|l| l.contains(" WARN ") && l.contains("reason=idle-timeout") && l.contains(&peer))
    };
    wait_until("an idle-timeout warning naming each client", || {
        ports.iter().all(named)
    });
    wait_until("the slowloris sessions to end", || {
        fd_count(pid) <= idle_fds
    });
}

#[test]
fn half_closed_client_gets_every_reply_to_what_it_sent() {
    // Echo: 4 MiB of lines written and the write side shut before anything is read.
    let server = TestServer::start(Config::default());
    let payload: Vec<u8> = (0..100_000)
        .flat_map(|i| format!("half-closed line {i:08}\n").into_bytes())
        .collect();
    let mut c = connect(server.addr);
    let mut writer = c.try_clone().unwrap();
    let sent = payload.clone();
    let writing = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Direction::Write).unwrap();
    });
    let got = read_to_close(&mut c);
    writing.join().unwrap();
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "the echo differs from what was sent");

    // A holding handler: the unterminated last line is a message at end of input, answered.
    let server = TestServer::with_handler(Config::default(), Upper);
    let mut c = connect(server.addr);
    let mut want = Vec::new();
    for i in 0..2000 {
        c.write_all(format!("line {i}\n").as_bytes()).unwrap();
        want.extend_from_slice(format!("LINE {i}\n").as_bytes());
    }
    c.write_all(b"and the last one, unterminated").unwrap();
    want.extend_from_slice(b"AND THE LAST ONE, UNTERMINATED\n");
    c.shutdown(Direction::Write).unwrap();
    let got = read_to_close(&mut c);
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
}
