//! Ending sessions as the wire contract says: flush, `quit`, shut the write side, drain,
//! close; one at a time or all at once at shutdown, each within its deadline.

use crate::tls::Link;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Instant;

use crate::server::session::outbox::Chunk;
use crate::server::session::{CloseReason, DRAIN, Speech};
use crate::server::worker::session::Phase;
use crate::units::Millis;

use crate::server::protocol::{LineEnding, escape};

use super::{LOG, READ_BUDGET, Worker, chunk_len, idle_scan_interval};

/// How long a closing session's flush may go without the peer taking a byte before the
/// session is closed without the rest: a peer that does not read cannot be flushed, and is
/// not held for the whole `--shutdown-timeout` (a peer that keeps reading is, at most).
pub(crate) const FLUSH_STALL: std::time::Duration = std::time::Duration::from_millis(500);

impl Worker {
    /// Starts ending session `t`: what is queued is flushed, then `quit` (when the server is
    /// the one ending it), then the write side is shut and input drained. A session dropped
    /// for overflow gets only `quit`: what was queued for it is freed at once.
    pub(super) fn begin_close(&mut self, t: usize, reason: CloseReason) {
        let Some(session) = self.sessions.get_mut(t) else {
            return;
        };
        if session.phase != Phase::Open {
            return;
        }
        // Faults end with the session: what they hold goes out now, before any goodbye.
        if let Some(pacing) = session.fault.take() {
            pacing.release_all(&mut session.pending);
        }
        if reason == CloseReason::Error {
            return self.remove(t);
        }
        let handle = Arc::clone(&session.handle);
        let mut entries = std::mem::take(&mut self.entries);
        handle.outbox().take(&mut entries, Some(reason));
        let mut queued = entries.len() as u64;
        if reason == CloseReason::Overflow {
            for entry in entries.drain(..) {
                handle.outbox().release(entry.cost());
            }
            session.discard_pending(true);
            queued = 0;
        }
        session.enqueue(entries.drain(..));
        self.entries = entries;
        session.held_by.clear();
        session.deferred = Default::default();
        if reason.says_quit() {
            let ending = match handle.speech() {
                // What it sent may not have been read yet (a session adopted at shutdown,
                // or whose first line came with it): its first line tells its ending.
                Speech::Silent => match unread_ending(&session.link) {
                    Some(ending) => ending,
                    None => self.shared.handler.silent_ending(),
                },
                Speech::Spoken(ending) => ending,
            };
            session.pending.push_back(Chunk::Static(ending.quit()));
        }
        handle.counters().messages_out.fetch_add(
            queued + u64::from(reason.says_quit()),
            std::sync::atomic::Ordering::Relaxed,
        );
        let linger = self.shared.config.shutdown_timeout;
        let now = Instant::now();
        let deadline = self
            .stopping
            .unwrap_or_else(|| crate::time::later(now, linger));
        // The flush's progress is timed from here: see `FLUSH_STALL`.
        session.last_active = now;
        session.phase = Phase::Flushing { reason, deadline };
        self.closing.push(t);
        // The handler hears of the end once, as it begins (chat's `left` goes out now,
        // not after a slow reader's flush deadline); its replies are not sent.
        self.call_handler(t, |handler, ctx| handler.on_close(ctx));
        self.on_writable(t);
    }

    pub(super) fn shut_write(&mut self, t: usize, reason: CloseReason) {
        let session = &mut self.sessions[t];
        if session.truncate {
            // `tls-truncate`: a FIN with no `close_notify` before it.
            let _ = session.link.socket().shutdown(std::net::Shutdown::Write);
        } else {
            let _ = session.link.shutdown_write();
        }
        let until = Instant::now() + DRAIN;
        session.phase = Phase::Draining { reason, until };
        self.drain_input(t);
    }

    /// Reads and discards input from a closing session; at end of input a draining session
    /// is closed.
    pub(super) fn drain_input(&mut self, t: usize) {
        for _ in 0..READ_BUDGET {
            let Some(session) = self.sessions.get_mut(t) else {
                return;
            };
            match session.link.read(&mut self.buf) {
                Ok(0) => {
                    if matches!(session.phase, Phase::Draining { .. }) {
                        self.remove(t);
                    }
                    // Flushing: the peer half-closed; keep writing until done.
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.remove(t),
            }
        }
    }

    pub(super) fn fail(&mut self, t: usize, error: &io::Error) {
        if let Some(session) = self.sessions.get(t)
            && session.link.is_tls()
            && error.kind() == io::ErrorKind::InvalidData
        {
            // A handshake that failed, a record that did not decrypt: the operator of a
            // TLS server looks for these (a client that does not trust the certificate).
            // Any client can make one at will (garbage after its handshake), so at most one
            // line a second, as for the handshakes that fail.
            if let Some(suppressed) = self.tls_warnings.ready() {
                log::info!(
                    target: LOG,
                    "session {} TLS failed: peer={} error={} suppressed={suppressed}",
                    session.handle.id(),
                    session.handle.peer(),
                    escape(crate::tls::error_text(error).as_bytes())
                );
            }
        } else if let Some(session) = self.sessions.get(t) {
            log::debug!(
                target: LOG,
                "session {} failed: peer={} error={error}",
                session.handle.id(),
                session.handle.peer()
            );
        }
        self.remove(t);
    }

    pub(super) fn begin_shutdown(&mut self) {
        let started = self
            .shared
            .shutdown
            .triggered_at()
            .unwrap_or_else(Instant::now);
        // Leave the server a little of its deadline to join threads and print the summary.
        let timeout = self.shared.config.shutdown_timeout;
        let deadline = crate::time::later(started, timeout.mul_f64(0.9));
        self.stopping = Some(deadline);
        // Connections still owing their PROXY header never became sessions: let them go.
        for (t, id, _) in std::mem::take(&mut self.headers) {
            if self.sessions.get(t).is_some_and(|s| s.handle.id() == id) {
                self.discard(t);
            }
        }
        let open: Vec<usize> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.phase == Phase::Open)
            .map(|(t, _)| t)
            .collect();
        log::debug!(target: LOG, "worker {} closing {} session(s)", self.index, open.len());
        for t in open {
            self.begin_close(t, CloseReason::Shutdown);
        }
    }

    pub(super) fn check_deadlines(&mut self) {
        let now = Instant::now();
        if self.headers.front().is_some_and(|&(_, _, at)| now >= at) {
            self.check_headers(now);
        }
        if self.handshakes.front().is_some_and(|&(_, _, at)| now >= at) {
            self.check_handshakes(now);
        }
        if !self.pressed.is_empty() {
            self.check_pressed(now);
        }
        if !self.closing.is_empty() {
            let stopping = self.stopping;
            let mut closing = std::mem::take(&mut self.closing);
            // A slow reader may have made room without the socket reporting it (Linux
            // signals writable only once a third of the send buffer is free): try to write
            // before calling its flush stalled.
            for &t in &closing {
                if self.sessions.get(t).is_some_and(|s| {
                    matches!(s.phase, Phase::Flushing { .. }) && now >= s.last_active + FLUSH_STALL
                }) {
                    self.on_writable(t);
                }
            }
            closing.retain(|&t| {
                let Some(session) = self.sessions.get(t) else {
                    return false;
                };
                let due = match session.phase {
                    Phase::Open => return false,
                    // Bounded by the deadline, and by the peer's reading: a flush that
                    // moved no byte for `FLUSH_STALL` cannot complete.
                    Phase::Flushing { deadline, .. } => deadline
                        .min(stopping.unwrap_or(deadline))
                        .min(session.last_active + FLUSH_STALL),
                    Phase::Draining { until, .. } => until.min(stopping.unwrap_or(until)),
                };
                if now < due {
                    return true;
                }
                if let Phase::Flushing { reason, .. } = session.phase {
                    if stopping.is_some() {
                        // Counted for the one warning the server logs once stopped: the
                        // deadline passed, or the peer took nothing for `FLUSH_STALL`.
                        self.shared
                            .forced_closes
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    log::debug!(
                        target: LOG,
                        "session {} closed before its goodbye was out: peer={} reason={reason} pending_bytes={}",
                        session.handle.id(),
                        session.handle.peer(),
                        session.pending.iter().map(chunk_len).sum::<usize>()
                    );
                }
                self.remove(t);
                false
            });
            // `remove` may not push; anything begun meanwhile was appended to `self.closing`.
            closing.append(&mut self.closing);
            closing.sort_unstable();
            closing.dedup();
            self.closing = closing;
        }
        if let (Some(at), Some(timeout)) = (self.next_idle_scan, self.shared.config.idle_timeout)
            && now >= at
        {
            self.next_idle_scan = Some(now + idle_scan_interval(timeout));
            let quiet: Vec<usize> = self
                .sessions
                .iter()
                .filter(|(_, s)| {
                    s.phase == Phase::Open
                        && s.header_deadline.is_none()
                        && now - s.last_active >= timeout
                })
                .map(|(t, _)| t)
                .collect();
            for t in quiet {
                // A slow reader may have made room without the socket reporting it (Linux
                // signals writable only once a third of the send buffer is free): try to
                // write before calling the session idle.
                if !self.sessions[t].pending.is_empty() {
                    self.on_writable(t);
                }
                let Some(session) = self.sessions.get(t) else {
                    continue;
                };
                if session.phase != Phase::Open || now - session.last_active < timeout {
                    continue;
                }
                let handle = &self.sessions[t].handle;
                log::warn!(
                    target: LOG,
                    "session {} dropped: peer={} reason=idle-timeout idle_for_ms={}",
                    handle.id(),
                    handle.peer(),
                    Millis(timeout)
                );
                self.begin_close(t, CloseReason::Idle);
            }
        }
    }

    /// Closes session `t` now and forgets it.
    pub(super) fn remove(&mut self, t: usize) {
        if let Some(session) = self.sessions.get_mut(t)
            && session.phase == Phase::Open
        {
            // Ended without a goodbye (a failed connection): the handler still hears of it.
            session.phase = Phase::Flushing {
                reason: CloseReason::Error,
                deadline: Instant::now(),
            };
            self.call_handler(t, |handler, ctx| handler.on_close(ctx));
        }
        let Some(mut session) = self.sessions.try_remove(t) else {
            return;
        };
        if let Some(pacing) = session.fault.take() {
            session.handle.outbox().release(pacing.charged());
        }
        let _ = self.poll.registry().deregister(session.link.socket_mut());
        session.discard_pending(false);
        self.release_outbox(&session);
        let reason = match session.phase {
            Phase::Open => CloseReason::Error,
            Phase::Flushing { reason, .. } | Phase::Draining { reason, .. } => reason,
        };
        let handle = &session.handle;
        let traffic = handle.traffic();
        let metrics = self.shared.metrics.worker(self.index);
        metrics.closed(reason, handle.connected_for());
        log::debug!(
            target: LOG,
            "session {} closed: peer={} reason={reason} duration_ms={} bytes_in={} bytes_out={}",
            handle.id(),
            handle.peer(),
            Millis(handle.connected_for()),
            traffic.bytes_in,
            traffic.bytes_out
        );
        self.shared.registry.unregister(handle.id());
    }
}

/// The line ending of what a session sent that was not read yet, if it sent anything: looked
/// at without taking it from the socket.
fn unread_ending(link: &Link) -> Option<LineEnding> {
    if link.is_tls() {
        // What waits in the socket is ciphertext.
        return None;
    }
    let mut buf = [0u8; 1024];
    match link.socket().peek(&mut buf) {
        Ok(n) if n > 0 => Some(LineEnding::of_input(&buf[..n])),
        _ => None,
    }
}
