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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::outbox::Mailbox;
use super::session::SessionId;
use crate::units::{self, show_duration, show_size};

mod pacing;

pub(crate) use pacing::{End, Pacing};

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

/// A fault's number in the live set: shown by `/fault`, taken by `/fault clear ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FaultId(pub u64);

impl fmt::Display for FaultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for FaultId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim_start_matches('#').parse().map(FaultId)
    }
}

/// One fault of the live set, as [`Faults::list`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultInfo {
    /// Its number.
    pub id: FaultId,
    /// What it does.
    pub spec: FaultSpec,
    /// How many sessions it touched so far.
    pub sessions: u64,
    /// Whether new sessions may still get it (`false` once cleared).
    pub active: bool,
}

/// One fault in the live set, shared with the sessions that drew it.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) id: FaultId,
    pub(crate) spec: FaultSpec,
    touched: AtomicU64,
    cleared: AtomicBool,
}

impl Active {
    pub(crate) fn is_cleared(&self) -> bool {
        self.cleared.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct Set {
    next_id: u64,
    /// Every fault ever added, in order; cleared ones stay for their counts.
    all: Vec<Arc<Active>>,
}

#[derive(Debug)]
struct Inner {
    seed: u64,
    set: RwLock<Set>,
    /// Bumped by every clear, so each worker looks at its faulted sessions once.
    generation: AtomicU64,
    /// The workers' doorbells, rung after a clear.
    mailboxes: Mutex<Vec<Arc<Mailbox>>>,
}

/// The live set of faults of one server: shared by its workers (which draw from it for each
/// new session), the console and the admin endpoint. A cheap-clone handle.
///
/// Adding a fault affects the sessions that connect from then on. Clearing one ends it for
/// new sessions and for the sessions that have it: what it holds is sent at once.
///
/// # Examples
///
/// ```
/// use tcpool::server::faults::{FaultId, Faults};
///
/// let faults = Faults::new(7, &[]);
/// let id = faults.add("latency,delay=20ms".parse()?);
/// assert_eq!(id, FaultId(1));
/// assert_eq!(faults.list().len(), 1);
/// assert_eq!(faults.clear(Some(id)), 1);
/// assert!(faults.list().iter().all(|f| !f.active));
/// # Ok::<(), tcpool::server::faults::FaultError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults::new(random_seed(), &[])
    }
}

impl Faults {
    /// A live set holding `specs` (numbered from 1), drawing with `seed`.
    pub fn new(seed: u64, specs: &[FaultSpec]) -> Self {
        let faults = Faults {
            inner: Arc::new(Inner {
                seed,
                set: RwLock::new(Set::default()),
                generation: AtomicU64::new(0),
                mailboxes: Mutex::new(Vec::new()),
            }),
        };
        for &spec in specs {
            faults.add(spec);
        }
        faults
    }

    /// The seed of the per-session draws.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// Adds a fault for the sessions that connect from now on; returns its number.
    pub fn add(&self, spec: FaultSpec) -> FaultId {
        let mut set = self.inner.set.write();
        set.next_id += 1;
        let id = FaultId(set.next_id);
        set.all.push(Arc::new(Active {
            id,
            spec,
            touched: AtomicU64::new(0),
            cleared: AtomicBool::new(false),
        }));
        id
    }

    /// Ends fault `id`, or every fault with `None`, for new sessions and for the sessions
    /// that have it. Returns how many active faults were cleared (0: no such active fault).
    pub fn clear(&self, id: Option<FaultId>) -> usize {
        let cleared = {
            let set = self.inner.set.read();
            set.all
                .iter()
                .filter(|f| id.is_none_or(|id| f.id == id))
                .filter(|f| !f.cleared.swap(true, Ordering::Relaxed))
                .count()
        };
        if cleared > 0 {
            self.inner.generation.fetch_add(1, Ordering::Relaxed);
            for mailbox in self.inner.mailboxes.lock().iter() {
                mailbox.wake();
            }
        }
        cleared
    }

    /// Every fault added so far, cleared ones included, in the order they were added.
    pub fn list(&self) -> Vec<FaultInfo> {
        let set = self.inner.set.read();
        set.all
            .iter()
            .map(|f| FaultInfo {
                id: f.id,
                spec: f.spec,
                sessions: f.touched.load(Ordering::Relaxed),
                active: !f.is_cleared(),
            })
            .collect()
    }

    /// How many sessions each fault touched, on one line (`#1 latency,delay=20ms: 12
    /// sessions, #2 reset,after=3 (cleared): 4 sessions`); empty when no fault was ever set.
    pub fn touched(&self) -> String {
        let parts: Vec<String> = self
            .list()
            .iter()
            .map(|f| {
                let cleared = if f.active { "" } else { " (cleared)" };
                format!("#{} {}{cleared}: {} sessions", f.id, f.spec, f.sessions)
            })
            .collect();
        parts.join(", ")
    }

    /// The faults that new sessions may still get.
    pub fn active(&self) -> Vec<FaultInfo> {
        self.list().into_iter().filter(|f| f.active).collect()
    }

    /// Worker side: rings `mailbox` whenever a fault is cleared.
    pub(crate) fn watch(&self, mailbox: Arc<Mailbox>) {
        self.inner.mailboxes.lock().push(mailbox);
    }

    /// Worker side: changes with every clear.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Relaxed)
    }

    /// Draws the faults of a new session: one draw per active fault, in the order they were
    /// added, from the session's own generator, which then goes on to the jitter draws.
    /// `None` (and nothing held) for a session that got none.
    pub(crate) fn draw(&self, session: SessionId, connected: Instant) -> Option<Pacing> {
        let set = self.inner.set.read();
        if set.all.iter().all(|f| f.is_cleared()) {
            return None;
        }
        let mut rng = Rng::for_session(self.inner.seed, session.0);
        let drawn: Vec<Arc<Active>> = set
            .all
            .iter()
            .filter(|f| !f.is_cleared())
            .filter(|f| rng.unit() < f.spec.p)
            .cloned()
            .collect();
        drop(set);
        if drawn.is_empty() {
            return None;
        }
        for fault in &drawn {
            fault.touched.fetch_add(1, Ordering::Relaxed);
        }
        Some(Pacing::new(session, drawn, rng, connected))
    }
}

/// A seed for a run without `--seed`: different each run.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// A small, fast, seedable generator (SplitMix64): the per-session draws need
/// reproducibility, not cryptographic strength.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// The generator for one session: the same seed and session id give the same draws.
    pub(crate) fn for_session(seed: u64, session: u64) -> Self {
        let mut rng = Rng(seed ^ session.wrapping_mul(0xD1B5_4A32_D192_ED03));
        rng.next();
        rng
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
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

    proptest::proptest! {
        #[test]
        fn parse_never_panics(text in ".{0,64}") {
            let _ = text.parse::<FaultSpec>();
        }
    }
}
