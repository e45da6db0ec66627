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
//! This module owns the specs and their parser (`spec`), the live set of faults ([`Faults`],
//! shared by the workers, the console and the admin endpoint) and the per-session draw (`live`,
//! with the seeded generator here); `pacing` owns what a faulted session's replies go through.
//! The worker only holds a faulted session's replies there and acts on what comes out; an
//! unfaulted session never touches any of it.

mod handshake;
mod live;
mod pacing;
mod spec;
#[cfg(test)]
mod tests;
mod udp_spec;
#[cfg(test)]
mod udp_tests;

pub use handshake::HandshakeFaults;
pub(crate) use live::Active;
pub use live::{CLEARED_KEPT, FaultId, FaultInfo, Faults};
pub(crate) use pacing::{End, Pacing};
pub use spec::{AbortAt, After, BadCert, FaultError, FaultKind, FaultSpec};
pub(crate) use udp_spec::Faulted;
pub use udp_spec::{Dir, MAX_REORDER_DEPTH, UdpFault};

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
