//! `tcpool bench --reply resp|memcache|http1` against real servers: `redis-server`,
//! `memcached` and Python's `http.server` (HTTP/1.1, keep-alive) on free loopback ports.
//! Replies framed and classified (ok, error, miss), error replies counted with a sample and
//! the exit code 1, the hit ratio of a key space filled exactly half, a mix of requests
//! reported apart, the first message checked, `Connection: close` reopened and counted, and a
//! hostile length that ends the connection without being allocated.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::bench::{BrokenServer, External, Run, bench};
use crate::bench_protocols::{memcached, memcached_with, redis, redis_command, redis_with};
use crate::support::*;

/// Keys in the key spaces below; the even ones are filled.
const KEYS: u64 = 1000;

/// Writes `commands` on one connection, then `last`, and reads until the reply ends with
/// `last_reply`: every reply before it has come.
fn pipe(port: u16, commands: &[u8], last: &[u8], last_reply: &[u8]) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(commands).unwrap();
    stream.write_all(last).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(last_reply) {
        let n = stream.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the server closed: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

fn replies(run: &Run) -> &Value {
    &run.report["replies"]
}

fn count(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number: {v}"))
}

#[test]
fn redis_noauth_replies_are_errors_with_a_sample() {
    let (_redis, port) = redis_with(&["--requirepass", "secret"]);
    let run = bench(
        port,
        &[
            "-c",
            "2",
            "-n",
            "200",
            "--reply",
            "resp",
            "--send",
            r"INCR n:{conn}\r\n",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.u64("messages"), 200);
    assert_eq!(run.kind("reply"), 200, "{}", run.report);
    assert_eq!(count(replies(&run), "error"), 200);
    assert_eq!(count(replies(&run), "ok"), 0);
    assert_eq!(replies(&run)["errors_by_prefix"]["NOAUTH"], 200);
    let first = run.report["first_errors"]["reply"]["received"]
        .as_str()
        .unwrap();
    assert!(first.starts_with("-NOAUTH "), "{first}");
    assert!(first.ends_with(r"\r\n"), "{first}");

    // The right password, checked: every reply an ok integer.
    let run = bench(
        port,
        &[
            "-c",
            "2",
            "-n",
            "200",
            "--reply",
            "resp",
            "--first-message",
            r"AUTH secret\r\n",
            "--first-expect",
            r"+OK\r\n",
            "--send",
            r"INCR n:{conn}\r\n",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(count(replies(&run), "ok"), 200);
    assert_eq!(run.u64("errors"), 0);
}

#[test]
fn a_failing_first_message_ends_the_connection_showing_its_bytes() {
    let (_redis, port) = redis_with(&["--requirepass", "secret"]);
    // Framed by --reply: the error reply itself fails the connection.
    let run = bench(
        port,
        &[
            "-c",
            "3",
            "-d",
            "1",
            "--reply",
            "resp",
            "--first-message",
            r"AUTH wrong\r\n",
            "--send",
            r"PING\r\n",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("first_reply"), 3, "{}", run.report);
    assert_eq!(run.u64("messages"), 0);
    let first = &run.report["first_errors"]["first_reply"];
    assert!(
        first["received"]
            .as_str()
            .unwrap()
            .starts_with("-WRONGPASS"),
        "{first}"
    );
    // With --until and --first-expect: the reply that came is shown next to the one expected.
    let run = bench(
        port,
        &[
            "-c",
            "2",
            "-d",
            "1",
            "--first-message",
            r"AUTH wrong\r\n",
            "--first-expect",
            r"+OK\r\n",
            "--send",
            r"PING\r\n",
            "--until",
            r"\r\n",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("first_reply"), 2, "{}", run.report);
    let first = &run.report["first_errors"]["first_reply"];
    assert_eq!(first["expected"], r"+OK\r\n");
    assert!(
        first["received"]
            .as_str()
            .unwrap()
            .starts_with("-WRONGPASS"),
        "{first}"
    );
}

#[test]
fn redis_err_replies_by_prefix_and_with_until() {
    let (_redis, port) = redis();
    assert_eq!(redis_command(port, "SET text abc\r\n"), "+OK\r\n");
    let run = bench(
        port,
        &[
            "-c",
            "2",
            "-n",
            "100",
            "--reply",
            "resp",
            "--send",
            r"INCR text\r\n",
            "--weight",
            "1",
            "--send",
            r"LPUSH text x\r\n",
            "--weight",
            "1",
        ],
    );
    assert_eq!(run.code, 1);
    assert_eq!(count(replies(&run), "error"), 100);
    let by = &replies(&run)["errors_by_prefix"];
    assert_eq!(count(by, "ERR") + count(by, "WRONGTYPE"), 100, "{by}");
    assert!(count(by, "ERR") > 20 && count(by, "WRONGTYPE") > 20, "{by}");
    // A line protocol of one's own: --until with --error-prefix.
    let run = bench(
        port,
        &[
            "-c",
            "2",
            "-n",
            "100",
            "--send",
            r"INCR text\r\n",
            "--until",
            r"\r\n",
            "--error-prefix",
            "-",
        ],
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.kind("reply"), 100);
    assert_eq!(replies(&run)["errors_by_prefix"]["-ERR"], 100);
    assert!(
        run.report["first_errors"]["reply"]["received"]
            .as_str()
            .unwrap()
            .starts_with("-ERR value is not an integer")
    );
}

#[test]
fn redis_hit_ratio_of_a_half_filled_key_space_and_a_mix() {
    let (_redis, port) = redis();
    let mut sets = Vec::new();
    for k in (0..KEYS).step_by(2) {
        sets.extend_from_slice(format!("SET k:{k} v{k}\r\n").as_bytes());
    }
    pipe(port, &sets, b"PING\r\n", b"+PONG\r\n");
    assert_eq!(
        redis_command(port, "DBSIZE\r\n"),
        format!(":{}\r\n", KEYS / 2)
    );
    let keys = format!("GET k:{{key:{KEYS}}}\\r\\n");
    let sets = format!("SET other:{{key:{KEYS}}} {{rand:16}}\\r\\n");
    let run = bench(
        port,
        &[
            "-c",
            "4",
            "-n",
            "20000",
            "--pipeline",
            "4",
            "--reply",
            "resp",
            "--seed",
            "7",
            "--send",
            &keys,
            "--weight",
            "9",
            "--send",
            &sets,
            "--weight",
            "1",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(run.u64("messages"), 20000);
    let kinds = run.report["kinds"].as_array().unwrap();
    assert_eq!(kinds.len(), 2);
    let gets = count(&kinds[0], "messages");
    assert_eq!(gets + count(&kinds[1], "messages"), 20000);
    let share = gets as f64 / 20000.0;
    assert!((share - 0.9).abs() < 0.02, "GET share {share}");
    let hit = kinds[0]["replies"]["hit_ratio"].as_f64().unwrap();
    assert!((hit - 0.5).abs() < 0.02, "hit ratio {hit}");
    assert_eq!(
        count(&kinds[1]["replies"], "ok"),
        count(&kinds[1], "messages")
    );
    assert_eq!(kinds[0]["weight"], 9);
    assert!(kinds[1]["latency_us"]["p50"].as_u64().unwrap() > 0);
    // The same seed draws the same keys: the SETs wrote the same number of keys again.
    let written = redis_command(port, "DBSIZE\r\n");
    let run = bench(
        port,
        &[
            "-c",
            "4",
            "-n",
            "20000",
            "--pipeline",
            "4",
            "--reply",
            "resp",
            "--seed",
            "7",
            "--send",
            &keys,
            "--weight",
            "9",
            "--send",
            &sets,
            "--weight",
            "1",
        ],
    );
    assert_eq!(run.code, 0);
    assert_eq!(redis_command(port, "DBSIZE\r\n"), written);
}

#[test]
fn memcached_hits_misses_and_errors() {
    let (_memcached, port) = memcached();
    let mut sets = Vec::new();
    for k in (0..KEYS).step_by(2) {
        sets.extend_from_slice(format!("set k:{k} 0 0 2\r\nv{}\r\n", k % 10).as_bytes());
    }
    sets.extend_from_slice(b"set text 0 0 3\r\nabc\r\n");
    pipe(port, &sets, b"get nothing\r\n", b"END\r\n");
    let keys = format!("get k:{{key:{KEYS}}}\\r\\n");
    let run = bench(
        port,
        &[
            "-c", "4", "-n", "10000", "--reply", "memcache", "--send", &keys,
        ],
    );
    assert_eq!(run.code, 0, "{}", run.report);
    let r = replies(&run);
    assert_eq!(count(r, "ok") + count(r, "miss"), 10000);
    let hit = r["hit_ratio"].as_f64().unwrap();
    assert!((hit - 0.5).abs() < 0.02, "hit ratio {hit}");
    // SERVER_ERROR (a value over -I 1k) and CLIENT_ERROR (incr of text), each with a sample.
    let (_small, port) = memcached_with(&["-I", "1k", "-o", "slab_chunk_max=512"]);
    pipe(
        port,
        b"set text 0 0 3\r\nabc\r\n",
        b"get nothing\r\n",
        b"END\r\n",
    );
    let run = bench(
        port,
        &[
            "-c",
            "2",
            "-n",
            "200",
            "--reply",
            "memcache",
            "--send",
            r"set big:{key:10} 0 0 2000\r\n{rand:2000}\r\n",
            "--send",
            r"incr text 1\r\n",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.report);
    let by = &replies(&run)["errors_by_prefix"];
    assert_eq!(
        count(by, "SERVER_ERROR") + count(by, "CLIENT_ERROR"),
        200,
        "{by}"
    );
    assert!(
        count(by, "SERVER_ERROR") > 50 && count(by, "CLIENT_ERROR") > 50,
        "{by}"
    );
    let sample = run.report["first_errors"]["reply"]["received"]
        .as_str()
        .unwrap();
    assert!(sample.contains("_ERROR "), "{sample}");
}

/// Python's `http.server` over HTTP/1.1 with keep-alive, serving `file.txt` from a temporary
/// directory; `/fail` answers 500, `/close` answers with `Connection: close`, `/chunked`
/// answers in chunks with a trailer.
fn http_server() -> (External, u16, tempfile_dir::Dir) {
    let dir = tempfile_dir::Dir::new();
    std::fs::write(dir.path().join("file.txt"), "hello, world\n".repeat(10)).unwrap();
    let script = r#"
import functools, http.server, sys
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def reply(self, status, body, close=False):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/fail":
            return self.reply(500, b"boom")
        if self.path == "/close":
            return self.reply(200, b"bye", close=True)
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n")
            return
        return super().do_GET()
handler = functools.partial(H, directory=sys.argv[2])
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"#;
    let port = free_port();
    let child = Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is needed");
    let guard = External(child);
    wait_listening(port);
    (guard, port, dir)
}

/// A temporary directory, removed on drop.
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!(
                "tcpool-http-{}-{}",
                std::process::id(),
                super::free_port()
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn http_keep_alive_errors_by_status_chunks_and_head() {
    let (_server, port, _dir) = http_server();
    let get = |path: &str, extra: &[&str]| {
        let send = format!(r"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut args = vec!["-c", "2", "-n", "200", "--reply", "http1", "--send", &send];
        args.extend_from_slice(extra);
        bench(port, &args)
    };
    let run = get("/file.txt", &["--pipeline", "2"]);
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(count(replies(&run), "ok"), 200);
    assert_eq!(run.u64("reconnects"), 0);
    let run = get("/chunked", &[]);
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(count(replies(&run), "ok"), 200);
    let run = get("/fail", &[]);
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(replies(&run)["errors_by_prefix"]["500"], 200);
    assert!(
        run.report["first_errors"]["reply"]["received"]
            .as_str()
            .unwrap()
            .starts_with(r"HTTP/1.1 500 ")
    );
    let run = get("/missing", &["--ok-status", "200-499"]);
    assert_eq!(run.code, 0, "{}", run.report);
    let run = bench(
        port,
        &[
            "-c",
            "2",
            "-n",
            "100",
            "--reply",
            "http1",
            "--send",
            r"HEAD /file.txt HTTP/1.1\r\nHost: x\r\n\r\n",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(count(replies(&run), "ok"), 100);
}

#[test]
fn http_connection_close_is_reopened_and_counted() {
    let (_server, port, _dir) = http_server();
    let run = bench(
        port,
        &[
            "-c",
            "2",
            "-n",
            "50",
            "--pipeline",
            "2",
            "--reply",
            "http1",
            "--send",
            r"GET /close HTTP/1.1\r\nHost: x\r\n\r\n",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(run.u64("messages"), 50);
    assert_eq!(run.u64("sent"), 50);
    // Every response closed its connection; the last on each of the two needed no new one.
    assert_eq!(run.u64("reconnects"), 48, "{}", run.report);
    assert_eq!(run.u64("connected"), 2);
}

#[test]
fn a_hostile_length_ends_the_connection_unallocated() {
    let server = BrokenServer::start(|mut stream| {
        let mut buf = [0u8; 64];
        if stream.read(&mut buf).is_ok() {
            let _ = stream.write_all(b"$9000000000000\r\n");
            let _ = stream.read(&mut buf);
        }
    });
    let run = bench(
        server.addr,
        &[
            "-c",
            "2",
            "-d",
            "1",
            "--reply",
            "resp",
            "--send",
            r"GET k\r\n",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(run.kind("protocol"), 2, "{}", run.report);
    let first = &run.report["first_errors"]["protocol"];
    assert_eq!(first["received"], r"$9000000000000\r\n");
    assert!(
        first["message"].as_str().unwrap().contains("limit"),
        "{first}"
    );
    // A limit of one's own.
    let run = bench(
        server.addr,
        &[
            "-c",
            "1",
            "-d",
            "1",
            "--reply",
            "resp",
            "--max-reply",
            "1KiB",
            "--send",
            r"GET k\r\n",
        ],
    );
    assert_eq!(run.kind("protocol"), 1, "{}", run.report);
}

#[test]
fn framing_flags_that_cannot_work_are_usage_errors() {
    let cases: [(&[&str], &str); 8] = [
        (
            &[
                "--send", "x", "--weight", "1", "--weight", "2", "--until", "x",
            ],
            "--weight",
        ),
        (
            &["--send", "x", "--reply", "resp", "--ok-status", "200"],
            "--ok-status",
        ),
        (
            &["--send", "x", "--reply", "http1", "--ok-status", "300-200"],
            "empty",
        ),
        (
            &["--send", "x", "--reply", "resp", "--expect", "x"],
            "cannot be used",
        ),
        (&["--send", "{key:0}", "--reply", "resp"], "at least 1 key"),
        (
            &["--send", "{rand:2000000}", "--reply", "resp"],
            "a length from 1",
        ),
        (
            &["--send", "x", "--reply", "resp", "--max-reply", "0"],
            "at least 1 byte",
        ),
        (&["--send", "x", "--reply", "gopher"], "gopher"),
    ];
    for (args, message) in cases {
        let out = Command::new(tcpool_bin())
            .arg("bench")
            .args(args)
            .arg("127.0.0.1:1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn a_file_of_requests_is_a_weighted_mix() {
    let (_redis, port) = redis();
    let dir = tempfile_dir::Dir::new();
    let path = dir.path().join("mix.txt");
    std::fs::write(
        &path,
        "# GETs and SETs\n3 GET k:{key:100}\\r\\n\n\n1 SET k:{key:100} {rand:8}\\r\\n\n",
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let run = bench(
        port,
        &[
            "-c",
            "2",
            "-n",
            "4000",
            "--reply",
            "resp",
            "--requests",
            path,
        ],
    );
    assert_eq!(run.code, 0, "{}", run.report);
    let kinds = run.report["kinds"].as_array().unwrap();
    assert_eq!(kinds.len(), 2);
    assert_eq!(kinds[0]["request"], r"GET k:{key:100}\r\n");
    assert_eq!(
        (kinds[0]["weight"].as_u64(), kinds[1]["weight"].as_u64()),
        (Some(3), Some(1))
    );
    let share = count(&kinds[0], "messages") as f64 / 4000.0;
    assert!((share - 0.75).abs() < 0.03, "GET share {share}");
    std::fs::write(dir.path().join("bad.txt"), "0 GET k\\r\\n\n").unwrap();
    let bad = dir.path().join("bad.txt");
    let out = Command::new(tcpool_bin())
        .args([
            "bench",
            "--reply",
            "resp",
            "--requests",
            bad.to_str().unwrap(),
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.txt:1"));
}

#[test]
fn redis_resp3_after_hello_is_framed() {
    let (_redis, port) = redis();
    assert_eq!(redis_command(port, "HSET h a 1 b 2\r\n"), ":2\r\n");
    assert_eq!(redis_command(port, "ZADD z 1.5 m\r\n"), ":1\r\n");
    // HELLO 3 answers with a map; after it a missing key is RESP3's null `_`, HGETALL a map
    // and ZSCORE a double `,1.5`.
    let run = bench(
        port,
        &[
            "-c",
            "2",
            "-n",
            "300",
            "--reply",
            "resp",
            "--first-message",
            r"HELLO 3\r\n",
            "--send",
            r"GET missing\r\n",
            "--send",
            r"HGETALL h\r\n",
            "--send",
            r"ZSCORE z m\r\n",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.report);
    let kinds = run.report["kinds"].as_array().unwrap();
    assert_eq!(
        count(&kinds[0]["replies"], "miss"),
        count(&kinds[0], "messages")
    );
    assert_eq!(
        count(&kinds[1]["replies"], "ok"),
        count(&kinds[1], "messages")
    );
    assert_eq!(
        count(&kinds[2]["replies"], "ok"),
        count(&kinds[2], "messages")
    );
}
