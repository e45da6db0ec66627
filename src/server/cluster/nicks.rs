//! Nicknames unique across the cluster.
//!
//! A session's `/nick NAME` on a node with its link up is not granted at once: the chat room
//! holds the name for it and hands the question to the link ([`Link::ask`], never blocking).
//! The link refuses at once a name a member of another node has (as the presence heard
//! it), else asks every node on `tcpool.CLUSTER.nick` and waits at most [`NICK_WAIT`] for the
//! answers (a node that does not answer does not object). A node objects when one of its
//! sessions has the name, or asks for it too with a claim that comes first: claims are
//! ordered by (epoch, node, session id), the lower first, the same on every node. The
//! answer goes back to the room ([`Chat::settle`]), which tells the session through its
//! outbox.
//!
//! What slips through (a question lost, two claims that crossed) is settled when a node
//! hears another's nickname change for a name one of its sessions has: the claim that
//! comes later in that order gives the name up ([`Chat::evict`]), on both nodes alike.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::receiving::Envelope;
use super::{LOG, Link, LinkState, VERSION, check_origin, read_json};
use crate::server::modes::chat::{Chat, check_nick, nick_keys};
use crate::server::session::SessionId;
use crate::server::session::registry::Registry;

/// How long a node waits for the other nodes' answers about a nickname.
pub const NICK_WAIT: Duration = Duration::from_millis(250);

/// How long the answers are waited for when no other node is known yet: one that has not sent
/// its first heartbeat still answers within a round trip, and a lone node's `/nick` should not
/// take a quarter of a second. A claim that crosses one is settled afterwards all the same.
pub(super) const LONE_WAIT: Duration = Duration::from_millis(25);

/// Questions waiting for the link at most; past this a name is granted locally.
pub(super) const ASK_CAPACITY: usize = 1024;

/// The largest question or answer read.
const MAX_NICK_MESSAGE: usize = 1024;

/// "May session `id` of `node` (epoch `epoch`) take `nick`?"
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct NickQuestion {
    pub(super) v: u8,
    pub(super) node: String,
    pub(super) epoch: u64,
    pub(super) id: u64,
    pub(super) nick: String,
}

/// A node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct NickAnswer {
    pub(super) v: u8,
    pub(super) node: String,
    pub(super) object: bool,
}

/// A question of this node still waiting for its answers.
#[derive(Debug)]
pub(super) struct Asking {
    keys: Vec<String>,
    /// Another node asked for the same name with a claim that comes first.
    lost: bool,
}

/// Reads and checks a question from another node.
pub(super) fn read_question(payload: &[u8]) -> Result<NickQuestion, String> {
    let q: NickQuestion = read_json(payload, MAX_NICK_MESSAGE, "a nickname question")?;
    check_origin(q.v, &q.node)?;
    if check_nick(&q.nick).as_deref() != Ok(q.nick.as_str()) {
        return Err("a nickname no session could choose".into());
    }
    Ok(q)
}

fn overlap(a: &[String], b: &[String]) -> bool {
    a.iter().any(|key| b.contains(key))
}

impl Link {
    /// Lets the link settle the nicknames of `chat`'s sessions.
    pub fn attach(&self, chat: &Arc<Chat>) {
        *self.room.lock() = Some(Arc::downgrade(chat));
    }

    fn room(&self) -> Option<Arc<Chat>> {
        self.room.lock().as_ref().and_then(std::sync::Weak::upgrade)
    }

    /// Hands the question about session `id`'s `/nick` to the link; never blocks. False when
    /// the link cannot ask (the broker is down, the node not in the cluster, the queue full).
    pub fn ask(&self, id: SessionId, nick: &str) -> bool {
        if self.state() != LinkState::Up {
            return false;
        }
        let asked = self.asks.try_send((id, nick.to_owned())).is_ok();
        if asked {
            self.wake.notify_one();
        }
        asked
    }

    /// Asks the other nodes about session `id`'s `nick`, then tells the room.
    pub(super) async fn settle_nick(
        self: Arc<Self>,
        client: async_nats::Client,
        registry: Registry,
        (id, nick): (SessionId, String),
    ) {
        let keys = nick_keys(&nick);
        let granted = !self.presence.lock().holds(&keys)
            && self.asked(&client, id, &nick, keys.clone()).await
            && !self.presence.lock().holds(&keys);
        if let Some(room) = self.room() {
            room.settle(&registry, id, &nick, granted);
        }
    }

    /// Whether no node objected within [`NICK_WAIT`] and no earlier claim came meanwhile.
    async fn asked(
        &self,
        client: &async_nats::Client,
        id: SessionId,
        nick: &str,
        keys: Vec<String>,
    ) -> bool {
        self.asking
            .lock()
            .insert(id.0, Asking { keys, lost: false });
        let objected = self.question(client, id, nick).await;
        let lost = self.asking.lock().remove(&id.0).is_some_and(|a| a.lost);
        !objected && !lost
    }

    /// Publishes the question and reads the answers: whether a node objected.
    async fn question(&self, client: &async_nats::Client, id: SessionId, nick: &str) -> bool {
        let question = NickQuestion {
            v: VERSION,
            node: self.options.node.clone(),
            epoch: self.epoch,
            id: id.0,
            nick: nick.to_owned(),
        };
        let inbox = client.new_inbox();
        let Ok(mut answers) = client.subscribe(inbox.clone()).await else {
            return false;
        };
        let payload = serde_json::to_vec(&question).unwrap_or_default();
        if client
            .publish_with_reply(self.options.nick_subject(), inbox, payload.into())
            .await
            .is_err()
        {
            return false;
        }
        let known: HashSet<String> = self
            .elsewhere(0)
            .nodes
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let mut heard = HashSet::new();
        let deadline = tokio::time::sleep(if known.is_empty() {
            LONE_WAIT
        } else {
            NICK_WAIT
        });
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return false,
                message = super::link::futures_next(&mut answers) => {
                    let Some(message) = message else { return false };
                    let answer: NickAnswer = match read_json(&message.payload, MAX_NICK_MESSAGE, "a nickname answer") {
                        Ok(answer) => answer,
                        Err(why) => {
                            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                            log::debug!(target: LOG, "cluster: nickname answer dropped: {why}");
                            continue;
                        }
                    };
                    if answer.object {
                        return true;
                    }
                    heard.insert(answer.node);
                    if !known.is_empty() && known.is_subset(&heard) {
                        return false;
                    }
                }
            }
        }
    }

    /// Answers another node's question: objects when a session here has the name, or asks
    /// for it with a claim that comes first; a claim here that comes later is lost.
    pub(super) async fn answer_nick(
        &self,
        client: &async_nats::Client,
        message: async_nats::Message,
    ) {
        let q = match read_question(&message.payload) {
            Ok(q) => q,
            Err(why) => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                log::warn!(target: LOG, "cluster: nickname question dropped: {why}");
                return;
            }
        };
        if q.node == self.options.node {
            return;
        }
        let keys = nick_keys(&q.nick);
        let mut object = self
            .room()
            .is_some_and(|room| room.holder(&q.nick).is_some());
        let theirs = (q.epoch, q.node.as_str(), q.id);
        for (id, asking) in self.asking.lock().iter_mut() {
            if overlap(&asking.keys, &keys) {
                if (self.epoch, self.options.node.as_str(), *id) < theirs {
                    object = true;
                } else {
                    asking.lost = true;
                }
            }
        }
        let answer = NickAnswer {
            v: VERSION,
            node: self.options.node.clone(),
            object,
        };
        if let (Some(reply), Ok(payload)) = (message.reply, serde_json::to_vec(&answer)) {
            let _ = client.publish(reply, payload.into()).await;
        }
    }

    /// Another node's session took a nickname a session here has (two claims crossed): the
    /// later claim gives it up, here as there.
    pub(super) fn contest(&self, envelope: &Envelope, registry: &Registry) {
        let (Some(nick), Some(room)) = (&envelope.nick, self.room()) else {
            return;
        };
        let Some(local) = room.holder(nick) else {
            return;
        };
        let ours = (self.epoch, self.options.node.as_str(), local.0);
        if ours > (envelope.epoch, envelope.node.as_str(), envelope.id) {
            let held = registry
                .get(local)
                .and_then(|h| h.nick())
                .unwrap_or_else(|| nick.clone());
            room.evict(registry, local, &held);
        }
    }
}
