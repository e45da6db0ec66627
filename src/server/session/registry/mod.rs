//! Who is connected: the shared map from [`SessionId`] to [`SessionHandle`], and the
//! server-wide counts behind `/stats` and the shutdown summary.
//!
//! The acceptor registers each session and the owning worker unregisters it when it ends;
//! the console, the chat relay and shutdown find sessions here and talk to them through their
//! outboxes. The map's lock is held only to look up or copy out handles, never while queueing
//! a message or waking a worker.
//!
//! The map is ordered by id (a `BTreeMap`; ids only grow), so a listing is in id order with no
//! sort, and a page of it ([`Registry::page`]) copies out only the handles it returns.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use rayon::prelude::*;

use crate::server::protocol::LineEnding;
use crate::server::session::{
    CloseReason, Counters, SendError, SessionHandle, SessionId, Speech, Traffic,
};

/// How a broadcast queues its messages.
///
/// Queueing one message costs about 70 ns per recipient on the calling thread. Measured with
/// `cargo bench --bench broadcast` on 2 cores, spreading the work over rayon's pool was slower
/// at every size tried (1.6 to 3.4 times, 1,000 to 16,000 recipients), so broadcasts run on
/// the calling thread unless asked otherwise; [`Fanout::Parallel`] is there to try on
/// machines with many cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fanout {
    /// On the calling thread.
    #[default]
    Sequential,
    /// Spread over rayon's thread pool.
    Parallel,
}

/// What [`Registry::try_kick`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// The session was asked to end.
    Kicked,
    /// The session is connected but already ending (it is still listed, `closing: true`).
    AlreadyClosing,
    /// No session has this id (never had, or it is gone).
    Unknown,
}

/// A cheap-to-clone handle to the server's session registry.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    sessions: RwLock<BTreeMap<SessionId, Arc<SessionHandle>>>,
    next_id: AtomicU64,
    started: Instant,
    outbox_limit: usize,
    live: AtomicUsize,
    peak: AtomicUsize,
    total: AtomicU64,
    rejected: AtomicU64,
    /// Reads the pool's count of connections accepted but not yet adopted by a worker; set
    /// when the server starts.
    backlog: OnceLock<crate::pool::Depth>,
    /// Traffic of sessions that have ended.
    ended: Counters,
    /// The session that spoke last (0: none yet); manual mode answers it by default.
    last_speaker: AtomicU64,
}

/// One line of `/list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's id.
    pub id: SessionId,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The nickname, if the peer set one.
    pub nick: Option<String>,
    /// What its TLS handshake agreed, on a TLS listener once it is done.
    pub tls: Option<String>,
    /// How long it has been connected.
    pub connected_for: Duration,
    /// Its traffic so far.
    pub traffic: Traffic,
    /// It is being closed (kicked, timed out, shutting down): it is told `quit` and goes.
    pub closing: bool,
}

/// The server-wide counts behind `/stats` and the shutdown summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Time since the server started.
    pub uptime: Duration,
    /// Sessions connected now (including those waiting in the backlog).
    pub sessions: usize,
    /// The most sessions connected at once.
    pub peak: usize,
    /// Sessions ever registered.
    pub total: u64,
    /// Connections answered `busy`.
    pub rejected: u64,
    /// Connections accepted but not yet adopted by a worker.
    pub backlog: usize,
    /// Traffic of every session, ended or not.
    pub traffic: Traffic,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("sessions", &self.len())
            .finish()
    }
}

impl Registry {
    /// An empty registry whose sessions may each have `outbox_limit` bytes queued.
    pub fn new(outbox_limit: usize) -> Self {
        Registry {
            inner: Arc::new(Inner {
                sessions: RwLock::new(BTreeMap::new()),
                next_id: AtomicU64::new(1),
                started: Instant::now(),
                outbox_limit,
                live: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                total: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                backlog: OnceLock::new(),
                ended: Counters::default(),
                last_speaker: AtomicU64::new(0),
            }),
        }
    }

    /// Registers a new session for `peer` under the next id.
    pub fn register(&self, peer: SocketAddr) -> Arc<SessionHandle> {
        let id = SessionId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let handle = Arc::new(SessionHandle::new(id, peer, self.inner.outbox_limit));
        self.inner.sessions.write().insert(id, Arc::clone(&handle));
        let live = self.inner.live.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.peak.fetch_max(live, Ordering::Relaxed);
        self.inner.total.fetch_add(1, Ordering::Relaxed);
        handle
    }

    /// Removes an ended session, keeping its traffic in the totals.
    pub fn unregister(&self, id: SessionId) {
        let removed = self.inner.sessions.write().remove(&id);
        if let Some(handle) = removed {
            self.inner.ended.add(handle.traffic());
            self.inner.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Removes a session that was registered but never served (rejected, or too late at
    /// shutdown): it counts neither in the total nor in the traffic.
    pub(crate) fn withdraw(&self, id: SessionId) {
        if self.inner.sessions.write().remove(&id).is_some() {
            self.inner.live.fetch_sub(1, Ordering::Relaxed);
            self.inner.total.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Sessions connected now.
    pub fn len(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Whether no session is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session with this id, if it is connected.
    pub fn get(&self, id: SessionId) -> Option<Arc<SessionHandle>> {
        self.inner.sessions.read().get(&id).cloned()
    }

    /// Every connected session, by id.
    pub fn handles(&self) -> Vec<Arc<SessionHandle>> {
        self.snapshot()
    }

    /// One [`SessionInfo`] per connected session, by id.
    pub fn list(&self) -> Vec<SessionInfo> {
        self.handles().iter().map(|h| info(h)).collect()
    }

    /// At most `limit` sessions with ids above `after` (from the first with `None`), by id,
    /// and whether more follow. Under the read lock it copies out only the handles it returns,
    /// so a page costs the same with 100 sessions or 100,000.
    pub fn page(&self, after: Option<SessionId>, limit: usize) -> (Vec<SessionInfo>, bool) {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let (handles, more) = {
            let sessions = self.inner.sessions.read();
            let mut range = sessions.range((from, Bound::Unbounded));
            let handles: Vec<Arc<SessionHandle>> =
                range.by_ref().take(limit).map(|(_, h)| h.clone()).collect();
            (handles, range.next().is_some())
        };
        (handles.iter().map(|h| info(h)).collect(), more)
    }

    /// The counts now.
    pub fn stats(&self) -> Stats {
        let live: Traffic = {
            let sessions = self.inner.sessions.read();
            sessions
                .values()
                .map(|h| h.traffic())
                .fold(Traffic::default(), |a, b| a + b)
        };
        Stats {
            uptime: self.inner.started.elapsed(),
            sessions: self.len(),
            peak: self.inner.peak.load(Ordering::Relaxed),
            total: self.inner.total.load(Ordering::Relaxed),
            rejected: self.inner.rejected.load(Ordering::Relaxed),
            backlog: self.inner.backlog.get().map_or(0, crate::pool::Depth::get),
            traffic: self.inner.ended.load() + live,
        }
    }

    /// Queues `message` for session `id` (one write, exactly these bytes).
    ///
    /// # Errors
    ///
    /// [`SendError::NoSuchSession`] for an unknown id, else as [`SessionHandle::send`].
    pub fn send(&self, id: SessionId, message: Arc<[u8]>) -> Result<(), SendError> {
        self.get(id).ok_or(SendError::NoSuchSession)?.send(message)
    }

    /// Queues `text` for session `id` in that session's own line ending.
    ///
    /// # Errors
    ///
    /// As [`Registry::send`].
    pub fn send_line(&self, id: SessionId, text: &str) -> Result<(), SendError> {
        let handle = self.get(id).ok_or(SendError::NoSuchSession)?;
        handle.send(handle.line_ending().terminate(text.as_bytes()).into())
    }

    /// Queues a message for every session that `compose` writes one for (`None` skips it), so
    /// each recipient can get its own line ending. Returns how many sessions took it. Never
    /// blocks on a slow reader: one whose outbox overflows is dropped.
    pub fn broadcast<F>(&self, compose: F) -> usize
    where
        F: Fn(&SessionHandle) -> Option<Arc<[u8]>> + Sync,
    {
        self.broadcast_with(Fanout::default(), compose)
    }

    /// [`Registry::broadcast`], choosing how the messages are queued (for benchmarks and
    /// tuning).
    pub fn broadcast_with<F>(&self, fanout: Fanout, compose: F) -> usize
    where
        F: Fn(&SessionHandle) -> Option<Arc<[u8]>> + Sync,
    {
        let recipients = self.snapshot();
        let deliver =
            |h: &Arc<SessionHandle>| usize::from(compose(h).is_some_and(|m| h.send(m).is_ok()));
        match fanout {
            Fanout::Sequential => recipients.iter().map(deliver).sum(),
            Fanout::Parallel => recipients.par_iter().map(deliver).sum(),
        }
    }

    /// Queues `text` followed by each recipient's own line ending (`\n` for one that has not
    /// spoken yet) for every session `to` picks. Recipients whose outbox is above its soft
    /// mark afterwards are added to `pressed`, so the sender can pause. Returns how many
    /// sessions took the line.
    pub(crate) fn relay_line(
        &self,
        text: &[u8],
        to: impl Fn(&SessionHandle) -> bool,
        pressed: &mut Vec<Arc<SessionHandle>>,
    ) -> usize {
        let mut delivered = 0;
        for h in self.snapshot() {
            if !to(&h) {
                continue;
            }
            let ending = match h.speech() {
                Speech::Silent => LineEnding::Lf,
                Speech::Spoken(ending) => ending,
            };
            if let Ok(high) = h.queue(&[text, ending.as_bytes()]) {
                delivered += 1;
                if high && !pressed.iter().any(|p| Arc::ptr_eq(p, &h)) {
                    pressed.push(h);
                }
            }
        }
        delivered
    }

    /// Every connected session, by id.
    fn snapshot(&self) -> Vec<Arc<SessionHandle>> {
        self.inner.sessions.read().values().cloned().collect()
    }

    /// Asks session `id` to end with `quit`; `false` if there is no such session or it was
    /// already ending ([`Registry::try_kick`] tells the two apart).
    pub fn kick(&self, id: SessionId) -> bool {
        self.try_kick(id) == Kick::Kicked
    }

    /// Asks session `id` to end with `quit`, and says what happened: what the console's
    /// `/kick` and the admin endpoint's `POST /sessions/ID/kick` both answer from.
    pub fn try_kick(&self, id: SessionId) -> Kick {
        match self.get(id) {
            None => Kick::Unknown,
            Some(h) if h.request_close(CloseReason::Kicked) => Kick::Kicked,
            Some(_) => Kick::AlreadyClosing,
        }
    }

    /// Counts a connection answered `busy`.
    pub fn note_rejected(&self) {
        self.inner.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Where `/stats` reads the backlog's depth from (set once, when the server starts).
    pub(crate) fn watch_backlog(&self, depth: crate::pool::Depth) {
        let _ = self.inner.backlog.set(depth);
    }

    /// Records that session `id` spoke last.
    pub fn set_last_speaker(&self, id: SessionId) {
        self.inner.last_speaker.store(id.0, Ordering::Relaxed);
    }

    /// Nobody among the sessions spoke last (a UDP source did, in manual mode).
    pub fn clear_last_speaker(&self) {
        self.inner.last_speaker.store(0, Ordering::Relaxed);
    }

    /// The session that spoke last, connected or not.
    pub fn last_speaker_even_if_gone(&self) -> Option<SessionId> {
        match self.inner.last_speaker.load(Ordering::Relaxed) {
            0 => None,
            id => Some(SessionId(id)),
        }
    }

    /// The session that spoke last, if it is still connected.
    pub fn last_speaker(&self) -> Option<SessionId> {
        match self.inner.last_speaker.load(Ordering::Relaxed) {
            0 => None,
            id => Some(SessionId(id)).filter(|&id| self.get(id).is_some()),
        }
    }
}

/// What `/list` shows of a session.
fn info(h: &SessionHandle) -> SessionInfo {
    SessionInfo {
        id: h.id(),
        peer: h.peer(),
        nick: h.nick(),
        tls: h.tls().map(str::to_owned),
        connected_for: h.connected_for(),
        traffic: h.traffic(),
        closing: h.is_closing(),
    }
}

#[cfg(test)]
mod tests;
