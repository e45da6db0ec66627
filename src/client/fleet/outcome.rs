//! What a fleet run gave: each agent's row, the agents lost, and the progress shown while it
//! ran.

use super::clock::Clock;
use super::wire::Share;
use crate::client::bench::Report;
use crate::client::bench::udp::UdpReport;

/// `--on-agent-loss`: what a lost agent does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnLoss {
    /// The others go on; the report is partial.
    #[default]
    Continue,
    /// Every agent is stopped; the report of what was measured is partial.
    Abort,
}

/// One agent of a fleet run.
#[derive(Debug, Clone)]
pub struct AgentRow {
    /// Its name.
    pub name: String,
    /// Its part of the work.
    pub share: Share,
    /// Its clock against the coordinator's.
    pub clock: Clock,
    /// When its window started, in the coordinator's clock.
    pub start: Option<f64>,
    /// Its own report, its times in the coordinator's clock.
    pub report: Option<Report>,
    /// Its own report of a `--udp` run, its start in the coordinator's clock.
    pub udp: Option<UdpReport>,
    /// Why it has no report, if it has none.
    pub failed: Option<String>,
}

/// An agent that stopped ticking mid-run.
#[derive(Debug, Clone, PartialEq)]
pub struct Lost {
    /// Its name.
    pub agent: String,
    /// The seconds of the window its ticks covered (left out of the totals).
    pub seconds: u64,
}

/// The fleet now, for a progress line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetProgress {
    /// Agents running.
    pub agents: usize,
    /// Agents lost.
    pub lost: usize,
    /// Some agent is still connecting or waiting for the start.
    pub connecting: bool,
    /// Replies per second over the fleet, lately.
    pub msgs_per_sec: f64,
    /// Measured messages so far.
    pub messages: u64,
    /// Errors so far.
    pub errors: u64,
    /// The fleet's median latency so far (µs): of all its replies, exactly.
    pub p50_us: u64,
    /// Its 99th percentile (µs).
    pub p99_us: u64,
}

/// What a fleet run gave.
#[derive(Debug, Clone)]
pub struct FleetRun {
    /// The run's id.
    pub run: String,
    /// Every agent's row.
    pub agents: Vec<AgentRow>,
    /// The agents lost mid-run.
    pub lost: Vec<Lost>,
    /// The largest clock uncertainty (half the shortest round trip), seconds.
    pub uncertainty_s: f64,
    /// Stopped on an agent's loss (`--on-agent-loss abort`) or by the user.
    pub stopped: bool,
}

impl FleetRun {
    /// The spread of the agents' starts in the coordinator's clock (seconds): what the
    /// scheduling left.
    pub fn skew_s(&self) -> Option<f64> {
        let starts: Vec<f64> = self.agents.iter().filter_map(|a| a.start).collect();
        let min = starts.iter().copied().reduce(f64::min)?;
        let max = starts.iter().copied().reduce(f64::max)?;
        Some(max - min)
    }

    /// The agents' reports, each named `agent NAME`, for [`merge`](crate::client::bench::merge).
    pub fn reports(&self) -> Vec<(String, Report)> {
        self.agents
            .iter()
            .filter_map(|a| Some((format!("agent {}", a.name), a.report.clone()?)))
            .collect()
    }

    /// The agents' reports of a `--udp` run, each named `agent NAME`, for
    /// [`UdpReport::merge`].
    pub fn udp_reports(&self) -> Vec<(String, UdpReport)> {
        self.agents
            .iter()
            .filter_map(|a| Some((format!("agent {}", a.name), a.udp.clone()?)))
            .collect()
    }
}
