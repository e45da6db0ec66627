//! Faults on purpose, against raw clients: each kind does what it says and nothing else, the
//! draw follows `p` and the seed, a live change touches new sessions, and shutdown ends every
//! fault with the careful goodbye. Lower bounds only on time: a loaded machine is slower,
//! never faster.

use std::io::{self, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use tcpool::Config;
use tcpool::server::FaultSpec;

use crate::support::*;

fn spec(text: &str) -> FaultSpec {
    text.parse().unwrap()
}

/// An echo server on two workers with these faults.
fn faulted(specs: &[&str]) -> TestServer {
    TestServer::start(Config {
        workers: 2,
        faults: specs.iter().map(|s| spec(s)).collect(),
        seed: Some(1),
        ..Config::default()
    })
}

#[test]
fn latency_holds_every_reply_for_its_delay_and_keeps_bytes_in_order() {
    let server = faulted(&["latency,delay=200ms,jitter=50ms"]);
    let mut client = connect(server.addr);
    let started = Instant::now();
    assert_eq!(round_trip(&mut client, b"hello"), b"hello");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(150), "{took:?}");

    // Many lines at once: each reply held with its own jitter, yet every byte in order.
    let lines: Vec<u8> = (0..50)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    for chunk in lines.chunks(7) {
        client.write_all(chunk).unwrap();
    }
    assert_eq!(read_n(&mut client, lines.len()), lines);
    assert_eq!(server.faults.list()[0].sessions, 1);
}

#[test]
fn a_session_without_the_fault_gets_no_added_latency() {
    let server = faulted(&["latency,delay=2s,p=0.5"]);
    // Find one session that drew the fault and one that did not (the seed is fixed).
    let mut slow = None;
    let mut fast = None;
    for _ in 0..20 {
        let before = server.faults.list()[0].sessions;
        let mut client = connect(server.addr);
        client.write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let answered = client.read(&mut byte).is_ok();
        let drew = server.faults.list()[0].sessions > before;
        assert_eq!(answered, !drew, "only a faulted session is held");
        if drew && slow.is_none() {
            slow = Some(client);
        } else if !drew && fast.is_none() {
            fast = Some(client);
        }
        if slow.is_some() && fast.is_some() {
            break;
        }
    }
    let (mut slow, mut fast) = (slow.unwrap(), fast.unwrap());
    fast.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    slow.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // While the faulted one waits, the other keeps answering.
    for _ in 0..20 {
        assert_eq!(round_trip(&mut fast, b"quick"), b"quick");
    }
    assert_eq!(read_n(&mut slow, 1), b"x");
}

#[test]
fn bandwidth_paces_a_mebibyte_at_256_kib_per_second() {
    let server = faulted(&["bandwidth,rate=256KiB"]);
    let client = connect(server.addr);
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut writer = client.try_clone().unwrap();
    let sent = data.clone();
    let started = Instant::now();
    let write = thread::spawn(move || writer.write_all(&sent).unwrap());
    let mut reader = client;
    let got = read_n(&mut reader, data.len());
    let took = started.elapsed();
    write.join().unwrap();
    assert!(got == data, "the bytes came back exact and in order");
    // One burst of at most 64 KiB, then 960 KiB at 256 KiB/s: 3.75 s.
    assert!(took >= Duration::from_millis(3500), "{took:?}");
}

#[test]
fn slice_writes_every_reply_in_small_pieces() {
    // Pieces far apart, so that even a client slow to be scheduled reads each on its own.
    let server = faulted(&["slice,size=4,delay=150ms"]);
    let mut client = connect(server.addr);
    let message = b"the quick brown";
    client.write_all(message).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.len() < message.len() {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0 && n <= 4, "a read of {n} bytes");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, message);
}

#[test]
fn stall_stops_reading_and_sending_then_goes_on() {
    let server = faulted(&["stall,after=1,for=600ms"]);
    let mut client = connect(server.addr);
    assert_eq!(round_trip(&mut client, b"one"), b"one");
    client.write_all(b"two").unwrap();
    expect_silence(&mut client, Duration::from_millis(300));
    assert_eq!(read_n(&mut client, 3), b"two");
    assert_eq!(round_trip(&mut client, b"three"), b"three");
}

#[test]
fn reset_sends_a_reset_after_n_replies() {
    let server = faulted(&["reset,after=2"]);
    let mut client = connect(server.addr);
    assert_eq!(round_trip(&mut client, b"a"), b"a");
    assert_eq!(round_trip(&mut client, b"b"), b"b");
    let mut buf = [0u8; 16];
    let error = client.read(&mut buf).expect_err("a reset, not data or EOF");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
    server.wait_for("the reset session to go", |r| r.is_empty());
}

#[test]
fn reset_after_a_duration_needs_no_traffic() {
    let server = faulted(&["reset,after=200ms"]);
    let mut client = connect(server.addr);
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let error = client.read(&mut buf).expect_err("a reset");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[test]
fn close_ends_with_a_plain_eof_and_no_quit() {
    let server = faulted(&["close,after=1"]);
    let mut client = connect(server.addr);
    assert_eq!(round_trip(&mut client, b"hello\n"), b"hello\n");
    assert_eq!(read_to_close(&mut client), b"", "EOF, no quit");
}

#[test]
fn truncate_sends_only_the_first_bytes_of_each_reply() {
    let server = faulted(&["truncate,bytes=3"]);
    let mut client = connect(server.addr);
    client.write_all(b"hello").unwrap();
    expect_bytes(&mut client, b"hel");
    expect_silence(&mut client, Duration::from_millis(200));
    client.write_all(b"world").unwrap();
    expect_bytes(&mut client, b"wor");
}

#[test]
fn truncate_cuts_each_line_of_a_line_based_peer() {
    let server = faulted(&["truncate,bytes=3"]);
    let mut client = connect(server.addr);
    client.write_all(b"hello\nworld\nab\n").unwrap();
    expect_bytes(&mut client, b"helworab\n");
    expect_silence(&mut client, Duration::from_millis(200));
}

#[test]
fn faults_combine() {
    let server = faulted(&["truncate,bytes=6", "slice,size=2,delay=150ms"]);
    let mut client = connect(server.addr);
    client.write_all(b"abcdefghij").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 6 {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0 && n <= 2, "a read of {n}");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"abcdef");
}

#[test]
fn shutdown_flushes_held_replies_and_says_quit() {
    let server = faulted(&["latency,delay=30s"]);
    let mut held = connect(server.addr);
    held.write_all(b"hello\n").unwrap();
    server.wait_for("the input to be read", |r| r.stats().traffic.bytes_in == 6);
    let mut stalled = connect(server.addr);
    server.faults.add(spec("stall"));
    let mut stalled_for_good = connect(server.addr);
    server.wait_for("three sessions", |r| r.len() == 3);
    stalled_for_good.write_all(b"x").unwrap();
    let started = Instant::now();
    server.stop();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(read_to_close(&mut held), b"hello\nquit\n");
    assert_eq!(read_to_close(&mut stalled), b"quit");
    assert_eq!(read_to_close(&mut stalled_for_good), b"quit");
}

/// Connects `n` sessions one after another; each sends `x` and tells whether it was answered
/// (else it was closed by a `close,after=0` fault).
fn answered(server: &TestServer, n: usize) -> Vec<bool> {
    (0..n)
        .map(|_| {
            let mut client = connect(server.addr);
            let _ = client.write_all(b"x");
            let mut buf = [0u8; 8];
            matches!(client.read(&mut buf), Ok(n) if n > 0)
        })
        .collect()
}

#[test]
fn p_is_the_chance_a_session_gets_the_fault() {
    let server = TestServer::start(Config {
        workers: 2,
        faults: vec![spec("truncate,bytes=1,p=0.5")],
        ..Config::default()
    });
    for _ in 0..400 {
        let mut client = connect(server.addr);
        client.write_all(b"ab").unwrap();
        let _ = read_n(&mut client, 1);
    }
    let touched = server.faults.list()[0].sessions;
    assert!((140..=260).contains(&touched), "{touched} of 400");
}

#[test]
fn the_same_seed_makes_the_same_choice() {
    let run = |seed| {
        let server = TestServer::start(Config {
            workers: 2,
            faults: vec![spec("close,after=0,p=0.5")],
            seed: Some(seed),
            ..Config::default()
        });
        answered(&server, 40)
    };
    let first = run(42);
    assert_eq!(run(42), first);
    assert!(first.contains(&true) && first.contains(&false), "{first:?}");
    assert_ne!(run(43), first);
}

#[test]
fn a_live_fault_touches_new_sessions_and_clearing_ends_it() {
    let server = faulted(&[]);
    let mut before = connect(server.addr);
    assert_eq!(round_trip(&mut before, b"x"), b"x");
    let id = server.faults.add(spec("truncate,bytes=2"));
    let mut after = connect(server.addr);
    after.write_all(b"hello").unwrap();
    expect_bytes(&mut after, b"he");
    assert_eq!(round_trip(&mut before, b"hello"), b"hello");
    assert_eq!(server.faults.clear(Some(id)), 1);
    assert_eq!(server.faults.clear(Some(id)), 0);
    // Cleared: the session that had it answers in full again (once its worker has looked),
    // and so does a new one.
    wait_until("the clear to reach the worker", || {
        after.write_all(b"hello").unwrap();
        expect_bytes(&mut after, b"he");
        after
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut rest = [0u8; 3];
        let whole = after.read_exact(&mut rest).is_ok();
        after.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        assert!(!whole || &rest == b"llo", "{rest:?}");
        whole
    });
    let mut new = connect(server.addr);
    assert_eq!(round_trip(&mut new, b"hello"), b"hello");
}

#[test]
fn the_console_adds_lists_and_clears_faults() {
    let mut server = Binary::serve(&["--fault", "latency,delay=1ms", "--seed", "7"]);
    server.wait_stderr("the faults line", |l| {
        l.contains("faults: #1 latency,delay=1ms seed=7")
    });
    server.type_line("/fault truncate,bytes=2");
    server.wait_stdout("the added fault", |l| {
        l.starts_with("fault #2 added: truncate,bytes=2")
    });
    let mut client = connect(server.addr);
    client.write_all(b"hello").unwrap();
    expect_bytes(&mut client, b"he");
    server.type_line("/fault");
    server.wait_stdout("the list", |l| l == "#2 truncate,bytes=2  sessions 1");
    server.type_line("/fault latency,delay=soon");
    server.wait_stdout("the error", |l| {
        l.contains("bad fault") && l.contains("delay: \"soon\"")
    });
    server.type_line("/fault clear 2");
    server.wait_stdout("the clear", |l| l == "fault #2 cleared");
    let mut next = connect(server.addr);
    assert_eq!(round_trip(&mut next, b"hello"), b"hello");
    server.type_line("/stats");
    server.wait_stdout("the fault counts", |l| {
        l.starts_with(
            "faults: #1 latency,delay=1ms: 2 sessions, #2 truncate,bytes=2 (cleared): 1 sessions",
        )
    });
    drop((client, next));
    server.type_line("quit");
    assert_eq!(server.wait_timeout(Duration::from_secs(10)), Some(0));
    server.wait_stdout("the summary's fault counts", |l| {
        l.starts_with("faults: #1 latency,delay=1ms: 2 sessions")
    });
}

#[test]
fn a_bad_fault_at_start_is_one_line_and_exit_code_2() {
    let out = std::process::Command::new(tcpool_bin())
        .args(["serve", "--port", "0", "--fault", "slice,size=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("size: must be more than 0"), "{stderr}");
}

#[test]
fn clearing_a_latency_beside_another_fault_sends_what_it_holds_at_once() {
    // The session keeps its other fault; the replies the cleared hold kept go out now,
    // not when the minute is over, and new replies are not held either.
    let server = faulted(&["latency,delay=60s", "slice,size=64"]);
    let mut client = connect(server.addr);
    client.write_all(b"held").unwrap();
    expect_silence(&mut client, Duration::from_millis(200));
    assert_eq!(server.faults.clear(Some(server.faults.list()[0].id)), 1);
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    expect_bytes(&mut client, b"held");
    assert_eq!(round_trip(&mut client, b"after"), b"after");
}

/// The `p`-th percentile of `samples` (sorted in place).
fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let at = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len());
    samples[at - 1]
}

#[test]
fn a_fault_that_writes_byte_by_byte_never_blocks_its_worker() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let server = TestServer::start(Config {
        workers: 1,
        ..Config::default()
    });
    let mut bystander = connect(server.addr);
    assert_eq!(round_trip(&mut bystander, b"before"), b"before");
    server.faults.add(spec("slice,size=1"));

    // Four faulted clients keep 64 KiB replies coming, each cut into 65,536 writes.
    let stop = Arc::new(AtomicBool::new(false));
    let until = Instant::now() + Duration::from_secs(20);
    let mut threads = Vec::new();
    for _ in 0..4 {
        let client = connect(server.addr);
        client
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut writer = client.try_clone().unwrap();
        let (stop_w, stop_r) = (Arc::clone(&stop), Arc::clone(&stop));
        threads.push(thread::spawn(move || {
            let block = vec![b'f'; 64 * 1024];
            while !stop_w.load(Ordering::Relaxed) && Instant::now() < until {
                match writer.write(&block) {
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        }));
        let mut reader = client;
        threads.push(thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while !stop_r.load(Ordering::Relaxed) && Instant::now() < until {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    // Not woken for every byte: the server's work is measured, not ours.
                    Ok(_) => thread::sleep(Duration::from_millis(1)),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        }));
    }
    wait_until("the four faulted sessions", || {
        server.faults.list()[0].sessions == 4
    });
    thread::sleep(Duration::from_millis(200));

    // The bystander's round trips, bounded in count and time.
    let mut samples = Vec::new();
    let measuring = Instant::now();
    while samples.len() < 300 && measuring.elapsed() < Duration::from_secs(10) {
        let started = Instant::now();
        assert_eq!(round_trip(&mut bystander, b"ping"), b"ping");
        samples.push(started.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let count = samples.len();
    let p50 = percentile(&mut samples, 0.5);
    let p99 = percentile(&mut samples, 0.99);
    eprintln!("bystander: {count} round trips, p50 {p50:?} p99 {p99:?}");
    assert_eq!(
        count, 300,
        "300 round trips took more than 10 s (p50 {p50:?})"
    );
    // A correctness bound on blocking, not a speed figure: a blocked worker takes seconds
    // (p50 1.1 s before the budget). Alone on the 2-core machine p99 is 1.5 to 4 ms; the
    // bound leaves room for tests running beside it.
    assert!(p50 < Duration::from_millis(5), "p50 {p50:?} p99 {p99:?}");
    assert!(p99 < Duration::from_millis(20), "p50 {p50:?} p99 {p99:?}");
}
