//! The TLS certificate reloaded while the server runs — through `POST /tls/reload`, the
//! console's `/tls reload` and the watcher of the files: new handshakes get the new
//! certificate, what was open goes on, and files that are refused change nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, StreamOwned};
use tcpool::tls::ClientTls;
use tcpool::tls::peer::Identity;

use crate::admin::{exchange_on, parse_with_prometheus_client, sample};
use crate::support::{Binary, IO_TIMEOUT, connect};

/// A scratch directory of this test's own with two sets of certificates from `tcpool tls
/// gen`, `a/` and `b/`, each from a CA of its own; removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("tcpool-tls-reload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        tcpool::tls::make::set(&dir.join("a")).unwrap();
        tcpool::tls::make::set(&dir.join("b")).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn text(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    /// Puts certificate `cert` and key `key` (such as `b/server.pem`) where the server reads
    /// its own, `cert.pem` and `key.pem`.
    fn serve_files(&self, cert: &str, key: &str) {
        std::fs::copy(self.path(cert), self.path("cert.pem")).unwrap();
        std::fs::copy(self.path(key), self.path("key.pem")).unwrap();
    }

    fn identity(&self, cert: &str) -> Identity {
        let chain = tcpool::tls::read_chain(&self.path(cert)).unwrap();
        Identity::of(&chain[0]).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A client configuration verifying against `ca`, with TLS `versions` (both when empty); the
/// connections made with one share its session cache, so a later one resumes.
fn client_config(ca: &Path, versions: &[tcpool::tls::Version]) -> Arc<ClientConfig> {
    tcpool::tls::client_config(&ClientTls {
        ca: Some(ca.to_owned()),
        offer: tcpool::tls::Offer {
            versions: versions.to_vec(),
            alpn: Vec::new(),
        },
        ..ClientTls::default()
    })
    .unwrap()
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS session on `addr` as `localhost`, past its handshake and one echo.
fn session(addr: SocketAddr, config: &Arc<ClientConfig>) -> Tls {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::clone(config), name).unwrap();
    let mut tls = StreamOwned::new(conn, connect(addr));
    assert_eq!(echo(&mut tls, b"first\n"), b"first\n");
    tls
}

fn echo(tls: &mut Tls, line: &[u8]) -> Vec<u8> {
    tls.write_all(line).unwrap();
    tls.flush().unwrap();
    let mut got = vec![0; line.len()];
    tls.read_exact(&mut got).unwrap();
    got
}

/// The fingerprint of the certificate the server showed.
fn served(tls: &Tls) -> String {
    tcpool::tls::peer::fingerprint(&tls.conn.peer_certificates().unwrap()[0])
}

fn resumed(tls: &Tls) -> bool {
    tls.conn.handshake_kind() == Some(HandshakeKind::Resumed)
}

fn post_reload(admin: SocketAddr) -> crate::admin::Answer {
    exchange_on(&mut connect(admin), "POST", "/tls/reload", "")
}

fn scrape(admin: SocketAddr) -> std::collections::HashMap<String, f64> {
    let answer = exchange_on(&mut connect(admin), "GET", "/metrics", "");
    assert_eq!(answer.status, 200);
    parse_with_prometheus_client(&answer.body)
}

fn reloads(server: &Binary) -> usize {
    server
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("tls certificate reloaded"))
        .count()
}

fn refusals(server: &Binary) -> Vec<String> {
    server
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("tls reload refused"))
        .collect()
}

#[test]
fn a_reload_serves_the_new_certificate_to_new_handshakes_and_keeps_what_was_open() {
    let scratch = Scratch::new("manual");
    scratch.serve_files("a/server.pem", "a/server-key.pem");
    let mut server = Binary::serve(&[
        "--tls-cert",
        &scratch.text("cert.pem"),
        "--tls-key",
        &scratch.text("key.pem"),
        "--admin",
        "127.0.0.1:0",
        "--tls-watch",
        "0",
    ]);
    let admin = server.admin_addr();
    let (a, b) = (
        scratch.identity("a/server.pem"),
        scratch.identity("b/server.pem"),
    );
    // A session on certificate A, and a client that will resume it.
    let trusts_a = client_config(&scratch.path("a/ca.pem"), &[]);
    let mut before = session(server.addr, &trusts_a);
    assert_eq!(served(&before), a.sha256);

    // B in the files, and a reload asked for.
    scratch.serve_files("b/server.pem", "b/server-key.pem");
    let answer = post_reload(admin);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(json["serial"], b.serial.as_str());
    assert_eq!(json["sha256"], b.sha256.as_str());
    assert_eq!(json["changed"], true);
    let line = server.wait_stderr("the reload's line", |l| {
        l.contains("tls certificate reloaded")
    });
    for part in [
        format!("serial={}", b.serial),
        format!("sha256={}", b.sha256),
        format!("expires={}", b.expires),
        "source=admin".to_owned(),
    ] {
        assert!(line.contains(&part), "{part} in {line}");
    }
    // A new handshake gets B, which B's CA verifies; the session opened before echoes on.
    let trusts_b = client_config(&scratch.path("b/ca.pem"), &[]);
    let after = session(server.addr, &trusts_b);
    assert_eq!(served(&after), b.sha256);
    assert_eq!(echo(&mut before, b"still here\n"), b"still here\n");
    // The ticket keys stayed: the client of A resumes its session.
    let again = session(server.addr, &trusts_a);
    assert!(resumed(&again), "a session from before the reload resumes");

    // Files that are refused: each keeps B, with one warning naming the file and why.
    let cases: [(&str, &str, &str, &str); 3] = [
        (
            "garbage",
            "b/server-key.pem",
            "cert.pem",
            "no certificate in it",
        ),
        (
            "a/server.pem",
            "b/server-key.pem",
            "key.pem",
            "public keys differ",
        ),
        (
            "b/expired.pem",
            "b/expired-key.pem",
            "cert.pem",
            "expired on",
        ),
    ];
    for (i, (cert, key, file, why)) in cases.into_iter().enumerate() {
        if cert == "garbage" {
            std::fs::write(scratch.path("cert.pem"), "not a certificate\n").unwrap();
            std::fs::copy(scratch.path(key), scratch.path("key.pem")).unwrap();
        } else {
            scratch.serve_files(cert, key);
        }
        let answer = post_reload(admin);
        assert_eq!(answer.status, 500, "{}", answer.body);
        assert!(answer.body.contains(why), "{}", answer.body);
        assert_eq!(answer.body.lines().count(), 1, "{}", answer.body);
        crate::support::wait_until("the warning", || refusals(&server).len() > i);
        let warning = &refusals(&server)[i];
        assert!(warning.contains("WARN"), "{warning}");
        assert!(
            warning.contains(&format!("file={}", scratch.path(file).display())),
            "{warning}"
        );
        assert!(warning.contains(why), "{warning}");
        let check = session(server.addr, &trusts_b);
        assert_eq!(served(&check), b.sha256, "still B after {why}");
    }
    assert_eq!(refusals(&server).len(), 3);

    // The console reloads too: the files are A again.
    scratch.serve_files("a/server.pem", "a/server-key.pem");
    server.type_line("/tls reload");
    let printed = server.wait_stdout("the console's answer", |l| l.contains("TLS certificate"));
    assert!(
        printed.contains(&format!("serial={}", a.serial)),
        "{printed}"
    );
    let fresh = session(server.addr, &client_config(&scratch.path("a/ca.pem"), &[]));
    assert_eq!(served(&fresh), a.sha256);

    let m = scrape(admin);
    assert_eq!(sample(&m, "tcpool_tls_reloads_total{result=\"ok\"}"), 2.0);
    assert_eq!(
        sample(&m, "tcpool_tls_reloads_total{result=\"failed\"}"),
        3.0
    );
    assert_eq!(
        sample(&m, "tcpool_tls_certificate_expiry_seconds{}"),
        a.not_after as f64
    );
    assert_eq!(
        sample(
            &m,
            "tcpool_changes_total{action=\"tls-reload\",source=\"console\"}"
        ),
        1.0
    );
    // GET is the wrong method.
    let answer = exchange_on(&mut connect(admin), "GET", "/tls/reload", "");
    assert_eq!(answer.status, 405);
    drop((before, after, again, fresh));
    server.signal("TERM");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}

#[test]
fn the_watcher_reloads_files_that_changed_and_tries_a_refused_one_once() {
    let scratch = Scratch::new("watch");
    scratch.serve_files("a/server.pem", "a/server-key.pem");
    let mut server = Binary::serve(&[
        "--tls-cert",
        &scratch.text("cert.pem"),
        "--tls-key",
        &scratch.text("key.pem"),
        "--tls-watch",
        "50ms",
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = server.admin_addr();
    let b = scratch.identity("b/server.pem");
    scratch.serve_files("b/server.pem", "b/server-key.pem");
    let line = server.wait_stderr("the watcher's reload", |l| {
        l.contains("tls certificate reloaded") && l.contains("source=watch")
    });
    assert!(line.contains(&b.sha256), "{line}");
    let check = session(server.addr, &client_config(&scratch.path("b/ca.pem"), &[]));
    assert_eq!(served(&check), b.sha256);

    // A key that is not the certificate's: refused once, not again at every look.
    std::fs::copy(scratch.path("a/server-key.pem"), scratch.path("key.pem")).unwrap();
    server.wait_stderr("the refusal", |l| l.contains("tls reload refused"));
    // Some twenty looks at the unchanged files.
    std::thread::sleep(std::time::Duration::from_secs(1));
    // Put right, it is taken.
    std::fs::copy(scratch.path("b/server-key.pem"), scratch.path("key.pem")).unwrap();
    crate::support::wait_until("the second reload", || reloads(&server) == 2);
    let refused = refusals(&server);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("source=watch"), "{}", refused[0]);
    assert!(refused[0].contains("public keys differ"), "{}", refused[0]);
    let m = scrape(admin);
    assert_eq!(sample(&m, "tcpool_tls_reloads_total{result=\"ok\"}"), 2.0);
    assert_eq!(
        sample(&m, "tcpool_tls_reloads_total{result=\"failed\"}"),
        1.0
    );
    assert_eq!(
        sample(&m, "tcpool_tls_certificate_expiry_seconds{}"),
        b.not_after as f64
    );
    server.signal("TERM");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}

#[test]
fn without_certificate_files_a_reload_is_refused_in_one_line() {
    let scratch = Scratch::new("auto");
    let mut auto = Binary::serve(&[
        "--tls",
        "auto",
        "--tls-ca-out",
        &scratch.text("ca.pem"),
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = auto.admin_addr();
    let answer = post_reload(admin);
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert_eq!(answer.body.lines().count(), 1, "{}", answer.body);
    assert!(answer.body.contains("--tls auto"), "{}", answer.body);
    auto.type_line("/tls reload");
    auto.wait_stdout("the console's answer", |l| {
        l.contains("no certificate files to reload")
    });
    // The expiry is shown, there are no reloads to count, and none was counted as a change.
    let m = scrape(admin);
    let made = session(auto.addr, &client_config(&scratch.path("ca.pem"), &[]));
    let identity = Identity::of(&made.conn.peer_certificates().unwrap()[0]).unwrap();
    assert_eq!(
        sample(&m, "tcpool_tls_certificate_expiry_seconds{}"),
        identity.not_after as f64
    );
    assert!(
        !m.keys().any(|k| k.starts_with("tcpool_tls_reloads")),
        "{m:?}"
    );
    assert!(refusals(&auto).is_empty());
    drop(made);
    auto.signal("TERM");
    assert_eq!(auto.wait_timeout(IO_TIMEOUT), Some(0));

    // A server without TLS says so.
    let mut plain = Binary::serve(&["--admin", "127.0.0.1:0"]);
    let answer = post_reload(plain.admin_addr());
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert!(answer.body.contains("speaks no TLS"), "{}", answer.body);
    plain.signal("TERM");
    assert_eq!(plain.wait_timeout(IO_TIMEOUT), Some(0));
}
