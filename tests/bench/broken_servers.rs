//! `tcpool bench` against servers that misbehave: every error kind counted, nothing hangs.

use super::*;

#[test]
fn flipped_byte_is_a_mismatch() {
    let server = BrokenServer::start(|stream| echo_flipping_byte(stream, 1000));
    let run = bench(server.addr, &["-c", "3", "-d", "1"]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("mismatch"), 3, "{}", run.report);
    assert_eq!(run.u64("errors"), 3);
    // Everything before the flipped byte was verified: 15 messages of 64 bytes each.
    assert_eq!(run.u64("messages"), 3 * 15, "{}", run.report);
}

#[test]
fn close_after_five_messages_is_counted_as_closed() {
    let server = BrokenServer::start(|stream| echo_then_close(stream, 5 * 64));
    let run = bench(server.addr, &["-c", "4", "-d", "5"]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.u64("messages"), 4 * 5, "{}", run.report);
    assert_eq!(run.u64("errors"), 4);
    // An orderly close, or a reset when the sixth message was still unread at the close.
    assert_eq!(run.kind("closed") + run.kind("reset"), 4, "{}", run.report);
    // The run ended when the last connection failed, not at the deadline, and says so.
    assert!(
        run.elapsed < Duration::from_secs(4),
        "took {:?}",
        run.elapsed
    );
    let why = run.report["ended_early"]
        .as_str()
        .expect("ended_early says why");
    assert!(
        why.starts_with("stopped at 0.") && why.contains(" of 5.00 s: every connection"),
        "{why}"
    );

    // The text report says it too, under the duration.
    let text = Command::new(tcpool_bin())
        .args(["bench", &server.addr.to_string(), "-c", "4", "-d", "5"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("            stopped at 0."), "{text}");
}

#[test]
fn a_run_that_ends_as_planned_says_nothing_of_an_early_end() {
    let server = BrokenServer::start(|stream| echo_then_close(stream, 1 << 30));
    let run = bench(server.addr, &["-c", "2", "-d", "0.5"]);
    run.assert_clean();
    assert_eq!(run.report["ended_early"], Value::Null, "{}", run.report);
}

#[test]
fn wrong_replies_are_not_called_no_reply() {
    // Every reply is wrong from its first byte.
    let server = BrokenServer::start(|stream| echo_flipping_byte(stream, 0));
    let out = Command::new(tcpool_bin())
        .args(["bench", &server.addr.to_string(), "-c", "2", "-d", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Result      replies came, none right: every connection failed (mismatch 2)"),
        "{text}"
    );
    let silent = BrokenServer::start(|stream| echo_then_close(stream, 0));
    let out = Command::new(tcpool_bin())
        .args(["bench", &silent.addr.to_string(), "-c", "2", "-d", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Result      no reply came: every connection failed"),
        "{text}"
    );
}

#[test]
fn silent_server_times_out_without_hanging() {
    let server = BrokenServer::start(swallow);
    let run = bench(server.addr, &["-c", "3", "-n", "100", "--timeout", "0.5"]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("timeout"), 3, "{}", run.report);
    assert_eq!(run.u64("messages"), 0);
    assert!(
        run.elapsed < Duration::from_secs(5),
        "took {:?}",
        run.elapsed
    );

    // With a duration shorter than the reply timeout the replies still in flight at the
    // deadline are awaited, and time out: silence is never a clean run.
    let run = bench(server.addr, &["-c", "2", "-d", "0.3", "--timeout", "0.5"]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("timeout"), 2, "{}", run.report);
    assert!(
        run.elapsed < Duration::from_secs(5),
        "took {:?}",
        run.elapsed
    );
}

#[test]
fn open_loop_charges_a_stall_to_every_message_it_delayed() {
    // Echoes faithfully, but stops for 300 ms once, after 20 messages of 64 bytes.
    let server = BrokenServer::start(|mut stream| {
        let mut buf = [0u8; 4096];
        let mut echoed = 0;
        let mut stalled = false;
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            if !stalled && echoed >= 20 * 64 {
                stalled = true;
                thread::sleep(Duration::from_millis(300));
            }
            echoed += n;
            if stream.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    // Closed loop: the one message caught in the stall sees it, and nobody else does.
    let closed = bench(server.addr, &["-c", "1", "-n", "150"]);
    closed.assert_clean();
    assert!(closed.report["latency_us"]["max"].as_u64().unwrap() >= 250_000);
    // Open loop at 100/s: the ~30 messages due during the stall all count it, from their
    // intended send times, so a tenth of all messages took 150 ms or more.
    let open = bench(server.addr, &["-c", "1", "--rate", "100", "-d", "1.5"]);
    open.assert_clean();
    let p90 = open.report["latency_us"]["p90"].as_u64().unwrap();
    assert!(p90 >= 100_000, "the stall is hidden: {}", open.report);
}

#[test]
fn refused_connects_are_counted_and_fail_the_run() {
    let port = free_port();
    let run = bench(format!("127.0.0.1:{port}"), &["-c", "5", "-d", "1"]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("connect_refused"), 5, "{}", run.report);
    assert_eq!(run.u64("connected"), 0);
    assert_eq!(run.u64("messages"), 0);
    assert!(
        run.elapsed < Duration::from_secs(5),
        "took {:?}",
        run.elapsed
    );
}

#[test]
fn one_failing_connection_does_not_stop_the_others() {
    // The first connection is answered wrongly; the others are echoed faithfully.
    let first = Arc::new(AtomicBool::new(true));
    let server = BrokenServer::start(move |stream| {
        if first.swap(false, Ordering::SeqCst) {
            echo_flipping_byte(stream, 0);
        } else {
            echo_flipping_byte(stream, usize::MAX);
        }
    });
    let run = bench(server.addr, &["-c", "4", "-n", "3000"]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("mismatch"), 1, "{}", run.report);
    // The failed connection's 750 messages are lost, the other three connections' are not.
    assert_eq!(run.u64("messages"), 3 * 750, "{}", run.report);
}

#[test]
fn a_server_that_streams_without_end_cannot_hold_a_bench_thread() {
    // Starts a reply that never ends, as fast as the socket takes it.
    let server = BrokenServer::start(|mut stream| {
        let answers = vec![b'a'; 256 * 1024];
        let mut first = [0u8; 1];
        if stream.read(&mut first).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && stream.write_all(&answers).is_ok() {}
    });
    // One thread for the streaming connections and the well-behaved bookkeeping alike: its
    // timers and the end of the run must still come on time.
    let started = Instant::now();
    let run = bench(
        server.addr,
        &[
            "-c",
            "2",
            "--threads",
            "1",
            "-d",
            "1",
            "--timeout",
            "1",
            "--send",
            "PING\r\n",
            "--until",
            "\r\n",
        ],
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1 + 1 + 2),
        "a streaming server held the run for {took:?}: {}",
        run.report
    );
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("timeout"), 2, "{}", run.report);
}
