//! The admin endpoint's connections, as tasks on the control plane: accepting within the caps,
//! 403 and 503 answered and closed gently, each served connection handed to hyper with its
//! limits, and the lingering close after it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, timeout, timeout_at};

use super::routes::{Open, Reply, openness, route};
use super::{Access, Control, Options, permitted};

/// What every connection task reads.
pub(super) struct State {
    pub(super) control: Control,
    pub(super) access: Access,
    pub(super) options: Options,
}

/// After the last answer, how long the input is drained before the close, and how much of it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// How long a 403 or 503 may take to be written.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// How long a connection told to finish (its lifetime over, or the endpoint stopping) may
/// take to end its request under way.
const FINISH: Duration = Duration::from_secs(2);

/// After a failed `accept()` (out of descriptors), the wait before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts until `stop` turns true (or its sender is gone); `done` is dropped on return.
pub(super) async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let limits = state.options.limits;
    let places = Arc::new(Semaphore::new(limits.max_connections + limits.max_refusing));
    let served = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        // Past both caps nothing is accepted: new clients wait in the kernel's queue.
        let place = tokio::select! {
            _ = stop.changed() => break,
            place = Arc::clone(&places).acquire_owned() => match place {
                Ok(place) => place,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    log::debug!("admin accept failed: error={e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        if !permitted(&state.access, peer) {
            log::debug!("admin connection denied: peer={peer}");
            tokio::spawn(refuse(stream, StatusCode::FORBIDDEN, "forbidden\n", place));
            continue;
        }
        match Arc::clone(&served).try_acquire_owned() {
            Ok(slot) => {
                let state = Arc::clone(&state);
                let stop = stop.clone();
                tokio::spawn(connection(stream, peer, state, stop, (place, slot)));
            }
            Err(_) => {
                log::debug!(
                    "admin connection refused: peer={peer} served={}",
                    limits.max_connections
                );
                let line = "too many admin connections\n";
                tokio::spawn(refuse(stream, StatusCode::SERVICE_UNAVAILABLE, line, place));
            }
        }
    }
    drop(listener);
    drop(done);
    log::debug!("admin stopped accepting");
}

/// Answers `status` without reading the request, then closes gently.
async fn refuse(
    mut stream: TcpStream,
    status: StatusCode,
    line: &'static str,
    _place: OwnedSemaphorePermit,
) {
    let answer = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{line}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        line.len()
    );
    let _ = timeout(REFUSAL_WRITE, stream.write_all(answer.as_bytes())).await;
    linger(stream).await;
}

/// The close that lets the client read the last answer: the write side shut, what the client
/// still sends read and dropped (at most [`LINGER`], [`LINGER_BYTES`]), then the close. A
/// close with unread input would send a reset, which can wipe out the answer.
async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 16 * 1024];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

/// Serves one connection with hyper, within its lifetime, then closes it gently.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    _places: (OwnedSemaphorePermit, OwnedSemaphorePermit),
) {
    // A second descriptor of the same socket, so that it outlives hyper's, whichever way
    // hyper ends: the close below is the gentle one.
    let Some((stream, kept)) = twin(stream) else {
        return;
    };
    let limits = state.options.limits;
    let service = {
        let state = Arc::clone(&state);
        service_fn(move |request| {
            let state = Arc::clone(&state);
            async move { Ok::<_, Infallible>(answer(request, peer, &state).await) }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.head.max(8192))
        .title_case_headers(true)
        .keep_alive(true);
    // Boxed, so that it can be dropped (and its descriptor closed) before the close below.
    let mut conn = Box::pin(builder.serve_connection(TokioIo::new(stream), service));
    let lifetime = tokio::time::sleep(limits.lifetime);
    tokio::pin!(lifetime);
    let finished = tokio::select! {
        result = conn.as_mut() => Some(result),
        () = &mut lifetime => None,
        _ = stop.changed() => None,
    };
    let result = match finished {
        Some(result) => result,
        None => {
            conn.as_mut().graceful_shutdown();
            timeout(FINISH, conn.as_mut()).await.unwrap_or(Ok(()))
        }
    };
    if let Err(e) = result {
        log::debug!("admin connection ended: peer={peer} error={e}");
    }
    drop(conn);
    if let Ok(kept) = TcpStream::from_std(kept) {
        linger(kept).await;
    }
}

/// The stream for hyper and a second descriptor of the same socket.
fn twin(stream: TcpStream) -> Option<(TcpStream, std::net::TcpStream)> {
    let std = stream.into_std().ok()?;
    let kept = std.try_clone().ok()?;
    Some((TcpStream::from_std(std).ok()?, kept))
}

/// One request: access was checked at accept; here the token, the head's sanity, the body
/// within its limits, then the route.
async fn answer(
    request: Request<Incoming>,
    peer: SocketAddr,
    state: &State,
) -> Response<Full<Bytes>> {
    respond(read_and_route(request, peer, state).await)
}

async fn read_and_route(request: Request<Incoming>, peer: SocketAddr, state: &State) -> Reply {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let options = &state.options;
    // Bytes that are not visible ASCII in a header value: refused, as the request line's are.
    if parts.headers.values().any(|v| v.to_str().is_err()) {
        return Reply::text(400, "bad request: a header is not ASCII text").closing();
    }
    let needs_token = match openness(&path) {
        Open::Health => false,
        Open::Metrics => !options.public_metrics,
        Open::Guarded => true,
    };
    if needs_token && let Some(token) = &options.token {
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if !token.authorizes(given) {
            log::debug!(
                "admin request unauthorized: peer={peer} method={} path={}",
                parts.method,
                crate::server::protocol::escape(path.as_bytes())
            );
            let reply = Reply {
                challenge: true,
                ..Reply::text(401, "unauthorized: send Authorization: Bearer TOKEN")
            };
            return reply.closing();
        }
    }
    let limit = options.limits.body;
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_big =
        || Reply::text(413, format!("body too large: the limit is {limit} bytes")).closing();
    if announced.is_some_and(|n| n > limit as u64) {
        return too_big();
    }
    let read = timeout(
        options.limits.body_timeout,
        Limited::new(body, limit).collect(),
    )
    .await;
    let bytes = match read {
        Err(_) => return Reply::text(408, "request timeout: the body did not arrive").closing(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_big(),
        Ok(Err(e)) => {
            log::debug!("admin request body failed: peer={peer} error={e}");
            return Reply::text(400, "bad request: the body could not be read").closing();
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let reply = route(
        parts.method.as_str(),
        &path,
        parts.uri.query(),
        &bytes,
        peer,
        &state.control,
    );
    log::debug!(
        "admin request: peer={peer} method={} path={} status={}",
        parts.method,
        crate::server::protocol::escape(path.as_bytes()),
        reply.status
    );
    reply
}

/// The HTTP response for a reply.
fn respond(reply: Reply) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let allow = reply.allow;
    let link = reply.link.clone();
    let (close, challenge) = (reply.close, reply.challenge);
    let (bytes, kind) = reply.into_bytes();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Some(allow) = allow {
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if let Some(link) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LINK, link);
    }
    if challenge {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tcpool admin\""),
        );
    }
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
