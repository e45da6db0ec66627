//! `tcpool bench merge` and `tcpool bench plot`: commands over the JSON reports that
//! `tcpool bench --json` wrote, one per generator.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use tcpool::client::bench::{self, Report};

/// `tcpool bench merge` flags.
#[derive(Debug, Args)]
#[command(after_help = super::examples(MERGE_EXAMPLES))]
pub(crate) struct MergeArgs {
    /// The reports to merge, each written by `tcpool bench --json`.
    #[arg(value_name = "REPORT.json", required = true)]
    files: Vec<PathBuf>,
    /// Print the merged report as one JSON object (the keys of one run's report).
    #[arg(long)]
    json: bool,
}

const MERGE_EXAMPLES: &str = "
  # Two generators on one 10 s window, then their exact sum
  at=$(( $(date +%s) + 3 ))
  tcpool bench -d 10s --start-at $at --json > a.json &
  tcpool bench -d 10s --start-at $at --json > b.json; wait
  tcpool bench merge a.json b.json
  # The merged report as JSON, for a script or for bench plot
  tcpool bench merge a.json b.json --json > merged.json
  # Every report in a directory, such as one from each machine
  tcpool bench merge reports/*.json";

/// The largest report `merge` and `plot` read (a run of days, second by second, is some tens
/// of MB).
const MAX_REPORT: u64 = 64 << 20;

/// Reads at most `cap` bytes of `path`; a longer input (`/dev/zero`) is an error naming it,
/// not a read without end.
pub(crate) fn read_capped(path: &Path, cap: u64) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let name = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {name}"))?;
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {name}"))?;
    if bytes.len() as u64 > cap {
        anyhow::bail!(
            "cannot read {name}: it is larger than {}",
            tcpool::units::show_size(cap)
        );
    }
    Ok(bytes)
}

/// Reads every report, naming the one that cannot be read.
pub(crate) fn read_reports(files: &[PathBuf]) -> anyhow::Result<Vec<(String, Report)>> {
    files
        .iter()
        .map(|path| {
            let name = path.display().to_string();
            let bytes = read_capped(path, MAX_REPORT)?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("{name} is not a tcpool bench --json report"))?;
            let report: Report = serde_json::from_str(&text)
                .with_context(|| format!("{name} is not a tcpool bench --json report"))?;
            Ok((name, report))
        })
        .collect()
}

/// Merges the reports and prints the result; exit 1 when any generator had errors.
pub(crate) fn merge(args: MergeArgs) -> anyhow::Result<ExitCode> {
    if let Some(reports) = udp_reports(&args.files)? {
        let merged = bench::udp::UdpReport::merge(&reports).map_err(anyhow::Error::msg)?;
        let text = if args.json {
            serde_json::to_string(&merged).context("cannot encode the report")? + "\n"
        } else {
            merged.to_string()
        };
        print_out(&text)?;
        return Ok(if merged.clean() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    if let Some(reports) = chat_reports(&args.files)? {
        let merged = bench::chat::ChatReport::merge(&reports).map_err(anyhow::Error::msg)?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&merged).context("cannot encode the report")?
            );
        } else {
            print!("{merged}");
        }
        return Ok(if merged.clean() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let mut reports = read_reports(&args.files)?;
    let merged = bench::merge(&mut reports).map_err(anyhow::Error::msg)?;
    if let Some(note) = merged.note() {
        eprintln!("note: {note}");
    }
    if let Some(warning) = merged.warning() {
        eprintln!("warning: {warning}");
    }
    super::report_out::print(&merged.report, args.json)
}

/// The reports, if they are all `bench --chat` reports (they carry `chat_protocol`); `None`
/// if none is; an error for a mix of the two kinds.
fn chat_reports(files: &[PathBuf]) -> anyhow::Result<Option<Vec<bench::chat::ChatReport>>> {
    let mut chat = Vec::new();
    for path in files {
        let name = path.display();
        let bytes = read_capped(path, MAX_REPORT)?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{name} is not a tcpool bench --json report"))?;
        if value.get("chat_protocol").is_some() {
            chat.push(
                serde_json::from_value(value)
                    .with_context(|| format!("{name} is not a tcpool bench --chat report"))?,
            );
        }
    }
    match chat.len() {
        0 => Ok(None),
        n if n == files.len() => Ok(Some(chat)),
        _ => anyhow::bail!("chat reports and request/reply reports cannot be merged together"),
    }
}

/// Prints `text` on stdout; a reader that went away (`| head`) is not an error.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write the report to stdout")
        }
        _ => Ok(()),
    }
}

/// The reports, each named by its file, if they are all `bench --udp` reports (`transport`
/// `udp`); `None` if none is; an error naming both kinds for a mix.
fn udp_reports(files: &[PathBuf]) -> anyhow::Result<Option<Vec<(String, bench::udp::UdpReport)>>> {
    let (mut udp, mut other) = (Vec::new(), None);
    for path in files {
        let name = path.display().to_string();
        let bytes = read_capped(path, MAX_REPORT)?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{name} is not a tcpool bench --json report"))?;
        if value.get("transport").and_then(|t| t.as_str()) == Some("udp") {
            let report = serde_json::from_value(value)
                .with_context(|| format!("{name} is not a tcpool bench --udp report"))?;
            udp.push((name, report));
        } else if other.is_none() {
            other = Some(name);
        }
    }
    match (udp.first(), other) {
        (None, _) => Ok(None),
        (Some(_), None) => Ok(Some(udp)),
        (Some((first, _)), Some(other)) => anyhow::bail!(
            "{first} is a UDP report and {other} is not: datagrams and TCP messages cannot be \
             merged or drawn together"
        ),
    }
}

/// `tcpool bench plot` flags.
#[derive(Debug, Args)]
#[command(after_help = super::examples(PLOT_EXAMPLES))]
pub(crate) struct PlotArgs {
    /// The reports to draw, each written by `tcpool bench --json` (or `bench merge --json`).
    #[arg(value_name = "REPORT.json", required = true)]
    files: Vec<PathBuf>,
    /// Where to write the SVG.
    #[arg(short = 'o', long, value_name = "FILE.svg")]
    output: PathBuf,
}

const PLOT_EXAMPLES: &str = "
  # Two saved runs in one picture, one curve each
  tcpool bench -d 5s --json > one.json
  tcpool bench -d 5s --pipeline 16 --json > sixteen.json
  tcpool bench plot one.json sixteen.json -o runs.svg
  # A merged report beside one of its generators
  tcpool bench plot merged.json a.json -o merged.svg
  # A run drawn as soon as it ends, without saving its report
  tcpool bench -d 5s --plot run.svg";

/// Draws the reports, one curve each, into one SVG file.
pub(crate) fn plot(args: PlotArgs) -> anyhow::Result<ExitCode> {
    if let Some(reports) = udp_reports(&args.files)? {
        let runs: Vec<_> = reports.iter().map(|(n, r)| (n.clone(), r)).collect();
        let svg = bench::plot_udp(&runs).map_err(anyhow::Error::msg)?;
        std::fs::write(&args.output, svg)
            .with_context(|| format!("cannot write {}", args.output.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let reports = read_reports(&args.files)?;
    let runs: Vec<(String, &Report)> = reports.iter().map(|(n, r)| (n.clone(), r)).collect();
    write_plot(&runs, &args.output)?;
    Ok(ExitCode::SUCCESS)
}

/// Draws `runs` into `path`.
fn write_plot(runs: &[(String, &Report)], path: &Path) -> anyhow::Result<()> {
    let svg = bench::plot(runs).map_err(anyhow::Error::msg)?;
    std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))
}
