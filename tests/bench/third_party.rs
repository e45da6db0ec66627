//! `tcpool bench` against echo servers it shares no code with: Python `socketserver` and `socat`.

use super::*;

const PYTHON_ECHO: &str = r#"
import socketserver, sys

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)

class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

with Server(("127.0.0.1", 0), Echo) as server:
    print(server.server_address[1], flush=True)
    server.serve_forever()
"#;

#[test]
fn bench_against_python_socketserver_echo_is_clean() {
    let mut child = Command::new("python3")
        .args(["-c", PYTHON_ECHO])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python3");
    let lines = collect_lines(child.stdout.take().unwrap());
    let _server = External(child);
    let port: u16 = wait_line(&lines, "the Python server's port", |l| {
        l.parse::<u16>().is_ok()
    })
    .parse()
    .unwrap();
    let run = bench(format!("127.0.0.1:{port}"), &["-c", "4", "-d", "1"]);
    run.assert_clean();
    assert_eq!(run.u64("connected"), 4);
}

#[test]
fn bench_against_socat_cat_is_clean() {
    let port = free_port();
    let child = Command::new("socat")
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
        .arg("EXEC:cat")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat is needed for this test (apt install socat; .ci/run installs it)");
    let _server = External(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(port);
    let run = bench(addr, &["-c", "4", "-d", "1", "--eol", "crlf"]);
    run.assert_clean();
    assert_eq!(run.u64("connected"), 4);
}

#[test]
fn a_tcpool_shutdown_mid_run_counts_as_closed_not_mismatch() {
    let server = TestServer::start(Config::default());
    let addr = server.addr.to_string();
    let started = Instant::now();
    let (child, stdout, stderr) = spawn_bench(&addr, &["--json", "-c", "4", "-d", "20"]);
    server.wait_for("the bench's connections", |r| r.len() == 4);
    server.wait_for("some traffic", |r| r.stats().traffic.messages_in > 100);
    // Every connection is told `quit` and closed: that is not a wrong byte.
    server.stop();
    let run = finish(child, stdout, stderr, started);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("mismatch"), 0, "{}", run.report);
    assert_eq!(run.kind("closed") + run.kind("reset"), 4, "{}", run.report);
    assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);
}
