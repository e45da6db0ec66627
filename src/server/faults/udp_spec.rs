//! The datagram faults (`udp-drop=0.1`, `udp-delay=50ms±10ms`, ...): what they are, their
//! parser and how they are shown. They act on the `serve --udp` datagrams only, drawn for each
//! datagram (the UDP datapath's shaper carries them out); a TCP session never gets one.
//!
//! Their form differs from the TCP kinds': `KIND=VALUE[,key=value]`, where the value is the
//! fault's one parameter (the per-datagram probability, where there is one), and no `p=`.

use std::fmt;
use std::time::Duration;

use crate::units::{self, show_duration};

use super::{FaultError, FaultKind, FaultSpec};

/// The deepest `udp-reorder`: the most replies held to be let out shuffled at once.
pub const MAX_REORDER_DEPTH: u32 = 1024;

/// Which datagram a `udp-drop` drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// The request, as if it never arrived: not counted, not answered.
    Request,
    /// The echo, once the request was counted.
    Reply,
}

/// A datagram fault: what every datagram of `serve --udp` goes through while it is active.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UdpFault {
    /// Each datagram dropped with probability `p`: the request or its reply.
    Drop {
        /// The chance, 0 to 1.
        p: f64,
        /// Which of the two.
        dir: Dir,
    },
    /// Each reply sent twice with probability `p`.
    Dup {
        /// The chance, 0 to 1.
        p: f64,
    },
    /// Replies held and let out in a shuffled order, `depth` at a time.
    Reorder {
        /// How many make a group (2 to [`MAX_REORDER_DEPTH`]).
        depth: u32,
    },
    /// Each reply held `delay` ± `jitter` (uniform).
    Delay {
        /// How long each reply is held.
        delay: Duration,
        /// The most a hold differs from `delay`, either way.
        jitter: Duration,
    },
    /// One bit of one byte of each reply flipped with probability `p` (never a byte added).
    Corrupt {
        /// The chance, 0 to 1.
        p: f64,
    },
    /// Only the first `bytes` bytes of each reply sent.
    Truncate {
        /// How much of each reply is kept.
        bytes: u64,
    },
    /// Replies above `per_second` a second, over every source, dropped (a burst of one
    /// second's worth).
    Rate {
        /// Replies a second, for the whole server.
        per_second: u64,
    },
}

// No `p` is ever NaN: the parser refuses it.
impl Eq for UdpFault {}

impl UdpFault {
    /// The kind's name, as a spec starts.
    pub fn name(&self) -> &'static str {
        match self {
            UdpFault::Drop { .. } => "udp-drop",
            UdpFault::Dup { .. } => "udp-dup",
            UdpFault::Reorder { .. } => "udp-reorder",
            UdpFault::Delay { .. } => "udp-delay",
            UdpFault::Corrupt { .. } => "udp-corrupt",
            UdpFault::Truncate { .. } => "udp-truncate",
            UdpFault::Rate { .. } => "udp-rate",
        }
    }
}

impl fmt::Display for UdpFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=", self.name())?;
        match *self {
            UdpFault::Drop { p, dir } => {
                write!(f, "{p}")?;
                if dir == Dir::Request {
                    f.write_str(",dir=request")?;
                }
                Ok(())
            }
            UdpFault::Dup { p } | UdpFault::Corrupt { p } => write!(f, "{p}"),
            UdpFault::Reorder { depth } => write!(f, "{depth}"),
            UdpFault::Delay { delay, jitter } => {
                f.write_str(&show_duration(delay))?;
                if !jitter.is_zero() {
                    write!(f, "±{}", show_duration(jitter))?;
                }
                Ok(())
            }
            UdpFault::Truncate { bytes } => write!(f, "{bytes}"),
            UdpFault::Rate { per_second } => write!(f, "{per_second}"),
        }
    }
}

impl FaultKind {
    /// A datagram fault: drawn for each `serve --udp` datagram, never for a session.
    pub fn is_udp(&self) -> bool {
        matches!(self, FaultKind::Udp(_))
    }
}

impl FaultSpec {
    /// What its count counts: `datagrams` for a datagram fault, `sessions` for the others.
    pub fn touches(&self) -> &'static str {
        if self.kind.is_udp() {
            "datagrams"
        } else {
            "sessions"
        }
    }
}

/// The datagram kinds and their forms, for the error lines.
pub(super) const UDP_KINDS: &str = "udp-drop=P[,dir=request|reply], udp-dup=P, \
                                    udp-reorder=DEPTH, udp-delay=D[±J], udp-corrupt=P, \
                                    udp-truncate=N or udp-rate=R";

/// The form of each datagram kind.
fn form_of(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "udp-drop" => "udp-drop=P[,dir=request|reply]",
        "udp-dup" => "udp-dup=P",
        "udp-reorder" => "udp-reorder=DEPTH",
        "udp-delay" => "udp-delay=D[±J]",
        "udp-corrupt" => "udp-corrupt=P",
        "udp-truncate" => "udp-truncate=N",
        "udp-rate" => "udp-rate=R",
        _ => return None,
    })
}

/// Parses a datagram fault (`spec` starts with `udp-`).
pub(super) fn parse(spec: &str) -> Result<UdpFault, FaultError> {
    let fail = |reason: String| FaultError::new(spec, reason);
    let mut parts = spec.split(',').map(str::trim);
    let head = parts.next().unwrap_or_default();
    let (kind, value) = match head.split_once('=') {
        Some((kind, value)) => (kind.trim(), value.trim()),
        None => (head, ""),
    };
    let Some(form) = form_of(kind) else {
        return Err(fail(format!("unknown kind {kind:?} (one of {UDP_KINDS})")));
    };
    if value.is_empty() {
        return Err(fail(format!("{kind} needs a value: {form}")));
    }
    let mut dir = None;
    for part in parts {
        let Some((key, given)) = part.split_once('=') else {
            return Err(fail(format!("{part:?} is not key=value ({form})")));
        };
        match (kind, key.trim()) {
            ("udp-drop", "dir") if dir.is_some() => {
                return Err(fail("dir: given twice".to_owned()));
            }
            ("udp-drop", "dir") => {
                dir = Some(match given.trim() {
                    "request" => Dir::Request,
                    "reply" => Dir::Reply,
                    other => {
                        return Err(fail(format!("dir: {other:?} is not request or reply")));
                    }
                });
            }
            (_, "p") => {
                return Err(fail(format!(
                    "{kind} takes no p= (it acts on every datagram; {form})"
                )));
            }
            (_, key) => return Err(fail(format!("{kind} takes no key {key:?} ({form})"))),
        }
    }
    let probability = || match value.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(fail(format!(
            "P: {value:?} is not a probability between 0 and 1"
        ))),
    };
    let duration = |what: &str, text: &str| {
        units::parse_duration(text.trim()).map_err(|e| fail(format!("{what}: {e}")))
    };
    Ok(match kind {
        "udp-drop" => UdpFault::Drop {
            p: probability()?,
            dir: dir.unwrap_or(Dir::Reply),
        },
        "udp-dup" => UdpFault::Dup { p: probability()? },
        "udp-corrupt" => UdpFault::Corrupt { p: probability()? },
        "udp-reorder" => UdpFault::Reorder {
            depth: match value.parse::<u32>() {
                Ok(depth) if (2..=MAX_REORDER_DEPTH).contains(&depth) => depth,
                Ok(0 | 1) => {
                    return Err(fail(format!(
                        "DEPTH: {value} is too shallow: at least 2 (a group of one is never \
                         out of order)"
                    )));
                }
                Ok(_) => {
                    return Err(fail(format!(
                        "DEPTH: {value} is too deep: at most {MAX_REORDER_DEPTH}"
                    )));
                }
                Err(_) => return Err(fail(format!("DEPTH: {value:?} is not a whole number"))),
            },
        },
        "udp-delay" => {
            let (delay, jitter) = match value.split_once('±').or_else(|| value.split_once("+-")) {
                Some((delay, jitter)) => (duration("D", delay)?, duration("J", jitter)?),
                None => (duration("D", value)?, Duration::ZERO),
            };
            UdpFault::Delay { delay, jitter }
        }
        "udp-truncate" => UdpFault::Truncate {
            bytes: units::parse_size(value).map_err(|e| fail(format!("N: {e}")))?,
        },
        "udp-rate" => UdpFault::Rate {
            per_second: match value.strip_suffix("/s").unwrap_or(value).parse::<u64>() {
                Ok(0) => {
                    return Err(fail(
                        "R: must be more than 0 (to drop every reply: udp-drop=1)".to_owned(),
                    ));
                }
                Ok(r) => r,
                Err(_) => {
                    return Err(fail(format!(
                        "R: {value:?} is not a whole number of replies a second"
                    )));
                }
            },
        },
        _ => unreachable!("form_of knows every kind"),
    })
}

/// What a datagram fault did to a datagram: the label of `tcpool_udp_faulted_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Faulted {
    DropRequest,
    DropReply,
    Dup,
    Reorder,
    Delay,
    Corrupt,
    Truncate,
    Rate,
    /// A reply a delay or reorder would have held, dropped because the hold was full.
    Overflow,
}

impl Faulted {
    /// How many there are.
    pub(crate) const COUNT: usize = 9;

    /// Every one, in the order of their index.
    pub(crate) const ALL: [Faulted; Faulted::COUNT] = [
        Faulted::DropRequest,
        Faulted::DropReply,
        Faulted::Dup,
        Faulted::Reorder,
        Faulted::Delay,
        Faulted::Corrupt,
        Faulted::Truncate,
        Faulted::Rate,
        Faulted::Overflow,
    ];

    /// The metric's label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Faulted::DropRequest => "drop-request",
            Faulted::DropReply => "drop-reply",
            Faulted::Dup => "dup",
            Faulted::Reorder => "reorder",
            Faulted::Delay => "delay",
            Faulted::Corrupt => "corrupt",
            Faulted::Truncate => "truncate",
            Faulted::Rate => "rate",
            Faulted::Overflow => "overflow",
        }
    }
}
