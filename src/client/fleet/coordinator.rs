//! `tcpool bench --fleet`: finds the agents, measures their clocks, splits the work, starts
//! them on one window and gathers what they measured ([`collect`](super::collect)).
//!
//! All of it runs on one thread, on a current-thread runtime: the coordinator only talks to
//! the broker, and the agents do the load.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::clock::{Clock, Sample};
use super::collect::Collect;
use super::outcome::{AgentRow, FleetProgress, FleetRun, OnLoss};
use super::split::split;
use super::wire::{self, Message, Work};
use super::{Broker, next, now_unix};

/// Clock samples taken of each agent.
const SAMPLES: usize = 5;

/// How long an agent may take to answer a request.
const ANSWER: Duration = Duration::from_secs(2);

/// The largest share of the window the clocks' uncertainty may take.
const MAX_UNCERTAINTY: f64 = 0.01;

/// Which agents to drive: any N, or these by name with a weight each.
#[derive(Debug, Clone, PartialEq)]
pub enum Wanted {
    /// The first N idle agents that answer (taken in the order of their names).
    Count(usize),
    /// These agents, each with its weight (`a:3,b:1`).
    Named(Vec<(String, u32)>),
}

/// A fleet run to drive.
#[derive(Debug, Clone)]
pub struct Coordinator {
    /// The broker and the fleet's token.
    pub broker: Broker,
    /// The agents.
    pub wanted: Wanted,
    /// The `tcpool bench` flags for the agents, the target first.
    pub args: Vec<String>,
    /// `-c` in all.
    pub connections: usize,
    /// `-n` in all.
    pub messages: Option<u64>,
    /// `--rate` in all.
    pub rate: Option<f64>,
    /// `-d`: the window the clocks must agree on to 1 %; `None` with `-n`.
    pub window: Option<Duration>,
    /// When to start (the coordinator's clock); `None`: [`Coordinator::lead`] from when the
    /// work goes out.
    pub start_at: Option<SystemTime>,
    /// Time for the agents to connect before the start.
    pub lead: Duration,
    /// How long to look for the agents.
    pub find_for: Duration,
    /// What a lost agent does.
    pub on_loss: OnLoss,
}

impl Coordinator {
    /// Drives the run, calling `progress` about twice a second; `stop` stops every agent.
    ///
    /// # Errors
    ///
    /// Why the run could not start: no broker, too few agents, clocks too uncertain, a
    /// refused share.
    pub fn run(
        &self,
        stop: &AtomicBool,
        progress: &dyn Fn(&FleetProgress),
    ) -> Result<FleetRun, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the coordinator's runtime: {e}"))?;
        runtime.block_on(self.run_async(stop, progress))
    }

    async fn run_async(
        &self,
        stop: &AtomicBool,
        progress: &dyn Fn(&FleetProgress),
    ) -> Result<FleetRun, String> {
        let client = self.broker.connect("tcpool bench --fleet", false).await?;
        let token = self.broker.token.as_ref();
        let agents = self.find(&client).await?;
        let weights: Vec<u32> = agents.iter().map(|(_, w)| *w).collect();
        let shares = split(self.connections, self.messages, self.rate, &weights);
        if let Some(i) = shares.iter().position(|s| s.connections == 0) {
            return Err(format!(
                "agent {} would get no connection: {} connection(s) for {} agents",
                agents[i].0,
                self.connections,
                agents.len()
            ));
        }
        let mut clocks = Vec::new();
        for (name, _) in &agents {
            clocks.push(self.clock(&client, name).await?);
        }
        let uncertainty_s = clocks.iter().map(Clock::uncertainty).fold(0.0, f64::max);
        if let Some(window) = self.window
            && uncertainty_s > MAX_UNCERTAINTY * window.as_secs_f64()
        {
            return Err(format!(
                "the agents' clocks are known to ±{:.1} ms only, more than 1% of the {:.1} s \
                 window: measure longer (-d) or bring the broker nearer",
                uncertainty_s * 1e3,
                window.as_secs_f64()
            ));
        }
        let run = run_id();
        let events = client
            .subscribe(wire::events_subject(&run))
            .await
            .map_err(|e| format!("cannot subscribe: {e}"))?;
        let start = match self.start_at {
            Some(at) => at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            None => now_unix() + self.lead.as_secs_f64(),
        };
        let mut rows = Vec::new();
        for (((name, _), share), clock) in agents.iter().zip(shares).zip(clocks) {
            let work = Work {
                run: run.clone(),
                agent: name.clone(),
                issued: now_unix() + clock.offset,
                args: self.args.clone(),
                share: share.clone(),
                start_at: start + clock.offset,
            };
            let answer = self.ask(&client, name, &Message::Work(work)).await;
            let refused = match answer {
                Ok(Message::Accepted { .. }) => None,
                Ok(Message::Refused { reason, .. }) => Some(reason),
                Ok(other) => Some(format!("answered {other:?}")),
                Err(e) => Some(e),
            };
            if let Some(reason) = refused {
                let stop = wire::seal(token, &Message::Stop { run: run.clone() });
                let _ = client.publish(wire::stop_subject(&run), stop.into()).await;
                let _ = client.flush().await;
                return Err(format!("agent {name} refused the work: {reason}"));
            }
            rows.push(AgentRow {
                name: name.clone(),
                share,
                clock,
                start: None,
                report: None,
                udp: None,
                failed: None,
            });
        }
        log::info!(
            "fleet run {run}: {} agent(s), start at {start:.3}",
            rows.len()
        );
        let collect = Collect::new(&client, token, run, rows, self.on_loss, uncertainty_s);
        Ok(collect.run(events, stop, progress).await)
    }

    /// The agents to drive, with their weights, ordered by name.
    async fn find(&self, client: &async_nats::Client) -> Result<Vec<(String, u32)>, String> {
        let token = self.broker.token.as_ref();
        let inbox = client.new_inbox();
        let mut answers = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| format!("cannot subscribe: {e}"))?;
        let deadline = Instant::now() + self.find_for;
        let mut idle: Vec<String> = Vec::new();
        let mut busy: Vec<String> = Vec::new();
        let enough = |idle: &[String]| match &self.wanted {
            Wanted::Count(n) => idle.len() >= *n,
            Wanted::Named(names) => names.iter().all(|(n, _)| idle.contains(n)),
        };
        while !enough(&idle) && Instant::now() < deadline {
            let ask = wire::seal(token, &Message::Discover);
            client
                .publish_with_reply(wire::discover_subject(), inbox.clone(), ask.into())
                .await
                .map_err(|e| format!("cannot publish: {e}"))?;
            let round = tokio::time::sleep(Duration::from_millis(500));
            tokio::pin!(round);
            loop {
                tokio::select! {
                    Some(msg) = next(&mut answers) => match wire::open(token, &msg.payload) {
                        Ok(Message::Hello { agent, busy: false }) if !idle.contains(&agent) => idle.push(agent),
                        Ok(Message::Hello { agent, busy: true }) if !busy.contains(&agent) => busy.push(agent),
                        Ok(_) => {}
                        Err(e) => log::warn!("fleet: ignored an answer on {}: {e}", msg.subject),
                    },
                    () = &mut round => break,
                }
            }
        }
        idle.sort();
        match &self.wanted {
            Wanted::Count(n) if idle.len() >= *n => {
                Ok(idle.into_iter().take(*n).map(|a| (a, 1)).collect())
            }
            Wanted::Named(names) if names.iter().all(|(n, _)| idle.contains(n)) => {
                Ok(names.clone())
            }
            wanted => {
                let want = match wanted {
                    Wanted::Count(n) => format!("{n} agent(s)"),
                    Wanted::Named(names) => names
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                };
                Err(format!(
                    "found {} idle agent(s) on {} within {:.0} s ({}{}), wanted {want}",
                    idle.len(),
                    self.broker.url,
                    self.find_for.as_secs_f64(),
                    if idle.is_empty() {
                        "none".into()
                    } else {
                        idle.join(", ")
                    },
                    if busy.is_empty() {
                        String::new()
                    } else {
                        format!("; busy: {}", busy.join(", "))
                    },
                ))
            }
        }
    }

    /// An agent's clock, from [`SAMPLES`] round trips.
    async fn clock(&self, client: &async_nats::Client, agent: &str) -> Result<Clock, String> {
        let mut samples = Vec::new();
        for _ in 0..SAMPLES {
            let t0 = now_unix();
            if let Ok(Message::Pong { t0: back, at }) =
                self.ask(client, agent, &Message::Ping { t0 }).await
                && back == t0
            {
                samples.push(Sample {
                    t0,
                    at,
                    t3: now_unix(),
                });
            }
        }
        Clock::estimate(&samples)
            .ok_or_else(|| format!("agent {agent} did not answer its clock samples"))
    }

    /// Sends `message` to `agent` and awaits its answer.
    async fn ask(
        &self,
        client: &async_nats::Client,
        agent: &str,
        message: &Message,
    ) -> Result<Message, String> {
        let token = self.broker.token.as_ref();
        let request = client.request(
            wire::agent_subject(agent),
            wire::seal(token, message).into(),
        );
        let reply = tokio::time::timeout(ANSWER, request)
            .await
            .map_err(|_| format!("agent {agent} did not answer within {} s", ANSWER.as_secs()))?
            .map_err(|e| format!("agent {agent}: {e}"))?;
        wire::open(token, &reply.payload).map_err(|e| format!("agent {agent} answered {e}"))
    }
}

/// A run's id: 64 random bits in hex.
fn run_id() -> String {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .is_err()
    {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = (nanos as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
