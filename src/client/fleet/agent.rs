//! `tcpool bench agent`: a generator that waits on the broker for a coordinator's work, runs
//! it with the same engine as a local `tcpool bench`, streams a tick a second (alive, counts,
//! new latencies) and sends its final report.
//!
//! Its NATS side runs on a current-thread runtime on the calling thread; a run goes on a
//! thread of its own, whose bench threads are those of any run. One run at a time.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::Engine as _;
use tokio::sync::mpsc;

use super::wire::{self, Message, Share, Tick, Work};
use super::{Broker, Cidr, next, now_unix};
use crate::client::bench::udp::{self, UdpLimit, UdpOptions, UdpReport};
use crate::client::bench::{self, Limit, Options, Progress, Report, SparseHistogram};

/// How long a flush of what is sent may wait for the broker before the agent goes on.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Work issued longer ago than this (in the agent's clock) is refused as stale.
const MAX_AGE_S: f64 = 600.0;

/// The runs remembered, so that work sent again (a replay) is not run twice.
const REMEMBERED: usize = 1024;

/// Turns work's flags into a run's options (the command line's parser); an error is why the
/// work is refused.
pub type Build = dyn Fn(&Work) -> Result<Load, String>;

/// What a run's flags ask for: a TCP load, or a `--udp` one.
#[derive(Debug, Clone)]
pub enum Load {
    /// Connections and messages.
    Tcp(Box<Options>),
    /// Sockets and datagrams.
    Udp(Box<UdpOptions>),
}

/// What a run gave.
enum Finished {
    Tcp(Box<Report>),
    Udp(Box<UdpReport>),
}

/// An agent's settings.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The broker and the fleet's token.
    pub broker: Broker,
    /// Its name: unique in the fleet.
    pub name: String,
    /// The targets it loads (`--allow-target`).
    pub allow: Vec<Cidr>,
    /// Seconds added to its clock: a test hook that makes it look like a machine whose clock
    /// is off.
    pub clock_offset: f64,
}

enum RunEvent {
    Progress(Progress),
    Seconds(Vec<(u64, SparseHistogram)>),
    Done(Box<Result<Finished, String>>),
}

struct Running {
    run: String,
    stop: Arc<AtomicBool>,
    stop_sub: async_nats::Subscriber,
    seq: u64,
    progress: Option<Progress>,
    pending: BTreeMap<u64, SparseHistogram>,
}

impl Agent {
    fn clock(&self) -> f64 {
        now_unix() + self.clock_offset
    }

    /// Serves work until `stop` is set.
    ///
    /// # Errors
    ///
    /// A broker that cannot be used (a bad credentials file), or a runtime that cannot start.
    pub fn serve(&self, build: &Build, stop: &AtomicBool) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the agent's runtime: {e}"))?;
        runtime.block_on(self.serve_async(build, stop))
    }

    async fn serve_async(&self, build: &Build, stop: &AtomicBool) -> Result<(), String> {
        let client = self
            .broker
            .connect(&format!("tcpool bench agent {}", self.name), true)
            .await?;
        let nats = |e: async_nats::SubscribeError| format!("cannot subscribe: {e}");
        let mut discover = client
            .subscribe(wire::discover_subject())
            .await
            .map_err(nats)?;
        let mut direct = client
            .subscribe(wire::agent_subject(&self.name))
            .await
            .map_err(nats)?;
        log::info!(
            "bench agent {} waiting for work at {} (targets allowed: {})",
            self.name,
            self.broker.url,
            self.allow
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut running: Option<Running> = None;
        let mut seen = VecDeque::new();
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let mut watch = tokio::time::interval(Duration::from_millis(100));
        let mut ignored = Ignored::default();
        loop {
            tokio::select! {
                Some(msg) = next(&mut discover) => {
                    if let Ok(Message::Discover) = wire::open(self.broker.token.as_ref(), &msg.payload)
                        && let Some(reply) = msg.reply
                    {
                        let hello = Message::Hello { agent: self.name.clone(), busy: running.is_some() };
                        self.send(&client, reply.to_string(), &hello).await;
                    } else {
                        ignored.note(&msg.subject);
                    }
                }
                Some(msg) = next(&mut direct) => {
                    let message = match wire::open(self.broker.token.as_ref(), &msg.payload) {
                        Ok(m) => m,
                        Err(e) => { ignored.log(&msg.subject, &e); continue; }
                    };
                    let Some(reply) = msg.reply else { continue };
                    match message {
                        Message::Ping { t0 } => {
                            let pong = Message::Pong { t0, at: self.clock() };
                            self.send(&client, reply.to_string(), &pong).await;
                        }
                        Message::Work(work) => {
                            let answer = match self.take(&work, &running, &mut seen, build) {
                                Ok(options) => {
                                    match client.subscribe(wire::stop_subject(&work.run)).await {
                                        Ok(stop_sub) => {
                                            running = Some(self.start(work, options, stop_sub, &tx));
                                            Message::Accepted { agent: self.name.clone() }
                                        }
                                        Err(e) => Message::Refused { agent: self.name.clone(), reason: format!("cannot subscribe: {e}") },
                                    }
                                }
                                Err(reason) => {
                                    log::warn!("bench agent {}: refused run {}: {reason}", self.name, work.run);
                                    Message::Refused { agent: self.name.clone(), reason }
                                }
                            };
                            self.send(&client, reply.to_string(), &answer).await;
                        }
                        other => log::debug!("bench agent {}: ignored {other:?}", self.name),
                    }
                }
                Some(msg) = async { match running.as_mut() { Some(r) => next(&mut r.stop_sub).await, None => std::future::pending().await } } => {
                    match wire::open(self.broker.token.as_ref(), &msg.payload) {
                        Ok(Message::Stop { run }) => if let Some(r) = &running && r.run == run {
                            log::info!("bench agent {}: run {run} stopped by the coordinator", self.name);
                            r.stop.store(true, Ordering::SeqCst);
                        },
                        Ok(_) => {}
                        Err(e) => ignored.log(&msg.subject, &e),
                    }
                }
                Some(event) = rx.recv() => match event {
                    RunEvent::Progress(p) => if let Some(r) = running.as_mut() { r.progress = Some(p) },
                    RunEvent::Seconds(seconds) => if let Some(r) = running.as_mut() {
                        for (i, h) in seconds {
                            r.pending.entry(i).or_default().add(&h);
                        }
                    },
                    RunEvent::Done(result) => if let Some(mut r) = running.take() {
                        self.tick(&client, &mut r).await;
                        self.finish(&client, &r.run, *result).await;
                    },
                },
                _ = ticker.tick() => if let Some(r) = running.as_mut() {
                    self.tick(&client, r).await;
                },
                _ = watch.tick() => if stop.load(Ordering::SeqCst) {
                    match &running {
                        // The run ends first, and its report goes out.
                        Some(r) => r.stop.store(true, Ordering::SeqCst),
                        None => break,
                    }
                },
            }
        }
        // A broker that is gone never answers a flush: what is not out by then is lost.
        let _ = tokio::time::timeout(FLUSH_WAIT, client.flush()).await;
        Ok(())
    }

    async fn send(&self, client: &async_nats::Client, subject: String, message: &Message) {
        let payload = wire::seal(self.broker.token.as_ref(), message);
        if let Err(e) = client.publish(subject, payload.into()).await {
            log::warn!("bench agent {}: cannot send: {e}", self.name);
        }
    }

    /// Checks `work` and makes its options, or says why not.
    fn take(
        &self,
        work: &Work,
        running: &Option<Running>,
        seen: &mut VecDeque<String>,
        build: &Build,
    ) -> Result<Load, String> {
        if work.agent != self.name {
            return Err(format!("this is agent {}, not {}", self.name, work.agent));
        }
        if let Some(r) = running {
            return Err(format!("busy with run {}", r.run));
        }
        if seen.contains(&work.run) {
            return Err(format!("run {} was sent before: a replay", work.run));
        }
        let age = self.clock() - work.issued;
        if !(-MAX_AGE_S..=MAX_AGE_S).contains(&age) {
            return Err(format!(
                "stale work, issued {age:.0} s ago in this agent's clock"
            ));
        }
        if seen.len() >= REMEMBERED {
            seen.pop_front();
        }
        seen.push_back(work.run.clone());
        // A flag the parser cannot take is refused; even a bug in it does not end the agent.
        let load = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(work)))
            .map_err(|_| "the flags could not be parsed".to_owned())??;
        let addrs = match &load {
            Load::Tcp(options) => options.addrs.clone(),
            Load::Udp(options) => vec![options.target],
        };
        if let Some(outside) = addrs
            .iter()
            .find(|a| !self.allow.iter().any(|c| c.contains(a.ip())))
        {
            return Err(format!(
                "target {outside} is outside this agent's --allow-target ({})",
                self.allow
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let mut options = match load {
            Load::Tcp(options) => options,
            Load::Udp(mut options) => {
                apply_udp(&mut options, &work.share);
                options
                    .validate()
                    .map_err(|e| format!("invalid options: {e}"))?;
                return Ok(Load::Udp(options));
            }
        };
        apply(&mut options, &work.share);
        let real = work.start_at - self.clock_offset;
        if real.is_finite() && real > 0.0 && real < 1e11 {
            options.start_at = Some(UNIX_EPOCH + Duration::from_secs_f64(real));
        }
        options
            .validate()
            .map_err(|e| format!("invalid options: {e}"))?;
        Ok(Load::Tcp(options))
    }

    fn start(
        &self,
        work: Work,
        load: Load,
        stop_sub: async_nats::Subscriber,
        tx: &mpsc::UnboundedSender<RunEvent>,
    ) -> Running {
        log::info!(
            "bench agent {}: run {}: {} connection(s) from #{}",
            self.name,
            work.run,
            work.share.connections,
            work.share.conn_offset
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, tx, failed) = (Arc::clone(&stop), tx.clone(), tx.clone());
        // A UDP run starts at once: the agent waits for the start in its own clock first.
        let start_in = work.start_at - self.clock();
        let spawned = std::thread::Builder::new()
            .name("tcpool-agent-run".into())
            .spawn(move || {
                let result = match load {
                    Load::Tcp(options) => {
                        let progress = |p: &Progress| drop(tx.send(RunEvent::Progress(*p)));
                        let seconds =
                            |s: Vec<(u64, SparseHistogram)>| drop(tx.send(RunEvent::Seconds(s)));
                        bench::run_streaming(&options, &flag, Some(&progress), &seconds)
                            .map(|r| Finished::Tcp(Box::new(r)))
                    }
                    Load::Udp(options) => {
                        wait_until(start_in, &flag);
                        udp::run(&options, &flag).map(|r| Finished::Udp(Box::new(r)))
                    }
                };
                drop(tx.send(RunEvent::Done(Box::new(result.map_err(|e| e.to_string())))));
            });
        if let Err(e) = spawned {
            drop(failed.send(RunEvent::Done(Box::new(Err(format!(
                "cannot start the run: {e}"
            ))))));
        }
        Running {
            run: work.run,
            stop,
            stop_sub,
            seq: 0,
            progress: None,
            pending: BTreeMap::new(),
        }
    }

    /// Sends the run's tick: its counts and what it recorded since the last.
    async fn tick(&self, client: &async_nats::Client, r: &mut Running) {
        let p = r.progress.unwrap_or(Progress {
            elapsed: Duration::ZERO,
            connecting: true,
            warming_up: false,
            messages: 0,
            errors: 0,
            open: 0,
            msgs_per_sec: 0.0,
            done: 0.0,
        });
        let seconds = std::mem::take(&mut r.pending)
            .into_iter()
            .map(|(i, h)| (i, bench::encode(&h.histogram())))
            .collect();
        let tick = Message::Tick(Tick {
            agent: self.name.clone(),
            run: r.run.clone(),
            seq: r.seq,
            connecting: p.connecting,
            msgs_per_sec: p.msgs_per_sec,
            messages: p.messages,
            errors: p.errors,
            open: p.open,
            seconds,
        });
        r.seq += 1;
        self.send(client, wire::events_subject(&r.run), &tick).await;
    }

    /// Sends the final report, in pieces that fit the broker's payload limit.
    async fn finish(
        &self,
        client: &async_nats::Client,
        run: &str,
        result: Result<Finished, String>,
    ) {
        let events = wire::events_subject(run);
        let mut report = match result {
            Ok(report) => report,
            Err(reason) => {
                log::warn!("bench agent {}: run {run} failed: {reason}", self.name);
                let failed = Message::Failed {
                    agent: self.name.clone(),
                    run: run.into(),
                    reason,
                };
                self.send(client, events, &failed).await;
                return;
            }
        };
        // Its times in this agent's clock, as all it says.
        let (encoded, done) = match &mut report {
            Finished::Tcp(r) => {
                r.window.start += self.clock_offset;
                r.window.end += self.clock_offset;
                (
                    serde_json::to_vec(r),
                    format!("{} messages, {} errors", r.messages, r.errors),
                )
            }
            Finished::Udp(r) => {
                r.start += self.clock_offset;
                let done = format!("{} datagrams sent, {} lost", r.sent, r.lost);
                (serde_json::to_vec(r), done)
            }
        };
        let text = match encoded {
            Ok(text) => text,
            Err(e) => {
                let failed = Message::Failed {
                    agent: self.name.clone(),
                    run: run.into(),
                    reason: format!("cannot encode the report: {e}"),
                };
                self.send(client, events, &failed).await;
                return;
            }
        };
        let piece = (client.server_info().max_payload / 2).max(4096);
        let count = text.len().div_ceil(piece).max(1) as u32;
        for (index, chunk) in text.chunks(piece).enumerate() {
            let part = Message::ReportPart {
                agent: self.name.clone(),
                run: run.into(),
                index: index as u32,
                count,
                data: base64::engine::general_purpose::STANDARD.encode(chunk),
            };
            self.send(client, events.clone(), &part).await;
        }
        let _ = tokio::time::timeout(FLUSH_WAIT, client.flush()).await;
        log::info!("bench agent {}: run {run} done: {done}", self.name);
    }
}

/// Puts an agent's share into its options.
fn apply(options: &mut Options, share: &Share) {
    options.connections = share.connections;
    options.conn_offset = share.conn_offset;
    options.rate = share.rate;
    if let Some(n) = share.messages {
        options.limit = Limit::Messages(n);
    }
}

/// Puts an agent's share into a UDP run's options: its sockets, datagrams and rate.
fn apply_udp(options: &mut UdpOptions, share: &Share) {
    options.sockets = share.connections;
    options.rate = share.rate;
    if let Some(n) = share.messages {
        options.limit = UdpLimit::Datagrams(n);
    }
}

/// Sleeps `seconds` (at most 10 minutes), in steps, until then or until `stop` is set.
fn wait_until(seconds: f64, stop: &AtomicBool) {
    let Ok(wait) = Duration::try_from_secs_f64(seconds.clamp(0.0, 600.0)) else {
        return;
    };
    let end = Instant::now() + wait;
    while !stop.load(Ordering::SeqCst) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Messages that were not a fleet's, counted and logged at most once a second.
#[derive(Default)]
struct Ignored {
    count: u64,
    logged: Option<Instant>,
}

impl Ignored {
    fn note(&mut self, subject: &str) {
        self.log(subject, "not a signed discovery");
    }

    fn log(&mut self, subject: &str, why: &str) {
        self.count += 1;
        if self
            .logged
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            log::warn!(
                "bench agent: ignored a message on {subject}: {why} ({} ignored so far)",
                self.count
            );
            self.logged = Some(Instant::now());
        }
    }
}
