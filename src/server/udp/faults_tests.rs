use std::collections::HashSet;

use super::*;

fn shaper(seed: u64, specs: &[&str]) -> (Shaper, Faults) {
    let specs: Vec<_> = specs.iter().map(|s| s.parse().unwrap()).collect();
    let faults = Faults::new(seed, &specs);
    (Shaper::new(faults.clone()), faults)
}

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn faulted(faults: &Faults, kind: &str) -> u64 {
    let all = faults.udp_faulted();
    all.iter().find(|&&(k, _)| k == kind).unwrap().1
}

/// The numbers of the replies out of `count` that `shaper` sends at once.
fn answered(shaper: &mut Shaper, from: SocketAddr, count: u64) -> Vec<u64> {
    let now = Instant::now();
    let mut sent = Vec::new();
    shaper.begin();
    for _ in 0..count {
        let Some(number) = shaper.request(from) else {
            continue;
        };
        let mut reply = *b"0123456789abcdef";
        if shaper.reply_at(from, number, &mut reply, now).copies > 0 {
            sent.push(number);
        }
    }
    shaper.end();
    sent
}

#[test]
fn the_same_seed_drops_the_same_datagrams_whatever_the_source() {
    let (mut a, faults) = shaper(7, &["udp-drop=0.1"]);
    let first = answered(&mut a, peer(1000), 10_000);
    let (mut b, _) = shaper(7, &["udp-drop=0.1"]);
    assert_eq!(answered(&mut b, peer(2000), 10_000), first);
    let (mut c, _) = shaper(8, &["udp-drop=0.1"]);
    assert_ne!(answered(&mut c, peer(1000), 10_000), first);
    let lost = 10_000 - first.len() as u64;
    assert!((850..1150).contains(&lost), "{lost} lost of 10,000");
    assert_eq!(faulted(&faults, "drop-reply"), lost);
    assert_eq!(faults.list()[0].sessions, lost);
}

#[test]
fn a_request_dropped_is_not_counted_and_the_numbers_go_on() {
    let (mut shaper, faults) = shaper(3, &["udp-drop=0.5,dir=request"]);
    let sent = answered(&mut shaper, peer(1), 1_000);
    // Numbered 1, 2, 3, ... with no gap: the dropped ones were never counted.
    assert_eq!(sent, (1..=sent.len() as u64).collect::<Vec<_>>());
    let dropped = faulted(&faults, "drop-request");
    assert_eq!(dropped + sent.len() as u64, 1_000);
    assert!((400..600).contains(&dropped), "{dropped}");
}

#[test]
fn a_reply_is_cut_flipped_or_doubled_and_never_grows() {
    let (mut shaper, faults) = shaper(5, &["udp-corrupt=1", "udp-truncate=8", "udp-dup=0.5"]);
    let now = Instant::now();
    let mut doubled = 0;
    shaper.begin();
    for _ in 0..1_000 {
        let number = shaper.request(peer(9)).unwrap();
        let request = *b"0123456789abcdef";
        let mut reply = request;
        let out = shaper.reply_at(peer(9), number, &mut reply, now);
        assert_eq!(out.len, 8);
        let flipped: u32 = (0..8).map(|i| (reply[i] ^ request[i]).count_ones()).sum();
        assert_eq!(flipped, 1, "one bit of one byte");
        assert_eq!(&reply[8..], &request[8..]);
        doubled += usize::from(out.copies == 2);
    }
    shaper.end();
    assert!((400..600).contains(&doubled), "{doubled}");
    assert_eq!(faulted(&faults, "truncate"), 1_000);
    assert_eq!(faulted(&faults, "corrupt"), 1_000);
    assert_eq!(faulted(&faults, "dup"), doubled as u64);
}

#[test]
fn a_delayed_reply_is_due_no_sooner_than_its_delay() {
    let (mut shaper, _) = shaper(1, &["udp-delay=50ms±10ms"]);
    let now = Instant::now();
    let mut reply = *b"held";
    let number = shaper.request(peer(1)).unwrap();
    let out = shaper.reply_at(peer(1), number, &mut reply, now);
    assert_eq!(out.copies, 0);
    let due = shaper.next_due().unwrap();
    assert!(due >= now + Duration::from_millis(40) && due <= now + Duration::from_millis(60));
    assert_eq!(shaper.due(now + Duration::from_millis(39)).count(), 0);
    let held: Vec<Held> = shaper.due(now + Duration::from_millis(60)).collect();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (&held[0].bytes[..], held[0].copies, held[0].peer),
        (&b"held"[..], 1, peer(1))
    );
    assert_eq!(shaper.next_due(), None);
}

#[test]
fn a_reorder_group_comes_out_shuffled_and_whole() {
    let (mut shaper, _) = shaper(11, &["udp-reorder=8"]);
    let now = Instant::now();
    let mut order = Vec::new();
    for _ in 0..64 {
        let number = shaper.request(peer(1)).unwrap();
        let mut reply = number.to_be_bytes();
        assert_eq!(shaper.reply_at(peer(1), number, &mut reply, now).copies, 0);
        order.extend(
            shaper
                .due(now)
                .map(|h| u64::from_be_bytes(h.bytes[..].try_into().unwrap())),
        );
    }
    assert_eq!(order.len(), 64);
    assert_eq!(order.iter().copied().collect::<HashSet<_>>().len(), 64);
    assert_ne!(order, (1..=64).collect::<Vec<_>>());
    // Each group of eight stays among its own.
    for (i, chunk) in order.chunks(8).enumerate() {
        assert!(
            chunk
                .iter()
                .all(|&n| (i as u64 * 8 + 1..=i as u64 * 8 + 8).contains(&n))
        );
    }
    // A group that does not fill goes out after a short wait.
    let number = shaper.request(peer(1)).unwrap();
    shaper.reply_at(peer(1), number, &mut [0; 4], now);
    assert_eq!(shaper.due(now).count(), 0);
    assert_eq!(shaper.next_due(), Some(now + REORDER_WAIT));
    assert_eq!(shaper.due(now + REORDER_WAIT).count(), 1);
}

#[test]
fn what_is_held_is_bounded_and_a_clear_lets_it_out_at_once() {
    let (mut shaper, faults) = shaper(1, &["udp-delay=1h"]);
    let now = Instant::now();
    shaper.begin();
    for _ in 0..MAX_HELD + 10 {
        let number = shaper.request(peer(1)).unwrap();
        shaper.reply_at(peer(1), number, &mut [0; 16], now);
    }
    shaper.end();
    assert_eq!(faulted(&faults, "overflow"), 10);
    assert_eq!(faulted(&faults, "delay"), MAX_HELD as u64);
    assert_eq!(
        faults.list()[0].sessions,
        MAX_HELD as u64,
        "an overflow is no delay"
    );
    assert_eq!(shaper.due(now).count(), 0);
    faults.clear(None);
    shaper.begin();
    assert_eq!(shaper.due(now).count(), MAX_HELD);
    assert_eq!(shaper.held_bytes, 0);
    assert_eq!(shaper.next_due(), None);
    // Nothing active: every reply goes at once, untouched.
    let number = shaper.request(peer(1)).unwrap();
    let out = shaper.reply_at(peer(1), number, &mut [7; 16], now);
    assert_eq!((out.copies, out.len), (1, 16));
}

#[test]
fn the_rate_lets_a_seconds_worth_through_then_one_per_interval() {
    let (mut shaper, faults) = shaper(1, &["udp-rate=10"]);
    let now = Instant::now() + Duration::from_millis(1);
    let mut send = |at| {
        let number = shaper.request(peer(1)).unwrap();
        shaper.reply_at(peer(1), number, &mut [0; 4], at).copies
    };
    let burst: Vec<u8> = (0..12).map(|_| send(now)).collect();
    assert_eq!(burst, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
    assert_eq!(send(now + Duration::from_millis(100)), 1);
    assert_eq!(send(now + Duration::from_millis(100)), 0);
    shaper.end();
    assert_eq!(faulted(&faults, "rate"), 3);
}

#[test]
fn a_fault_added_live_is_taken_on_at_the_next_batch() {
    let (mut shaper, faults) = shaper(1, &[]);
    assert_eq!(answered(&mut shaper, peer(1), 100).len(), 100);
    faults.add("udp-drop=1".parse().unwrap());
    assert_eq!(answered(&mut shaper, peer(1), 100).len(), 0);
    faults.clear(None);
    assert_eq!(answered(&mut shaper, peer(1), 100).len(), 100);
}
