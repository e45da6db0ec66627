//! The link's loop on the broker: it connects, subscribes, publishes what the workers queue,
//! sends the heartbeats and hands what it receives to [`Receiving`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam::channel::Receiver;

use super::history::{History, Keeping};
use super::names::{Admission, read_probe};
use super::presence::{HEARTBEAT, Roster};
use super::receiving::{Envelope, Receiving, VERSION};
use super::secure;
use super::{
    FIRST_CONNECT_WARNING, LOG, Link, LinkState, MAX_RECONNECT_DELAY, REFUSED, STOP_FLUSH, STOPPED,
    SWEEP,
};
use crate::server::modes::chat::Event;
use crate::server::session::SessionId;
use crate::server::session::registry::Registry;

impl Link {
    pub(super) async fn run(
        self: Arc<Self>,
        taken: Receiver<Event>,
        questions: Receiver<(SessionId, String)>,
        registry: Registry,
    ) {
        let events = Arc::clone(&self);
        let secured = match secure::apply(&self.options, async_nats::ConnectOptions::new()) {
            Ok(secured) => secured,
            Err(e) => {
                log::error!(target: LOG, "cluster link cannot start: {e}; local chat only");
                self.state.store(STOPPED, Ordering::SeqCst);
                return;
            }
        };
        let connect = secured
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
                        // The first time, the link is up once the node is admitted (below).
                        async_nats::Event::Connected
                            if link.admission() == Admission::Admitted =>
                        {
                            *link.failure.lock() = None;
                            link.set_state(true);
                        }
                        async_nats::Event::Connected => *link.failure.lock() = None,
                        async_nats::Event::ClientError(async_nats::ClientError::Other(why)) => {
                            link.connect_failed(why);
                        }
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
        let beats_subject = self.options.presence_subject();
        let (Some(mut subscriber), Some(mut beats), Some(mut names), Some(mut nicks)) = (
            self.subscribe(&client, subject.clone()).await,
            self.subscribe(&client, beats_subject.clone()).await,
            self.subscribe(&client, self.options.names_subject()).await,
            self.subscribe(&client, self.options.nick_subject()).await,
        ) else {
            return;
        };
        // Once the broker answers after the subscriptions, the node asks whether another has
        // its name; until the answer it neither announces itself nor publishes.
        let (answered, mut answer) = tokio::sync::oneshot::channel();
        tokio::spawn({
            let (link, client) = (Arc::clone(&self), client.clone());
            async move {
                while !link.stop.load(Ordering::SeqCst) {
                    if client.flush().await.is_ok() {
                        let _ = answered.send(link.probe(&client).await);
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
                    let failure = link.failure.lock().clone();
                    let why = match failure {
                        Some(why) if why != "unreachable" => why,
                        _ => secure::probe(&link.options.url).await,
                    };
                    log::warn!(
                        target: LOG,
                        "cluster link not up yet: {} {why}; local chat goes on, lines for \
                         other nodes are dropped and counted until it is",
                        link.options.url,
                    );
                }
            }
        });
        let mut receiving = Receiving::new(self.options.node.clone());
        let mut roster = Roster::default();
        let mut seq = 0u64;
        let mut keeping =
            (self.options.history > 0).then(|| Keeping::new(self.options.history, &client));
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut asked = true;
        loop {
            if let Some(keeping) = keeping.as_mut()
                && self.state() == LinkState::Up
            {
                keeping
                    .catch_up(&self, &client, &subject, &mut receiving, &registry)
                    .await;
            }
            // Publish everything queued, then wait for more or for a message.
            let admitted = self.admission() == Admission::Admitted;
            while let Ok(event) = taken.try_recv() {
                seq += 1 + self.skipped.swap(0, Ordering::Relaxed);
                roster.follow(event.kind, event.id.0, &event.nick);
                if admitted {
                    let history = keeping.as_mut().map(|k| &mut k.history);
                    self.send(&client, &subject, seq, event, history).await;
                } else {
                    self.counters
                        .dropped_broker_down
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            while let Ok(ask) = questions.try_recv() {
                let link = Arc::clone(&self);
                tokio::spawn(link.settle_nick(client.clone(), registry.clone(), ask));
            }
            if self.stop.load(Ordering::SeqCst) {
                if let Some(keeping) = keeping.as_mut() {
                    let left = keeping.history.release().len() as u64;
                    self.counters
                        .dropped_broker_down
                        .fetch_add(left, Ordering::Relaxed);
                }
                break;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                other = &mut answer, if asked => {
                    asked = false;
                    if let Ok(Some(other)) = other {
                        return self.refuse(other);
                    }
                    let _ = self.admit(Admission::Admitted);
                    self.set_state(true);
                    self.announce(&client, &beats_subject, &roster, false).await;
                }
                _ = heartbeat.tick(), if admitted => {
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
                message = futures_next(&mut nicks) => match message {
                    Some(message) => self.answer_nick(&client, message).await,
                    None => break,
                },
                message = futures_next(&mut names) => match message {
                    Some(message) => {
                        if let Some(other) = self.answer(&client, message, admitted).await {
                            return self.refuse(other);
                        }
                    }
                    None => break,
                },
            }
        }
        if self.admission() == Admission::Admitted {
            // The last word: this node's members are leaving with it.
            self.announce(&client, &beats_subject, &roster, true).await;
        }
        let _ = tokio::time::timeout(STOP_FLUSH, client.flush()).await;
        self.state.store(STOPPED, Ordering::SeqCst);
    }

    /// Subscribes to `subject`; on failure the link stops (local chat goes on).
    async fn subscribe(
        &self,
        client: &async_nats::Client,
        subject: String,
    ) -> Option<async_nats::Subscriber> {
        match client.subscribe(subject.clone()).await {
            Ok(subscriber) => Some(subscriber),
            Err(e) => {
                log::error!(target: LOG, "cluster link cannot subscribe to {subject}: {e}; local chat only");
                self.state.store(STOPPED, Ordering::SeqCst);
                None
            }
        }
    }

    /// Another live node (epoch `other`) has this node's name: the link stops, local chat
    /// goes on (at start, `tcpool serve` exits instead: see [`Link::wait_admitted`]).
    fn refuse(&self, other: u64) {
        self.conflict(other);
        self.state.store(REFUSED, Ordering::SeqCst);
        if self.admit(Admission::Refused(other)) {
            return;
        }
        log::error!(
            target: LOG,
            "cluster: {}; the link stops, local chat goes on",
            self.refusal(other)
        );
    }

    /// Answers a question about this node's name with its epoch. Asked while this node is
    /// still asking its own, the older epoch keeps the name: the other's, if it is older.
    async fn answer(
        &self,
        client: &async_nats::Client,
        message: async_nats::Message,
        admitted: bool,
    ) -> Option<u64> {
        let asker = match read_probe(&message.payload, &self.options.node) {
            Ok(asker) => asker,
            Err(why) => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                log::warn!(target: LOG, "cluster: name question dropped: {why}");
                return None;
            }
        };
        if asker.epoch == self.epoch {
            return None;
        }
        if !admitted && asker.epoch < self.epoch {
            return Some(asker.epoch);
        }
        if let Some(reply) = message.reply {
            let _ = client.publish(reply, self.probe_payload().into()).await;
        }
        None
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

    /// Publishes `event` as envelope `seq`; while the broker is away, holds it in `history`
    /// if there is one, else drops and counts it.
    async fn send(
        &self,
        client: &async_nats::Client,
        subject: &str,
        seq: u64,
        event: Event,
        history: Option<&mut History>,
    ) {
        let down = || {
            self.counters
                .dropped_broker_down
                .fetch_add(1, Ordering::Relaxed);
        };
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        if !connected && history.is_none() {
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
            sent_us: Some(super::lag::now_us()),
        };
        let Ok(payload) = serde_json::to_vec(&envelope) else {
            down();
            return;
        };
        if let Some(history) = history
            && (!connected || history.holding())
        {
            // Behind what is held already, so that the other nodes get them in order.
            self.counters.held.fetch_add(1, Ordering::Relaxed);
            let dropped = history.hold(payload.into()) as u64;
            self.counters
                .dropped_broker_down
                .fetch_add(dropped, Ordering::Relaxed);
            return;
        }
        match client.publish(subject.to_owned(), payload.into()).await {
            Ok(()) => {
                self.counters.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => down(),
        }
    }
}

/// The next message of `subscriber` (its `Stream` implementation, without a futures crate).
pub(super) async fn futures_next(
    subscriber: &mut async_nats::Subscriber,
) -> Option<async_nats::Message> {
    std::future::poll_fn(|cx| {
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut *subscriber), cx)
    })
    .await
}
