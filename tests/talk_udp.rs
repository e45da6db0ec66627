//! `tcpool talk --udp`: a datagram a line, each reply printed with its sender's address, to
//! `ncat -u` running `cat`, to `tcpool serve --udp`, and to a port where nobody answers.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::bench::External;
use crate::support::*;

/// Runs `tcpool talk --udp ARGS...` with `input` on stdin; its exit code, stdout and stderr.
fn talk_udp(args: &[&str], input: &str) -> (Option<i32>, String, String) {
    let mut child = Command::new(tcpool_bin())
        .args(["talk", "--udp"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let code = wait_child(&mut child, Duration::from_secs(20));
    let out = child.wait_with_output().unwrap();
    (
        code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn talk_udp_to_ncat_running_cat_prints_each_line_back_with_its_sender() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _ncat = External(
        Command::new("ncat")
            .args([
                "-u",
                "-l",
                "127.0.0.1",
                &port.to_string(),
                "--exec",
                "/bin/cat",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ncat (scripts/test.sh installs it)"),
    );
    // ncat binds in a moment, and then answers only the first source it hears from: wait
    // for the socket in /proc/net/udp rather than probe it.
    let needle = format!("0100007F:{port:04X}");
    wait_until("ncat's UDP socket", || {
        std::fs::read_to_string("/proc/net/udp").is_ok_and(|t| t.contains(&needle))
    });
    let target = format!("127.0.0.1:{port}");
    let (code, out, err) = talk_udp(&[&target, "--reply-timeout", "2s"], "hello\nworld\n");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        format!("{target}>> hello\n{target}>> world\n"),
        "{err}"
    );
    assert!(!err.contains("no reply"), "{err}");
}

#[test]
fn talk_udp_to_serve_udp_and_to_a_silent_port() {
    let server = Binary::serve(&["--udp"]);
    server.wait_stderr("the udp line", |l| l.contains("udp echo on"));
    let target = server.addr.to_string();
    let (code, out, err) = talk_udp(&[&target, "--eol", "lf"], "one\ntwo\tthree\n");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        format!("{target}>> one\\n\n{target}>> two\\tthree\\n\n"),
        "{err}"
    );
    // A bound socket that never answers: each line says so after the timeout.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = silent.local_addr().unwrap().to_string();
    let (code, out, err) = talk_udp(&[&at, "--reply-timeout", "300ms"], "anyone?\nhello?\n");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "", "{err}");
    assert_eq!(
        err.matches("warning: no reply within 300ms").count(),
        2,
        "{err}"
    );
    // Both datagrams did arrive.
    silent
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = silent.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"anyone?");
    let (n, _) = silent.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello?");
}
