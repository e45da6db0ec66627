//! What each admin route answers: the route table, the replies, and the JSON of sessions,
//! stats and faults. The HTTP around them is `serve`'s.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{CLUSTER_MEMBERS, CLUSTER_MEMBERS_MAX, Control, SESSIONS_PAGE, SESSIONS_PAGE_MAX};
use crate::server::cluster::{Link, LinkState};
use crate::server::faults::{FaultId, FaultSpec, Faults};
use crate::server::operator::audit::Source;
use crate::server::operator::metrics;
use crate::server::session::registry::{Kick, Registry};
use crate::server::session::{SessionId, registry::SessionInfo};
use crate::tls::ReloadError;

/// What a route answers: a status, a text or JSON body and the headers that go with it.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: Body,
    pub(super) allow: Option<&'static str>,
    pub(super) link: Option<String>,
    /// Close the connection after this answer (the request's body was not read whole).
    pub(super) close: bool,
    /// 401: `WWW-Authenticate: Bearer`.
    pub(super) challenge: bool,
}

pub(super) enum Body {
    Text(String),
    Json(Value),
    Metrics(String),
}

impl Reply {
    pub(super) fn text(status: u16, line: impl Into<String>) -> Reply {
        let mut line = line.into();
        line.push('\n');
        Reply {
            status,
            body: Body::Text(line),
            allow: None,
            link: None,
            close: false,
            challenge: false,
        }
    }

    pub(super) fn json(status: u16, value: Value) -> Reply {
        Reply {
            body: Body::Json(value),
            ..Reply::text(status, "")
        }
    }

    pub(super) fn wrong_method(allow: &'static str) -> Reply {
        Reply {
            allow: Some(allow),
            ..Reply::text(405, format!("method not allowed: use {allow}"))
        }
    }

    pub(super) fn closing(self) -> Reply {
        Reply {
            close: true,
            ..self
        }
    }

    /// The body's bytes and content type.
    pub(super) fn into_bytes(self) -> (Vec<u8>, &'static str) {
        match self.body {
            Body::Text(s) => (s.into_bytes(), "text/plain; charset=utf-8"),
            Body::Json(v) => {
                let mut s = v.to_string();
                s.push('\n');
                (s.into_bytes(), "application/json")
            }
            Body::Metrics(s) => (s.into_bytes(), metrics::CONTENT_TYPE),
        }
    }
}

/// Which route a path names, before its method is looked at: what authentication needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Open {
    /// `/healthz`: never needs the token.
    Health,
    /// `/metrics`: needs it unless the metrics are public.
    Metrics,
    /// Everything else.
    Guarded,
}

fn segments(path: &str) -> Vec<&str> {
    path.trim_end_matches('/').split('/').skip(1).collect()
}

pub(super) fn openness(path: &str) -> Open {
    match segments(path).as_slice() {
        ["healthz"] => Open::Health,
        ["metrics"] => Open::Metrics,
        _ => Open::Guarded,
    }
}

/// One request whose body was read whole: its route's answer.
pub(super) fn route(
    method: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    peer: SocketAddr,
    control: &Control,
) -> Reply {
    let segments = segments(path);
    let get = method == "GET" || method == "HEAD";
    let post = method == "POST";
    let source = Source::Admin(peer);
    match segments.as_slice() {
        ["metrics"] if get => Reply {
            body: Body::Metrics(control.exposition.encode()),
            ..Reply::text(200, "")
        },
        ["healthz"] if get => {
            if control.shutdown.is_triggered() {
                Reply::text(503, "shutting down")
            } else {
                // A node whose link is down still serves its own clients: 200 either way.
                match control.cluster.as_ref().map(|link| link.state()) {
                    None => Reply::text(200, "ok"),
                    Some(LinkState::Up) => Reply::text(200, "ok cluster=up"),
                    Some(_) => Reply::text(200, "ok cluster=degraded"),
                }
            }
        }
        ["sessions"] if get => sessions(&control.registry, query),
        ["stats"] if get => Reply::json(200, stats(&control.registry, control.cluster.as_ref())),
        ["cluster"] if get => match &control.cluster {
            Some(link) => cluster(link, &control.registry, query),
            None => Reply::text(
                404,
                "not in a cluster: serve --mode chat --cluster nats://HOST:PORT",
            ),
        },
        ["sessions", id, "kick"] if post => kick(control, id, source),
        ["shutdown"] if post => {
            control.audit.shutdown(&control.shutdown, source);
            Reply::text(202, "shutting down")
        }
        ["faults"] if get => Reply::json(200, faults(&control.faults)),
        ["faults"] if post => add_fault(control, body, source),
        ["faults", id] if method == "DELETE" => clear_fault(control, id, source),
        ["tls", "reload"] if post => tls_reload(control, source),
        ["faults"] => Reply::wrong_method("GET, POST"),
        ["faults", _] => Reply::wrong_method("DELETE"),
        ["metrics" | "healthz" | "sessions" | "stats" | "cluster"] => Reply::wrong_method("GET"),
        ["sessions", _, "kick"] | ["shutdown"] | ["tls", "reload"] => Reply::wrong_method("POST"),
        _ => Reply::text(
            404,
            format!(
                "no such route: {}",
                crate::server::protocol::escape(path.as_bytes())
            ),
        ),
    }
}

fn kick(control: &Control, id: &str, source: Source) -> Reply {
    let unknown = || Reply::text(404, format!("no session #{}", id.escape_debug()));
    let Ok(id) = id.parse::<SessionId>() else {
        return unknown();
    };
    match control.audit.kick(&control.registry, id, source) {
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
            let mut fault = json!({
                "id": f.id.0,
                "spec": f.spec.to_string(),
                "kind": f.spec.kind.name(),
                "p": f.spec.p,
                "sessions": f.sessions,
                "active": f.active,
            });
            // A datagram fault touches datagrams, never a session.
            if f.spec.kind.is_udp() {
                fault["sessions"] = json!(0);
                fault["datagrams"] = json!(f.sessions);
            }
            fault
        })
        .collect();
    Value::Array(list)
}

fn add_fault(control: &Control, body: &[u8], source: Source) -> Reply {
    let Ok(text) = std::str::from_utf8(body) else {
        return Reply::text(400, "the fault spec is not UTF-8 text");
    };
    match text.trim().parse::<FaultSpec>() {
        Ok(spec) => {
            let id = control.audit.add_fault(&control.faults, spec, source);
            Reply::json(201, json!({ "id": id.0, "spec": spec.to_string() }))
        }
        Err(e) => Reply::text(400, e.to_string().replace(['\n', '\r'], " ")),
    }
}

fn clear_fault(control: &Control, id: &str, source: Source) -> Reply {
    let unknown = || Reply::text(404, format!("no active fault #{}", id.escape_debug()));
    let Ok(id) = id.parse::<FaultId>() else {
        return unknown();
    };
    match control
        .audit
        .clear_faults(&control.faults, Some(id), source)
    {
        0 => unknown(),
        _ => Reply::json(200, json!({ "cleared": id.0 })),
    }
}

/// `POST /tls/reload`: the certificate now served, or why the one in use stays.
fn tls_reload(control: &Control, source: Source) -> Reply {
    let Some(certificates) = &control.tls else {
        return Reply::text(
            409,
            "this server speaks no TLS: there is no certificate to reload",
        );
    };
    match control.audit.tls_reload(certificates, source) {
        Ok(done) => Reply::json(
            200,
            json!({
                "reloaded": true,
                "changed": done.changed,
                "subject": done.identity.subject,
                "serial": done.identity.serial,
                "not_after": done.identity.not_after,
                "expires": done.identity.expires,
                "sha256": done.identity.sha256,
                "ticket_keys": done.ticket_keys,
            }),
        ),
        Err(e @ ReloadError::NoFiles) => Reply::text(409, e.to_string()),
        Err(e) => Reply::text(
            500,
            format!("reload refused, the certificate in use stays: {e}").replace(['\n', '\r'], " "),
        ),
    }
}

/// `limit` and `after` of `GET /sessions`; other parameters are ignored.
fn page_query(query: Option<&str>) -> Result<(Option<SessionId>, usize), String> {
    let mut after = None;
    let mut limit = SESSIONS_PAGE;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=SESSIONS_PAGE_MAX).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "limit must be a number from 1 to {SESSIONS_PAGE_MAX}, not {:?}",
                            value.escape_debug().to_string()
                        )
                    })?;
            }
            "after" => {
                let id = value.parse::<u64>().map_err(|_| {
                    format!(
                        "after must be a session id, not {:?}",
                        value.escape_debug().to_string()
                    )
                })?;
                after = Some(SessionId(id));
            }
            _ => {}
        }
    }
    Ok((after, limit))
}

/// `/list` as JSON, a page at a time: one object per session, by id.
fn sessions(registry: &Registry, query: Option<&str>) -> Reply {
    let (after, limit) = match page_query(query) {
        Ok(q) => q,
        Err(e) => return Reply::text(400, format!("bad request: {e}")),
    };
    let (page, more) = registry.page(after, limit);
    let link = match (more, page.last()) {
        (true, Some(last)) => Some(format!(
            "</sessions?after={}&limit={limit}>; rel=\"next\"",
            last.id
        )),
        _ => None,
    };
    let list: Vec<Value> = page.iter().map(session).collect();
    Reply {
        link,
        ..Reply::json(200, Value::Array(list))
    }
}

fn session(s: &SessionInfo) -> Value {
    json!({
        "id": s.id.0,
        "peer": s.peer.to_string(),
        "nick": s.nick,
        "tls": s.tls,
        "connected_seconds": s.connected_for.as_secs_f64(),
        "messages_in": s.traffic.messages_in,
        "messages_out": s.traffic.messages_out,
        "bytes_in": s.traffic.bytes_in,
        "bytes_out": s.traffic.bytes_out,
        "closing": s.closing,
    })
}

/// `members` of `GET /cluster`: how many members are listed at most, in all.
fn members_query(query: Option<&str>) -> Result<usize, String> {
    let mut most = CLUSTER_MEMBERS;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        if let Some(("members", value)) = pair.split_once('=') {
            most = value
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= CLUSTER_MEMBERS_MAX)
                .ok_or_else(|| {
                    format!(
                        "members must be a number from 0 to {CLUSTER_MEMBERS_MAX}, not {:?}",
                        value.escape_debug().to_string()
                    )
                })?;
        }
    }
    Ok(most)
}

/// The link's state and counts, for `/stats` and `/cluster`.
fn link_json(link: &Link) -> Value {
    let c = link.counts();
    let lag = link.lag();
    json!({
        "link": link.state().to_string(),
        "published": c.published,
        "received": c.received,
        "dropped": {
            "queue-full": c.dropped_queue_full,
            "slow-consumer": c.dropped_slow_consumer,
            "broker-down": c.dropped_broker_down,
        },
        "gaps": c.gaps,
        "duplicates": c.duplicates,
        "malformed": c.malformed,
        "heartbeats": c.heartbeats,
        "name_conflicts": c.name_conflicts,
        "presence_refused": c.presence_refused,
        "lag": {
            "count": lag.count,
            "sum_seconds": lag.sum_seconds,
            "p50_seconds": lag.p50_seconds,
            "p99_seconds": lag.p99_seconds,
            "clamped": lag.clamped,
        },
    })
}

/// `GET /cluster`: this node, then the others as last heard, with at most `members`
/// members listed in all (this node's first) and `truncated` when some were left out.
fn cluster(link: &Arc<Link>, registry: &Registry, query: Option<&str>) -> Reply {
    let most = match members_query(query) {
        Ok(most) => most,
        Err(e) => return Reply::text(400, format!("bad request: {e}")),
    };
    let options = link.options();
    let (here, more_here) = registry.page(None, most);
    let member = |id: u64, nick: &Option<String>| json!({ "id": id, "nick": nick });
    let mut this = link_json(link);
    this["name"] = json!(options.node);
    this["epoch"] = json!(link.epoch());
    this["member_count"] = json!(registry.len());
    this["members"] = here.iter().map(|s| member(s.id.0, &s.nick)).collect();
    let (nodes, more_there) = link.remote_nodes(most - here.len());
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "name": n.name,
                "epoch": n.epoch,
                "heard_seconds_ago": n.heard.as_secs_f64(),
                "member_count": n.member_count,
                "members": n.members.iter().map(|(id, nick)| member(*id, nick)).collect::<Vec<_>>(),
                "received": n.received,
                "gaps": n.gaps,
            })
        })
        .collect();
    Reply::json(
        200,
        json!({
            "cluster": options.name,
            "broker": options.url,
            "node": this,
            "nodes": nodes,
            "truncated": more_here || more_there,
        }),
    )
}

/// `/stats` as JSON, with the cluster link's state and counts when there is one.
fn stats(registry: &Registry, cluster: Option<&Arc<Link>>) -> Value {
    let s = registry.stats();
    let mut out = json!({
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
    });
    if let Some(link) = cluster {
        out["cluster"] = link_json(link);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_queries_are_checked() {
        assert_eq!(page_query(None), Ok((None, SESSIONS_PAGE)));
        assert_eq!(
            page_query(Some("after=7&limit=2&pretty=1")),
            Ok((Some(SessionId(7)), 2))
        );
        for bad in [
            "limit=0",
            "limit=10001",
            "limit=x",
            "limit=",
            "after=-1",
            "after=a",
        ] {
            assert!(page_query(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(openness("/healthz/"), Open::Health);
        assert_eq!(openness("/metrics"), Open::Metrics);
        assert_eq!(openness("/stats"), Open::Guarded);
        assert_eq!(openness("/cluster"), Open::Guarded);
        assert_eq!(members_query(None), Ok(CLUSTER_MEMBERS));
        assert_eq!(members_query(Some("members=0&x=1")), Ok(0));
        for bad in ["members=-1", "members=x", "members=", "members=10001"] {
            assert!(members_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
