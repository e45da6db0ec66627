//! `--proxy-protocol`: real HAProxy in front (`send-proxy`, `send-proxy-v2`), and the headers
//! a balancer should never send: malformed, slow, missing.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tcpool::server::{Config, ProxyProtocol, Server, bind};

use crate::support::*;

/// HAProxy on a free loopback port, forwarding to `backend` with `server_options`
/// (`send-proxy`); killed on drop.
pub struct Haproxy {
    child: Child,
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl Haproxy {
    pub fn start(backend: SocketAddr, server_options: &str) -> Haproxy {
        Haproxy::start_with("", backend, server_options)
    }

    /// [`Haproxy::start`] with `bind_options` on its listener (`accept-proxy`).
    pub fn start_with(bind_options: &str, backend: SocketAddr, server_options: &str) -> Haproxy {
        let dir = TempDir::new("haproxy");
        let port = free_port();
        let config = format!(
            "global\n  maxconn 256\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend front\n  bind 127.0.0.1:{port} {bind_options}\n  default_backend back\n\
             backend back\n  server tcpool {backend} {server_options}\n"
        );
        let path = dir.path.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (scripts/test.sh installs it)");
        wait_listening(port);
        Haproxy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Through HAProxy with `option`, `/list` shows the client's own address, not HAProxy's.
fn list_shows_the_client_behind(version: &str, option: &str) {
    let mut server = Binary::serve(&["--proxy-protocol", version]);
    let haproxy = Haproxy::start(server.addr, option);
    let mut client = connect(haproxy.addr);
    assert_eq!(round_trip(&mut client, b"hello\n"), b"hello\n");
    let me = client.local_addr().unwrap().to_string();
    server.type_line("/list");
    let row = server.wait_stdout("the client's row in /list", |l| {
        l.trim_start().starts_with("#1 ")
    });
    assert_eq!(row.split_whitespace().nth(1), Some(me.as_str()), "{row}");
    server.type_line("quit");
    assert_eq!(read_to_close(&mut client), b"quit\n");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}

#[test]
fn haproxy_send_proxy_v1_shows_the_clients_own_port() {
    list_shows_the_client_behind("v1", "send-proxy");
}

#[test]
fn haproxy_send_proxy_v2_shows_the_clients_own_port() {
    list_shows_the_client_behind("v2", "send-proxy-v2");
}

#[test]
fn any_accepts_both_versions_through_haproxy() {
    let mut server = Binary::serve(&["--proxy-protocol", "any"]);
    let one = Haproxy::start(server.addr, "send-proxy");
    let two = Haproxy::start(server.addr, "send-proxy-v2");
    let mut a = connect(one.addr);
    let mut b = connect(two.addr);
    assert_eq!(round_trip(&mut a, b"one"), b"one");
    assert_eq!(round_trip(&mut b, b"two"), b"two");
    server.type_line("quit");
    assert_eq!(read_to_close(&mut a), b"quit");
    assert_eq!(read_to_close(&mut b), b"quit");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}

/// An in-process server expecting `proxy` headers, with `--proxy-timeout` `timeout`.
fn proxied(proxy: ProxyProtocol, timeout: Duration) -> (Server, SocketAddr) {
    init_logger();
    let config = Config {
        proxy: Some(proxy),
        proxy_timeout: timeout,
        ..Config::default()
    };
    let server = Server::new(bind("127.0.0.1:0".parse().unwrap()).unwrap(), config);
    let addr = server.local_addr().unwrap();
    (server, addr)
}

#[test]
fn malformed_slow_and_missing_headers_are_closed_without_a_reply() {
    let (server, addr) = proxied(ProxyProtocol::V1, Duration::from_millis(300));
    let (exposition, registry, shutdown) =
        (server.exposition(), server.registry(), server.shutdown());
    let running = std::thread::spawn(move || server.run());

    // A client that talks without a header: never echoed, never guessed at.
    let mut bare = connect(addr);
    bare.write_all(b"hello\n").unwrap();
    assert_eq!(read_to_close(&mut bare), b"");
    // A malformed one.
    let mut bad = connect(addr);
    bad.write_all(b"PROXY TCP4 300.1.1.1 127.0.0.1 1 2\r\nhello\n")
        .unwrap();
    assert_eq!(read_to_close(&mut bad), b"");
    // A slow one: half a header, then nothing, closed after --proxy-timeout.
    let mut slow = connect(addr);
    slow.write_all(b"PROXY TCP4 192.0.2.1").unwrap();
    let started = std::time::Instant::now();
    assert_eq!(read_to_close(&mut slow), b"");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(rejected_count(&exposition.encode(), "proxy-header"), "3");
    assert_eq!(registry.len(), 0);

    // Meanwhile a good one is served, its header neither a message nor its line ending.
    let mut good = connect(addr);
    good.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 8900\r\nhi")
        .unwrap();
    assert_eq!(read_n(&mut good, 2), b"hi");
    let peers: Vec<SocketAddr> = registry.list().iter().map(|s| s.peer).collect();
    assert_eq!(peers, ["192.0.2.1:40000".parse::<SocketAddr>().unwrap()]);
    shutdown.trigger();
    assert_eq!(
        read_to_close(&mut good),
        b"quit",
        "no line ending was taken from the header"
    );
    let summary = running.join().unwrap().unwrap();
    assert_eq!(summary.sessions, 1);
    assert_eq!(
        summary.traffic.bytes_in, 2,
        "the header is not counted as input"
    );
}

#[test]
fn a_local_header_keeps_the_connections_address_and_deny_judges_the_original_client() {
    init_logger();
    let config = Config {
        proxy: Some(ProxyProtocol::Any),
        access: tcpool::server::Access {
            allow: vec![],
            deny: vec!["192.0.2.0/24".parse().unwrap()],
        },
        ..Config::default()
    };
    let server = Server::new(bind("127.0.0.1:0".parse().unwrap()).unwrap(), config);
    let addr = server.local_addr().unwrap();
    let (registry, shutdown) = (server.registry(), server.shutdown());
    let running = std::thread::spawn(move || server.run());

    let mut denied = connect(addr);
    denied
        .write_all(b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 8900\r\nhi\n")
        .unwrap();
    assert_eq!(read_to_close(&mut denied), b"");
    let mut allowed = connect(addr);
    allowed
        .write_all(b"PROXY TCP6 2001:db8::1 ::1 40000 8900\r\nok\n")
        .unwrap();
    assert_eq!(read_n(&mut allowed, 3), b"ok\n");
    // A LOCAL v2 header (a balancer's health check): the connection's own address stands.
    let mut local = connect(addr);
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    header.extend_from_slice(b"ping");
    local.write_all(&header).unwrap();
    assert_eq!(read_n(&mut local, 4), b"ping");
    let mut peers: Vec<String> = registry.list().iter().map(|s| s.peer.to_string()).collect();
    peers.sort();
    assert_eq!(
        peers,
        [
            "127.0.0.1:".to_owned() + &local.local_addr().unwrap().port().to_string(),
            "[2001:db8::1]:40000".into()
        ]
    );
    shutdown.trigger();
    assert_eq!(read_to_close(&mut allowed), b"quit\n");
    assert_eq!(running.join().unwrap().unwrap().sessions, 2);
}

#[test]
fn a_burst_of_bad_headers_is_counted_whole_but_logged_at_most_once_a_second() {
    let server = Binary::serve(&[
        "--proxy-protocol",
        "v1",
        "--workers",
        "2",
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = server.admin_addr();
    const BAD: usize = 200;
    for _ in 0..BAD {
        let mut bad = connect(server.addr);
        bad.write_all(b"NOT A PROXY HEADER\r\n").unwrap();
        assert_eq!(read_to_close(&mut bad), b"");
    }
    let mut scrape = connect(admin);
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let metrics = String::from_utf8(read_to_close(&mut scrape)).unwrap();
    assert_eq!(rejected_count(&metrics, "proxy-header"), BAD.to_string());
    let logged = server
        .stderr
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("reason=proxy-header"))
        .count();
    // Two workers, each logging at most once a second, over a burst of a few seconds at most.
    assert!(
        (1..=20).contains(&logged),
        "{logged} warnings for {BAD} bad headers"
    );
    // A good header is still served.
    let mut good = connect(server.addr);
    good.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 8900\r\nhi\n")
        .unwrap();
    assert_eq!(read_line(&mut good), b"hi\n");
}

#[test]
fn a_client_that_closes_inside_its_header_is_dropped_at_once() {
    // Half a header, then the client's FIN: the header can never be whole, so the
    // connection goes then, not after --proxy-timeout (its place under --max-conns freed).
    let (server, addr) = proxied(ProxyProtocol::Any, Duration::from_secs(60));
    let (exposition, registry, shutdown) =
        (server.exposition(), server.registry(), server.shutdown());
    let running = std::thread::spawn(move || server.run());
    let mut v1 = connect(addr);
    v1.write_all(b"PROXY TCP4 192.0.2.1").unwrap();
    v1.shutdown(std::net::Shutdown::Write).unwrap();
    let mut v2 = connect(addr);
    v2.write_all(b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00")
        .unwrap();
    v2.shutdown(std::net::Shutdown::Write).unwrap();
    // Read-timeouts of IO_TIMEOUT, far below the 60 s header timeout.
    assert_eq!(read_to_close(&mut v1), b"");
    assert_eq!(read_to_close(&mut v2), b"");
    wait_until("both counted", || {
        rejected_count(&exposition.encode(), "proxy-header") == "2"
    });
    assert_eq!(registry.len(), 0);
    shutdown.trigger();
    assert_eq!(running.join().unwrap().unwrap().sessions, 0);
}

/// The local port of the one established TCP connection on this machine whose other end is
/// `remote`'s port on 127.0.0.1, from `/proc/net/tcp`.
fn client_port_towards(remote: SocketAddr) -> Option<u16> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let want = format!("0100007F:{:04X}", remote.port());
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // local, remote, state (01: established)
        (fields.get(2) == Some(&want.as_str()) && fields.get(3) == Some(&"01"))
            .then(|| u16::from_str_radix(fields[1].split(':').nth(1)?, 16).ok())
            .flatten()
    })
}

#[test]
fn talk_and_bench_send_a_header_that_haproxy_accepts_and_passes_on() {
    let mut server = Binary::serve(&["--proxy-protocol", "v2"]);
    let haproxy = Haproxy::start_with("accept-proxy", server.addr, "send-proxy-v2");
    for version in ["v1", "v2"] {
        // talk's header names its own address; HAProxy takes it and sends it on, so the
        // server's /list shows talk's port, not HAProxy's.
        let mut talk = Command::new(tcpool_bin())
            .args(["talk", "--send-proxy", version, &haproxy.addr.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = talk.stdin.take().unwrap();
        stdin.write_all(b"through\n").unwrap();
        let mut out = std::io::BufReader::new(talk.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line, "server>> through\n", "{version}");
        let port = client_port_towards(haproxy.addr).expect("talk's connection to HAProxy");
        server.type_line("/list");
        let row = server.wait_stdout("talk's row in /list", |l| {
            l.contains(&format!("127.0.0.1:{port} "))
        });
        assert!(row.trim_start().starts_with('#'), "{version}: {row}");
        drop(stdin);
        assert!(talk.wait().unwrap().success(), "{version}");
        // bench: every connection's header accepted, every echo right.
        let out = Command::new(tcpool_bin())
            .args([
                "bench",
                "--json",
                "-c",
                "4",
                "-n",
                "200",
                "--send-proxy",
                version,
            ])
            .arg(haproxy.addr.to_string())
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["messages"], 200, "{version}: {report}");
        assert_eq!(report["errors"], 0, "{version}: {report}");
    }
    // Without a header HAProxy closes every connection: the flag is what made them work.
    let out = Command::new(tcpool_bin())
        .args(["bench", "--json", "-c", "2", "-n", "20", "--timeout", "2s"])
        .arg(haproxy.addr.to_string())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["messages"], 0, "{report}");
    assert_eq!(report["errors"], 2, "{report}");
    server.type_line("quit");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}

#[test]
fn the_header_goes_in_clear_before_the_tls_handshake() {
    let dir = TempDir::new("send-proxy-tls");
    let ca = dir.path.join("ca.pem");
    let mut server = Binary::serve(&[
        "--proxy-protocol",
        "any",
        "--tls",
        "auto",
        "--tls-ca-out",
        ca.to_str().unwrap(),
    ]);
    let target = format!("localhost:{}", server.addr.port());
    for version in ["v1", "v2"] {
        let mut talk = Command::new(tcpool_bin())
            .args(["talk", "--tls", "--tls-ca", ca.to_str().unwrap()])
            .args(["--send-proxy", version, &target])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        talk.stdin.take().unwrap().write_all(b"secret\n").unwrap();
        let out = talk.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "server>> secret\n",
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(tcpool_bin())
            .args([
                "bench",
                "--json",
                "-c",
                "2",
                "-n",
                "50",
                "--send-proxy",
                version,
            ])
            .args(["--tls", "--tls-ca", ca.to_str().unwrap(), &target])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["messages"], 50, "{version}: {report}");
        assert_eq!(report["errors"], 0, "{version}: {report}");
    }
    server.type_line("quit");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}

#[test]
fn haproxy_ending_tls_names_the_version_and_the_verified_client_in_list() {
    let dir = TempDir::new("ssl-cn");
    tcpool::tls::make::set(&dir.path).unwrap();
    let file = |name: &str| dir.path.join(name).to_str().unwrap().to_owned();
    let combined = dir.path.join("combined.pem");
    let pem = std::fs::read_to_string(file("server.pem")).unwrap()
        + &std::fs::read_to_string(file("server-key.pem")).unwrap();
    std::fs::write(&combined, pem).unwrap();
    let mut server = Binary::serve(&["--proxy-protocol", "v2"]);
    let bind = format!(
        "ssl crt {} ca-file {} verify optional",
        combined.display(),
        file("ca.pem")
    );
    let haproxy = Haproxy::start_with(&bind, server.addr, "send-proxy-v2-ssl-cn");
    let target = format!("localhost:{}", haproxy.addr.port());
    let talk = |identity: &[&str]| {
        let mut talk = Command::new(tcpool_bin())
            .args(["talk", "--tls", "--tls-ca", &file("ca.pem")])
            .args(identity)
            .arg(&target)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = talk.stdin.take().unwrap();
        stdin.write_all(b"hi\n").unwrap();
        let mut out = std::io::BufReader::new(talk.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line, "server>> hi\n");
        (talk, stdin)
    };
    let with_cert = talk(&[
        "--tls-cert",
        &file("client.pem"),
        "--tls-key",
        &file("client-key.pem"),
    ]);
    let without = talk(&[]);
    server.type_line("/list");
    let named = server.wait_stdout("the row of the client with a certificate", |l| {
        l.contains("via-proxy client=tcpool client")
    });
    assert!(named.contains("TLSv1.3"), "{named}");
    let anonymous = server.wait_stdout("the row of the client without one", |l| {
        l.contains("via-proxy") && !l.contains("client=")
    });
    assert!(anonymous.contains("TLSv1.3"), "{anonymous}");
    for (mut talk, stdin) in [with_cert, without] {
        drop(stdin);
        assert!(talk.wait().unwrap().success());
    }
    server.type_line("quit");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}
