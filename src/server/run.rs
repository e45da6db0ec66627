//! Starting a server's threads and waiting for them: [`Server`], [`Running`] and [`serve`].

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::thread;

use crossbeam::channel;

use super::arrival::acceptor::{Acceptor, Acceptors, Closer};
use super::arrival::access::Access;
use super::arrival::descriptors::{fit_max_conns, spare_fds};
use super::arrival::listen;
use super::arrival::rate::HandshakeRate;
use super::cluster::Link;
use super::config::{Balancing, Config};
use super::faults::{self, Faults};
use super::modes::chat::Chat;
use super::modes::{Handler, Mode};
use super::operator::audit::Audit;
use super::operator::console::Console;
use super::operator::metrics::{Exposition, Metrics};
use super::operator::output::Printer;
use super::operator::summary::Summary;
use super::operator::watch;
use super::running::Running;
use super::session::registry::Registry;
use super::shared::Shared;
use super::shutdown::Shutdown;
use super::udp::manual::Desk;
use super::worker::Worker;
use super::worker::balance::Balance;
use crate::tls::Certificates;
use crate::units::Millis;

/// The target of the server's own lifecycle lines (listening, shutting down, stopped), so
/// that `RUST_LOG` filters and the JSON `target` field name the server, not this file.
const LOG: &str = "tcpool::server";

/// A server ready to run: a listener, a config, a handler and the handles others use to
/// reach it ([`Server::registry`], [`Server::shutdown`]).
///
/// # Examples
///
/// Serve echo on a free port, talk to it, shut it down:
///
/// ```
/// use std::io::{Read, Write};
/// use std::net::TcpStream;
/// use tcpool::server::{bind, Config, Server};
///
/// let server = Server::new(bind("127.0.0.1:0".parse()?)?, Config::default());
/// let addr = server.local_addr()?;
/// let shutdown = server.shutdown();
/// let running = std::thread::spawn(move || server.run());
///
/// let mut client = TcpStream::connect(addr)?;
/// client.write_all(b"hello")?;
/// let mut reply = [0; 5];
/// client.read_exact(&mut reply)?;
/// assert_eq!(&reply, b"hello");
///
/// shutdown.trigger();
/// let mut goodbye = Vec::new();
/// client.read_to_end(&mut goodbye)?;
/// assert_eq!(goodbye, b"quit"); // no terminator: the client never sent one
/// let summary = running.join().unwrap()?;
/// assert_eq!(summary.sessions, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server {
    /// One or more, each with whether it speaks TLS; each gets an acceptor of its own, all
    /// handing off to the same pool.
    listeners: Vec<(TcpListener, bool)>,
    /// What TLS listeners serve.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The CA that signs `tls-cert` faults' certificates (`--tls auto`'s).
    tls_signer: Option<Arc<crate::tls::make::Signer>>,
    /// The certificate behind `tls`, when it can be reloaded and watched.
    certificates: Option<Certificates>,
    config: Config,
    handler: Option<Arc<dyn Handler>>,
    printer: Printer,
    registry: Registry,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
    faults: Faults,
    audit: Audit,
    /// The cluster link of a chat room over several nodes.
    cluster: Option<Arc<Link>>,
    /// What the UDP echo counts (`--udp`), made here so that the metrics can show it.
    udp_counts: Arc<crate::server::udp::UdpCounts>,
    /// UDP sockets to serve rather than bind (a hand-over's), and the hand-over to give
    /// second handles on the UDP sockets to.
    udp_inherited: Vec<std::net::UdpSocket>,
    udp_handover: Option<super::arrival::handover::Sockets>,
    /// Manual mode's UDP pseudo-sessions, made with the console or at the start.
    udp_desk: std::sync::OnceLock<Arc<Desk>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("listeners", &self.listeners)
            .field("config", &self.config)
            .finish()
    }
}

impl Server {
    /// A server on `listener` (from [`bind`](super::bind); the acceptor makes it non-blocking) with the handler of
    /// `config.mode`, printing operator output to stdout.
    pub fn new(listener: TcpListener, config: Config) -> Self {
        let registry = Registry::new(config.outbox_limit);
        let metrics = Arc::new(Metrics::new(config.worker_count()));
        let seed = config.seed.unwrap_or_else(faults::random_seed);
        let faults = Faults::new(seed, &config.faults);
        Server {
            listeners: vec![(listener, false)],
            tls: None,
            tls_signer: None,
            certificates: None,
            faults,
            config,
            handler: None,
            printer: Printer::stdout(),
            registry,
            shutdown: Shutdown::new(),
            metrics,
            audit: Audit::new(),
            cluster: None,
            udp_counts: Arc::default(),
            udp_inherited: Vec::new(),
            udp_handover: None,
            udp_desk: std::sync::OnceLock::new(),
        }
    }

    /// Serves a chat room that spans the nodes of `link`'s cluster ([`Link::start`] it with
    /// [`Server::registry`]): the handler is [`Chat::clustered`], and the console's
    /// `/cluster` and the metrics show the link.
    pub fn cluster(mut self, link: Arc<Link>) -> Self {
        let beyond: Arc<dyn crate::server::modes::chat::Beyond> = Arc::clone(&link) as _;
        let chat = Arc::new(Chat::clustered(beyond));
        link.attach(&chat);
        self.handler = Some(chat);
        self.cluster = Some(link);
        self
    }

    /// The cluster link given to [`Server::cluster`], if any.
    pub fn cluster_link(&self) -> Option<Arc<Link>> {
        self.cluster.clone()
    }

    /// Serves `listener` too, with an acceptor of its own handing off to the same workers
    /// (several `--bind` addresses, inherited sockets).
    pub fn also_on(mut self, listener: TcpListener) -> Self {
        self.listeners.push((listener, false));
        self
    }

    /// Serves `listener` too, speaking TLS there with the configuration given to
    /// [`Server::tls`] (without one, [`Server::start`] fails).
    pub fn also_on_tls(mut self, listener: TcpListener) -> Self {
        self.listeners.push((listener, true));
        self
    }

    /// Speaks TLS on every listener: the first one too.
    pub fn all_tls(mut self) -> Self {
        for (_, tls) in &mut self.listeners {
            *tls = true;
        }
        self
    }

    /// What the TLS listeners serve: certificates, versions, resumption
    /// ([`crate::tls::server_config`] makes one).
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Signs the certificates of `tls-cert` faults with `signer`, the CA clients trust
    /// (`--tls auto`'s, [`crate::tls::ServerTls::ca_signer`]), so that a client sees exactly
    /// what is wrong with them; without one they are signed by a CA made for the purpose.
    pub fn tls_signer(mut self, signer: Option<Arc<crate::tls::make::Signer>>) -> Self {
        self.tls_signer = signer;
        self
    }

    /// The certificate behind [`Server::tls`]'s configuration
    /// ([`crate::tls::ServerTls::certificates`]): `POST /tls/reload` and `/tls reload` reload
    /// it, the watcher does when its files change ([`Config::tls_watch`]), and the metrics
    /// show when it expires.
    pub fn tls_certificates(mut self, certificates: Certificates) -> Self {
        self.certificates = Some(certificates);
        self
    }

    /// The certificate given to [`Server::tls_certificates`], if any.
    pub fn certificates(&self) -> Option<Certificates> {
        self.certificates.clone()
    }

    /// Replies with `handler` instead of the mode's.
    pub fn handler(mut self, handler: impl Handler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// Prints operator output (manual mode's client lines) through `printer`.
    pub fn printer(mut self, printer: Printer) -> Self {
        self.printer = printer;
        self.udp_desk = std::sync::OnceLock::new();
        self
    }

    /// With `--udp`: serves `sockets` (those a hand-over passed,
    /// [`Inherited::udp`](super::arrival::listen::Inherited::udp)) rather than binding new ones;
    /// and keeps second handles on the UDP sockets in `handover` for the next one.
    pub fn udp_sockets(
        mut self,
        sockets: Vec<std::net::UdpSocket>,
        handover: Option<super::arrival::handover::Sockets>,
    ) -> Self {
        self.udp_inherited = sockets;
        self.udp_handover = handover;
        self
    }

    /// Obeys `shutdown` instead of a shutdown of its own.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The shutdown handle: trigger it to stop the server gracefully.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The registry of sessions.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// What a Prometheus scrape of this server reads ([`Exposition::encode`]). Take it after
    /// [`Server::tls`], so that the TLS handshakes are in it.
    pub fn exposition(&self) -> Exposition {
        let exposition = Exposition::new(
            Arc::clone(&self.metrics),
            self.registry.clone(),
            self.config.backlog,
        )
        .with_faults(self.faults.clone())
        .with_audit(self.audit.clone());
        let exposition = match &self.certificates {
            Some(certificates) => exposition.with_certificates(certificates.clone()),
            None => exposition,
        };
        let exposition = match &self.cluster {
            Some(link) => exposition.with_cluster(Arc::clone(link)),
            None => exposition,
        };
        let exposition = if self.config.udp.is_some() {
            exposition.with_udp(Arc::clone(&self.udp_counts))
        } else {
            exposition
        };
        if self.tls.is_some() {
            exposition.with_tls()
        } else {
            exposition
        }
    }

    /// The audit trail: changes made at run time through it are logged with who asked and
    /// counted in the metrics.
    pub fn audit(&self) -> Audit {
        self.audit.clone()
    }

    /// Who may connect (`--allow`, `--deny`), for the admin endpoint to apply too.
    pub fn access(&self) -> Access {
        self.config.access.clone()
    }

    /// The address the first listener is bound to (with the real port when bound to port 0).
    ///
    /// # Errors
    ///
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listeners[0].0.local_addr()
    }

    /// The addresses of every listener, in the order they were given.
    ///
    /// # Errors
    ///
    /// As [`TcpListener::local_addr`].
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.listeners.iter().map(|(l, _)| l.local_addr()).collect()
    }

    /// Manual mode with `--udp`: the pseudo-sessions the console and the workers share.
    fn udp_desk(&self) -> Option<Arc<Desk>> {
        if self.config.udp.is_none() || self.config.mode != Mode::Manual {
            return None;
        }
        let desk = self.udp_desk.get_or_init(|| {
            Arc::new(Desk::new(
                self.config.udp_options.peers,
                self.printer.clone(),
                self.registry.clone(),
            ))
        });
        Some(Arc::clone(desk))
    }

    /// An operator console for this server.
    pub fn console(&self) -> Console {
        let console = Console::new(
            self.registry.clone(),
            self.shutdown.clone(),
            self.config.mode,
            self.printer.clone(),
        )
        .with_faults(self.faults.clone())
        .with_audit(self.audit.clone());
        let console = match self.udp_desk() {
            Some(desk) => console.with_udp(desk),
            None => console,
        };
        let console = match &self.cluster {
            Some(link) => console.with_cluster(Arc::clone(link)),
            None => console,
        };
        match &self.certificates {
            Some(certificates) => console.with_tls(certificates.clone()),
            None => console,
        }
    }

    /// The live set of faults: what is added or cleared here applies at once.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// Serves until the shutdown is triggered, then closes every session gracefully within
    /// `config.shutdown_timeout` and returns what was served. The same as
    /// [`Server::start`] followed by [`Running::wait`].
    ///
    /// # Errors
    ///
    /// As [`Server::start`].
    pub fn run(self) -> io::Result<Summary> {
        self.start()?.wait()
    }

    /// Starts serving: the workers, the acceptor and the shutdown hooks are running and the
    /// `listening on` line is logged when this returns.
    ///
    /// # Errors
    ///
    /// When the server cannot start: the config is invalid ([`Config::validate`]), the
    /// listener cannot be read, a poller or thread cannot be created. Once serving, errors
    /// concern single sessions and are logged.
    pub fn start(self) -> io::Result<Running> {
        let udp_desk = self.udp_desk();
        let Server {
            listeners,
            tls,
            tls_signer,
            certificates,
            config,
            handler,
            printer,
            registry,
            shutdown,
            metrics,
            faults,
            audit,
            cluster: _,
            udp_counts,
            udp_inherited,
            udp_handover,
            udp_desk: _,
        } = self;
        config.validate()?;
        if tls.is_none() && listeners.iter().any(|&(_, tls)| tls) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a TLS listener and no TLS configuration: no certificate to serve",
            ));
        }
        let addrs = listeners
            .iter()
            .map(|(l, _)| l.local_addr())
            .collect::<io::Result<Vec<_>>>()?;
        let tls_addrs: Vec<SocketAddr> = addrs
            .iter()
            .zip(&listeners)
            .filter(|(_, (_, tls))| *tls)
            .map(|(addr, _)| *addr)
            .collect();
        let tls_bad = match &tls {
            Some(config) => Some(
                crate::tls::bad::BadCerts::new(config, tls_signer.as_deref()).map_err(|e| {
                    io::Error::other(format!("the tls-cert faults' certificates: {e:#}"))
                })?,
            ),
            None => None,
        };
        let workers = metrics.worker_count();
        let udp_sockets = crate::server::udp::open(
            config.udp,
            addrs[0],
            workers,
            udp_inherited,
            udp_handover.as_ref(),
            udp_desk.as_deref(),
        )?;
        let udp_addr = match udp_sockets.first() {
            Some(socket) => Some(socket.local_addr()?),
            None => None,
        };
        let max_conns = fit_max_conns(config.max_conns, workers);
        let handler = handler.unwrap_or_else(|| config.mode.handler(printer));
        let forced_closes = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            registry: registry.clone(),
            handler,
            shutdown: shutdown.clone(),
            config: config.clone(),
            metrics,
            max_conns,
            faults: faults.clone(),
            forced_closes: Arc::clone(&forced_closes),
            accepting_stopped: AtomicBool::new(false),
            balance: Balance::new(workers, config.balance == Balancing::Auto),
            tls,
            tls_bad,
            tls_rate: config.tls_max_handshake_rate.map(HandshakeRate::new),
            udp: udp_sockets
                .into_iter()
                .map(|s| parking_lot::Mutex::new(Some(s)))
                .collect(),
            udp_counts: Arc::clone(&udp_counts),
            udp_desk,
        });

        let pool = crate::pool::Pool::spawn("tcpool-worker", workers, config.backlog, |i| {
            Worker::new(i, Arc::clone(&shared))
        })?;
        registry.watch_backlog(pool.depth());
        shared
            .balance
            .attach(pool.spread(), config.workers_at_start);
        shared.metrics.set_workers_in_use(shared.balance.in_use());
        let (counted, timeout) = (registry.clone(), config.shutdown_timeout);
        shutdown.on_trigger(move || {
            log::info!(
                target: LOG,
                "shutting down: sessions={} timeout_ms={}",
                counted.len(),
                Millis(timeout)
            );
        });
        let wakers = pool.wakers();
        shutdown.on_trigger(move || wakers.wake_all());
        let (closer, closer_thread) = Closer::spawn(spare_fds(max_conns, workers))?;
        // Each acceptor holds a clone of `acceptor_done`: it disconnects when the last returns.
        let (acceptor_done, acceptor_stopped) = channel::bounded::<()>(0);
        let mut acceptor_threads = Vec::with_capacity(listeners.len());
        let mut acceptor_wakers = Vec::with_capacity(listeners.len());
        for (i, (listener, tls)) in listeners.into_iter().enumerate() {
            let made = Acceptor::new(
                listener,
                tls,
                Arc::clone(&shared),
                pool.submitter(),
                closer.clone(),
            );
            let acceptor = match made {
                Ok((acceptor, waker)) => {
                    acceptor_wakers.push(Arc::clone(&waker));
                    shutdown.on_trigger(move || {
                        if let Err(e) = waker.wake() {
                            log::warn!(target: LOG, "cannot wake the acceptor: error={e}");
                        }
                    });
                    acceptor
                }
                Err(e) => {
                    shutdown.trigger();
                    return Err(e);
                }
            };
            let name = match i {
                0 => "tcpool-acceptor".to_owned(),
                i => format!("tcpool-acceptor-{}", i + 1),
            };
            let done = acceptor_done.clone();
            let spawned = thread::Builder::new().name(name).spawn(move || {
                let _done = done;
                acceptor.run();
            });
            match spawned {
                Ok(thread) => acceptor_threads.push(thread),
                Err(e) => {
                    shutdown.trigger();
                    return Err(e);
                }
            }
        }
        drop((acceptor_done, closer));
        let watcher = match (certificates, config.tls_watch) {
            (Some(certificates), Some(period)) if certificates.reloadable() => {
                match watch::spawn(certificates, audit, period, &shutdown) {
                    Ok(thread) => Some(thread),
                    Err(e) => {
                        shutdown.trigger();
                        return Err(e);
                    }
                }
            }
            _ => None,
        };
        log::info!(
            target: LOG,
            "listening on {} (mode={} workers={workers} balance={} worker-sched={} backlog={} max-conns={max_conns} overflow={})",
            listen::describe(&addrs),
            config.mode,
            config.balance,
            config.worker_sched,
            config.backlog,
            config.overflow
        );
        if !tls_addrs.is_empty() {
            log::info!(target: LOG, "TLS on {}", listen::describe(&tls_addrs));
            if let Some(rate) = &shared.tls_rate {
                log::info!(
                    target: LOG,
                    "TLS handshakes at most {}/s (burst {}); the rest closed unread",
                    rate.per_sec(),
                    super::arrival::rate::burst(rate.per_sec())
                );
            }
        }
        if !faults.active().is_empty() {
            let specs: Vec<String> = faults
                .active()
                .iter()
                .map(|f| format!("#{} {}", f.id, f.spec))
                .collect();
            log::info!(target: LOG, "faults: {} seed={}", specs.join(" "), faults.seed());
            if config.udp.is_none() && faults.active().iter().any(|f| f.spec.kind.is_udp()) {
                log::warn!(target: LOG, "the udp-* faults act on --udp datagrams, and there are none without --udp");
            }
        }
        let acceptors = Acceptors {
            shared: Arc::clone(&shared),
            wakers: acceptor_wakers,
            stopped: acceptor_stopped.clone(),
        };
        Ok(Running {
            addrs,
            udp_addr,
            udp_counts,
            acceptors,
            faults,
            registry,
            shutdown,
            shutdown_timeout: config.shutdown_timeout,
            pool,
            acceptor_threads,
            acceptor_stopped,
            closer_thread,
            forced_closes,
            watcher,
        })
    }
}

/// Serves on `listener` with `config` until `shutdown` is triggered. The one-call way in;
/// see [`Server`] for a custom handler, the registry or the console.
///
/// # Errors
///
/// As [`Server::run`].
pub fn serve(listener: TcpListener, config: Config, shutdown: Shutdown) -> io::Result<Summary> {
    Server::new(listener, config).with_shutdown(shutdown).run()
}
