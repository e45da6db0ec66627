//! TLS with real peers, both ways where the peer can be both: socat (client and server),
//! GnuTLS's `gnutls-cli`, ncat (client and TLS listener), stunnel terminating TLS in front
//! of a plaintext tcpool and wrapping a plaintext client's bytes for a TLS tcpool, OpenSSL
//! and socat showing client certificates to a mutual-TLS tcpool (and tcpool showing its own
//! to socat), and `redis-server`'s TLS port under `bench --tls`. Every peer listens on
//! 127.0.0.1 at a free port, and is killed at the end of its test.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use crate::bench::bench;
use crate::support::{
    Binary, IO_TIMEOUT, collect_lines, free_port, run_to_end, seed_dir, tcpool_bin, wait_child,
    wait_line, wait_listening, wait_until,
};
use crate::tls::{Scratch, wait_output};

/// `tcpool tls gen` into a scratch directory of this test's own.
struct Certs(Scratch);

impl Certs {
    fn make(name: &str) -> Certs {
        let scratch = Scratch::new(&format!("interop-{name}"));
        let out = Command::new(tcpool_bin())
            .args(["tls", "gen"])
            .arg(&scratch.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Certs(scratch)
    }

    /// The path of one of the files written, as a peer's flag takes it.
    fn file(&self, name: &str) -> String {
        self.0.path(name).to_str().unwrap().to_owned()
    }

    /// `tcpool serve` with the server certificate on every listener, and `more` flags.
    fn serve(&self, more: &[&str]) -> Binary {
        let (cert, key) = (self.file("server.pem"), self.file("server-key.pem"));
        let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
        args.extend_from_slice(more);
        Binary::serve(&args)
    }
}

/// A peer program, its stdin piped and its output collected line by line; killed on drop.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    fn start(program: &str, args: &[&str]) -> Peer {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test.sh installs it)"));
        Peer {
            stdin: child.stdin.take(),
            stdout: collect_lines(child.stdout.take().unwrap()),
            stderr: collect_lines(child.stderr.take().unwrap()),
            child,
        }
    }

    fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Sends `line` and waits for the same line back on the peer's stdout.
    fn echo(&mut self, line: &str) {
        self.send(&format!("{line}\n"));
        self.wait_stdout(&format!("{line:?} back"), |l| l == line);
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn wait_stdout(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_line(&self.stdout, what, pred)
    }

    fn wait_stderr(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_line(&self.stderr, what, pred)
    }

    /// Waits for the peer to exit (a panic after `IO_TIMEOUT`); its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        wait_child(&mut self.child, IO_TIMEOUT)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command run to its end with stdin closed: its exit code and everything it printed.
fn finished(program: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut command = Command::new(program);
    command.args(args);
    let done = run_to_end(command, IO_TIMEOUT);
    let text = done.stdout.join("\n") + "\n" + &done.stderr.join("\n");
    (done.code, text)
}

/// `tcpool talk FLAGS ADDR` with `input` piped in, to its end.
fn talk(addr: SocketAddr, flags: &[&str], input: &str) -> Output {
    let addr = addr.to_string();
    let mut args = vec!["talk"];
    args.extend_from_slice(flags);
    args.push(&addr);
    piped(tcpool_bin(), &args, input)
}

/// `program ARGS` with `input` piped in, to its end (killed after a while).
fn piped(program: &str, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test.sh installs it)"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    wait_output(child)
}

/// Talks `hello`, `second` and `quit` to `addr` with `flags`; both lines must come back. The
/// talk's stderr (with `--tls`, its `tls:` lines).
fn talk_and_check(addr: SocketAddr, flags: &[&str]) -> String {
    let out = talk(addr, flags, "hello\nsecond\nquit\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("server>> hello\n") && stdout.contains("server>> second\n"),
        "{stdout}{stderr}"
    );
    stderr
}

/// `bench --tls` with 4 connections and 200 echoes, every byte checked: a clean run of
/// exactly 200.
fn bench_tls(addr: SocketAddr, flags: &[&str]) {
    let mut args = vec!["-c", "4", "-n", "200", "--tls"];
    args.extend_from_slice(flags);
    let run = bench(addr, &args);
    run.assert_clean();
    assert_eq!(run.u64("messages"), 200, "{}", run.report);
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

// --- socat ---------------------------------------------------------------------------------

#[test]
fn socat_verifies_tcpool_by_address_and_gets_its_line_back() {
    let scratch = Scratch::new("interop-socat-client");
    let ca = scratch.path("ca.pem");
    let server = Binary::serve(&["--tls", "auto", "--tls-ca-out", ca.to_str().unwrap()]);
    // socat checks the certificate against the address it connects to: 127.0.0.1, which the
    // certificate made at start names.
    let target = format!("OPENSSL:{},cafile={}", server.addr, ca.to_str().unwrap());
    let mut socat = Peer::start("socat", &["-", &target]);
    socat.echo("from socat");
    socat.echo("and again");
    socat.close_stdin();
    assert_eq!(socat.exit_code(), Some(0));
    // A CA that did not sign it: socat refuses, and the server hears why.
    let other = Certs::make("socat-other-ca");
    let target = format!("OPENSSL:{},cafile={}", server.addr, other.file("ca.pem"));
    let (code, text) = finished("socat", &["-u", &target, "STDOUT"]);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("certificate verify failed"), "{text}");
    server.wait_stderr("the refusal", |l| {
        l.contains("reason=tls error=received fatal alert: UnknownCA")
    });
}

/// socat's TLS listener running `cat` for each client, on a free loopback port.
fn socat_tls_echo(certs: &Certs, options: &str) -> (Peer, SocketAddr) {
    let port = free_port();
    let listen = format!(
        "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={}{options}",
        certs.file("server.pem"),
        certs.file("server-key.pem"),
    );
    let socat = Peer::start("socat", &[listen.as_str(), "EXEC:cat"]);
    wait_listening(port);
    (socat, loopback(port))
}

#[test]
fn talk_and_bench_verify_a_socat_tls_echo_server() {
    let certs = Certs::make("socat-server");
    let ca = certs.file("ca.pem");
    let (_socat, addr) = socat_tls_echo(&certs, ",verify=0");
    let stderr = talk_and_check(
        addr,
        &["--tls", "--tls-ca", &ca, "--tls-servername", "localhost"],
    );
    assert!(stderr.contains("CN=tcpool server"), "{stderr}");
    assert!(stderr.contains("version=TLSv1_3"), "{stderr}");
    // By address this time: the certificate names 127.0.0.1 too.
    bench_tls(addr, &["--tls-ca", &ca]);
}

// --- GnuTLS ----------------------------------------------------------------------------------

#[test]
fn gnutls_cli_verifies_tcpool_agrees_tls_1_3_and_refuses_a_wrong_ca() {
    let certs = Certs::make("gnutls");
    let server = certs.serve(&[]);
    let port = server.addr.port().to_string();
    let ca = certs.file("ca.pem");
    let mut gnutls = Peer::start(
        "gnutls-cli",
        &["--x509cafile", &ca, "-p", &port, "localhost"],
    );
    gnutls.echo("from gnutls");
    let trusted = gnutls.wait_stdout("the verification", |l| l.starts_with("- Status: "));
    assert_eq!(trusted.trim_end(), "- Status: The certificate is trusted.");
    let agreed = gnutls.wait_stdout("the description", |l| l.starts_with("- Description: "));
    assert!(
        agreed.starts_with("- Description: (TLS1.3-X.509)-"),
        "{agreed}"
    );
    gnutls.close_stdin();
    assert_eq!(gnutls.exit_code(), Some(0));
    // TLS 1.2 when GnuTLS offers only that.
    let mut gnutls = Peer::start(
        "gnutls-cli",
        &[
            "--x509cafile",
            &ca,
            "--priority",
            "NORMAL:-VERS-ALL:+VERS-TLS1.2",
            "-p",
            &port,
            "localhost",
        ],
    );
    gnutls.echo("over 1.2");
    let agreed = gnutls.wait_stdout("the description", |l| l.starts_with("- Description: "));
    assert!(
        agreed.starts_with("- Description: (TLS1.2-X.509)-"),
        "{agreed}"
    );
    gnutls.close_stdin();
    assert_eq!(gnutls.exit_code(), Some(0));
    // With the CA of another set, the certificate does not verify: no session.
    let other = Certs::make("gnutls-other-ca");
    let (code, text) = finished(
        "gnutls-cli",
        &[
            "--x509cafile",
            &other.file("ca.pem"),
            "-p",
            &port,
            "localhost",
        ],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(
            "- Status: The certificate is NOT trusted. The certificate issuer is unknown."
        ),
        "{text}"
    );
    assert!(
        text.contains("*** PKI verification of server certificate failed"),
        "{text}"
    );
    server.wait_stderr("the refusal", |l| {
        l.contains("reason=tls error=received fatal alert: BadCertificate")
    });
}

// --- ncat --------------------------------------------------------------------------------------

#[test]
fn talk_and_bench_reach_ncat_tls_listener() {
    let certs = Certs::make("ncat");
    let port = free_port();
    let ncat = Peer::start(
        "ncat",
        &[
            "--ssl",
            "--ssl-cert",
            &certs.file("server.pem"),
            "--ssl-key",
            &certs.file("server-key.pem"),
            "-l",
            "127.0.0.1",
            &port.to_string(),
            "-k",
            "--exec",
            "/bin/cat",
        ],
    );
    wait_listening(port);
    let ca = certs.file("ca.pem");
    let stderr = talk_and_check(
        loopback(port),
        &["--tls", "--tls-ca", &ca, "--tls-servername", "localhost"],
    );
    assert!(stderr.contains("version=TLSv1_3"), "{stderr}");
    // And bench, over TLS 1.2: OpenSSL's other handshake and record layer.
    bench_tls(loopback(port), &["--tls-ca", &ca, "--tls-versions", "1.2"]);
    drop(ncat);
}

#[test]
fn ncat_verifies_tcpool_by_name_and_gets_its_line_back() {
    let certs = Certs::make("ncat-client");
    let server = certs.serve(&[]);
    let port = server.addr.port().to_string();
    // By name: ncat 7.93 matches the names in a certificate, not its addresses, so it would
    // refuse the same certificate reached as 127.0.0.1.
    let mut ncat = Peer::start(
        "ncat",
        &[
            "--ssl",
            "--ssl-verify",
            "--ssl-trustfile",
            &certs.file("ca.pem"),
            "localhost",
            &port,
        ],
    );
    ncat.echo("from ncat");
    ncat.echo("and again");
    ncat.close_stdin();
    assert_eq!(ncat.exit_code(), Some(0));
    // Trusting another CA, it refuses, and the server hears why.
    let other = Certs::make("ncat-other-ca");
    let (code, text) = finished(
        "ncat",
        &[
            "--ssl",
            "--ssl-verify",
            "--ssl-trustfile",
            &other.file("ca.pem"),
            "localhost",
            &port,
        ],
    );
    assert_ne!(code, Some(0), "{text}");
    server.wait_stderr("the refusal", |l| {
        l.contains("reason=tls error=received fatal alert: UnknownCA")
    });
}

// --- stunnel -----------------------------------------------------------------------------------

/// stunnel in the foreground, with one service: `accept` on a free loopback port, `connect`
/// to `backend`, and `options` lines. Killed on drop.
struct Stunnel {
    peer: Peer,
    addr: SocketAddr,
    _dir: Scratch,
}

impl Stunnel {
    fn start(name: &str, backend: SocketAddr, options: &[String]) -> Stunnel {
        let dir = Scratch::new(&format!("interop-stunnel-{name}"));
        let port = free_port();
        let config = format!(
            "foreground = yes\npid =\n[{name}]\naccept = 127.0.0.1:{port}\nconnect = {backend}\n{}\n",
            options.join("\n")
        );
        let path = dir.path("stunnel.conf");
        std::fs::write(&path, config).unwrap();
        let peer = Peer::start("stunnel4", &[path.to_str().unwrap()]);
        peer.wait_stderr("stunnel's start", |l| {
            l.contains("Configuration successful")
        });
        wait_listening(port);
        Stunnel {
            peer,
            addr: loopback(port),
            _dir: dir,
        }
    }
}

#[test]
fn stunnel_terminates_tls_in_front_of_a_plaintext_tcpool() {
    let certs = Certs::make("stunnel-server");
    let server = Binary::serve(&[]);
    let stunnel = Stunnel::start(
        "terminate",
        server.addr,
        &[
            format!("cert = {}", certs.file("server.pem")),
            format!("key = {}", certs.file("server-key.pem")),
        ],
    );
    let ca = certs.file("ca.pem");
    let stderr = talk_and_check(
        stunnel.addr,
        &["--tls", "--tls-ca", &ca, "--tls-servername", "localhost"],
    );
    assert!(stderr.contains("CN=tcpool server"), "{stderr}");
    bench_tls(stunnel.addr, &["--tls-ca", &ca]);
    stunnel.peer.wait_stderr("stunnel's count", |l| {
        l.contains("Service [terminate] connected remote server")
    });
}

#[test]
fn stunnel_as_a_client_carries_plaintext_clients_to_a_tls_tcpool() {
    let certs = Certs::make("stunnel-client");
    let mut server = certs.serve(&[]);
    let stunnel = Stunnel::start(
        "wrap",
        server.addr,
        &[
            "client = yes".to_owned(),
            format!("CAfile = {}", certs.file("ca.pem")),
            "verifyChain = yes".to_owned(),
            "checkHost = localhost".to_owned(),
        ],
    );
    // tcpool's own plaintext talk.
    talk_and_check(stunnel.addr, &[]);
    stunnel.peer.wait_stderr("stunnel's verification", |l| {
        l.contains("Certificate accepted at depth=0: CN=tcpool server")
    });
    // The seed's Python client, which knows nothing of TLS, holding its session open while
    // the server lists it: a TLS session.
    let mut seed = Peer::start(
        "python3",
        &[
            seed_dir().join("seed_client.py").to_str().unwrap(),
            &stunnel.addr.port().to_string(),
        ],
    );
    seed.send("hello\n");
    seed.wait_stdout("the echo", |l| l.ends_with("server>> hello"));
    server.type_line("/list");
    let row = server.wait_stdout("the session's row", |l| l.contains("(tls "));
    assert!(row.contains("(tls TLSv1_3 TLS13_"), "{row}");
    seed.send("你好\nquit\n");
    seed.wait_stdout("the second echo", |l| l.ends_with("server>> 你好"));
    assert_eq!(seed.exit_code(), Some(0));
}

// --- Mutual TLS --------------------------------------------------------------------------------

#[test]
fn mutual_tls_lets_in_openssl_and_socat_with_a_certificate_and_refuses_them_without() {
    let certs = Certs::make("mtls");
    let (ca, cert, key) = (
        certs.file("ca.pem"),
        certs.file("client.pem"),
        certs.file("client-key.pem"),
    );
    let mut server = certs.serve(&[
        "--tls-client-ca",
        &ca,
        "--tls-client-auth",
        "required",
        "--admin",
        "127.0.0.1:0",
    ]);
    let addr = server.addr.to_string();
    // OpenSSL's client with the client certificate: served, and named in /list.
    let mut s_client = Peer::start(
        "openssl",
        &[
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
            "-CAfile",
            &ca,
            "-cert",
            &cert,
            "-key",
            &key,
            "-connect",
            &addr,
        ],
    );
    s_client.echo("from openssl with a certificate");
    server.type_line("/list");
    let row = server.wait_stdout("the session's row", |l| l.contains("(tls "));
    assert!(row.contains("client=tcpool client"), "{row}");
    drop(s_client);
    // socat with it.
    let target = format!("OPENSSL:{addr},cafile={ca},cert={cert},key={key}");
    let mut socat = Peer::start("socat", &["-", &target]);
    socat.echo("from socat with a certificate");
    socat.close_stdin();
    assert_eq!(socat.exit_code(), Some(0));
    // Without one, each is refused: the server says why, and so does the peer, which finished
    // its side of the handshake (TLS 1.3) and gets the alert instead of a reply.
    let (code, text) = finished(
        "openssl",
        &["s_client", "-quiet", "-CAfile", &ca, "-connect", &addr],
    );
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("alert certificate required"), "{text}");
    server.wait_stderr("the server's refusal", |l| {
        l.contains("reason=tls error=peer sent no certificates")
    });
    // socat 1.7 reads the alert as an end of file: its line gets no answer, and it ends as
    // if the server had closed.
    let target = format!("OPENSSL:{addr},cafile={ca}");
    let out = piped("socat", &["-", &target], "unanswered\n");
    assert_eq!(out.stdout, b"", "{out:?}");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A certificate signed by another CA of the same name (every `tls gen` CA is called
    // `tcpool test CA`): its signature does not verify with this CA's key.
    let other = Certs::make("mtls-other-ca");
    let (code, text) = finished(
        "openssl",
        &[
            "s_client",
            "-quiet",
            "-CAfile",
            &ca,
            "-cert",
            &other.file("client.pem"),
            "-key",
            &other.file("client-key.pem"),
            "-connect",
            &addr,
        ],
    );
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("alert decrypt error"), "{text}");
    // The server counted each: two handshakes done, three failed. (Its log says why once a
    // second; the first, above.)
    let admin = server.admin_addr();
    let handshakes = |result: &str| {
        let (status, text) = crate::admin::request(admin, "GET", "/metrics", b"");
        assert_eq!(status, 200, "{text}");
        let name = format!("tcpool_tls_handshakes_total{{result=\"{result}\"}} ");
        let value = text.lines().find_map(|l| l.strip_prefix(&name));
        value
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_owned()
    };
    wait_until("three failed handshakes", || handshakes("failed") == "3");
    assert_eq!(handshakes("full"), "2");
}

#[test]
fn talk_and_bench_show_their_certificate_to_a_socat_server_that_asks() {
    let certs = Certs::make("mtls-socat-server");
    let ca = certs.file("ca.pem");
    let (cert, key) = (certs.file("client.pem"), certs.file("client-key.pem"));
    let (socat, addr) = socat_tls_echo(&certs, &format!(",verify=1,cafile={ca}"));
    let identity = ["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key];
    let mut flags = vec!["--tls", "--tls-servername", "localhost"];
    flags.extend_from_slice(&identity);
    talk_and_check(addr, &flags);
    bench_tls(addr, &identity);
    // Without it, socat turns every connection away: each a `tls` error at the handshake or
    // on the first read after it (TLS 1.3 finishes the client's side first).
    let run = bench(addr, &["-c", "2", "-n", "10", "--tls", "--tls-ca", &ca]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.u64("messages"), 0, "{}", run.report);
    assert_eq!(run.kind("tls"), 2, "{}", run.report);
    socat.wait_stderr("socat's refusal", |l| {
        l.contains("peer did not return a certificate")
    });
}

// --- Redis -------------------------------------------------------------------------------------

/// `redis-server` with TLS only, on a free loopback port, the server certificate of `certs`,
/// nothing saved; `auth_clients` is `--tls-auth-clients`.
fn redis_tls(certs: &Certs, auth_clients: &str) -> (Peer, SocketAddr) {
    let port = free_port();
    let redis = Peer::start(
        "redis-server",
        &[
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &certs.file("server.pem"),
            "--tls-key-file",
            &certs.file("server-key.pem"),
            "--tls-ca-cert-file",
            &certs.file("ca.pem"),
            "--tls-auth-clients",
            auth_clients,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    );
    wait_listening(port);
    (redis, loopback(port))
}

#[test]
fn bench_speaks_resp_to_redis_over_tls() {
    let certs = Certs::make("redis");
    let ca = certs.file("ca.pem");
    let (_redis, addr) = redis_tls(&certs, "no");
    let run = bench(
        addr,
        &[
            "-c",
            "4",
            "-n",
            "400",
            "--pipeline",
            "8",
            "--tls",
            "--tls-ca",
            &ca,
            "--reply",
            "resp",
            "--send",
            r"SET key:{conn}:{seq} value\r\n",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(run.u64("messages"), 400, "{}", run.report);
    assert_eq!(run.report["replies"]["ok"], 400, "{}", run.report);
    // Redis holds what was sent: 400 keys, read back over TLS by its own client.
    let port = addr.port().to_string();
    let (code, text) = finished(
        "redis-cli",
        &[
            "--tls",
            "--cacert",
            &ca,
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "DBSIZE",
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(text.trim(), "400");
    let run = bench(
        addr,
        &[
            "-c",
            "2",
            "-n",
            "200",
            "--tls",
            "--tls-ca",
            &ca,
            "--send",
            r"PING\r\n",
            "--expect",
            r"+PONG\r\n",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(run.u64("errors"), 0, "{}", run.report);
    assert_eq!(run.u64("messages"), 200, "{}", run.report);
    assert_eq!(run.u64("bytes"), 200 * 7, "{}", run.report);
}

#[test]
fn bench_shows_its_certificate_to_a_redis_that_asks() {
    let certs = Certs::make("redis-mtls");
    let ca = certs.file("ca.pem");
    let (redis, addr) = redis_tls(&certs, "yes");
    let (cert, key) = (certs.file("client.pem"), certs.file("client-key.pem"));
    let ping = |identity: &[&str]| {
        let mut args = vec!["-c", "2", "-n", "100", "--reply", "resp", "--send"];
        args.extend_from_slice(&[r"PING\r\n", "--tls", "--tls-ca", &ca]);
        args.extend_from_slice(identity);
        bench(addr, &args)
    };
    let run = ping(&["--tls-cert", &cert, "--tls-key", &key]);
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(run.report["replies"]["ok"], 100, "{}", run.report);
    // Without it, Redis turns each connection away, and says why.
    let run = ping(&[]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.u64("messages"), 0, "{}", run.report);
    assert_eq!(run.kind("tls"), 2, "{}", run.report);
    redis.wait_stdout("Redis's refusal", |l| {
        l.contains("peer did not return a certificate")
    });
}
