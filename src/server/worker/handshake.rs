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

use std::time::{Duration, Instant};

use crate::server::operator::metrics::{Handshake, Rejection};
use crate::server::protocol::escape;

use super::{LOG, Worker};

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
            let deadline = Instant::now() + self.shared.config.tls_handshake_timeout;
            session.handshake_deadline = Some(deadline);
            self.handshakes
                .push_back((t, session.handle.id(), deadline));
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
        if self.shaken >= BUDGET {
            if !self.shake_later.contains(&t) {
                self.shake_later.push_back(t);
            }
            return;
        }
        self.shaken += 1;
        self.shake_now(t);
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
        let metrics = self.shared.metrics.worker(self.index);
        let why = match session.link.handshake() {
            Ok(false) if session.read_closed => "closed during the handshake".to_owned(),
            Ok(false) => return,
            Err(e) => crate::tls::error_text(&e),
            Ok(true) => {
                session.handshake_deadline = None;
                if let Some(conn) = session.link.conn() {
                    session.handle.set_tls(agreed(conn));
                    if let Some(name) = client_name(conn) {
                        if !self.shared.config.permits_cn(&name) {
                            self.shared.metrics.rejected(Rejection::Denied);
                            let why = format!(
                                "certificate name {name} not allowed (--allow-cn, --deny-cn)"
                            );
                            return self.drop_unshaken(t, &why);
                        }
                        session.handle.set_identity(name);
                    }
                    let how = match conn.handshake_kind() {
                        Some(rustls::HandshakeKind::Resumed) => Handshake::Resumed,
                        _ => Handshake::Full,
                    };
                    metrics.handshake(how, took);
                }
                self.handshakes.retain(|&(h, _, _)| h != t);
                self.open(t);
                return self.read_open(t);
            }
        };
        metrics.handshake(Handshake::Failed, took);
        self.drop_unshaken(t, &why);
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

    fn drop_unshaken(&mut self, t: usize, why: &str) {
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
