//! The TLS certificate reloaded while the server runs — through `POST /tls/reload`, the
//! console's `/tls reload` and the watcher of the files — and session tickets whose keys come
//! from a file, so that another process resumes the sessions of the first: a second server
//! given the same file, and the new process of a hand-over. And the session cache, which
//! holds more than rustls's default 256.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, StreamOwned};
use tcpool::tls::ClientTls;
use tcpool::tls::peer::Identity;

use crate::admin::{exchange_on, parse_with_prometheus_client, sample};
use crate::support::{Binary, IO_TIMEOUT, assert_serve_refuses, connect};

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
            ..tcpool::tls::Offer::default()
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

/// `tcpool serve` with certificate `a/server.pem` and `extra` flags.
fn tls_server(scratch: &Scratch, extra: &[&str]) -> Binary {
    let (cert, key) = (
        scratch.text("a/server.pem"),
        scratch.text("a/server-key.pem"),
    );
    let mut args = vec!["--workers", "1", "--tls-cert", &cert, "--tls-key", &key];
    args.extend_from_slice(extra);
    Binary::serve_with(&args, Stdio::null(), |_| {})
}

#[test]
fn servers_given_one_ticket_key_file_resume_each_others_sessions() {
    use tcpool::tls::Version;
    let scratch = Scratch::new("tickets");
    let file = scratch.text("tickets.key");
    let ca = scratch.path("a/ca.pem");
    let with_file = ["--tls-ticket-key-file", file.as_str()];
    // The first makes the file, the second reads it.
    let x = tls_server(&scratch, &with_file);
    x.wait_stderr("the file made", |l| l.contains("made with a new key"));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let y = tls_server(&scratch, &with_file);
    y.wait_stderr("the file read", |l| l.contains("TLS ticket keys: 1 from"));
    for versions in [vec![Version::Tls12], vec![Version::Tls13]] {
        let config = client_config(&ca, &versions);
        let first = session(x.addr, &config);
        assert!(!resumed(&first));
        let second = session(y.addr, &config);
        assert!(
            resumed(&second),
            "{versions:?}: resumed on the other process"
        );
    }

    // Without the file each process has keys of its own: no resumption on the other.
    let (p, q) = (tls_server(&scratch, &[]), tls_server(&scratch, &[]));
    for versions in [vec![Version::Tls12], vec![Version::Tls13]] {
        let config = client_config(&ca, &versions);
        assert!(!resumed(&session(p.addr, &config)));
        assert!(!resumed(&session(q.addr, &config)), "{versions:?}");
        assert!(resumed(&session(q.addr, &config)), "{versions:?}: its own");
    }

    // A rotation: a new key first, the old one after it. A process started with both takes
    // the old key's tickets and issues the new key's, which the old process cannot read.
    let old = std::fs::read_to_string(&file).unwrap();
    let new_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    std::fs::write(&file, format!("{new_key}\n{old}")).unwrap();
    let z = tls_server(&scratch, &with_file);
    z.wait_stderr("both keys", |l| l.contains("TLS ticket keys: 2 from"));
    let config = client_config(&ca, &[]);
    assert!(!resumed(&session(x.addr, &config)));
    assert!(resumed(&session(z.addr, &config)), "the old key's ticket");
    let config = client_config(&ca, &[]);
    assert!(!resumed(&session(z.addr, &config)));
    assert!(!resumed(&session(x.addr, &config)), "x has not the new key");
    for server in [x, y, p, q, z] {
        server.signal("TERM");
    }
}

#[test]
fn after_a_hand_over_the_new_process_resumes_the_old_ones_sessions() {
    let scratch = Scratch::new("handover");
    let file = scratch.text("tickets.key");
    let mut old = tls_server(&scratch, &["--tls-ticket-key-file", &file]);
    let config = client_config(&scratch.path("a/ca.pem"), &[]);
    let mut before = session(old.addr, &config);
    assert!(!resumed(&before));
    old.signal("HUP");
    let new = crate::handover::Adopted(crate::handover::successor_pid(&old));
    let mut rest = Vec::new();
    before.read_to_end(&mut rest).expect("a clean TLS close");
    assert_eq!(rest, b"quit\n");
    assert_eq!(old.wait_timeout(IO_TIMEOUT * 2), Some(0));
    // Only the new process serves now, and it takes the ticket the old one issued.
    let after = session(old.addr, &config);
    assert!(resumed(&after), "resumed on the new process");
    drop(after);
    assert!(new.stop());
}

#[test]
fn a_hostile_ticket_key_file_stops_the_start_with_one_clear_line() {
    use std::os::unix::fs::PermissionsExt as _;
    let scratch = Scratch::new("hostile");
    let (cert, key) = (
        scratch.text("a/server.pem"),
        scratch.text("a/server-key.pem"),
    );
    let file = scratch.path("tickets.key");
    let key_line = "8acac6d42466ce6112c53ed5604b0b8e6e687eff653d216d20b43fa9e52bf431\n";
    let refuses = |content: &[u8], mode: u32, says: &str| {
        std::fs::write(&file, content).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let path = file.to_str().unwrap();
        assert_serve_refuses(
            &[
                "--port",
                "0",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-ticket-key-file",
                path,
            ],
            &format!("{path}: {says}"),
        );
    };
    refuses(b"", 0o600, "no key in it");
    refuses(b"# a comment and nothing else\n", 0o600, "no key in it");
    refuses(b"abc\n", 0o600, "line 1 is not a key");
    refuses(&key_line.as_bytes()[..40], 0o600, "line 1 is not a key");
    refuses(&[0xff, 0xfe, 0x00, 0x80, 0x10], 0o600, "not text");
    refuses(&[b'0'; 64], 0o600, "line 1 is one byte repeated");
    refuses(key_line.as_bytes(), 0o644, "mode 0644");
    // A directory, and a device that never ends.
    for path in [scratch.text("a"), "/dev/zero".to_owned()] {
        assert_serve_refuses(
            &[
                "--port",
                "0",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-ticket-key-file",
                &path,
            ],
            &format!("{path}: not a regular file"),
        );
    }
    // Its group may read it: a warning, and the server serves.
    std::fs::write(&file, key_line).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let server = tls_server(&scratch, &["--tls-ticket-key-file", file.to_str().unwrap()]);
    server.wait_stderr("the warning", |l| {
        l.contains("WARN") && l.contains("its group may read")
    });
    let tls = session(server.addr, &client_config(&scratch.path("a/ca.pem"), &[]));
    drop(tls);
    server.signal("TERM");
    // Without a certificate the flag is a usage error.
    let out = std::process::Command::new(crate::support::tcpool_bin())
        .args(["serve", "--port", "0", "--tls-ticket-key-file"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("need a certificate"));
}

#[test]
fn a_tls_1_2_client_without_tickets_resumes_after_three_hundred_others() {
    use rustls::client::{Resumption, Tls12Resumption};
    use tcpool::tls::Version;
    let scratch = Scratch::new("cache");
    let ca = scratch.path("a/ca.pem");
    let server = tls_server(&scratch, &[]);
    // A client that resumes by session id only: the server keeps its session in its cache.
    let without_tickets = || {
        let mut config = (*client_config(&ca, &[Version::Tls12])).clone();
        config.resumption =
            Resumption::in_memory_sessions(4).tls12_resumption(Tls12Resumption::SessionIdOnly);
        Arc::new(config)
    };
    let first = without_tickets();
    assert!(!resumed(&session(server.addr, &first)));
    // More sessions than rustls's default cache of 256 holds, each of a client of its own.
    for _ in 0..300 {
        assert!(!resumed(&session(server.addr, &without_tickets())));
    }
    assert!(
        resumed(&session(server.addr, &first)),
        "the first session is still in the cache"
    );
    server.signal("TERM");
}
