//! `--tls-max-handshake-rate`: a storm of TLS clients over the rate is shed by the acceptor
//! before any handshake (a clean close, counted as `tls-rate`), the rest are served, and a
//! plaintext session beside them keeps echoing; plaintext connections never count. Through
//! the binary too: the flag, the metric as Prometheus's parser reads it, the log line.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tcpool::server::bind;
use tcpool::tls::{ClientTls, ServerCerts};
use tcpool::{Config, Server, Shutdown};

use crate::support::{IO_TIMEOUT, raise_fd_limit, rejected_count, round_trip};
use crate::tls::Scratch;

/// The rate of the storm test, and its clients.
const RATE: u32 = 20;
const STORM: usize = 200;

/// An in-process server: plaintext on one port, TLS on another.
struct Both {
    plain: SocketAddr,
    tls: SocketAddr,
    exposition: tcpool::server::Exposition,
    shutdown: Shutdown,
    running: Option<thread::JoinHandle<io::Result<tcpool::Summary>>>,
}

impl Both {
    fn start(certs: &ServerCerts, config: Config) -> Both {
        crate::support::init_logger();
        let made = tcpool::tls::server_config(certs).unwrap();
        let plain = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let tls = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addrs = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
        let server = Server::new(plain, config).also_on_tls(tls).tls(made.config);
        let exposition = server.exposition();
        let shutdown = server.shutdown();
        let running = thread::spawn(move || server.run());
        Both {
            plain: addrs.0,
            tls: addrs.1,
            exposition,
            shutdown,
            running: Some(running),
        }
    }

    fn metric(&self, name: &str) -> u64 {
        let text = self.exposition.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .parse()
            .unwrap()
    }

    fn shed(&self) -> u64 {
        rejected_count(&self.exposition.encode(), "tls-rate")
            .parse()
            .unwrap()
    }
}

impl Drop for Both {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(running) = self.running.take() {
            let _ = running.join();
        }
    }
}

/// How one client of the storm fared.
#[derive(Debug)]
enum Outcome {
    /// Its handshake was done, and an echo came back over TLS, this long after the start.
    Served(Duration),
    /// Closed before its handshake ended: an end of file or a reset.
    Shed,
    /// Anything else: a hang (a read that timed out), a TLS error, a wrong echo.
    Other(String),
}

fn client_config(ca: &std::path::Path) -> Arc<ClientConfig> {
    tcpool::tls::client_config(&ClientTls {
        ca: Some(ca.to_owned()),
        ..ClientTls::default()
    })
    .unwrap()
}

/// One storm client: its ClientHello is made before the start, so that every client
/// connects at once; then connect, handshake, one echo.
fn storm_client(addr: SocketAddr, config: Arc<ClientConfig>, start: &Barrier) -> Outcome {
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(config, name).unwrap();
    start.wait();
    let began = Instant::now();
    let mut sock = match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
        Ok(sock) => sock,
        Err(e) => return Outcome::Other(format!("connect: {e}")),
    };
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sock.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    // Bounded: every step reads or writes with a timeout, and a handshake has a few steps.
    for _ in 0..32 {
        if !conn.is_handshaking() {
            break;
        }
        if let Err(e) = conn.complete_io(&mut sock) {
            return match e.kind() {
                io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => Outcome::Shed,
                _ => Outcome::Other(format!("handshake: {e} ({:?})", e.kind())),
            };
        }
    }
    if conn.is_handshaking() {
        return Outcome::Other("the handshake never ended".into());
    }
    let done = began.elapsed();
    let mut tls = StreamOwned::new(conn, sock);
    let mut got = [0u8; 6];
    match tls
        .write_all(b"storm\n")
        .and_then(|()| tls.read_exact(&mut got))
    {
        Ok(()) if &got == b"storm\n" => Outcome::Served(done),
        Ok(()) => Outcome::Other(format!("echo: {got:?}")),
        Err(e) => Outcome::Other(format!("echo: {e}")),
    }
}

#[test]
fn a_storm_over_the_rate_is_shed_unread_while_a_plaintext_bystander_echoes() {
    raise_fd_limit();
    let scratch = Scratch::new("rate-storm");
    let ca = scratch.path("ca.pem");
    let both = Both::start(
        &ServerCerts::Auto { ca_out: ca.clone() },
        Config {
            tls_max_handshake_rate: Some(RATE),
            ..Config::default()
        },
    );
    let config = client_config(&ca);

    // The bystander: a plaintext session open before the storm, a round trip every 5 ms
    // until the storm is over (at most 3,000 of them).
    let mut bystander = TcpStream::connect(both.plain).unwrap();
    bystander.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(round_trip(&mut bystander, b"before\n"), b"before\n");
    let over = Arc::new(AtomicBool::new(false));
    let watching = {
        let over = Arc::clone(&over);
        thread::spawn(move || {
            let mut trips = 0;
            while !over.load(Ordering::Relaxed) && trips < 3000 {
                let line = format!("bystander {trips}\n");
                assert_eq!(round_trip(&mut bystander, line.as_bytes()), line.as_bytes());
                trips += 1;
                thread::sleep(Duration::from_millis(5));
            }
            (bystander, trips)
        })
    };

    let start = Arc::new(Barrier::new(STORM));
    let clients: Vec<_> = (0..STORM)
        .map(|_| {
            let (config, start, addr) = (Arc::clone(&config), Arc::clone(&start), both.tls);
            thread::Builder::new()
                .stack_size(512 * 1024)
                .spawn(move || storm_client(addr, config, &start))
                .unwrap()
        })
        .collect();
    let outcomes: Vec<Outcome> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    over.store(true, Ordering::Relaxed);
    let (mut bystander, trips) = watching.join().unwrap();

    let served: Vec<Duration> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Served(at) => Some(*at),
            _ => None,
        })
        .collect();
    let shed = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Shed))
        .count();
    let other: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Other(what) => Some(what.as_str()),
            _ => None,
        })
        .collect();
    assert!(other.is_empty(), "neither served nor shed: {other:?}");
    // At 20 a second with a burst of 2, the storm's first second lets in 22 at most; every
    // figure below leaves room for a slow machine.
    assert!(shed > 100, "only {shed} of {STORM} shed");
    let first_second = served
        .iter()
        .filter(|&&at| at < Duration::from_secs(1))
        .count();
    assert!(
        first_second < 120,
        "{first_second} handshakes done in the first second"
    );
    // The server counted what the clients saw: each shed one as `tls-rate`, each served one
    // as a full handshake (its echo came back, so the server had finished it).
    assert_eq!(both.shed(), shed as u64);
    assert_eq!(
        both.metric("tcpool_tls_handshakes_total{result=\"full\"}"),
        served.len() as u64
    );
    assert!(trips > 0, "the bystander never went round");
    assert_eq!(round_trip(&mut bystander, b"after\n"), b"after\n");

    // Plaintext connections never count: 50 at once, right after the storm emptied the
    // bucket, are all served, and no more are counted as shed.
    let mut plain: Vec<TcpStream> = (0..50)
        .map(|_| {
            let s = TcpStream::connect(both.plain).unwrap();
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            s
        })
        .collect();
    for (i, s) in plain.iter_mut().enumerate() {
        let line = format!("plain {i}\n");
        assert_eq!(round_trip(s, line.as_bytes()), line.as_bytes());
    }
    assert_eq!(both.shed(), shed as u64);

    // The bucket refills: a TLS client that tries again now and then is served (within 50
    // tries a tenth of a second apart; at 20 a second the first usually is).
    let alone = Barrier::new(1);
    for tries in 1.. {
        match storm_client(both.tls, Arc::clone(&config), &alone) {
            Outcome::Served(_) => break,
            Outcome::Shed => assert!(tries < 50, "still shed after {tries} tries"),
            Outcome::Other(what) => panic!("{what}"),
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn without_the_flag_a_storm_is_never_shed() {
    raise_fd_limit();
    let scratch = Scratch::new("rate-none");
    let ca = scratch.path("ca.pem");
    let both = Both::start(&ServerCerts::Auto { ca_out: ca.clone() }, Config::default());
    let config = client_config(&ca);
    const CLIENTS: usize = 40;
    let start = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (config, start, addr) = (Arc::clone(&config), Arc::clone(&start), both.tls);
            thread::spawn(move || storm_client(addr, config, &start))
        })
        .collect();
    for client in clients {
        let outcome = client.join().unwrap();
        assert!(matches!(outcome, Outcome::Served(_)), "{outcome:?}");
    }
    assert_eq!(both.shed(), 0);
}

/// The address in a server's `TLS on ADDR` log line.
fn tls_addr_of(server: &crate::support::Binary) -> SocketAddr {
    let line = server.wait_stderr("the TLS line", |l| l.contains("TLS on "));
    line.split("TLS on ")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_binary_sheds_over_the_rate_counts_and_logs_it_once_a_second() {
    let scratch = Scratch::new("rate-binary");
    let ca = scratch.path("ca.pem");
    let ca_arg = ca.to_str().unwrap().to_owned();
    let admin = format!("127.0.0.1:{}", crate::support::free_port());
    let server = crate::support::Binary::serve(&[
        "--tls",
        "auto",
        "--tls-ca-out",
        &ca_arg,
        "--tls-port",
        "0",
        "--tls-max-handshake-rate",
        "1",
        "--admin",
        &admin,
    ]);
    let tls = tls_addr_of(&server);
    server.wait_stderr("the rate line", |l| {
        l.contains("TLS handshakes at most 1/s (burst 1)")
    });
    let admin = server.admin_addr();
    // Ten bare connections to the TLS port in a row: at 1 a second, the first may go on to
    // its handshake and the rest are closed unread, each seeing an end of file or a reset,
    // not a hang. (A slow machine may let in a second one.)
    let mut closed = 0;
    let mut kept = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(tls).unwrap();
        let mut buf = [0u8; 16];
        // An admitted one waits for a ClientHello that never comes: its read would time out
        // after the server's 10 s handshake timeout; look only briefly.
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => closed += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                kept.push(s)
            }
            other => panic!("a shed connection read {other:?}"),
        }
    }
    assert!(closed >= 5, "only {closed} of 10 closed");
    assert!(kept.len() <= 5, "{} of 10 let in", kept.len());
    let (status, text) = crate::admin::request(admin, "GET", "/metrics", b"");
    assert_eq!(status, 200, "{text}");
    let samples = crate::admin::parse_with_prometheus_client(&text);
    let counted = crate::admin::sample(
        &samples,
        "tcpool_sessions_rejected_total{reason=\"tls-rate\"}",
    );
    assert_eq!(counted, closed as f64);
    // One log line in that burst, counting none suppressed; the rest held back.
    let line = server.wait_stderr("the shed line", |l| l.contains("reason=tls-rate"));
    assert!(
        line.contains("rate=1/s") && line.contains("suppressed=0"),
        "{line}"
    );
    let lines = server
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("reason=tls-rate"))
        .count();
    assert!(lines <= 4, "{lines} shed lines for {closed} sheds");
    drop(kept);
}

#[test]
fn the_flag_needs_tls_and_a_rate_of_at_least_one() {
    let out = std::process::Command::new(crate::support::tcpool_bin())
        .args(["serve", "--port", "0", "--tls-max-handshake-rate", "10"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--tls-max-handshake-rate") && stderr.contains("need a certificate"),
        "{stderr}"
    );
    for bad in ["0", "-1", "lots", "1000001"] {
        let out = std::process::Command::new(crate::support::tcpool_bin())
            .args(["serve", "--port", "0", "--tls", "auto"])
            .args(["--tls-max-handshake-rate", bad])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
}
