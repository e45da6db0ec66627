//! The cluster link: one chat room over several `tcpool serve --mode chat` processes, through
//! a NATS broker (core publish/subscribe, at most once).
//!
//! The link lives on one thread of its own, `tcpool-cluster`, running a current-thread tokio
//! runtime with the `async-nats` client. Workers never touch the network for it: the chat
//! handler hands each event of a local session (a line, a nickname change, a join, a leave)
//! to [`Link::publish`], which puts it in a bounded queue and returns at once; when the queue
//! is full the event is dropped and counted. The link thread numbers what it takes from the
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

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use crate::server::modes::chat::{Beyond, Elsewhere, Event, MAX_RELAYED};
use crate::server::session::registry::Registry;

mod lag;
mod presence;
mod receiving;

pub use lag::{LAG_BOUNDS, LagView, MAX_LAG};
use presence::Roster;
pub use presence::{HEARTBEAT, MAX_MEMBERS, MAX_NODES, Presence, RemoteNode, TTL};
use receiving::{Envelope, Receiving, VERSION};

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

/// What `--cluster`, `--cluster-name` and `--node` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// The broker, `nats://HOST:PORT`.
    pub url: String,
    /// The cluster's name: nodes with the same one share a room.
    pub name: String,
    /// This node's name, as other nodes show it (`<#7@NODE>`).
    pub node: String,
}

impl ClusterOptions {
    /// The options for `url`, with the cluster named `tcpool` and the node named after the
    /// host and the process ([`default_node`]).
    pub fn new(url: impl Into<String>) -> Self {
        ClusterOptions {
            url: url.into(),
            name: "tcpool".into(),
            node: default_node(),
        }
    }

    /// The subject the nodes of this cluster publish on.
    pub fn subject(&self) -> String {
        format!("tcpool.{}.chat", self.name)
    }

    /// The subject the nodes of this cluster publish their heartbeats on.
    pub fn presence_subject(&self) -> String {
        format!("tcpool.{}.presence", self.name)
    }
}

/// `HOST-PID`, the host name cut to what a node name may hold.
pub fn default_node() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .map(|c| if name_char(c) { c } else { '-' })
        .take(MAX_NAME - 12)
        .collect();
    let host = if host.is_empty() { "node".into() } else { host };
    format!("{host}-{}", std::process::id())
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Checks a node or cluster name: 1 to [`MAX_NAME`] ASCII letters, digits, `-`, `_` or `.`
/// (a cluster name goes into a NATS subject, where `.` separates tokens: it takes no dot).
///
/// # Errors
///
/// What is wrong with it.
///
/// ```
/// use tcpool::server::cluster::check_name;
///
/// assert!(check_name("node-1.eu", true).is_ok());
/// assert!(check_name("a b", true).is_err());
/// assert!(check_name("prod.eu", false).is_err());
/// ```
pub fn check_name(name: &str, dots: bool) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a name is 1 to {MAX_NAME} characters"));
    }
    if let Some(c) = name.chars().find(|&c| !name_char(c) || (!dots && c == '.')) {
        let allowed = if dots { "-, _ and ." } else { "- and _" };
        return Err(format!(
            "{c:?} is not allowed: use ASCII letters, digits, {allowed}"
        ));
    }
    Ok(())
}

/// Checks a broker URL: `nats://HOST[:PORT]`.
///
/// # Errors
///
/// What is wrong with it.
///
/// ```
/// use tcpool::server::cluster::check_url;
///
/// assert!(check_url("nats://127.0.0.1:4222").is_ok());
/// assert!(check_url("nats://broker").is_ok());
/// assert!(check_url("http://127.0.0.1:4222").is_err());
/// assert!(check_url("nats://a b").is_err());
/// ```
pub fn check_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("nats://") else {
        return Err("expected nats://HOST:PORT".into());
    };
    let host = rest.rsplit_once(':').map_or(rest, |(host, _)| host);
    if host.is_empty()
        || rest.contains(|c: char| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#'))
    {
        return Err("expected nats://HOST:PORT".into());
    }
    url.parse::<async_nats::ServerAddr>()
        .map(drop)
        .map_err(|e| e.to_string())
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
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkState::Connecting => "connecting",
            LinkState::Up => "up",
            LinkState::Down => "down",
            LinkState::Stopped => "stopped",
        })
    }
}

/// The link's counts, for `/cluster` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Envelopes handed to the broker.
    pub published: u64,
    /// Events dropped because the queue to the link was full.
    pub dropped_queue_full: u64,
    /// Events dropped because the broker was unreachable.
    pub dropped_broker_down: u64,
    /// Envelopes from other nodes the client library dropped because this node did not take
    /// them fast enough (one per slow-consumer event it reported: a lower bound).
    pub dropped_slow_consumer: u64,
    /// Envelopes from other nodes taken (duplicates included).
    pub received: u64,
    /// Sequence numbers of other nodes never received.
    pub gaps: u64,
    /// Envelopes from other nodes received a second time (not relayed).
    pub duplicates: u64,
    /// Envelopes that could not be read or broke a rule (not relayed).
    pub malformed: u64,
    /// Heartbeats from other nodes taken.
    pub heartbeats: u64,
    /// Other nodes (distinct epochs) heard of with this node's name.
    pub name_conflicts: u64,
    /// Remote nodes or members refused at the presence bounds.
    pub presence_refused: u64,
}

impl Counts {
    /// Dropped for every reason: events of local sessions not published, and envelopes of
    /// other nodes the client library let go.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_slow_consumer + self.dropped_broker_down
    }
}

/// `p50 0.12ms p99 2.1ms (n 40)`, with the clamped ones when there are some.
fn lag_summary(lag: &LagView) -> String {
    if lag.count == 0 {
        return "none yet".into();
    }
    let shown = |s: f64| crate::units::Millis(Duration::from_secs_f64(s));
    let clamped = match lag.clamped {
        0 => String::new(),
        n => format!(", {n} clamped (clock skew)"),
    };
    format!(
        "p50 {}ms p99 {}ms (n {}{clamped})",
        shown(lag.p50_seconds),
        shown(lag.p99_seconds),
        lag.count
    )
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_broker_down: AtomicU64,
    dropped_slow_consumer: AtomicU64,
    received: AtomicU64,
    gaps: AtomicU64,
    duplicates: AtomicU64,
    malformed: AtomicU64,
    heartbeats: AtomicU64,
    name_conflicts: AtomicU64,
    /// Publish-to-delivery lag of what other nodes sent: recorded by the link thread only.
    lag: lag::Lag,
}

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;
const STOPPED: u8 = 3;

/// A node's end of the cluster: what workers hand events to, and what `/cluster` and the
/// metrics read. Made by [`Link::start`].
pub struct Link {
    options: ClusterOptions,
    epoch: u64,
    queue: Sender<Event>,
    /// Wakes the link thread when the queue was empty.
    wake: tokio::sync::Notify,
    /// Events dropped on a full queue and not yet given their sequence numbers: the link
    /// skips as many, so receivers see the loss as a gap.
    skipped: AtomicU64,
    state: std::sync::atomic::AtomicU8,
    stop: AtomicBool,
    counters: Counters,
    done: Mutex<Option<Receiver<()>>>,
    /// Who is in the room on the other nodes: written by the link thread, read by `/who`.
    presence: Mutex<Presence>,
    /// The other epochs heard of with this node's name, the last one last.
    conflicts: Mutex<Vec<u64>>,
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
    /// Starts the link thread: it connects to the broker in the background (a broker that is
    /// down is not an error: local chat starts anyway, and the link keeps trying) and relays
    /// what other nodes publish to the sessions of `registry`.
    ///
    /// # Errors
    ///
    /// A bad node or cluster name or URL, or a thread or runtime that cannot be made.
    pub fn start(options: ClusterOptions, registry: Registry) -> io::Result<Arc<Link>> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        check_name(&options.node, true).map_err(|e| invalid(format!("--node: {e}")))?;
        check_name(&options.name, false).map_err(|e| invalid(format!("--cluster-name: {e}")))?;
        check_url(&options.url).map_err(|e| invalid(format!("--cluster {}: {e}", options.url)))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (queue, taken) = channel::bounded(QUEUE_CAPACITY);
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
        });
        log::info!(
            target: LOG,
            "cluster {} through {} as node {} (connecting)",
            link.options.name,
            link.options.url,
            link.options.node
        );
        let running = Arc::clone(&link);
        thread::Builder::new()
            .name("tcpool-cluster".into())
            .spawn(move || {
                let _done = done_tx;
                runtime.block_on(running.run(taken, registry));
            })?;
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

    /// Stops the link: what is queued is published (within a second), then the thread ends.
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
             delivery lag {}\n\
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

    /// Records a change of the connection; logs only real changes, once each.
    fn set_state(&self, up: bool) {
        let new = if up { UP } else { DOWN };
        let old = self.state.swap(new, Ordering::SeqCst);
        if old == STOPPED {
            self.state.store(STOPPED, Ordering::SeqCst);
            return;
        }
        match (old, new) {
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

    async fn run(self: Arc<Self>, taken: Receiver<Event>, registry: Registry) {
        let events = Arc::clone(&self);
        let connect = async_nats::ConnectOptions::new()
            .name(format!("tcpool {}", self.options.node))
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                let base = Duration::from_millis(100)
                    .saturating_mul(1 << attempts.min(5))
                    .min(MAX_RECONNECT_DELAY);
                // Up to a quarter more, so that nodes restarted together do not retry in step.
                let jitter = u64::from(SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos()))
                    % (base.as_millis() as u64 / 4 + 1);
                base + Duration::from_millis(jitter)
            })
            .event_callback(move |event| {
                let link = Arc::clone(&events);
                async move {
                    match event {
                        // The first time, the link is up once its subscription is (below).
                        async_nats::Event::Connected if link.state() != LinkState::Connecting => {
                            link.set_state(true);
                        }
                        async_nats::Event::Connected => {}
                        async_nats::Event::Disconnected => link.set_state(false),
                        async_nats::Event::SlowConsumer(_) => {
                            link.counters
                                .dropped_slow_consumer
                                .fetch_add(1, Ordering::Relaxed);
                            log::warn!(target: LOG, "cluster: the broker's lines came faster than this node took them; some were lost");
                        }
                        other => log::debug!(target: LOG, "cluster: {other}"),
                    }
                }
            })
            .connect(self.options.url.as_str())
            .await;
        let client = match connect {
            Ok(client) => client,
            Err(e) => {
                log::error!(target: LOG, "cluster link cannot start: {e}; local chat only");
                self.state.store(STOPPED, Ordering::SeqCst);
                return;
            }
        };
        let subject = self.options.subject();
        let mut subscriber = match client.subscribe(subject.clone()).await {
            Ok(subscriber) => subscriber,
            Err(e) => {
                log::error!(target: LOG, "cluster link cannot subscribe to {subject}: {e}; local chat only");
                self.state.store(STOPPED, Ordering::SeqCst);
                return;
            }
        };
        let beats_subject = self.options.presence_subject();
        let mut beats = match client.subscribe(beats_subject.clone()).await {
            Ok(subscriber) => subscriber,
            Err(e) => {
                log::error!(target: LOG, "cluster link cannot subscribe to {beats_subject}: {e}; local chat only");
                self.state.store(STOPPED, Ordering::SeqCst);
                return;
            }
        };
        // Up once the broker has answered after the subscription: from then on what the
        // other nodes publish reaches this one.
        tokio::spawn({
            let (link, client) = (Arc::clone(&self), client.clone());
            async move {
                while link.state() == LinkState::Connecting && !link.stop.load(Ordering::SeqCst) {
                    if client.flush().await.is_ok() {
                        if link.state() == LinkState::Connecting {
                            link.set_state(true);
                        }
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        // A broker that is not there at the start is said once; the link keeps trying.
        tokio::spawn({
            let link = Arc::clone(&self);
            async move {
                tokio::time::sleep(FIRST_CONNECT_WARNING).await;
                if link.state() == LinkState::Connecting {
                    log::warn!(
                        target: LOG,
                        "cluster link not up yet: {} unreachable; local chat goes on, lines for \
                         other nodes are dropped and counted until it is",
                        link.options.url
                    );
                }
            }
        });
        let mut receiving = Receiving::new(self.options.node.clone());
        let mut roster = Roster::default();
        let mut seq = 0u64;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Publish everything queued, then wait for more or for a message.
            while let Ok(event) = taken.try_recv() {
                seq += 1 + self.skipped.swap(0, Ordering::Relaxed);
                roster.follow(event.kind, event.id.0, &event.nick);
                self.send(&client, &subject, seq, event).await;
            }
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                _ = heartbeat.tick() => {
                    self.announce(&client, &beats_subject, &roster, false).await;
                }
                _ = sweep.tick() => receiving.sweep(&self, &registry),
                message = futures_next(&mut subscriber) => match message {
                    Some(message) => receiving.take(&self, &message.payload, &registry),
                    None => break,
                },
                message = futures_next(&mut beats) => match message {
                    Some(message) => receiving.take_beat(&self, &message.payload, &registry),
                    None => break,
                },
            }
        }
        // The last word: this node's members are leaving with it.
        self.announce(&client, &beats_subject, &roster, true).await;
        let _ = tokio::time::timeout(STOP_FLUSH, client.flush()).await;
        self.state.store(STOPPED, Ordering::SeqCst);
    }

    /// Publishes this node's members (a heartbeat), or says it is leaving with them.
    async fn announce(
        &self,
        client: &async_nats::Client,
        subject: &str,
        roster: &Roster,
        leaving: bool,
    ) {
        if client.connection_state() != async_nats::connection::State::Connected {
            return;
        }
        let beat = roster.beat(&self.options.node, self.epoch, leaving);
        if let Ok(payload) = serde_json::to_vec(&beat) {
            let _ = client.publish(subject.to_owned(), payload.into()).await;
        }
    }

    async fn send(&self, client: &async_nats::Client, subject: &str, seq: u64, event: Event) {
        let down = || {
            self.counters
                .dropped_broker_down
                .fetch_add(1, Ordering::Relaxed);
        };
        if client.connection_state() != async_nats::connection::State::Connected {
            down();
            return;
        }
        let envelope = Envelope {
            v: VERSION,
            node: self.options.node.clone(),
            epoch: self.epoch,
            seq,
            kind: event.kind,
            id: event.id.0,
            nick: event.nick,
            old: event.old,
            text: event.text,
            sent_us: Some(lag::now_us()),
        };
        let Ok(payload) = serde_json::to_vec(&envelope) else {
            down();
            return;
        };
        match client.publish(subject.to_owned(), payload.into()).await {
            Ok(()) => {
                self.counters.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => down(),
        }
    }
}

/// The next message of `subscriber` (its `Stream` implementation, without a futures crate).
async fn futures_next(subscriber: &mut async_nats::Subscriber) -> Option<async_nats::Message> {
    std::future::poll_fn(|cx| {
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut *subscriber), cx)
    })
    .await
}

impl Beyond for Link {
    fn publish(&self, event: Event) {
        Link::publish(self, event);
    }

    fn elsewhere(&self, most: usize) -> Elsewhere {
        Link::elsewhere(self, most)
    }
}

#[cfg(test)]
mod tests {
    use super::receiving::{read_envelope, shown};
    use super::*;
    use crate::server::modes::chat::Kind;
    use crate::server::session::SessionId;

    fn envelope(kind: Kind) -> Envelope {
        Envelope {
            v: VERSION,
            node: "b".into(),
            epoch: 1,
            seq: 1,
            kind,
            id: 7,
            nick: None,
            old: None,
            text: String::new(),
            sent_us: None,
        }
    }

    #[test]
    fn lines_show_the_origin_until_a_nickname() {
        let mut e = envelope(Kind::Line);
        e.text = "hi".into();
        assert_eq!(shown(&e), "<#7@b> hi");
        e.nick = Some("ann".into());
        assert_eq!(shown(&e), "<ann> hi");
        e.text = "\x1b[2J".into();
        assert_eq!(shown(&e), r"<ann> \x1b[2J");
        let mut n = envelope(Kind::Nick);
        n.nick = Some("ann".into());
        assert_eq!(shown(&n), "* #7@b is now ann");
        assert_eq!(shown(&envelope(Kind::Join)), "* #7@b joined");
        assert_eq!(shown(&envelope(Kind::Left)), "* #7@b left");
    }

    #[test]
    fn bad_envelopes_are_refused() {
        assert!(read_envelope(b"{").is_err());
        assert!(read_envelope(b"null").is_err());
        let good = serde_json::to_vec(&envelope(Kind::Join)).unwrap();
        assert!(read_envelope(&good).is_ok());
        // An older node's envelope, without the publish time, still reads.
        let older = br#"{"v":1,"node":"b","epoch":1,"seq":1,"kind":"join","id":7}"#;
        assert_eq!(read_envelope(older).unwrap().sent_us, None);
        let mut forged = envelope(Kind::Line);
        forged.nick = Some("*admin".into());
        assert!(read_envelope(&serde_json::to_vec(&forged).unwrap()).is_err());
        let mut node = envelope(Kind::Line);
        node.node = "a b\n".into();
        assert!(read_envelope(&serde_json::to_vec(&node).unwrap()).is_err());
        assert!(read_envelope(&vec![b' '; MAX_ENVELOPE + 1]).is_err());
    }

    #[test]
    fn gaps_and_duplicates_are_counted_per_origin_and_epoch() {
        let (queue, _taken) = channel::bounded(1);
        let link = Link {
            options: ClusterOptions::new("nats://127.0.0.1:4222"),
            epoch: 1,
            queue,
            wake: tokio::sync::Notify::new(),
            skipped: AtomicU64::new(0),
            state: std::sync::atomic::AtomicU8::new(UP),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            done: Mutex::new(None),
            presence: Mutex::default(),
            conflicts: Mutex::default(),
        };
        let registry = Registry::new(1024);
        let mut receiving = Receiving::new("a".into());
        let mut send = |node: &str, epoch: u64, seq: u64| {
            let mut e = envelope(Kind::Join);
            (e.node, e.epoch, e.seq) = (node.into(), epoch, seq);
            receiving.take(&link, &serde_json::to_vec(&e).unwrap(), &registry);
        };
        for seq in [1, 2, 5, 5, 3, 6] {
            send("b", 1, seq);
        }
        // A restart is a new epoch: its sequence starts over without a gap.
        send("b", 2, 1);
        send("c", 1, 10);
        // Its own envelopes a node ignores.
        send("a", 1, 7);
        let c = link.counts();
        assert_eq!((c.received, c.gaps, c.duplicates), (8, 2, 2), "{c:?}");
        // Envelopes without the publish time record no lag; with it, one each.
        assert_eq!(link.lag().count, 0);
        let mut timed = envelope(Kind::Line);
        (timed.node, timed.seq, timed.sent_us) = ("c".into(), 11, Some(lag::now_us()));
        receiving.take(&link, &serde_json::to_vec(&timed).unwrap(), &registry);
        let lag = link.lag();
        assert_eq!((lag.count, lag.clamped), (1, 0), "{lag:?}");
        assert!(lag.sum_seconds < 1.0, "{lag:?}");
        // A full queue drops and counts, never waits.
        link.publish(Event {
            kind: Kind::Line,
            id: SessionId(1),
            nick: None,
            old: None,
            text: "one".into(),
        });
        link.publish(Event {
            kind: Kind::Line,
            id: SessionId(1),
            nick: None,
            old: None,
            text: "two".into(),
        });
        assert_eq!(link.counts().dropped_queue_full, 1);
        assert_eq!(link.skipped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn names() {
        assert!(check_name(&default_node(), true).is_ok());
        assert!(check_name("", true).is_err());
        assert!(check_name(&"a".repeat(MAX_NAME + 1), true).is_err());
    }
}
