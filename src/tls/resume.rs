//! The load generator's session store: where the tickets a server hands out wait for the
//! connections that will resume with them.
//!
//! rustls's own store keeps at most eight TLS 1.3 tickets per server. A bench that reconnects
//! a hundred connections at once would find it empty for most of them and make full
//! handshakes it was asked to resume, so the share of resumed handshakes would depend on how
//! many connections happen to reconnect together. [`TicketStore`] keeps as many tickets as
//! the run has connections (each used once, as TLS 1.3 asks), oldest dropped first.
//!
//! A connection's first handshake offers none ([`Keeping`]): the clients a bench stands for
//! are strangers to the server until each has made a handshake of its own. It keeps what it
//! is given for the reconnects.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::NamedGroup;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;

/// What is kept for one server name.
#[derive(Default)]
struct Server {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

/// A client session store that keeps up to `capacity` TLS 1.3 tickets per server name.
pub struct TicketStore {
    capacity: usize,
    /// By server name: a bench has one, so a list is the quickest map.
    servers: Mutex<Vec<(ServerName<'static>, Server)>>,
}

impl TicketStore {
    /// A store for up to `capacity` tickets per server (at least one).
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(TicketStore {
            capacity: capacity.max(1),
            servers: Mutex::new(Vec::new()),
        })
    }

    /// TLS 1.3 tickets waiting for `name`.
    pub fn tickets(&self, name: &ServerName<'_>) -> usize {
        self.with(name, |s| s.tls13.len()).unwrap_or(0)
    }

    /// Runs `f` on what is kept for `name`, if anything is.
    fn with<T>(&self, name: &ServerName<'_>, f: impl FnOnce(&mut Server) -> T) -> Option<T> {
        let mut servers = self.servers.lock();
        let (_, server) = servers.iter_mut().find(|(n, _)| n == name)?;
        Some(f(server))
    }

    /// Runs `f` on what is kept for `name`, made empty if nothing was.
    fn with_new<T>(&self, name: ServerName<'static>, f: impl FnOnce(&mut Server) -> T) -> T {
        let mut servers = self.servers.lock();
        let at = match servers.iter().position(|(n, _)| *n == name) {
            Some(at) => at,
            None => {
                servers.push((name, Server::default()));
                servers.len() - 1
            }
        };
        f(&mut servers[at].1)
    }
}

impl std::fmt::Debug for TicketStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketStore")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.with_new(name, |s| s.kx_hint = Some(group));
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(name, |s| s.kx_hint).flatten()
    }

    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with_new(name, |s| s.tls12 = Some(value));
    }

    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.with(name, |s| s.tls12.clone()).flatten()
    }

    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.with(name, |s| s.tls12 = None);
    }

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        let capacity = self.capacity;
        self.with_new(name, |s| {
            if s.tls13.len() == capacity {
                s.tls13.pop_front();
            }
            s.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        // The newest first: it has the longest to live.
        self.with(name, |s| s.tls13.pop_back()).flatten()
    }
}

/// A [`TicketStore`] seen by a first handshake: what the server gives is kept in it, nothing
/// is taken from it.
#[derive(Debug)]
pub struct Keeping(pub Arc<TicketStore>);

impl ClientSessionStore for Keeping {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.0.set_kx_hint(name, group);
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.0.kx_hint(name)
    }

    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.0.set_tls12_session(name, value);
    }

    fn tls12_session(&self, _name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.0.remove_tls12_session(name);
    }

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.0.insert_tls13_ticket(name, value);
    }

    fn take_tls13_ticket(&self, _name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        None
    }
}
