use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<FaultSpec, String> {
    text.parse::<FaultSpec>().map_err(|e| e.to_string())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn every_kind_parses() {
    let cases = [
        (
            "latency,delay=20ms",
            FaultKind::Latency {
                delay: ms(20),
                jitter: Duration::ZERO,
            },
        ),
        (
            "latency, delay=1.5s, jitter=250ms",
            FaultKind::Latency {
                delay: ms(1500),
                jitter: ms(250),
            },
        ),
        (
            "bandwidth,rate=64KiB",
            FaultKind::Bandwidth { rate: 65_536 },
        ),
        (
            "bandwidth,rate=1MB",
            FaultKind::Bandwidth { rate: 1_000_000 },
        ),
        (
            "slice,size=4,delay=10ms",
            FaultKind::Slice {
                size: 4,
                delay: ms(10),
            },
        ),
        (
            "stall,after=3,for=2s",
            FaultKind::Stall {
                after: After::Replies(3),
                duration: Some(ms(2000)),
            },
        ),
        (
            "stall,after=2s",
            FaultKind::Stall {
                after: After::Time(ms(2000)),
                duration: None,
            },
        ),
        (
            "stall",
            FaultKind::Stall {
                after: After::Replies(0),
                duration: None,
            },
        ),
        (
            "reset,after=5",
            FaultKind::Reset {
                after: After::Replies(5),
            },
        ),
        (
            "close,after=100ms",
            FaultKind::Close {
                after: After::Time(ms(100)),
            },
        ),
        ("truncate,bytes=3", FaultKind::Truncate { bytes: 3 }),
        ("truncate,bytes=1KiB", FaultKind::Truncate { bytes: 1024 }),
        (
            "tls-delay,delay=2s,jitter=100ms",
            FaultKind::TlsDelay {
                delay: ms(2000),
                jitter: ms(100),
            },
        ),
        (
            "tls-abort",
            FaultKind::TlsAbort {
                at: AbortAt::AfterHello,
            },
        ),
        (
            "tls-abort,at=mid-handshake",
            FaultKind::TlsAbort {
                at: AbortAt::MidHandshake,
            },
        ),
        ("tls-alert", FaultKind::TlsAlert { alert: 40 }),
        (
            "tls-alert,alert=unrecognized_name",
            FaultKind::TlsAlert { alert: 112 },
        ),
        ("tls-alert,alert=77", FaultKind::TlsAlert { alert: 77 }),
        (
            "tls-cert,cert=wrong-name",
            FaultKind::TlsCert {
                cert: BadCert::WrongName,
            },
        ),
        (
            "tls-truncate,after=2s",
            FaultKind::TlsTruncate {
                after: After::Time(ms(2000)),
            },
        ),
    ];
    for (text, kind) in cases {
        assert_eq!(parse(text), Ok(FaultSpec { kind, p: 1.0 }), "{text}");
    }
}

#[test]
fn p_is_a_probability() {
    assert_eq!(parse("reset,p=0.25").map(|s| s.p), Ok(0.25));
    assert_eq!(parse("reset,p=0").map(|s| s.p), Ok(0.0));
    assert_eq!(parse("reset,p=1").map(|s| s.p), Ok(1.0));
    for bad in ["reset,p=1.5", "reset,p=-0.1", "reset,p=NaN", "reset,p=half"] {
        let error = parse(bad).expect_err(bad);
        assert!(error.contains("p: "), "{bad}: {error}");
    }
    assert!(FaultSpec::new(FaultKind::Truncate { bytes: 1 }, 2.0).is_err());
}

#[test]
fn a_bare_after_counts_replies_and_a_unit_makes_it_a_duration() {
    let after = |text: &str| match parse(text).unwrap().kind {
        FaultKind::Reset { after } => after,
        other => panic!("{other:?}"),
    };
    assert_eq!(after("reset,after=0"), After::Replies(0));
    assert_eq!(after("reset,after=10"), After::Replies(10));
    assert_eq!(after("reset,after=10s"), After::Time(ms(10_000)));
    assert_eq!(after("reset,after=1.5"), After::Time(ms(1500)));
    assert_eq!(after("reset,after=250ms"), After::Time(ms(250)));
}

#[test]
fn bad_specs_name_the_key() {
    for (text, why) in [
        ("", "names no kind"),
        ("jam", "unknown kind \"jam\""),
        ("latency", "delay: missing"),
        ("latency,delay=soon", "delay: \"soon\" is not a duration"),
        (
            "latency,delay=10KiB",
            "delay: \"10KiB\" has an unknown unit",
        ),
        (
            "latency,delay=20ms,jitter=-1ms",
            "jitter: \"-1ms\" is not a duration",
        ),
        ("latency,delay=20ms,rate=1", "latency takes no key \"rate\""),
        ("latency,delay=20ms,delay=30ms", "delay: given twice"),
        ("latency,20ms", "\"20ms\" is not key=value"),
        ("bandwidth", "rate: missing"),
        ("bandwidth,rate=0", "rate: must be more than 0"),
        ("bandwidth,rate=1ms", "rate: \"1ms\" has an unknown unit"),
        ("slice,delay=1ms", "size: missing"),
        ("slice,size=0", "size: must be more than 0"),
        ("stall,for=forever", "for: \"forever\" is not a duration"),
        ("reset,after=soon", "after: \"soon\" is not a duration"),
        ("reset,after=99999999999999999999999", "after: "),
        ("close,bytes=3", "close takes no key \"bytes\""),
        ("truncate", "bytes: missing"),
        ("truncate,bytes=0.5", "bytes: \"0.5\" is not a whole number"),
        (
            "tls-abort,at=never",
            "at: \"never\" is not after-hello or mid-handshake",
        ),
        (
            "tls-alert,alert=rude",
            "alert: \"rude\" is not an alert's name",
        ),
        (
            "tls-alert,alert=300",
            "alert: \"300\" is not an alert's name",
        ),
        ("tls-cert", "cert: missing"),
        ("tls-cert,cert=stolen", "cert: \"stolen\" is not expired"),
        ("tls-delay", "delay: missing"),
    ] {
        let error = parse(text).expect_err(text);
        assert!(error.contains(why), "{text:?}: {error}");
        assert!(!error.contains('\n'), "{text:?}: one line: {error}");
    }
}

#[test]
fn a_shown_spec_parses_back_to_itself() {
    for text in [
        "latency,delay=20ms",
        "latency,delay=1s,jitter=5ms,p=0.5",
        "bandwidth,rate=256KiB",
        "slice,size=4B,delay=10ms",
        "slice,size=1KiB",
        "stall,after=3,for=2s",
        "stall,after=2s",
        "reset,after=0",
        "close,after=250ms,p=0.1",
        "truncate,bytes=3",
        "tls-delay,delay=500ms,jitter=50ms,p=0.5",
        "tls-abort,at=after-hello",
        "tls-alert,alert=internal_error",
        "tls-alert,alert=77",
        "tls-cert,cert=self-signed",
        "tls-truncate,after=3",
    ] {
        let spec = parse(text).unwrap();
        assert_eq!(spec.to_string(), text);
        assert_eq!(parse(&spec.to_string()), Ok(spec));
    }
}

#[test]
fn the_generator_is_reproducible_and_roughly_uniform() {
    let draws = |seed, session| {
        let mut rng = Rng::for_session(seed, session);
        (0..4).map(|_| rng.next()).collect::<Vec<_>>()
    };
    assert_eq!(draws(7, 1), draws(7, 1));
    assert_ne!(draws(7, 1), draws(7, 2));
    assert_ne!(draws(7, 1), draws(8, 1));
    let below_half = (0..10_000)
        .filter(|&s| Rng::for_session(42, s).unit() < 0.5)
        .count();
    assert!((4_500..5_500).contains(&below_half), "{below_half}");
    let mut rng = Rng::for_session(0, 0);
    assert!(
        (0..1000)
            .map(|_| rng.unit())
            .all(|u| (0.0..1.0).contains(&u))
    );
}

#[test]
fn cleared_faults_are_forgotten_but_the_last_few() {
    let faults = Faults::new(1, &[]);
    let kept = faults.add("latency,delay=1s".parse().unwrap());
    for _ in 0..2000 {
        let id = faults.add("latency,delay=500ns".parse().unwrap());
        assert_eq!(faults.clear(Some(id)), 1);
    }
    let list = faults.list();
    assert_eq!(list.len(), 1 + CLEARED_KEPT);
    assert_eq!((list[0].id, list[0].active), (kept, true));
    // The most recent cleared ones, in order.
    let ids: Vec<u64> = list[1..].iter().map(|f| f.id.0).collect();
    let last: Vec<u64> = (2002 - CLEARED_KEPT as u64..2002).collect();
    assert_eq!(ids, last);
    assert!(list[1..].iter().all(|f| !f.active));
    // Clearing a forgotten fault again finds nothing.
    assert_eq!(faults.clear(Some(FaultId(2))), 0);
}

proptest::proptest! {
    #[test]
    fn parse_never_panics(text in ".{0,64}") {
        let _ = text.parse::<FaultSpec>();
    }
}

mod shown {
    use super::*;
    use crate::units::{MAX_DURATION, MAX_SIZE};
    use proptest::prelude::*;

    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (0u64..2_000_000).prop_map(Duration::from_nanos),
            (0u64..=MAX_DURATION.as_nanos() as u64).prop_map(Duration::from_nanos),
            (0u64..=MAX_DURATION.as_secs()).prop_map(Duration::from_secs),
        ]
    }

    fn after() -> impl Strategy<Value = After> {
        prop_oneof![
            any::<u64>().prop_map(After::Replies),
            duration().prop_map(After::Time)
        ]
    }

    fn kind() -> impl Strategy<Value = FaultKind> {
        prop_oneof![
            (duration(), duration())
                .prop_map(|(delay, jitter)| FaultKind::Latency { delay, jitter }),
            (1..=MAX_SIZE).prop_map(|rate| FaultKind::Bandwidth { rate }),
            (1..=MAX_SIZE, duration()).prop_map(|(size, delay)| FaultKind::Slice { size, delay }),
            (after(), proptest::option::of(duration()))
                .prop_map(|(after, duration)| FaultKind::Stall { after, duration }),
            after().prop_map(|after| FaultKind::Reset { after }),
            after().prop_map(|after| FaultKind::Close { after }),
            (0..=MAX_SIZE).prop_map(|bytes| FaultKind::Truncate { bytes }),
            (duration(), duration())
                .prop_map(|(delay, jitter)| FaultKind::TlsDelay { delay, jitter }),
            prop_oneof![Just(AbortAt::AfterHello), Just(AbortAt::MidHandshake)]
                .prop_map(|at| FaultKind::TlsAbort { at }),
            any::<u8>().prop_map(|alert| FaultKind::TlsAlert { alert }),
            prop_oneof![
                Just(BadCert::Expired),
                Just(BadCert::WrongName),
                Just(BadCert::SelfSigned)
            ]
            .prop_map(|cert| FaultKind::TlsCert { cert }),
            after().prop_map(|after| FaultKind::TlsTruncate { after }),
        ]
    }

    fn probability() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(1.0),
            Just(0.0),
            0.0..=1.0f64,
            (0u32..=1000).prop_map(|n| f64::from(n) / 1000.0)
        ]
    }

    proptest! {
        /// What `/faults`, `/fault` and the logs show can be posted back as it is.
        #[test]
        fn a_shown_spec_parses_back_to_itself(kind in kind(), p in probability()) {
            let spec = FaultSpec::new(kind, p).unwrap();
            let shown = spec.to_string();
            prop_assert_eq!(shown.parse::<FaultSpec>().map_err(|e| e.to_string()), Ok(spec), "{}", shown);
        }
    }
}
