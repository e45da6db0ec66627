//! Socket activation: `systemd-socket-activate` hands the listening socket over
//! (`LISTEN_FDS`), tcpool serves it and says `READY=1` / `STOPPING=1` on `NOTIFY_SOCKET`; the
//! unit files in `deploy/systemd` pass `systemd-analyze verify`.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// A path of its own for a socket or a file under the temporary directory.
fn temp_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "tcpool-test-{what}-{}-{}",
        std::process::id(),
        free_port()
    ))
}

#[test]
fn systemd_socket_activate_hands_over_the_listener_and_hears_ready_and_stopping() {
    let port = free_port();
    let notify_path = temp_path("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut command = Command::new("systemd-socket-activate");
    command
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--setenv=RUST_LOG=info")
        .arg("--setenv=RUST_LOG_STYLE=never")
        .arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()))
        // --bind and --port are ignored: the inherited socket is served instead.
        .args([tcpool_bin(), "serve", "--bind", "::1", "--port", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut activator = command
        .spawn()
        .expect("systemd-socket-activate (scripts/test.sh installs systemd)");
    let stderr = collect_lines(activator.stderr.take().unwrap());
    wait_listening(port);

    // The first connection makes systemd-socket-activate start tcpool with the socket.
    let mut client = connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    assert_eq!(round_trip(&mut client, b"activated\n"), b"activated\n");
    let line = wait_line(&stderr, "the listening line", |l| {
        l.contains("listening on")
    });
    assert!(
        line.contains(&format!("listening on 127.0.0.1:{port} ")),
        "{line}"
    );
    wait_line(&stderr, "the inherited-socket line", |l| {
        l.contains("socket activation: serving 1 inherited socket")
    });
    wait_notification(&notify, "READY=1");

    // SIGTERM reaches tcpool through the activator, which exec'd it in its own place.
    let status = Command::new("kill")
        .args(["-TERM", &activator.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_notification(&notify, "STOPPING=1");
    assert_eq!(read_to_close(&mut client), b"quit\n");
    assert_eq!(wait_child(&mut activator, IO_TIMEOUT), Some(0));
    let _ = std::fs::remove_file(&notify_path);
}

#[test]
fn the_unit_files_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed here: the unit files are not verified");
        return;
    }
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd");
    let dir = temp_path("units");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["tcpool.socket", "tcpool.service"] {
        // Point ExecStart at the binary just built: verify checks that it exists.
        let text = std::fs::read_to_string(units.join(name))
            .unwrap()
            .replace("/usr/local/bin/tcpool", tcpool_bin());
        std::fs::write(dir.join(name), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("tcpool.socket"))
        .arg(dir.join("tcpool.service"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    assert!(!stderr.contains("Unknown"), "{stderr}");
}
