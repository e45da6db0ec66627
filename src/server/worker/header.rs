//! A connection's PROXY header (`--proxy-protocol`): read before it becomes a session.

use std::time::Instant;

use crate::server::arrival::acceptor::note_denied;
use crate::server::arrival::proxy::{self, Step};
use crate::server::operator::metrics::Rejection;
use crate::server::protocol::escape;

use super::{LOG, Worker};

impl Worker {
    /// Reads connection `t`'s PROXY header if it has arrived. Then the header's client is
    /// the session's peer, `--allow` / `--deny` judge it, the session opens, and what
    /// followed the header is read as its first input.
    pub(super) fn read_header(&mut self, t: usize) {
        let (Some(expected), Some(session)) = (self.shared.config.proxy, self.sessions.get_mut(t))
        else {
            return;
        };
        let why = match proxy::read_header(session.link.socket_mut(), expected, &mut self.buf) {
            // Part of a header and then the peer's FIN: the rest can never come, and no
            // event will say so again.
            Ok(Step::Pending) if session.read_closed => "closed inside its PROXY header".into(),
            Ok(Step::Pending) => return,
            Ok(Step::Refused(why)) => why,
            Err(e) => e.to_string(),
            Ok(Step::Done(client, tls)) => {
                if let Some(client) = client {
                    session.handle.set_origin(client);
                }
                // On a listener of our own TLS the client's TLS ends here, not at the
                // balancer: what a header says of TLS is nonsense there, and a name in it
                // would come before, and so stand instead of, the one of the certificate
                // the handshake verifies (a session's TLS and identity are set once).
                let tls = tls.filter(|_| !session.link.is_tls());
                if let Some(tls) = tls {
                    // The balancer ended the client's TLS: what it says shows in `/list`,
                    // and a certificate it verified names the client, as with our own TLS.
                    let name = tls
                        .cn
                        .as_deref()
                        .filter(|_| tls.verified)
                        .map(|cn| escape(cn.as_bytes()));
                    // HAProxy sends the cipher only with `proxy-v2-options ssl-cipher`.
                    let mut shown: Vec<String> = [&tls.version, &tls.cipher]
                        .into_iter()
                        .flatten()
                        .map(|t| escape(t.as_bytes()))
                        .collect();
                    shown.push("via-proxy".into());
                    if let Some(name) = &name {
                        shown.push(format!("client={name}"));
                    }
                    session.handle.set_tls(shown.join(" "));
                    if let Some(name) = name
                        && !self.admit_name(t, name)
                    {
                        return;
                    }
                }
                let session = &mut self.sessions[t];
                session.header_deadline = None;
                let peer = session.handle.peer();
                self.headers.retain(|&(h, _, _)| h != t);
                if !self.shared.config.access.permits(peer.ip()) {
                    note_denied(&self.shared, peer);
                    return self.discard(t);
                }
                // The bytes after the header may be in the socket already: no event will
                // announce them.
                return self.arrived_whole(t, true);
            }
        };
        self.drop_headerless(t, &escape(why.as_bytes()));
    }

    /// Drops the connections whose PROXY header is overdue.
    pub(super) fn check_headers(&mut self, now: Instant) {
        while let Some(&(t, id, at)) = self.headers.front() {
            if at > now {
                break;
            }
            self.headers.pop_front();
            let Some(session) = self.sessions.get(t) else {
                continue;
            };
            if session.handle.id() != id || session.header_deadline.is_none() {
                continue;
            }
            let why = format!("no header within {:?}", self.shared.config.proxy_timeout);
            self.drop_headerless(t, &why);
        }
    }

    /// Drops connection `t`, whose PROXY header was bad or did not come: counted, and
    /// logged unless another was logged less than a second ago (then the next line says how
    /// many were not).
    fn drop_headerless(&mut self, t: usize, why: &str) {
        self.shared.metrics.rejected(Rejection::ProxyHeader);
        if let Some(suppressed) = self.header_warnings.ready() {
            log::warn!(
                target: LOG,
                "connection dropped: peer={} reason=proxy-header error={why} suppressed={suppressed}",
                self.sessions[t].handle.peer(),
            );
        }
        self.discard(t);
    }

    /// Closes connection `t`, which never became a session (its PROXY header was missing,
    /// bad or named a denied client): at once, without a goodbye, not counted as served.
    pub(super) fn discard(&mut self, t: usize) {
        let Some(mut session) = self.sessions.try_remove(t) else {
            return;
        };
        let _ = self.poll.registry().deregister(session.link.socket_mut());
        self.headers.retain(|&(h, _, _)| h != t);
        self.handshakes.retain(|&(h, _, _)| h != t);
        self.release_outbox(&session);
        self.shared.registry.withdraw(session.handle.id());
    }
}
