//! The pacing of held replies, step by step on a fake clock.

use super::*;
use crate::server::faults::{FaultId, FaultSpec};
use std::sync::atomic::{AtomicBool, AtomicU64};

fn pacing(specs: &[&str], at: Instant) -> Pacing {
    let faults = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Arc::new(Active {
                id: FaultId(i as u64 + 1),
                spec: s.parse::<FaultSpec>().unwrap(),
                touched: AtomicU64::new(0),
                cleared: AtomicBool::new(false),
                added: at,
                bucket: AtomicU64::new(0),
            })
        })
        .collect();
    Pacing::new(SessionId(1), faults, Rng::for_session(1, 1), at)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A new turn of the worker's loop for every call, so no budget carries over.
fn turn() -> u64 {
    static TURN: AtomicU64 = AtomicU64::new(1);
    TURN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn written(out: &mut VecDeque<Chunk>) -> Vec<Vec<u8>> {
    out.drain(..).map(|c| c.bytes().to_vec()).collect()
}

#[test]
fn latency_holds_each_reply_and_keeps_order() {
    let t0 = Instant::now();
    let mut p = pacing(&["latency,delay=20ms,jitter=15ms"], t0);
    let mut out = VecDeque::new();
    for (i, reply) in [b"a", b"b", b"c"].iter().enumerate() {
        p.hold(t0 + ms(i as u64), *reply, false);
    }
    assert_eq!(p.advance(t0 + ms(4), &mut out, turn()), None);
    assert!(out.is_empty(), "nothing before delay - jitter");
    let first = p.deadline().unwrap();
    assert!(
        first >= t0 + ms(5) && first <= t0 + ms(35),
        "{:?}",
        first - t0
    );
    p.advance(t0 + ms(40), &mut out, turn());
    assert_eq!(written(&mut out), [b"a", b"b", b"c"]);
    assert_eq!(p.deadline(), None, "nothing held, nothing timed");
}

#[test]
fn the_same_seed_and_session_give_the_same_jitter() {
    let t0 = Instant::now();
    let dues = |seed, session| {
        let spec = "latency,delay=50ms,jitter=40ms"
            .parse::<FaultSpec>()
            .unwrap();
        let fault = Arc::new(Active {
            id: FaultId(1),
            spec,
            touched: AtomicU64::new(0),
            cleared: AtomicBool::new(false),
            added: t0,
            bucket: AtomicU64::new(0),
        });
        let rng = Rng::for_session(seed, session);
        let mut p = Pacing::new(SessionId(session), vec![fault], rng, t0);
        (0..8u64)
            .map(|i| {
                p.last_due = None;
                p.hold(t0, &[i as u8], false);
                p.held.back().unwrap().due - t0
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(dues(9, 3), dues(9, 3));
    assert_ne!(dues(9, 3), dues(9, 4));
    assert!(dues(9, 3).iter().all(|d| *d >= ms(10) && *d <= ms(90)));
}

#[test]
fn slice_cuts_every_reply_into_spaced_pieces() {
    let t0 = Instant::now();
    let mut p = pacing(&["slice,size=4,delay=10ms"], t0);
    let mut out = VecDeque::new();
    p.hold(t0, b"hello world", false);
    p.advance(t0, &mut out, turn());
    assert_eq!(written(&mut out), [b"hell"]);
    assert_eq!(p.deadline(), Some(t0 + ms(10)));
    p.advance(t0 + ms(10), &mut out, turn());
    p.advance(t0 + ms(20), &mut out, turn());
    assert_eq!(written(&mut out), [&b"o wo"[..], b"rld"]);
}

#[test]
fn bandwidth_allows_one_burst_then_paces() {
    let t0 = Instant::now();
    let mut p = pacing(&["bandwidth,rate=1000"], t0);
    let mut out = VecDeque::new();
    p.hold(t0, &[7; 3000], false);
    p.advance(t0, &mut out, turn());
    let burst: usize = written(&mut out).iter().map(Vec::len).sum();
    assert_eq!(burst, 1000);
    let mut sent = burst;
    let mut now = t0;
    while let Some(at) = p.deadline() {
        assert!(at > now, "the deadline moves on");
        now = at;
        p.advance(now, &mut out, turn());
        sent += written(&mut out).iter().map(Vec::len).sum::<usize>();
    }
    assert_eq!(sent, 3000);
    let took = now - t0;
    assert!(took >= ms(1990) && took <= ms(2100), "{took:?}");
}

#[test]
fn truncate_keeps_the_first_bytes_of_each_reply() {
    let t0 = Instant::now();
    let mut p = pacing(&["truncate,bytes=3"], t0);
    let mut out = VecDeque::new();
    p.hold(t0, b"hello", false);
    p.hold(t0, b"hi", false);
    p.advance(t0, &mut out, turn());
    assert_eq!(written(&mut out), [&b"hel"[..], b"hi"]);
    // Line by line for a line-based peer, a line counted across replies.
    p.hold(t0, b"abcdef\nab\nabc", true);
    p.hold(t0, b"def\n", true);
    p.advance(t0, &mut out, turn());
    assert_eq!(written(&mut out), [b"abcab\nabc"]);
}

#[test]
fn reset_and_close_come_after_n_replies_or_a_duration() {
    let t0 = Instant::now();
    let mut out = VecDeque::new();
    let mut p = pacing(&["reset,after=2"], t0);
    assert_eq!(p.advance(t0, &mut out, turn()), None);
    p.hold(t0, b"1", false);
    p.hold(t0, b"2", false);
    assert_eq!(p.advance(t0, &mut out, turn()), Some(End::Reset));
    assert_eq!(written(&mut out), [b"1", b"2"]);
    let mut p = pacing(&["close,after=1s"], t0);
    assert_eq!(p.deadline(), Some(t0 + ms(1000)));
    assert_eq!(p.advance(t0 + ms(999), &mut out, turn()), None);
    assert_eq!(p.advance(t0 + ms(1000), &mut out, turn()), Some(End::Close));
    assert_eq!(
        pacing(&["reset"], t0).advance(t0, &mut out, turn()),
        Some(End::Reset)
    );
}

#[test]
fn a_stall_stops_reading_and_sending_then_ends() {
    let t0 = Instant::now();
    let mut out = VecDeque::new();
    let mut p = pacing(&["stall,after=1,for=100ms"], t0);
    p.hold(t0, b"1", false);
    p.hold(t0, b"2", false);
    p.advance(t0, &mut out, turn());
    assert_eq!(written(&mut out), [b"1"]);
    assert!(!p.may_read());
    assert_eq!(p.deadline(), Some(t0 + ms(100)));
    p.advance(t0 + ms(100), &mut out, turn());
    assert_eq!(written(&mut out), [b"2"]);
    assert!(p.may_read());
    let mut forever = pacing(&["stall"], t0);
    forever.advance(t0, &mut out, turn());
    assert!(!forever.may_read());
    assert_eq!(forever.deadline(), None, "a stall for good sets no timer");
}

#[test]
fn release_all_sends_what_is_held_in_order() {
    let t0 = Instant::now();
    let mut out = VecDeque::new();
    let mut p = pacing(&["slice,size=2,delay=1s", "latency,delay=1s"], t0);
    p.hold(t0, b"abcde", false);
    p.hold(t0, b"fg", false);
    p.advance(t0 + ms(1000), &mut out, turn());
    p.release_all(&mut out);
    assert_eq!(written(&mut out).concat(), b"abcdefg");
}

#[test]
fn clearing_the_latency_makes_what_it_held_due() {
    let t0 = Instant::now();
    let mut out = VecDeque::new();
    let mut p = pacing(&["latency,delay=60s", "truncate,bytes=8"], t0);
    p.hold(t0, b"abc", false);
    p.faults[0]
        .cleared
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(p.forget_cleared());
    p.hold(t0 + ms(1), b"de", false);
    p.advance(t0 + ms(1), &mut out, turn());
    assert_eq!(written(&mut out), [&b"abc"[..], b"de"]);
}

#[test]
fn the_timer_is_armed_once_per_deadline() {
    let t0 = Instant::now();
    let mut p = pacing(&["latency,delay=1s"], t0);
    assert!(p.arm(t0 + ms(5)));
    assert!(!p.arm(t0 + ms(6)));
    assert!(p.arm(t0 + ms(4)));
    assert!(!p.fired(t0 + ms(5)), "a stale timer");
    assert!(p.fired(t0 + ms(4)));
    assert!(p.arm(t0 + ms(6)));
}

#[test]
fn a_turn_lets_out_a_bounded_number_of_pieces_and_asks_for_the_next() {
    let t0 = Instant::now();
    let mut p = pacing(&["slice,size=1"], t0);
    let reply = vec![b'x'; 64 * 1024];
    p.hold(t0, &reply, false);
    let mut out = VecDeque::new();
    let now = turn();
    p.advance(t0, &mut out, now);
    assert_eq!(out.len(), TURN_WRITES, "one turn's budget of writes");
    assert!(p.budget_spent());
    // No timer is asked for what is due at once: the worker comes back next turn.
    assert_eq!(p.deadline(), None);
    // The same turn lets out nothing more; the next one does.
    p.advance(t0, &mut out, now);
    assert_eq!(out.len(), TURN_WRITES);
    let mut turns = 1;
    while p.budget_spent() {
        out.clear();
        p.advance(t0, &mut out, turn());
        assert!(out.len() <= TURN_WRITES);
        turns += 1;
    }
    assert_eq!(turns, reply.len() / TURN_WRITES);

    // Large pieces: bounded by bytes, a whole reply at least.
    out.clear();
    let mut p = pacing(&["latency,delay=1ms"], t0);
    for _ in 0..4 {
        p.hold(t0, &reply, false);
    }
    p.advance(t0 + ms(1), &mut out, turn());
    assert!(p.budget_spent());
    assert_eq!(written(&mut out).concat().len(), TURN_BYTES);
}
