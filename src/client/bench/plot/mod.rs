//! Pictures of runs: one SVG with a title line per run, the latency by percentile (the
//! percentile axis on a log scale, as HdrHistogram's own plotter draws it: 90 %, 99 %,
//! 99.9 % equally spaced; the latency axis on a log scale too, so a p50 of 37 µs and one of
//! 97 µs stand apart under a tail of milliseconds), and throughput and p99 second by second.
//! One colour per run, from a palette that colour-blind readers tell apart (Okabe and Ito's).
//! Drawn by `plotters` with its SVG backend: no browser, no system library.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{Report, Second};

mod udp;

pub use udp::plot_udp;

/// What a panel reads of a run: its title line, its whole histogram and its seconds.
trait Run {
    /// `NAME: TARGET, the load: what it measured`.
    fn title(&self, name: &str) -> String;
    /// Every latency (or round trip) of the run, in µs.
    fn histogram(&self) -> hdrhistogram::Histogram<u64>;
    /// One entry a second of the window.
    fn timeline(&self) -> &[Second];
    /// The measured span, in seconds.
    fn duration_s(&self) -> f64;
}

impl Run for Report {
    fn title(&self, name: &str) -> String {
        title(name, self)
    }
    fn histogram(&self) -> hdrhistogram::Histogram<u64> {
        self.latency_histogram().clone()
    }
    fn timeline(&self) -> &[Second] {
        &self.timeline
    }
    fn duration_s(&self) -> f64 {
        self.duration_s
    }
}

/// A run as the panels take it.
type Runs<'a> = [(String, &'a dyn Run)];

/// The picture's width, and the height of its three panels, in pixels.
const WIDTH: u32 = 960;
const PANELS: u32 = 1000;
/// The height of one run's title line.
const LINE: u32 = 22;

/// The percentile axis ends at this many nines at most (99.9999 %).
const MAX_NINES: i32 = 6;

/// Okabe and Ito's colours for colour-blind readers, without the yellow that white hides.
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Draws `runs` (each named, for its title line) as one SVG document.
///
/// # Errors
///
/// No runs, or a drawing error, said in words.
///
/// # Examples
///
/// ```
/// use tcpool::client::bench::{self, Limit, Options};
/// # use std::sync::atomic::AtomicBool;
/// # use tcpool::server::{bind, Config, Server};
/// # let server = Server::new(bind("127.0.0.1:0".parse()?)?, Config::default());
/// # let addr = server.local_addr()?;
/// # let shutdown = server.shutdown();
/// # let running = std::thread::spawn(move || server.run());
/// let options = Options { addrs: vec![addr], connections: 2, limit: Limit::Messages(100), ..Options::default() };
/// let report = bench::run(&options, &AtomicBool::new(false), None)?;
/// let svg = bench::plot(&[("run".to_owned(), &report)])?;
/// assert!(svg.starts_with("<svg") && svg.contains("run"));
/// # shutdown.trigger();
/// # running.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn plot(runs: &[(String, &Report)]) -> Result<String, String> {
    let runs: Vec<(String, &dyn Run)> = runs
        .iter()
        .map(|(n, r)| (n.clone(), *r as &dyn Run))
        .collect();
    let throughput = |r: &dyn Run, i: usize| {
        let len = second_length(r, i);
        (len > 0.0).then(|| r.timeline()[i].messages as f64 / len)
    };
    let p99 = |r: &dyn Run, i: usize| {
        let s = &r.timeline()[i];
        (s.messages > 0).then_some(s.p99_us as f64)
    };
    draw(
        &runs,
        "Latency by percentile",
        [
            ("Throughput per second", Unit::Rate, &[&throughput]),
            ("p99 latency per second", Unit::Micros, &[&p99]),
        ],
    )
}

/// A value of a run's second `i`, if that second has one.
type Value<'a> = &'a dyn Fn(&dyn Run, usize) -> Option<f64>;

/// The picture: title lines, the histogram by percentile under `caption`, and two panels of
/// seconds, each with its caption, its unit and its curves (the first drawn thick).
fn draw(
    runs: &Runs<'_>,
    caption: &str,
    panels: [(&str, Unit, &[Value<'_>]); 2],
) -> Result<String, String> {
    if runs.is_empty() {
        return Err("nothing to plot".into());
    }
    let header = 12 + LINE * runs.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, header + PANELS)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, bottom) = root.split_vertically(header);
        titles(&top, runs).map_err(|e| format!("cannot draw: {e}"))?;
        let areas = bottom.split_evenly((3, 1));
        percentiles(&areas[0], runs, caption).map_err(|e| format!("cannot draw: {e}"))?;
        for (area, (caption, unit, values)) in areas[1..].iter().zip(panels) {
            per_second(area, runs, caption, unit, values)
                .map_err(|e| format!("cannot draw: {e}"))?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

/// One line per run, in its colour: its name, the target and the load, what it measured.
fn titles(area: &Area<'_>, runs: &Runs<'_>) -> Drawn {
    for (i, (name, r)) in runs.iter().enumerate() {
        let y = 8 + LINE as i32 * i as i32;
        area.draw(&Rectangle::new(
            [(10, y + 3), (34, y + 15)],
            color(i).filled(),
        ))?;
        area.draw(&Text::new(
            r.title(name),
            (42, y),
            ("sans-serif", 15).into_font().color(&BLACK),
        ))?;
    }
    Ok(())
}

/// `NAME: TARGET, 8 connections, pipeline 1: 62,345 msg/s, p50 37 µs, p99 3.1 ms`.
fn title(name: &str, r: &Report) -> String {
    let load = match r.rate {
        Some(rate) => format!("rate {}/s", thousands(rate)),
        None => format!("pipeline {}", r.pipeline),
    };
    let mut line = format!(
        "{name}: {}, {} connection{}, {load}: {} msg/s, p50 {}, p99 {}, p99.9 {}",
        r.target,
        thousands(r.connections as f64),
        if r.connections == 1 { "" } else { "s" },
        thousands(r.msgs_per_sec),
        micros(r.latency_us.p50 as f64),
        micros(r.latency_us.p99 as f64),
        micros(r.latency_us.p999 as f64),
    );
    if r.errors > 0 {
        let s = if r.errors == 1 { "" } else { "s" };
        line.push_str(&format!(", {} error{s}", thousands(r.errors as f64)));
    }
    super::error::clean(&line)
}

/// How much of second `i` was inside the window (the last one may be partial).
fn second_length(r: &dyn Run, i: usize) -> f64 {
    (r.duration_s() - i as f64).clamp(0.0, 1.0)
}

/// `1 / (1 - q)`: 10 for p90, 100 for p99, ..., so that each nine is one decade.
fn nines(q: f64) -> f64 {
    1.0 / (1.0 - q).max(10f64.powi(-MAX_NINES))
}

/// The percentiles marked on each curve, with their names.
const MARKED: [(f64, &str); 3] = [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")];

fn percentiles(area: &Area<'_>, runs: &Runs<'_>, caption: &str) -> Drawn {
    let histograms: Vec<_> = runs.iter().map(|(_, r)| r.histogram()).collect();
    let curves: Vec<Vec<(f64, f64)>> = histograms
        .iter()
        .map(|h| {
            h.iter_quantiles(5)
                .map(|v| {
                    (
                        nines(v.quantile_iterated_to()),
                        v.value_iterated_to().max(1) as f64,
                    )
                })
                .collect()
        })
        .collect();
    let x_max = curves
        .iter()
        .flatten()
        .map(|p| p.0)
        .fold(100.0, f64::max)
        .log10()
        .ceil();
    let (y_min, y_max) = decades(curves.iter().flatten().map(|p| p.1));
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (1.0..10f64.powf(x_max)).log_scale(),
            (y_min..y_max).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (log scale)")
        .x_label_formatter(&|x| format!("{}%", trim(100.0 * (1.0 - 1.0 / x))))
        .y_label_formatter(&|v| micros(*v))
        .draw()?;
    for (i, (h, curve)) in histograms.iter().zip(curves).enumerate() {
        let c = color(i);
        chart.draw_series(LineSeries::new(curve, c.stroke_width(2)))?;
        if h.is_empty() {
            continue;
        }
        chart.draw_series(MARKED.iter().map(|&(q, _)| {
            let at = (nines(q), h.value_at_quantile(q).max(1) as f64);
            Circle::new(at, 4, c.filled())
        }))?;
    }
    // The marked percentiles' names, along the top of the panel.
    for (q, name) in MARKED {
        if nines(q) < 10f64.powf(x_max) {
            chart.draw_series(std::iter::once(Text::new(
                name,
                (nines(q), y_max / 1.6),
                ("sans-serif", 13).into_font().color(&BLACK.mix(0.7)),
            )))?;
        }
    }
    Ok(())
}

/// Where a value is shown as a rate or as a latency.
#[derive(Clone, Copy)]
enum Unit {
    /// Messages a second, with thousands separators.
    Rate,
    /// A latency given in microseconds, shown in µs, ms or s.
    Micros,
    /// A count of things (datagrams lost).
    Count,
}

/// One curve of a panel of seconds: its run, whether it is drawn thick, its points.
type Curve = (usize, bool, Vec<(f64, f64)>);

fn per_second(
    area: &Area<'_>,
    runs: &Runs<'_>,
    caption: &str,
    unit: Unit,
    values: &[Value<'_>],
) -> Drawn {
    let curves: Vec<Curve> = runs
        .iter()
        .enumerate()
        .flat_map(|(run, (_, r))| {
            values.iter().enumerate().map(move |(k, value)| {
                let points = (0..r.timeline().len())
                    .filter_map(|i| value(*r, i).map(|v| (i as f64 + 0.5, v)))
                    .collect();
                (run, k == 0, points)
            })
        })
        .collect();
    let x_max = runs
        .iter()
        .map(|(_, r)| r.timeline().len())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let y_max = curves
        .iter()
        .flat_map(|c| &c.2)
        .map(|p| p.1)
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("second of the measured window")
        .y_desc(match unit {
            Unit::Rate => "messages per second",
            Unit::Micros => "latency",
            Unit::Count => "datagrams",
        })
        .x_label_formatter(&|x| trim(*x))
        .y_label_formatter(&|v| match unit {
            Unit::Rate => thousands(*v),
            Unit::Micros => micros(*v),
            Unit::Count => trim_to(*v, 1),
        })
        .draw()?;
    for (run, thick, curve) in curves {
        let c = color(run);
        if !thick {
            chart.draw_series(
                curve
                    .iter()
                    .map(|&p| Circle::new(p, 2, c.mix(0.8).filled())),
            )?;
            chart.draw_series(LineSeries::new(curve, c.mix(0.8).stroke_width(1)))?;
            continue;
        }
        chart.draw_series(LineSeries::new(curve.clone(), c.stroke_width(2)))?;
        chart.draw_series(curve.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
        // Seconds with errors: a cross on the curve.
        if let Unit::Rate = unit {
            chart.draw_series(
                curve
                    .iter()
                    .zip(runs[run].1.timeline())
                    .filter(|(_, s)| s.errors > 0)
                    .map(|(&p, _)| Cross::new(p, 7, c.stroke_width(2))),
            )?;
        }
    }
    Ok(())
}

/// A log axis that spans whole decades around `values` (at least one).
fn decades(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, 1.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let lo = if lo.is_finite() { lo.max(1.0) } else { 1.0 };
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    (lo, hi)
}

/// A latency given in microseconds, in the unit that reads best: `37 µs`, `3.1 ms`, `2 s`.
fn micros(us: f64) -> String {
    if us < 1_000.0 {
        format!("{} µs", trim_to(us, 0))
    } else if us < 1_000_000.0 {
        format!("{} ms", trim_to(us / 1e3, 2))
    } else {
        format!("{} s", trim_to(us / 1e6, 2))
    }
}

/// A number with thousands separators: `1,400,000`.
fn thousands(n: f64) -> String {
    let whole = format!("{:.0}", n.max(0.0));
    let mut out = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` with at most `decimals` decimals, without trailing zeros.
fn trim_to(n: f64, decimals: usize) -> String {
    let s = format!("{n:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// A percentage without trailing zeros: `99.9`, `90`.
fn trim(p: f64) -> String {
    trim_to(p, 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_nine_is_one_decade() {
        assert!((nines(0.9) - 10.0).abs() < 1e-9);
        assert!((nines(0.999) - 1000.0).abs() < 1e-6);
        assert_eq!(nines(1.0), 1e6);
        assert_eq!(trim(99.9), "99.9");
        assert_eq!(trim(90.0), "90");
        assert_eq!(trim(0.0), "0");
    }

    #[test]
    fn labels_read_at_every_scale() {
        assert_eq!(micros(37.0), "37 µs");
        assert_eq!(micros(999.0), "999 µs");
        assert_eq!(micros(3_140.0), "3.14 ms");
        assert_eq!(micros(20_000.0), "20 ms");
        assert_eq!(micros(2_000_000.0), "2 s");
        assert_eq!(thousands(1_400_000.0), "1,400,000");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.4), "1,000");
        assert_eq!(decades([37.0, 97.0, 3_100.0].into_iter()), (10.0, 10_000.0));
        assert_eq!(decades(std::iter::empty()), (1.0, 10.0));
    }
}
