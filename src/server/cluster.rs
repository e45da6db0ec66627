//! The cluster link: one chat room over several `tcpool serve --mode chat` processes, through
//! a NATS broker (core publish/subscribe, at most once).
//!
//! The link runs as tasks on the server's control plane ([`ControlPlane`], the
//! `tcpool-control` thread and its current-thread tokio runtime, which the admin endpoint
//! shares), with the `async-nats` client. Workers never touch the network for it: the chat
//! handler hands each event of a local session (a line, a nickname change, a join, a leave)
//! to [`Link::publish`], which puts it in a bounded queue and returns at once; when the queue
//! is full the event is dropped and counted. The link numbers what it takes from the
//! queue (a per-node sequence, with the node's epoch) and publishes it, or drops and counts
//! it while the broker is unreachable. What other nodes publish comes back on the same thread
//! and goes to local sessions through the registry's relay, the path local lines take, so the
//! outbox limits apply: a local reader that does not keep up is dropped, the link never
//! waits for it.
//!
//! Receivers keep the last sequence number of each (node, epoch) they hear from, and count
//! the numbers they never saw (gaps) and the ones they saw twice (duplicates, not relayed).
//! Envelopes that cannot be read, or that break a rule a local session is held to, are
//! dropped, counted and logged at most once a second.
//!
//! Presence: every [`HEARTBEAT`] the link publishes this node's members on
//! a second subject, and keeps what the other nodes announce, so that `/who` lists the
//! whole room; a node silent for [`TTL`] has its members shown as left (node lost), and a
//! stopping node's last word shows its members as left at once. A word with this node's
//! name and another epoch is another node with the same `--node`: logged (at most once per
//! 10 s), counted and shown in `/cluster`; each node goes on ignoring the other's lines.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use crate::server::control::ControlPlane;
use crate::server::modes::chat::{Beyond, Chat, Elsewhere, Event, MAX_RELAYED};
use crate::server::session::SessionId;
use crate::server::session::registry::Registry;

mod counts;
mod history;
mod lag;
mod link;
mod names;
mod nicks;
mod options;
mod presence;
mod receiving;
mod secure;

pub use counts::Counts;
use counts::{Counters, lag_summary};
pub use history::MAX_HISTORY;
pub use lag::{LAG_BOUNDS, LagView, MAX_LAG};
pub use names::{PROBE, START_WAIT};
pub use nicks::NICK_WAIT;
pub use options::{ClusterOptions, check_name, check_url, default_node};
pub use presence::{HEARTBEAT, MAX_MEMBERS, MAX_NODES, Presence, RemoteNode, TTL};
use receiving::VERSION;
pub use secure::check as check_files;

/// The target of the link's log lines.
const LOG: &str = "tcpool::cluster";

/// Events a worker may hand the link before it has published them; past this they are
/// dropped and counted (`queue-full`).
pub const QUEUE_CAPACITY: usize = 8192;

/// The largest envelope read from the broker; a larger one is dropped as malformed.
pub const MAX_ENVELOPE: usize = MAX_RELAYED + 4096;

/// The longest node or cluster name.
pub const MAX_NAME: usize = 64;

/// The longest wait between two attempts to reach the broker.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// How long the first connection may take before the log says the broker is unreachable.
const FIRST_CONNECT_WARNING: Duration = Duration::from_secs(2);

/// How long a stopping link may take to flush what it published.
const STOP_FLUSH: Duration = Duration::from_secs(1);

/// How often the nodes not heard of are looked for.
const SWEEP: Duration = Duration::from_millis(250);

/// At most one line per this long says another node has this node's name.
const CONFLICT_LOG: Duration = Duration::from_secs(10);

/// Other epochs of this node's name remembered (each is counted once).
const MAX_CONFLICTS: usize = 64;

/// Reads one JSON message of at most `max` bytes, `what` it should be.
pub(super) fn read_json<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    max: usize,
    what: &str,
) -> Result<T, String> {
    if payload.len() > max {
        return Err(format!("{what} larger than {max} bytes"));
    }
    serde_json::from_slice(payload).map_err(|e| format!("not {what}: {e}"))
}

/// Checks a message's version and the node name it gives.
pub(super) fn check_origin(v: u8, node: &str) -> Result<(), String> {
    if v != VERSION {
        return Err(format!("version {v} (this node reads {VERSION})"));
    }
    check_name(node, true).map_err(|e| format!("node name: {e}"))
}

/// Whether the broker is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected yet since the start.
    Connecting,
    /// Connected: events are published.
    Up,
    /// Lost: events are dropped and counted until the client is connected again.
    Down,
    /// Stopped with the server.
    Stopped,
    /// Stopped because another live node has this node's name.
    Refused,
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkState::Connecting => "connecting",
            LinkState::Up => "up",
            LinkState::Down => "down",
            LinkState::Stopped => "stopped",
            LinkState::Refused => "refused (another node has this name)",
        })
    }
}

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;
const STOPPED: u8 = 3;
const REFUSED: u8 = 4;

/// A node's end of the cluster: what workers hand events to, and what `/cluster` and the
/// metrics read. Made by [`Link::start`].
pub struct Link {
    options: ClusterOptions,
    epoch: u64,
    queue: Sender<Event>,
    /// Wakes the link when the queue was empty.
    wake: tokio::sync::Notify,
    /// Events dropped on a full queue and not yet given their sequence numbers: the link
    /// skips as many, so receivers see the loss as a gap.
    skipped: AtomicU64,
    state: std::sync::atomic::AtomicU8,
    stop: AtomicBool,
    counters: Counters,
    done: Mutex<Option<Receiver<()>>>,
    /// Who is in the room on the other nodes: written by the link, read by `/who`.
    presence: Mutex<Presence>,
    /// The other epochs heard of with this node's name, the last one last.
    conflicts: Mutex<Vec<u64>>,
    /// Why the last attempt to connect failed, until one succeeds.
    failure: Mutex<Option<String>>,
    /// When the link went down, until the history has been fetched after it came back.
    down_since: Mutex<Option<SystemTime>>,
    /// Whether another live node has this node's name, and its answer's waiters.
    admission: Mutex<names::Admission>,
    admitted: parking_lot::Condvar,
    /// `tcpool serve` is waiting for the answer at start (a refusal is its error then).
    starting: AtomicBool,
    /// Questions about nicknames, from the room to the link.
    asks: Sender<(SessionId, String)>,
    /// This node's questions about nicknames still waiting for answers, by session id.
    asking: Mutex<HashMap<u64, nicks::Asking>>,
    /// The room whose nicknames the link settles ([`Link::attach`]).
    room: Mutex<Option<Weak<Chat>>>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("options", &self.options)
            .field("state", &self.state())
            .finish()
    }
}

impl Link {
    /// Starts the link as tasks on `control`, the server's control plane: it connects to the
    /// broker in the background (a broker that is down is not an error: local chat starts
    /// anyway, and the link keeps trying) and relays what other nodes publish to the sessions
    /// of `registry`. Stop it ([`Link::stop`]) before the control plane.
    ///
    /// # Errors
    ///
    /// A bad node or cluster name or URL.
    pub fn start(
        options: ClusterOptions,
        registry: Registry,
        control: &ControlPlane,
    ) -> io::Result<Arc<Link>> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        check_name(&options.node, true).map_err(|e| invalid(format!("--node: {e}")))?;
        check_name(&options.name, false).map_err(|e| invalid(format!("--cluster-name: {e}")))?;
        check_url(&options.url).map_err(|e| invalid(format!("--cluster {}: {e}", options.url)))?;
        check_files(&options).map_err(invalid)?;
        let (queue, taken) = channel::bounded(QUEUE_CAPACITY);
        let (asks, asked) = channel::bounded(nicks::ASK_CAPACITY);
        let (done_tx, done) = channel::bounded::<()>(0);
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let link = Arc::new(Link {
            options,
            epoch,
            queue,
            wake: tokio::sync::Notify::new(),
            skipped: AtomicU64::new(0),
            state: std::sync::atomic::AtomicU8::new(CONNECTING),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            done: Mutex::new(Some(done)),
            presence: Mutex::default(),
            conflicts: Mutex::default(),
            failure: Mutex::default(),
            down_since: Mutex::default(),
            admission: Mutex::new(names::Admission::Connecting),
            admitted: parking_lot::Condvar::new(),
            starting: AtomicBool::new(false),
            asks,
            asking: Mutex::default(),
            room: Mutex::default(),
        });
        log::info!(
            target: LOG,
            "cluster {} through {} as node {} (connecting{}{})",
            link.options.name,
            link.options.url,
            link.options.node,
            if link.options.tls_ca.is_some() { ", TLS" } else { "" },
            if link.options.creds.is_some() { ", with credentials" } else { "" },
        );
        let running = Arc::clone(&link);
        control.spawn(async move {
            let _done = done_tx;
            running.run(taken, asked, registry).await;
        });
        Ok(link)
    }

    /// Hands `event` to the link; never blocks. On a full queue it is dropped and counted.
    pub fn publish(&self, event: Event) {
        match self.queue.try_send(event) {
            Ok(()) => self.wake.notify_one(),
            Err(TrySendError::Full(_)) => {
                self.counters
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                self.skipped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters
                    .dropped_broker_down
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Stops the link: what is queued is published and the last heartbeat sent (within a
    /// second), then its tasks end. Called off the control plane (it waits for them).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        if let Some(done) = self.done.lock().take() {
            let _ = done.recv_timeout(STOP_FLUSH + Duration::from_secs(1));
        }
    }

    /// The options it was started with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// Whether the broker is reachable now.
    pub fn state(&self) -> LinkState {
        match self.state.load(Ordering::Relaxed) {
            CONNECTING => LinkState::Connecting,
            UP => LinkState::Up,
            DOWN => LinkState::Down,
            REFUSED => LinkState::Refused,
            _ => LinkState::Stopped,
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            published: load(&c.published),
            dropped_queue_full: load(&c.dropped_queue_full),
            dropped_broker_down: load(&c.dropped_broker_down),
            dropped_slow_consumer: load(&c.dropped_slow_consumer),
            received: load(&c.received),
            gaps: load(&c.gaps),
            duplicates: load(&c.duplicates),
            malformed: load(&c.malformed),
            heartbeats: load(&c.heartbeats),
            name_conflicts: load(&c.name_conflicts),
            presence_refused: self.presence.lock().refused(),
            held: load(&c.held),
            recovered: load(&c.recovered),
        }
    }

    /// This node's epoch: when it started, in nanoseconds since 1970.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The room's members on the other nodes, as last heard: counts per node and at most
    /// `most` names.
    pub fn elsewhere(&self, most: usize) -> Elsewhere {
        self.presence.lock().elsewhere(most)
    }

    /// The publish-to-delivery lag of what other nodes sent.
    pub fn lag(&self) -> LagView {
        self.counters.lag.view()
    }

    /// The other nodes as last heard, with up to `most` of their members in all; whether
    /// some were left out.
    pub fn remote_nodes(&self, most: usize) -> (Vec<RemoteNode>, bool) {
        self.presence.lock().nodes(most)
    }

    /// The cluster line of `/stats`: the link's state and its counts in one line.
    pub fn stats_line(&self) -> String {
        let c = self.counts();
        format!(
            "cluster: link {}  published {}  received {}  dropped {} \
             (queue-full {}, slow-consumer {}, broker-down {})  lag {}",
            self.state(),
            c.published,
            c.received,
            c.dropped(),
            c.dropped_queue_full,
            c.dropped_slow_consumer,
            c.dropped_broker_down,
            lag_summary(&self.lag()),
        )
    }

    /// What `/cluster` prints.
    pub fn describe(&self) -> String {
        let c = self.counts();
        let others = self.elsewhere(0);
        format!(
            "cluster {} through {}: link {}, node {} (epoch {})\n\
             published {}, dropped {} (queue-full {}, slow-consumer {}, broker-down {})\n\
             received {}, gaps {}, duplicates {}, malformed {}\n\
             delivery lag {}\n{}\
             presence: {} other node(s), {} member(s) there, heartbeats {}, refused {}\n\
             name conflicts {}{}",
            self.options.name,
            self.options.url,
            self.state(),
            self.options.node,
            self.epoch,
            c.published,
            c.dropped(),
            c.dropped_queue_full,
            c.dropped_slow_consumer,
            c.dropped_broker_down,
            c.received,
            c.gaps,
            c.duplicates,
            c.malformed,
            lag_summary(&self.lag()),
            if self.options.history > 0 {
                format!(
                    "history: the last {} lines; held {}, recovered {}\n",
                    self.options.history, c.held, c.recovered
                )
            } else {
                String::new()
            },
            others.nodes.len(),
            others.nodes.iter().map(|(_, n)| n).sum::<usize>(),
            c.heartbeats,
            c.presence_refused,
            c.name_conflicts,
            match self.conflicts.lock().last() {
                Some(epoch) => format!(
                    " (another node is named {}: epoch {epoch})",
                    self.options.node
                ),
                None => String::new(),
            }
        )
    }

    /// Records why an attempt to connect failed. A broker that is down is logged as the link
    /// going down or not coming up; one that turns the link away (credentials, TLS) is a
    /// mistake of configuration, logged at once, and again only when the reason changes.
    fn connect_failed(&self, why: String) {
        let why = match why.as_str() {
            "IO error" => "unreachable".to_owned(),
            _ => why,
        };
        let mut last = self.failure.lock();
        if last.as_deref() == Some(why.as_str()) {
            return;
        }
        if why != "unreachable" && why != "timed out" {
            log::error!(
                target: LOG,
                "cluster link refused by {}: {why}; check --cluster-creds and --cluster-tls-ca \
                 (retrying)",
                self.options.url
            );
        }
        *last = Some(why);
    }

    /// Notes another node (epoch `epoch`) with this node's name: counted once per epoch,
    /// the last one shown by `/cluster`.
    fn conflict(&self, epoch: u64) {
        let mut conflicts = self.conflicts.lock();
        if !conflicts.contains(&epoch) {
            self.counters.name_conflicts.fetch_add(1, Ordering::Relaxed);
            if conflicts.len() >= MAX_CONFLICTS {
                conflicts.remove(0);
            }
            conflicts.push(epoch);
        } else if conflicts.last() != Some(&epoch) {
            conflicts.retain(|&e| e != epoch);
            conflicts.push(epoch);
        }
    }

    /// Records a change of the connection; logs only real changes, once each.
    fn set_state(&self, up: bool) {
        let new = if up { UP } else { DOWN };
        let old = self.state.swap(new, Ordering::SeqCst);
        if old == STOPPED || old == REFUSED {
            self.state.store(old, Ordering::SeqCst);
            return;
        }
        match (old, new) {
            (UP, DOWN) if self.options.history > 0 => {
                self.down_since.lock().get_or_insert_with(SystemTime::now);
                log::warn!(
                    target: LOG,
                    "cluster link down: {} unreachable; local chat goes on, the last {} lines \
                     for other nodes are held until it is back",
                    self.options.url,
                    self.options.history
                );
            }
            (UP, DOWN) => log::warn!(
                target: LOG,
                "cluster link down: {} unreachable; local chat goes on, lines for other nodes \
                 are dropped and counted until it is back",
                self.options.url
            ),
            (CONNECTING | DOWN, UP) => log::info!(
                target: LOG,
                "cluster link up: {} (cluster {}, node {})",
                self.options.url,
                self.options.name,
                self.options.node
            ),
            _ => {}
        }
    }
}

impl Beyond for Link {
    fn publish(&self, event: Event) {
        Link::publish(self, event);
    }

    fn elsewhere(&self, most: usize) -> Elsewhere {
        Link::elsewhere(self, most)
    }

    fn ask(&self, id: SessionId, nick: &str) -> bool {
        Link::ask(self, id, nick)
    }
}

#[cfg(test)]
mod tests;
