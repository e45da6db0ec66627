//! [`FaultSpec`]: a fault as the operator writes it (`latency,delay=20ms`), its parser and
//! how it is shown.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::units::{self, show_duration, show_size};

use super::udp_spec::{self, UDP_KINDS, UdpFault};

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
    /// TLS: the server's answer to the client's hello held for `delay` ± `jitter`: a slow
    /// handshake.
    TlsDelay {
        /// How long the handshake is held.
        delay: Duration,
        /// The most a hold differs from `delay`, either way.
        jitter: Duration,
    },
    /// TLS: the handshake cut off.
    TlsAbort {
        /// Where.
        at: AbortAt,
    },
    /// TLS: a fatal alert instead of the server's hello, then a close.
    TlsAlert {
        /// The alert's number (RFC 8446 section 6): `handshake_failure` is 40.
        alert: u8,
    },
    /// TLS: a bad certificate served in place of the real one.
    TlsCert {
        /// Which.
        cert: BadCert,
    },
    /// TLS: the connection closed with a FIN and no `close_notify`, which a client cannot
    /// tell from an attacker cutting the stream.
    TlsTruncate {
        /// When.
        after: After,
    },
    /// A datagram fault (`udp-drop=0.1`): for every `serve --udp` datagram while it is
    /// active, never for a session.
    Udp(UdpFault),
}

/// Where `tls-abort` cuts the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortAt {
    /// Once the client's hello has come, before any answer: a close.
    AfterHello,
    /// The server's first flight sent in part (half its bytes), then a close.
    MidHandshake,
}

/// The certificate `tls-cert` serves.
pub use crate::tls::make::Bad as BadCert;

/// TLS alerts by their RFC 8446 names, for `tls-alert,alert=NAME`.
const ALERTS: [(&str, u8); 24] = [
    ("close_notify", 0),
    ("unexpected_message", 10),
    ("bad_record_mac", 20),
    ("record_overflow", 22),
    ("handshake_failure", 40),
    ("bad_certificate", 42),
    ("unsupported_certificate", 43),
    ("certificate_revoked", 44),
    ("certificate_expired", 45),
    ("certificate_unknown", 46),
    ("illegal_parameter", 47),
    ("unknown_ca", 48),
    ("access_denied", 49),
    ("decode_error", 50),
    ("decrypt_error", 51),
    ("protocol_version", 70),
    ("insufficient_security", 71),
    ("internal_error", 80),
    ("inappropriate_fallback", 86),
    ("user_canceled", 90),
    ("missing_extension", 109),
    ("unsupported_extension", 110),
    ("unrecognized_name", 112),
    ("no_application_protocol", 120),
];

/// An alert's RFC name, or its number when it has none here.
fn alert_name(alert: u8) -> String {
    ALERTS
        .iter()
        .find(|&&(_, n)| n == alert)
        .map_or_else(|| alert.to_string(), |&(name, _)| name.to_owned())
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
            FaultKind::TlsDelay { .. } => "tls-delay",
            FaultKind::TlsAbort { .. } => "tls-abort",
            FaultKind::TlsAlert { .. } => "tls-alert",
            FaultKind::TlsCert { .. } => "tls-cert",
            FaultKind::TlsTruncate { .. } => "tls-truncate",
            FaultKind::Udp(udp) => udp.name(),
        }
    }

    /// A fault of the TLS handshake, drawn as a TLS connection arrives (before its
    /// handshake, so before it is a session); plaintext connections never get one.
    pub fn is_handshake(&self) -> bool {
        matches!(
            self,
            FaultKind::TlsDelay { .. }
                | FaultKind::TlsAbort { .. }
                | FaultKind::TlsAlert { .. }
                | FaultKind::TlsCert { .. }
        )
    }

    /// A fault for TLS sessions only.
    pub fn is_tls(&self) -> bool {
        self.is_handshake() || matches!(self, FaultKind::TlsTruncate { .. })
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
    /// The chance, 0 to 1, that a new session gets it; 1 for a datagram fault
    /// ([`FaultKind::Udp`]), whose own probability, if it has one, is per datagram.
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
        if kind.is_udp() && p != 1.0 {
            return Err(FaultError::new(
                kind.name(),
                format!("p: {p}: a datagram fault takes no p (it acts on every datagram)"),
            ));
        }
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
        if let FaultKind::Udp(udp) = self.kind {
            return udp.fmt(f);
        }
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
            FaultKind::Reset { after }
            | FaultKind::Close { after }
            | FaultKind::TlsTruncate { after } => {
                write!(f, ",after={after}")?;
            }
            FaultKind::Truncate { bytes } => write!(f, ",bytes={bytes}")?,
            FaultKind::TlsDelay { delay, jitter } => {
                write!(f, ",delay={}", show_duration(delay))?;
                if !jitter.is_zero() {
                    write!(f, ",jitter={}", show_duration(jitter))?;
                }
            }
            FaultKind::TlsAbort { at } => f.write_str(match at {
                AbortAt::AfterHello => ",at=after-hello",
                AbortAt::MidHandshake => ",at=mid-handshake",
            })?,
            FaultKind::TlsAlert { alert } => write!(f, ",alert={}", alert_name(alert))?,
            FaultKind::TlsCert { cert } => write!(f, ",cert={}", cert.name())?,
            FaultKind::Udp(_) => unreachable!("shown above"),
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
    pub(super) fn new(spec: &str, reason: String) -> Self {
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

const KINDS: &str = "latency, bandwidth, slice, stall, reset, close, truncate, tls-delay, \
                     tls-abort, tls-alert, tls-cert or tls-truncate; for --udp datagrams";

/// The keys each kind takes, besides `p`.
fn keys_of(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "latency" => &["delay", "jitter"],
        "bandwidth" => &["rate"],
        "slice" => &["size", "delay"],
        "stall" => &["after", "for"],
        "reset" | "close" => &["after"],
        "truncate" => &["bytes"],
        "tls-delay" => &["delay", "jitter"],
        "tls-abort" => &["at"],
        "tls-alert" => &["alert"],
        "tls-cert" => &["cert"],
        "tls-truncate" => &["after"],
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
            return Err(fail(format!(
                "it names no kind (one of {KINDS} {UDP_KINDS})"
            )));
        }
        if kind.starts_with("udp-") {
            let kind = FaultKind::Udp(udp_spec::parse(spec)?);
            return Ok(FaultSpec { kind, p: 1.0 });
        }
        let Some(allowed) = keys_of(kind) else {
            return Err(fail(format!(
                "unknown kind {kind:?} (one of {KINDS} {UDP_KINDS})"
            )));
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
            "tls-delay" => FaultKind::TlsDelay {
                delay: duration("delay")?.ok_or_else(|| required("delay", "a duration"))?,
                jitter: duration("jitter")?.unwrap_or_default(),
            },
            "tls-abort" => FaultKind::TlsAbort {
                at: match get("at") {
                    None | Some("after-hello") => AbortAt::AfterHello,
                    Some("mid-handshake") => AbortAt::MidHandshake,
                    Some(other) => {
                        return Err(fail(format!(
                            "at: {other:?} is not after-hello or mid-handshake"
                        )));
                    }
                },
            },
            "tls-alert" => FaultKind::TlsAlert {
                alert: match get("alert") {
                    None => 40,
                    Some(value) => match ALERTS.iter().find(|&&(name, _)| name == value) {
                        Some(&(_, n)) => n,
                        None => value.parse().map_err(|_| {
                            fail(format!(
                                "alert: {value:?} is not an alert's name (such as \
                                 handshake_failure, protocol_version, internal_error) or \
                                 number"
                            ))
                        })?,
                    },
                },
            },
            "tls-cert" => FaultKind::TlsCert {
                cert: match get("cert") {
                    Some("expired") => BadCert::Expired,
                    Some("wrong-name") => BadCert::WrongName,
                    Some("self-signed") => BadCert::SelfSigned,
                    Some(other) => {
                        return Err(fail(format!(
                            "cert: {other:?} is not expired, wrong-name or self-signed"
                        )));
                    }
                    None => return Err(required("cert", "expired, wrong-name or self-signed")),
                },
            },
            "tls-truncate" => FaultKind::TlsTruncate { after: after()? },
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
