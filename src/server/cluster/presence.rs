//! Presence: who is in the room on the other nodes of the cluster.
//!
//! Each node publishes a heartbeat every [`HEARTBEAT`] on the presence subject: its name,
//! its epoch and the members it has (session id, nickname). Between two heartbeats the
//! joins, leaves and nickname changes on the chat subject keep the picture current. A
//! receiver keeps, per node, the members of the epoch it heard last; a node not heard of
//! for [`TTL`] (three heartbeats) is lost, and its members are shown as left, once. A node
//! that stops gracefully says so (a heartbeat marked `leaving`), and its members are shown
//! as left at once. A newer epoch of a node (a restart) replaces the older one's members.
//!
//! Memory is bounded: at most [`MAX_NODES`] remote nodes and [`MAX_MEMBERS`] members per
//! node are kept; what goes past is refused and counted.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::server::modes::chat::{Elsewhere, Kind, check_nick, nick_keys};

use super::{MAX_NAME, VERSION, check_origin, read_json};

/// How often a node publishes its members.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long a node may stay silent before its members are shown as left: three heartbeats.
pub const TTL: Duration = Duration::from_secs(6);

/// Remote nodes kept at most; a heartbeat from one more is refused and counted.
pub const MAX_NODES: usize = 1000;

/// Members kept at most per remote node; more are refused and counted.
pub const MAX_MEMBERS: usize = 100_000;

/// Members one heartbeat lists at most (a NATS message is 1 MiB at most by default); a node
/// with more lists the first ones and says how many it has.
pub(super) const MAX_LISTED: usize = 10_000;

/// The largest heartbeat read from the broker.
pub(super) const MAX_BEAT: usize = 1024 * 1024;

/// A heartbeat, or a node's last word (`leaving`). JSON, one object per message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Beat {
    pub(super) v: u8,
    pub(super) node: String,
    pub(super) epoch: u64,
    /// The node is stopping: its members are leaving.
    #[serde(default)]
    pub(super) leaving: bool,
    /// How many members the node has (more than `members` lists when it has very many).
    pub(super) total: u64,
    /// (session id, nickname).
    pub(super) members: Vec<(u64, Option<String>)>,
}

/// Reads and checks a heartbeat from the broker.
pub(super) fn read_beat(payload: &[u8]) -> Result<Beat, String> {
    let beat: Beat = read_json(payload, MAX_BEAT, "a heartbeat")?;
    check_origin(beat.v, &beat.node)?;
    if beat.members.len() > MAX_LISTED || (beat.members.len() as u64) > beat.total {
        return Err("a heartbeat listing more members than allowed or announced".into());
    }
    for nick in beat.members.iter().filter_map(|(_, nick)| nick.as_ref()) {
        if check_nick(nick).as_deref() != Ok(nick.as_str()) {
            return Err("a nickname no session could choose".into());
        }
    }
    Ok(beat)
}

/// This node's own members, as the link has published them (kept by the link).
#[derive(Debug, Default)]
pub(super) struct Roster {
    members: BTreeMap<u64, Option<String>>,
}

impl Roster {
    /// Follows one published event.
    pub(super) fn follow(&mut self, kind: Kind, id: u64, nick: &Option<String>) {
        match kind {
            Kind::Join | Kind::Nick => {
                self.members.insert(id, nick.clone());
            }
            Kind::Left => {
                self.members.remove(&id);
            }
            Kind::Line => {}
        }
    }

    /// The heartbeat that announces them.
    pub(super) fn beat(&self, node: &str, epoch: u64, leaving: bool) -> Beat {
        Beat {
            v: VERSION,
            node: node.to_owned(),
            epoch,
            leaving,
            total: self.members.len() as u64,
            members: self
                .members
                .iter()
                .take(MAX_LISTED)
                .map(|(id, nick)| (*id, nick.clone()))
                .collect(),
        }
    }
}

#[derive(Debug)]
struct Remote {
    epoch: u64,
    members: BTreeMap<u64, Option<String>>,
    heard: Instant,
    /// Envelopes taken from it (duplicates not included) and its sequence numbers never
    /// received, since it was first heard of.
    received: u64,
    gaps: u64,
}

/// Another node as last heard, for `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteNode {
    /// Its `--node`.
    pub name: String,
    /// Its epoch (when it started, in nanoseconds since 1970).
    pub epoch: u64,
    /// How long ago it was last heard of.
    pub heard: Duration,
    /// How many members it has.
    pub member_count: usize,
    /// Some of them, by session id: (id, nickname).
    pub members: Vec<(u64, Option<String>)>,
    /// Envelopes taken from it (duplicates not included).
    pub received: u64,
    /// Its sequence numbers never received.
    pub gaps: u64,
}

/// Why a node's members are shown as left without a word from each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    Stopped,
    Lost,
    Restarted,
}

/// The members of the other nodes, as last heard.
#[derive(Debug, Default)]
pub struct Presence {
    nodes: HashMap<String, Remote>,
    /// Members and nodes refused at the bounds.
    refused: u64,
}

/// The name a member of `node` is shown by in chat lines.
fn shown(node: &str, id: u64, nick: &Option<String>) -> String {
    nick.clone().unwrap_or_else(|| format!("#{id}@{node}"))
}

fn left_lines(node: &str, members: &BTreeMap<u64, Option<String>>, why: Gone) -> Vec<String> {
    let why = match why {
        Gone::Stopped => "node stopped",
        Gone::Lost => "node lost",
        Gone::Restarted => "node restarted",
    };
    members
        .iter()
        .map(|(id, nick)| format!("* {} left ({why})", shown(node, *id, nick)))
        .collect()
}

impl Presence {
    /// Members and nodes refused at the bounds so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Notes that `node` (epoch `epoch`) was heard from. Returns `None` when that epoch is
    /// older than the one known (a stale word: it changes nothing), else the lines to show
    /// for the members of an older epoch it replaces.
    pub(super) fn heard(
        &mut self,
        node: &str,
        epoch: u64,
        now: Instant,
        lines: &mut Vec<String>,
    ) -> Option<()> {
        let full = self.nodes.len() >= MAX_NODES || node.len() > MAX_NAME;
        match self.nodes.get_mut(node) {
            Some(remote) if epoch < remote.epoch => None,
            Some(remote) if epoch == remote.epoch => {
                remote.heard = now;
                Some(())
            }
            Some(remote) => {
                lines.extend(left_lines(node, &remote.members, Gone::Restarted));
                remote.epoch = epoch;
                remote.members.clear();
                remote.heard = now;
                Some(())
            }
            None if full => {
                self.refused += 1;
                None
            }
            None => {
                self.nodes.insert(
                    node.to_owned(),
                    Remote {
                        epoch,
                        members: BTreeMap::new(),
                        heard: now,
                        received: 0,
                        gaps: 0,
                    },
                );
                Some(())
            }
        }
    }

    /// Follows a join, leave or nickname change of a remote member.
    pub(super) fn event(
        &mut self,
        (node, epoch): (&str, u64),
        kind: Kind,
        id: u64,
        nick: &Option<String>,
        now: Instant,
        lines: &mut Vec<String>,
    ) {
        if self.heard(node, epoch, now, lines).is_none() {
            return;
        }
        let Some(remote) = self.nodes.get_mut(node) else {
            return;
        };
        match kind {
            Kind::Join | Kind::Nick => {
                if remote.members.len() >= MAX_MEMBERS && !remote.members.contains_key(&id) {
                    self.refused += 1;
                } else {
                    remote.members.insert(id, nick.clone());
                }
            }
            Kind::Left => {
                remote.members.remove(&id);
            }
            Kind::Line => {}
        }
    }

    /// Takes a heartbeat: the node's members are the ones it lists (silently: their joins
    /// and leaves were shown as they happened), or, for a `leaving` one, shown as left.
    pub(super) fn beat(&mut self, beat: Beat, now: Instant, lines: &mut Vec<String>) {
        if self.heard(&beat.node, beat.epoch, now, lines).is_none() {
            return;
        }
        if beat.leaving {
            if let Some(mut remote) = self.nodes.remove(&beat.node) {
                for (id, nick) in beat.members {
                    remote.members.entry(id).or_insert(nick);
                }
                lines.extend(left_lines(&beat.node, &remote.members, Gone::Stopped));
            }
            return;
        }
        let Some(remote) = self.nodes.get_mut(&beat.node) else {
            return;
        };
        // A complete list replaces what was known; a partial one (a very large node) adds.
        if beat.members.len() as u64 == beat.total {
            remote.members.clear();
        }
        for (id, nick) in beat.members {
            if remote.members.len() >= MAX_MEMBERS && !remote.members.contains_key(&id) {
                self.refused += 1;
                continue;
            }
            remote.members.insert(id, nick);
        }
    }

    /// Counts an envelope taken from `node` (epoch `epoch`) and the `missed` sequence
    /// numbers before it.
    pub(super) fn tally(&mut self, node: &str, epoch: u64, missed: u64) {
        if let Some(remote) = self.nodes.get_mut(node).filter(|r| r.epoch == epoch) {
            remote.received += 1;
            remote.gaps += missed;
        }
    }

    /// The other nodes by name, with `most` of their members in all; whether some members
    /// were left out.
    pub fn nodes(&self, most: usize) -> (Vec<RemoteNode>, bool) {
        let now = Instant::now();
        let mut nodes: Vec<(&String, &Remote)> = self.nodes.iter().collect();
        nodes.sort_by(|a, b| a.0.cmp(b.0));
        let mut left = most;
        let mut truncated = false;
        let list = nodes
            .into_iter()
            .map(|(name, remote)| {
                let members: Vec<(u64, Option<String>)> = remote
                    .members
                    .iter()
                    .take(left)
                    .map(|(id, nick)| (*id, nick.clone()))
                    .collect();
                left -= members.len();
                truncated |= members.len() < remote.members.len();
                RemoteNode {
                    name: name.clone(),
                    epoch: remote.epoch,
                    heard: now.saturating_duration_since(remote.heard),
                    member_count: remote.members.len(),
                    members,
                    received: remote.received,
                    gaps: remote.gaps,
                }
            })
            .collect();
        (list, truncated)
    }

    /// Forgets the nodes not heard of for `ttl`: their members are shown as left (node lost).
    pub(super) fn expire(&mut self, now: Instant, ttl: Duration, lines: &mut Vec<String>) {
        let lost: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, remote)| now.saturating_duration_since(remote.heard) >= ttl)
            .map(|(node, _)| node.clone())
            .collect();
        for node in lost {
            if let Some(remote) = self.nodes.remove(&node) {
                lines.extend(left_lines(&node, &remote.members, Gone::Lost));
            }
        }
    }

    /// While this node cannot hear anyone (its link is down), nobody's time runs out.
    pub(super) fn pause(&mut self, now: Instant) {
        for remote in self.nodes.values_mut() {
            remote.heard = now;
        }
    }

    /// Whether a member of another node has a nickname with one of `keys` ([`nick_keys`]).
    pub(super) fn holds(&self, keys: &[String]) -> bool {
        self.nodes.values().any(|remote| {
            remote
                .members
                .values()
                .flatten()
                .any(|nick| nick_keys(nick).iter().any(|key| keys.contains(key)))
        })
    }

    /// The other nodes' members: counts per node, and up to `most` names (`ann@b`, `#1@b`).
    pub fn elsewhere(&self, most: usize) -> Elsewhere {
        let mut nodes: Vec<(&String, &Remote)> = self.nodes.iter().collect();
        nodes.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = Elsewhere::default();
        for (node, remote) in nodes {
            out.nodes.push((node.clone(), remote.members.len()));
            for (id, nick) in &remote.members {
                if out.names.len() >= most {
                    break;
                }
                let mut name = nick.clone().unwrap_or_else(|| format!("#{id}"));
                let _ = write!(name, "@{node}");
                out.names.push(name);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(node: &str, epoch: u64, members: &[(u64, Option<&str>)]) -> Beat {
        Beat {
            v: VERSION,
            node: node.into(),
            epoch,
            leaving: false,
            total: members.len() as u64,
            members: members
                .iter()
                .map(|(id, nick)| (*id, nick.map(str::to_owned)))
                .collect(),
        }
    }

    #[test]
    fn members_are_followed_and_lost_once_after_the_ttl() {
        let t0 = Instant::now();
        let mut p = Presence::default();
        let mut lines = Vec::new();
        p.beat(beat("b", 1, &[(1, None), (2, Some("bob"))]), t0, &mut lines);
        p.event(("b", 1), Kind::Join, 3, &None, t0, &mut lines);
        p.event(("b", 1), Kind::Left, 1, &None, t0, &mut lines);
        assert!(lines.is_empty());
        let who = p.elsewhere(10);
        assert_eq!(who.nodes, vec![("b".to_owned(), 2)]);
        p.tally("b", 1, 2);
        p.tally("b", 0, 5);
        let (nodes, truncated) = p.nodes(1);
        assert!(truncated);
        assert_eq!(nodes[0].members, vec![(2, Some("bob".to_owned()))]);
        assert_eq!(
            (nodes[0].member_count, nodes[0].received, nodes[0].gaps),
            (2, 1, 2)
        );
        assert!(!p.nodes(2).1);
        assert_eq!(who.names, vec!["bob@b", "#3@b"]);
        p.expire(t0 + TTL - Duration::from_millis(1), TTL, &mut lines);
        assert!(lines.is_empty());
        p.expire(t0 + TTL, TTL, &mut lines);
        assert_eq!(lines, ["* bob left (node lost)", "* #3@b left (node lost)"]);
        lines.clear();
        p.expire(t0 + TTL * 2, TTL, &mut lines);
        assert!(lines.is_empty());
        assert!(p.elsewhere(10).nodes.is_empty());
    }

    #[test]
    fn a_restart_replaces_and_a_stale_epoch_changes_nothing() {
        let t0 = Instant::now();
        let mut p = Presence::default();
        let mut lines = Vec::new();
        p.beat(beat("b", 5, &[(1, None)]), t0, &mut lines);
        p.beat(beat("b", 4, &[(9, None)]), t0, &mut lines);
        assert_eq!(p.elsewhere(10).names, vec!["#1@b"]);
        p.beat(beat("b", 6, &[(1, Some("ann"))]), t0, &mut lines);
        assert_eq!(lines, ["* #1@b left (node restarted)"]);
        assert_eq!(p.elsewhere(10).names, vec!["ann@b"]);
        lines.clear();
        let mut last = beat("b", 6, &[]);
        last.leaving = true;
        p.beat(last, t0, &mut lines);
        assert_eq!(lines, ["* ann left (node stopped)"]);
    }

    #[test]
    fn bounds_are_kept_and_counted() {
        let t0 = Instant::now();
        let mut p = Presence::default();
        let mut lines = Vec::new();
        for n in 0..=MAX_NODES {
            p.event((&format!("n{n}"), 1), Kind::Join, 1, &None, t0, &mut lines);
        }
        assert_eq!(p.nodes.len(), MAX_NODES);
        assert_eq!(p.refused(), 1);
        let big = Beat {
            total: (MAX_LISTED + 1) as u64,
            ..beat("n0", 1, &[])
        };
        assert!(read_beat(&serde_json::to_vec(&big).unwrap()).is_ok());
        let mut lying = beat("n0", 1, &[(1, None)]);
        lying.total = 0;
        assert!(read_beat(&serde_json::to_vec(&lying).unwrap()).is_err());
        let forged = beat("n0", 1, &[(1, Some("*admin"))]);
        assert!(read_beat(&serde_json::to_vec(&forged).unwrap()).is_err());
        assert!(read_beat(b"{}").is_err());
    }
}
