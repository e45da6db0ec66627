//! Pictures of runs: one SVG with the latency by percentile (the percentile axis on a log
//! scale, as HdrHistogram's own plotter draws it: 90 %, 99 %, 99.9 % equally spaced), and
//! throughput and p99 second by second, one curve per run in each. Drawn by `plotters` with
//! its SVG backend: no browser, no system library.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::Report;

/// The picture's size in pixels.
const SIZE: (u32, u32) = (900, 1000);

/// The percentile axis ends at this many nines at most (99.9999 %).
const MAX_NINES: i32 = 6;

/// Draws `runs` (each named, for the legend) as one SVG document.
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
    if runs.is_empty() {
        return Err("nothing to plot".into());
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let panels = root.split_evenly((3, 1));
        percentiles(&panels[0], runs).map_err(|e| format!("cannot draw: {e}"))?;
        per_second(
            &panels[1],
            runs,
            "Throughput per second",
            "msg/s",
            |r, i| {
                let len = second_length(r, i);
                (len > 0.0).then(|| r.timeline[i].messages as f64 / len)
            },
        )
        .map_err(|e| format!("cannot draw: {e}"))?;
        per_second(&panels[2], runs, "p99 latency per second", "ms", |r, i| {
            let s = &r.timeline[i];
            (s.messages > 0).then(|| s.p99_us as f64 / 1e3)
        })
        .map_err(|e| format!("cannot draw: {e}"))?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

/// How much of second `i` was inside the window (the last one may be partial).
fn second_length(r: &Report, i: usize) -> f64 {
    (r.duration_s - i as f64).clamp(0.0, 1.0)
}

/// `1 / (1 - q)`: 10 for p90, 100 for p99, ..., so that each nine is one decade.
fn nines(q: f64) -> f64 {
    1.0 / (1.0 - q).max(10f64.powi(-MAX_NINES))
}

fn percentiles(area: &Area<'_>, runs: &[(String, &Report)]) -> Drawn {
    let curves: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|(_, r)| {
            let h = r.latency_histogram();
            h.iter_quantiles(5)
                .map(|v| {
                    (
                        nines(v.quantile_iterated_to()),
                        v.value_iterated_to() as f64 / 1e3,
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
    let y_max = curves.iter().flatten().map(|p| p.1).fold(0.001, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(area)
        .caption("Latency by percentile", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d((1.0..10f64.powf(x_max)).log_scale(), 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .x_label_formatter(&|x| format!("{}%", trim(100.0 * (1.0 - 1.0 / x))))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()?;
    for (i, ((name, _), curve)) in runs.iter().zip(curves).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(curve, color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn per_second(
    area: &Area<'_>,
    runs: &[(String, &Report)],
    caption: &str,
    unit: &str,
    value: impl Fn(&Report, usize) -> Option<f64>,
) -> Drawn {
    let curves: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|(_, r)| {
            (0..r.timeline.len())
                .filter_map(|i| value(r, i).map(|v| (i as f64 + 0.5, v)))
                .collect()
        })
        .collect();
    let x_max = runs
        .iter()
        .map(|(_, r)| r.timeline.len())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let y_max = curves.iter().flatten().map(|p| p.1).fold(0.001, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("second of the measured window")
        .y_desc(unit)
        .y_label_formatter(&|v| {
            if *v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        })
        .draw()?;
    for (i, curve) in curves.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart.draw_series(LineSeries::new(curve, color.stroke_width(2)))?;
    }
    Ok(())
}

/// A percentage without trailing zeros: `99.9`, `90`.
fn trim(p: f64) -> String {
    let s = format!("{p:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
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
}
