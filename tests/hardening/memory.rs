//! Memory: idle sessions are cheap, and a client that never reads costs a bounded amount.

use super::*;

#[test]
fn idle_sessions_cost_at_most_16_kib_each() {
    raise_fd_limit();
    let server = Binary::serve(&["--workers", "2"]);
    let pid = server.child.id();
    // Warm up: threads, allocator arenas and session slabs have seen some clients.
    let idle_fds = fd_count(pid);
    for i in 0..200 {
        let mut c = connect(server.addr);
        let msg = format!("warm {i}\n");
        assert_eq!(round_trip(&mut c, msg.as_bytes()), msg.as_bytes());
    }
    wait_until("the warm-up sessions to end", || fd_count(pid) <= idle_fds);
    thread::sleep(Duration::from_millis(300));
    let before = server.rss_kib();

    // 1,000 idle sessions: half never said anything, half spoke once.
    let idle: Vec<TcpStream> = (0..1000)
        .map(|i| {
            let mut c = connect(server.addr);
            if i % 2 == 1 {
                let msg = format!("once {i}\n");
                assert_eq!(round_trip(&mut c, msg.as_bytes()), msg.as_bytes());
            }
            c
        })
        .collect();
    wait_until("1000 sessions", || fd_count(pid) >= idle_fds + 1000);
    let mut last = connect(server.addr);
    assert_eq!(round_trip(&mut last, b"last\n"), b"last\n");
    let after = server.rss_kib();
    let per_session = (after.saturating_sub(before)) as f64 / 1000.0;
    println!("idle sessions: rss {before} -> {after} KiB: {per_session:.2} KiB per session");
    assert!(per_session <= 16.0, "{per_session:.2} KiB per idle session");
    drop(idle);
}

#[test]
fn a_client_writing_50_mb_without_reading_leaves_rss_flat_and_others_served() {
    const TOTAL: usize = 50_000_000;
    const HEADROOM_KIB: u64 = 64 * 1024;

    // Echo: the flood is back-pressured, neither buffered nor dropped.
    let server = Binary::serve(&["--workers", "2"]);
    let start_rss = server.rss_kib();
    let mut flood = connect(server.addr);
    let written = Arc::new(AtomicUsize::new(0));
    let writing = {
        let mut w = flood.try_clone().unwrap();
        let written = written.clone();
        w.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        thread::spawn(move || {
            let chunk: Vec<u8> = (0..64 * 1024).map(|i| b'A' + (i % 23) as u8).collect();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut done = 0;
            while done < TOTAL && Instant::now() < deadline {
                let from = done % chunk.len();
                let to = chunk.len().min(from + TOTAL - done);
                match w.write(&chunk[from..to]) {
                    Ok(n) => {
                        done += n;
                        written.store(done, Ordering::Relaxed);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => panic!("the flood was cut off after {done} bytes: {e}"),
                }
            }
            done
        })
    };
    // Wait until the flood is stuck: nothing more is taken for half a second.
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut last = (0, Instant::now());
    while last.1.elapsed() < Duration::from_millis(500) {
        let now = written.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
        assert!(Instant::now() < deadline, "the flood never stalled");
        thread::sleep(Duration::from_millis(20));
    }
    let stuck_at = last.0;
    let mut peak_rss = server.rss_kib();
    for i in 0..20 {
        let mut other = connect(server.addr);
        let msg = format!("other {i}\n");
        assert_eq!(round_trip(&mut other, msg.as_bytes()), msg.as_bytes());
    }
    // Now read: every byte comes back, in order, and memory stays flat meanwhile.
    let mut got = 0;
    let mut buf = vec![0u8; 256 * 1024];
    while got < TOTAL {
        let n = flood.read(&mut buf).expect("the flood's echo");
        assert!(n > 0, "closed after {got} bytes");
        for (k, &b) in buf[..n].iter().enumerate() {
            let i = (got + k) % (64 * 1024);
            assert_eq!(b, b'A' + (i % 23) as u8, "byte {}", got + k);
        }
        got += n;
        if got % (4 << 20) < n {
            peak_rss = peak_rss.max(server.rss_kib());
        }
    }
    assert_eq!(writing.join().unwrap(), TOTAL);
    peak_rss = peak_rss.max(server.rss_kib());
    println!(
        "50 MB echo flood: stalled after {stuck_at} bytes unread; rss {start_rss} KiB at \
         start, {peak_rss} KiB at most"
    );
    assert!(peak_rss <= start_rss + HEADROOM_KIB, "{peak_rss} KiB");
    drop(server);

    // Chat: the flood is one 50 MB line that nobody answers; it is cut into --max-line
    // messages and relayed to a listener that keeps up, while memory stays flat.
    let server = Binary::serve(&["--mode", "chat", "--workers", "2"]);
    let start_rss = server.rss_kib();
    let mut listener = chatter(server.addr);
    let mut flood = chatter(server.addr);
    // The listener is in the room once it hears of the flood's arrival.
    assert_eq!(read_line(&mut listener), b"* #2 joined\n");
    flood.write_all(b"here it comes\n").unwrap();
    assert_eq!(read_line(&mut listener), b"<#2> here it comes\n");
    let relayed = Arc::new(AtomicUsize::new(0));
    let listening = {
        let relayed = relayed.clone();
        thread::spawn(move || {
            let mut reader = BufReader::with_capacity(256 * 1024, listener);
            let mut line = Vec::new();
            let mut text = 0;
            while text < TOTAL {
                line.clear();
                let n = reader.read_until(b'\n', &mut line).expect("the listener");
                assert!(n > 0, "the listener was closed after {text} bytes");
                let body = line
                    .strip_prefix(b"<#2> ")
                    .and_then(|l| l.strip_suffix(b"\n"))
                    .unwrap_or_else(|| panic!("not a piece of the flood: {:?}", tail(&line)));
                assert!(body.len() <= 65536 && body.iter().all(|&b| b == b'f'));
                text += body.len();
                relayed.store(text, Ordering::Relaxed);
            }
            text
        })
    };
    let chunk = vec![b'f'; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut peak_rss = start_rss;
    for i in 0..TOTAL.div_ceil(chunk.len()) {
        let n = chunk.len().min(TOTAL - i * chunk.len());
        flood.write_all(&chunk[..n]).unwrap();
        // Pace the flood to the listener (at most 256 KiB ahead): a listener that falls more
        // than --outbox-limit (1 MiB) behind is dropped, by design.
        while i * chunk.len() > relayed.load(Ordering::Relaxed) + (256 << 10) {
            assert!(Instant::now() < deadline, "the listener fell behind");
            thread::sleep(Duration::from_millis(1));
        }
        if i % 64 == 0 {
            peak_rss = peak_rss.max(server.rss_kib());
        }
    }
    // End of input: the held rest of the line is a message too.
    flood.shutdown(Direction::Write).unwrap();
    assert_eq!(listening.join().unwrap(), TOTAL);
    peak_rss = peak_rss.max(server.rss_kib());
    println!("50 MB chat flood: rss {start_rss} KiB at start, {peak_rss} KiB at most");
    assert!(peak_rss <= start_rss + HEADROOM_KIB, "{peak_rss} KiB");
    let mut other = connect(server.addr);
    assert_eq!(nick(&mut other, "after"), b"* you are now after\n");
}
