//! Printing a bench report to stdout, as text or as one JSON line: for a run, and for
//! `bench merge`.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;

use tcpool::client::bench::thresholds::{Figures, Threshold};
use tcpool::client::bench::{Report, ServerView};

/// Prints `report` (as text, or one JSON line); exit code 1 when it counted any error.
pub(crate) fn print(report: &Report, json: bool) -> anyhow::Result<ExitCode> {
    print_with(report, None, json)
}

/// [`print`], with the server's view (`--server-metrics`): a `Server` block after the report,
/// or a `server` object in the JSON.
pub(crate) fn print_with(
    report: &Report,
    server: Option<&ServerView>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    print_extra(report, server, json, None)
}

/// [`print_with`], and one more key in the JSON (`fleet`: the fleet's agents).
pub(crate) fn print_extra(
    report: &Report,
    server: Option<&ServerView>,
    json: bool,
    extra: Option<(&str, serde_json::Value)>,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let printed = if json {
        let mut value = serde_json::to_value(report).context("cannot encode the report")?;
        if let (Some(server), Some(object)) = (server, value.as_object_mut()) {
            let server = serde_json::to_value(server).context("cannot encode the report")?;
            object.insert("server".into(), server);
        }
        if let (Some((key, extra)), Some(object)) = (extra, value.as_object_mut()) {
            object.insert(key.into(), extra);
        }
        writeln!(out, "{value}")
    } else {
        match server {
            Some(server) => write!(out, "{report}\n{server}"),
            None => write!(out, "{report}"),
        }
    };
    // A closed stdout (`| head`) is not the benchmark's failure; any other write error (a
    // full disk) lost the report, and is.
    match printed.and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            log::debug!("cannot print the report: error={e}");
        }
        Err(e) => return Err(e).context("cannot write the report to stdout"),
        Ok(()) => {}
    }
    Ok(if report.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The exit code of a run that failed a `--fail-if` threshold.
pub(crate) const THRESHOLD_FAILED: u8 = 3;

/// `--fail-if` on any report's figures (a TCP or a UDP one).
pub(crate) fn judge_figures(
    list: Option<&[Threshold]>,
    figures: Figures<'_>,
    code: ExitCode,
) -> ExitCode {
    let Some(list) = list else {
        return code;
    };
    let mut failed = false;
    for verdict in list.iter().map(|t| t.judge(figures.clone())) {
        failed |= !verdict.passed;
        eprintln!("threshold {verdict}");
    }
    if failed {
        ExitCode::from(THRESHOLD_FAILED)
    } else {
        code
    }
}
