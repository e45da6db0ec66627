//! [`Faults`]: the live set of faults the workers, the console and the admin endpoint share,
//! and each new session's draw from it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use crate::server::session::SessionId;
use crate::server::session::outbox::Mailbox;

use super::{FaultKind, FaultSpec, Faulted, HandshakeFaults, Pacing, Rng, random_seed};

/// Mixed into the seed of the handshake faults' draws: a generator apart from the session's.
const HANDSHAKE_SALT: u64 = 0x7C5A_11D0_2B3E_9F41;

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
    /// How many sessions it touched so far; for a datagram fault (`udp-*`), how many
    /// datagrams ([`FaultSpec::touches`]).
    pub sessions: u64,
    /// Whether new sessions may still get it (`false` once cleared).
    pub active: bool,
}

/// One fault in the live set, shared with the sessions that drew it.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) id: FaultId,
    pub(crate) spec: FaultSpec,
    pub(super) touched: AtomicU64,
    pub(super) cleared: AtomicBool,
    /// When it was added.
    pub(crate) added: Instant,
    /// `udp-rate`: the workers' shared bucket, as the time its next reply is due (GCRA), in
    /// nanoseconds since `added`.
    pub(crate) bucket: AtomicU64,
}

impl Active {
    pub(crate) fn is_cleared(&self) -> bool {
        self.cleared.load(Ordering::Relaxed)
    }

    /// Counts `n` more sessions (or datagrams) touched.
    pub(crate) fn touch(&self, n: u64) {
        if n > 0 {
            self.touched.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// How many cleared faults are kept, the most recent ones, for their counts.
pub const CLEARED_KEPT: usize = 16;

#[derive(Debug, Default)]
struct Set {
    next_id: u64,
    /// The active faults and the last [`CLEARED_KEPT`] cleared ones, in the order they were
    /// added. Older cleared faults are forgotten, so that adding and clearing faults for the
    /// life of a server grows neither its memory nor `/metrics`, `/faults` or the summary.
    all: Vec<Arc<Active>>,
}

impl Set {
    /// Forgets the cleared faults beyond the last [`CLEARED_KEPT`] (the sessions that drew
    /// one keep their own handle on it).
    fn forget_old(&mut self) {
        let cleared = self.all.iter().filter(|f| f.is_cleared()).count();
        let mut forget = cleared.saturating_sub(CLEARED_KEPT);
        if forget == 0 {
            return;
        }
        // Cleared faults are forgotten oldest first.
        self.all.retain(|f| {
            if forget > 0 && f.is_cleared() {
                forget -= 1;
                false
            } else {
                true
            }
        });
    }
}

#[derive(Debug)]
struct Inner {
    seed: u64,
    set: RwLock<Set>,
    /// Bumped by every clear, so each worker looks at its faulted sessions once.
    generation: AtomicU64,
    /// Bumped by every add and clear, so each worker's datagram faults look at the set once
    /// a batch.
    changes: AtomicU64,
    /// What the datagram faults did, by [`Faulted`].
    udp_faulted: [AtomicU64; Faulted::COUNT],
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
                changes: AtomicU64::new(0),
                udp_faulted: Default::default(),
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
            added: Instant::now(),
            bucket: AtomicU64::new(0),
        }));
        self.inner.changes.fetch_add(1, Ordering::Release);
        id
    }

    /// Ends fault `id`, or every fault with `None`, for new sessions and for the sessions
    /// that have it. Returns how many active faults were cleared (0: no such active fault).
    pub fn clear(&self, id: Option<FaultId>) -> usize {
        let cleared = {
            let mut set = self.inner.set.write();
            let cleared = set
                .all
                .iter()
                .filter(|f| id.is_none_or(|id| f.id == id))
                .filter(|f| !f.cleared.swap(true, Ordering::Relaxed))
                .count();
            set.forget_old();
            cleared
        };
        if cleared > 0 {
            self.inner.generation.fetch_add(1, Ordering::Relaxed);
            self.inner.changes.fetch_add(1, Ordering::Release);
            for mailbox in self.inner.mailboxes.lock().iter() {
                mailbox.wake();
            }
        }
        cleared
    }

    /// The active faults and the last [`CLEARED_KEPT`] cleared ones, in the order they were
    /// added.
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
                let what = f.spec.touches();
                format!("#{} {}{cleared}: {} {what}", f.id, f.spec, f.sessions)
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

    /// UDP side: changes with every add and every clear.
    pub(crate) fn changes(&self) -> u64 {
        self.inner.changes.load(Ordering::Acquire)
    }

    /// UDP side: the active datagram faults, in the order they were added.
    pub(crate) fn udp_active(&self) -> Vec<Arc<Active>> {
        let set = self.inner.set.read();
        set.all
            .iter()
            .filter(|f| !f.is_cleared() && f.spec.kind.is_udp())
            .cloned()
            .collect()
    }

    /// UDP side: adds a batch's counts, by [`Faulted`] index.
    pub(crate) fn add_udp_faulted(&self, tally: &[u64; Faulted::COUNT]) {
        for (count, &n) in self.inner.udp_faulted.iter().zip(tally) {
            if n > 0 {
                count.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// What the datagram faults did so far: how many datagrams each kind of effect touched
    /// (`drop-request`, `drop-reply`, `dup`, `reorder`, `delay`, `corrupt`, `truncate`,
    /// `rate`, and `overflow`: replies dropped because the hold was full).
    pub fn udp_faulted(&self) -> Vec<(&'static str, u64)> {
        Faulted::ALL
            .iter()
            .map(|&kind| {
                let n = self.inner.udp_faulted[kind as usize].load(Ordering::Relaxed);
                (kind.label(), n)
            })
            .collect()
    }

    /// Draws the faults of a new session: one draw per active fault, in the order they were
    /// added, from the session's own generator, which then goes on to the jitter draws.
    /// `None` (and nothing held) for a session that got none.
    ///
    /// The faults of a TLS handshake are not drawn here, but as a TLS connection arrives
    /// ([`Faults::draw_handshake`]); `tls-truncate` is drawn here for a TLS session only.
    pub(crate) fn draw(&self, session: SessionId, connected: Instant, tls: bool) -> Option<Pacing> {
        let (drawn, rng) = self.draw_of(self.inner.seed, session, |kind| {
            !kind.is_handshake() && !kind.is_udp() && (tls || !kind.is_tls())
        })?;
        Some(Pacing::new(session, drawn, rng, connected))
    }

    /// Draws the handshake faults of a TLS connection as it arrives, from a generator of its
    /// own, so that adding one leaves the other faults' draws as they were. `None` for a
    /// connection that got none.
    pub(crate) fn draw_handshake(&self, session: SessionId) -> Option<HandshakeFaults> {
        let seed = self.inner.seed ^ HANDSHAKE_SALT;
        let (drawn, mut rng) = self.draw_of(seed, session, FaultKind::is_handshake)?;
        Some(HandshakeFaults::of(&drawn, &mut rng))
    }

    /// One draw per active fault of the kinds `wanted` takes, in the order they were added,
    /// from `session`'s generator for `seed`; the faults drawn (counted as touched) and the
    /// generator, or `None` when none was.
    fn draw_of(
        &self,
        seed: u64,
        session: SessionId,
        wanted: impl Fn(&FaultKind) -> bool,
    ) -> Option<(Vec<Arc<Active>>, Rng)> {
        let set = self.inner.set.read();
        if !set
            .all
            .iter()
            .any(|f| !f.is_cleared() && wanted(&f.spec.kind))
        {
            return None;
        }
        let mut rng = Rng::for_session(seed, session.0);
        let drawn: Vec<Arc<Active>> = set
            .all
            .iter()
            .filter(|f| !f.is_cleared() && wanted(&f.spec.kind))
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
        Some((drawn, rng))
    }
}
