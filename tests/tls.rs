//! TLS: `serve` on a TLS listener (a certificate made at start, or files from `tcpool tls
//! gen`) beside a plaintext one, `talk --tls` and `bench --tls`, each against the others and
//! against real peers: OpenSSL's `s_client` and `s_server`, ncat's `--ssl` listener, and
//! Python's `ssl`. Verification failures, a client that speaks no TLS, and the graceful
//! shutdown's `close_notify` too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use tcpool::server::bind;
use tcpool::tls::{ClientTls, ServerCerts};
use tcpool::{Config, Server, Shutdown};

use crate::support::{IO_TIMEOUT, free_port, tcpool_bin};

/// A scratch directory of this test's own, removed at the end.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tcpool-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An in-process server: plaintext on one port, TLS on another, certificates from `certs`.
struct Both {
    plain: SocketAddr,
    tls: SocketAddr,
    shutdown: Shutdown,
    running: Option<thread::JoinHandle<std::io::Result<tcpool::Summary>>>,
}

impl Both {
    fn start(certs: &ServerCerts) -> Both {
        Both::start_with(certs, Config::default())
    }

    fn start_with(certs: &ServerCerts, config: Config) -> Both {
        crate::support::init_logger();
        let made = tcpool::tls::server_config(certs).unwrap();
        let plain = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let tls = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addrs = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
        let server = Server::new(plain, config).also_on_tls(tls).tls(made.config);
        let shutdown = server.shutdown();
        let running = thread::spawn(move || server.run());
        Both {
            plain: addrs.0,
            tls: addrs.1,
            shutdown,
            running: Some(running),
        }
    }

    fn stop(mut self) -> tcpool::Summary {
        self.shutdown.trigger();
        self.running.take().unwrap().join().unwrap().unwrap()
    }
}

impl Drop for Both {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// A blocking rustls client on `addr`, verifying with `ca` as `name`.
fn client(addr: SocketAddr, ca: &Path, name: &str) -> StreamOwned<ClientConnection, TcpStream> {
    let config = tcpool::tls::client_config(&ClientTls {
        ca: Some(ca.to_owned()),
        ..ClientTls::default()
    })
    .unwrap();
    let conn =
        ClientConnection::new(config, ServerName::try_from(name.to_owned()).unwrap()).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    StreamOwned::new(conn, sock)
}

fn echo_once(stream: &mut impl ReadWrite, line: &[u8]) -> Vec<u8> {
    stream.write_all(line).unwrap();
    stream.flush().unwrap();
    let mut got = vec![0; line.len()];
    stream.read_exact(&mut got).unwrap();
    got
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn echo_over_tls_beside_plaintext_with_a_certificate_made_at_start() {
    let scratch = Scratch::new("auto");
    let ca = scratch.path("ca.pem");
    let both = Both::start(&ServerCerts::Auto { ca_out: ca.clone() });
    // TLS, verified against the CA the server wrote, by name and by address.
    for name in ["localhost", "127.0.0.1"] {
        let mut tls = client(both.tls, &ca, name);
        assert_eq!(
            echo_once(&mut tls, b"hello over tls\n"),
            b"hello over tls\n"
        );
        let state = tls.conn.protocol_version();
        assert_eq!(state, Some(rustls::ProtocolVersion::TLSv1_3));
    }
    // Plaintext on the other port, at the same time.
    let mut plain = TcpStream::connect(both.plain).unwrap();
    plain.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(echo_once(&mut plain, b"plain\n"), b"plain\n");
    // A large block, more than rustls holds at once, comes back whole.
    let mut tls = client(both.tls, &ca, "localhost");
    let block: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut back = Vec::new();
    // In pieces (one owner reads and writes): each comes back before the next goes.
    for piece in block.chunks(16 * 1024) {
        tls.write_all(piece).unwrap();
        let mut got = vec![0; piece.len()];
        tls.read_exact(&mut got).unwrap();
        back.extend_from_slice(&got);
    }
    assert!(back == block, "the block came back changed");
    let summary = both.stop();
    assert!(summary.sessions >= 4);
}

#[test]
fn the_graceful_shutdown_says_quit_then_close_notify() {
    let scratch = Scratch::new("shutdown");
    let ca = scratch.path("ca.pem");
    let both = Both::start(&ServerCerts::Auto { ca_out: ca.clone() });
    let mut tls = client(both.tls, &ca, "localhost");
    assert_eq!(echo_once(&mut tls, b"hi\n"), b"hi\n");
    let shutdown = both.shutdown.clone();
    shutdown.trigger();
    // `read_to_end` fails with UnexpectedEof unless the server sent close_notify.
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).expect("a clean TLS close");
    assert_eq!(rest, b"quit\n");
    both.stop();
}

#[test]
fn a_client_that_speaks_no_tls_is_turned_away_and_the_others_go_on() {
    let scratch = Scratch::new("garbage");
    let ca = scratch.path("ca.pem");
    let both = Both::start_with(
        &ServerCerts::Auto { ca_out: ca.clone() },
        Config {
            tls_handshake_timeout: Duration::from_millis(300),
            ..Config::default()
        },
    );
    let mut good = client(both.tls, &ca, "localhost");
    assert_eq!(echo_once(&mut good, b"before\n"), b"before\n");
    // Plaintext on the TLS port: an alert back, then the close.
    let mut bad = TcpStream::connect(both.tls).unwrap();
    bad.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    bad.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = bad.read_to_end(&mut answer);
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "a TLS alert record: {answer:?}"
    );
    // A client that sends half a ClientHello and stops holds nothing up either.
    // It is closed at --tls-handshake-timeout.
    let mut half = TcpStream::connect(both.tls).unwrap();
    half.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    assert_eq!(echo_once(&mut good, b"after\n"), b"after\n");
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = half.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        started.elapsed() < IO_TIMEOUT,
        "closed at the handshake timeout"
    );
    both.stop();
}

#[test]
fn a_client_that_does_not_trust_the_certificate_fails_and_the_server_logs_why() {
    let scratch = Scratch::new("untrusted");
    let made = tcpool::tls::make::set(&scratch.0).unwrap();
    assert!(made.iter().any(|p| p.ends_with("wrong-name.pem")));
    // The server presents the expired certificate.
    let mut server = crate::support::Binary::serve(&[
        "--tls-cert",
        scratch.path("expired.pem").to_str().unwrap(),
        "--tls-key",
        scratch.path("expired-key.pem").to_str().unwrap(),
    ]);
    let out = talk_tls(
        server.addr,
        &["--tls-ca", scratch.path("ca.pem").to_str().unwrap()],
        "hi\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TLS handshake failed"), "{stderr}");
    assert!(
        stderr.contains("expired") || stderr.contains("Expired"),
        "{stderr}"
    );
    assert!(stderr.contains("--tls-insecure"), "{stderr}");
    server.wait_stderr("the server's log line", |l| {
        l.contains("reason=tls error=received fatal alert: CertificateExpired")
    });
    // --tls-insecure talks to it all the same.
    let out = talk_tls(server.addr, &["--tls-insecure"], "hi\nquit\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("server>> hi"), "{stdout}");
    server.signal("TERM");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}

fn talk_tls(addr: SocketAddr, flags: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(tcpool_bin())
        .args(["talk", "--tls", "--tls-servername", "localhost"])
        .args(flags)
        .arg(addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    wait_output(child)
}

pub(crate) fn wait_output(mut child: std::process::Child) -> std::process::Output {
    let deadline = Instant::now() + IO_TIMEOUT * 3;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the command did not end: {:?}",
                child.wait_with_output().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn talk_over_tls_verifies_and_shows_the_server() {
    let scratch = Scratch::new("talk");
    tcpool::tls::make::set(&scratch.0).unwrap();
    let cert = scratch.path("server.pem");
    let key = scratch.path("server-key.pem");
    let mut server = crate::support::Binary::serve(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    server.wait_stderr("the certificate line", |l| {
        l.contains("TLS certificate: subject=")
    });
    let out = talk_tls(
        server.addr,
        &["--tls-ca", scratch.path("ca.pem").to_str().unwrap()],
        "hello\nsecond\nquit\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("server>> hello") && stdout.contains("server>> second"),
        "{stdout}"
    );
    // The peer's certificate and what was agreed, as `openssl x509 -fingerprint` shows it.
    let fingerprint = openssl_fingerprint(&cert);
    assert!(
        stderr.contains(&format!("sha256={fingerprint}")),
        "{stderr} / {fingerprint}"
    );
    assert!(stderr.contains("CN=tcpool server"), "{stderr}");
    assert!(stderr.contains("version=TLSv1_3"), "{stderr}");
    // /list tells a TLS session and what it agreed.
    let mut held = client(server.addr, &scratch.path("ca.pem"), "localhost");
    assert_eq!(echo_once(&mut held, b"x\n"), b"x\n");
    server.type_line("/list");
    let row = server.wait_stdout("a TLS session's row", |l| l.contains("(tls "));
    assert!(row.contains("(tls TLSv1_3 TLS13_"), "{row}");
    server.signal("TERM");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}

/// `openssl x509 -fingerprint -sha256` of a PEM certificate: the part after `=`.
fn openssl_fingerprint(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .expect("openssl is needed for this test (scripts/test.sh installs it)");
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().split('=').nth(1).unwrap().to_owned()
}

#[test]
fn openssl_s_client_and_python_ssl_talk_to_the_server() {
    let scratch = Scratch::new("peers");
    let ca = scratch.path("ca.pem");
    let both = Both::start(&ServerCerts::Auto { ca_out: ca.clone() });
    // OpenSSL's client, verifying (exit code 0 only if the chain verified).
    let mut s_client = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
        ])
        .args(["-connect", &both.tls.to_string(), "-CAfile"])
        .arg(&ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is needed for this test (scripts/test.sh installs it)");
    let mut stdin = s_client.stdin.take().unwrap();
    stdin.write_all(b"from openssl\n").unwrap();
    let mut lines = BufReader::new(s_client.stdout.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line, "from openssl\n");
    drop(stdin);
    let _ = s_client.kill();
    let _ = s_client.wait();
    // Python's ssl module, verifying by name.
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
with socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"from python\n")
        got = b""
        while not got.endswith(b"\n"):
            got += s.recv(100)
        print(got.decode().strip(), s.version())
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&ca)
        .arg(both.tls.port().to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "from python TLSv1.3");
    both.stop();
}

#[test]
fn bench_over_tls_checks_every_byte_against_tcpool_and_ncat() {
    let scratch = Scratch::new("bench");
    tcpool::tls::make::set(&scratch.0).unwrap();
    let (cert, key, ca) = (
        scratch.path("server.pem"),
        scratch.path("server-key.pem"),
        scratch.path("ca.pem"),
    );
    let both = Both::start(&ServerCerts::Files {
        chain: cert.clone(),
        key: key.clone(),
    });
    // ncat's TLS listener (OpenSSL) running `cat` for each client: an echo server too.
    let port = free_port();
    let mut ncat = Command::new("ncat")
        .args(["--ssl", "--ssl-cert"])
        .arg(&cert)
        .arg("--ssl-key")
        .arg(&key)
        .args(["-l", "-k", "127.0.0.1", &port.to_string(), "-e", "/bin/cat"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ncat is needed for this test (scripts/test.sh installs it)");
    wait_listening(port);
    for target in [both.tls.to_string(), format!("127.0.0.1:{port}")] {
        let out = Command::new(tcpool_bin())
            .args(["bench", "--json", "-c", "4", "-n", "400", "-s", "100"])
            .args(["--tls", "--tls-servername", "localhost", "--tls-ca"])
            .arg(&ca)
            .arg(&target)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(report["messages"], 400, "{target}: {report}");
        assert_eq!(report["errors"], 0, "{target}: {report}");
        assert_eq!(out.status.code(), Some(0));
    }
    // Without the CA, every connection fails its handshake: the `tls` kind.
    let out = Command::new(tcpool_bin())
        .args(["bench", "--json", "-c", "2", "-n", "10", "--tls"])
        .arg(both.tls.to_string())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors_by_kind"]["tls"], 2, "{report}");
    assert_eq!(out.status.code(), Some(1));
    let _ = ncat.kill();
    let _ = ncat.wait();
    both.stop();
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn talk_reaches_openssl_s_server() {
    let scratch = Scratch::new("s_server");
    tcpool::tls::make::set(&scratch.0).unwrap();
    let port = free_port();
    // `-rev` answers each line reversed: a server that is not tcpool's.
    let mut s_server = Command::new("openssl")
        .args(["s_server", "-rev", "-accept", &port.to_string(), "-cert"])
        .arg(scratch.path("server.pem"))
        .arg("-key")
        .arg(scratch.path("server-key.pem"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is needed for this test (scripts/test.sh installs it)");
    wait_listening(port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let out = talk_tls(
        addr,
        &[
            "--eol",
            "lf",
            "--tls-ca",
            scratch.path("ca.pem").to_str().unwrap(),
        ],
        "stressed\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("server>> desserts"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = s_server.kill();
    let _ = s_server.wait();
}

#[test]
fn tls_gen_writes_certificates_that_openssl_verifies() {
    let scratch = Scratch::new("gen");
    let out = Command::new(tcpool_bin())
        .args(["tls", "gen"])
        .arg(&scratch.0)
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), 10, "{listed}");
    let verify = |name: &str| {
        let out = Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(scratch.path("ca.pem"))
            .arg(scratch.path(name))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    for good in ["server.pem", "client.pem", "wrong-name.pem"] {
        let (ok, text) = verify(good);
        assert!(ok, "{good}: {text}");
    }
    let (ok, text) = verify("expired.pem");
    assert!(!ok && text.contains("expired"), "{text}");
}

#[test]
fn behind_haproxy_passing_tls_through_with_a_proxy_header() {
    let scratch = Scratch::new("haproxy");
    let ca = scratch.path("ca.pem");
    let mut server = crate::support::Binary::serve(&[
        "--proxy-protocol",
        "v2",
        "--tls",
        "auto",
        "--tls-ca-out",
        ca.to_str().unwrap(),
    ]);
    // HAProxy in TCP mode: the header in clear, then the client's TLS bytes as they come.
    let haproxy = crate::proxy::Haproxy::start(server.addr, "send-proxy-v2");
    let mut tls = client(haproxy.addr, &ca, "localhost");
    assert_eq!(
        echo_once(&mut tls, b"through haproxy\n"),
        b"through haproxy\n"
    );
    let me = tls.sock.local_addr().unwrap().to_string();
    server.type_line("/list");
    let row = server.wait_stdout("the client's row in /list", |l| {
        l.trim_start().starts_with("#1 ")
    });
    assert_eq!(row.split_whitespace().nth(1), Some(me.as_str()), "{row}");
    server.type_line("quit");
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).expect("a clean TLS close");
    assert_eq!(rest, b"quit\n");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}

#[test]
fn a_proxy_header_and_the_client_hello_in_one_write() {
    let scratch = Scratch::new("one-write");
    let ca = scratch.path("ca.pem");
    let mut server = crate::support::Binary::serve(&[
        "--proxy-protocol",
        "v1",
        "--tls",
        "auto",
        "--tls-ca-out",
        ca.to_str().unwrap(),
    ]);
    let mut tls = client(server.addr, &ca, "localhost");
    // The ClientHello rustls made, behind the header, in one write.
    let mut hello = Vec::new();
    tls.conn.write_tls(&mut hello).unwrap();
    let mut first = b"PROXY TCP4 192.0.2.7 127.0.0.1 4000 8900\r\n".to_vec();
    first.extend_from_slice(&hello);
    tls.sock.write_all(&first).unwrap();
    assert_eq!(echo_once(&mut tls, b"one write\n"), b"one write\n");
    server.type_line("/list");
    let row = server.wait_stdout("the client's row in /list", |l| {
        l.trim_start().starts_with("#1 ")
    });
    assert_eq!(
        row.split_whitespace().nth(1),
        Some("192.0.2.7:4000"),
        "{row}"
    );
    server.signal("TERM");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}

#[test]
fn mutual_tls_asks_for_a_client_certificate_and_shows_its_name() {
    let scratch = Scratch::new("mtls");
    tcpool::tls::make::set(&scratch.0).unwrap();
    let file = |name: &str| scratch.path(name).to_str().unwrap().to_owned();
    let (cert, key, ca) = (file("server.pem"), file("server-key.pem"), file("ca.pem"));
    let mut server = crate::support::Binary::serve(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
    ]);
    // Without a certificate: refused, and the client hears why.
    let out = talk_tls(server.addr, &["--tls-ca", &ca], "hi\n");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CertificateRequired"), "{stderr}");
    assert!(
        stderr.contains("--tls-cert FILE --tls-key FILE"),
        "{stderr}"
    );
    server.wait_stderr("the refusal", |l| {
        l.contains("reason=tls error=peer sent no certificates")
    });
    // With one signed by the CA: served, its name in /list.
    let (client_cert, client_key) = (file("client.pem"), file("client-key.pem"));
    let flags = [
        "--tls-ca",
        &ca,
        "--tls-cert",
        &client_cert,
        "--tls-key",
        &client_key,
    ];
    let mut child = Command::new(tcpool_bin())
        .args(["talk", "--tls", "--tls-servername", "localhost"])
        .args(flags)
        .arg(server.addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"hello\n").unwrap();
    // Asked again until the session shows: the handshake may not be done at the first ask.
    let deadline = Instant::now() + IO_TIMEOUT;
    let row = loop {
        server.type_line("/list");
        thread::sleep(Duration::from_millis(100));
        let lines = server.stdout_lines();
        if let Some(row) = lines.iter().find(|l| l.contains("(tls ")) {
            break row.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no TLS session in /list: {lines:?}"
        );
    };
    assert!(row.contains("client=tcpool client"), "{row}");
    input.write_all(b"quit\n").unwrap();
    drop(input);
    let out = wait_output(child);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("server>> hello"), "{stdout}");
    // bench too: with the certificate every byte checked, without it every connection
    // refused, as errors of kind `tls`.
    for (identity, errors) in [(true, 0), (false, 2)] {
        let mut bench = Command::new(tcpool_bin());
        bench
            .args(["bench", "--json", "-c", "2", "-n", "100", "--tls"])
            .args(["--tls-servername", "localhost", "--tls-ca", &ca]);
        if identity {
            bench.args(["--tls-cert", &client_cert, "--tls-key", &client_key]);
        }
        let out = bench.arg(server.addr.to_string()).output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["errors"], errors, "{report}");
        if errors > 0 {
            assert_eq!(report["errors_by_kind"]["tls"], errors, "{report}");
        }
    }
    server.signal("TERM");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));

    // `optional`: a client without one is served too.
    let mut server = crate::support::Binary::serve(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
        "--tls-client-auth",
        "optional",
    ]);
    let out = talk_tls(server.addr, &["--tls-ca", &ca], "hi\nquit\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("server>> hi"), "{stdout}");
    server.signal("TERM");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}

#[test]
fn metrics_count_full_resumed_and_failed_handshakes() {
    let scratch = Scratch::new("metrics");
    let ca = scratch.path("ca.pem");
    let made = tcpool::tls::server_config(&ServerCerts::Auto { ca_out: ca.clone() }).unwrap();
    let server = Server::new(
        bind("127.0.0.1:0".parse().unwrap()).unwrap(),
        Config::default(),
    )
    .all_tls()
    .tls(made.config);
    let served = crate::admin::Served::start_server(server, Default::default());
    // One client configuration for two connections: the second resumes with the ticket
    // the first received with its echo.
    let config = tcpool::tls::client_config(&ClientTls {
        ca: Some(ca.clone()),
        ..ClientTls::default()
    })
    .unwrap();
    for expect_resumed in [false, true] {
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(config.clone(), name).unwrap();
        let sock = TcpStream::connect(served.addr).unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut tls = StreamOwned::new(conn, sock);
        assert_eq!(echo_once(&mut tls, b"hi\n"), b"hi\n");
        let resumed = tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        assert_eq!(resumed, expect_resumed);
    }
    // And one that speaks no TLS.
    let mut bad = TcpStream::connect(served.addr).unwrap();
    bad.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    bad.write_all(b"hello\n").unwrap();
    let _ = bad.read_to_end(&mut Vec::new());
    let count = |result: &str| {
        served
            .scrape()
            .get(&format!(
                "tcpool_tls_handshakes_total{{result=\"{result}\"}}"
            ))
            .copied()
            .unwrap_or(-1.0)
    };
    crate::support::wait_until("the failed handshake counted", || count("failed") == 1.0);
    assert_eq!(count("full"), 1.0);
    assert_eq!(count("resumed"), 1.0);
    assert_eq!(count("timeout"), 0.0);
    // One that does not trust the certificate: it says so with an alert.
    let other = Scratch::new("metrics-other-ca");
    tcpool::tls::make::set(&other.0).unwrap();
    let mut doubter = client(served.addr, &other.path("ca.pem"), "localhost");
    assert!(
        doubter
            .write_all(b"hi\n")
            .and_then(|()| doubter.flush())
            .is_err()
    );
    crate::support::wait_until("the refused handshake counted", || count("failed") == 2.0);
    let why = |reason: &str| {
        served
            .scrape()
            .get(&format!(
                "tcpool_tls_handshake_failures_total{{reason=\"{reason}\"}}"
            ))
            .copied()
            .unwrap_or(-1.0)
    };
    assert_eq!(why("not-tls"), 1.0);
    assert_eq!(why("peer-alert"), 1.0);
    assert_eq!(why("closed"), 0.0);
    // The histogram times the two that were done, as Python's prometheus_client reads it.
    let scraped = served.scrape();
    assert_eq!(
        scraped.get("tcpool_tls_handshake_seconds_count{}"),
        Some(&2.0)
    );
    let sum = scraped["tcpool_tls_handshake_seconds_sum{}"];
    assert!(sum > 0.0 && sum < 2.0 * IO_TIMEOUT.as_secs_f64(), "{sum}");
}

#[test]
fn versions_and_alpn_are_what_both_sides_allow() {
    let scratch = Scratch::new("offer");
    tcpool::tls::make::set(&scratch.0).unwrap();
    let file = |name: &str| scratch.path(name).to_str().unwrap().to_owned();
    let (cert, key, ca) = (file("server.pem"), file("server-key.pem"), file("ca.pem"));
    let mut server = crate::support::Binary::serve(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-versions",
        "1.2",
        "--tls-alpn",
        "tcpool,echo",
    ]);
    // talk, offering both versions and one of the server's protocols: TLS 1.2, `echo`.
    let out = talk_tls(
        server.addr,
        &["--tls-ca", &ca, "--tls-alpn", "other,echo"],
        "hi\nquit\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("server>> hi"),
        "{stderr}"
    );
    assert!(
        stderr.contains("version=TLSv1_2") && stderr.contains("alpn=echo"),
        "{stderr}"
    );
    // A client that offers no ALPN at all is served.
    let out = talk_tls(server.addr, &["--tls-ca", &ca], "hi\nquit\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("server>> hi"),
        "{stderr}"
    );
    assert!(stderr.contains("alpn=-"), "{stderr}");
    // OpenSSL offering none of the server's protocols is turned away with an alert.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-alpn",
            "h2",
            "-connect",
            &server.addr.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("openssl is needed for this test (scripts/test.sh installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("no application protocol"), "{text}");
    // A client that allows TLS 1.3 only finds no version in common.
    let out = talk_tls(
        server.addr,
        &["--tls-ca", &ca, "--tls-versions", "1.3"],
        "hi\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TLS handshake failed"), "{stderr}");
    server.wait_stderr("the server's line", |l| l.contains("reason=tls"));
    server.signal("TERM");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
    // Without --tls, the offer is a usage error.
    let out = Command::new(tcpool_bin())
        .args(["talk", "--tls-alpn", "h2", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// One line from a TLS stream, as text.
fn tls_line(stream: &mut impl Read) -> String {
    String::from_utf8_lossy(&crate::support::read_line(stream)).into_owned()
}

fn plain_line(stream: &mut TcpStream) -> String {
    String::from_utf8_lossy(&crate::support::read_line(stream)).into_owned()
}

#[test]
fn in_chat_a_client_certificate_names_its_holder_and_nobody_takes_the_name() {
    let scratch = Scratch::new("chat");
    tcpool::tls::make::set_with(&scratch.0, &["alice"]).unwrap();
    let file = |name: &str| scratch.path(name).to_str().unwrap().to_owned();
    let ca = file("ca.pem");
    let mut server = crate::support::Binary::serve(&[
        "--mode",
        "chat",
        "--tls-cert",
        &file("server.pem"),
        "--tls-key",
        &file("server-key.pem"),
        "--tls-client-ca",
        &ca,
        "--tls-client-auth",
        "optional",
        "--tls-port",
        "0",
    ]);
    let tls_addr = tls_addr_of(&server);
    // A member on the plaintext port calls itself alice.
    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert!(plain_line(&mut plain).starts_with("* you are #1"));
    plain.write_all(b"/nick alice\n").unwrap();
    assert_eq!(plain_line(&mut plain), "* you are now alice\n");
    // Then alice comes with her certificate: the name is hers.
    let config = tcpool::tls::client_config(&ClientTls {
        ca: Some(scratch.path("ca.pem")),
        identity: Some((scratch.path("client.pem"), scratch.path("client-key.pem"))),
        ..ClientTls::default()
    })
    .unwrap();
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let sock = TcpStream::connect(tls_addr).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut alice = StreamOwned::new(conn, sock);
    assert!(tls_line(&mut alice).starts_with("* you are alice; 1 here: #1"));
    assert_eq!(
        plain_line(&mut plain),
        "* alice is the name of a certificate holder: you are #1 again\n"
    );
    assert_eq!(plain_line(&mut plain), "* alice joined\n");
    // She keeps it, and nobody else takes it.
    alice.write_all(b"/nick bob\n").unwrap();
    assert_eq!(
        tls_line(&mut alice),
        "* your name is your certificate's: alice\n"
    );
    plain.write_all(b"/nick alice\n").unwrap();
    assert!(plain_line(&mut plain).starts_with("* nick refused"));
    alice.write_all(b"hi\n").unwrap();
    assert_eq!(plain_line(&mut plain), "<alice> hi\n");
    server.signal("TERM");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}

#[test]
fn allow_cn_and_deny_cn_judge_the_client_certificate_name() {
    let scratch = Scratch::new("cn");
    tcpool::tls::make::set_with(&scratch.0, &["alice", "bob", "carol"]).unwrap();
    let file = |name: &str| scratch.path(name).to_str().unwrap().to_owned();
    let ca = file("ca.pem");
    let mut server = crate::support::Binary::serve(&[
        "--tls-cert",
        &file("server.pem"),
        "--tls-key",
        &file("server-key.pem"),
        "--tls-client-ca",
        &ca,
        "--allow-cn",
        "alice",
        "--allow-cn",
        "carol",
        "--deny-cn",
        "carol",
    ]);
    let as_client = |cert: &str, key: &str| {
        talk_tls(
            server.addr,
            &[
                "--tls-ca",
                &ca,
                "--tls-cert",
                &file(cert),
                "--tls-key",
                &file(key),
            ],
            "hi\nquit\n",
        )
    };
    let alice = as_client("client.pem", "client-key.pem");
    assert!(String::from_utf8_lossy(&alice.stdout).contains("server>> hi"));
    for (who, cert, key) in [
        ("bob", "client-bob.pem", "client-bob-key.pem"),
        ("carol", "client-carol.pem", "client-carol-key.pem"),
    ] {
        let out = as_client(cert, key);
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("server>>"),
            "{who}"
        );
        server.wait_stderr("the refusal", |l| {
            l.contains(&format!("certificate name {who} not allowed"))
        });
        // Such lines are logged at most once a second.
        thread::sleep(Duration::from_millis(1100));
    }
    server.signal("TERM");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
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
fn a_hand_over_passes_the_tls_listener_on_as_tls() {
    let scratch = Scratch::new("handover");
    tcpool::tls::make::set(&scratch.0).unwrap();
    let file = |name: &str| scratch.path(name).to_str().unwrap().to_owned();
    let keylog = scratch.path("keys.log");
    let mut old = crate::support::Binary::serve_with(
        &[
            "--workers",
            "1",
            "--tls-cert",
            &file("server.pem"),
            "--tls-key",
            &file("server-key.pem"),
            "--tls-port",
            "0",
        ],
        Stdio::null(),
        |c| {
            c.env("SSLKEYLOGFILE", &keylog);
        },
    );
    let tls = tls_addr_of(&old);
    old.wait_stderr("the key log warning", |l| l.contains("SSLKEYLOGFILE="));
    let ca = scratch.path("ca.pem");
    let mut before = client(tls, &ca, "localhost");
    assert_eq!(echo_once(&mut before, b"before\n"), b"before\n");
    // The secrets of that session were written for Wireshark.
    let keys = std::fs::read_to_string(&keylog).unwrap();
    assert!(keys.contains("CLIENT_HANDSHAKE_TRAFFIC_SECRET"), "{keys}");
    old.signal("HUP");
    let new = crate::handover::Adopted(crate::handover::successor_pid(&old));
    // The old process says quit to its session and ends; the new one serves both ports,
    // TLS on the TLS one.
    let mut rest = Vec::new();
    before.read_to_end(&mut rest).expect("a clean TLS close");
    assert_eq!(rest, b"quit\n");
    assert_eq!(old.wait_timeout(IO_TIMEOUT * 2), Some(0));
    let mut after = client(tls, &ca, "localhost");
    assert_eq!(echo_once(&mut after, b"after\n"), b"after\n");
    let mut plain = TcpStream::connect(old.addr).unwrap();
    plain.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(echo_once(&mut plain, b"plain\n"), b"plain\n");
    drop((after, plain));
    assert!(new.stop());
}

#[test]
fn key_exchange_groups_are_what_both_sides_allow() {
    let scratch = Scratch::new("groups");
    tcpool::tls::make::set(&scratch.0).unwrap();
    let file = |name: &str| scratch.path(name).to_str().unwrap().to_owned();
    let (cert, key, ca) = (file("server.pem"), file("server-key.pem"), file("ca.pem"));
    let mut server = crate::support::Binary::serve(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-groups",
        "secp256r1,x25519",
    ]);
    // talk prefers P-384 then P-256: the one both allow is agreed.
    let out = talk_tls(
        server.addr,
        &["--tls-ca", &ca, "--tls-groups", "P-384,secp256r1"],
        "hi\nquit\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("group=secp256r1"), "{stderr}");
    // OpenSSL, told to offer P-256 only, agrees on it too: the server's choice is real.
    let out = Command::new("openssl")
        .args(["s_client", "-groups", "P-256", "-CAfile", &ca, "-connect"])
        .arg(server.addr.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("openssl is needed for this test (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Server Temp Key: ECDH, prime256v1"), "{text}");
    // A client with no group in common is refused.
    let out = talk_tls(
        server.addr,
        &["--tls-ca", &ca, "--tls-groups", "secp384r1"],
        "hi\n",
    );
    assert_eq!(out.status.code(), Some(1));
    // A group nobody knows is a usage error.
    let out = Command::new(tcpool_bin())
        .args(["talk", "--tls", "--tls-groups", "x448", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a key exchange group"));
    server.type_line("quit");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}

#[test]
fn several_certificates_each_client_gets_the_one_for_its_name() {
    let scratch = Scratch::new("sni");
    tcpool::tls::make::set(&scratch.0).unwrap();
    let file = |name: &str| scratch.path(name).to_str().unwrap().to_owned();
    let ca = file("ca.pem");
    let mut server = crate::support::Binary::serve(&[
        "--tls-cert",
        &file("server.pem"),
        "--tls-key",
        &file("server-key.pem"),
        "--tls-cert",
        &file("wrong-name.pem"),
        "--tls-key",
        &file("wrong-name-key.pem"),
    ]);
    // Each name its own certificate, verified for it; the first for a name neither is for,
    // and for a client that names none (an address).
    let port = server.addr.port().to_string();
    for (servername, subject) in [
        ("wrong.invalid", "CN=tcpool wrong name"),
        ("localhost", "CN=tcpool server"),
        ("127.0.0.1", "CN=tcpool server"),
    ] {
        let mut child = Command::new(tcpool_bin())
            .args([
                "talk",
                "--tls",
                "--tls-ca",
                &ca,
                "--tls-servername",
                servername,
            ])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"hi\nquit\n")
            .unwrap();
        let out = wait_output(child);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("subject={subject}")),
            "{servername}: {stderr}"
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("server>> hi"),
            "{servername}: {stderr}"
        );
    }
    // OpenSSL asking for another name gets the first certificate.
    let out = Command::new("openssl")
        .args(["s_client", "-servername", "other.invalid", "-connect"])
        .arg(server.addr.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("openssl is needed for this test (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CN = tcpool server"), "{text}");
    // A reload reads every pair again.
    server.type_line("/tls reload");
    let printed = server.wait_stdout("the console's answer", |l| l.contains("TLS certificate"));
    assert!(printed.contains("tcpool server"), "{printed}");
    // A certificate without its key is a usage error.
    let out = Command::new(crate::support::tcpool_bin())
        .args(["serve", "--port", "0", "--tls-cert", &file("server.pem")])
        .args([
            "--tls-key",
            &file("server-key.pem"),
            "--tls-cert",
            &file("ca.pem"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give a key for each certificate"));
    server.type_line("quit");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}
