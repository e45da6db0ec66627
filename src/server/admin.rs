//! The admin endpoint (`--admin ADDR`): a small HTTP/1.1 server on a thread of its own.
//!
//! A sibling of the [`console`](super::console): it answers over the same library calls
//! ([`Registry::list`], [`Registry::stats`], [`Registry::kick`], [`Shutdown::trigger`],
//! [`Faults::add`], [`Faults::clear`], [`Faults::list`]) and
//! reimplements none of them; `GET /metrics` is [`Exposition::encode`]. HTTP itself is
//! `tiny_http`'s: it reads each connection's request head on a thread of its own pool and
//! hands complete heads to the admin thread, which answers each request on a thread of its
//! own, so a client that never finishes its head or body, or never reads the answer, holds
//! one of those threads, never the admin thread, another client or a worker.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /metrics` | the Prometheus text exposition |
//! | `GET /healthz` | 200 `ok` while serving, 503 once shutdown began |
//! | `GET /sessions` | the `/list` data as a JSON list |
//! | `POST /sessions/ID/kick` | ends session ID with `quit`; 404 for an unknown id |
//! | `GET /stats` | the `/stats` data as a JSON object |
//! | `POST /shutdown` | starts a graceful shutdown (202) |
//! | `GET /faults` | the faults as a JSON list: id, spec, kind, p, sessions touched, active |
//! | `POST /faults` | adds the fault whose SPEC is the body (plain text); 201 with its id, 400 for a bad SPEC |
//! | `DELETE /faults/ID` | clears fault ID (200); 404 for an unknown or already cleared id |
//!
//! An unknown path is 404, a wrong method 405 (with `Allow`), a body over [`BODY_LIMIT`] 413;
//! every error has a one-line text body. There is no authentication: bind it to loopback.

use std::fmt;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};

use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, StatusCode};

use super::faults::{FaultId, FaultSpec, Faults};
use super::metrics::{self, Exposition};
use super::registry::Registry;
use super::session::SessionId;
use super::shutdown::Shutdown;

/// The largest request body read; a longer one is answered 413 unread.
pub const BODY_LIMIT: usize = 64 * 1024;

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
    http: Arc<tiny_http::Server>,
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
    /// Serves the admin routes for `server` on `listener` (from [`bind`](super::bind)), on a
    /// thread named `tcpool-admin`, until stopped. Start it before [`Server::start`]
    /// consumes the server; it keeps answering through the shutdown, so a load balancer
    /// sees `/healthz` turn 503.
    ///
    /// [`Server::start`]: super::Server::start
    ///
    /// # Errors
    ///
    /// When the listener's address cannot be read or the thread cannot be started.
    pub fn start(listener: TcpListener, server: &super::Server) -> io::Result<Admin> {
        let control = Control {
            registry: server.registry(),
            shutdown: server.shutdown(),
            exposition: server.exposition(),
            faults: server.faults(),
        };
        let addr = listener.local_addr()?;
        let http = tiny_http::Server::from_listener(listener, None).map_err(io::Error::other)?;
        let http = Arc::new(http);
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let (http, stopping) = (Arc::clone(&http), Arc::clone(&stopping));
            thread::Builder::new()
                .name("tcpool-admin".into())
                .spawn(move || serve(&http, &stopping, &control))?
        };
        log::info!("admin endpoint on http://{addr} (no authentication)");
        Ok(Admin {
            http,
            addr,
            stopping,
            thread: Some(thread),
        })
    }

    /// The address the admin endpoint listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking requests and waits for the admin thread (requests already taken are
    /// still answered on their own threads).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.http.unblock();
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

fn serve(http: &tiny_http::Server, stopping: &AtomicBool, control: &Control) {
    loop {
        match http.recv() {
            // Reading a body and writing an answer block on the client, which may never send
            // the one or read the other: each request gets a thread of its own, as each
            // connection already has one in the HTTP layer, so no client holds up another.
            Ok(request) => {
                let control = control.clone();
                let spawned = thread::Builder::new()
                    .name("tcpool-admin-request".into())
                    .spawn(move || answer(request, &control));
                if let Err(e) = spawned {
                    log::warn!("admin request dropped: error={e}");
                }
            }
            Err(_) if stopping.load(Ordering::SeqCst) => break,
            Err(e) => log::debug!("admin accept failed: error={e}"),
        }
    }
    log::debug!("admin stopped");
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

fn answer(mut request: Request, control: &Control) {
    let method = request.method().clone();
    let url = request.url().to_owned();
    let path = url.split(['?', '#']).next().unwrap_or("");
    let reply = match read_body(&mut request) {
        Ok(body) => route(&method, path, &body, control),
        Err(reply) => reply,
    };
    log::debug!(
        "admin request: method={method} path={} status={}",
        super::protocol::escape(path.as_bytes()),
        reply.status
    );
    let (bytes, kind) = match reply.body {
        Body::Text(s) => (s.into_bytes(), "text/plain; charset=utf-8"),
        Body::Json(v) => {
            let mut s = v.to_string();
            s.push('\n');
            (s.into_bytes(), "application/json")
        }
        Body::Metrics(s) => (s.into_bytes(), metrics::CONTENT_TYPE),
    };
    let mut response = Response::from_data(bytes)
        .with_status_code(StatusCode(reply.status))
        .with_header(header("Content-Type", kind));
    if let Some(allow) = reply.allow {
        response = response.with_header(header("Allow", allow));
    }
    if let Err(e) = request.respond(response) {
        log::debug!("admin reply failed: error={e}");
    }
}

fn header(name: &str, value: &str) -> Header {
    // Both are fixed ASCII strings of this file.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid ASCII header")
}

/// Reads the body up to [`BODY_LIMIT`]; a longer one (by its length or its bytes) is 413.
fn read_body(request: &mut Request) -> Result<Vec<u8>, Reply> {
    let too_big = || {
        Reply::text(
            413,
            format!("body too large: the limit is {BODY_LIMIT} bytes"),
        )
    };
    if request.body_length().is_some_and(|n| n > BODY_LIMIT) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    let limit = BODY_LIMIT as u64 + 1;
    match request.as_reader().take(limit).read_to_end(&mut body) {
        Ok(n) if n > BODY_LIMIT => Err(too_big()),
        Ok(_) => Ok(body),
        Err(e) => Err(Reply::text(400, format!("cannot read the body: {e}"))),
    }
}

fn route(method: &Method, path: &str, body: &[u8], control: &Control) -> Reply {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let get = *method == Method::Get || *method == Method::Head;
    let post = *method == Method::Post;
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
        ["faults", id] if *method == Method::Delete => clear_fault(&control.faults, id),
        ["faults"] => Reply::wrong_method("GET, POST"),
        ["faults", _] => Reply::wrong_method("DELETE"),
        ["metrics" | "healthz" | "sessions" | "stats"] => Reply::wrong_method("GET"),
        ["sessions", _, "kick"] | ["shutdown"] => Reply::wrong_method("POST"),
        _ => Reply::text(
            404,
            format!(
                "no such route: {}",
                super::protocol::escape(path.as_bytes())
            ),
        ),
    }
}

fn kick(registry: &Registry, id: &str) -> Reply {
    let unknown = || Reply::text(404, format!("no session #{}", id.escape_debug()));
    let Ok(id) = id.parse::<SessionId>() else {
        return unknown();
    };
    if registry.kick(id) {
        Reply::json(200, json!({ "kicked": id.0 }))
    } else {
        unknown()
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
