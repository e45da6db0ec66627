//! [`HandshakeFaults`]: what a TLS connection's handshake faults do, drawn as it arrives,
//! before its handshake: `tls-delay`, `tls-abort`, `tls-alert` and `tls-cert`.

use std::time::{Duration, Instant};

use super::Rng;
use super::live::Active;
use super::spec::{AbortAt, BadCert, FaultKind};

/// The handshake faults a connection drew, folded: of two of one kind the later wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeFaults {
    /// `tls-delay`: how long the client's hello waits for its answer.
    pub hold: Option<Duration>,
    /// When the hold ends, once the hello has come.
    pub hold_until: Option<Instant>,
    /// `tls-abort`: where the handshake is cut.
    pub abort: Option<AbortAt>,
    /// `tls-alert`: the alert sent instead of the server's hello.
    pub alert: Option<u8>,
    /// `tls-cert`: the certificate served instead.
    pub cert: Option<BadCert>,
    /// What they were, for log lines: `tls-delay,delay=2s`.
    pub described: String,
}

impl HandshakeFaults {
    /// Folds `drawn`; `rng` draws the jitter.
    pub(super) fn of(drawn: &[std::sync::Arc<Active>], rng: &mut Rng) -> Self {
        let mut faults = HandshakeFaults::default();
        for fault in drawn {
            match fault.spec.kind {
                FaultKind::TlsDelay { delay, jitter } => {
                    let hold = if jitter.is_zero() {
                        delay
                    } else {
                        // Uniform in delay ± jitter, never below nothing.
                        let spread = jitter.as_secs_f64() * (2.0 * rng.unit() - 1.0);
                        Duration::from_secs_f64((delay.as_secs_f64() + spread).max(0.0))
                    };
                    faults.hold = Some(hold);
                }
                FaultKind::TlsAbort { at } => faults.abort = Some(at),
                FaultKind::TlsAlert { alert } => faults.alert = Some(alert),
                FaultKind::TlsCert { cert } => faults.cert = Some(cert),
                _ => continue,
            }
            if !faults.described.is_empty() {
                faults.described.push(' ');
            }
            faults.described.push_str(&fault.spec.to_string());
        }
        faults
    }
}
