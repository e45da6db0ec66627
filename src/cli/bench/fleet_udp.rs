//! `tcpool bench --udp --fleet`: the agents share the sockets, datagrams and rate as they
//! would connections, messages and rate, each runs its UDP load, and their reports are merged
//! as `bench merge` merges UDP reports.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Context as _;

use tcpool::client::bench::udp::{UdpLimit, UdpReport};

use super::fleet::{AGENT_LOST, Share, agent_failures, drive, fleet_json, print_fleet};
use super::{RunArgs, STOP};
use crate::cli::bench_udp::{self, Common};

/// Drives the fleet for a `--udp` run and prints the merged report.
pub(super) fn coordinate(args: &RunArgs, common: &Common<'_>) -> anyhow::Result<ExitCode> {
    let options = bench_udp::options(&args.udp, common)
        .unwrap_or_else(|e| super::super::bad_value("bench", format!("{e:#}")));
    let run = drive(
        args,
        Share {
            connections: options.sockets,
            messages: match options.limit {
                UdpLimit::Datagrams(n) => Some(n),
                UdpLimit::Duration(_) => None,
            },
            rate: options.rate,
            window: match options.limit {
                UdpLimit::Duration(d) => Some(d),
                UdpLimit::Datagrams(_) => None,
            },
        },
    )?;
    let reports = run.udp_reports();
    if reports.is_empty() {
        anyhow::bail!("no agent sent a UDP report: {}", agent_failures(&run));
    }
    let merged = UdpReport::merge(&reports).map_err(anyhow::Error::msg)?;
    bench_udp::write_files(common, &merged)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut value = serde_json::to_value(&merged).context("cannot encode the report")?;
        value["fleet"] = fleet_json(&run);
        writeln!(out, "{value}")?;
    } else {
        write!(out, "{merged}")?;
        drop(out);
        print_fleet(&run)?;
    }
    let code = if !merged.clean() {
        ExitCode::from(1)
    } else if !run.lost.is_empty() {
        ExitCode::from(AGENT_LOST)
    } else {
        ExitCode::SUCCESS
    };
    let code = crate::cli::report_out::judge_figures(common.fail_if, (&merged).into(), code);
    Ok(if STOP.load(Ordering::SeqCst) {
        ExitCode::from(130)
    } else {
        code
    })
}
