//! Regressions found while hardening.

use super::*;

/// Uppercases each message; panics on `boom`.
struct UpperOrBoom;

impl Handler for UpperOrBoom {
    fn on_message(&self, ctx: &mut Context<'_>, message: Message<'_>) {
        assert!(message.text != b"boom", "boom");
        ctx.send_line(&String::from_utf8_lossy(message.text).to_uppercase());
    }
}

#[test]
fn a_panic_keeps_the_replies_to_the_messages_before_it() {
    let server = TestServer::with_handler(Config::default(), UpperOrBoom);
    let mut c = connect(server.addr);
    // One read: a reply is composed for `one` before `boom` panics.
    c.write_all(b"one\nboom\nthree\n").unwrap();
    assert_eq!(read_to_close(&mut c), b"ONE\nquit\n");
}

#[test]
fn a_flooder_that_never_reads_is_dropped_after_the_idle_timeout() {
    // The steady client talks every ~50 ms; the timeout leaves it two seconds of slack for
    // a loaded machine that does not schedule this thread, so only the flooder can be idle.
    let server = TestServer::start(Config {
        idle_timeout: Some(Duration::from_secs(2)),
        // The goodbye cannot be delivered to a peer that does not read: bound the flush.
        shutdown_timeout: Duration::from_secs(1),
        ..Config::default()
    });
    let mut steady = connect(server.addr);
    let mut flooder = connect(server.addr);
    flooder
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // Every buffer fills; the server stops reading it (back-pressure) and no byte moves
    // either way after that: idle, however busy its sending side looks.
    let flooding = thread::spawn(move || {
        for _ in 0..512 {
            if flooder.write_all(&[b'f'; 64 * 1024]).is_err() {
                break;
            }
        }
        flooder
    });
    // The steady client keeps talking (it is not idle) while the flooder is dropped.
    wait_until("the flooder to be dropped", || {
        assert_eq!(round_trip(&mut steady, b"still here\n"), b"still here\n");
        thread::sleep(Duration::from_millis(50));
        server.registry.len() == 1
    });
    assert_eq!(round_trip(&mut steady, b"after\n"), b"after\n");
    drop(flooding.join().unwrap());
}

#[test]
fn a_reader_that_keeps_up_is_never_dropped_by_the_smallest_outbox_limit() {
    let max_line = 4096;
    let server = TestServer::start(Config {
        mode: tcpool::Mode::Chat,
        max_line,
        outbox_limit: tcpool::server::min_outbox_limit(max_line),
        ..Config::default()
    });
    let mut talker = chatter(server.addr);
    let mut reader = chatter(server.addr);
    expect_bytes(&mut talker, b"* #2 joined\n");
    let line = format!("{}\n", "y".repeat(max_line));
    for _ in 0..50 {
        talker.write_all(line.as_bytes()).unwrap();
        expect_bytes(&mut reader, format!("<#1> {line}").as_bytes());
    }
    assert_eq!(server.registry.len(), 2);
}

#[test]
fn an_outbox_limit_too_small_for_max_line_is_refused_at_start() {
    let out = std::process::Command::new(tcpool_bin())
        .args([
            "serve",
            "--port",
            "0",
            "--max-line",
            "4096",
            "--outbox-limit",
            "1000",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A usage error (exit 2), like any bad value.
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--outbox-limit 1000 is too small for --max-line 4096"),
        "{stderr}"
    );
}

#[test]
fn chat_clients_that_reset_before_their_greeting_leave_the_workers_serving() {
    // Each resets (SO_LINGER 0, then close) at once: the worker's greeting write finds the
    // peer gone and removes the session inside its opening. The workers go on serving.
    let server = TestServer::start(Config {
        mode: tcpool::Mode::Chat,
        workers: 2,
        ..Config::default()
    });
    for _ in 0..300 {
        let stream = connect(server.addr);
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(stream);
    }
    // Clients on both workers still get their greeting and hear each other.
    let mut a = chatter(server.addr);
    let mut b = chatter(server.addr);
    let mut c = chatter(server.addr);
    c.write_all(b"still here\n").unwrap();
    // Notices (joins, and the reset clients leaving) may come first.
    for reader in [&mut a, &mut b] {
        let heard = (0..1000)
            .map(|_| read_line(reader))
            .find(|line| line.is_empty() || line.ends_with(b"still here\n"));
        assert!(heard.is_some_and(|l| !l.is_empty()), "the line never came");
    }
}
