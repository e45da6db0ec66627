//! `serve --udp --udp-reply sockperf`: sockperf's own client loads tcpool as it loads
//! `sockperf server`, and gets every answer it asked for and none it did not.

use std::net::SocketAddr;
use std::process::Command;

use tcpool::server::udp::{UdpOptions, UdpReply};
use tcpool::server::{Config, Server, bind};

use crate::support::*;

fn sockperf_target() -> (tcpool::server::Running, SocketAddr) {
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let running = Server::new(
        listener,
        Config {
            udp: Some(0),
            udp_options: UdpOptions {
                reply: UdpReply::Sockperf,
                ..UdpOptions::default()
            },
            ..Config::default()
        },
    )
    .start()
    .unwrap();
    let udp = running.udp_addr().expect("a UDP address");
    (running, udp)
}

/// sockperf's `[Valid Duration]` line: messages sent and answers received.
fn sent_and_received(output: &str) -> (u64, u64) {
    let line = output
        .lines()
        .find(|l| l.contains("[Valid Duration]"))
        .unwrap_or_else(|| panic!("no [Valid Duration] line in:\n{output}"));
    let number = |key: &str| -> u64 {
        let at = line
            .find(key)
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            + key.len();
        line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    (number("SentMessages="), number("ReceivedMessages="))
}

fn sockperf(args: &[&str]) -> String {
    let out = Command::new("sockperf")
        .args(args)
        .output()
        .expect("sockperf runs (Debian: apt-get install sockperf)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sockperf failed:\n{text}");
    text
}

#[test]
fn sockperf_ping_pong_gets_an_answer_to_every_message() {
    let (running, udp) = sockperf_target();
    let port = udp.port().to_string();
    let text = sockperf(&[
        "ping-pong",
        "-i",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "1",
        "-m",
        "64",
    ]);
    let (sent, received) = sent_and_received(&text);
    assert!(sent > 0, "{text}");
    assert_eq!(received, sent, "every ping answered:\n{text}");
    assert!(text.contains("percentile 99.000"), "{text}");
    drop(running);
}

#[test]
fn sockperf_under_load_gets_only_the_answers_it_asked_for() {
    let (running, udp) = sockperf_target();
    let port = udp.port().to_string();
    // 5,000 messages a second for a second, one in 10 asking for an answer.
    let text = sockperf(&[
        "under-load",
        "-i",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "1",
        "-m",
        "64",
        "--mps",
        "5000",
        "--reply-every",
        "10",
    ]);
    let (sent, received) = sent_and_received(&text);
    assert!(sent >= 100, "{text}");
    // sockperf counts the answers it asked for; tcpool counts the rest as not asked.
    assert!(received > 0 && received <= sent / 10 + 1, "{text}");
    assert!(text.contains("# dropped messages = 0"), "{text}");
    let counts = running.udp_counts();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    wait_until("every message counted", || {
        load(&counts.datagrams_out) + load(&counts.not_asked) == load(&counts.datagrams_in)
            && load(&counts.datagrams_in) > 0
    });
    let (out, not_asked) = (load(&counts.datagrams_out), load(&counts.not_asked));
    assert!(
        not_asked >= 9 * out,
        "answered {out}, not asked {not_asked}"
    );
}
