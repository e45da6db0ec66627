//! A TLS connection's handshake: done before it becomes a session, as its PROXY header is.
//!
//! Until the handshake is done the handler has not heard of the connection (no greeting, no
//! faults drawn, nothing relayed to it), and a client that stops halfway is closed at
//! `--tls-handshake-timeout`. One that fails — it does not trust the certificate, it speaks
//! no TLS — gets rustls's alert and is closed, and the log says why, at most once a second
//! (a scan must not flood it).
//!
//! A handshake step costs a millisecond of CPU or so (the server's signature, the key
//! exchange), where an echo costs microseconds: a storm of new TLS clients (a thousand
//! connecting at once) would hold up the worker's open sessions for as long as it takes to
//! serve them all in one turn. So a worker takes at most [`BUDGET`] handshake steps a turn;
//! the others wait for the next turns, which come at once, after the events of the
//! sessions already open.

use std::io::{self, Read as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::server::faults::AbortAt;
use crate::server::operator::metrics::{Handshake, HandshakeFailure, Rejection};
use crate::server::protocol::escape;

use super::{LOG, READ_BUDGET, Worker};

/// Handshake steps a worker takes in one turn at most.
pub(super) const BUDGET: usize = 2;

impl Worker {
    /// Connection `t` has all it needed before its handshake (its PROXY header, if one was
    /// due): a plaintext one opens now, a TLS one begins its handshake. With `read_now`, what
    /// the peer sent is read at once: after a PROXY header it may be in the socket already,
    /// and no event will announce it. (A connection just registered with the poller hears of
    /// what waits from its first event.)
    pub(super) fn arrived_whole(&mut self, t: usize, read_now: bool) {
        let Some(session) = self.sessions.get_mut(t) else {
            return;
        };
        if session.link.is_tls() {
            let now = Instant::now();
            let deadline = now + self.shared.config.tls_handshake_timeout;
            session.handshake_deadline = Some(deadline);
            let id = session.handle.id();
            self.handshakes.push_back((t, id, deadline));
            if self.stopping.is_none()
                && let Some(faults) = self.shared.faults.draw_handshake(id)
            {
                log::debug!(target: LOG, "session {id} faulted: faults={}", faults.described);
                if let (Some(bad), Some(configs)) = (faults.cert, self.shared.tls_bad.as_ref())
                    && let Ok(conn) = rustls::ServerConnection::new(Arc::clone(configs.config(bad)))
                {
                    session.link.replace_tls(conn);
                }
                session.tls_fault = Some(Box::new(faults));
            }
            if read_now {
                self.shake(t);
            }
            return;
        }
        self.open(t);
        if read_now {
            self.read_open(t);
        }
    }

    /// Moves connection `t`'s handshake on with what has arrived, within this turn's
    /// [`BUDGET`] (else in a later turn); once done, the session opens and reads what came
    /// after.
    pub(super) fn shake(&mut self, t: usize) {
        if self.holding(t) {
            return;
        }
        if self.shaken >= BUDGET {
            if !self.shake_later.contains(&t) {
                self.shake_later.push_back(t);
            }
            return;
        }
        self.shaken += 1;
        self.shake_now(t);
    }

    /// `tls-delay`: whether connection `t`'s handshake waits, for its client's hello or for
    /// the hold that began when the hello came (a timer comes back at its end).
    fn holding(&mut self, t: usize) -> bool {
        let Some(session) = self.sessions.get_mut(t) else {
            return false;
        };
        let Some(faults) = session.tls_fault.as_deref_mut() else {
            return false;
        };
        let Some(hold) = faults.hold else {
            return false;
        };
        let now = Instant::now();
        if let Some(until) = faults.hold_until {
            return until > now;
        }
        match session.link.socket().peek(&mut [0u8]) {
            // The hello (its start) is here: the hold begins.
            Ok(n) if n > 0 => {
                let until = now + hold;
                faults.hold_until = Some(until);
                self.timers.push(until, t, session.handle.id());
                true
            }
            // Nothing yet: wait for it. (An end of input or an error is for the handshake to
            // find.)
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            _ => false,
        }
    }

    /// The handshakes put off by earlier turns, in order, within this turn's budget.
    pub(super) fn shake_deferred(&mut self) {
        while self.shaken < BUDGET {
            let Some(t) = self.shake_later.pop_front() else {
                return;
            };
            if self
                .sessions
                .get(t)
                .is_some_and(|s| s.handshake_deadline.is_some())
            {
                self.shaken += 1;
                self.shake_now(t);
            }
        }
    }

    fn shake_now(&mut self, t: usize) {
        let Some(session) = self.sessions.get_mut(t) else {
            return;
        };
        let began = session
            .handshake_deadline
            .map(|d| d - self.shared.config.tls_handshake_timeout);
        let took = began.map_or(Duration::ZERO, |b| b.elapsed());
        if session.tls_fault.is_some() {
            match self.handshake_fault(t) {
                Ok(true) => return,
                Ok(false) => {}
                Err(why) => {
                    let metrics = self.shared.metrics.worker(self.index);
                    metrics.handshake_failed(HandshakeFailure::Other);
                    return self.drop_unshaken(t, &why);
                }
            }
        }
        let Some(session) = self.sessions.get_mut(t) else {
            return;
        };
        let (why, reason) = match session.link.handshake() {
            Ok(false) if session.read_closed => (
                "closed during the handshake".to_owned(),
                HandshakeFailure::Closed,
            ),
            Ok(false) => return,
            Err(e) => (crate::tls::error_text(&e), HandshakeFailure::of(&e)),
            Ok(true) => {
                session.handshake_deadline = None;
                let (how, name) = match session.link.conn() {
                    Some(conn) => {
                        session.handle.set_tls(agreed(conn));
                        let how = match conn.handshake_kind() {
                            Some(rustls::HandshakeKind::Resumed) => Handshake::Resumed,
                            _ => Handshake::Full,
                        };
                        (how, client_name(conn))
                    }
                    None => (Handshake::Full, None),
                };
                if let Some(name) = name
                    && !self.admit_name(t, name)
                {
                    return;
                }
                self.shared.metrics.worker(self.index).handshake(how, took);
                self.handshakes.retain(|&(h, _, _)| h != t);
                self.open(t);
                return self.read_open(t);
            }
        };
        let metrics = self.shared.metrics.worker(self.index);
        metrics.handshake_failed(reason);
        self.drop_unshaken(t, &why);
    }

    /// Carries out connection `t`'s `tls-abort` or `tls-alert` once the client's hello has
    /// come. `Ok(true)`: the fault took this turn (the connection is gone, or waits for its
    /// hello); `Ok(false)`: no such fault, the handshake goes on.
    fn handshake_fault(&mut self, t: usize) -> Result<bool, String> {
        let session = &mut self.sessions[t];
        let Some(faults) = session.tls_fault.as_deref() else {
            return Ok(false);
        };
        let (abort, alert) = (faults.abort, faults.alert);
        let cut = match (abort, alert) {
            (Some(AbortAt::MidHandshake), _) => match session.link.send_half_a_handshake() {
                Ok(Some(_)) => true,
                Ok(None) => return Ok(true),
                Err(e) => return Err(crate::tls::error_text(&e)),
            },
            (Some(AbortAt::AfterHello), _) | (None, Some(_)) => {
                // The hello is read and thrown away, so the close is a FIN: bytes left
                // unread would make it a reset.
                let mut got = 0;
                // A few reads at most: a client that floods after its hello is closed all the
                // same (with a reset, if bytes are left unread).
                for _ in 0..READ_BUDGET {
                    match session.link.socket_mut().read(&mut self.buf) {
                        Ok(0) if got == 0 => return Err("closed during the handshake".into()),
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.to_string()),
                    }
                }
                if got == 0 {
                    return Ok(true);
                }
                if let (None, Some(alert)) = (abort, alert) {
                    // A fatal alert in a plaintext record: nothing is encrypted yet.
                    let record = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, alert];
                    let _ = session.link.socket_mut().write_all(&record);
                }
                true
            }
            (None, None) => false,
        };
        if cut {
            let described = faults.described.clone();
            log::debug!(
                target: LOG,
                "session {} closed by fault in its handshake: peer={} faults={described}",
                session.handle.id(),
                session.handle.peer()
            );
            let _ = session.link.socket().shutdown(std::net::Shutdown::Write);
            self.discard(t);
        }
        Ok(cut)
    }

    /// Connection `t`'s client certificate, verified, names `name`: `--allow-cn` and
    /// `--deny-cn` judge it, and an admitted name is the session's identity. `false`: the
    /// connection was turned away, and is gone.
    pub(super) fn admit_name(&mut self, t: usize, name: String) -> bool {
        if !self.shared.config.permits_cn(&name) {
            self.shared.metrics.rejected(Rejection::Denied);
            let why = format!("certificate name {name} not allowed (--allow-cn, --deny-cn)");
            self.drop_unshaken(t, &why);
            return false;
        }
        self.sessions[t].handle.set_identity(name);
        true
    }

    /// Drops the connections whose handshake is overdue.
    pub(super) fn check_handshakes(&mut self, now: Instant) {
        while let Some(&(t, id, at)) = self.handshakes.front() {
            if at > now {
                break;
            }
            self.handshakes.pop_front();
            let Some(session) = self.sessions.get(t) else {
                continue;
            };
            if session.handle.id() != id || session.handshake_deadline.is_none() {
                continue;
            }
            let timeout = self.shared.config.tls_handshake_timeout;
            let why = format!("no handshake within {timeout:?}");
            let metrics = self.shared.metrics.worker(self.index);
            metrics.handshake(Handshake::Timeout, timeout);
            self.drop_unshaken(t, &why);
        }
    }

    pub(super) fn drop_unshaken(&mut self, t: usize, why: &str) {
        if let Some(suppressed) = self.tls_warnings.ready() {
            log::info!(
                target: LOG,
                "connection dropped: peer={} reason=tls error={} suppressed={suppressed}",
                self.sessions[t].handle.peer(),
                escape(why.as_bytes())
            );
        }
        self.discard(t);
    }
}

/// What a finished handshake agreed, in a few words: version, suite, whether resumed.
fn agreed(conn: &rustls::Connection) -> String {
    let (version, suite) = crate::tls::peer::version_and_suite(conn);
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let client = client_name(conn);
    let alpn = conn.alpn_protocol().map(|p| format!(" alpn={}", escape(p)));
    format!(
        "{version} {suite}{}{}{}",
        alpn.unwrap_or_default(),
        if resumed { " resumed" } else { "" },
        client.map_or(String::new(), |cn| format!(" client={cn}"))
    )
}

/// With mutual TLS, who the client's verified certificate says it is: its common name,
/// escaped as every name tcpool shows is (`?` if it has none).
fn client_name(conn: &rustls::Connection) -> Option<String> {
    let cert = conn.peer_certificates()?.first()?;
    let name = crate::tls::peer::common_name(cert).unwrap_or_else(|| "?".to_owned());
    Some(escape(name.as_bytes()))
}
