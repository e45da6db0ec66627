//! `--cluster-history N`: what core NATS loses, brought back where it can be.
//!
//! Two losses are ordinary. A node's own lines typed while the broker is away: with history
//! on, the link *holds* up to N of them, numbered as they came, and publishes them once the
//! broker is back (oldest first, before anything newer), so the other nodes get them late
//! but whole and in order. And the lines other nodes published while this node's link alone
//! was down: the broker keeps the room's last N lines in a JetStream stream (in memory,
//! `TCPOOL_<cluster>`, on the room's subject), and a node whose link comes back fetches what
//! was published since it went down, a little before, and takes it like any envelope:
//! sequence numbers drop what it had and fill the gaps it counted.
//!
//! The stream needs a broker with JetStream (`nats-server -js`); without it the link says so
//! once and goes on without history. Holding needs nothing of the broker.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;

use super::receiving::Receiving;
use super::{ClusterOptions, LOG, Link};
use crate::server::session::registry::Registry;

/// The most `--cluster-history` may ask for.
pub const MAX_HISTORY: usize = 100_000;

/// How far before the moment the link went down the fetch starts: the broker's clock and this
/// node's may differ a little, and what was in flight then may be stored a little later.
const MARGIN: Duration = Duration::from_secs(5);

/// How long a fetch of what was missed may take in all; the link handles nothing else
/// meanwhile.
const FETCH_FOR: Duration = Duration::from_secs(3);

/// Messages asked of the broker at a time.
const BATCH: usize = 256;

/// The stream that keeps the room of `options`' cluster.
pub(super) fn stream_name(options: &ClusterOptions) -> String {
    format!("TCPOOL_{}", options.name)
}

/// A link's history: the lines held while the broker is away.
#[derive(Debug)]
pub(super) struct History {
    limit: usize,
    held: VecDeque<Bytes>,
    /// The bytes held, at most [`MAX_HELD_BYTES`].
    bytes: usize,
}

/// What the held lines may take in memory, whatever `--cluster-history` says: 100,000 lines
/// of 64 KiB would be 6 GiB.
pub(super) const MAX_HELD_BYTES: usize = 64 * 1024 * 1024;

impl History {
    pub(super) fn new(limit: usize) -> Self {
        History {
            limit,
            held: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Holds an envelope (its bytes) until the broker is back; returns how many older ones
    /// were dropped to make room (past the limit of lines, or of [`MAX_HELD_BYTES`]).
    pub(super) fn hold(&mut self, payload: Bytes) -> usize {
        if self.limit == 0 {
            return 1;
        }
        let mut dropped = 0;
        while !self.held.is_empty()
            && (self.held.len() >= self.limit || self.bytes + payload.len() > MAX_HELD_BYTES)
        {
            if let Some(old) = self.held.pop_front() {
                self.bytes -= old.len();
            }
            dropped += 1;
        }
        self.bytes += payload.len();
        self.held.push_back(payload);
        dropped
    }

    /// The envelopes held, oldest first, handed over to be published.
    pub(super) fn release(&mut self) -> VecDeque<Bytes> {
        self.bytes = 0;
        std::mem::take(&mut self.held)
    }

    /// Whether any are held.
    pub(super) fn holding(&self) -> bool {
        !self.held.is_empty()
    }
}

/// The history's side of a running link: what is held, and the stream once it is made.
pub(super) struct Keeping {
    pub(super) history: History,
    jetstream: jetstream::Context,
    kept: Option<stream::Stream>,
    /// Whether the stream is to be made (again): at the start and after each outage.
    want_stream: bool,
    /// Whether the stream could not be made, said once.
    said: bool,
}

impl Keeping {
    pub(super) fn new(limit: usize, client: &async_nats::Client) -> Self {
        Keeping {
            history: History::new(limit),
            jetstream: jetstream::new(client.clone()),
            kept: None,
            want_stream: true,
            said: false,
        }
    }

    /// With the link up: makes the stream if it is to be made, publishes what was held, and
    /// takes what the other nodes published while the link was down.
    pub(super) async fn catch_up(
        &mut self,
        link: &Link,
        client: &async_nats::Client,
        subject: &str,
        receiving: &mut Receiving,
        registry: &Registry,
    ) {
        let since = link.down_since.lock().take();
        if since.is_some() {
            self.want_stream = true;
        }
        if self.want_stream {
            self.want_stream = false;
            match ensure_stream(&self.jetstream, &link.options, self.history.limit).await {
                Ok(stream) => {
                    if self.said {
                        log::info!(target: LOG, "cluster history: stream {} ready", stream_name(&link.options));
                    }
                    self.kept = Some(stream);
                    self.said = false;
                }
                Err(e) => {
                    self.kept = None;
                    if !self.said {
                        self.said = true;
                        log::warn!(
                            target: LOG,
                            "cluster history: no stream {} on the broker ({e}); the broker needs \
                             JetStream (nats-server -js). Lines held while it is away are still \
                             sent; what other nodes said while this link was down is not fetched",
                            stream_name(&link.options)
                        );
                    }
                }
            }
        }
        if self.history.holding() {
            let held = self.history.release();
            let count = held.len();
            for payload in held {
                if client.publish(subject.to_owned(), payload).await.is_ok() {
                    link.counters
                        .published
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    link.counters
                        .dropped_broker_down
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            log::info!(target: LOG, "cluster history: {count} line(s) held while the link was down sent");
        }
        if let (Some(since), Some(stream)) = (since, &self.kept) {
            match missed_since(stream, since, self.history.limit).await {
                Ok(missed) => {
                    let before = link.counts().recovered;
                    for payload in &missed {
                        receiving.take_replayed(link, payload, registry);
                    }
                    let recovered = link.counts().recovered - before;
                    let level = if recovered > 0 {
                        log::Level::Info
                    } else {
                        log::Level::Debug
                    };
                    log::log!(
                        target: LOG,
                        level,
                        "cluster history: {recovered} line(s) the other nodes sent while the link \
                         was down fetched ({} looked at)",
                        missed.len()
                    );
                }
                Err(e) => {
                    log::warn!(target: LOG, "cluster history: cannot fetch what was missed: {e}")
                }
            }
        }
    }
}

/// Makes sure the stream that keeps the room exists (after a broker restart it does not).
///
/// # Errors
///
/// The broker's answer, in words: most often, no JetStream on the broker.
pub(super) async fn ensure_stream(
    js: &jetstream::Context,
    options: &ClusterOptions,
    limit: usize,
) -> Result<stream::Stream, String> {
    js.get_or_create_stream(stream::Config {
        name: stream_name(options),
        subjects: vec![options.subject()],
        max_messages: i64::try_from(limit).unwrap_or(i64::MAX),
        storage: stream::StorageType::Memory,
        discard: stream::DiscardPolicy::Old,
        ..stream::Config::default()
    })
    .await
    .map_err(|e| e.to_string())
}

/// What the stream holds that was stored since `since` (less [`MARGIN`]), at most `most`
/// messages, within [`FETCH_FOR`].
///
/// # Errors
///
/// The broker's answer, in words.
pub(super) async fn missed_since(
    stream: &stream::Stream,
    since: SystemTime,
    most: usize,
) -> Result<Vec<Bytes>, String> {
    let from = since
        .checked_sub(MARGIN)
        .unwrap_or(UNIX_EPOCH)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::try_from(from.as_nanos()).unwrap_or(0),
    )
    .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time },
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(10),
            ..consumer::pull::Config::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + FETCH_FOR;
    let mut missed = Vec::new();
    while missed.len() < most && Instant::now() < deadline {
        let ask = BATCH.min(most - missed.len());
        let mut batch = consumer
            .fetch()
            .max_messages(ask)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let mut got = 0;
        while let Some(message) = next(&mut batch).await {
            let message = message.map_err(|e| e.to_string())?;
            missed.push(message.message.payload.clone());
            got += 1;
        }
        if got < ask {
            break;
        }
    }
    Ok(missed)
}

/// The next item of a fetched batch (its `Stream` implementation, without a futures crate).
async fn next<S: futures_core::Stream + Unpin>(batch: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| futures_core::Stream::poll_next(std::pin::Pin::new(&mut *batch), cx))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holding_keeps_the_newest_up_to_the_limit_in_order() {
        let mut history = History::new(3);
        assert!(!history.holding());
        let mut dropped = 0;
        for i in 0..5u8 {
            dropped += history.hold(Bytes::from(vec![i]));
        }
        assert_eq!(dropped, 2);
        let held: Vec<u8> = history.release().iter().map(|b| b[0]).collect();
        assert_eq!(held, [2, 3, 4]);
        assert!(!history.holding());
    }

    #[test]
    fn holding_keeps_within_its_bytes_whatever_the_limit_of_lines() {
        let mut history = History::new(MAX_HISTORY);
        let line = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut dropped = 0;
        for _ in 0..1100 {
            dropped += history.hold(line.clone());
        }
        let held = history.release();
        assert_eq!(held.len(), MAX_HELD_BYTES / line.len());
        assert_eq!(dropped, 1100 - held.len());
    }

    #[test]
    fn the_stream_is_named_after_the_cluster() {
        let mut options = ClusterOptions::new("nats://127.0.0.1:4222");
        options.name = "eu_prod".into();
        assert_eq!(stream_name(&options), "TCPOOL_eu_prod");
    }
}
