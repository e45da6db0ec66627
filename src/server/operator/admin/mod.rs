//! The admin endpoint (`--admin ADDR`): a small HTTP/1.1 server on a thread of its own.
//!
//! A sibling of the [`console`](crate::server::operator::console): it answers over the same library calls
//! ([`Registry::list`], [`Registry::stats`], [`Registry::kick`], [`Shutdown::trigger`],
//! [`Faults::add`], [`Faults::clear`], [`Faults::list`]) and
//! reimplements none of them; `GET /metrics` is [`Exposition::encode`]. HTTP is `http`'s:
//! one bounded request per connection, read within a deadline, answered, then the close.
//! The admin thread only accepts; each connection is read and answered on a thread of its
//! own, at most [`MAX_CONNECTIONS`] at once (one more is answered 503 and closed at once),
//! so a client that never finishes its request or never reads the answer holds one of those
//! threads until the deadline, never the admin thread, a worker or the data port's
//! descriptors.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /metrics` | the Prometheus text exposition |
//! | `GET /healthz` | 200 `ok` while serving, 503 once shutdown began |
//! | `GET /sessions` | the `/list` data as a JSON list |
//! | `POST /sessions/ID/kick` | ends session ID with `quit`; 409 if it is already closing, 404 for an unknown id |
//! | `GET /stats` | the `/stats` data as a JSON object |
//! | `POST /shutdown` | starts a graceful shutdown (202) |
//! | `GET /faults` | the faults as a JSON list: id, spec, kind, p, sessions touched, active |
//! | `POST /faults` | adds the fault whose SPEC is the body (plain text); 201 with its id, 400 for a bad SPEC |
//! | `DELETE /faults/ID` | clears fault ID (200); 404 for an unknown or already cleared id |
//!
//! An unknown path is 404, a wrong method 405 (with `Allow`), a body over [`BODY_LIMIT`] 413;
//! every error has a one-line text body. There is no authentication: bind it to loopback.

mod http;

use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::{Value, json};

pub use http::{DEADLINE, HEAD_LIMIT};

use crate::server::faults::{FaultId, FaultSpec, Faults};
use crate::server::operator::metrics::{self, Exposition};
use crate::server::session::SessionId;
use crate::server::session::registry::{Kick, Registry};
use crate::server::shutdown::Shutdown;

/// The largest request body read; a longer one is answered 413 unread.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The most admin connections served at once (each a thread and a descriptor); one more is
/// answered 503 and closed without a thread.
pub const MAX_CONNECTIONS: usize = 32;

/// What the routes act on: the same handles the console holds.
#[derive(Debug, Clone)]
struct Control {
    registry: Registry,
    shutdown: Shutdown,
    exposition: Exposition,
    faults: Faults,
}

/// A running admin endpoint. Dropping it (or [`Admin::stop`]) stops its thread.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use std::net::TcpStream;
/// use tcpool::server::{admin::Admin, bind, Config, Server};
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
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin").field("addr", &self.addr).finish()
    }
}

impl Admin {
    /// Serves the admin routes for `server` on `listener` (from [`bind`](crate::server::bind)), on a
    /// thread named `tcpool-admin`, until stopped. Start it before [`Server::start`]
    /// consumes the server; it keeps answering through the shutdown, so a load balancer
    /// sees `/healthz` turn 503.
    ///
    /// [`Server::start`]: crate::server::Server::start
    ///
    /// # Errors
    ///
    /// When the listener's address cannot be read or the thread cannot be started.
    pub fn start(listener: TcpListener, server: &crate::server::run::Server) -> io::Result<Admin> {
        let control = Control {
            registry: server.registry(),
            shutdown: server.shutdown(),
            exposition: server.exposition(),
            faults: server.faults(),
        };
        let addr = listener.local_addr()?;
        // Non-blocking, so the admin thread sees `stop` within one poll interval.
        listener.set_nonblocking(true)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let stopping = Arc::clone(&stopping);
            thread::Builder::new()
                .name("tcpool-admin".into())
                .spawn(move || serve(&listener, &stopping, &control))?
        };
        log::info!("admin endpoint on http://{addr} (no authentication)");
        Ok(Admin {
            addr,
            stopping,
            thread: Some(thread),
        })
    }

    /// The address the admin endpoint listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking connections and waits for the admin thread (connections already taken
    /// are still answered on their own threads, each within its [`DEADLINE`]s; none is
    /// waited for).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.halt();
    }
}

/// How often the admin thread looks for a new connection or `stop` when idle.
const POLL: Duration = Duration::from_millis(20);

fn serve(listener: &TcpListener, stopping: &AtomicBool, control: &Control) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stopping.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(POLL);
                continue;
            }
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                log::debug!("admin accept failed: error={e}");
                thread::sleep(POLL);
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            busy(stream);
            continue;
        }
        let slot = Slot(Arc::clone(&active));
        let control = control.clone();
        let spawned = thread::Builder::new()
            .name("tcpool-admin-request".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _slot = slot;
                connection(stream, &control);
            });
        if let Err(e) = spawned {
            log::warn!("admin connection dropped: error={e}");
        }
    }
    log::debug!("admin stopped");
}

/// One of the [`MAX_CONNECTIONS`] places, given back when its thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection over the cap: a 503 if the socket takes it at once, then the close.
fn busy(stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let line = "too many admin connections\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{line}",
        line.len()
    );
    let _ = (&stream).write_all(answer.as_bytes());
    log::debug!("admin connection refused: {MAX_CONNECTIONS} already served");
}

/// What a route answers: a status and a text or JSON body.
struct Reply {
    status: u16,
    body: Body,
    allow: Option<&'static str>,
}

enum Body {
    Text(String),
    Json(Value),
    Metrics(String),
}

impl Reply {
    fn text(status: u16, line: impl Into<String>) -> Reply {
        let mut line = line.into();
        line.push('\n');
        Reply {
            status,
            body: Body::Text(line),
            allow: None,
        }
    }

    fn json(status: u16, value: Value) -> Reply {
        Reply {
            status,
            body: Body::Json(value),
            allow: None,
        }
    }

    fn wrong_method(allow: &'static str) -> Reply {
        Reply {
            allow: Some(allow),
            ..Reply::text(405, format!("method not allowed: use {allow}"))
        }
    }
}

/// Reads one request, answers it and closes, each step within its deadline.
fn connection(mut stream: TcpStream, control: &Control) {
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let (method, reply) = match http::read_request(&mut stream, BODY_LIMIT) {
        Ok(request) => {
            let path = request.target.split(['?', '#']).next().unwrap_or("");
            let reply = route(&request.method, path, &request.body, control);
            log::debug!(
                "admin request: method={} path={} status={}",
                crate::server::protocol::escape(request.method.as_bytes()),
                crate::server::protocol::escape(path.as_bytes()),
                reply.status
            );
            (request.method, reply)
        }
        Err(http::Refusal::Answer(status, line)) => {
            log::debug!("admin request refused: status={status}");
            (String::new(), Reply::text(status, line))
        }
        Err(http::Refusal::Silent) => return,
    };
    let (bytes, kind) = match reply.body {
        Body::Text(s) => (s.into_bytes(), "text/plain; charset=utf-8"),
        Body::Json(v) => {
            let mut s = v.to_string();
            s.push('\n');
            (s.into_bytes(), "application/json")
        }
        Body::Metrics(s) => (s.into_bytes(), metrics::CONTENT_TYPE),
    };
    let mut headers = vec![("Content-Type", kind)];
    if let Some(allow) = reply.allow {
        headers.push(("Allow", allow));
    }
    let with_body = method != "HEAD";
    if let Err(e) = http::respond(&mut stream, reply.status, &headers, &bytes, with_body) {
        log::debug!("admin reply failed: error={e}");
    }
}

fn route(method: &str, path: &str, body: &[u8], control: &Control) -> Reply {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let get = method == "GET" || method == "HEAD";
    let post = method == "POST";
    match segments.as_slice() {
        ["metrics"] if get => Reply {
            status: 200,
            body: Body::Metrics(control.exposition.encode()),
            allow: None,
        },
        ["healthz"] if get => {
            if control.shutdown.is_triggered() {
                Reply::text(503, "shutting down")
            } else {
                Reply::text(200, "ok")
            }
        }
        ["sessions"] if get => Reply::json(200, sessions(&control.registry)),
        ["stats"] if get => Reply::json(200, stats(&control.registry)),
        ["sessions", id, "kick"] if post => kick(&control.registry, id),
        ["shutdown"] if post => {
            control.shutdown.trigger();
            Reply::text(202, "shutting down")
        }
        ["faults"] if get => Reply::json(200, faults(&control.faults)),
        ["faults"] if post => add_fault(&control.faults, body),
        ["faults", id] if method == "DELETE" => clear_fault(&control.faults, id),
        ["faults"] => Reply::wrong_method("GET, POST"),
        ["faults", _] => Reply::wrong_method("DELETE"),
        ["metrics" | "healthz" | "sessions" | "stats"] => Reply::wrong_method("GET"),
        ["sessions", _, "kick"] | ["shutdown"] => Reply::wrong_method("POST"),
        _ => Reply::text(
            404,
            format!(
                "no such route: {}",
                crate::server::protocol::escape(path.as_bytes())
            ),
        ),
    }
}

fn kick(registry: &Registry, id: &str) -> Reply {
    let unknown = || Reply::text(404, format!("no session #{}", id.escape_debug()));
    let Ok(id) = id.parse::<SessionId>() else {
        return unknown();
    };
    match registry.try_kick(id) {
        Kick::Kicked => Reply::json(200, json!({ "kicked": id.0 })),
        Kick::AlreadyClosing => Reply::text(409, format!("session #{id} is already closing")),
        Kick::Unknown => unknown(),
    }
}

/// `/fault` as JSON: every fault added so far, cleared ones included (`active: false`).
fn faults(faults: &Faults) -> Value {
    let list: Vec<Value> = faults
        .list()
        .into_iter()
        .map(|f| {
            json!({
                "id": f.id.0,
                "spec": f.spec.to_string(),
                "kind": f.spec.kind.name(),
                "p": f.spec.p,
                "sessions": f.sessions,
                "active": f.active,
            })
        })
        .collect();
    Value::Array(list)
}

fn add_fault(faults: &Faults, body: &[u8]) -> Reply {
    let Ok(text) = std::str::from_utf8(body) else {
        return Reply::text(400, "the fault spec is not UTF-8 text");
    };
    match text.trim().parse::<FaultSpec>() {
        Ok(spec) => {
            let id = faults.add(spec);
            Reply::json(201, json!({ "id": id.0, "spec": spec.to_string() }))
        }
        Err(e) => Reply::text(400, e.to_string().replace(['\n', '\r'], " ")),
    }
}

fn clear_fault(faults: &Faults, id: &str) -> Reply {
    let unknown = || Reply::text(404, format!("no active fault #{}", id.escape_debug()));
    let Ok(id) = id.parse::<FaultId>() else {
        return unknown();
    };
    match faults.clear(Some(id)) {
        0 => unknown(),
        _ => Reply::json(200, json!({ "cleared": id.0 })),
    }
}

/// `/list` as JSON: one object per session, by id.
fn sessions(registry: &Registry) -> Value {
    let list: Vec<Value> = registry
        .list()
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id.0,
                "peer": s.peer.to_string(),
                "nick": s.nick,
                "connected_seconds": s.connected_for.as_secs_f64(),
                "messages_in": s.traffic.messages_in,
                "messages_out": s.traffic.messages_out,
                "bytes_in": s.traffic.bytes_in,
                "bytes_out": s.traffic.bytes_out,
                "closing": s.closing,
            })
        })
        .collect();
    Value::Array(list)
}

/// `/stats` as JSON.
fn stats(registry: &Registry) -> Value {
    let s = registry.stats();
    json!({
        "uptime_seconds": s.uptime.as_secs_f64(),
        "sessions": s.sessions,
        "peak": s.peak,
        "total": s.total,
        "rejected": s.rejected,
        "backlog": s.backlog,
        "messages_in": s.traffic.messages_in,
        "messages_out": s.traffic.messages_out,
        "bytes_in": s.traffic.bytes_in,
        "bytes_out": s.traffic.bytes_out,
    })
}
