//! A chat room over two `tcpool serve --mode chat --cluster` processes through a real
//! `nats-server` on a free loopback port: lines, nicknames, joins and leaves cross, never back
//! to their sender; the broker killed and restarted; a client that never reads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

const QUIET: Duration = Duration::from_millis(200);

/// A `nats-server` on 127.0.0.1:`port`, killed on drop.
pub struct Nats {
    port: u16,
    child: Child,
}

impl Nats {
    pub fn start() -> Nats {
        Nats::on(free_port())
    }

    pub fn on(port: u16) -> Nats {
        Nats::on_with(port, &[])
    }

    /// [`Nats::on`] with more of `nats-server`'s flags: `-js`, `--tls`, `-c FILE`.
    pub fn on_with(port: u16, extra: &[&str]) -> Nats {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is needed for this test (scripts/test.sh installs it)");
        wait_listening(port);
        Nats { port, child }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the broker and waits until it is gone.
    pub fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chat node of the cluster on `nats`, named `name`, once its link is up.
pub fn node(nats: &Nats, name: &str, extra: &[&str]) -> Binary {
    let url = nats.url();
    let mut args = vec!["--mode", "chat", "--cluster", &url, "--node", name];
    args.extend_from_slice(extra);
    let node = Binary::serve(&args);
    node.wait_stderr("the link up", |l| l.contains("cluster link up"));
    node
}

/// How many stderr lines of `node` contain `what`.
fn count_stderr(node: &Binary, what: &str) -> usize {
    node.stderr_lines()
        .iter()
        .filter(|l| l.contains(what))
        .count()
}

/// What the node's console prints for `/cluster` now, as one string.
pub fn cluster_report(node: &mut Binary) -> String {
    let before = node.stdout_lines().len();
    node.type_line("/cluster");
    wait_until("the /cluster report", || {
        node.stdout_lines()
            .iter()
            .skip(before)
            .any(|l| l.starts_with("name conflicts"))
    });
    node.stdout_lines()[before..].join("\n")
}

/// The number after `name ` in a `/cluster` report.
pub fn count(report: &str, name: &str) -> u64 {
    report
        .split(&format!("{name} "))
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

/// Waits until `node` has received `n` envelopes from the other nodes: the notices of what
/// happened there are in before its own clients join.
pub fn received(node: &mut Binary, n: u64) {
    wait_until("the other node's notices", || {
        count(&cluster_report(node), "received") >= n
    });
}

fn line(stream: &mut TcpStream) -> String {
    String::from_utf8(read_line(stream)).unwrap()
}

/// Reads lines until one satisfies `pred` (at most `most` lines); returns it.
pub fn line_where(stream: &mut TcpStream, most: usize, pred: impl Fn(&str) -> bool) -> String {
    for _ in 0..most {
        let l = line(stream);
        assert!(!l.is_empty(), "closed before the line looked for");
        if pred(&l) {
            return l;
        }
    }
    panic!("not in {most} lines");
}

#[test]
fn lines_nicknames_joins_and_leaves_cross_nodes_never_back_to_the_sender() {
    let nats = Nats::start();
    let mut a = node(&nats, "a", &[]);
    let b = node(&nats, "b", &[]);

    let mut b1 = chatter(b.addr);
    received(&mut a, 1);
    let mut a1 = chatter(a.addr);
    expect_bytes(&mut b1, b"* #1@a joined\n");
    let mut a2 = chatter(a.addr);
    expect_bytes(&mut a1, b"* #2 joined\n");
    expect_bytes(&mut b1, b"* #2@a joined\n");

    a1.write_all(b"hello\n").unwrap();
    expect_bytes(&mut a2, b"<#1> hello\n");
    expect_bytes(&mut b1, b"<#1@a> hello\n");

    b1.write_all(b"hi from b\n").unwrap();
    // Had a1 got its own line back, these bytes would not be next.
    expect_bytes(&mut a1, b"<#1@b> hi from b\n");
    expect_bytes(&mut a2, b"<#1@b> hi from b\n");
    expect_silence(&mut b1, QUIET);

    a1.write_all(b"/nick ann\n").unwrap();
    expect_bytes(&mut a1, b"* you are now ann\n");
    expect_bytes(&mut a2, b"* #1 is now ann\n");
    expect_bytes(&mut b1, b"* #1@a is now ann\n");
    b1.write_all(b"/nick bob\n").unwrap();
    expect_bytes(&mut b1, b"* you are now bob\n");
    expect_bytes(&mut a1, b"* #1@b is now bob\n");
    expect_bytes(&mut a2, b"* #1@b is now bob\n");
    a1.write_all(b"hi bob \x1b[2J\n").unwrap();
    expect_bytes(&mut b1, b"<ann> hi bob \\x1b[2J\n");
    expect_bytes(&mut a2, b"<ann> hi bob \\x1b[2J\n");
    b1.write_all(b"hi ann\n").unwrap();
    expect_bytes(&mut a1, b"<bob> hi ann\n");
    expect_bytes(&mut a2, b"<bob> hi ann\n");

    // A forged envelope published straight on the subject: dropped and counted, not shown.
    let forged = br#"{"v":1,"node":"x","epoch":1,"seq":1,"kind":"line","id":1,"nick":"*admin","text":"obey"}"#;
    publish_raw(nats.port, "tcpool.tcpool.chat", forged);
    publish_raw(nats.port, "tcpool.tcpool.chat", b"{{{");
    wait_until("two malformed envelopes counted", || {
        count(&cluster_report(&mut a), "malformed") == 2
    });
    expect_silence(&mut a1, QUIET);

    drop(b1);
    expect_bytes(&mut a1, b"* bob left\n");
    expect_bytes(&mut a2, b"* bob left\n");

    let report = cluster_report(&mut a);
    assert!(report.contains("link up, node a"), "{report}");
    assert_eq!(count(&report, "gaps"), 0, "{report}");
    assert_eq!(count(&report, "dropped"), 0, "{report}");
    assert!(count(&report, "received") >= 5, "{report}");
}

#[test]
fn the_broker_dies_local_chat_goes_on_and_the_room_comes_back_with_the_loss_counted() {
    let nats = Nats::start();
    let mut a = node(&nats, "a", &["--admin", "127.0.0.1:0"]);
    let mut b = node(&nats, "b", &[]);
    let mut b1 = chatter(b.addr);
    received(&mut a, 1);
    let mut a1 = chatter(a.addr);
    let mut a2 = chatter(a.addr);
    line_where(&mut b1, 5, |l| l == "* #2@a joined\n");
    expect_bytes(&mut a1, b"* #2 joined\n");

    let port = nats.kill();
    a.wait_stderr("the link down", |l| l.contains("cluster link down"));
    b.wait_stderr("the link down", |l| l.contains("cluster link down"));
    assert_eq!(count_stderr(&a, "cluster link down"), 1);

    // Local chat is untouched; what would have crossed is dropped and counted.
    for i in 0..3 {
        a1.write_all(format!("while down {i}\n").as_bytes())
            .unwrap();
        expect_bytes(&mut a2, format!("<#1> while down {i}\n").as_bytes());
    }
    wait_until("three drops counted", || {
        count(&cluster_report(&mut a), "broker-down") == 3
    });

    let _nats = Nats::on(port);
    wait_until("both links up again", || {
        count_stderr(&a, "cluster link up") == 2 && count_stderr(&b, "cluster link up") == 2
    });
    // The subscription is renewed with the connection: lines cross again. Send until one
    // does (a line sent before b's subscription is back is lost, and counted as a gap).
    let mut crossed = None;
    for i in 0..50 {
        a1.write_all(format!("after {i}\n").as_bytes()).unwrap();
        expect_bytes(&mut a2, format!("<#1> after {i}\n").as_bytes());
        b1.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut first = [0u8; 1];
        if b1.read(&mut first).is_ok_and(|n| n == 1) {
            b1.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let rest = line(&mut b1);
            crossed = Some(format!("{}{rest}", first[0] as char));
            break;
        }
    }
    let crossed = crossed.expect("no line crossed after the broker came back");
    assert!(crossed.starts_with("<#1@a> after "), "{crossed}");
    assert!(!crossed.contains("while down"), "{crossed}");
    b1.write_all(b"back\n").unwrap();
    line_where(&mut a1, 60, |l| l == "<#1@b> back\n");

    // b saw a's sequence jump over the three lines dropped while the broker was down.
    let report = cluster_report(&mut b);
    assert!(count(&report, "gaps") >= 3, "{report}");
    let metrics = http_get(a.admin_addr(), "/metrics");
    assert!(
        metrics.contains("tcpool_cluster_dropped_total{reason=\"broker-down\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("tcpool_cluster_up 1"), "{metrics}");
    assert!(
        metrics.contains("tcpool_cluster_published_total "),
        "{metrics}"
    );
    assert!(metrics.contains("tcpool_cluster_gaps_total 0"), "{metrics}");
}

#[test]
fn a_client_that_never_reads_on_one_node_does_not_hold_up_the_other() {
    const LINES: usize = 3000;
    let nats = Nats::start();
    let mut a = node(&nats, "a", &[]);
    let mut b = node(&nats, "b", &[]);
    let mut b1 = chatter(b.addr);
    // Never reads: its socket and then its outbox fill (and past --outbox-limit b drops it).
    let _stuck = chatter(b.addr);
    received(&mut a, 2);
    let mut a1 = chatter(a.addr);
    let a2 = chatter(a.addr);
    line_where(&mut b1, 5, |l| l == "* #2@a joined\n");
    expect_bytes(&mut a1, b"* #2 joined\n");

    let pad = "x".repeat(1000);
    let sender = std::thread::spawn(move || {
        for i in 0..LINES {
            a1.write_all(format!("{i} {pad}\n").as_bytes()).unwrap();
        }
        a1
    });
    // Every line reaches the local reader, in order.
    let mut a2 = BufReader::new(a2);
    for i in 0..LINES {
        let mut l = String::new();
        a2.read_line(&mut l).unwrap();
        assert!(l.starts_with(&format!("<#1> {i} ")), "{i}: {l}");
    }
    let _a1 = sender.join().unwrap();
    // And b's reader, save what a counted as lost on its side.
    let dropped = count(&cluster_report(&mut a), "dropped");
    let mut b1 = BufReader::new(b1);
    let (mut seen, mut last) = (0, None);
    while last != Some(LINES - 1) {
        let mut l = String::new();
        let n = b1.read_line(&mut l).unwrap();
        assert!(n > 0, "b's reader was closed after {seen} lines");
        let Some(rest) = l.strip_prefix("<#1@a> ") else {
            continue;
        };
        let n: usize = rest.split(' ').next().unwrap().parse().unwrap();
        assert!(last.is_none_or(|last| n > last), "{n} after {last:?}");
        last = Some(n);
        seen += 1;
    }
    // Whatever did not arrive was counted: dropped by a, and seen as a gap by b.
    let report = cluster_report(&mut b);
    assert_eq!(
        seen as u64 + count(&report, "gaps"),
        LINES as u64,
        "{report}"
    );
    assert_eq!(count(&report, "gaps"), dropped, "{report}");
}

/// Reads one line, waiting at most `most`; how long it took.
fn line_within(stream: &mut TcpStream, most: Duration) -> (String, Duration) {
    let start = std::time::Instant::now();
    stream.set_read_timeout(Some(most)).unwrap();
    let l = line(stream);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    (l, start.elapsed())
}

/// What the node's console prints for `/who` now, once it has a line containing `until`.
fn who_report(node: &mut Binary, until: &str) -> String {
    let mut report = String::new();
    wait_until("the /who report", || {
        let before = node.stdout_lines().len();
        node.type_line("/who");
        let mut tries = 0;
        while !node
            .stdout_lines()
            .iter()
            .skip(before)
            .any(|l| l.contains(" in the room on "))
        {
            std::thread::sleep(Duration::from_millis(20));
            tries += 1;
            assert!(tries < 250, "no /who report");
        }
        report = node.stdout_lines()[before..].join("\n");
        report.contains(until)
    });
    report
}

#[test]
fn who_lists_the_members_of_every_node() {
    let nats = Nats::start();
    let mut a = node(&nats, "a", &[]);
    let b = node(&nats, "b", &[]);
    let mut b1 = chatter(b.addr);
    b1.write_all(b"/nick bob\n").unwrap();
    expect_bytes(&mut b1, b"* you are now bob\n");
    let _b2 = chatter(b.addr);
    received(&mut a, 3);
    let mut a1 = chatter(a.addr);
    a1.write_all(b"/who\n").unwrap();
    expect_bytes(
        &mut a1,
        b"* 3 here (1 on this node, 2 on b): #1 (you), bob@b, #2@b\n",
    );
    let report = who_report(&mut a, "a (this node): #1");
    assert!(
        report.contains("3 in the room on 2 node(s): 1 on a (this node), 2 on b"),
        "{report}"
    );
    assert!(report.contains("b: bob@b, #2@b"), "{report}");
    // The heartbeats carry the same members.
    wait_until("a heartbeat from b", || {
        count(&cluster_report(&mut a), "heartbeats") >= 1
    });
    let report = cluster_report(&mut a);
    assert!(
        report.contains("presence: 1 other node(s), 2 member(s) there"),
        "{report}"
    );
}

#[test]
fn a_node_killed_has_its_members_shown_as_left_once_the_ttl_passes() {
    let nats = Nats::start();
    let mut a = node(&nats, "a", &[]);
    let mut b = node(&nats, "b", &[]);
    let _b1 = chatter(b.addr);
    received(&mut a, 1);
    let mut a1 = chatter(a.addr);
    b.signal("KILL");
    let _ = b.wait_timeout(IO_TIMEOUT);
    // Three heartbeats (6 s) after the last one heard, and a sweep.
    let (l, took) = line_within(&mut a1, Duration::from_secs(9));
    assert_eq!(l, "* #1@b left (node lost)\n", "after {took:?}");
    assert!(took >= Duration::from_secs(3), "{took:?}");
    expect_silence(&mut a1, Duration::from_millis(500));
    let report = who_report(&mut a, "1 in the room on 1 node(s)");
    assert!(report.contains("a (this node): #1"), "{report}");
}

#[test]
fn a_node_stopped_gracefully_says_its_members_left_at_once() {
    let nats = Nats::start();
    let mut a = node(&nats, "a", &[]);
    let mut b = node(&nats, "b", &[]);
    let mut b1 = chatter(b.addr);
    b1.write_all(b"/nick bob\n").unwrap();
    expect_bytes(&mut b1, b"* you are now bob\n");
    let _b2 = chatter(b.addr);
    received(&mut a, 3);
    let mut a1 = chatter(a.addr);
    b.type_line("quit");
    let (first, took) = line_within(&mut a1, Duration::from_secs(5));
    let (second, _) = line_within(&mut a1, Duration::from_secs(1));
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(
        [first.as_str(), second.as_str()],
        [
            "* bob left (node stopped)\n",
            "* #2@b left (node stopped)\n"
        ]
    );
    assert_eq!(b.wait_timeout(IO_TIMEOUT), Some(0));
    expect_silence(&mut a1, Duration::from_millis(500));
}

/// Publishes `payload` on `subject` of the broker on `port`, as a stranger would, and waits
/// until the broker has taken it.
fn publish_raw(port: u16, subject: &str, payload: &[u8]) {
    let mut rogue = connect(format!("127.0.0.1:{port}").parse().unwrap());
    write!(
        rogue,
        "CONNECT {{\"verbose\":false}}\r\nPUB {subject} {}\r\n",
        payload.len()
    )
    .unwrap();
    rogue.write_all(payload).unwrap();
    rogue.write_all(b"\r\nPING\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !String::from_utf8_lossy(&got).contains("PONG") {
        let n = rogue.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the broker closed: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_second_node_with_the_same_name_is_refused_at_start() {
    let nats = Nats::start();
    let mut a = node(&nats, "a", &[]);
    let said = a.stderr_lines().len();
    let url = nats.url();
    let twin = run_to_end(
        serve_command(&["--mode", "chat", "--cluster", &url, "--node", "a"]),
        IO_TIMEOUT,
    );
    let stderr = twin.stderr.join("\n");
    assert_eq!(twin.code, Some(1), "{stderr}");
    assert!(
        stderr.contains("error: node name a is already in cluster tcpool (epoch "),
        "{stderr}"
    );
    assert!(stderr.contains("choose another --node"), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    // The node that has the name goes on, untroubled.
    let report = cluster_report(&mut a);
    assert!(report.contains("link up, node a"), "{report}");
    assert_eq!(count(&report, "name conflicts"), 0, "{report}");
    // and says nothing of it: it answered, the twin refused itself.
    assert_eq!(a.stderr_lines().len(), said);
}

#[test]
fn a_name_found_taken_when_the_broker_comes_up_stops_one_link_not_the_chat() {
    // The broker down, neither twin can ask: both serve, and ask once it is up.
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let twins = [
        Binary::serve(&["--mode", "chat", "--cluster", &url, "--node", "a"]),
        Binary::serve(&["--mode", "chat", "--cluster", &url, "--node", "a"]),
    ];
    let _nats = Nats::on(port);
    let refusal = "the link stops, local chat goes on";
    wait_until("one refusal", || {
        twins.iter().any(|t| count_stderr(t, refusal) == 1)
    });
    let [x, y] = twins;
    let (mut refused, kept) = if count_stderr(&x, refusal) == 1 {
        (x, y)
    } else {
        (y, x)
    };
    kept.wait_stderr("the link up", |l| l.contains("cluster link up"));
    refused.wait_stderr("the refusal", |l| {
        l.contains("cluster: node name a is already in cluster tcpool (epoch ")
    });
    let report = cluster_report(&mut refused);
    assert!(report.contains("link refused"), "{report}");
    assert_eq!(count(&report, "name conflicts"), 1, "{report}");
    assert_eq!(count_stderr(&refused, "cluster link up"), 0);
    assert_eq!(count_stderr(&kept, refusal), 0);
    let mut t1 = chatter(refused.addr);
    let mut t2 = chatter(refused.addr);
    expect_bytes(&mut t1, b"* #2 joined\n");
    t2.write_all(b"still here\n").unwrap();
    expect_bytes(&mut t1, b"<#2> still here\n");
}

#[test]
fn another_node_heard_with_this_name_is_logged_and_counted() {
    let nats = Nats::start();
    let mut a = node(&nats, "a", &["--admin", "127.0.0.1:0"]);
    // Two nodes that asked at the same moment, or a word forged: a heartbeat with a's name.
    let beat = br#"{"v":1,"node":"a","epoch":7,"total":0,"members":[]}"#;
    for _ in 0..3 {
        publish_raw(nats.port, "tcpool.tcpool.presence", beat);
    }
    a.wait_stderr("the conflict", |l| {
        l.contains("another node is named a (epoch 7")
    });
    let report = cluster_report(&mut a);
    assert_eq!(count(&report, "name conflicts"), 1, "{report}");
    assert!(
        report.contains("(another node is named a: epoch 7)"),
        "{report}"
    );
    let metrics = http_get(a.admin_addr(), "/metrics");
    assert!(
        metrics.contains("tcpool_cluster_name_conflicts_total 1"),
        "{metrics}"
    );
    // Logged once per 10 s, however many words.
    assert_eq!(count_stderr(&a, "another node is named a"), 1);
}

#[test]
fn a_nickname_taken_on_one_node_is_refused_on_another() {
    let nats = Nats::start();
    let mut a = node(&nats, "a", &[]);
    let mut c = node(&nats, "c", &[]);
    let mut c1 = chatter(c.addr);
    received(&mut a, 1);
    let mut a1 = chatter(a.addr);
    line_where(&mut c1, 5, |l| l == "* #1@a joined\n");
    a1.write_all(b"/nick ann\n").unwrap();
    expect_bytes(&mut a1, b"* you are now ann\n");
    expect_bytes(&mut c1, b"* #1@a is now ann\n");
    // The same name, or one that looks the same, is refused as a local duplicate is.
    for name in ["ann", "ANN", "\u{430}nn"] {
        c1.write_all(format!("/nick {name}\n").as_bytes()).unwrap();
        let refusal = line(&mut c1);
        assert!(
            refusal == "* nick refused: that name (or one that looks the same) is taken\n"
                || (name != "ann" && refusal.starts_with("* nick refused: ")),
            "{name}: {refusal}"
        );
    }
    c1.write_all(b"/nick cat\n").unwrap();
    expect_bytes(&mut c1, b"* you are now cat\n");
    expect_bytes(&mut a1, b"* #1@c is now cat\n");
    // Given up on a, the name is free on c.
    drop(a1);
    line_where(&mut c1, 5, |l| l == "* ann left\n");
    c1.write_all(b"/nick ann\n").unwrap();
    expect_bytes(&mut c1, b"* you are now ann\n");
    assert_eq!(count(&cluster_report(&mut c), "malformed"), 0);
}

/// The client's name, as `/nick` without a name says it.
fn name_of(stream: &mut TcpStream) -> String {
    stream.write_all(b"/nick\n").unwrap();
    let l = line_where(stream, 20, |l| {
        l.starts_with("* you are ") && l.contains("usage")
    });
    l["* you are ".len()..l.find(';').unwrap()].to_owned()
}

#[test]
fn two_nodes_granting_one_nickname_at_once_settle_on_one_holder() {
    let nats = Nats::start();
    let mut a = node(&nats, "a", &[]);
    let b = node(&nats, "b", &[]);
    for round in 0..3 {
        let name = format!("zed{round}");
        let mut b1 = chatter(b.addr);
        received(&mut a, 1 + 2 * round as u64);
        let mut a1 = chatter(a.addr);
        line_where(&mut b1, 5, |l| l.ends_with("@a joined\n"));
        let ask = format!("/nick {name}\n");
        let (a_ask, b_ask) = (ask.clone(), ask);
        let mut a2 = a1.try_clone().unwrap();
        let mut b2 = b1.try_clone().unwrap();
        let at_a = std::thread::spawn(move || a2.write_all(a_ask.as_bytes()).unwrap());
        b2.write_all(b_ask.as_bytes()).unwrap();
        at_a.join().unwrap();
        // Let the claims, their answers and any crossed change settle.
        std::thread::sleep(Duration::from_millis(1500));
        let holders: Vec<String> = [&mut a1, &mut b1].into_iter().map(name_of).collect();
        assert_eq!(
            holders.iter().filter(|n| **n == name).count(),
            1,
            "round {round}: {holders:?}"
        );
        // Both nodes see the one holder.
        for (who, stream) in [("a", &mut a1), ("b", &mut b1)] {
            stream.write_all(b"/who\n").unwrap();
            let l = line_where(stream, 20, |l| l.starts_with("* 2 here"));
            assert_eq!(l.matches(name.as_str()).count(), 1, "{who}: {l}");
        }
        drop((a1, b1));
    }
}

/// The names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let comm = task.unwrap().path().join("comm");
        if let Ok(name) = std::fs::read_to_string(comm) {
            names.push(name.trim_end().to_owned());
        }
    }
    names
}

#[test]
fn the_link_and_the_admin_endpoint_share_one_control_thread() {
    let nats = Nats::start();
    let mut a = node(&nats, "a", &["--admin", "127.0.0.1:0"]);
    let names = thread_names(a.child.id());
    let control = names.iter().filter(|n| *n == "tcpool-control").count();
    assert_eq!(control, 1, "{names:?}");
    assert!(!names.iter().any(|n| n == "tcpool-cluster"), "{names:?}");

    // The broker gone, the endpoint on the same thread still answers, at once.
    drop(nats);
    a.wait_stderr("the link down", |l| l.contains("cluster link down"));
    for _ in 0..3 {
        let asked = std::time::Instant::now();
        let health = http_get(a.admin_addr(), "/healthz");
        assert!(health.starts_with("ok"), "{health}");
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
    }
    let metrics = http_get(a.admin_addr(), "/metrics");
    assert!(metrics.contains("tcpool_cluster_up 0"), "{metrics}");
    // And it still stops promptly, link and endpoint with it.
    a.type_line("quit");
    assert_eq!(a.wait_timeout(IO_TIMEOUT), Some(0));
}

/// A plain HTTP/1.1 GET: the body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = connect(addr);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

#[test]
fn bad_cluster_flags_are_refused_before_serving() {
    for (args, message) in [
        (
            &["--cluster", "nats://127.0.0.1:1"][..],
            "--cluster is for --mode chat",
        ),
        (
            &["--mode", "chat", "--cluster", "http://x"],
            "expected nats://HOST:PORT",
        ),
        (&["--mode", "chat", "--node", "a"], "go with --cluster"),
        (
            &[
                "--mode",
                "chat",
                "--cluster",
                "nats://127.0.0.1:1",
                "--node",
                "a b",
            ],
            "--node \"a b\"",
        ),
    ] {
        let out = Command::new(tcpool_bin())
            .args(["serve", "--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
