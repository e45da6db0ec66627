//! Descriptor exhaustion and connection churn: the server backs off, recovers and leaks nothing.

use super::*;

#[test]
fn descriptor_exhaustion_backs_off_and_recovers() {
    raise_fd_limit();
    let mut command = at_the_descriptor_limit(&[]);
    command.stdout(Stdio::null());
    let mut server = launch(command);
    let pid = server.child.id();
    server.wait_stderr("max-conns kept with a warning", |l| {
        l.contains("WARN") && l.contains("max-conns 1000 kept")
    });

    // 100 clients, each with a line to echo.
    let mut clients: Vec<(TcpStream, Vec<u8>)> = (0..100)
        .map(|i| {
            let mut c = connect(server.addr);
            c.write_all(format!("client {i}\n").as_bytes()).unwrap();
            c.set_nonblocking(true).unwrap();
            (c, Vec::new())
        })
        .collect();
    let poll = |clients: &mut Vec<(TcpStream, Vec<u8>)>| {
        let mut buf = [0u8; 256];
        for (c, got) in clients.iter_mut() {
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        }
        clients.iter().filter(|(_, got)| !got.is_empty()).count()
    };
    // Those that fit are served; the count then stays put while the rest wait.
    let deadline = Instant::now() + IO_TIMEOUT;
    let (mut served, mut stable_since) = (0, Instant::now());
    loop {
        let now_served = poll(&mut clients);
        if now_served != served {
            (served, stable_since) = (now_served, Instant::now());
        }
        let saturated = server
            .stderr_lines()
            .iter()
            .any(|l| l.contains("accept failed"));
        if served > 0 && saturated && stable_since.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "served {served}, never saturated"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!((10..100).contains(&served), "{served} of 100 served");
    for (i, (_, got)) in clients.iter().enumerate() {
        assert!(
            got.is_empty() || *got == format!("client {i}\n").as_bytes(),
            "client {i} got {:?} (waiting clients get nothing, not `busy`)",
            String::from_utf8_lossy(got)
        );
    }

    // Saturated: accept() fails with EMFILE, and the acceptor backs off instead of spinning.
    let warnings = |server: &Binary| {
        server
            .stderr_lines()
            .iter()
            .filter(|l| l.contains("accept failed"))
            .count()
    };
    let (ticks_before, warnings_before) = (cpu_ticks(pid), warnings(&server));
    let window = Instant::now();
    thread::sleep(Duration::from_secs(2));
    let ticks = cpu_ticks(pid) - ticks_before;
    let logged = warnings(&server) - warnings_before;
    let elapsed = window.elapsed().as_secs_f64();
    let cpu_secs = ticks as f64 / clock_ticks_per_second() as f64;
    println!(
        "EMFILE: {served} of 100 clients served; {cpu_secs:.2} s of CPU over {elapsed:.2} s \
         saturated; {logged} accept warning(s) logged"
    );
    assert!(cpu_secs < 0.5, "{cpu_secs} s of CPU over {elapsed:.2} s");
    assert!(
        (logged as f64) <= elapsed.ceil() + 1.0,
        "{logged} warnings in {elapsed:.2} s"
    );
    let warning = server.wait_stderr("the EMFILE warning", |l| l.contains("accept failed"));
    assert!(
        warning.contains("WARN") && warning.contains("os error 24"),
        "{warning}"
    );

    // Once the served clients leave, the waiting ones are served, and then new clients too.
    let (waiting, leaving): (Vec<_>, Vec<_>) = clients.into_iter().partition(|(_, g)| g.is_empty());
    drop(leaving);
    let mut waiting = waiting;
    let deadline = Instant::now() + IO_TIMEOUT;
    while poll(&mut waiting) < waiting.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} waiting clients served after others left",
            poll(&mut waiting),
            waiting.len()
        );
        thread::sleep(Duration::from_millis(20));
    }
    drop(waiting);
    let mut fresh = connect(server.addr);
    assert_eq!(round_trip(&mut fresh, b"fresh\n"), b"fresh\n");
    drop(fresh);
    server.signal("TERM");
    assert_eq!(server.wait_timeout(Duration::from_secs(5 + 2)), Some(0));
}

/// Descriptors of a process numbered below `limit` (inherited ones above it do not count
/// against `RLIMIT_NOFILE`).
fn fds_below(pid: u32, limit: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&fd| fd < limit)
        .count()
}

/// With one descriptor slot left, the acceptor's blocked `accept()` holds that slot (Linux
/// reserves it before waiting), so the shutdown's wake-up connection cannot get a socket.
/// The acceptor must still stop at once: every client told `quit`, a prompt exit 0, and no
/// "forced" summary.
#[test]
fn shutdown_at_the_descriptor_limit_is_prompt_and_not_forced() {
    raise_fd_limit();
    let mut command = at_the_descriptor_limit(&["--shutdown-timeout", "5"]);
    command.stdout(Stdio::piped());
    let mut server = launch(command);
    let pid = server.child.id();
    // Sessions until one slot is left: the one the acceptor's accept() now waits with.
    let mut clients = Vec::new();
    while fds_below(pid, 64) < 63 {
        assert!(clients.len() < 64, "never reached the limit");
        let mut c = connect(server.addr);
        assert_eq!(round_trip(&mut c, b"in\n"), b"in\n");
        clients.push(c);
    }
    let signalled = Instant::now();
    server.signal("TERM");
    for c in &mut clients {
        assert_eq!(read_to_close(c), b"quit\n");
    }
    let code = server.wait_timeout(Duration::from_secs(5 + 2));
    let took = signalled.elapsed();
    assert_eq!(code, Some(0));
    let stderr = server.stderr_lines();
    assert!(
        !stderr
            .iter()
            .any(|l| l.contains("did not stop") || l.contains("deadline passed")),
        "{} sessions, shutdown took {took:.2?}: {stderr:#?}",
        clients.len()
    );
    assert!(took < Duration::from_secs(3), "shutdown took {took:.2?}");
    let summary = server.wait_stdout("the summary", |l| l.starts_with("tcpool served"));
    assert!(!summary.contains("still closing"), "{summary}");
}

#[test]
fn connection_churn_leaves_descriptors_and_memory_where_they_started() {
    raise_fd_limit();
    let server = Binary::serve(&["--workers", "2"]);
    let pid = server.child.id();
    let addr = server.addr;
    let idle_fds = fd_count(pid);
    // Connect, one message, close — in five manners, from four threads, until `until`.
    let churn = |until: Instant| {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                thread::spawn(move || {
                    let mut n = 0u64;
                    while Instant::now() < until {
                        let mut c = connect(addr);
                        let msg = format!("churn {t} {n}\n");
                        match n % 5 {
                            // Polite: read the echo, close.
                            0 => assert_eq!(round_trip(&mut c, msg.as_bytes()), msg.as_bytes()),
                            // Polite the other way: `quit`, and the server closes first.
                            1 => {
                                assert_eq!(round_trip(&mut c, msg.as_bytes()), msg.as_bytes());
                                c.write_all(b"quit\n").unwrap();
                                assert_eq!(read_to_close(&mut c), b"");
                            }
                            // Rude: the echo is never read, the close is a reset.
                            2 => {
                                c.write_all(msg.as_bytes()).unwrap();
                                reset(c);
                            }
                            // Gone before the echo was read, with a FIN.
                            3 => c.write_all(msg.as_bytes()).unwrap(),
                            // Connected, said nothing, left.
                            _ => drop(c),
                        }
                        n += 1;
                        thread::sleep(Duration::from_millis(1));
                    }
                    n
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum::<u64>()
    };
    let settle = |what: &str, fds: usize| {
        wait_until(what, || fd_count(pid) <= fds);
        thread::sleep(Duration::from_millis(500));
    };

    let warm = churn(Instant::now() + Duration::from_secs(2));
    settle("descriptors back after the warm-up", idle_fds);
    let (start_fds, start_rss) = (fd_count(pid), server.rss_kib());
    let started = Instant::now();
    let connections = churn(started + Duration::from_secs(18));
    let churned_for = started.elapsed();
    settle("descriptors back after the churn", start_fds);
    let (end_fds, end_rss) = (fd_count(pid), server.rss_kib());
    println!(
        "churn: {warm} + {connections} connections in {churned_for:.1?}; \
         fds {start_fds} -> {end_fds}; rss {start_rss} -> {end_rss} KiB"
    );
    assert_eq!(end_fds, start_fds);
    assert!(
        end_rss <= start_rss + 1024,
        "RSS grew from {start_rss} to {end_rss} KiB over {connections} connections"
    );
    let mut c = connect(addr);
    assert_eq!(round_trip(&mut c, b"still here\n"), b"still here\n");
}
