//! The admin endpoint (`--admin ADDR`): HTTP/1.1 with hyper, as tasks on the
//! [control plane](crate::server::control).
//!
//! A sibling of the [`console`](crate::server::operator::console): it answers over the same library calls
//! ([`Registry::page`], [`Registry::stats`], [`Faults::list`]) and makes its changes through
//! the same [`Audit`] (kick, shutdown, faults added and cleared), so each is logged with the
//! client's address and counted; `GET /metrics` is [`Exposition::encode`].
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /metrics` | the Prometheus text exposition |
//! | `GET /healthz` | 200 `ok` while serving (`ok cluster=up`, or `ok cluster=degraded` while the cluster link is not up), 503 once shutdown began |
//! | `GET /sessions[?limit=N&after=ID]` | the `/list` data as a JSON list, a page of at most `N` sessions (1000 by default, 10000 at most) with ids above `ID`; a `Link: <...>; rel="next"` header when more remain |
//! | `POST /sessions/ID/kick` | ends session ID with `quit`; 409 if it is already closing, 404 for an unknown id |
//! | `GET /stats` | the `/stats` data as a JSON object (with a `cluster` object when clustered) |
//! | `GET /cluster[?members=N]` | the cluster as JSON: this node (state, counts, delivery lag) and the other nodes with at most `N` of their members (1000 by default); 404 when not clustered |
//! | `POST /shutdown` | starts a graceful shutdown (202) |
//! | `GET /faults` | the faults as a JSON list: id, spec, kind, p, sessions touched, active |
//! | `POST /faults` | adds the fault whose SPEC is the body (plain text); 201 with its id, 400 for a bad SPEC |
//! | `DELETE /faults/ID` | clears fault ID (200); 404 for an unknown or already cleared id |
//! | `POST /tls/reload` | reads the TLS certificate and key files again: 200 with the certificate now served; 500 when a file is refused (the one in use stays); 409 without files to read (`--tls auto`, no TLS) |
//!
//! An unknown path is 404, a wrong method 405 (with `Allow`), a bad `limit` or `after` 400, a
//! body over [`BODY_LIMIT`] 413, a body not sent within [`Limits::body_timeout`] 408; every
//! error has a one-line text body.
//!
//! Who may ask: a client `--allow`/`--deny` turns away is answered 403 and closed. With a
//! [`Token`], every route but `/healthz` (and `/metrics` with [`Options::public_metrics`])
//! needs `Authorization: Bearer TOKEN`, else 401 with `WWW-Authenticate: Bearer`. Without
//! one there is no authentication: the binary refuses that on any address but loopback.
//!
//! Connections are tasks, at most [`Limits::max_connections`] served at once; the next ones,
//! up to [`Limits::max_refusing`] more, are answered `503` with `Connection: close` (the
//! answer written, the write side shut, the input drained briefly, then the close, so the
//! client reads the answer rather than a reset); past both the endpoint stops accepting and
//! new clients wait in the kernel's queue. Every connection is bounded in time: its request
//! head ([`Limits::header_timeout`], which is also how long a kept-alive connection may sit
//! idle), its body ([`Limits::body_timeout`]) and its whole life ([`Limits::lifetime`]).

mod auth;
mod routes;
mod serve;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, mpsc};
use std::time::Duration;

pub use auth::Token;

use crate::server::arrival::access::Access;
use crate::server::control::ControlPlane;
use crate::server::faults::Faults;
use crate::server::operator::audit::Audit;
use crate::server::operator::metrics::Exposition;
use crate::server::session::registry::Registry;
use crate::server::shutdown::Shutdown;
use crate::tls::Certificates;

/// The largest request body read; a longer one is answered 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The largest request head (request line and headers); a longer one is answered 431.
pub const HEAD_LIMIT: usize = 8 * 1024;

/// The most admin connections served at once by default.
pub const MAX_CONNECTIONS: usize = 256;

/// How many connections past [`MAX_CONNECTIONS`] are answered 503 at once by default.
pub const MAX_REFUSING: usize = 256;

/// `GET /sessions`: the sessions in a page unless `limit` says otherwise, and the most it may.
pub const SESSIONS_PAGE: usize = 1000;

/// The largest `limit` of `GET /sessions`.
pub const SESSIONS_PAGE_MAX: usize = 10_000;

/// `GET /cluster`: the members listed in all unless `members` says otherwise.
pub const CLUSTER_MEMBERS: usize = 1000;

/// The largest `members` of `GET /cluster`.
pub const CLUSTER_MEMBERS_MAX: usize = 10_000;

/// How long and how much an admin connection may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once ([`MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Connections answered 503 at once, beyond those ([`MAX_REFUSING`]).
    pub max_refusing: usize,
    /// The largest request head, at least 8192 ([`HEAD_LIMIT`]).
    pub head: usize,
    /// The largest request body ([`BODY_LIMIT`]).
    pub body: usize,
    /// How long a request head may take to arrive, counted from the end of the previous
    /// answer on a kept-alive connection (so also the longest idle time); past it the
    /// connection is closed (5 s).
    pub header_timeout: Duration,
    /// How long a request body may take to arrive once its head has; past it, 408 (5 s).
    pub body_timeout: Duration,
    /// How long a connection may stay open in all; then it finishes the request under way
    /// and closes (60 s).
    pub lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            max_refusing: MAX_REFUSING,
            head: HEAD_LIMIT,
            body: BODY_LIMIT,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            lifetime: Duration::from_secs(60),
        }
    }
}

/// Who may use the endpoint and its limits.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The bearer token every route but `/healthz` needs; `None`: no authentication.
    pub token: Option<Token>,
    /// `/metrics` needs no token even when there is one (`--admin-public-metrics`).
    pub public_metrics: bool,
    /// The limits of each connection.
    pub limits: Limits,
}

/// What the routes act on: the same handles the console holds.
#[derive(Debug, Clone)]
struct Control {
    registry: Registry,
    shutdown: Shutdown,
    exposition: Exposition,
    faults: Faults,
    audit: Audit,
    tls: Option<Certificates>,
    cluster: Option<Arc<crate::server::cluster::Link>>,
}

/// A running admin endpoint. Dropping it (or [`Admin::stop`]) stops it.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use std::net::TcpStream;
/// use tcpool::server::{bind, operator::admin::Admin, Config, Server};
///
/// let server = Server::new(bind("127.0.0.1:0".parse()?)?, Config::default());
/// let admin = Admin::start(bind("127.0.0.1:0".parse()?)?, &server)?;
/// let shutdown = server.shutdown();
/// let running = server.start()?;
///
/// let mut http = TcpStream::connect(admin.local_addr())?;
/// http.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
/// let mut answer = String::new();
/// http.read_to_string(&mut answer)?;
/// assert!(answer.starts_with("HTTP/1.1 200"));
/// assert!(answer.ends_with("ok\n"));
///
/// shutdown.trigger();
/// running.wait()?;
/// admin.stop();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Admin {
    addr: SocketAddr,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    stopped: Option<mpsc::Receiver<()>>,
    /// The control plane, when this endpoint started its own.
    control: Option<ControlPlane>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin").field("addr", &self.addr).finish()
    }
}

impl Admin {
    /// Serves the admin routes for `server` on `listener` (from [`bind`](crate::server::bind))
    /// with no token and the default [`Limits`], on a control plane of its own, until
    /// stopped. `--allow`/`--deny` ([`Server::access`]) apply. Start it before
    /// [`Server::start`] consumes the server; it keeps answering through the shutdown, so a
    /// load balancer sees `/healthz` turn 503.
    ///
    /// [`Server::start`]: crate::server::Server::start
    /// [`Server::access`]: crate::server::Server::access
    ///
    /// # Errors
    ///
    /// When the listener's address cannot be read or the control plane cannot be started.
    pub fn start(listener: TcpListener, server: &crate::server::run::Server) -> io::Result<Admin> {
        Admin::start_with(listener, server, Options::default())
    }

    /// [`Admin::start`] with a token, public metrics or other limits.
    ///
    /// # Errors
    ///
    /// As [`Admin::start`].
    pub fn start_with(
        listener: TcpListener,
        server: &crate::server::run::Server,
        options: Options,
    ) -> io::Result<Admin> {
        let control = ControlPlane::start()?;
        let mut admin = Admin::start_on(&control, listener, server, options)?;
        admin.control = Some(control);
        Ok(admin)
    }

    /// [`Admin::start_with`] on a control plane that others share; stopping the endpoint
    /// leaves it running.
    ///
    /// # Errors
    ///
    /// When the listener cannot be made non-blocking or registered with the runtime.
    pub fn start_on(
        control: &ControlPlane,
        listener: TcpListener,
        server: &crate::server::run::Server,
        options: Options,
    ) -> io::Result<Admin> {
        let state = serve::State {
            control: Control {
                registry: server.registry(),
                shutdown: server.shutdown(),
                exposition: server.exposition(),
                faults: server.faults(),
                audit: server.audit(),
                tls: server.certificates(),
                cluster: server.cluster_link(),
            },
            access: server.access(),
            options,
        };
        Admin::serve(control, listener, state)
    }

    fn serve(
        control: &ControlPlane,
        listener: TcpListener,
        state: serve::State,
    ) -> io::Result<Admin> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let listener = {
            let _entered = control.handle().enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let auth = match (&state.options.token, state.options.public_metrics) {
            (None, _) => "auth=none",
            (Some(_), false) => "auth=bearer open=/healthz",
            (Some(_), true) => "auth=bearer open=/healthz,/metrics",
        };
        let access = if state.access.is_open() {
            ""
        } else {
            " access=--allow/--deny"
        };
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let (done, stopped) = mpsc::channel();
        control.spawn(serve::accept_loop(
            listener,
            Arc::new(state),
            stopping,
            done,
        ));
        log::info!("admin endpoint on http://{addr} ({auth}{access})");
        Ok(Admin {
            addr,
            stop: Some(stop),
            stopped: Some(stopped),
            control: None,
        })
    }

    /// The address the admin endpoint listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking connections; those open finish the request under way and close
    /// (on its own control plane, within [`STOP_GRACE`](crate::server::control::STOP_GRACE);
    /// the rest are closed).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(stopped) = self.stopped.take() {
            // The accept task drops its end once the listener is closed.
            let _ = stopped.recv_timeout(Duration::from_secs(1));
        }
        if let Some(control) = self.control.take() {
            control.stop();
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Whether the access rules let `peer` in.
fn permitted(access: &Access, peer: SocketAddr) -> bool {
    access.permits(peer.ip())
}
