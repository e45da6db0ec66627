//! TLS faults (`tls-delay`, `tls-abort`, `tls-alert`, `tls-cert`, `tls-truncate`): the local
//! "bad TLS server". Each is seen as it should be by a client tcpool did not write (Python's
//! `ssl`, that is OpenSSL) and by `tcpool bench`, as the error kind it names.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{Binary, IO_TIMEOUT, tcpool_bin};

/// A TLS client in Python (OpenSSL): connects, does the handshake verifying with the CA as
/// `localhost`, sends a line and reads until the end; prints one line: what happened.
const PROBE: &str = r#"
import socket, ssl, sys, time
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
sock = socket.create_connection(("127.0.0.1", port), timeout=10)
start = time.monotonic()
try:
    tls = ctx.wrap_socket(sock, server_hostname="localhost", suppress_ragged_eofs=False)
except ssl.SSLCertVerificationError as e:
    print("verify:", e.verify_message); sys.exit()
except ssl.SSLError as e:
    print("ssl:", e.reason or e); sys.exit()
except OSError as e:
    print("os:", type(e).__name__, e); sys.exit()
took = time.monotonic() - start
got = b""
try:
    for line in (b"one\n", b"two\n", b"three\n", b"four\n"):
        tls.sendall(line)
        while not got.endswith(b"\n"):
            data = tls.recv(100)
            if not data:
                break
            got += data
        got += b"|"
    print("ok: handshake %.3f s, echoed %r" % (took, got))
except ssl.SSLEOFError as e:
    print("eof: after %r: %s" % (got, e))
except (ssl.SSLError, OSError) as e:
    print("error: after %r: %s" % (got, e))
"#;

/// `tcpool serve --tls auto` with `fault`; its CA written into `dir`.
fn faulted(dir: &Path, fault: &str) -> Binary {
    let ca = dir.join("ca.pem");
    Binary::serve(&[
        "--tls",
        "auto",
        "--tls-ca-out",
        ca.to_str().unwrap(),
        "--fault",
        fault,
    ])
}

fn probe(server: &Binary, ca: &Path) -> String {
    let out = Command::new("python3")
        .args(["-c", PROBE, &server.addr.port().to_string()])
        .arg(ca)
        .output()
        .expect("python3 (scripts/test.sh installs it)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `tcpool talk --tls` sending four lines; what it wrote to stdout and stderr.
fn talk(server: &Binary, ca: &Path) -> String {
    use std::io::Write as _;
    let mut child = Command::new(tcpool_bin())
        .args(["talk", "--tls", "--tls-servername", "localhost", "--tls-ca"])
        .arg(ca)
        .arg(server.addr.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(b"one\ntwo\nthree\nfour\n");
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn bench(server: &Binary, ca: &Path) -> Value {
    let out = Command::new(tcpool_bin())
        .args([
            "bench",
            "--json",
            "-c",
            "2",
            "-n",
            "8",
            "--timeout",
            "5s",
            "--tls",
        ])
        .args(["--tls-servername", "localhost", "--tls-ca"])
        .arg(ca)
        .arg(server.addr.to_string())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn every_tls_fault_is_seen_by_openssl_and_by_bench_as_what_it_is() {
    let dir = std::env::temp_dir().join(format!("tcpool-tls-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    // fault, what Python's OpenSSL says, bench's error kind and the words of its first error
    let cases = [
        (
            "tls-alert,alert=protocol_version",
            "ssl: TLSV1_ALERT_PROTOCOL_VERSION",
            "tls",
            "ProtocolVersion",
        ),
        (
            "tls-alert",
            "ssl: SSLV3_ALERT_HANDSHAKE_FAILURE",
            "tls",
            "HandshakeFailure",
        ),
        (
            "tls-abort",
            "ssl: UNEXPECTED_EOF_WHILE_READING",
            "closed",
            "during the TLS handshake",
        ),
        (
            "tls-abort,at=mid-handshake",
            "ssl: UNEXPECTED_EOF_WHILE_READING",
            "closed",
            "during the TLS handshake",
        ),
        (
            "tls-cert,cert=expired",
            "verify: certificate has expired",
            "tls",
            "certificate expired",
        ),
        (
            "tls-cert,cert=wrong-name",
            "verify: Hostname mismatch, certificate is not valid for 'localhost'.",
            "tls",
            "not valid for name",
        ),
        (
            "tls-cert,cert=self-signed",
            "verify: self-signed certificate",
            "tls",
            "UnknownIssuer",
        ),
        (
            "tls-truncate,after=2",
            "eof: after b'one\\n|two\\n|'",
            "truncated",
            "without TLS close_notify",
        ),
    ];
    for (fault, openssl, kind, words) in cases {
        let mut server = faulted(&dir, fault);
        let seen = probe(&server, &ca);
        assert!(seen.starts_with(openssl), "{fault}: Python saw {seen:?}");
        // talk says what went wrong: the handshake's failure, or a close without
        // close_notify after the replies that came.
        let said = talk(&server, &ca);
        let expect = match kind {
            "truncated" => "warning: the server closed without TLS close_notify",
            _ => "TLS handshake failed",
        };
        assert!(said.contains(expect), "{fault}: talk said {said}");
        let report = bench(&server, &ca);
        assert_eq!(report["errors_by_kind"][kind], 2, "{fault}: {report}");
        let message = report["first_errors"][kind]["message"].as_str().unwrap();
        assert!(message.contains(words), "{fault}: {message}");
        // The faults touched the connections; the server is as well as ever.
        server.type_line("/fault");
        server.wait_stdout("the fault's count", |l| {
            l.contains(fault.split(',').next().unwrap()) && l.contains("session")
        });
        server.type_line("quit");
        assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0), "{fault}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_delay_holds_the_handshake_and_nothing_else() {
    let dir = std::env::temp_dir().join(format!("tcpool-tls-delay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    let mut server = faulted(&dir, "tls-delay,delay=300ms");
    let seen = probe(&server, &ca);
    let took: f64 = seen
        .strip_prefix("ok: handshake ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{seen}"))
        .parse()
        .unwrap();
    // The hold is the least a handshake can take; the echo is as fast as ever.
    assert!(took >= 0.3, "{seen}");
    assert!(
        seen.ends_with("echoed b'one\\n|two\\n|three\\n|four\\n|'"),
        "{seen}"
    );
    let report = bench(&server, &ca);
    assert_eq!(report["messages"], 8, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let tls = &report["tls"];
    assert!(tls["full_us"]["min"].as_u64().unwrap() >= 300_000, "{tls}");
    server.type_line("quit");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plaintext_sessions_never_draw_a_tls_fault() {
    let dir = std::env::temp_dir().join(format!("tcpool-tls-plain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    let tls_port = crate::support::free_port();
    let mut server = Binary::serve(&[
        "--tls",
        "auto",
        "--tls-ca-out",
        ca.to_str().unwrap(),
        "--tls-port",
        &tls_port.to_string(),
        "--fault",
        "tls-abort",
        "--fault",
        "tls-truncate",
    ]);
    let out = Command::new(tcpool_bin())
        .args(["bench", "--json", "-c", "4", "-n", "100"])
        .arg(server.addr.to_string())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["messages"], 100, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    server.type_line("/fault");
    let line = server.wait_stdout("the faults' counts", |l| l.contains("tls-truncate"));
    assert!(line.trim_end().ends_with("sessions 0"), "{line}");
    server.type_line("quit");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
