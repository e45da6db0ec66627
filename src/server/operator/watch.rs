//! The watcher of the TLS files (`--tls-watch`): a thread of its own, `tcpool-tls-watch`,
//! that looks at the certificate, key and ticket key files every period (`stat`, nothing
//! read) and reloads them once they changed and then held still for one period, so that a
//! certificate and its key written one after the other are read together. A reload it makes
//! is audited as `source=watch`; one refused is not tried again until the files change.
//!
//! Not on a worker (nothing may block one), and not on the control plane, which runs only
//! with `--admin` and stops at a hand-over.

use std::io;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam::channel::{self, RecvTimeoutError};

use crate::server::operator::audit::{Audit, Source};
use crate::server::shutdown::Shutdown;
use crate::tls::Certificates;

/// Starts the watcher; it returns once `shutdown` is triggered.
pub(crate) fn spawn(
    certificates: Certificates,
    audit: Audit,
    period: Duration,
    shutdown: &Shutdown,
) -> io::Result<JoinHandle<()>> {
    let (stop, stopped) = channel::bounded::<()>(0);
    shutdown.on_trigger(move || drop(stop));
    thread::Builder::new()
        .name("tcpool-tls-watch".into())
        .spawn(move || {
            let mut pending = None;
            while stopped.recv_timeout(period) == Err(RecvTimeoutError::Timeout) {
                if certificates.due(&mut pending) {
                    let _ = audit.tls_reload(&certificates, Source::Watch);
                }
            }
        })
}
