//! `--log-format json`: every log line of a real run is one JSON object with the fields the
//! text form carries.

use std::io::Write;
use std::process::Stdio;

use serde_json::Value;

use crate::support::{Binary, IO_TIMEOUT, connect, read_line, read_to_close};

#[test]
fn json_logs_parse_line_by_line_and_carry_the_details() {
    let mut server = Binary::serve_with(&["--log-format", "json"], Stdio::piped(), |c| {
        c.env("RUST_LOG", "debug");
    });
    let mut client = connect(server.addr);
    client.write_all(b"hello\n").unwrap();
    assert_eq!(read_line(&mut client), b"hello\n");
    let peer = client.local_addr().unwrap().to_string();
    client.write_all(b"quit\n").unwrap();
    assert_eq!(read_to_close(&mut client), b"");
    server.wait_stderr("the close line", |l| {
        l.contains("closed") && l.contains(&peer)
    });
    server.type_line("quit");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));

    let lines = server.stderr_lines();
    let objects: Vec<serde_json::Map<String, Value>> = lines
        .iter()
        .map(|line| match serde_json::from_str(line) {
            Ok(Value::Object(map)) => map,
            other => panic!("not a JSON object: {line:?}: {other:?}"),
        })
        .collect();
    for o in &objects {
        for key in ["ts", "level", "target", "msg"] {
            assert!(o[key].is_string(), "{key} missing in {o:?}");
        }
    }
    let listening = objects
        .iter()
        .find(|o| {
            o["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("listening on"))
        })
        .expect("a listening line");
    assert_eq!(listening["mode"], "echo");
    assert_eq!(listening["level"], "info");
    let closed = objects
        .iter()
        .find(|o| o["msg"] == "session 1 closed")
        .unwrap_or_else(|| panic!("no close line in {lines:?}"));
    assert_eq!(closed["session"], 1);
    assert_eq!(closed["peer"], peer.as_str());
    assert_eq!(closed["reason"], "quit");
    assert_eq!(closed["bytes_in"], 11);
    assert_eq!(closed["level"], "debug");
    assert_eq!(closed["target"], "tcpool::server::worker");
    // Durations are numbers, their unit in the key, and agree with the text form's value.
    let ms = closed["duration_ms"]
        .as_f64()
        .expect("duration_ms is a number");
    assert!((0.0..60_000.0).contains(&ms), "{closed:?}");
    let stopped = objects
        .iter()
        .find(|o| o["msg"] == "stopped")
        .unwrap_or_else(|| panic!("no stopped line in {lines:?}"));
    assert!(stopped["took_ms"].is_number(), "{stopped:?}");
    // No field of any line is a debug rendering of an internal type.
    for o in &objects {
        for (key, value) in o.iter() {
            let text = value.to_string();
            assert!(
                !text.contains("Token(") && !text.contains("Some(") && !text.contains("{ "),
                "{key} looks like a debug string: {o:?}"
            );
        }
    }
}

#[test]
fn audit_lines_carry_what_and_who_as_json_fields() {
    let mut server = Binary::serve_with(&["--log-format", "json"], Stdio::piped(), |_| {});
    server.type_line("/fault latency,delay=20ms");
    server.wait_stderr("the audit line", |l| l.contains("audit: fault added"));
    server.type_line("quit");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
    let objects: Vec<serde_json::Map<String, Value>> = server
        .stderr_lines()
        .iter()
        .filter_map(|l| match serde_json::from_str(l) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        })
        .collect();
    let find = |msg: &str| {
        objects
            .iter()
            .find(|o| o["msg"] == msg)
            .unwrap_or_else(|| panic!("no {msg:?} in {objects:?}"))
    };
    let added = find("audit: fault added");
    assert_eq!(added["level"], "info");
    assert_eq!(added["id"], 1);
    assert_eq!(added["spec"], "latency,delay=20ms");
    assert_eq!(added["source"], "console");
    let shutdown = find("audit: shutdown");
    assert_eq!(shutdown["source"], "console");
}

/// A TLS handshake naming an IP address as the server (SNI), as OpenSSL's `s_client` does
/// when told to: rustls warns about it once per handshake.
fn handshake_naming_an_ip(server: &Binary, ca: &std::path::Path) {
    let mut client = std::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-servername", "127.0.0.1", "-CAfile"])
        .arg(ca)
        .args(["-connect", &server.addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl (scripts/test.sh installs it)");
    client.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let mut out = client.stdout.take().unwrap();
    assert_eq!(read_line(&mut out), b"hi\n");
    let _ = client.kill();
    let _ = client.wait();
}

#[test]
fn a_peer_cannot_fill_the_log_through_rustls_unless_its_lines_are_asked_for() {
    let dir = std::env::temp_dir().join(format!("tcpool-logs-rustls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    for (level, expect) in [("info", 0), ("info,rustls=warn", 3)] {
        let mut server = Binary::serve(&[
            "--tls",
            "auto",
            "--tls-ca-out",
            ca.to_str().unwrap(),
            "--log-level",
            level,
        ]);
        for _ in 0..3 {
            handshake_naming_an_ip(&server, &ca);
        }
        server.type_line("quit");
        assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
        let warned = server
            .stderr_lines()
            .iter()
            .filter(|l| l.contains("Illegal SNI"))
            .count();
        assert_eq!(warned, expect, "--log-level {level}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
