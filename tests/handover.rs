//! The hand-over on `SIGHUP`: the running `tcpool serve` starts the program on disk with the
//! same arguments and its listening sockets, waits for its `READY=1`, stops accepting and
//! shuts down gracefully. Clients connecting all the while are never refused or reset; a new
//! process that cannot become ready leaves the old one serving.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::bench::{finish, spawn_bench};
use crate::support::*;

/// Most rounds one continuous client makes, whatever the time.
const MAX_ROUNDS: u64 = 50_000;

/// The outcomes of the continuous clients' connect + echo + close rounds.
#[derive(Default)]
struct Tally {
    exact: AtomicU64,
    told_quit: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    mismatch: AtomicU64,
    other: AtomicU64,
}

impl Tally {
    fn get(n: &AtomicU64) -> u64 {
        n.load(Ordering::SeqCst)
    }

    fn describe(&self) -> String {
        format!(
            "exact={} told_quit={} refused={} reset={} mismatch={} other={}",
            Tally::get(&self.exact),
            Tally::get(&self.told_quit),
            Tally::get(&self.refused),
            Tally::get(&self.reset),
            Tally::get(&self.mismatch),
            Tally::get(&self.other)
        )
    }
}

/// One round: connect, one echo, close. Every failure is counted by its kind.
fn round(addr: SocketAddr, msg: &[u8], tally: &Tally) {
    let count = |e: &io::Error| match e.kind() {
        io::ErrorKind::ConnectionRefused => &tally.refused,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => &tally.reset,
        _ => &tally.other,
    };
    let mut stream = match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            count(&e).fetch_add(1, Ordering::SeqCst);
            return;
        }
    };
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    if let Err(e) = stream.write_all(msg) {
        count(&e).fetch_add(1, Ordering::SeqCst);
        return;
    }
    let mut reply = Vec::new();
    match BufReader::new(&stream).read_until(b'\n', &mut reply) {
        Ok(_) if reply == msg => &tally.exact,
        // The graceful goodbye, in the session's line ending (none yet, when it came first).
        Ok(_) if reply == b"quit\n" || reply == b"quit" => &tally.told_quit,
        Ok(_) => {
            eprintln!(
                "mismatch: sent {:?}, got {:?}",
                String::from_utf8_lossy(msg),
                String::from_utf8_lossy(&reply)
            );
            &tally.mismatch
        }
        Err(e) => count(&e),
    }
    .fetch_add(1, Ordering::SeqCst);
}

/// `clients` threads making rounds until `stop` is set (or [`MAX_ROUNDS`] each).
fn continuous(
    addr: SocketAddr,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> (Arc<Tally>, Vec<thread::JoinHandle<()>>) {
    let tally = Arc::new(Tally::default());
    let threads = (0..clients)
        .map(|c| {
            let (tally, stop) = (Arc::clone(&tally), Arc::clone(stop));
            thread::spawn(move || {
                for i in 0..MAX_ROUNDS {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    round(addr, format!("client {c} round {i}\n").as_bytes(), &tally);
                }
            })
        })
        .collect();
    (tally, threads)
}

/// A plain HTTP/1.1 GET on the admin endpoint: the status and the body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = connect(addr);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// The pid in the old process's `hand-over: pid N serves now` line.
pub fn successor_pid(old: &Binary) -> u32 {
    let line = old.wait_stderr("the hand-over line", |l| l.contains("serves now"));
    line.split("hand-over: pid ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line}"))
}

/// A process this test did not start itself (the new server): stopped with SIGTERM, and
/// killed if it lingers, when dropped.
pub struct Adopted(pub u32);

impl Adopted {
    fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.0))
            .is_ok_and(|stat| !stat.rsplit(") ").next().unwrap_or("").starts_with('Z'))
    }

    fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .args([format!("-{name}"), self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }

    /// SIGTERM, then waits until it is gone; whether it went within `IO_TIMEOUT`.
    pub fn stop(&self) -> bool {
        self.signal("TERM");
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.alive() {
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        if self.alive() && !self.stop() {
            self.signal("KILL");
        }
    }
}

#[test]
fn sighup_hands_over_without_refusing_or_resetting_a_connection() {
    let mut old = Binary::serve_with(
        &["--admin", "127.0.0.1:0", "--workers", "2"],
        Stdio::null(),
        |_| {},
    );
    let addr = old.addr;
    let admin = old.admin_addr();
    assert_eq!(http_get(admin, "/healthz").0, 200);
    let mut established: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut c = connect(addr);
            let msg = format!("established {i}\n");
            assert_eq!(round_trip(&mut c, msg.as_bytes()), msg.as_bytes());
            c
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let (tally, clients) = continuous(addr, 4, &stop);
    let bench_started = Instant::now();
    let (bench, bench_out, bench_err) =
        spawn_bench(&addr.to_string(), &["--json", "-c", "4", "-d", "20"]);
    wait_until("some continuous rounds", || Tally::get(&tally.exact) >= 200);
    // The bench's connections are the old process's sessions before the hand-over starts
    // (on a busy machine the bench can take a while to start): four long-lived sessions
    // that have echoed more than the established ones' one line.
    wait_until("the bench's connections on the old process", || {
        let (_, body) = http_get(admin, "/sessions");
        let sessions: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        sessions.as_array().map_or(0, |list| {
            list.iter()
                .filter(|s| s["messages_in"].as_u64().unwrap_or(0) >= 50)
                .count()
        }) >= 4
    });

    old.signal("HUP");
    let pid = successor_pid(&old);
    let new = Adopted(pid);
    assert_ne!(pid, old.child.id());
    assert_eq!(
        old.wait_timeout(IO_TIMEOUT * 2),
        Some(0),
        "{:?}",
        old.stderr_lines()
    );
    // The old process's sessions got the goodbye of any graceful shutdown.
    for c in &mut established {
        assert_eq!(read_to_close(c), b"quit\n");
    }
    // The clients go on against the new process alone for a while.
    let after = Tally::get(&tally.exact);
    wait_until("rounds served by the new process", || {
        Tally::get(&tally.exact) >= after + 200
    });
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let run = finish(bench, bench_out, bench_err, bench_started);

    eprintln!(
        "hand-over: continuous rounds {}; bench {} message(s) on {} connection(s), errors {}",
        tally.describe(),
        run.u64("messages"),
        run.u64("connected"),
        run.report["errors_by_kind"]
    );
    assert_eq!(Tally::get(&tally.refused), 0, "{}", tally.describe());
    assert_eq!(Tally::get(&tally.reset), 0, "{}", tally.describe());
    assert_eq!(Tally::get(&tally.mismatch), 0, "{}", tally.describe());
    assert_eq!(Tally::get(&tally.other), 0, "{}", tally.describe());
    // The bench's connections belonged to the old process: each was told `quit` and closed
    // (or reset, when a pipelined message was still unread at the close), none got a wrong
    // byte, and every one had connected.
    assert_eq!(run.u64("connected"), 4, "{}", run.report);
    assert_eq!(run.kind("mismatch"), 0, "{}", run.report);
    assert_eq!(run.kind("closed") + run.kind("reset"), 4, "{}", run.report);
    assert!(run.u64("messages") > 0, "{}", run.report);

    // The new process serves the data port and the admin endpoint, with its console off.
    assert!(new.alive());
    let mut fresh = connect(addr);
    assert_eq!(round_trip(&mut fresh, b"fresh\n"), b"fresh\n");
    assert_eq!(http_get(admin, "/healthz"), (200, "ok\n".to_owned()));
    let stderr = old.stderr_lines();
    let console_off = stderr.iter().filter(|l| l.contains("console off")).count();
    assert_eq!(console_off, 2, "{stderr:?}");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("hand-over: starting the new process"))
    );
    drop(fresh);
    assert!(new.stop(), "the new process did not stop on SIGTERM");
}

/// A copy of the built binary under the test's own directory, so that the test can replace
/// it as an upgrade replaces the installed one.
struct Installed {
    dir: PathBuf,
    path: PathBuf,
}

impl Installed {
    fn new() -> Installed {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "handover-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tcpool");
        let installed = Installed { dir, path };
        installed.put_tcpool();
        installed
    }

    /// Puts `file` in place the way an upgrade does: written beside it, renamed over it.
    fn replace_with(&self, write: impl FnOnce(&Path)) {
        let next = self.dir.join("tcpool.next");
        let _ = std::fs::remove_file(&next);
        write(&next);
        std::fs::rename(&next, &self.path).unwrap();
    }

    fn put_tcpool(&self) {
        self.replace_with(|next| {
            if std::fs::hard_link(tcpool_bin(), next).is_err() {
                std::fs::copy(tcpool_bin(), next).unwrap();
            }
        });
    }

    /// A broken upgrade: a program that runs `script` instead of serving.
    fn put_script(&self, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        self.replace_with(|next| {
            std::fs::write(next, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(next, std::fs::Permissions::from_mode(0o755)).unwrap();
        });
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_new_process_that_never_becomes_ready_leaves_the_old_one_serving() {
    let installed = Installed::new();
    let mut command = Command::new(&installed.path);
    command
        .args([
            "serve",
            "--port",
            "0",
            "--admin",
            "127.0.0.1:0",
            "--workers",
            "1",
        ])
        .args(["--handover-timeout", "3s"])
        .env("RUST_LOG", "info")
        .env("RUST_LOG_STYLE", "never")
        .stdin(Stdio::null());
    let mut old = Binary::launch(command);
    let addr = old.addr;
    let admin = old.admin_addr();
    let mut session = connect(addr);
    assert_eq!(round_trip(&mut session, b"before\n"), b"before\n");

    // The upgrade installed a program that fails at once.
    installed.put_script("exit 3");
    old.signal("HUP");
    let line = old.wait_stderr("the failed hand-over", |l| l.contains("hand-over failed"));
    assert!(line.contains("exited before it was ready"), "{line}");
    assert!(line.contains("still serving"), "{line}");
    assert_eq!(round_trip(&mut session, b"still\n"), b"still\n");

    // One that never says it is ready: stopped after --handover-timeout. A second SIGHUP
    // while it is waited for is ignored.
    installed.put_script("exec sleep 30");
    old.signal("HUP");
    wait_until("two hand-overs started", || {
        old.stderr_lines()
            .iter()
            .filter(|l| l.contains("hand-over: starting the new process"))
            .count()
            == 2
    });
    old.signal("HUP");
    old.wait_stderr("the ignored SIGHUP", |l| {
        l.contains("SIGHUP ignored: a hand-over is under way")
    });
    let line = old.wait_stderr("the timed-out hand-over", |l| {
        l.contains("hand-over failed") && l.contains("not ready within")
    });
    assert!(line.contains("3s"), "{line}");

    // Through both, the old process served on: the session, a fresh client, the admin.
    assert_eq!(round_trip(&mut session, b"after\n"), b"after\n");
    let mut fresh = connect(addr);
    assert_eq!(round_trip(&mut fresh, b"fresh\n"), b"fresh\n");
    assert_eq!(http_get(admin, "/healthz"), (200, "ok\n".to_owned()));
    assert!(
        old.child.try_wait().unwrap().is_none(),
        "the old process exited"
    );

    // A good binary again: the hand-over goes through.
    installed.put_tcpool();
    old.signal("HUP");
    let new = Adopted(successor_pid(&old));
    assert_eq!(old.wait_timeout(IO_TIMEOUT * 2), Some(0));
    assert_eq!(read_to_close(&mut session), b"quit\n");
    let mut served = connect(addr);
    assert_eq!(round_trip(&mut served, b"new\n"), b"new\n");
    drop(served);
    assert!(new.stop(), "the new process did not stop on SIGTERM");
}

#[test]
fn under_a_service_manager_the_new_process_becomes_the_main_pid() {
    let dir = std::env::temp_dir().join(format!(
        "tcpool-test-handover-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut old = Binary::serve_with(&["--workers", "1"], Stdio::null(), |c| {
        c.env("NOTIFY_SOCKET", &path);
    });
    wait_notification(&manager, "READY=1");

    old.signal("HUP");
    let pid = successor_pid(&old);
    let new = Adopted(pid);
    let seen = wait_notification(&manager, &format!("MAINPID={pid}"));
    assert_eq!(old.wait_timeout(IO_TIMEOUT * 2), Some(0));
    // The old process's stop is not the service's: no STOPPING=1, and the new process's
    // READY=1 went to the old one, not to the manager.
    let mut later = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = manager.recv(&mut buf) {
        later.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let all: Vec<&String> = seen.iter().chain(&later).collect();
    assert!(!all.iter().any(|m| m.contains("STOPPING=1")), "{all:?}");
    assert_eq!(
        all.iter().filter(|m| m.contains("READY=1")).count(),
        0,
        "{all:?}"
    );
    let mut client = connect(old.addr);
    assert_eq!(round_trip(&mut client, b"new\n"), b"new\n");
    drop(client);

    // The new process tells the manager itself when it stops.
    new.signal("TERM");
    wait_notification(&manager, "STOPPING=1");
    assert!(new.stop());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_with_a_terminal_attached_is_a_hang_up_and_shuts_down() {
    // A server in a terminal window that closes gets SIGHUP (sometimes twice): it must not
    // leave a new process running on a terminal that is gone, holding the port. So with the
    // console on the terminal, and with only its output there (stdin from /dev/null).
    let script = format!("exec '{}' serve --port 0 < /dev/null", tcpool_bin());
    for console in [true, false] {
        let command = if console {
            let mut command = Command::new(tcpool_bin());
            command.args(["serve", "--port", "0"]);
            command
        } else {
            let mut command = Command::new("sh");
            command.args(["-c", &script]);
            command
        };
        let mut pty = rexpect::session::spawn_command(command, Some(10_000)).unwrap();
        let (_, addr) = pty.exp_regex(r"127\.0\.0\.1:\d+").unwrap();
        let addr: SocketAddr = addr.parse().unwrap();
        if console {
            pty.exp_string("tcpool> ").unwrap();
        } else {
            pty.exp_string("console off").unwrap();
        }
        let mut client = connect(addr);
        assert_eq!(round_trip(&mut client, b"up\n"), b"up\n");
        for _ in 0..2 {
            pty.process_mut()
                .signal(nix::sys::signal::Signal::SIGHUP)
                .unwrap();
        }
        pty.exp_string("the terminal hung up").unwrap();
        // The session is told goodbye as at any shutdown, and the summary is printed.
        assert_eq!(read_line(&mut client), b"quit\n");
        pty.exp_string("tcpool served 1 session(s)").unwrap();
        pty.exp_eof().unwrap();
        match pty.process_mut().wait().unwrap() {
            nix::sys::wait::WaitStatus::Exited(_, code) => assert_eq!(code, 0),
            other => panic!("not a clean exit: {other:?}"),
        }
        // No successor took the port.
        let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
        assert!(refused.is_err(), "something still listens on {addr}");
    }
}

#[test]
fn sighup_in_manual_mode_is_refused_and_the_operator_keeps_the_console() {
    let mut server = Binary::serve(&["--mode", "manual"]);
    let mut client = connect(server.addr);
    client.write_all(b"hi\n").unwrap();
    server.wait_stdout("the client's line", |l| l.contains("hi"));
    server.signal("HUP");
    server.wait_stderr("the refusal", |l| {
        l.contains("WARN") && l.contains("SIGHUP ignored: in manual mode")
    });
    // The operator still answers from this process's console.
    server.type_line("@1 still me");
    assert_eq!(read_line(&mut client), b"still me\n");
    server.type_line("quit");
    assert_eq!(read_line(&mut client), b"quit\n");
    assert_eq!(server.wait_timeout(Duration::from_secs(10)), Some(0));
    let refused = TcpStream::connect_timeout(&server.addr, Duration::from_secs(2));
    assert!(refused.is_err(), "a new process took the port");
}

#[test]
fn names_taken_in_the_shared_directory_do_not_stop_a_hand_over() {
    // Anyone may create directories in the temporary directory: names this process might
    // use for its private one, taken beforehand, are skipped.
    let dir = std::env::temp_dir().join(format!(
        "tcpool-test-squatted-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut old = Binary::serve_with(&["--workers", "1"], Stdio::null(), |c| {
        c.env("RUNTIME_DIRECTORY", &dir);
    });
    let pid = old.child.id();
    for n in 0..64 {
        std::fs::create_dir(dir.join(format!("tcpool-handover-{pid}-{n}"))).unwrap();
    }
    old.signal("HUP");
    let new = Adopted(successor_pid(&old));
    assert_eq!(old.wait_timeout(IO_TIMEOUT * 2), Some(0));
    let mut client = connect(old.addr);
    assert_eq!(round_trip(&mut client, b"served\n"), b"served\n");
    drop(client);
    assert!(new.stop());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The processes whose arguments include `marker` (a `--seed` value no other test uses).
fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == marker.as_bytes())
            && Adopted(pid).alive()
        {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_stop_right_after_sighup_stops_the_new_process_too() {
    // SIGHUP, then SIGTERM while the new process is still starting (it takes a second
    // here): the stop is for both, and the old process does not exit leaving the new one
    // to serve on.
    let installed = Installed::new();
    let marker = format!("{}{}", std::process::id(), free_port());
    let mut command = Command::new(&installed.path);
    command
        .args(["serve", "--port", "0", "--workers", "1", "--seed", &marker])
        .env("RUST_LOG", "info")
        .env("RUST_LOG_STYLE", "never")
        .stdin(Stdio::null());
    let mut old = Binary::launch(command);
    let pid = old.child.id();
    installed.put_script(&format!("sleep 1\nexec '{}' \"$@\"", tcpool_bin()));
    old.signal("HUP");
    old.wait_stderr("the hand-over", |l| {
        l.contains("hand-over: starting the new process")
    });
    old.signal("TERM");
    assert_eq!(old.wait_timeout(IO_TIMEOUT * 2), Some(0));
    let left: Vec<Adopted> = processes_with(&marker)
        .into_iter()
        .filter(|&p| p != pid)
        .map(Adopted)
        .collect();
    let pids: Vec<u32> = left.iter().map(|a| a.0).collect();
    assert!(pids.is_empty(), "still running after the stop: {pids:?}");
    assert!(
        std::net::TcpStream::connect_timeout(&old.addr, IO_TIMEOUT).is_err(),
        "nobody serves after the stop"
    );
}
