//! Random bytes, random split points and random disconnects beside well-behaved clients.

use super::*;

/// One misbehaving connection: random bytes in random pieces, then one of several endings.
/// With `echo`, a client that half-closes checks that what came back is a prefix of what it
/// sent (all of it, unless the random bytes happened to say `quit`).
fn fuzz_connection(addr: SocketAddr, rng: &mut Rng, echo: bool) {
    let Ok(mut c) = TcpStream::connect_timeout(&addr, IO_TIMEOUT) else {
        return;
    };
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let len = rng.below(48 * 1024);
    let mut data = rng.bytes(len);
    // Sprinkle line endings so that both framings, and lone \r, occur.
    for _ in 0..rng.below(40) {
        if !data.is_empty() {
            let at = rng.below(data.len());
            data[at] = [b'\n', b'\r'][rng.below(2)];
        }
    }
    let mut sent = 0;
    while sent < data.len() {
        let piece = (1 + rng.below(4096)).min(data.len() - sent);
        if c.write_all(&data[sent..sent + piece]).is_err() {
            return;
        }
        sent += piece;
        match rng.below(8) {
            0 => thread::sleep(Duration::from_millis(1)),
            1 => thread::yield_now(),
            _ => {}
        }
        if rng.below(20) == 0 {
            break; // gone mid-message
        }
    }
    match rng.below(4) {
        0 => drop(c),
        1 => reset(c),
        2 => {
            let _ = read_available(&mut c, Duration::from_millis(1 + rng.below(20) as u64));
            reset(c);
        }
        _ => {
            let _ = c.shutdown(Direction::Write);
            let got = read_to_close(&mut c);
            if echo {
                assert!(
                    data[..sent].starts_with(&got),
                    "echo is not a prefix of what was sent"
                );
                if !contains(&data[..sent], b"quit") {
                    assert_eq!(got.len(), sent, "echo lost bytes");
                }
            }
        }
    }
}

/// Runs `well_behaved` clients doing exact round trips while `fuzzers` threads throw
/// [`fuzz_connection`]s at the server for `duration`; returns the exact answers counted.
fn fuzz_against(
    server: &TestServer,
    echo: bool,
    fuzzers: usize,
    well_behaved: usize,
    duration: Duration,
) -> usize {
    let addr = server.addr;
    let until = Instant::now() + duration;
    let fuzzing: Vec<_> = (0..fuzzers)
        .map(|f| {
            thread::spawn(move || {
                let mut rng = Rng::new(0xf022 + f as u64 + u64::from(echo) * 100);
                let mut n = 0;
                while Instant::now() < until && n < 2000 {
                    fuzz_connection(addr, &mut rng, echo);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let answering: Vec<_> = (0..well_behaved)
        .map(|w| {
            thread::spawn(move || {
                let mut rng = Rng::new(0x900d + w as u64);
                let mut c = connect(addr);
                let mut exact = 0;
                while Instant::now() < until && exact < 100_000 {
                    let text: String = (0..1 + rng.below(300))
                        .map(|_| char::from(b'a' + rng.below(26) as u8))
                        .collect();
                    let line = format!("{w} {text}\n");
                    let want = if echo {
                        line.clone()
                    } else {
                        line.to_uppercase()
                    };
                    c.write_all(line.as_bytes()).unwrap();
                    assert_eq!(read_n(&mut c, want.len()), want.as_bytes());
                    exact += 1;
                }
                (c, exact)
            })
        })
        .collect();
    let fuzzed: usize = fuzzing.into_iter().map(|t| t.join().unwrap()).sum();
    let mut exact = 0;
    let mut clients = Vec::new();
    for t in answering {
        let (c, n) = t.join().unwrap();
        exact += n;
        clients.push(c);
    }
    // The fuzzers' sessions all end; the well-behaved ones are still there and answered.
    server.wait_for("the fuzzers' sessions to end", |r| r.len() == well_behaved);
    for c in &mut clients {
        let want: &[u8] = if echo { b"done\n" } else { b"DONE\n" };
        c.write_all(b"done\n").unwrap();
        assert_eq!(read_n(c, 5), want);
    }
    println!("fuzz (echo={echo}): {fuzzed} misbehaving connections, {exact} exact answers");
    assert!(fuzzed > 0 && exact > 0);
    exact
}

#[test]
fn random_bytes_splits_and_disconnects_leave_well_behaved_clients_answered_exactly() {
    raise_fd_limit();
    let config = Config {
        workers: 2,
        max_line: 512,
        ..Config::default()
    };
    let echo = TestServer::start(config.clone());
    fuzz_against(&echo, true, 6, 4, Duration::from_secs(3));
    let upper = TestServer::with_handler(config, Upper);
    fuzz_against(&upper, false, 6, 4, Duration::from_secs(3));
}
