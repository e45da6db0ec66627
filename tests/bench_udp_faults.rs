//! `tcpool bench --udp` against `tcpool serve --udp --fault udp-...`: what the server's
//! datagram faults do, bench must measure. Each fault's draws are independent per datagram, so
//! a count of them is binomial: the tolerances below are 4 standard deviations of it
//! (`sqrt(n p (1 - p))`), which a right count misses about once in 16,000 runs.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bench_udp::{bench_udp, n};
use crate::support::*;

/// `tcpool serve --udp --seed 7 ARGS...`, its UDP echo up.
fn serve(args: &[&str]) -> Binary {
    let mut all = vec!["--udp", "--seed", "7"];
    all.extend_from_slice(args);
    let server = Binary::serve(&all);
    server.wait_stderr("the udp line", |l| l.contains("udp echo on"));
    server
}

/// 4 standard deviations of a binomial count of `trials` draws of chance `p`, and one more
/// for rounding.
fn four_sigma(trials: u64, p: f64) -> f64 {
    4.0 * (trials as f64 * p * (1.0 - p)).sqrt() + 1.0
}

fn assert_near(what: &str, got: u64, want: f64, tolerance: f64, r: &Value) {
    assert!(
        (got as f64 - want).abs() <= tolerance,
        "{what}: {got}, want {want:.0} ± {tolerance:.0}: {r}"
    );
}

/// Every datagram is answered, corrupt, lost or unresolved, and a run to its end leaves none
/// unresolved.
fn assert_settled(r: &Value) {
    assert_eq!(
        n(r, "answered") + n(r, "corrupt") + n(r, "lost"),
        n(r, "sent"),
        "{r}"
    );
    assert_eq!(n(r, "unresolved"), 0, "{r}");
}

#[test]
fn bench_udp_measures_udp_drop_and_the_same_seed_loses_the_same_count() {
    // One socket: the server draws each datagram's fate by its number from its source, so
    // two runs lose the same datagrams only if the same datagrams arrive in the same order.
    // One socket is one ordered stream, at most 32 out at once, which never fills the
    // server's receive buffer (a datagram the kernel dropped would shift the numbers of all
    // that follow, and is no seed's doing). A lost datagram frees its pipeline slot as soon
    // as a later one is answered, so the 200 ms timeout is waited out only at the end.
    let run = || {
        let server = serve(&["--fault", "udp-drop=0.1"]);
        let (code, r) = bench_udp(&[
            &server.addr.to_string(),
            "-c",
            "1",
            "-n",
            "100000",
            "--pipeline",
            "32",
            "-s",
            "32",
            "--reply-timeout",
            "200ms",
        ]);
        assert_eq!(code, Some(1), "lost datagrams fail the run: {r}");
        assert_settled(&r);
        r
    };
    let first = run();
    assert_eq!(n(&first, "sent"), 100_000, "{first}");
    let ratio = first["loss_ratio"].as_f64().unwrap();
    assert!((0.09..=0.11).contains(&ratio), "{first}");
    for key in ["duplicates", "corrupt", "foreign", "late", "reordered"] {
        assert_eq!(n(&first, key), 0, "{key}: {first}");
    }
    // No stamp: the loss is not split.
    assert_eq!(n(&first, "unattributed_loss"), n(&first, "lost"), "{first}");
    let second = run();
    assert_eq!(n(&second, "lost"), n(&first, "lost"), "{first} {second}");
}

#[test]
fn bench_udp_counts_the_duplicates_udp_dup_sends() {
    let server = serve(&["--fault", "udp-dup=0.1"]);
    let (code, r) = bench_udp(&[
        &server.addr.to_string(),
        "-c",
        "2",
        "-n",
        "20000",
        "--pipeline",
        "16",
        "-s",
        "32",
    ]);
    // Duplicates are reported, not failures.
    assert_eq!(code, Some(0), "{r}");
    assert_settled(&r);
    let answered = n(&r, "answered");
    assert_eq!(answered, 20_000, "{r}");
    let duplicates = n(&r, "duplicates");
    assert_near(
        "duplicates",
        duplicates,
        0.1 * answered as f64,
        four_sigma(answered, 0.1),
        &r,
    );
    assert_eq!(n(&r, "datagrams_received"), answered + duplicates, "{r}");
}

#[test]
fn bench_udp_sees_udp_reorder_and_loses_nothing() {
    let server = serve(&["--fault", "udp-reorder=4"]);
    let (code, r) = bench_udp(&[
        &server.addr.to_string(),
        "-c",
        "2",
        "-n",
        "4000",
        "--pipeline",
        "16",
        "-s",
        "32",
    ]);
    assert_eq!(code, Some(0), "{r}");
    assert_settled(&r);
    assert_eq!(n(&r, "answered"), 4000, "{r}");
    assert_eq!(n(&r, "lost"), 0, "{r}");
    assert_eq!(n(&r, "duplicates"), 0, "{r}");
    assert!(n(&r, "reordered") > 0, "{r}");
}

#[test]
fn bench_udp_round_trips_are_no_shorter_than_udp_delay() {
    let server = serve(&["--fault", "udp-delay=20ms"]);
    let (code, r) = bench_udp(&[
        &server.addr.to_string(),
        "-c",
        "2",
        "-n",
        "1000",
        "--pipeline",
        "16",
        "-s",
        "32",
    ]);
    assert_eq!(code, Some(0), "{r}");
    assert_settled(&r);
    assert_eq!(n(&r, "answered"), 1000, "{r}");
    // The server holds each reply 20 ms from when it read the request, which bench sent
    // before: no round trip is shorter.
    let rtt = &r["rtt_us"];
    assert!(n(rtt, "p50") >= 20_000, "{r}");
    assert!(n(rtt, "min") >= 20_000, "{r}");
}

#[test]
fn fail_if_judges_a_udp_run_on_its_round_trips_and_errors() {
    let server = serve(&["--fault", "udp-delay=20ms", "--fault", "udp-drop=0.5"]);
    let run = |fail_if: &str| {
        let mut command = std::process::Command::new(tcpool_bin());
        command
            .args(["bench", "--udp", &server.addr.to_string(), "-n", "200"])
            .args([
                "--pipeline",
                "8",
                "--reply-timeout",
                "300ms",
                "--fail-if",
                fail_if,
            ])
            .env("RUST_LOG", "warn");
        run_to_end(command, Duration::from_secs(60))
    };
    // Half the replies dropped, each held 20 ms: p99 under 5 ms fails, and so does an error
    // share under 10 %; exit 3, each failed threshold named.
    let failed = run("p99<5ms,errors<10%,p50>=20ms");
    assert_eq!(failed.code, Some(3), "{failed:?}");
    let said = failed.stderr.join("\n");
    assert!(said.contains("threshold p99<5ms: FAILED"), "{said}");
    assert!(said.contains("threshold errors<10%: FAILED"), "{said}");
    assert!(said.contains("threshold p50>=20ms: passed"), "{said}");
    // Thresholds it meets leave the exit code as the loss makes it: 1.
    let passed = run("p50>=20ms,errors<80%");
    assert_eq!(passed.code, Some(1), "{passed:?}");
    assert!(!passed.stderr.join("\n").contains("FAILED"), "{passed:?}");
}

#[test]
fn bench_udp_counts_every_reply_udp_corrupt_flips() {
    let server = serve(&["--fault", "udp-corrupt=0.1"]);
    let (code, r) = bench_udp(&[
        &server.addr.to_string(),
        "-c",
        "2",
        "-n",
        "20000",
        "--pipeline",
        "16",
        "-s",
        "32",
    ]);
    assert_eq!(code, Some(1), "corrupt replies fail the run: {r}");
    assert_settled(&r);
    let sent = n(&r, "sent");
    assert_near(
        "corrupt",
        n(&r, "corrupt"),
        0.1 * sent as f64,
        four_sigma(sent, 0.1),
        &r,
    );
    // A flip anywhere in the reply, its number and the stamp slot included, is a corrupt
    // reply to its own datagram: not a reply to another one, a foreign one, or a stamp.
    for key in ["lost", "duplicates", "foreign", "stamped_replies"] {
        assert_eq!(n(&r, key), 0, "{key}: {r}");
    }
}

#[test]
fn bench_udp_counts_every_reply_udp_truncate_cuts_as_corrupt() {
    // Cut to 16 bytes, a reply still carries its number (bytes 8..16), so it is matched to
    // its datagram, and is not the 64 bytes sent: corrupt. Cut to 40, the same.
    for cut in [16u64, 40] {
        let server = serve(&["--fault", &format!("udp-truncate={cut}")]);
        let (code, r) = bench_udp(&[
            &server.addr.to_string(),
            "-c",
            "2",
            "-n",
            "2000",
            "--pipeline",
            "16",
            "-s",
            "64",
        ]);
        assert_eq!(code, Some(1), "{r}");
        assert_settled(&r);
        assert_eq!(n(&r, "corrupt"), 2000, "{r}");
        assert_eq!(n(&r, "answered"), 0, "{r}");
        assert_eq!(n(&r, "foreign"), 0, "{r}");
        assert_eq!(n(&r, "bytes_received"), 2000 * cut, "{r}");
    }
}

#[test]
fn bench_udp_answered_at_udp_rate_and_the_rest_lost() {
    // The server answers 500 a second over every source, with a burst of one second's
    // worth: over a 2 s window it has 500 × (2 + 1) tokens, and bench asks for 2000 a second.
    let server = serve(&["--fault", "udp-rate=500"]);
    let (code, r) = bench_udp(&[
        &server.addr.to_string(),
        "-c",
        "2",
        "--rate",
        "2000",
        "-d",
        "2s",
        "-s",
        "32",
        "--reply-timeout",
        "200ms",
    ]);
    assert_eq!(code, Some(1), "{r}");
    assert_settled(&r);
    let tokens = 500.0 * (r["duration_s"].as_f64().unwrap() + 1.0);
    let answered = n(&r, "answered");
    assert!(n(&r, "sent") as f64 > tokens, "{r}");
    assert_near("answered", answered, tokens, 0.1 * tokens, &r);
    assert_eq!(n(&r, "lost"), n(&r, "sent") - answered, "{r}");
    assert_eq!(n(&r, "corrupt"), 0, "{r}");
}

#[test]
fn bench_udp_places_stamped_loss_on_the_side_udp_drop_drops() {
    for (dir, placed, other) in [
        ("request", "request_loss", "reply_loss"),
        ("reply", "reply_loss", "request_loss"),
    ] {
        let server = serve(&["--udp-stamp", "--fault", &format!("udp-drop=0.2,dir={dir}")]);
        let (code, r) = bench_udp(&[
            &server.addr.to_string(),
            "-c",
            "2",
            "-n",
            "20000",
            "--pipeline",
            "16",
            "-s",
            "32",
            "--reply-timeout",
            "200ms",
        ]);
        assert_eq!(code, Some(1), "{r}");
        assert_settled(&r);
        let (sent, lost) = (n(&r, "sent"), n(&r, "lost"));
        assert_near("lost", lost, 0.2 * sent as f64, four_sigma(sent, 0.2), &r);
        assert_eq!(n(&r, "stamped_replies"), n(&r, "answered"), "{r}");
        // All of it on its side, but what came after each socket's last stamped reply,
        // which no stamp can place: a few datagrams at most.
        assert_eq!(n(&r, other), 0, "{dir}: {r}");
        let unplaced = n(&r, "unattributed_loss");
        assert_eq!(n(&r, placed) + unplaced, lost, "{dir}: {r}");
        assert!(unplaced <= 32, "{dir}: {r}");
    }
}

#[test]
fn bench_udp_never_gets_more_bytes_back_than_every_fault_at_once_allows() {
    // Faults cut and flip, never add: each reply is at most its request's 64 bytes, however
    // many copies come.
    let server = serve(&[
        "--fault",
        "udp-drop=0.05",
        "--fault",
        "udp-dup=0.1",
        "--fault",
        "udp-reorder=4",
        "--fault",
        "udp-delay=2ms±1ms",
        "--fault",
        "udp-corrupt=0.1",
        "--fault",
        "udp-truncate=48",
        "--fault",
        "udp-rate=100000",
    ]);
    let (code, r) = bench_udp(&[
        &server.addr.to_string(),
        "-c",
        "2",
        "-n",
        "4000",
        "--pipeline",
        "16",
        "-s",
        "64",
        "--reply-timeout",
        "500ms",
    ]);
    assert_eq!(code, Some(1), "{r}");
    assert_settled(&r);
    let received = n(&r, "datagrams_received");
    assert!(received > 0, "{r}");
    assert!(
        received <= n(&r, "sent") + n(&r, "duplicates"),
        "more replies than requests and their copies: {r}"
    );
    assert!(n(&r, "bytes_received") <= received * 48, "{r}");
    assert!(n(&r, "bytes_sent") == n(&r, "sent") * 64, "{r}");
    // Every reply is cut to 48 bytes: none is right.
    assert_eq!(n(&r, "answered"), 0, "{r}");
    assert_eq!(n(&r, "foreign"), 0, "{r}");
}

#[test]
fn bench_udp_server_metrics_puts_the_loss_on_the_servers_faults() {
    let server = serve(&["--admin", "127.0.0.1:0", "--fault", "udp-drop=0.1"]);
    let url = format!("http://{}/metrics", server.admin_addr());
    let (code, r) = bench_udp(&[
        &server.addr.to_string(),
        "-c",
        "2",
        "-n",
        "10000",
        "--pipeline",
        "16",
        "-s",
        "32",
        "--reply-timeout",
        "200ms",
        "--server-metrics",
        &url,
    ]);
    assert_eq!(code, Some(1), "{r}");
    assert_settled(&r);
    let lost = n(&r, "lost");
    assert_near("lost", lost, 1000.0, four_sigma(10_000, 0.1), &r);
    let s = &r["server"];
    assert_eq!(s["url"], url.as_str(), "{r}");
    assert_eq!(n(s, "datagrams_in"), 10_000, "{r}");
    assert_eq!(n(s, "datagrams_out"), n(&r, "answered"), "{r}");
    // At most 32 datagrams out at once: the server's kernel drops none, and every datagram
    // lost is one its fault dropped.
    assert_eq!(n(s, "kernel_drops"), 0, "{r}");
    assert_eq!(n(s, "faulted_drops"), lost, "{r}");
    assert_eq!(n(&s["faulted"], "drop-reply"), lost, "{r}");
    assert_eq!(n(s, "lost_elsewhere"), 0, "{r}");
    assert_eq!(s["warnings"].as_array().map(Vec::len), Some(0), "{r}");
    assert_eq!(s["restarted"], false, "{r}");
}

#[test]
fn no_reply_is_larger_than_its_request_under_every_fault_and_the_stamp() {
    // Requests of many sizes, each filled with its own byte: a reply, whatever was flipped,
    // cut, doubled, held or stamped, is told by the byte most of it carries (one bit of one
    // byte flipped, 8 bytes stamped, of at least 20).
    let server = serve(&[
        "--udp-stamp",
        "--fault",
        "udp-dup=0.3",
        "--fault",
        "udp-reorder=4",
        "--fault",
        "udp-delay=2ms±1ms",
        "--fault",
        "udp-corrupt=0.5",
        "--fault",
        "udp-truncate=100",
    ]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server.addr).unwrap();
    // Room for every reply while the requests go out.
    socket2::SockRef::from(&socket)
        .set_recv_buffer_size(1 << 20)
        .unwrap();
    let size = |i: usize| 20 + i * 37 % 230;
    for i in 0..250 {
        socket.send(&vec![i as u8; size(i)]).unwrap();
    }
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 2048];
    let mut replies = 0;
    // At most two copies of each: the loop ends by then, on a quiet half second, or at the
    // deadline.
    while replies < 500 && Instant::now() < deadline {
        let Ok(len) = socket.recv(&mut buf) else {
            break;
        };
        let reply = &buf[..len];
        let mut counts = [0usize; 256];
        for &b in &reply[8..] {
            counts[usize::from(b)] += 1;
        }
        let i = (0..250).max_by_key(|&i| counts[i]).unwrap();
        assert!(
            len <= size(i).min(100),
            "reply of {len} bytes to request {i} of {} bytes",
            size(i)
        );
        replies += 1;
    }
    // Nothing is dropped, and every request is answered at least once.
    assert!(replies >= 250, "{replies} replies");
}
