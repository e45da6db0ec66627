//! Unit tests of the link: envelopes, names, gaps and duplicates.

use super::receiving::{Envelope, Receiving, read_envelope, shown};
use super::*;
use crate::server::modes::chat::Kind;
use crate::server::session::SessionId;

fn envelope(kind: Kind) -> Envelope {
    Envelope {
        v: VERSION,
        node: "b".into(),
        epoch: 1,
        seq: 1,
        kind,
        id: 7,
        nick: None,
        old: None,
        text: String::new(),
        sent_us: None,
    }
}

#[test]
fn lines_show_the_origin_until_a_nickname() {
    let mut e = envelope(Kind::Line);
    e.text = "hi".into();
    assert_eq!(shown(&e), "<#7@b> hi");
    e.nick = Some("ann".into());
    assert_eq!(shown(&e), "<ann> hi");
    e.text = "\x1b[2J".into();
    assert_eq!(shown(&e), r"<ann> \x1b[2J");
    let mut n = envelope(Kind::Nick);
    n.nick = Some("ann".into());
    assert_eq!(shown(&n), "* #7@b is now ann");
    assert_eq!(shown(&envelope(Kind::Join)), "* #7@b joined");
    assert_eq!(shown(&envelope(Kind::Left)), "* #7@b left");
}

#[test]
fn bad_envelopes_are_refused() {
    assert!(read_envelope(b"{").is_err());
    assert!(read_envelope(b"null").is_err());
    let good = serde_json::to_vec(&envelope(Kind::Join)).unwrap();
    assert!(read_envelope(&good).is_ok());
    // An older node's envelope, without the publish time, still reads.
    let older = br#"{"v":1,"node":"b","epoch":1,"seq":1,"kind":"join","id":7}"#;
    assert_eq!(read_envelope(older).unwrap().sent_us, None);
    let mut forged = envelope(Kind::Line);
    forged.nick = Some("*admin".into());
    assert!(read_envelope(&serde_json::to_vec(&forged).unwrap()).is_err());
    let mut node = envelope(Kind::Line);
    node.node = "a b\n".into();
    assert!(read_envelope(&serde_json::to_vec(&node).unwrap()).is_err());
    assert!(read_envelope(&vec![b' '; MAX_ENVELOPE + 1]).is_err());
}

#[test]
fn gaps_and_duplicates_are_counted_per_origin_and_epoch() {
    let (queue, _taken) = channel::bounded(1);
    let (asks, _asked) = channel::bounded(1);
    let link = Link {
        options: ClusterOptions::new("nats://127.0.0.1:4222"),
        epoch: 1,
        queue,
        wake: tokio::sync::Notify::new(),
        skipped: AtomicU64::new(0),
        state: std::sync::atomic::AtomicU8::new(UP),
        stop: AtomicBool::new(false),
        counters: Counters::default(),
        done: Mutex::new(None),
        presence: Mutex::default(),
        conflicts: Mutex::default(),
        failure: Mutex::default(),
        down_since: Mutex::default(),
        admission: Mutex::new(super::names::Admission::Admitted),
        admitted: parking_lot::Condvar::new(),
        starting: AtomicBool::new(false),
        asks,
        asking: Mutex::default(),
        room: Mutex::default(),
    };
    let registry = Registry::new(1024);
    let mut receiving = Receiving::new("a".into());
    let mut send = |node: &str, epoch: u64, seq: u64| {
        let mut e = envelope(Kind::Join);
        (e.node, e.epoch, e.seq) = (node.into(), epoch, seq);
        receiving.take(&link, &serde_json::to_vec(&e).unwrap(), &registry);
    };
    for seq in [1, 2, 5, 5, 3, 6] {
        send("b", 1, seq);
    }
    // A restart is a new epoch: its sequence starts over without a gap.
    send("b", 2, 1);
    send("c", 1, 10);
    // Its own envelopes a node ignores.
    send("a", 1, 7);
    let c = link.counts();
    // 3 came late: it fills its gap (recovered), it is no duplicate; the second 5 is one.
    assert_eq!(
        (c.received, c.gaps, c.duplicates, c.recovered),
        (8, 2, 1, 1),
        "{c:?}"
    );
    // Envelopes without the publish time record no lag; with it, one each.
    assert_eq!(link.lag().count, 0);
    let mut timed = envelope(Kind::Line);
    (timed.node, timed.seq, timed.sent_us) = ("c".into(), 11, Some(super::lag::now_us()));
    receiving.take(&link, &serde_json::to_vec(&timed).unwrap(), &registry);
    let lag = link.lag();
    assert_eq!((lag.count, lag.clamped), (1, 0), "{lag:?}");
    assert!(lag.sum_seconds < 1.0, "{lag:?}");
    // A full queue drops and counts, never waits.
    link.publish(Event {
        kind: Kind::Line,
        id: SessionId(1),
        nick: None,
        old: None,
        text: "one".into(),
    });
    link.publish(Event {
        kind: Kind::Line,
        id: SessionId(1),
        nick: None,
        old: None,
        text: "two".into(),
    });
    assert_eq!(link.counts().dropped_queue_full, 1);
    assert_eq!(link.skipped.load(Ordering::Relaxed), 1);
}

#[test]
fn names() {
    assert!(check_name(&default_node(), true).is_ok());
    assert!(check_name("", true).is_err());
    assert!(check_name(&"a".repeat(MAX_NAME + 1), true).is_err());
}
