//! The datagram faults of `serve --udp` (`udp-drop`, `udp-dup`, ...), seen by a plain UDP
//! socket in a paced closed loop: what it loses, gets twice, cut, flipped, late or out of
//! order, that the same seed loses the same datagrams, and that a fault added and cleared over
//! the admin endpoint changes what a running client sees.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use tcpool::server::operator::admin::{Admin, Options, Token};
use tcpool::server::{Config, Running, Server, bind};

use crate::admin::parse_with_prometheus_client;
use crate::support::{IO_TIMEOUT, connect, init_logger, round_trip};

const TOKEN: &str = "udp-faults-token";

/// A server with `--udp`, these faults and seed, and its admin endpoint behind a token.
struct Served {
    running: Option<Running>,
    shutdown: tcpool::Shutdown,
    admin: Option<Admin>,
    udp: SocketAddr,
}

impl Served {
    fn start(faults: &[&str], seed: u64) -> Served {
        init_logger();
        let server = Server::new(
            bind("127.0.0.1:0".parse().unwrap()).unwrap(),
            Config {
                udp: Some(0),
                faults: faults.iter().map(|f| f.parse().unwrap()).collect(),
                seed: Some(seed),
                ..Config::default()
            },
        );
        let options = Options {
            token: Some(Token::new(TOKEN).unwrap()),
            ..Options::default()
        };
        let admin = Admin::start_with(
            bind("127.0.0.1:0".parse().unwrap()).unwrap(),
            &server,
            options,
        )
        .unwrap();
        let shutdown = server.shutdown();
        let running = server.start().unwrap();
        let udp = running.udp_addr().expect("a UDP address");
        Served {
            running: Some(running),
            shutdown,
            admin: Some(admin),
            udp,
        }
    }

    /// One admin request with the token; the status and body.
    fn admin(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let addr = self.admin.as_ref().unwrap().local_addr();
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKEN}\r\n\
             Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = answer[9..12].parse().unwrap();
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, body.to_owned())
    }

    /// `tcpool_udp_faulted_total{kind}` from `/metrics`.
    fn faulted(&self, kind: &str) -> f64 {
        let (status, text) = self.admin("GET", "/metrics", "");
        assert_eq!(status, 200, "{text}");
        let m = parse_with_prometheus_client(&text);
        let key = format!("tcpool_udp_faulted_total{{kind=\"{kind}\"}}");
        *m.get(&key).unwrap_or_else(|| panic!("no {key}: {m:?}"))
    }

    /// Waits until `tcpool_udp_faulted_total{kind}` is `want` (a worker adds its counts at
    /// the end of a batch, which may end after its last reply was read), at most
    /// `IO_TIMEOUT`.
    fn expect_faulted(&self, kind: &str, want: f64) {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let got = self.faulted(kind);
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{kind}: {got}, not {want}");
            std::thread::sleep(Duration::from_millis(10));
        }
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

/// A request: bytes 8..16 its sequence number (big-endian), a filler after, 32 bytes.
fn request(seq: u64) -> Vec<u8> {
    let mut bytes = vec![0; 32];
    bytes[8..16].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in bytes[16..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8);
    }
    bytes
}

fn seq_of(reply: &[u8]) -> Option<u64> {
    reply
        .get(8..16)
        .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
}

/// What a closed loop saw.
#[derive(Debug, Default)]
struct Seen {
    /// Each reply by sequence number, in the order they came: when it was sent, when its
    /// reply came.
    replies: Vec<(u64, Instant, Instant)>,
    /// Sequence numbers that never came back.
    lost: Vec<u64>,
    /// Replies that came a second time.
    duplicates: usize,
}

/// Sends `count` requests from `socket`, at most `window` in flight; one frees its place when
/// a later one is answered, or after `wait` (its reply is still taken if it comes later, until
/// a last quarter-second after the end). Bounded: at most a minute.
fn closed_loop(
    socket: &UdpSocket,
    to: SocketAddr,
    count: u64,
    window: usize,
    wait: Duration,
) -> Seen {
    socket
        .set_read_timeout(Some(Duration::from_millis(2)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Seen::default();
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let mut waiting: HashMap<u64, Instant> = HashMap::new();
    let mut got: HashSet<u64> = HashSet::new();
    let mut next = 0;
    let mut buf = [0; 2048];
    let mut last_reply = Instant::now();
    loop {
        assert!(
            Instant::now() < deadline,
            "the loop ran a minute: {next} of {count} sent"
        );
        while waiting.len() < window && next < count {
            let now = Instant::now();
            socket.send_to(&request(next), to).unwrap();
            sent_at.insert(next, now);
            waiting.insert(next, now);
            next += 1;
        }
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            let now = Instant::now();
            last_reply = now;
            let seq = seq_of(&buf[..n]).expect("a reply of 16 bytes or more");
            // The server answers a source in order: one not answered before a later one
            // was is lost, or held by a fault; either way its place is free. (Pacing only:
            // a reply that comes later is still taken.)
            waiting.retain(|&s, _| s > seq);
            if got.insert(seq) {
                seen.replies.push((seq, sent_at[&seq], now));
            } else {
                seen.duplicates += 1;
            }
        }
        let now = Instant::now();
        waiting.retain(|_, at| now.duration_since(*at) < wait);
        if next == count
            && waiting.is_empty()
            && now.duration_since(last_reply) > Duration::from_millis(250)
        {
            break;
        }
    }
    seen.lost = (0..count).filter(|s| !got.contains(s)).collect();
    seen
}

fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// Sends `count` requests one at a time and returns each with its reply (`None`: none within
/// `wait`).
fn one_by_one(served: &Served, count: u64, wait: Duration) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let socket = client();
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0; 2048];
    (0..count)
        .map(|seq| {
            let sent = request(seq);
            socket.send_to(&sent, served.udp).unwrap();
            let reply = socket
                .recv_from(&mut buf)
                .ok()
                .map(|(n, _)| buf[..n].to_vec());
            (sent, reply)
        })
        .collect()
}

#[test]
fn udp_drop_loses_a_tenth_and_the_same_seed_loses_the_same_datagrams() {
    let run = || {
        let served = Served::start(&["udp-drop=0.1"], 42);
        let seen = closed_loop(
            &client(),
            served.udp,
            20_000,
            64,
            Duration::from_millis(100),
        );
        assert_eq!(seen.duplicates, 0);
        served.expect_faulted("drop-reply", seen.lost.len() as f64);
        served.expect_faulted("drop-request", 0.0);
        seen.lost
    };
    let first = run();
    let loss = first.len() as f64 / 20_000.0 * 100.0;
    eprintln!("udp-drop=0.1: {} of 20,000 lost ({loss:.2} %)", first.len());
    assert!((8.5..=11.5).contains(&loss), "{loss:.2} % lost");
    assert_eq!(run(), first, "the same seed, the same datagrams lost");
}

#[test]
fn udp_drop_of_requests_is_not_counted_as_a_reply_drop() {
    let served = Served::start(&["udp-drop=0.3,dir=request"], 5);
    let seen = closed_loop(&client(), served.udp, 2_000, 32, Duration::from_millis(20));
    let lost = seen.lost.len() as f64;
    assert!((400.0..800.0).contains(&lost), "{lost} of 2,000 lost");
    served.expect_faulted("drop-request", lost);
    served.expect_faulted("drop-reply", 0.0);
}

#[test]
fn udp_dup_sends_a_fifth_of_the_replies_twice() {
    let served = Served::start(&["udp-dup=0.2"], 9);
    let seen = closed_loop(&client(), served.udp, 5_000, 64, Duration::from_millis(50));
    assert!(seen.lost.is_empty(), "{} lost", seen.lost.len());
    let share = seen.duplicates as f64 / 5_000.0;
    eprintln!(
        "udp-dup=0.2: {} of 5,000 came twice ({:.3})",
        seen.duplicates, share
    );
    assert!((0.17..=0.23).contains(&share), "{share}");
    served.expect_faulted("dup", seen.duplicates as f64);
}

#[test]
fn udp_truncate_cuts_every_reply_to_its_first_bytes() {
    let served = Served::start(&["udp-truncate=8"], 1);
    for (sent, reply) in one_by_one(&served, 50, IO_TIMEOUT) {
        let reply = reply.expect("every reply comes");
        assert_eq!(reply, sent[..8]);
    }
    served.expect_faulted("truncate", 50.0);
}

#[test]
fn udp_corrupt_flips_one_byte_and_never_grows_a_reply() {
    let served = Served::start(&["udp-corrupt=0.5"], 3);
    let mut corrupted = 0;
    for (sent, reply) in one_by_one(&served, 200, IO_TIMEOUT) {
        let reply = reply.expect("every reply comes");
        assert_eq!(reply.len(), sent.len(), "never larger, never cut");
        let differ = sent.iter().zip(&reply).filter(|(a, b)| a != b).count();
        assert!(differ <= 1, "{differ} bytes differ");
        corrupted += differ;
    }
    assert!((60..=140).contains(&corrupted), "{corrupted} of 200");
    served.expect_faulted("corrupt", corrupted as f64);
}

#[test]
fn udp_delay_holds_every_reply_at_least_its_delay() {
    let served = Served::start(&["udp-delay=50ms"], 1);
    let seen = closed_loop(&client(), served.udp, 200, 16, Duration::from_secs(2));
    assert!(seen.lost.is_empty(), "{} lost", seen.lost.len());
    for &(seq, sent, came) in &seen.replies {
        let took = came.duration_since(sent);
        assert!(
            took >= Duration::from_millis(50),
            "#{seq} came after {took:?}"
        );
    }
    served.expect_faulted("delay", 200.0);
}

#[test]
fn udp_reorder_shuffles_the_replies_and_loses_none() {
    let served = Served::start(&["udp-reorder=8"], 1);
    let seen = closed_loop(&client(), served.udp, 2_000, 64, Duration::from_secs(1));
    assert!(seen.lost.is_empty(), "{} lost", seen.lost.len());
    assert_eq!(seen.replies.len(), 2_000);
    let mut highest = 0;
    let mut out_of_order = 0;
    for &(seq, _, _) in &seen.replies {
        if seq < highest {
            out_of_order += 1;
        }
        highest = highest.max(seq);
    }
    eprintln!("udp-reorder=8: {out_of_order} of 2,000 replies came after a later one");
    assert!(out_of_order > 0);
    served.expect_faulted("reorder", 2_000.0);
}

#[test]
fn udp_rate_drops_the_replies_above_it_and_counts_them() {
    let began = Instant::now();
    let served = Served::start(&["udp-rate=200"], 1);
    let seen = closed_loop(&client(), served.udp, 2_000, 32, Duration::from_millis(20));
    let elapsed = began.elapsed().as_secs_f64();
    let answered = seen.replies.len() as f64;
    // Every datagram answered or counted.
    served.expect_faulted("rate", 2_000.0 - answered);
    eprintln!("udp-rate=200: {answered} of 2,000 answered in {elapsed:.2} s, the rest dropped");
    // A second's worth at once, then 200 a second: never more.
    assert!(answered >= 200.0, "{answered}");
    assert!(
        answered <= 200.0 + 200.0 * elapsed + 1.0,
        "{answered} in {elapsed:.2} s"
    );
}

#[test]
fn a_fault_added_and_cleared_over_http_changes_what_a_running_client_sees() {
    let served = Served::start(&[], 1);
    let socket = client();
    let wait = Duration::from_millis(20);
    assert!(
        closed_loop(&socket, served.udp, 300, 16, wait)
            .lost
            .is_empty()
    );

    let (status, body) = served.admin("POST", "/faults", "udp-drop=1");
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("\"spec\":\"udp-drop=1\""), "{body}");
    let seen = closed_loop(&socket, served.udp, 200, 16, wait);
    assert_eq!(seen.lost.len(), 200);
    served.expect_faulted("drop-reply", 200.0);
    // A TCP session never gets a datagram fault.
    let tcp = served.running.as_ref().unwrap().local_addr();
    assert_eq!(round_trip(&mut connect(tcp), b"over tcp\n"), b"over tcp\n");
    let (_, listed) = served.admin("GET", "/faults", "");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["kind"], "udp-drop");
    assert_eq!(listed[0]["datagrams"], 200, "{listed}");
    assert_eq!(listed[0]["sessions"], 0, "{listed}");

    let (status, body) = served.admin("DELETE", "/faults/1", "");
    assert_eq!(status, 200, "{body}");
    assert!(
        closed_loop(&socket, served.udp, 300, 16, wait)
            .lost
            .is_empty()
    );
    let (status, body) = served.admin("POST", "/faults", "udp-drop=1.5");
    assert_eq!(status, 400);
    assert!(body.contains("not a probability"), "{body}");
}
