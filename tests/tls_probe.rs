//! The TLS server against hostile clients: garbage after a good handshake, ClientHellos a
//! byte at a time and half-open handshakes, a storm of TLS 1.3 key updates, PROXY headers
//! whose TLS fields lie or hold terminal escapes, and a ticket key file that is a FIFO. In
//! each, the server goes on serving a plaintext bystander, closes the hostile connection,
//! and says so in a bounded number of log lines.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tcpool::tls::ClientTls;

use crate::admin::exchange_on;
use crate::support::{Binary, IO_TIMEOUT, connect, read_to_close, round_trip, tcpool_bin};
use crate::tls::Scratch;

/// A scratch directory with the certificates of `tcpool tls gen`.
fn certs(name: &str) -> Scratch {
    let scratch = Scratch::new(&format!("probe-{name}"));
    tcpool::tls::make::set(&scratch.0).unwrap();
    scratch
}

fn text(path: PathBuf) -> String {
    path.to_str().unwrap().to_owned()
}

fn client_config(scratch: &Scratch, with_certificate: bool) -> Arc<ClientConfig> {
    tcpool::tls::client_config(&ClientTls {
        ca: Some(scratch.path("ca.pem")),
        identity: with_certificate
            .then(|| (scratch.path("client.pem"), scratch.path("client-key.pem"))),
        ..ClientTls::default()
    })
    .unwrap()
}

/// A TLS client on `sock`, its handshake done.
fn handshake(
    config: &Arc<ClientConfig>,
    mut sock: TcpStream,
) -> StreamOwned<ClientConnection, TcpStream> {
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(Arc::clone(config), name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    StreamOwned::new(conn, sock)
}

/// The address in a server's `TLS on ADDR` log line.
fn tls_addr(server: &Binary) -> SocketAddr {
    let line = server.wait_stderr("the TLS line", |l| l.contains("TLS on "));
    line.split("TLS on ")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn count(server: &Binary, needle: &str) -> usize {
    server
        .stderr_lines()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn garbage_after_the_handshake_is_closed_and_logged_at_most_once_a_second() {
    let scratch = certs("garbage");
    let server = Binary::serve(&[
        "--workers",
        "1",
        "--tls-cert",
        &text(scratch.path("server.pem")),
        "--tls-key",
        &text(scratch.path("server-key.pem")),
        "--tls-port",
        "0",
    ]);
    let tls = tls_addr(&server);
    let config = client_config(&scratch, false);
    let mut bystander = connect(server.addr);
    assert_eq!(round_trip(&mut bystander, b"before\n"), b"before\n");
    // Records that do not decrypt, a length past any record's, a ChangeCipherSpec after the
    // handshake, a record of 18 KiB: each a fatal error for the session that sent it.
    let mut junk = vec![0x17, 0x03, 0x03, 0x00, 0x40];
    junk.extend((0..0x40u8).map(|i| i.wrapping_mul(37)));
    let mut big = vec![0x17, 0x03, 0x03, 0x48, 0x00];
    big.resize(5 + 0x4800, 0xa5);
    let garbage: [&[u8]; 4] = [
        &junk,
        &[0x17, 0x03, 0x03, 0xff, 0xff, 1, 2, 3],
        &[0x14, 0x03, 0x03, 0x00, 0x01, 0x01],
        &big,
    ];
    const CLIENTS: usize = 40;
    let began = Instant::now();
    for i in 0..CLIENTS {
        let mut client = handshake(&config, TcpStream::connect(tls).unwrap());
        client.write_all(b"hi\n").unwrap();
        let mut echo = [0u8; 3];
        client.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"hi\n");
        // Bytes of no TLS session, straight to the socket, under rustls.
        let _ = client.sock.write_all(garbage[i % garbage.len()]);
        // Closed: after an alert, or reset when some of the garbage was left unread.
        read_to_close(&mut client.sock);
    }
    assert_eq!(round_trip(&mut bystander, b"after\n"), b"after\n");
    let elapsed = began.elapsed().as_secs() as usize;
    server.wait_stderr("a TLS failure", |l| l.contains("TLS failed"));
    thread::sleep(Duration::from_millis(200));
    let lines = count(&server, "TLS failed");
    // One worker says it at most once a second, whatever the number of clients.
    assert!(
        lines <= elapsed + 2 && lines < CLIENTS,
        "{lines} lines for {CLIENTS} clients in {elapsed} s: {:#?}",
        server.stderr_lines()
    );
}

#[test]
fn a_ticket_key_file_that_is_a_fifo_is_refused_not_waited_for() {
    let scratch = certs("fifo");
    let tickets = scratch.path("tickets.key");
    let server = Binary::serve(&[
        "--tls-cert",
        &text(scratch.path("server.pem")),
        "--tls-key",
        &text(scratch.path("server-key.pem")),
        "--tls-ticket-key-file",
        &text(tickets.clone()),
        "--tls-watch",
        "0",
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = server.admin_addr();
    // The file becomes a FIFO nobody writes to: opening it to read would wait for a writer,
    // holding every reload after this one, and the admin endpoint with it.
    std::fs::remove_file(&tickets).unwrap();
    mkfifo(&tickets);
    let answer = exchange_on(&mut connect(admin), "POST", "/tls/reload", "");
    assert_eq!(answer.status, 500, "{}", answer.body);
    assert!(
        answer.body.contains("not a regular file"),
        "{}",
        answer.body
    );
    let answer = exchange_on(&mut connect(admin), "GET", "/metrics", "");
    assert_eq!(answer.status, 200);
    // The certificate in use stays: a client still gets its handshake.
    let config = client_config(&scratch, false);
    let mut client = handshake(&config, TcpStream::connect(server.addr).unwrap());
    client.write_all(b"still\n").unwrap();
    let mut echo = [0u8; 6];
    client.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"still\n");

    // At start, the same FIFO stops the server at once, with that said.
    let mut child = Command::new(tcpool_bin())
        .args([
            "serve",
            "--port",
            "0",
            "--tls",
            "auto",
            "--tls-ticket-key-file",
        ])
        .arg(&tickets)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve still waits on a FIFO ticket key file after {IO_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
}

fn mkfifo(path: &std::path::Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
}

/// A PROXY v2 header from 192.0.2.7:40000 with a `PP2_TYPE_SSL` TLV whose value is `ssl`.
fn proxy_header(ssl: &[u8]) -> Vec<u8> {
    let mut body = vec![192, 0, 2, 7, 127, 0, 0, 1];
    body.extend_from_slice(&40000u16.to_be_bytes());
    body.extend_from_slice(&8900u16.to_be_bytes());
    body.push(0x20);
    body.extend_from_slice(&(ssl.len() as u16).to_be_bytes());
    body.extend_from_slice(ssl);
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
    header.extend_from_slice(&(body.len() as u16).to_be_bytes());
    header.extend_from_slice(&body);
    header
}

/// A `PP2_TYPE_SSL` value: a client certificate verified (flags 0x07, verify 0), then
/// sub-TLVs `(kind, declared length, bytes)`.
fn ssl_value(subs: &[(u8, usize, &[u8])]) -> Vec<u8> {
    let mut value = vec![0x07, 0, 0, 0, 0];
    for (kind, len, bytes) in subs {
        value.push(*kind);
        value.extend_from_slice(&(*len as u16).to_be_bytes());
        value.extend_from_slice(bytes);
    }
    value
}

#[test]
fn a_proxy_header_does_not_name_the_client_of_our_own_mutual_tls() {
    let scratch = certs("spoof");
    let server = Binary::serve(&[
        "--tls-cert",
        &text(scratch.path("server.pem")),
        "--tls-key",
        &text(scratch.path("server-key.pem")),
        "--tls-client-ca",
        &text(scratch.path("ca.pem")),
        "--proxy-protocol",
        "v2",
        "--mode",
        "chat",
    ]);
    let mut sock = TcpStream::connect(server.addr).unwrap();
    let cn = b"alice";
    sock.write_all(&proxy_header(&ssl_value(&[(0x22, cn.len(), cn)])))
        .unwrap();
    // The client's TLS ends here, with the certificate of `tcpool client`: that is its name,
    // whatever the header says a balancer verified.
    let mut client = handshake(&client_config(&scratch, true), sock);
    let greeting = crate::support::read_line(&mut client);
    let greeting = String::from_utf8_lossy(&greeting);
    assert!(
        greeting.starts_with("* you are tcpool client;"),
        "{greeting}"
    );
}

#[test]
fn hostile_proxy_tls_fields_reach_list_escaped_and_bounded() {
    let server = Binary::serve(&["--proxy-protocol", "v2"]);
    let escapes: &[u8] = b"al\x1b]0;owned\x07ice\r\n\0\x7f\xc2\x9b\x1b[2J";
    let long = vec![b'A'; 4000];
    let cases = [
        ssl_value(&[(0x21, 7, b"TLSv1.3"), (0x22, escapes.len(), escapes)]),
        ssl_value(&[(0x23, escapes.len(), escapes)]),
        ssl_value(&[(0x22, long.len(), &long)]),
        // A sub-TLV longer than what follows, and one whose header is cut short.
        ssl_value(&[(0x22, 200, b"bob")]),
        ssl_value(&[]).into_iter().chain([0x22, 0x00]).collect(),
        vec![0x07, 0x00],
    ];
    let mut held = Vec::new();
    for ssl in &cases {
        let mut sock = connect(server.addr);
        sock.write_all(&proxy_header(ssl)).unwrap();
        assert_eq!(round_trip(&mut sock, b"hi\n"), b"hi\n");
        held.push(sock);
    }
    // Past the header's 4 KiB: refused, never read whole.
    let huge = vec![b'B'; 64 * 1024 - 64];
    let mut sock = connect(server.addr);
    let _ = sock.write_all(&proxy_header(&ssl_value(&[(0x22, huge.len(), &huge)])));
    read_to_close(&mut sock);
    let mut server = server;
    server.type_line("/list");
    server.wait_stdout("the listing", |l| l.contains("client=AAAA"));
    thread::sleep(Duration::from_millis(200));
    let lines = server.stdout_lines();
    let listed: Vec<&String> = lines.iter().filter(|l| l.contains("192.0.2.7")).collect();
    assert_eq!(listed.len(), cases.len(), "{lines:#?}");
    for line in &listed {
        assert!(
            !line.chars().any(|c| c.is_control()),
            "a control character reached the console: {line:?}"
        );
        assert!(line.len() < 4400, "{} bytes: {line}", line.len());
    }
    assert!(
        listed
            .iter()
            .any(|l| l.contains(r"client=al\x1b]0;owned\x07ice\r\n\x00\x7f")),
        "{listed:#?}"
    );
}

/// The first records a rustls client sends: its ClientHello.
fn client_hello(scratch: &Scratch) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(client_config(scratch, false), name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

#[test]
fn slow_and_half_open_handshakes_are_closed_at_the_timeout_while_a_bystander_echoes() {
    let scratch = certs("slowloris");
    let server = Binary::serve(&[
        "--workers",
        "1",
        "--tls",
        "auto",
        "--tls-port",
        "0",
        "--tls-handshake-timeout",
        "1s",
    ]);
    let tls = tls_addr(&server);
    let hello = client_hello(&scratch);
    const EACH: usize = 20;
    let began = Instant::now();
    let mut slow: Vec<TcpStream> = (0..EACH).map(|_| connect(tls)).collect();
    let mut half: Vec<TcpStream> = (0..EACH).map(|_| connect(tls)).collect();
    for sock in &mut half {
        sock.write_all(&hello[..hello.len() / 2]).unwrap();
    }
    let mut bystander = connect(server.addr);
    // One byte of the hello every 100 ms on each slow connection until the server closes
    // it (a write fails), and a round trip of the bystander's between: at most 5 s.
    let mut open = vec![true; EACH];
    let mut at = 0;
    while open.iter().any(|&o| o) && began.elapsed() < Duration::from_secs(5) {
        for (sock, open) in slow.iter_mut().zip(&mut open) {
            if *open && sock.write_all(&hello[at % hello.len()..][..1]).is_err() {
                *open = false;
            }
        }
        at += 1;
        assert_eq!(round_trip(&mut bystander, b"ping\n"), b"ping\n");
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        open.iter().all(|&o| !o),
        "slow handshakes still open after {:?}",
        began.elapsed()
    );
    for sock in half.iter_mut().chain(&mut slow) {
        read_to_close(sock);
    }
    assert!(
        began.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );
    let elapsed = began.elapsed().as_secs() as usize;
    server.wait_stderr("a timeout", |l| l.contains("no handshake within 1s"));
    let lines = count(&server, "reason=tls");
    assert!(
        lines <= elapsed + 2,
        "{lines} lines: {:#?}",
        server.stderr_lines()
    );
}

#[test]
fn a_key_update_storm_is_echoed_and_one_without_data_is_refused_cleanly() {
    let scratch = certs("keyupdate");
    let server = Binary::serve(&[
        "--workers",
        "1",
        "--tls-cert",
        &text(scratch.path("server.pem")),
        "--tls-key",
        &text(scratch.path("server-key.pem")),
        "--tls-port",
        "0",
    ]);
    let tls = tls_addr(&server);
    let config = client_config(&scratch, false);
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.child.id())).unwrap();
        crate::support::stat_field(&stat, 14) + crate::support::stat_field(&stat, 15)
    };
    let cpu_before = cpu();
    // A key update before every byte: each is allowed, data between them.
    let mut client = handshake(&config, TcpStream::connect(tls).unwrap());
    const UPDATES: usize = 500;
    for _ in 0..UPDATES {
        client.conn.refresh_traffic_keys().unwrap();
        client.write_all(b"k").unwrap();
    }
    client.write_all(b"\n").unwrap();
    let mut echo = vec![0u8; UPDATES + 1];
    client.read_exact(&mut echo).unwrap();
    assert!(echo[..UPDATES].iter().all(|&b| b == b'k'));
    // Key updates alone, with no data between: rustls refuses past 32, and the session
    // ends with an alert, not a hang.
    let mut storm = handshake(&config, TcpStream::connect(tls).unwrap());
    for _ in 0..64 {
        storm.conn.refresh_traffic_keys().unwrap();
    }
    while storm.conn.wants_write() {
        if storm.conn.write_tls(&mut storm.sock).is_err() {
            break;
        }
    }
    let mut buf = [0u8; 64];
    let ended = loop {
        match storm.read(&mut buf) {
            Ok(0) => break "end of input".to_owned(),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => panic!("no close: {e}"),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => panic!("no close: {e}"),
            Err(e) => break e.to_string(),
        }
    };
    let mut bystander = connect(server.addr);
    assert_eq!(round_trip(&mut bystander, b"ping\n"), b"ping\n");
    server.wait_stderr("the refusal", |l| l.contains("TooManyKeyUpdateRequests"));
    // Clock ticks of 10 ms: the storm costs the server microseconds an update.
    let ticks = cpu() - cpu_before;
    assert!(ticks < 500, "{ticks} ticks of CPU; ended: {ended}");
}

#[test]
fn clients_that_upload_and_never_read_hold_the_server_to_its_outbox_limit_with_tls() {
    let scratch = certs("noread");
    let server = Binary::serve(&[
        "--workers",
        "1",
        "--tls-cert",
        &text(scratch.path("server.pem")),
        "--tls-key",
        &text(scratch.path("server-key.pem")),
        "--tls-port",
        "0",
    ]);
    let tls = tls_addr(&server);
    let config = client_config(&scratch, false);
    let fds =
        || std::fs::read_dir(format!("/proc/{}/fd", server.child.id())).map_or(0, |d| d.count());
    let (rss_before, fds_before) = (server.rss_kib(), fds());
    const CLIENTS: usize = 8;
    let mut clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let client = handshake(&config, TcpStream::connect(tls).unwrap());
            client.sock.set_nonblocking(true).unwrap();
            client
        })
        .collect();
    // Lines to echo, written as fast as the server takes them, never a byte read back: the
    // server's echoes pile up until its outbox is full, and then it stops reading.
    let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
    let mut sent = 0usize;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let mut moved = false;
        for client in &mut clients {
            if client.conn.wants_write() {
                match client.conn.write_tls(&mut client.sock) {
                    Ok(n) => {
                        sent += n;
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("the server closed a client that only wrote: {e}"),
                }
            } else {
                client.conn.writer().write_all(&line).unwrap();
                moved = true;
            }
        }
        if !moved {
            thread::sleep(Duration::from_millis(5));
        }
    }
    let grown = server.rss_kib().saturating_sub(rss_before);
    let mut bystander = connect(server.addr);
    assert_eq!(round_trip(&mut bystander, b"ping\n"), b"ping\n");
    // Each holds at most its outbox (1 MiB) and what rustls buffers (64 KiB each way); the
    // rest waits in the sockets. 40 MiB leaves the allocator room.
    assert!(
        grown < 40 * 1024,
        "grew by {grown} KiB with {CLIENTS} clients that sent {} MiB",
        sent >> 20
    );
    assert!(sent > CLIENTS << 20, "only {sent} bytes went out");
    drop(clients);
    crate::support::wait_until("the sessions' descriptors closed", || {
        fds() <= fds_before + 1
    });
}
