//! The admin endpoint: every route with good and bad input, `/metrics` read by the real
//! Python `prometheus_client` parser and checked by value, `/healthz` during shutdown, a
//! slowloris on the admin port that must not stall the data port, keep-alive, `/sessions` a
//! page at a time, the token, `--allow`/`--deny`, and the audit lines of every change.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tcpool::server::operator::admin::{Admin, BODY_LIMIT, Options, Token};
use tcpool::server::{Config, Running, Server, bind};

use crate::support::{
    IO_TIMEOUT, connect, init_logger, read_line, read_to_close, round_trip, wait_until,
};

/// A server with its admin endpoint, both on 127.0.0.1 port 0, shut down on drop.
pub struct Served {
    pub addr: SocketAddr,
    admin: Option<Admin>,
    running: Option<Running>,
    pub shutdown: tcpool::Shutdown,
}

impl Served {
    pub fn start(config: Config) -> Served {
        Served::start_with(config, Options::default())
    }

    /// With a token, public metrics or other limits.
    pub fn start_with(config: Config, options: Options) -> Served {
        let server = Server::new(bind("127.0.0.1:0".parse().unwrap()).unwrap(), config);
        Served::start_server(server, options)
    }

    /// `server`, as built, with its admin endpoint.
    pub fn start_server(server: Server, options: Options) -> Served {
        init_logger();
        let admin = Admin::start_with(
            bind("127.0.0.1:0".parse().unwrap()).unwrap(),
            &server,
            options,
        )
        .unwrap();
        let shutdown = server.shutdown();
        let running = server.start().unwrap();
        Served {
            addr: running.local_addr(),
            admin: Some(admin),
            running: Some(running),
            shutdown,
        }
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.as_ref().unwrap().local_addr()
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        request(self.admin_addr(), method, path, body)
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, b"")
    }

    fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// The exposition as parsed by Python's `prometheus_client`: sample name and labels
    /// (as `name{k="v",...}` with sorted labels) to value.
    pub fn scrape(&self) -> HashMap<String, f64> {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200, "{text}");
        parse_with_prometheus_client(&text)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(running) = self.running.take() {
            let _ = running.wait();
        }
        drop(self.admin.take());
    }
}

/// Sends one HTTP/1.1 request with `Connection: close`; returns the status and body.
pub(crate) fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    head.extend_from_slice(body);
    raw(addr, &head)
}

/// One answer read off a kept-alive connection: status, head (status line and headers) and
/// body, by its `Content-Length`.
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    /// The value of header `name` (any case), if the answer has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads exactly one answer from `stream`, leaving what follows it unread.
pub fn read_answer(stream: &mut TcpStream) -> Answer {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("an answer's head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"));
    let mut answer = Answer {
        status,
        head,
        body: String::new(),
    };
    let length: usize = answer
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length: {:?}", answer.head));
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    answer.body = String::from_utf8(body).unwrap();
    answer
}

/// Sends one request on a kept-alive connection (no `Connection: close`), with extra header
/// lines, and reads its answer.
pub fn exchange_on(stream: &mut TcpStream, method: &str, path: &str, headers: &str) -> Answer {
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}Content-Length: 0\r\n\r\n"
    )
    .unwrap();
    read_answer(stream)
}

/// Sends raw bytes as a request; returns the status and body of the answer.
fn raw(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let mut stream = connect(addr);
    stream.write_all(bytes).unwrap();
    parse_answer(&read_to_close(&mut stream))
}

fn parse_answer(answer: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"));
    (status, body.to_owned())
}

const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
names = set()
for family in text_string_to_metric_families(sys.stdin.read()):
    assert family.name not in names, "two families named " + family.name
    names.add(family.name)
    for s in family.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        out["%s{%s}" % (s.name, labels)] = s.value
print(json.dumps(out))
"#;

/// Runs the exposition through the real Python parser (installed by `scripts/test.sh`).
pub fn parse_with_prometheus_client(text: &str) -> HashMap<String, f64> {
    let mut child = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test.sh installs it and prometheus_client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn sample(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:?}"))
}

#[test]
fn metrics_count_three_clients_of_ten_messages() {
    let served = Served::start(Config::default());
    let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(served.addr)).collect();
    for client in &mut clients {
        for i in 0..10 {
            let msg = format!("message {i}\n");
            assert_eq!(round_trip(client, msg.as_bytes()), msg.as_bytes());
        }
    }
    let bytes: f64 = (0..10).map(|i| format!("message {i}\n").len() as f64).sum();
    // A worker counts a reply's bytes and its latency just after writing it, so a client
    // can read the last reply a moment before those counts move: scrape again, until a
    // generous deadline, until they have settled; then every count is asserted exactly.
    let deadline = Instant::now() + IO_TIMEOUT;
    let m = loop {
        let m = served.scrape();
        let settled = m.get(r#"tcpool_bytes_total{direction="out"}"#) == Some(&(3.0 * bytes))
            && m.get("tcpool_reply_seconds_count{}") == Some(&30.0);
        if settled || Instant::now() >= deadline {
            break m;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(sample(&m, "tcpool_sessions_total{}"), 3.0);
    assert_eq!(sample(&m, "tcpool_sessions_active{}"), 3.0);
    assert_eq!(sample(&m, r#"tcpool_messages_total{direction="in"}"#), 30.0);
    assert_eq!(
        sample(&m, r#"tcpool_messages_total{direction="out"}"#),
        30.0
    );
    assert_eq!(
        sample(&m, r#"tcpool_bytes_total{direction="in"}"#),
        3.0 * bytes
    );
    assert_eq!(
        sample(&m, r#"tcpool_bytes_total{direction="out"}"#),
        3.0 * bytes
    );
    assert_eq!(sample(&m, "tcpool_reply_seconds_count{}"), 30.0);
    let per_worker: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("tcpool_worker_sessions{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(per_worker, 3.0);
    assert_eq!(sample(&m, r#"tcpool_build_info{version="0.1.0"}"#), 1.0);
    assert!(sample(&m, "process_start_time_seconds{}") > 1.0e9);

    // One quits, one is kicked through the endpoint; each shows under its reason.
    clients[0].write_all(b"quit\n").unwrap();
    assert_eq!(read_to_close(&mut clients[0]), b"");
    let peer = clients[1].local_addr().unwrap().to_string();
    let sessions = served.json("/sessions");
    let listed = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["peer"] == peer.as_str());
    let id = listed.expect("the second client is listed")["id"]
        .as_u64()
        .unwrap();
    assert_eq!(id, 2);
    let (status, body) = served.request("POST", &format!("/sessions/{id}/kick"), b"");
    assert_eq!((status, body.as_str()), (200, "{\"kicked\":2}\n"));
    assert_eq!(read_to_close(&mut clients[1]), b"quit\n");
    wait_until("both closes counted", || {
        let m = served.scrape();
        m.get(r#"tcpool_sessions_closed_total{reason="kick"}"#) == Some(&1.0)
            && m.get(r#"tcpool_sessions_closed_total{reason="quit"}"#) == Some(&1.0)
    });
    let m = served.scrape();
    assert_eq!(sample(&m, "tcpool_sessions_active{}"), 1.0);
    assert_eq!(sample(&m, "tcpool_session_duration_seconds_count{}"), 2.0);
}

#[test]
fn sessions_and_stats_are_the_console_data_as_json() {
    let served = Served::start(Config::default());
    let mut client = connect(served.addr);
    assert_eq!(round_trip(&mut client, b"hello"), b"hello");
    // The reply's bytes are counted just after the write: the client may read it first.
    wait_until("the reply's bytes to be counted", || {
        served.json("/stats")["bytes_out"] == 5
    });
    let sessions = served.json("/sessions");
    let list = sessions.as_array().unwrap();
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert_eq!(s["id"], 1);
    assert_eq!(s["peer"], client.local_addr().unwrap().to_string());
    assert_eq!(s["messages_in"], 1);
    assert_eq!(s["bytes_in"], 5);
    assert_eq!(s["bytes_out"], 5);
    assert_eq!(s["closing"], false);
    let stats = served.json("/stats");
    assert_eq!(stats["sessions"], 1);
    assert_eq!(stats["total"], 1);
    assert_eq!(stats["messages_in"], 1);
    assert_eq!(stats["bytes_out"], 5);
    // A query string does not change the route.
    assert_eq!(served.get("/stats?pretty=1").0, 200);
}

#[test]
fn bad_requests_get_their_status_and_one_line() {
    let served = Served::start(Config::default());
    let one_line = |(status, body): (u16, String), want: u16| {
        assert_eq!(status, want, "{body}");
        assert!(
            body.ends_with('\n') && body.matches('\n').count() == 1,
            "{body:?}"
        );
    };
    one_line(served.request("POST", "/sessions/42/kick", b""), 404);
    one_line(served.request("POST", "/sessions/abc/kick", b""), 404);
    one_line(served.request("POST", "/sessions/%FF%FE/kick", b""), 404);
    one_line(served.get("/nowhere"), 404);
    one_line(served.get("/sessions/1"), 404);
    one_line(served.request("DELETE", "/metrics", b""), 405);
    one_line(served.request("POST", "/healthz", b""), 405);
    one_line(served.get("/shutdown"), 405);
    one_line(served.get("/sessions/1/kick"), 405);
    one_line(served.request("POST", "/faults", b"latency 10ms"), 400);
    one_line(
        served.request("POST", "/faults", b"latency,delay=10ms\n,p=2"),
        400,
    );
    one_line(served.request("POST", "/faults", b"\xff\xfe"), 400);
    one_line(served.request("DELETE", "/faults/1", b""), 404);
    one_line(served.request("DELETE", "/faults/x", b""), 404);
    one_line(served.request("PUT", "/faults", b""), 405);
    one_line(served.request("GET", "/faults/1", b""), 405);
    let mut allow = connect(served.admin_addr());
    allow
        .write_all(b"PUT /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let answer = String::from_utf8(read_to_close(&mut allow)).unwrap();
    assert!(answer.contains("\r\nAllow: GET\r\n"), "{answer}");

    // Bytes that are not UTF-8 in the request line or a header: the HTTP layer closes the
    // connection without an answer (it takes only ASCII heads).
    for head in [
        &b"GET /\xff\xfe\x80 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"[..],
        b"GET /healthz HTTP/1.1\r\nHost: \xff\xfe\r\nConnection: close\r\n\r\n",
    ] {
        let mut stream = connect(served.admin_addr());
        stream.write_all(head).unwrap();
        let answer = read_to_close(&mut stream);
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 400"),
            "{answer:?}"
        );
    }
    one_line(
        served.request("POST", "/sessions/1/kick", b"\xff\xfe\x00 not text"),
        404,
    );
    // Garbage that is not HTTP at all.
    let mut junk = connect(served.admin_addr());
    junk.write_all(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n")
        .unwrap();
    let _ = read_to_close(&mut junk);

    // The server is still whole: the endpoint answers and echo works.
    assert_eq!(served.get("/healthz"), (200, "ok\n".into()));
    let mut client = connect(served.addr);
    assert_eq!(round_trip(&mut client, b"still here\n"), b"still here\n");
}

#[test]
fn a_ten_megabyte_body_is_refused_unread() {
    let served = Served::start(Config::default());
    let ten_mb = 10 * 1024 * 1024;
    // Announced by its length: refused before a byte of it is read.
    let mut stream = connect(served.admin_addr());
    write!(
        stream,
        "POST /shutdown HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {ten_mb}\r\n\r\n"
    )
    .unwrap();
    let sender = {
        let mut stream = stream.try_clone().unwrap();
        thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..ten_mb / chunk.len() {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
            }
        })
    };
    let (status, body) = parse_answer(&read_to_close(&mut stream));
    assert_eq!(status, 413, "{body}");
    assert!(body.contains(&BODY_LIMIT.to_string()), "{body}");
    drop(stream);
    sender.join().unwrap();

    // Chunked, with no length: refused once the limit is passed.
    let mut stream = connect(served.admin_addr());
    stream
        .write_all(
            b"POST /shutdown HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
    let sender = {
        let mut stream = stream.try_clone().unwrap();
        thread::spawn(move || {
            let chunk = vec![b'y'; 64 * 1024];
            for _ in 0..ten_mb / chunk.len() {
                let ok = write!(stream, "{:x}\r\n", chunk.len()).is_ok()
                    && stream.write_all(&chunk).is_ok()
                    && stream.write_all(b"\r\n").is_ok();
                if !ok {
                    break;
                }
            }
            let _ = stream.write_all(b"0\r\n\r\n");
        })
    };
    let (status, _) = parse_answer(&read_to_close(&mut stream));
    assert_eq!(status, 413);
    drop(stream);
    sender.join().unwrap();

    // Neither shut the server down.
    assert_eq!(served.get("/healthz"), (200, "ok\n".into()));
}

#[test]
fn healthz_turns_503_once_shutdown_began_and_post_shutdown_starts_it() {
    let mut served = Served::start(Config::default());
    let mut client = connect(served.addr);
    assert_eq!(round_trip(&mut client, b"hi\n"), b"hi\n");
    assert_eq!(served.get("/healthz"), (200, "ok\n".into()));
    assert_eq!(
        served.request("POST", "/shutdown", b""),
        (202, "shutting down\n".into())
    );
    assert_eq!(served.get("/healthz"), (503, "shutting down\n".into()));
    assert_eq!(read_to_close(&mut client), b"quit\n");
    let summary = served.running.take().unwrap().wait().unwrap();
    assert_eq!(summary.sessions, 1);
    // The endpoint outlives the server it reports on until it is stopped.
    assert_eq!(served.get("/healthz").0, 503);
    served.admin.take().unwrap().stop();
}

#[test]
fn a_slowloris_on_the_admin_port_does_not_stall_the_data_port() {
    let served = Served::start(Config::default());
    // Clients that open a request and never finish it, one byte at a time.
    let mut slow: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = connect(served.admin_addr());
            s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(1);
    let mut client = connect(served.addr);
    let mut rounds = 0;
    while Instant::now() < until {
        for s in &mut slow {
            s.write_all(b"a").unwrap();
        }
        let msg = format!("round {rounds}\n");
        assert_eq!(round_trip(&mut client, msg.as_bytes()), msg.as_bytes());
        rounds += 1;
        thread::sleep(Duration::from_millis(20));
    }
    assert!(rounds > 0);
    // The endpoint itself still answers a complete request meanwhile.
    assert_eq!(served.get("/healthz"), (200, "ok\n".into()));
    drop(slow);
}

#[test]
fn a_body_that_never_arrives_does_not_stall_the_endpoint() {
    let served = Served::start(Config::default());
    // A complete head announcing a body (longer than the HTTP layer reads ahead itself),
    // then a few bytes of it and silence.
    let mut stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(served.admin_addr());
            s.write_all(b"POST /shutdown HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 10000\r\n\r\nabc")
                .unwrap();
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    assert_eq!(served.get("/healthz"), (200, "ok\n".into()));
    assert_eq!(served.get("/stats").0, 200);
    let mut client = connect(served.addr);
    assert_eq!(
        round_trip(&mut client, b"still served\n"),
        b"still served\n"
    );
    // The stalled requests did nothing; once their bodies end they are answered.
    assert!(!served.shutdown.is_triggered());
    for s in &mut stalled {
        s.write_all(&[b'x'; 9997]).unwrap();
        assert_eq!(parse_answer(&read_to_close(s)).0, 202);
    }
    assert!(served.shutdown.is_triggered());
}

#[test]
fn the_binary_serves_admin_and_shuts_down_through_it() {
    use crate::support::Binary;
    let mut server = Binary::serve_with(&["--admin", "127.0.0.1:0"], Stdio::null(), |_| {});
    let admin = server.admin_addr();
    let mut client = connect(server.addr);
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.write_all(b"ping\n").unwrap();
    assert_eq!(read_line(&mut client), b"ping\n");
    let m = parse_with_prometheus_client(&request(admin, "GET", "/metrics", b"").1);
    assert_eq!(sample(&m, r#"tcpool_messages_total{direction="in"}"#), 1.0);
    assert_eq!(request(admin, "POST", "/shutdown", b"").0, 202);
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
    assert_eq!(read_to_close(&mut client), b"quit\n");
}

fn bench(args: &[String]) -> crate::support::Finished {
    let mut command = Command::new(crate::support::tcpool_bin());
    command.arg("bench").args(args).env("RUST_LOG", "warn");
    crate::support::run_to_end(command, Duration::from_secs(60))
}

#[test]
fn bench_server_metrics_shows_the_servers_counts_equal_to_the_clients() {
    let served = Served::start(Config::default());
    let url = format!("http://{}/metrics", served.admin_addr());
    let args = |json: bool| {
        let mut a: Vec<String> = [served.addr.to_string(), "-c".into(), "3".into()].into();
        a.extend(["-n", "300", "--pipeline", "2", "--server-metrics", &url].map(String::from));
        if json {
            a.push("--json".into());
        }
        a
    };
    let run = bench(&args(true));
    assert_eq!(run.code, Some(0), "{:?}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout.join("\n")).unwrap();
    let server = &report["server"];
    assert_eq!(report["sent"], 300);
    assert_eq!(server["messages_in"], 300, "{server}");
    assert_eq!(server["messages_out"], 300);
    assert_eq!(server["bytes_in"], report["bytes"]);
    assert_eq!(server["sessions_opened"], 3);
    assert_eq!(server["sessions_closed"]["eof"], 3);
    assert_eq!(server["reply"]["count"], 300);
    assert!(server["reply"]["p50_us"].as_f64().unwrap() > 0.0);
    assert_eq!(server["warnings"], serde_json::json!([]));
    assert!(run.stderr.is_empty(), "{:?}", run.stderr);

    let run = bench(&args(false));
    assert_eq!(run.code, Some(0), "{:?}", run.stderr);
    let text = run.stdout.join("\n");
    assert!(text.contains(&format!("Server      {url}")), "{text}");
    assert!(text.contains("  Messages  300 in, 300 out"), "{text}");
    assert!(
        text.contains("  Sessions  3 opened, 3 closed (eof 3), 0 rejected"),
        "{text}"
    );
}

#[test]
fn bench_server_metrics_warns_when_the_server_counted_less() {
    // The metrics of another server, which sees none of the load: every count falls short.
    let measured = Served::start(Config::default());
    let elsewhere = Served::start(Config::default());
    let url = format!("{}", elsewhere.admin_addr());
    let run = bench(&[
        measured.addr.to_string(),
        "-c".into(),
        "2".into(),
        "-n".into(),
        "100".into(),
        "--server-metrics".into(),
        url,
    ]);
    assert_eq!(run.code, Some(0), "{:?}", run.stderr);
    let text = run.stdout.join("\n");
    assert!(
        text.contains("Warning   the client sent 100 measured message(s); the server counted 0"),
        "{text}"
    );
    assert!(
        run.stderr
            .iter()
            .any(|l| l.starts_with("warning: ") && l.contains("2 time(s); the server counted 0")),
        "{:?}",
        run.stderr
    );
    // Unreachable metrics are a failure to start, before any load.
    let run = bench(&[
        measured.addr.to_string(),
        "-n".into(),
        "10".into(),
        "--server-metrics".into(),
        format!("127.0.0.1:{}", crate::support::free_port()),
    ]);
    assert_eq!(run.code, Some(1), "{:?}", run.stderr);
    assert!(
        run.stderr
            .join("\n")
            .contains("cannot read the server's metrics")
    );
}

#[test]
fn faults_are_added_listed_cleared_and_counted_over_http() {
    let served = Served::start(Config::default());
    assert_eq!(served.json("/faults"), serde_json::json!([]));
    let (status, body) = served.request("POST", "/faults", b"truncate,bytes=2\n");
    assert_eq!(status, 201, "{body}");
    let added: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(added["id"], 1);
    let (status, body) = served.request("POST", "/faults", b"latency,delay=soon");
    assert_eq!(status, 400);
    assert!(body.contains("delay: \"soon\""), "{body}");

    let mut client = connect(served.addr);
    assert_eq!(round_trip(&mut client, b"he"), b"he");
    client.write_all(b"llo").unwrap();
    assert_eq!(
        crate::support::read_n(&mut client, 2),
        b"ll",
        "cut to 2 bytes"
    );
    let listed = served.json("/faults");
    assert_eq!(listed[0]["spec"], "truncate,bytes=2");
    assert_eq!(listed[0]["kind"], "truncate");
    assert_eq!(listed[0]["sessions"], 1);
    assert_eq!(listed[0]["active"], true);
    let m = served.scrape();
    assert_eq!(
        sample(
            &m,
            "tcpool_fault_sessions_total{fault=\"#1 truncate,bytes=2\"}"
        ),
        1.0
    );

    let (status, body) = served.request("DELETE", "/faults/1", b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(served.request("DELETE", "/faults/1", b"").0, 404);
    assert_eq!(served.json("/faults")[0]["active"], false);
    let mut after = connect(served.addr);
    assert_eq!(round_trip(&mut after, b"hello"), b"hello");
}

#[test]
fn faults_added_and_cleared_all_day_are_forgotten() {
    init_logger();
    let server = Server::new(
        bind("127.0.0.1:0".parse().unwrap()).unwrap(),
        Config::default(),
    );
    let admin = Admin::start(bind("127.0.0.1:0".parse().unwrap()).unwrap(), &server).unwrap();
    let faults = server.faults();
    let shutdown = server.shutdown();
    let running = server.start().unwrap();
    let addr = admin.local_addr();
    let metrics = || {
        let (status, text) = request(addr, "GET", "/metrics", b"");
        assert_eq!(status, 200);
        text
    };
    let before = metrics().len();
    // Through HTTP as an operator would, then 2,000 pairs through the same handle.
    let (status, body) = request(addr, "POST", "/faults", b"slice,size=1,delay=500ns");
    assert_eq!(status, 201, "{body}");
    assert_eq!(request(addr, "DELETE", "/faults/1", b"").0, 200);
    for _ in 1..2000 {
        let id = faults.add("slice,size=1,delay=500ns".parse().unwrap());
        assert_eq!(faults.clear(Some(id)), 1);
    }
    let after = metrics().len();
    eprintln!("/metrics: {before} bytes before 2,000 add/clear pairs, {after} after");
    assert!(
        after.abs_diff(before) * 10 <= before,
        "/metrics grew from {before} to {after} bytes"
    );
    let (status, body) = request(addr, "GET", "/faults", b"");
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&body).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), tcpool::server::faults::CLEARED_KEPT);
    assert_eq!(listed.last().unwrap()["id"], 2000);
    // What is shown posts back as it is.
    let shown = listed[0]["spec"].as_str().unwrap().to_owned();
    assert_eq!(shown, "slice,size=1B,delay=500ns");
    let (status, body) = request(addr, "POST", "/faults", shown.as_bytes());
    assert_eq!(status, 201, "{body}");
    assert!(faults.list().last().unwrap().active);
    // The summary's line of faults is as short.
    let touched = faults.touched();
    assert!(touched.len() < 2048, "{} bytes: {touched}", touched.len());
    shutdown.trigger();
    running.wait().unwrap();
    drop(admin);
}

#[test]
fn two_requests_on_one_connection_are_both_answered() {
    let served = Served::start(Config::default());
    let mut stream = connect(served.admin_addr());
    let first = exchange_on(&mut stream, "GET", "/healthz", "");
    assert_eq!((first.status, first.body.as_str()), (200, "ok\n"));
    assert_eq!(first.header("connection"), None, "{}", first.head);
    let second = exchange_on(&mut stream, "GET", "/stats", "");
    assert_eq!(second.status, 200);
    let stats: Value = serde_json::from_str(&second.body).unwrap();
    assert_eq!(stats["sessions"], 0);
    // And a third, pipelined behind a fourth: both answered, in order.
    stream
        .write_all(
            b"GET /faults HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .unwrap();
    assert_eq!(read_answer(&mut stream).body, "[]\n");
    assert_eq!(read_answer(&mut stream).body, "ok\n");
}

#[test]
fn sessions_come_a_page_at_a_time_with_a_link_to_the_next() {
    crate::support::raise_fd_limit();
    let served = Served::start(Config::default());
    let clients: Vec<TcpStream> = (0..2500).map(|_| connect(served.addr)).collect();
    wait_until("2,500 sessions", || {
        served.json("/stats")["sessions"] == 2500
    });
    let mut stream = connect(served.admin_addr());
    let mut next = Some("/sessions?limit=1000".to_owned());
    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    while let Some(path) = next.take() {
        let page = exchange_on(&mut stream, "GET", &path, "");
        assert_eq!(page.status, 200, "{}", page.body);
        let list: Value = serde_json::from_str(&page.body).unwrap();
        let list = list.as_array().unwrap();
        assert!(list.len() <= 1000);
        for s in list {
            assert!(seen.insert(s["id"].as_u64().unwrap()), "{s} seen twice");
            assert!(s["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        }
        next = page.header("link").map(|link| {
            let last = list.last().unwrap()["id"].as_u64().unwrap();
            assert_eq!(
                link,
                format!("</sessions?after={last}&limit=1000>; rel=\"next\"")
            );
            link[1..link.find('>').unwrap()].to_owned()
        });
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 2500);
    assert_eq!(
        seen.iter().copied().collect::<Vec<_>>(),
        (1..=2500).collect::<Vec<_>>()
    );
    // The default page is 1000; a bad limit or after is 400.
    let first = exchange_on(&mut stream, "GET", "/sessions", "");
    assert_eq!(
        serde_json::from_str::<Value>(&first.body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1000
    );
    assert!(
        first
            .header("link")
            .unwrap()
            .contains("after=1000&limit=1000")
    );
    for bad in ["limit=0", "limit=10001", "limit=ten", "after=-3", "after="] {
        let answer = exchange_on(&mut stream, "GET", &format!("/sessions?{bad}"), "");
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
    }
    let tail = exchange_on(&mut stream, "GET", "/sessions?after=2400&limit=10000", "");
    assert_eq!(
        serde_json::from_str::<Value>(&tail.body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        100
    );
    assert_eq!(tail.header("link"), None);
    drop(clients);
}

#[test]
fn a_token_guards_every_route_but_healthz_and_metrics_only_when_asked() {
    let token = Token::new("s3cret-token").unwrap();
    let served = Served::start_with(
        Config::default(),
        Options {
            token: Some(token.clone()),
            ..Options::default()
        },
    );
    let mut stream = connect(served.admin_addr());
    let right = "Authorization: Bearer s3cret-token\r\n";
    for path in ["/stats", "/sessions", "/faults", "/metrics"] {
        for wrong in [
            "",
            "Authorization: Bearer s3cret-tokeN\r\n",
            "Authorization: s3cret-token\r\n",
        ] {
            let mut fresh = connect(served.admin_addr());
            let answer = exchange_on(&mut fresh, "GET", path, wrong);
            assert_eq!(answer.status, 401, "{path} {wrong:?}");
            assert!(
                answer
                    .header("www-authenticate")
                    .unwrap()
                    .starts_with("Bearer"),
                "{}",
                answer.head
            );
        }
        assert_eq!(
            exchange_on(&mut stream, "GET", path, right).status,
            200,
            "{path}"
        );
    }
    assert_eq!(exchange_on(&mut stream, "GET", "/healthz", "").status, 200);
    // A change without the token changes nothing.
    let mut fresh = connect(served.admin_addr());
    assert_eq!(exchange_on(&mut fresh, "POST", "/shutdown", "").status, 401);
    assert!(!served.shutdown.is_triggered());
    assert_eq!(
        exchange_on(&mut stream, "POST", "/shutdown", right).status,
        202
    );
    assert!(served.shutdown.is_triggered());

    let public = Served::start_with(
        Config::default(),
        Options {
            token: Some(token),
            public_metrics: true,
            ..Options::default()
        },
    );
    let mut stream = connect(public.admin_addr());
    assert_eq!(exchange_on(&mut stream, "GET", "/metrics", "").status, 200);
    assert_eq!(exchange_on(&mut stream, "GET", "/stats", "").status, 401);
}

#[test]
fn a_denied_address_is_answered_403_not_reset() {
    let served = Served::start(Config {
        access: tcpool::server::Access {
            allow: vec![],
            deny: vec!["127.0.0.0/8".parse().unwrap()],
        },
        ..Config::default()
    });
    for _ in 0..3 {
        let (status, body) = request(served.admin_addr(), "POST", "/shutdown", b"");
        assert_eq!((status, body.as_str()), (403, "forbidden\n"));
    }
    assert!(!served.shutdown.is_triggered());
}

#[test]
fn the_binary_refuses_a_public_admin_without_a_token_and_checks_the_token_file() {
    let run = |args: &[&str]| {
        let started = Instant::now();
        let out = Command::new(crate::support::tcpool_bin())
            .args(["serve", "--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(started.elapsed() < IO_TIMEOUT);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["--admin", "0.0.0.0:0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--admin-token-file"),
        "{stderr}"
    );
    let dir = std::env::temp_dir().join(format!("tcpool-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let (code, stderr) = run(&[
        "--admin",
        "127.0.0.1:0",
        "--admin-token-file",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("the token is empty"), "{stderr}");
    let missing = dir.join("missing");
    let (code, stderr) = run(&[
        "--admin",
        "127.0.0.1:0",
        "--admin-token-file",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot read the admin token file"),
        "{stderr}"
    );

    // With a token, a public address serves; `localhost` is taken as loopback.
    let good = dir.join("good");
    std::fs::write(&good, "tok-123\n").unwrap();
    let mut server = crate::support::Binary::serve_with(
        &[
            "--admin",
            "0.0.0.0:0",
            "--admin-token-file",
            good.to_str().unwrap(),
        ],
        Stdio::null(),
        |_| {},
    );
    let admin = SocketAddr::from(([127, 0, 0, 1], server.admin_addr().port()));
    // A 401 closes its connection: nothing more is read from a client without the token.
    let mut refused = connect(admin);
    let answer = exchange_on(&mut refused, "GET", "/stats", "");
    assert_eq!(answer.status, 401);
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(read_to_close(&mut refused), b"");
    let mut stream = connect(admin);
    let auth = "Authorization: Bearer tok-123\r\n";
    assert_eq!(exchange_on(&mut stream, "GET", "/stats", auth).status, 200);
    assert_eq!(
        exchange_on(&mut stream, "POST", "/shutdown", auth).status,
        202
    );
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
    let mut local =
        crate::support::Binary::serve_with(&["--admin", "localhost:0"], Stdio::null(), |_| {});
    assert!(local.admin_addr().ip().is_loopback());
    local.signal("TERM");
    assert_eq!(local.wait_timeout(IO_TIMEOUT), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The audit line of `what` in `lines`, which must name `source`.
fn audit_line<'a>(lines: &'a [String], what: &str, source: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.contains(&format!("audit: {what}")) && l.contains(source))
        .unwrap_or_else(|| panic!("no audit line {what:?} with {source:?} in {lines:?}"))
}

#[test]
fn every_change_is_an_audit_line_naming_who_asked_and_is_counted() {
    use crate::support::Binary;
    // The admin endpoint: with the client's address.
    let mut server = Binary::serve_with(&["--admin", "127.0.0.1:0"], Stdio::null(), |_| {});
    let admin = server.admin_addr();
    let mut client = connect(server.addr);
    assert_eq!(round_trip(&mut client, b"hi\n"), b"hi\n");
    let mut http = connect(admin);
    let peer = http.local_addr().unwrap().to_string();
    write!(
        http,
        "POST /faults HTTP/1.1\r\nHost: t\r\nContent-Length: 18\r\n\r\nlatency,delay=20ms"
    )
    .unwrap();
    assert_eq!(read_answer(&mut http).status, 201);
    assert_eq!(
        exchange_on(&mut http, "DELETE", "/faults/1", "").status,
        200
    );
    assert_eq!(
        exchange_on(&mut http, "POST", "/sessions/1/kick", "").status,
        200
    );
    let m = parse_with_prometheus_client(&exchange_on(&mut http, "GET", "/metrics", "").body);
    for action in ["fault-add", "fault-clear", "kick"] {
        let key = format!("tcpool_changes_total{{action=\"{action}\",source=\"admin\"}}");
        assert_eq!(sample(&m, &key), 1.0, "{key}");
    }
    assert_eq!(
        sample(
            &m,
            r#"tcpool_changes_total{action="shutdown",source="admin"}"#
        ),
        0.0
    );
    assert_eq!(exchange_on(&mut http, "POST", "/shutdown", "").status, 202);
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
    drop(client);
    let lines = server.stderr_lines();
    let by = format!("source=admin peer={peer}");
    assert!(audit_line(&lines, "fault added", &by).contains("id=1 spec=latency,delay=20ms"));
    assert!(audit_line(&lines, "fault cleared", &by).contains("id=1 spec=latency,delay=20ms"));
    assert!(audit_line(&lines, "session kicked", &by).contains("id=1"));
    assert!(audit_line(&lines, "shutdown", &by).contains(" INFO "));

    // The console.
    let mut server = Binary::serve(&[]);
    let mut client = connect(server.addr);
    assert_eq!(round_trip(&mut client, b"hi\n"), b"hi\n");
    server.type_line("/fault truncate,bytes=3");
    server.type_line("/fault latency,delay=5ms");
    server.type_line("/fault clear");
    server.wait_stderr("the clears", |l| l.contains("audit: fault cleared: id=2"));
    server.type_line("/kick 1");
    server.wait_stderr("the kick", |l| l.contains("audit: session kicked"));
    server.type_line("quit");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
    drop(client);
    let lines = server.stderr_lines();
    assert!(
        audit_line(&lines, "fault added", "source=console").contains("id=1 spec=truncate,bytes=3")
    );
    assert!(
        audit_line(&lines, "fault cleared: id=1", "source=console")
            .contains("spec=truncate,bytes=3")
    );
    assert!(
        audit_line(&lines, "fault cleared: id=2", "source=console")
            .contains("spec=latency,delay=5ms")
    );
    assert!(audit_line(&lines, "session kicked", "source=console").contains("id=1"));
    audit_line(&lines, "shutdown", "source=console");

    // A signal.
    let mut server = Binary::serve_with(&[], Stdio::null(), |_| {});
    server.signal("TERM");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
    audit_line(
        &server.stderr_lines(),
        "shutdown",
        "source=signal signal=SIGTERM",
    );
}
