//! The admin endpoint against hostile clients: request smuggling after a refused body,
//! bodies and answers that never finish, huge heads, slowloris and bursts of more
//! connections than it serves — answered (503, 408, 431...) and closed, never reset.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tcpool::server::Config;
use tcpool::server::operator::admin::{Limits, Options};

use crate::admin::Served;
use crate::support::{Binary, IO_TIMEOUT, connect, read_to_close};

/// Sends `bytes` and reads everything until the server closes; the answer as text.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = connect(addr);
    stream.write_all(bytes).unwrap();
    String::from_utf8_lossy(&read_to_close(&mut stream)).into_owned()
}

fn healthz(addr: SocketAddr) -> String {
    exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
}

/// A served endpoint whose limits are short, so that tests of them end quickly.
fn quick(limits: Limits) -> Served {
    Served::start_with(
        Config::default(),
        Options {
            limits,
            ..Options::default()
        },
    )
}

#[test]
fn bytes_after_a_refused_body_never_run_as_a_request() {
    let served = Served::start(Config::default());
    let smuggled =
        "GET /stats HTTP/1.1\r\nHost: x\r\n\r\nPOST /shutdown HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut chunked =
        b"POST /faults HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10001\r\n".to_vec();
    chunked.extend(vec![b'a'; 65537]);
    chunked.extend(b"\r\n0\r\n\r\n");
    chunked.extend(smuggled.as_bytes());
    let bad_length = |length: &str| {
        format!("POST /faults HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{smuggled}")
            .into_bytes()
    };
    let two_lengths = format!(
        "POST /faults HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{smuggled}"
    );
    for (request, status) in [
        (chunked, "413"),
        (bad_length("abc"), "400"),
        (bad_length("-1"), "400"),
        (bad_length("99999999999999999999999"), "400"),
        (bad_length("1, 1"), "400"),
        (two_lengths.into_bytes(), "400"),
    ] {
        // One answer, then the close: nothing after it was read as a request.
        let answer = exchange(served.admin_addr(), &request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
        assert!(!answer.contains("uptime_seconds"), "{answer}");
    }
    // Content-Length and Transfer-Encoding together: the body is read as chunked (hyper drops
    // the length), answered, and the connection closed after it, the bytes behind unread.
    let both = format!(
        "POST /faults HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
         10\r\ntruncate,bytes=3\r\n0\r\n\r\n{smuggled}"
    );
    let answer = exchange(served.admin_addr(), both.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 201 "), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(!answer.contains("uptime_seconds"), "{answer}");
    // Two equal lengths are one length: the request is answered, once.
    let twice = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert!(exchange(served.admin_addr(), twice).ends_with("\r\n\r\nok\n"));
    // Pipelined requests are answered in order, each once, up to the one that closes.
    let three = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /faults HTTP/1.1\r\nHost: x\r\n\r\n\
                 GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nPOST /shutdown HTTP/1.1\r\nHost: x\r\n\r\n";
    let answer = exchange(served.admin_addr(), three.as_bytes());
    assert_eq!(answer.matches("HTTP/1.1 200 ").count(), 3, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 3, "{answer}");
    assert!(!served.shutdown.is_triggered());
    assert!(healthz(served.admin_addr()).ends_with("\r\n\r\nok\n"));
}

#[test]
fn an_unfinished_body_is_timed_out_and_closed() {
    let served = quick(Limits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        ..Limits::default()
    });
    let mut holders: Vec<TcpStream> = [
        &b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n"[..],
        b"POST /faults HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nabc",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
    ]
    .iter()
    .map(|head| {
        let mut s = connect(served.admin_addr());
        s.write_all(head).unwrap();
        s
    })
    .collect();
    // The endpoint answers meanwhile.
    assert!(healthz(served.admin_addr()).ends_with("\r\n\r\nok\n"));
    // A body that stops is answered 408; a head that stops is closed unanswered (hyper's
    // header timeout); each well before the test's timeout.
    let started = Instant::now();
    for (i, holder) in holders.iter_mut().enumerate() {
        let answer = String::from_utf8_lossy(&read_to_close(holder)).into_owned();
        if i < 2 {
            assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        } else {
            assert_eq!(answer, "");
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_client_that_never_reads_holds_nothing_past_its_lifetime() {
    let served = quick(Limits {
        lifetime: Duration::from_secs(1),
        ..Limits::default()
    });
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    socket
        .connect_timeout(&served.admin_addr().into(), IO_TIMEOUT)
        .unwrap();
    let mut greedy: TcpStream = socket.into();
    greedy
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let pipeline = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
    let _ = greedy.write_all(&pipeline);
    for _ in 0..5 {
        assert!(healthz(served.admin_addr()).ends_with("\r\n\r\nok\n"));
    }
    // Past its lifetime (and the grace to finish an answer) the server closes it: the
    // answers it got are whole ones, far fewer than it asked for.
    std::thread::sleep(Duration::from_secs(4));
    greedy.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = greedy.read_to_end(&mut answer);
    assert!(started.elapsed() < Duration::from_secs(5));
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.matches("HTTP/1.1 200 ").count() < 2000);
}

#[test]
fn a_huge_header_is_refused_at_the_head_limit() {
    let served = Served::start(Config::default());
    let mut stream = connect(served.admin_addr());
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: ")
        .unwrap();
    let block = vec![b'a'; 64 * 1024];
    // Far more than the limit; the server stops reading (and closes) after HEAD_LIMIT.
    for _ in 0..64 {
        if stream.write_all(&block).is_err() {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&read_to_close(&mut stream)).into_owned();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
        "{answer}"
    );
    assert!(healthz(served.admin_addr()).ends_with("\r\n\r\nok\n"));
}

#[test]
fn connections_over_the_cap_are_answered_503_not_reset() {
    let served = quick(Limits {
        max_connections: 8,
        header_timeout: Duration::from_secs(1),
        ..Limits::default()
    });
    let extra = 24;
    let mut open: Vec<TcpStream> = (0..8 + extra)
        .map(|_| {
            let mut s = connect(served.admin_addr());
            s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    // The ones over the cap are answered at once; the others are cut by the header timeout.
    let mut busy = 0;
    for s in &mut open {
        let answer = String::from_utf8_lossy(&read_to_close(s)).into_owned();
        if answer.starts_with("HTTP/1.1 503 ") {
            assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
            busy += 1;
        } else {
            assert_eq!(answer, "");
        }
    }
    assert_eq!(busy, extra);
    drop(open);
    // Once they are gone the endpoint serves again.
    crate::support::wait_until("the admin slots freed", || {
        healthz(served.admin_addr()).ends_with("\r\n\r\nok\n")
    });
}

#[test]
fn healthz_answers_every_time_through_a_slowloris_of_40() {
    let served = Served::start(Config::default());
    // Forty clients sending a byte of a header each second, for longer than the header
    // timeout lets them live.
    let mut slow: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = connect(served.admin_addr());
            s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(7);
    let mut next_byte = Instant::now();
    let mut checks = 0;
    while Instant::now() < until {
        if Instant::now() >= next_byte {
            for s in &mut slow {
                // Cut by the server once its header timeout passed: that is the point.
                let _ = s.write_all(b"a");
            }
            next_byte += Duration::from_secs(1);
        }
        let started = Instant::now();
        let answer = healthz(served.admin_addr());
        assert!(answer.ends_with("\r\n\r\nok\n"), "check {checks}: {answer}");
        assert!(started.elapsed() < Duration::from_secs(2));
        checks += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(checks >= 20, "{checks}");
}

#[test]
fn a_burst_of_3000_requests_gets_200s_and_503s_and_no_reset() {
    crate::support::raise_fd_limit();
    let served = Served::start(Config::default());
    let addr = served.admin_addr();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcomes = runtime.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tasks: Vec<_> = (0..3000)
            .map(|_| {
                tokio::spawn(async move {
                    let attempt = async {
                        let mut s = tokio::net::TcpStream::connect(addr).await?;
                        s.write_all(
                            b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                        )
                        .await?;
                        let mut answer = Vec::new();
                        s.read_to_end(&mut answer).await?;
                        Ok::<_, std::io::Error>(answer)
                    };
                    match tokio::time::timeout(Duration::from_secs(60), attempt).await {
                        Err(_) => "timeout".to_owned(),
                        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                            "reset".to_owned()
                        }
                        Ok(Err(e)) => format!("error {e}"),
                        Ok(Ok(answer)) => {
                            String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned()
                        }
                    }
                })
            })
            .collect();
        let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
        for task in tasks {
            *outcomes.entry(task.await.unwrap()).or_default() += 1;
        }
        outcomes
    });
    let ok = outcomes.get("HTTP/1.1 200").copied().unwrap_or(0);
    let busy = outcomes.get("HTTP/1.1 503").copied().unwrap_or(0);
    assert_eq!(outcomes.get("reset"), None, "{outcomes:?}");
    assert_eq!(ok + busy, 3000, "{outcomes:?}");
    assert!(ok > 0, "{outcomes:?}");
    assert!(healthz(served.admin_addr()).ends_with("\r\n\r\nok\n"));
}

#[test]
fn sigterm_ends_the_process_on_time_despite_an_unfinished_admin_request() {
    let mut server = Binary::serve_with(
        &["--admin", "127.0.0.1:0", "--shutdown-timeout", "1s"],
        Stdio::null(),
        |_| {},
    );
    let admin = server.admin_addr();
    let mut holder = connect(admin);
    holder
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.signal("TERM");
    // Generous: 1 s of drain plus the admin deadline at most.
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
    drop(holder);
}
