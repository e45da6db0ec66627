use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<FaultSpec, String> {
    text.parse::<FaultSpec>().map_err(|e| e.to_string())
}

fn udp(text: &str) -> UdpFault {
    match parse(text) {
        Ok(FaultSpec {
            kind: FaultKind::Udp(kind),
            p,
        }) => {
            assert_eq!(p, 1.0, "{text}");
            kind
        }
        other => panic!("{text}: {other:?}"),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn every_datagram_kind_parses() {
    let cases = [
        (
            "udp-drop=0.1",
            UdpFault::Drop {
                p: 0.1,
                dir: Dir::Reply,
            },
        ),
        (
            "udp-drop=1,dir=request",
            UdpFault::Drop {
                p: 1.0,
                dir: Dir::Request,
            },
        ),
        (
            " udp-drop = 0 , dir = reply ",
            UdpFault::Drop {
                p: 0.0,
                dir: Dir::Reply,
            },
        ),
        ("udp-dup=0.2", UdpFault::Dup { p: 0.2 }),
        ("udp-reorder=8", UdpFault::Reorder { depth: 8 }),
        (
            "udp-delay=50ms",
            UdpFault::Delay {
                delay: ms(50),
                jitter: Duration::ZERO,
            },
        ),
        (
            "udp-delay=50ms±10ms",
            UdpFault::Delay {
                delay: ms(50),
                jitter: ms(10),
            },
        ),
        (
            "udp-delay=1.5s+-250ms",
            UdpFault::Delay {
                delay: ms(1500),
                jitter: ms(250),
            },
        ),
        ("udp-corrupt=0.5", UdpFault::Corrupt { p: 0.5 }),
        ("udp-truncate=8", UdpFault::Truncate { bytes: 8 }),
        ("udp-truncate=1KiB", UdpFault::Truncate { bytes: 1024 }),
        ("udp-rate=1000", UdpFault::Rate { per_second: 1000 }),
        ("udp-rate=50/s", UdpFault::Rate { per_second: 50 }),
    ];
    for (text, want) in cases {
        assert_eq!(udp(text), want, "{text}");
        assert!(parse(text).unwrap().kind.is_udp());
    }
}

#[test]
fn a_bad_datagram_spec_is_one_line_naming_what_is_wrong() {
    for (text, needle) in [
        ("udp-drop", "udp-drop needs a value: udp-drop=P"),
        ("udp-drop=", "needs a value"),
        (
            "udp-drop=1.5",
            "P: \"1.5\" is not a probability between 0 and 1",
        ),
        ("udp-drop=-0.1", "not a probability"),
        ("udp-drop=NaN", "not a probability"),
        ("udp-dup=often", "not a probability"),
        (
            "udp-drop=0.1,dir=sideways",
            "dir: \"sideways\" is not request or reply",
        ),
        ("udp-drop=0.1,dir=request,dir=reply", "dir: given twice"),
        ("udp-drop=0.1,p=0.5", "udp-drop takes no p="),
        ("udp-dup=0.1,dir=request", "udp-dup takes no key \"dir\""),
        ("udp-drop=0.1,request", "\"request\" is not key=value"),
        ("udp-reorder=0", "DEPTH: 0 is too shallow"),
        ("udp-reorder=1", "at least 2"),
        ("udp-reorder=100000", "too deep: at most 1024"),
        ("udp-reorder=-3", "not a whole number"),
        ("udp-delay=soon", "D: "),
        ("udp-delay=50ms±", "J: "),
        ("udp-delay=50ms+-often", "J: "),
        ("udp-truncate=lots", "N: "),
        ("udp-rate=0", "R: must be more than 0"),
        ("udp-rate=1.5", "not a whole number of replies a second"),
        (
            "udp-jitter=1",
            "unknown kind \"udp-jitter\" (one of udp-drop=P",
        ),
        ("nonsense", "udp-drop=P[,dir=request|reply]"),
    ] {
        let error = parse(text).unwrap_err();
        assert!(error.contains(needle), "{text:?}: {error}");
        assert!(error.starts_with("bad fault"), "{text:?}: {error}");
        assert!(!error.contains('\n'), "{text:?}: one line: {error}");
    }
}

#[test]
fn a_shown_datagram_spec_parses_back_to_itself() {
    for (text, shown) in [
        ("udp-drop=0.1", "udp-drop=0.1"),
        ("udp-drop=0.1,dir=reply", "udp-drop=0.1"),
        ("udp-drop=0.25,dir=request", "udp-drop=0.25,dir=request"),
        ("udp-dup=0.2", "udp-dup=0.2"),
        ("udp-reorder=8", "udp-reorder=8"),
        ("udp-delay=50ms", "udp-delay=50ms"),
        ("udp-delay=50ms+-10ms", "udp-delay=50ms±10ms"),
        ("udp-delay=0.05±0.01", "udp-delay=50ms±10ms"),
        ("udp-corrupt=1", "udp-corrupt=1"),
        ("udp-truncate=8", "udp-truncate=8"),
        ("udp-truncate=1KiB", "udp-truncate=1024"),
        ("udp-rate=1000/s", "udp-rate=1000"),
    ] {
        let spec = parse(text).unwrap();
        assert_eq!(spec.to_string(), shown, "{text}");
        assert_eq!(parse(&spec.to_string()), Ok(spec));
    }
}

#[test]
fn a_datagram_fault_takes_no_session_probability_and_counts_datagrams() {
    let kind = FaultKind::Udp(UdpFault::Dup { p: 0.5 });
    assert!(FaultSpec::new(kind, 0.5).is_err());
    let spec = FaultSpec::new(kind, 1.0).unwrap();
    assert_eq!(spec.touches(), "datagrams");
    assert_eq!(parse("reset").unwrap().touches(), "sessions");
}

#[test]
fn a_session_never_draws_a_datagram_fault() {
    let faults = Faults::new(1, &[parse("udp-drop=1").unwrap()]);
    let now = std::time::Instant::now();
    let session = crate::server::session::SessionId(1);
    assert!(faults.draw(session, now, false).is_none());
    assert!(faults.draw(session, now, true).is_none());
    assert!(faults.draw_handshake(session).is_none());
    assert_eq!(faults.udp_active().len(), 1);
    assert_eq!(faults.list()[0].sessions, 0);
}

#[test]
fn every_add_and_clear_is_a_change_the_datapath_sees() {
    let faults = Faults::new(1, &[]);
    let before = faults.changes();
    let id = faults.add(parse("udp-dup=0.5").unwrap());
    let added = faults.changes();
    assert_ne!(before, added);
    faults.add(parse("latency,delay=1ms").unwrap());
    assert_eq!(faults.udp_active().len(), 1);
    faults.clear(Some(id));
    assert_ne!(faults.changes(), added);
    assert!(faults.udp_active().is_empty());
}
