//! One name, one node: before it announces itself, a node asks whether another live node of
//! the cluster already has its `--node` name.
//!
//! Each node subscribes to `tcpool.CLUSTER.names.NODE`, the subject of its own name, and
//! answers a question asked there by another epoch with its own epoch. A node that comes up
//! asks once on that subject (request/reply): no responder (the broker says so at once) or
//! no answer within [`PROBE`] admits it; an answer from another epoch refuses it. Two nodes
//! with the same name asking at the same moment settle it the same way on both: the older
//! epoch stays, the newer one refuses itself.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{LOG, Link, VERSION, check_origin, read_json};

/// How long a node coming up waits for an answer to "is anyone else named NODE?".
pub const PROBE: Duration = Duration::from_millis(500);

/// How long `tcpool serve` waits at start for the broker before it serves without the answer
/// (the question is then asked when the link first comes up).
pub const START_WAIT: Duration = Duration::from_millis(500);

/// The largest question or answer read.
const MAX_PROBE: usize = 256;

/// The question and its answer: a node's name and epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Probe {
    pub(super) v: u8,
    pub(super) node: String,
    pub(super) epoch: u64,
}

/// Where the question of the node's name stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// The broker has not been reached yet.
    Connecting,
    /// Reached; the question is asked.
    Probing,
    /// Nobody else has the name: the node is in the cluster.
    Admitted,
    /// A live node of that epoch has the name: the link stopped.
    Refused(u64),
}

/// Reads and checks a question or an answer about `own`, the name of this node.
pub(super) fn read_probe(payload: &[u8], own: &str) -> Result<Probe, String> {
    let probe: Probe = read_json(payload, MAX_PROBE, "a name question")?;
    check_origin(probe.v, &probe.node)?;
    if probe.node != own {
        return Err("a name question on another name's subject".into());
    }
    Ok(probe)
}

impl Link {
    /// The question about this node's name, as JSON.
    pub(super) fn probe_payload(&self) -> Vec<u8> {
        serde_json::to_vec(&Probe {
            v: VERSION,
            node: self.options.node.clone(),
            epoch: self.epoch,
        })
        .unwrap_or_default()
    }

    /// Asks whether another live node has this node's name: the other's epoch if so.
    pub(super) async fn probe(&self, client: &async_nats::Client) -> Option<u64> {
        let _ = self.admit(Admission::Probing);
        let asked = client.request(self.options.names_subject(), self.probe_payload().into());
        let message = match tokio::time::timeout(PROBE, asked).await {
            Ok(Ok(message)) => message,
            Ok(Err(e)) => {
                log::debug!(target: LOG, "cluster: name question: {e}");
                return None;
            }
            Err(_) => return None,
        };
        match read_probe(&message.payload, &self.options.node) {
            Ok(other) if other.epoch != self.epoch => Some(other.epoch),
            Ok(_) => None,
            Err(why) => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                log::warn!(target: LOG, "cluster: name answer dropped: {why}");
                None
            }
        }
    }

    /// Records where the question stands, and wakes [`Link::wait_admitted`]. Whether a start
    /// waits for it (and says so itself).
    pub(super) fn admit(&self, admission: Admission) -> bool {
        let mut now = self.admission.lock();
        *now = admission;
        self.admitted.notify_all();
        let waited = self.starting.load(Ordering::SeqCst);
        drop(now);
        waited
    }

    pub(super) fn admission(&self) -> Admission {
        *self.admission.lock()
    }

    /// Why this node may not join: another live node (epoch `other`) has its name.
    pub fn refusal(&self, other: u64) -> String {
        format!(
            "node name {} is already in cluster {} (epoch {other}); choose another --node",
            self.options.node, self.options.name
        )
    }

    /// Waits, at start, until the node is admitted to the cluster or refused, or until
    /// `connect` has passed without reaching the broker (then the question is asked when
    /// the link first comes up, and a refusal stops the link only).
    ///
    /// # Errors
    ///
    /// Another live node has this node's name.
    pub fn wait_admitted(&self, connect: Duration) -> Result<(), String> {
        let started = Instant::now();
        let mut admission = self.admission.lock();
        self.starting.store(true, Ordering::SeqCst);
        let _done = Finally(|| self.starting.store(false, Ordering::SeqCst));
        loop {
            let deadline = match *admission {
                Admission::Admitted => return Ok(()),
                Admission::Refused(other) => return Err(self.refusal(other)),
                Admission::Connecting => started + connect,
                // Reached in time: the answer is on its way, within PROBE and a little.
                Admission::Probing => started + connect + PROBE + Duration::from_secs(1),
            };
            if Instant::now() >= deadline {
                return Ok(());
            }
            let _ = self.admitted.wait_until(&mut admission, deadline);
        }
    }
}

/// Runs its closure when dropped.
struct Finally<F: FnMut()>(F);

impl<F: FnMut()> Drop for Finally<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}
