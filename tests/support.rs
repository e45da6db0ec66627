//! Shared test helpers: start a real server on `127.0.0.1:0` (in this process or as the real
//! binary), connect with timeouts, read exact bytes, raise the descriptor limit.

#![allow(dead_code)] // each themed module uses its own subset

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tcpool::server::{Config, Handler, Printer, Registry, Server};
use tcpool::{Shutdown, Summary};

/// How long any single read in a test may wait before the test fails instead of hanging.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Initialises logging once per test binary (`RUST_LOG=debug cargo test` shows server logs).
pub fn init_logger() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
            .is_test(true)
            .try_init();
    });
}

/// Raises this process's soft descriptor limit to the hard one (tests with many sockets).
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).expect("cannot raise the descriptor limit")
}

/// A server running on a thread of this process; shut down and joined on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    pub registry: Registry,
    pub faults: tcpool::server::Faults,
    pub printed: Arc<Mutex<Vec<String>>>,
    running: Option<JoinHandle<io::Result<Summary>>>,
}

impl TestServer {
    pub fn start(config: Config) -> Self {
        Self::build(config, None::<tcpool::server::modes::Echo>)
    }

    pub fn with_handler(config: Config, handler: impl Handler) -> Self {
        Self::build(config, Some(handler))
    }

    fn build(config: Config, handler: Option<impl Handler>) -> Self {
        init_logger();
        let listener = tcpool::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let printed = Arc::new(Mutex::new(Vec::new()));
        let sink = printed.clone();
        let mut server = Server::new(listener, config).printer(Printer::new(move |line| {
            sink.lock().unwrap().push(line.to_owned())
        }));
        if let Some(handler) = handler {
            server = server.handler(handler);
        }
        let addr = server.local_addr().unwrap();
        let shutdown = server.shutdown();
        let registry = server.registry();
        let faults = server.faults();
        let running = thread::Builder::new()
            .name("test-server".into())
            .spawn(move || server.run())
            .unwrap();
        TestServer {
            addr,
            shutdown,
            registry,
            faults,
            printed,
            running: Some(running),
        }
    }

    /// Triggers the shutdown and waits for `run` to return.
    pub fn stop(mut self) -> Summary {
        self.shutdown.trigger();
        self.running.take().unwrap().join().unwrap().unwrap()
    }

    /// Waits until `cond` holds for the registry, at most `IO_TIMEOUT`.
    pub fn wait_for(&self, what: &str, cond: impl Fn(&Registry) -> bool) {
        wait_until(what, || cond(&self.registry));
    }

    /// Lines the server printed for the operator so far.
    pub fn printed(&self) -> Vec<String> {
        self.printed.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(running) = self.running.take() {
            let _ = running.join();
        }
    }
}

/// Polls `cond` every few milliseconds until it holds; panics after `IO_TIMEOUT`.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A client socket with read and write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// A chat client: connected, and past its greeting (`* you are #ID; ...`), which it returns.
pub fn join_chat(addr: SocketAddr) -> (TcpStream, String) {
    let mut stream = connect(addr);
    let greeting = String::from_utf8(read_line(&mut stream)).unwrap();
    assert!(greeting.starts_with("* you are #"), "{greeting:?}");
    (stream, greeting)
}

/// A chat client past its greeting.
pub fn chatter(addr: SocketAddr) -> TcpStream {
    join_chat(addr).0
}

/// Reads exactly `n` bytes.
pub fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Reads until the server closes the connection (or it resets).
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read failed after {} bytes: {e}", out.len()),
        }
    }
}

/// Sends `msg` and reads back exactly as many bytes.
pub fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    stream.write_all(msg).unwrap();
    read_n(stream, msg.len())
}

/// Reads one line (through `\n`), byte by byte so nothing after it is consumed.
pub fn read_line(stream: &mut impl Read) -> Vec<u8> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => panic!("read_line failed after {line:?}: {e}"),
        }
    }
    line
}

/// The path of the built `tcpool` binary.
pub fn tcpool_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tcpool")
}

/// The seed programs' directory.
pub fn seed_dir() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [here.join("tests/seed"), here.join("../shared/seed")];
    candidates
        .into_iter()
        .find(|p| p.join("seed_client.py").exists())
        .expect("seed programs not found")
}

/// The address in a server's `listening on ADDR` log line, if `text` has one.
pub fn listening_addr(text: &str) -> Option<SocketAddr> {
    let rest = text.split("listening on ").nth(1)?;
    // Up to the first character an address cannot hold (a space, or a JSON log's quote).
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Runs `tcpool serve ARGS...`, which must refuse to start: exit code 1 and `message` on
/// stderr.
pub fn assert_serve_refuses(args: &[&str], message: &str) {
    let out = Command::new(tcpool_bin())
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(message), "{stderr}");
}

/// `tcpool serve --port 0 ARGS...` as a command, logging at `info` without colours.
pub fn serve_command(args: &[&str]) -> Command {
    let mut command = Command::new(tcpool_bin());
    command
        .args(["serve", "--port", "0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env("RUST_LOG_STYLE", "never");
    command
}

/// The real binary running `tcpool serve --port 0 ARGS...`, with stdin, stdout and stderr
/// piped; stderr and stdout are collected by background threads.
pub struct Binary {
    pub child: Child,
    pub addr: SocketAddr,
    pub stdin: Option<ChildStdin>,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    /// Starts the server and waits for its `listening on ADDR` line.
    pub fn serve(args: &[&str]) -> Binary {
        Self::serve_with(args, Stdio::piped(), |_| {})
    }

    /// As [`Binary::serve`], with stdin from `stdin` and a hook to adjust the command.
    pub fn serve_with(args: &[&str], stdin: Stdio, adjust: impl FnOnce(&mut Command)) -> Binary {
        let mut command = serve_command(args);
        command.stdin(stdin).stdout(Stdio::piped());
        adjust(&mut command);
        Binary::launch(command)
    }

    /// Starts `command` — a `tcpool serve --port 0 ...`, perhaps behind a wrapper such as
    /// `prlimit` — with stderr piped and collected, and waits for its `listening on ADDR`
    /// line. Stdin and stdout are as the command set them; a piped stdout is collected.
    pub fn launch(mut command: Command) -> Binary {
        command.stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn tcpool");
        let stdin = child.stdin.take();
        let stdout = match child.stdout.take() {
            Some(out) => collect_lines(out),
            None => Arc::new(Mutex::new(Vec::new())),
        };
        let stderr = collect_lines(child.stderr.take().unwrap());
        let addr = {
            let deadline = Instant::now() + IO_TIMEOUT;
            loop {
                let found = stderr
                    .lock()
                    .unwrap()
                    .iter()
                    .find_map(|l| listening_addr(l));
                if let Some(addr) = found {
                    break addr;
                }
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "tcpool exited with {status} before listening: {:?}",
                        stderr.lock().unwrap()
                    );
                }
                assert!(Instant::now() < deadline, "no `listening on` line");
                thread::sleep(Duration::from_millis(10));
            }
        };
        Binary {
            child,
            addr,
            stdin,
            stdout,
            stderr,
        }
    }

    /// Types `line` (a newline is added) on the server's console.
    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends a signal to the server (`"INT"`, `"TERM"`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `timeout`; returns its exit code.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until some stdout line satisfies `pred`; returns it.
    pub fn wait_stdout(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_line(&self.stdout, what, pred)
    }

    /// Waits until some stderr line satisfies `pred`; returns it.
    pub fn wait_stderr(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_line(&self.stderr, what, pred)
    }

    /// Waits for the `admin endpoint on http://ADDR` log line; returns ADDR.
    pub fn admin_addr(&self) -> std::net::SocketAddr {
        let line = self.wait_stderr("the admin line", |l| {
            l.contains("admin endpoint on http://")
        });
        line.split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line}"))
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// The process's resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Field `n` of a `/proc/.../stat` line, counting from 1 (the pid), as a number. Field 2, the
/// command name in parentheses, may hold spaces; every field after it is a plain number.
pub fn stat_field(stat: &str, n: usize) -> i64 {
    let after_name = &stat[stat.rfind(')').expect("a /proc stat line") + 2..];
    let field = after_name.split_whitespace().nth(n - 3);
    field
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("no field {n} in {stat:?}"))
}

/// A `/proc/PID/status` field in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Collects a child's output lines on a background thread.
pub fn collect_lines(out: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    thread::spawn(move || {
        let mut reader = BufReader::new(out);
        let mut buf = Vec::new();
        while reader
            .read_until(b'\n', &mut buf)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            let line = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            sink.lock().unwrap().push(line);
            buf.clear();
        }
    });
    lines
}

/// Waits until some line in `lines` satisfies `pred`; returns it.
pub fn wait_line(lines: &Mutex<Vec<String>>, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if let Some(line) = lines.lock().unwrap().iter().find(|l| pred(l)) {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; lines: {:?}",
            lines.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Collects a child's raw output as text on a background thread (for output without
/// newlines, such as prompts).
pub fn collect_text(mut out: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

/// Waits until `text` contains `needle`.
pub fn wait_text(text: &Mutex<String>, needle: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !text.lock().unwrap().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {needle:?} in {:?}",
            text.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// A port that was free a moment ago (for programs that cannot bind port 0 themselves).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on 127.0.0.1:`port`, reading /proc/net/tcp rather than
/// connecting (a connection would be taken by a one-client server).
pub fn wait_listening(port: u16) {
    let needle = format!("0100007F:{port:04X} 00000000:0000 0A");
    wait_until(&format!("a listener on port {port}"), || {
        std::fs::read_to_string("/proc/net/tcp").is_ok_and(|t| t.contains(&needle))
    });
}

/// Waits for a child with a deadline, killing it if it hangs; returns its exit code.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child did not exit within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Reads from `stream` until exactly `want` has arrived (fails on anything else).
pub fn expect_bytes(stream: &mut TcpStream, want: &[u8]) {
    let got = read_n(stream, want.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(want),
        "unexpected bytes"
    );
}

/// Asserts that nothing arrives on `stream` within `quiet`.
pub fn expect_silence(stream: &mut TcpStream, quiet: Duration) {
    stream.set_read_timeout(Some(quiet)).unwrap();
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => panic!("connection closed"),
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => assert!(
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
}

/// What a finished child printed, and how it exited.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

/// Runs `command` to its end (killed after `timeout`), collecting stdout and stderr lines;
/// the collectors are given up to two seconds after the exit to reach end of output.
pub fn run_to_end(mut command: Command, timeout: Duration) -> Finished {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let collect = |out: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                lines.push(
                    String::from_utf8_lossy(&line)
                        .trim_end_matches('\r')
                        .to_owned(),
                );
            }
            lines
        })
    };
    let stdout = collect(Box::new(child.stdout.take().unwrap()));
    let stderr = collect(Box::new(child.stderr.take().unwrap()));
    let code = wait_child(&mut child, timeout);
    let deadline = Instant::now() + Duration::from_secs(2);
    let finish = |collector: JoinHandle<Vec<String>>| {
        while !collector.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        if collector.is_finished() {
            collector.join().unwrap()
        } else {
            vec!["(output still open: a leftover process holds it)".to_owned()]
        }
    };
    Finished {
        code,
        stdout: finish(stdout),
        stderr: finish(stderr),
    }
}

/// The value of `tcpool_sessions_rejected_total{reason="REASON"}` in a Prometheus exposition.
pub fn rejected_count(exposition: &str, reason: &str) -> String {
    let name = format!("tcpool_sessions_rejected_total{{reason=\"{reason}\"}} ");
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(&name))
        .unwrap_or_else(|| panic!("no {name} in {exposition}"))
        .to_owned()
}

/// The `sd_notify` datagrams received on `socket` until one has the line `want` (at most
/// `IO_TIMEOUT`); the socket needs a read timeout.
pub fn wait_notification(socket: &std::os::unix::net::UnixDatagram, want: &str) -> Vec<String> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = text.lines().any(|l| l == want);
            seen.push(text);
            if done {
                return seen;
            }
        }
    }
    panic!("no {want} notification; got {seen:?}");
}

/// A directory of its own under the system's temporary directory, removed on drop.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "tcpool-test-{what}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
