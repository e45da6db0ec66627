use super::*;

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn a_closing_session_is_already_closing_not_unknown() {
    let registry = Registry::new(1024);
    let id = registry.register(peer(1)).id();
    assert_eq!(registry.try_kick(id), Kick::Kicked);
    assert!(registry.list().iter().any(|s| s.id == id && s.closing));
    assert_eq!(registry.try_kick(id), Kick::AlreadyClosing);
    assert!(!registry.kick(id));
    registry.unregister(id);
    assert_eq!(registry.try_kick(id), Kick::Unknown);
}

#[test]
fn ids_are_never_reused() {
    let registry = Registry::new(1024);
    let a = registry.register(peer(1)).id();
    registry.unregister(a);
    let b = registry.register(peer(2)).id();
    assert_ne!(a, b);
    assert_eq!(registry.len(), 1);
    assert_eq!(registry.stats().total, 2);
    assert_eq!(registry.stats().peak, 1);
}

#[test]
fn ended_sessions_keep_their_traffic_in_the_totals() {
    let registry = Registry::new(1024);
    let h = registry.register(peer(1));
    h.counters().bytes_in.fetch_add(10, Ordering::Relaxed);
    h.counters().messages_in.fetch_add(2, Ordering::Relaxed);
    let before = registry.stats().traffic;
    registry.unregister(h.id());
    assert_eq!(registry.stats().traffic, before);
    assert_eq!(before.bytes_in, 10);
    assert_eq!(before.messages_in, 2);
}

#[test]
fn outbox_overflow_refuses_and_closes() {
    let registry = Registry::new(10);
    let h = registry.register(peer(1));
    assert_eq!(registry.send(h.id(), Arc::from(&b"12345"[..])), Ok(()));
    assert_eq!(h.queued_bytes(), 5);
    assert_eq!(
        registry.send(h.id(), Arc::from(&b"123456"[..])),
        Err(SendError::Overflow)
    );
    assert_eq!(
        registry.send(h.id(), Arc::from(&b"1"[..])),
        Err(SendError::Closing)
    );
    assert_eq!(
        registry.send(SessionId(99), Arc::from(&b"1"[..])),
        Err(SendError::NoSuchSession)
    );
}

#[test]
fn broadcast_skips_the_sender_and_uses_each_line_ending() {
    let registry = Registry::new(1024);
    let a = registry.register(peer(1));
    let b = registry.register(peer(2));
    let c = registry.register(peer(3));
    c.set_speech(crate::server::protocol::LineEnding::CrLf);
    let n =
        registry.broadcast(|h| (h.id() != a.id()).then(|| h.line_ending().terminate(b"hi").into()));
    assert_eq!(n, 2);
    assert_eq!(a.queued_bytes(), 0);
    assert_eq!(b.queued_bytes(), 2);
    assert_eq!(c.queued_bytes(), 4);
}

#[test]
fn both_fanouts_deliver_to_the_same_sessions() {
    for fanout in [Fanout::Sequential, Fanout::Parallel] {
        let registry = Registry::new(1024);
        let handles: Vec<_> = (0..100).map(|i| registry.register(peer(i))).collect();
        let skip = handles[7].id();
        let n =
            registry.broadcast_with(fanout, |h| (h.id() != skip).then(|| Arc::from(&b"x\n"[..])));
        assert_eq!(n, 99);
        for h in &handles {
            assert_eq!(h.queued_bytes(), if h.id() == skip { 0 } else { 2 });
        }
    }
}

#[test]
fn pages_walk_every_session_once_in_id_order() {
    let registry = Registry::new(1024);
    let handles: Vec<_> = (0..25).map(|i| registry.register(peer(i))).collect();
    // Gaps: ended sessions are skipped, never repeated.
    registry.unregister(handles[3].id());
    registry.unregister(handles[10].id());
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (page, more) = registry.page(after, 10);
        assert!(page.len() <= 10);
        seen.extend(page.iter().map(|s| s.id));
        after = page.last().map(|s| s.id);
        if !more {
            break;
        }
    }
    let want: Vec<SessionId> = registry.list().iter().map(|s| s.id).collect();
    assert_eq!(seen, want);
    assert_eq!(seen.len(), 23);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let (last, more) = registry.page(Some(handles[24].id()), 10);
    assert!(last.is_empty() && !more);
    let (exact, more) = registry.page(Some(handles[19].id()), 5);
    assert_eq!(exact.len(), 5);
    assert!(!more);
}

#[test]
fn kick_is_once() {
    let registry = Registry::new(1024);
    let h = registry.register(peer(1));
    assert!(registry.kick(h.id()));
    assert!(!registry.kick(h.id()));
    assert!(!registry.kick(SessionId(42)));
}

#[test]
fn last_speaker_must_still_be_connected() {
    let registry = Registry::new(1024);
    let h = registry.register(peer(1));
    assert_eq!(registry.last_speaker(), None);
    registry.set_last_speaker(h.id());
    assert_eq!(registry.last_speaker(), Some(h.id()));
    registry.unregister(h.id());
    assert_eq!(registry.last_speaker(), None);
}

#[test]
fn handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Registry>();
    assert_send_sync::<SessionHandle>();
}
