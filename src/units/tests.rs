use super::*;

fn d(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

fn s(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| e.to_string())
}

#[test]
fn millis_are_plain_numbers() {
    assert_eq!(
        Millis(Duration::from_micros(1_203_511)).to_string(),
        "1203.511"
    );
    assert_eq!(Millis(Duration::from_millis(250)).to_string(), "250");
    assert_eq!(Millis(Duration::from_nanos(1_500)).to_string(), "0.002");
    assert_eq!(Millis(Duration::ZERO).to_string(), "0");
    assert_eq!(Millis(Duration::from_secs(300)).to_string(), "300000");
}

#[test]
fn human_durations_are_short() {
    assert_eq!(human_duration(Duration::from_millis(12_340)), "12.3s");
    assert_eq!(human_duration(Duration::from_secs(185)), "3m05s");
    assert_eq!(human_duration(Duration::from_secs(3720)), "1h02m");
}

#[test]
fn durations_in_every_unit() {
    assert_eq!(d("10"), Ok(Duration::from_secs(10)));
    assert_eq!(d("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(d("0"), Ok(Duration::ZERO));
    assert_eq!(d("1.5"), Ok(Duration::from_millis(1500)));
    assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(d("100us"), Ok(Duration::from_micros(100)));
    assert_eq!(d("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(d("2h"), Ok(Duration::from_secs(7200)));
    assert_eq!(d(" 3 s "), Ok(Duration::from_secs(3)));
    assert_eq!(d(".5s"), Ok(Duration::from_millis(500)));
    assert_eq!(d("2e3ms"), Ok(Duration::from_secs(2)));
    assert_eq!(d("1.5e-3"), Ok(Duration::from_micros(1500)));
    assert_eq!(d("0.000000001"), Ok(Duration::from_nanos(1)));
    assert_eq!(d("500ns"), Ok(Duration::from_nanos(500)));
    assert_eq!(d("0.0s"), Ok(Duration::ZERO));
    assert_eq!(d("1.9ns"), Ok(Duration::from_nanos(1)));
    assert_eq!(d("8760h"), Ok(MAX_DURATION));
}

#[test]
fn many_digits_do_not_overflow_into_the_limit() {
    let hour = Ok(Duration::from_secs(3600));
    assert_eq!(d("1.00000000000000000000000000000000h"), hour);
    assert_eq!(d("1000000000000000000000000000000e-30h"), hour);
    assert_eq!(
        d("0.999999999999999999999999999999999999999h"),
        d("3599.999999999s")
    );
    assert_eq!(d("1.0000000000000000000000000000000000000001h"), hour);
    assert_eq!(d("1000000000000000000000000000000000001e-39h"), d("3.6s"));
    assert_eq!(s("1.00000000000000000000000000000000000GiB"), Ok(1 << 30));
    // Whole bytes with 34 significant digits: 2^40 - 1 bytes.
    assert_eq!(
        s("1023.999999999068677425384521484375GiB"),
        Ok(MAX_SIZE - 1)
    );
    let tail = s("1.0000000000000000000000000000000000000001KB").unwrap_err();
    assert!(tail.contains("whole number of bytes"), "{tail}");
}

#[test]
fn durations_out_of_bounds_or_malformed_are_refused() {
    for (text, why) in [
        ("1e19", "longer than the limit of 8760h (365 days)"),
        ("1e400", "longer than the limit"),
        ("8761h", "longer than the limit"),
        (
            "99999999999999999999999999999999999999999999",
            "longer than",
        ),
        ("-1", "negative"),
        ("-0.5s", "negative"),
        ("-.5s", "negative"),
        ("--port", "start with a number"),
        ("NaN", "finite"),
        ("inf", "finite"),
        ("", "start with a number"),
        ("s", "start with a number"),
        ("ten", "start with a number"),
        ("10x", "unknown unit \"x\""),
        ("10S", "unknown unit"),
        ("10 ms ms", "unknown unit"),
        ("1.2.3", "unknown unit"),
        ("10KiB", "ns, us, ms, s, m or h"),
        // Not zero, yet nothing left once rounded down to whole nanoseconds: refused
        // rather than taken as 0, which means "never" to `--idle-timeout`.
        ("1e-12", "shorter than 1ns"),
        ("0.0000000001", "shorter than 1ns"),
        ("0.5ns", "shorter than 1ns"),
    ] {
        let error = d(text).expect_err(text);
        assert!(error.contains(why), "{text:?}: {error}");
    }
}

#[test]
fn sizes_in_every_unit() {
    assert_eq!(s("0"), Ok(0));
    assert_eq!(s("4096"), Ok(4096));
    assert_eq!(s("10B"), Ok(10));
    assert_eq!(s("64KiB"), Ok(65_536));
    assert_eq!(s("64kib"), Ok(65_536));
    assert_eq!(s("1MiB"), Ok(1 << 20));
    assert_eq!(s("2GiB"), Ok(2 << 30));
    assert_eq!(s("1KB"), Ok(1000));
    assert_eq!(s("1.5 MB"), Ok(1_500_000));
    assert_eq!(s("1GB"), Ok(1_000_000_000));
    assert_eq!(s("0.1KB"), Ok(100));
    assert_eq!(s("1.5KiB"), Ok(1536));
    assert_eq!(s("1024GiB"), Ok(MAX_SIZE));
}

#[test]
fn sizes_out_of_bounds_or_malformed_are_refused() {
    for (text, why) in [
        ("1025GiB", "larger than the limit of 1024GiB"),
        ("1e19", "larger than the limit"),
        ("-1", "negative"),
        ("nan", "finite"),
        ("0.5", "whole number of bytes"),
        ("1.0001KB", "whole number of bytes"),
        ("10 bytes", "unknown unit"),
        ("10k", "B, KiB, MiB, GiB, KB, MB or GB"),
        ("10s", "unknown unit"),
        ("", "start with a number"),
    ] {
        let error = s(text).expect_err(text);
        assert!(error.contains(why), "{text:?}: {error}");
    }
}

#[test]
fn shown_values_parse_back() {
    for text in ["90s", "5m", "2h", "250ms", "100us", "500ns", "1500ns", "0s"] {
        assert_eq!(show_duration(d(text).unwrap()), text);
    }
    for text in ["64KiB", "1MiB", "3GiB", "1000B", "0B"] {
        assert_eq!(show_size(s(text).unwrap()), text);
    }
    assert_eq!(show_duration(Duration::from_secs(90)), "90s");
    assert_eq!(show_size(MAX_SIZE), "1024GiB");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsing_never_panics_and_stays_in_bounds(text in "\\PC{0,24}") {
            if let Ok(d) = parse_duration(&text) {
                prop_assert!(d <= MAX_DURATION);
            }
            if let Ok(n) = parse_size(&text) {
                prop_assert!(n <= MAX_SIZE);
            }
        }

        #[test]
        fn every_duration_shown_parses_back_to_itself(nanos in 0u64..=MAX_DURATION.as_nanos() as u64) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_duration(&show_duration(d)), Ok(d));
        }

        #[test]
        fn every_size_shown_parses_back_to_itself(bytes in 0u64..=MAX_SIZE) {
            prop_assert_eq!(parse_size(&show_size(bytes)), Ok(bytes));
        }

        #[test]
        fn whole_numbers_of_a_unit_parse_exactly(n in 0u64..100_000, unit in 0usize..DURATION_UNITS.len()) {
            let (name, scale) = DURATION_UNITS[unit];
            let nanos = u128::from(n) * scale;
            let parsed = parse_duration(&format!("{n}{name}"));
            if nanos <= MAX_DURATION.as_nanos() {
                prop_assert_eq!(parsed.unwrap().as_nanos(), nanos);
            } else {
                prop_assert!(parsed.is_err());
            }
            prop_assert_eq!(parse_size(&format!("{n}KiB")).unwrap(), n * 1024);
        }
    }
}
