//! The audit trail of changes made at run time: a fault added or cleared, a session kicked,
//! a shutdown started, the TLS certificate reloaded — each one info-level log line saying
//! what and who asked, and a count in `tcpool_changes_total{action,source}`.
//!
//! The console, the admin endpoint and the binary's signal handling carry out these changes
//! through [`Audit`]'s methods rather than on the registry, the faults or the shutdown
//! directly, so none of them can forget the line or the count. The line is in the house's
//! `key=value` style, so the JSON log carries each detail as a field:
//!
//! ```text
//! audit: fault added: id=3 spec=latency,delay=20ms source=admin peer=127.0.0.1:5555
//! audit: session kicked: id=7 source=console
//! audit: shutdown: source=signal signal=SIGTERM
//! audit: tls certificate reloaded: subject=CN=tcpool server serial=3A... expires=... sha256=... changed=true source=watch
//! ```
//!
//! A request that changes nothing (a kick of an unknown session, a second shutdown, clearing
//! a fault already cleared) is not a change: no line, no count.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::server::faults::{FaultId, FaultSpec, Faults};
use crate::server::session::SessionId;
use crate::server::session::registry::{Kick, Registry};
use crate::server::shutdown::Shutdown;
use crate::tls::{Certificates, ReloadError, Reloaded};

/// Who asked for a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A signal, by name (`SIGTERM`, `SIGINT`, `SIGHUP`, or `Ctrl-C` typed at the prompt).
    Signal(&'static str),
    /// The operator console.
    Console,
    /// The admin endpoint, with the client's address.
    Admin(SocketAddr),
    /// The watcher of the TLS certificate files, which saw them change.
    Watch,
}

impl Source {
    const LABELS: [&'static str; 4] = ["signal", "console", "admin", "watch"];

    fn index(self) -> usize {
        match self {
            Source::Signal(_) => 0,
            Source::Console => 1,
            Source::Admin(_) => 2,
            Source::Watch => 3,
        }
    }
}

impl fmt::Display for Source {
    /// `source=...` and what else identifies the asker, as log details.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Signal(name) => write!(f, "source=signal signal={name}"),
            Source::Console => f.write_str("source=console"),
            Source::Admin(peer) => write!(f, "source=admin peer={peer}"),
            Source::Watch => f.write_str("source=watch"),
        }
    }
}

/// What changed: the `action` label of `tcpool_changes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A fault was added.
    FaultAdd,
    /// A fault was cleared.
    FaultClear,
    /// A session was asked to end.
    Kick,
    /// A graceful shutdown was started.
    Shutdown,
    /// The TLS certificate was reloaded.
    TlsReload,
}

impl Action {
    const ALL: [Action; 5] = [
        Action::FaultAdd,
        Action::FaultClear,
        Action::Kick,
        Action::Shutdown,
        Action::TlsReload,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::FaultAdd => "fault-add",
            Action::FaultClear => "fault-clear",
            Action::Kick => "kick",
            Action::Shutdown => "shutdown",
            Action::TlsReload => "tls-reload",
        }
    }
}

/// Carries out audited changes and counts them. A cheap-clone handle, one per server.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    counts: Arc<[[AtomicU64; Source::LABELS.len()]; Action::ALL.len()]>,
}

impl Audit {
    /// A trail with nothing counted.
    pub fn new() -> Self {
        Self::default()
    }

    fn note(&self, action: Action, source: Source) {
        self.counts[action as usize][source.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Every `(action, source, count)`, all of them, zeros included.
    pub fn counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::with_capacity(Action::ALL.len() * Source::LABELS.len());
        for action in Action::ALL {
            for (i, source) in Source::LABELS.iter().enumerate() {
                let n = self.counts[action as usize][i].load(Ordering::Relaxed);
                out.push((action.as_str(), *source, n));
            }
        }
        out
    }

    /// Adds a fault for new sessions.
    pub fn add_fault(&self, faults: &Faults, spec: FaultSpec, source: Source) -> FaultId {
        let id = faults.add(spec);
        self.note(Action::FaultAdd, source);
        log::info!("audit: fault added: id={id} spec={spec} {source}");
        id
    }

    /// Clears fault `id`, or every active fault with `None`; one line per fault cleared.
    /// Returns how many were.
    pub fn clear_faults(&self, faults: &Faults, id: Option<FaultId>, source: Source) -> usize {
        let before: Vec<_> = faults
            .active()
            .into_iter()
            .filter(|f| id.is_none_or(|id| f.id == id))
            .collect();
        let cleared = faults.clear(id);
        if cleared > 0 {
            for f in &before {
                self.note(Action::FaultClear, source);
                log::info!("audit: fault cleared: id={} spec={} {source}", f.id, f.spec);
            }
        }
        cleared
    }

    /// Asks session `id` to end with `quit`.
    pub fn kick(&self, registry: &Registry, id: SessionId, source: Source) -> Kick {
        let kick = registry.try_kick(id);
        if kick == Kick::Kicked {
            self.note(Action::Kick, source);
            log::info!("audit: session kicked: id={id} {source}");
        }
        kick
    }

    /// Reloads the TLS certificate (and the ticket key file) from its files. A reload that
    /// puts a certificate in place is a change: one info line naming the certificate, and a
    /// count; one refused is one warning naming the file and why, and changes nothing. With
    /// no files to reload there is nothing to say: the caller tells whoever asked.
    pub fn tls_reload(
        &self,
        certificates: &Certificates,
        source: Source,
    ) -> Result<Reloaded, ReloadError> {
        let result = certificates.reload();
        match &result {
            Ok(done) => {
                self.note(Action::TlsReload, source);
                let tickets = done
                    .ticket_keys
                    .map_or(String::new(), |n| format!(" ticket_keys={n}"));
                log::info!(
                    "audit: tls certificate reloaded: {} changed={}{tickets} {source}",
                    done.identity,
                    done.changed
                );
            }
            Err(ReloadError::Refused { file, why }) => log::warn!(
                "tls reload refused, the certificate in use stays: file={} error={} {source}",
                file.display(),
                why
            ),
            Err(ReloadError::NoFiles) => {}
        }
        result
    }

    /// Starts a graceful shutdown; `false` if one was already under way.
    pub fn shutdown(&self, shutdown: &Shutdown, source: Source) -> bool {
        // Triggered first: on a terminal, a line logged before would wait for the editor.
        let started = shutdown.trigger();
        if started {
            self.note(Action::Shutdown, source);
            log::info!("audit: shutdown: {source}");
        }
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_counted_by_action_and_source_and_no_ops_are_not() {
        let audit = Audit::new();
        let registry = Registry::new(1024);
        let faults = Faults::default();
        let shutdown = Shutdown::new();
        let peer: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let spec: FaultSpec = "latency,delay=20ms".parse().unwrap();
        let id = audit.add_fault(&faults, spec, Source::Admin(peer));
        audit.add_fault(&faults, spec, Source::Console);
        assert_eq!(audit.clear_faults(&faults, None, Source::Console), 2);
        assert_eq!(audit.clear_faults(&faults, Some(id), Source::Console), 0);
        let session = registry.register(peer).id();
        assert_eq!(
            audit.kick(&registry, session, Source::Console),
            Kick::Kicked
        );
        assert_eq!(
            audit.kick(&registry, session, Source::Console),
            Kick::AlreadyClosing
        );
        assert!(audit.shutdown(&shutdown, Source::Signal("SIGTERM")));
        assert!(!audit.shutdown(&shutdown, Source::Admin(peer)));
        let count = |action: &str, source: &str| {
            audit
                .counts()
                .into_iter()
                .find(|&(a, s, _)| a == action && s == source)
                .unwrap()
                .2
        };
        assert_eq!(count("fault-add", "admin"), 1);
        assert_eq!(count("fault-add", "console"), 1);
        assert_eq!(count("fault-clear", "console"), 2);
        assert_eq!(count("kick", "console"), 1);
        assert_eq!(count("shutdown", "signal"), 1);
        assert_eq!(count("shutdown", "admin"), 0);
        assert_eq!(audit.counts().len(), 20);
        assert_eq!(
            Source::Admin(peer).to_string(),
            "source=admin peer=127.0.0.1:5555"
        );
    }
}
