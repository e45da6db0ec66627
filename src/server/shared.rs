//! [`Shared`]: what the acceptors and every worker read for the whole run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use super::arrival::rate::HandshakeRate;
use super::config::Config;
use super::faults::Faults;
use super::modes::Handler;
use super::operator::metrics::Metrics;
use super::session::registry::Registry;
use super::shutdown::Shutdown;
use super::worker::balance::Balance;

/// Shared by the acceptor and every worker for the whole run.
pub(crate) struct Shared {
    pub(crate) registry: Registry,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) shutdown: Shutdown,
    pub(crate) config: Config,
    /// The workers' and the acceptor's counts; one cell per worker.
    pub(crate) metrics: Arc<Metrics>,
    /// `config.max_conns` resolved against the descriptor limit.
    pub(crate) max_conns: usize,
    /// The live set of faults each new session draws from.
    pub(crate) faults: Faults,
    /// Sessions closed at the shutdown deadline before their goodbye was out.
    pub(crate) forced_closes: Arc<AtomicUsize>,
    /// Set by [`Acceptors::stop`]: the acceptors return, the workers serve on.
    pub(crate) accepting_stopped: AtomicBool,
    /// Which workers are in use, and the sessions on their way from one to another.
    pub(crate) balance: Balance,
    /// What the TLS listeners' sessions speak.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// What `tls-cert` faults serve instead.
    pub(crate) tls_bad: Option<crate::tls::bad::BadCerts>,
    /// `--tls-max-handshake-rate`'s bucket, shared by every TLS acceptor.
    pub(crate) tls_rate: Option<HandshakeRate>,
    /// `--udp`: each worker's UDP socket, taken by the worker when it starts.
    pub(crate) udp: Vec<parking_lot::Mutex<Option<std::net::UdpSocket>>>,
    /// What the UDP sockets counted.
    pub(crate) udp_counts: Arc<crate::server::udp::UdpCounts>,
    /// Manual mode with `--udp`: the pseudo-sessions the datagrams go to instead of back.
    pub(crate) udp_desk: Option<Arc<crate::server::udp::manual::Desk>>,
}
