//! Faults: a server that misbehaves on purpose, so a client under test shows what it does with
//! latency, a thin pipe, dribbled replies, silence, resets and early closes.
//!
//! A [`FaultSpec`] is what the operator writes, `KIND[,key=value...]` (`latency,delay=20ms`),
//! parsed with the one grammar of [`units`](crate::units) for durations and sizes. Every kind
//! takes `p=P`, the chance (0–1, default 1) that a new session gets it, drawn once when the
//! session connects from a generator seeded by the server's seed and the session's id, so the
//! same seed and the same order of connections give the same sessions the same faults and the
//! same jitter draws.
//!
//! This module owns the specs and their parser, the live set of faults ([`Faults`], shared by
//! the workers, the console and the admin endpoint) and the per-session draw; `pacing` owns what
//! a faulted session's replies go through. The worker only holds a faulted session's replies
//! there and acts on what comes out; an unfaulted session never touches any of it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::units::{self, show_duration, show_size};

/// When a `stall`, `reset` or `close` acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Once the session has been sent this many replies (`after=3`).
    Replies(u64),
    /// This long after the session connected (`after=2s`).
    Time(Duration),
}

impl fmt::Display for After {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            After::Replies(n) => write!(f, "{n}"),
            After::Time(d) => f.write_str(&show_duration(*d)),
        }
    }
}

/// What a faulted session gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Every reply held for `delay` ± `jitter` (uniform), order kept.
    Latency {
        /// How long each reply is held.
        delay: Duration,
        /// The most a hold differs from `delay`, either way.
        jitter: Duration,
    },
    /// Replies paced to `rate` bytes per second, with a burst of at most one read (64 KiB).
    Bandwidth {
        /// Bytes per second.
        rate: u64,
    },
    /// Every reply written in pieces of `size` bytes, `delay` apart.
    Slice {
        /// The largest piece, in bytes.
        size: u64,
        /// The pause between pieces.
        delay: Duration,
    },
    /// Input stops being read and nothing is sent, for `duration` (`None`: for good).
    Stall {
        /// When the stall begins.
        after: After,
        /// How long it lasts.
        duration: Option<Duration>,
    },
    /// The connection is reset (RST, no goodbye).
    Reset {
        /// When.
        after: After,
    },
    /// The connection is closed plainly (FIN, no `quit`).
    Close {
        /// When.
        after: After,
    },
    /// Only the first `bytes` bytes of each reply are sent.
    Truncate {
        /// How much of each reply is kept.
        bytes: u64,
    },
}

impl FaultKind {
    /// The kind's name, as a spec starts.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Latency { .. } => "latency",
            FaultKind::Bandwidth { .. } => "bandwidth",
            FaultKind::Slice { .. } => "slice",
            FaultKind::Stall { .. } => "stall",
            FaultKind::Reset { .. } => "reset",
            FaultKind::Close { .. } => "close",
            FaultKind::Truncate { .. } => "truncate",
        }
    }
}

/// One fault as the operator wrote it: a kind and the chance that a new session gets it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tcpool::server::faults::{FaultKind, FaultSpec};
///
/// let spec: FaultSpec = "latency,delay=20ms,jitter=5ms,p=0.5".parse()?;
/// assert_eq!(
///     spec.kind,
///     FaultKind::Latency { delay: Duration::from_millis(20), jitter: Duration::from_millis(5) }
/// );
/// assert_eq!(spec.p, 0.5);
/// assert_eq!(spec.to_string(), "latency,delay=20ms,jitter=5ms,p=0.5");
///
/// let error = "latency,delay=soon".parse::<FaultSpec>().unwrap_err();
/// assert!(error.to_string().contains("delay"));
/// # Ok::<(), tcpool::server::faults::FaultError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultSpec {
    /// What the session gets.
    pub kind: FaultKind,
    /// The chance, 0 to 1, that a new session gets it.
    pub p: f64,
}

// `p` is never NaN: the parser refuses it, and so does `FaultSpec::new`.
impl Eq for FaultSpec {}

impl FaultSpec {
    /// A fault that every new session gets with probability `p`.
    ///
    /// # Errors
    ///
    /// When `p` is not between 0 and 1.
    pub fn new(kind: FaultKind, p: f64) -> Result<Self, FaultError> {
        if !(0.0..=1.0).contains(&p) {
            return Err(FaultError::new(
                kind.name(),
                format!("p: {p} is not a probability between 0 and 1"),
            ));
        }
        Ok(FaultSpec { kind, p })
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())?;
        match self.kind {
            FaultKind::Latency { delay, jitter } => {
                write!(f, ",delay={}", show_duration(delay))?;
                if !jitter.is_zero() {
                    write!(f, ",jitter={}", show_duration(jitter))?;
                }
            }
            FaultKind::Bandwidth { rate } => write!(f, ",rate={}", show_size(rate))?,
            FaultKind::Slice { size, delay } => {
                write!(f, ",size={}", show_size(size))?;
                if !delay.is_zero() {
                    write!(f, ",delay={}", show_duration(delay))?;
                }
            }
            FaultKind::Stall { after, duration } => {
                write!(f, ",after={after}")?;
                if let Some(d) = duration {
                    write!(f, ",for={}", show_duration(d))?;
                }
            }
            FaultKind::Reset { after } | FaultKind::Close { after } => {
                write!(f, ",after={after}")?;
            }
            FaultKind::Truncate { bytes } => write!(f, ",bytes={bytes}")?,
        }
        if self.p < 1.0 {
            write!(f, ",p={}", self.p)?;
        }
        Ok(())
    }
}

/// Why a fault spec was not understood: one line that names the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultError {
    spec: String,
    reason: String,
}

impl FaultError {
    fn new(spec: &str, reason: String) -> Self {
        FaultError {
            spec: spec.to_owned(),
            reason,
        }
    }
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad fault {:?}: {}", self.spec, self.reason)
    }
}

impl std::error::Error for FaultError {}

const KINDS: &str = "latency, bandwidth, slice, stall, reset, close or truncate";

/// The keys each kind takes, besides `p`.
fn keys_of(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "latency" => &["delay", "jitter"],
        "bandwidth" => &["rate"],
        "slice" => &["size", "delay"],
        "stall" => &["after", "for"],
        "reset" | "close" => &["after"],
        "truncate" => &["bytes"],
        _ => return None,
    })
}

impl FromStr for FaultSpec {
    type Err = FaultError;

    fn from_str(text: &str) -> Result<Self, FaultError> {
        let spec = text.trim();
        let fail = |reason: String| FaultError::new(spec, reason);
        let mut parts = spec.split(',').map(str::trim);
        let kind = parts.next().unwrap_or_default();
        if kind.is_empty() {
            return Err(fail(format!("it names no kind (one of {KINDS})")));
        }
        let Some(allowed) = keys_of(kind) else {
            return Err(fail(format!("unknown kind {kind:?} (one of {KINDS})")));
        };
        let mut values: Vec<(&str, &str)> = Vec::new();
        for part in parts {
            let Some((key, value)) = part.split_once('=') else {
                return Err(fail(format!(
                    "{part:?} is not key=value ({kind} takes {}, p)",
                    allowed.join(", ")
                )));
            };
            let (key, value) = (key.trim(), value.trim());
            if key != "p" && !allowed.contains(&key) {
                return Err(fail(format!(
                    "{kind} takes no key {key:?} (it takes {}, p)",
                    allowed.join(", ")
                )));
            }
            if values.iter().any(|&(k, _)| k == key) {
                return Err(fail(format!("{key}: given twice")));
            }
            values.push((key, value));
        }
        let get = |key: &str| values.iter().find(|&&(k, _)| k == key).map(|&(_, v)| v);
        let duration = |key: &str| -> Result<Option<Duration>, FaultError> {
            get(key)
                .map(|v| units::parse_duration(v).map_err(|e| fail(format!("{key}: {e}"))))
                .transpose()
        };
        let size = |key: &str| -> Result<Option<u64>, FaultError> {
            get(key)
                .map(|v| units::parse_size(v).map_err(|e| fail(format!("{key}: {e}"))))
                .transpose()
        };
        let required =
            |key: &str, what: &str| fail(format!("{key}: missing ({kind} needs {what})"));
        let positive = |key: &str, value: u64| {
            if value == 0 {
                Err(fail(format!("{key}: must be more than 0")))
            } else {
                Ok(value)
            }
        };
        let after = || -> Result<After, FaultError> {
            let Some(value) = get("after") else {
                return Ok(After::Replies(0));
            };
            // A bare number counts replies here; anything with a unit is a duration.
            if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                return value
                    .parse()
                    .map(After::Replies)
                    .map_err(|_| fail(format!("after: {value:?} is too many replies")));
            }
            units::parse_duration(value)
                .map(After::Time)
                .map_err(|e| fail(format!("after: {e} (a bare number counts replies)")))
        };
        let kind = match kind {
            "latency" => FaultKind::Latency {
                delay: duration("delay")?.ok_or_else(|| required("delay", "a duration"))?,
                jitter: duration("jitter")?.unwrap_or_default(),
            },
            "bandwidth" => FaultKind::Bandwidth {
                rate: positive(
                    "rate",
                    size("rate")?.ok_or_else(|| required("rate", "bytes per second"))?,
                )?,
            },
            "slice" => FaultKind::Slice {
                size: positive(
                    "size",
                    size("size")?.ok_or_else(|| required("size", "a size in bytes"))?,
                )?,
                delay: duration("delay")?.unwrap_or_default(),
            },
            "stall" => FaultKind::Stall {
                after: after()?,
                duration: duration("for")?,
            },
            "reset" => FaultKind::Reset { after: after()? },
            "close" => FaultKind::Close { after: after()? },
            "truncate" => FaultKind::Truncate {
                bytes: size("bytes")?.ok_or_else(|| required("bytes", "a size in bytes"))?,
            },
            _ => unreachable!("keys_of knows every kind"),
        };
        let p = match get("p") {
            None => 1.0,
            Some(value) => match value.parse::<f64>() {
                Ok(p) if (0.0..=1.0).contains(&p) => p,
                _ => {
                    return Err(fail(format!(
                        "p: {value:?} is not a probability between 0 and 1"
                    )));
                }
            },
        };
        Ok(FaultSpec { kind, p })
    }
}

#[cfg(test)]
mod tests {
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
        ] {
            let spec = parse(text).unwrap();
            assert_eq!(spec.to_string(), text);
            assert_eq!(parse(&spec.to_string()), Ok(spec));
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(text in ".{0,64}") {
            let _ = text.parse::<FaultSpec>();
        }
    }
}
