//! What the coordinator does while the agents run: takes their ticks (alive, counts, new
//! latencies), notices an agent that stops ticking, and puts their final reports together.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::next;
use super::outcome::{AgentRow, FleetProgress, FleetRun, Lost, OnLoss};
use super::wire::{self, Message, Tick, Token};
use crate::client::bench::udp::UdpReport;
use crate::client::bench::{self, Report, SparseHistogram};

/// An agent silent this long is lost.
const LOST_AFTER: Duration = Duration::from_secs(2);

/// After a stop, how long the agents have to send their reports.
const REPORT_WAIT: Duration = Duration::from_secs(10);

/// The most pieces, and bytes, of one agent's report.
const MAX_PIECES: u32 = 4096;
const MAX_REPORT: usize = 64 << 20;

/// The latest second a tick may name (a hostile one would make a huge timeline).
const MAX_SECOND: u64 = 10_000_000;

#[derive(Default)]
struct Agent {
    last: Option<Instant>,
    seq: Option<u64>,
    tick: Option<(bool, f64, u64, u64)>,
    covered: u64,
    pieces: Vec<Option<Vec<u8>>>,
    bytes: usize,
    done: bool,
    lost: bool,
}

pub(super) struct Collect<'a> {
    client: &'a async_nats::Client,
    token: Option<&'a Token>,
    run: String,
    rows: Vec<AgentRow>,
    agents: Vec<Agent>,
    on_loss: OnLoss,
    uncertainty_s: f64,
    total: SparseHistogram,
    lost: Vec<Lost>,
    stopped: Option<Instant>,
}

impl<'a> Collect<'a> {
    pub(super) fn new(
        client: &'a async_nats::Client,
        token: Option<&'a Token>,
        run: String,
        rows: Vec<AgentRow>,
        on_loss: OnLoss,
        uncertainty_s: f64,
    ) -> Self {
        let now = Instant::now();
        let agents = rows
            .iter()
            .map(|_| Agent {
                last: Some(now),
                ..Agent::default()
            })
            .collect();
        Collect {
            client,
            token,
            run,
            rows,
            agents,
            on_loss,
            uncertainty_s,
            total: SparseHistogram::default(),
            lost: Vec::new(),
            stopped: None,
        }
    }

    pub(super) async fn run(
        mut self,
        mut events: async_nats::Subscriber,
        stop: &AtomicBool,
        progress: &dyn Fn(&FleetProgress),
    ) -> FleetRun {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        let mut shown = Instant::now();
        while self.agents.iter().any(|a| !a.done && !a.lost) {
            tokio::select! {
                Some(msg) = next(&mut events) => match wire::open(self.token, &msg.payload) {
                    Ok(message) => self.take(message),
                    Err(e) => log::warn!("fleet: ignored a message on {}: {e}", msg.subject),
                },
                _ = every.tick() => {
                    self.notice_losses().await;
                    if stop.load(Ordering::SeqCst) {
                        self.stop().await;
                    }
                    if self.stopped.is_some_and(|at| at.elapsed() > REPORT_WAIT) {
                        for (row, a) in self.rows.iter_mut().zip(&mut self.agents) {
                            if !a.done && !a.lost {
                                a.done = true;
                                row.failed = Some(format!("no report within {} s of the stop", REPORT_WAIT.as_secs()));
                            }
                        }
                    }
                    if shown.elapsed() >= Duration::from_millis(500) {
                        progress(&self.progress());
                        shown = Instant::now();
                    }
                }
            }
        }
        FleetRun {
            run: self.run,
            agents: self.rows,
            lost: self.lost,
            uncertainty_s: self.uncertainty_s,
            stopped: self.stopped.is_some(),
        }
    }

    async fn stop(&mut self) {
        if self.stopped.is_none() {
            self.stopped = Some(Instant::now());
            let stop = wire::seal(
                self.token,
                &Message::Stop {
                    run: self.run.clone(),
                },
            );
            if let Err(e) = self
                .client
                .publish(wire::stop_subject(&self.run), stop.into())
                .await
            {
                log::warn!("fleet: cannot stop the agents: {e}");
            }
            let _ = self.client.flush().await;
        }
    }

    async fn notice_losses(&mut self) {
        let mut abort = false;
        for (row, a) in self.rows.iter().zip(&mut self.agents) {
            if !a.done && !a.lost && a.last.is_some_and(|at| at.elapsed() > LOST_AFTER) {
                a.lost = true;
                log::warn!(
                    "fleet: agent {} lost: silent for {} s, after {} s of the window",
                    row.name,
                    LOST_AFTER.as_secs(),
                    a.covered
                );
                self.lost.push(Lost {
                    agent: row.name.clone(),
                    seconds: a.covered,
                });
                abort |= self.on_loss == OnLoss::Abort;
            }
        }
        if abort {
            self.stop().await;
        }
    }

    fn agent(&self, name: &str, run: &str) -> Option<usize> {
        (run == self.run).then(|| self.rows.iter().position(|r| r.name == name))?
    }

    fn take(&mut self, message: Message) {
        match message {
            Message::Tick(tick) => {
                if let Some(i) = self.agent(&tick.agent, &tick.run) {
                    self.tick(i, tick);
                }
            }
            Message::ReportPart {
                agent,
                run,
                index,
                count,
                data,
            } => {
                if let Some(i) = self.agent(&agent, &run) {
                    self.piece(i, index, count, &data);
                }
            }
            Message::Failed { agent, run, reason } => {
                if let Some(i) = self.agent(&agent, &run) {
                    log::warn!("fleet: agent {agent} failed: {reason}");
                    self.agents[i].done = true;
                    self.rows[i].failed = Some(reason);
                }
            }
            other => log::debug!("fleet: ignored {other:?}"),
        }
    }

    fn tick(&mut self, i: usize, tick: Tick) {
        let a = &mut self.agents[i];
        if a.seq.is_some_and(|seq| tick.seq <= seq) || a.done {
            return;
        }
        a.seq = Some(tick.seq);
        a.last = Some(Instant::now());
        a.tick = Some((
            tick.connecting,
            tick.msgs_per_sec,
            tick.messages,
            tick.errors,
        ));
        for (second, text) in tick.seconds.iter().take(4096) {
            if *second > MAX_SECOND {
                continue;
            }
            match bench::decode(text).and_then(|h| SparseHistogram::of(&h)) {
                Ok(h) => {
                    self.total.add(&h);
                    a.covered = a.covered.max(second + 1);
                }
                Err(e) => log::warn!(
                    "fleet: agent {}: a second that is not a histogram: {e}",
                    self.rows[i].name
                ),
            }
        }
    }

    fn piece(&mut self, i: usize, index: u32, count: u32, data: &str) {
        let name = self.rows[i].name.clone();
        let a = &mut self.agents[i];
        if a.done || count == 0 || count > MAX_PIECES || index >= count {
            return;
        }
        a.last = Some(Instant::now());
        if a.pieces.len() != count as usize {
            a.pieces = vec![None; count as usize];
            a.bytes = 0;
        }
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
            log::warn!("fleet: agent {name}: a report piece that is not base64");
            return;
        };
        if a.bytes + bytes.len() > MAX_REPORT {
            log::warn!("fleet: agent {name}: a report larger than {MAX_REPORT} bytes");
            return;
        }
        a.bytes += bytes.len();
        a.pieces[index as usize] = Some(bytes);
        if a.pieces.iter().any(Option::is_none) {
            return;
        }
        let text: Vec<u8> = a.pieces.drain(..).flatten().flatten().collect();
        a.done = true;
        let offset = self.rows[i].clock.offset;
        // Its times, from the agent's clock to the coordinator's.
        let parsed = if is_udp(&text) {
            serde_json::from_slice::<UdpReport>(&text).map(|mut report| {
                report.start -= offset;
                self.rows[i].start = Some(report.start);
                self.rows[i].udp = Some(report);
            })
        } else {
            serde_json::from_slice::<Report>(&text).map(|mut report| {
                report.window.start -= offset;
                report.window.end -= offset;
                self.rows[i].start = Some(report.window.start);
                self.rows[i].report = Some(report);
            })
        };
        match parsed {
            Ok(()) => {
                if a.lost {
                    a.lost = false;
                    self.lost.retain(|l| l.agent != name);
                }
            }
            Err(e) => {
                log::warn!("fleet: agent {name} sent a report that does not parse: {e}");
                self.rows[i].failed = Some(format!("a report that does not parse: {e}"));
            }
        }
    }

    fn progress(&self) -> FleetProgress {
        let mut p = FleetProgress {
            agents: self.agents.iter().filter(|a| !a.lost).count(),
            lost: self.lost.len(),
            connecting: false,
            msgs_per_sec: 0.0,
            messages: 0,
            errors: 0,
            p50_us: 0,
            p99_us: 0,
        };
        for a in self.agents.iter().filter(|a| !a.lost) {
            if let Some((connecting, rate, messages, errors)) = a.tick {
                p.connecting |= connecting;
                if !a.done {
                    p.msgs_per_sec += rate;
                }
                p.messages += messages;
                p.errors += errors;
            } else {
                p.connecting = true;
            }
        }
        if !self.total.is_empty() {
            let h = self.total.histogram();
            p.p50_us = h.value_at_quantile(0.5);
            p.p99_us = h.value_at_quantile(0.99);
        }
        p
    }
}

/// Whether a report's JSON is a `--udp` run's (`"transport": "udp"`).
fn is_udp(text: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Transport {
        #[serde(default)]
        transport: Option<String>,
    }
    serde_json::from_slice::<Transport>(text).is_ok_and(|t| t.transport.as_deref() == Some("udp"))
}
