//! SIGTERM with a thousand clients mid-traffic: every reply delivered or `quit` said, exit 0.

use super::*;

/// One of the thousand clients: everything it sent and everything it received.
struct Peer {
    stream: TcpStream,
    sent: Vec<u8>,
    got: Vec<u8>,
    closed: bool,
}

impl Peer {
    fn told_quit(&self) -> bool {
        self.got.ends_with(b"quit\n")
    }

    fn read_some(&mut self, buf: &mut [u8]) {
        match self.stream.read(buf) {
            Ok(0) => self.closed = true,
            Ok(n) => self.got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Counted as the end; if it wiped out a reply or the goodbye, the check of
            // what was received fails.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => self.closed = true,
            Err(e) => panic!(
                "read failed after {} of {} bytes: {e}",
                self.got.len(),
                self.sent.len()
            ),
        }
    }
}

/// Round trips on each of `peers` in turn until every one was closed by the server; stops
/// writing to a peer once it was told `quit`. Counts the round trips completed in `rounds`.
fn drive(peers: &mut [Peer], first: usize, done: Instant, rounds: &AtomicUsize) {
    let mut buf = [0u8; 4096];
    for k in 0.. {
        if peers.iter().all(|p| p.closed) {
            break;
        }
        assert!(Instant::now() < done, "clients still open at the deadline");
        for (j, p) in peers.iter_mut().enumerate().filter(|(_, p)| !p.closed) {
            if !p.told_quit() {
                let line = format!(
                    "peer {} line {k} {}.\n",
                    first + j,
                    "x".repeat((k + j) % 40)
                );
                if let Ok(n) = p.stream.write(line.as_bytes()) {
                    p.sent.extend_from_slice(&line.as_bytes()[..n]);
                }
            }
            // Wait for the echo, or for `quit` and the end.
            while !p.closed && (p.told_quit() || p.got.len() < p.sent.len()) {
                p.read_some(&mut buf);
            }
            if !p.told_quit() && !p.closed {
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[test]
fn sigterm_with_1000_clients_mid_traffic_delivers_or_says_quit_and_exits_0() {
    raise_fd_limit();
    let mut server = Binary::serve(&["--workers", "2", "--shutdown-timeout", "5"]);
    let mut peers: Vec<Peer> = (0..1000)
        .map(|i| {
            let mut stream = connect(server.addr);
            let hello = format!("hello {i}\n");
            assert_eq!(round_trip(&mut stream, hello.as_bytes()), hello.as_bytes());
            Peer {
                stream,
                sent: hello.clone().into_bytes(),
                got: hello.into_bytes(),
                closed: false,
            }
        })
        .collect();
    // Four threads, 250 clients each, round trips until the server closes them.
    let done = Instant::now() + Duration::from_secs(40);
    let rounds = Arc::new(AtomicUsize::new(0));
    let drivers: Vec<_> = (0..4)
        .map(|d| {
            let mut mine: Vec<Peer> = peers.drain(..250).collect();
            let rounds = rounds.clone();
            thread::spawn(move || {
                drive(&mut mine, d * 250, done, &rounds);
                mine
            })
        })
        .collect();
    // Mid-traffic: every client has done a few round trips, and they go on.
    wait_until("traffic from every client", || {
        rounds.load(Ordering::Relaxed) >= 3000
    });
    let signalled = Instant::now();
    server.signal("TERM");
    let code = server.wait_timeout(Duration::from_secs(5 + 2));
    let exited_after = signalled.elapsed();
    let peers: Vec<Peer> = drivers
        .into_iter()
        .flat_map(|d| d.join().unwrap())
        .collect();
    assert_eq!(code, Some(0), "stderr: {:?}", server.stderr_lines());
    let mut cut = 0;
    for (i, p) in peers.iter().enumerate() {
        let before = p
            .got
            .strip_suffix(b"quit\n")
            .unwrap_or_else(|| panic!("client {i} was not told quit: ...{:?}", tail(&p.got)));
        assert!(
            p.sent.starts_with(before),
            "client {i}: what came back is not what it sent: ...{:?}",
            tail(before)
        );
        cut += usize::from(before.len() < p.sent.len());
    }
    let summary = server.wait_stdout("the summary", |l| l.starts_with("tcpool served"));
    println!(
        "SIGTERM under fire: {} round trips, then exit 0 after {exited_after:.2?}; \
         {cut} client(s) had a line in flight that was not echoed; {summary}",
        rounds.load(Ordering::Relaxed)
    );
    assert!(summary.contains("served 1000 session(s)"), "{summary}");
    assert!(!summary.contains("still closing"), "{summary}");
}
