//! Reports of simulation runs (`simulate --report DIR`): every run's summary as JSON and
//! CSV, a CSV of the sweep's points (mean and standard deviation over seeds), and SVG
//! plots drawn with plotters: propagation over nodes, stale rate against the swept
//! parameter beside Decker and Wattenhofer's relation, a selfish pool's revenue against
//! its share beside Eyal and Sirer's curve, and both halves' heights through a partition.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde_json::{Value, json};

use crate::scenario::Published;
use crate::sim::{self, Series};

/// One finished run (or one whose invariant broke).
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The swept flags' values of this run (`name`, raw value).
    pub point: Vec<(String, String)>,
    /// The run's seed.
    pub seed: u64,
    /// Its summary (as `simulate` prints it).
    pub summary: Value,
    /// Its curves (none for a run that failed).
    pub series: Option<Series>,
    /// What broke, for a run that failed.
    pub error: Option<String>,
}

/// The figures of a run the CSV files and plots use, by column name.
const COLUMNS: [&str; 17] = [
    "mined",
    "in_final_chain",
    "stale_rate",
    "to_50pct_p50_s",
    "to_90pct_p50_s",
    "to_100pct_p50_s",
    "mean_delay_s",
    "block_interval_s",
    "theory_stale_rate",
    "reorgs",
    "bytes_per_node_per_mined_block",
    "alpha",
    "relative_revenue",
    "theory_gamma_0",
    "gamma_measured",
    "theory_at_measured_gamma",
    "honest_stale_rate",
];

/// Decker and Wattenhofer's relation: a block meets a rival when another is found while
/// it propagates, so with hash power spread over the nodes and a mean delay to a node of
/// `delay` seconds, a block forks with probability p = 1 - e^(-delay/interval). Each fork
/// leaves one of its two blocks stale, so of the blocks mined (the chain's and the stale
/// ones) a share p / (1 + p) is stale.
pub fn theory_stale_rate(delay: f64, interval: f64) -> f64 {
    let p = 1.0 - (-delay / interval).exp();
    p / (1.0 + p)
}

impl Outcome {
    /// The run's figures, by [`COLUMNS`] name (absent ones are missing).
    fn figures(&self) -> BTreeMap<&'static str, f64> {
        let s = &self.summary;
        let get = |path: &[&str]| {
            path.iter()
                .try_fold(s, |v, k| v.get(*k))
                .and_then(Value::as_f64)
        };
        let mut f = BTreeMap::new();
        let mut put = |k: &'static str, v: Option<f64>| {
            if let Some(v) = v {
                f.insert(k, v);
            }
        };
        put("mined", get(&["blocks", "mined"]));
        put("in_final_chain", get(&["blocks", "in_final_chain"]));
        put("stale_rate", get(&["blocks", "stale_rate"]));
        put("to_50pct_p50_s", get(&["propagation_s", "to_50pct", "p50"]));
        put("to_90pct_p50_s", get(&["propagation_s", "to_90pct", "p50"]));
        put(
            "to_100pct_p50_s",
            get(&["propagation_s", "to_100pct", "p50"]),
        );
        let delay = get(&["propagation_s", "mean_delay"]);
        let interval = get(&["options", "block_interval_s"]);
        put("mean_delay_s", delay);
        put("block_interval_s", interval);
        if let (Some(d), Some(t)) = (delay, interval.filter(|t| *t > 0.0)) {
            put("theory_stale_rate", Some(theory_stale_rate(d, t)));
        }
        put("reorgs", get(&["reorgs", "count"]));
        put(
            "bytes_per_node_per_mined_block",
            get(&["traffic_per_node_per_mined_block", "bytes"]),
        );
        put("alpha", get(&["selfish", "alpha"]));
        put("relative_revenue", get(&["selfish", "relative_revenue"]));
        put("theory_gamma_0", get(&["selfish", "theory_gamma_0"]));
        put("gamma_measured", get(&["selfish", "gamma_measured"]));
        put(
            "theory_at_measured_gamma",
            get(&["selfish", "theory_at_measured_gamma"]),
        );
        put("honest_stale_rate", get(&["selfish", "honest_stale_rate"]));
        f
    }
}

/// Mean and (sample) standard deviation.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n.max(1.0);
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv_number(v: Option<f64>) -> String {
    v.map(|x| format!("{}", (x * 1e6).round() / 1e6))
        .unwrap_or_default()
}

/// A swept value as a number for a plot's axis: durations in seconds, sizes in bytes,
/// plain numbers as they are.
pub fn axis_value(name: &str, raw: &str) -> Option<f64> {
    match name {
        "block_interval" | "tick" | "settle" => {
            sim::parse_duration(raw).ok().map(|d| d.as_secs_f64())
        }
        "block_size" | "push_below" => sim::parse_size(raw).ok().map(|b| b as f64),
        "latency" => sim::parse_latency(raw)
            .ok()
            .map(|(lo, hi)| (lo.as_micros() + hi.as_micros()) as f64 / 2000.0),
        "bandwidth" => sim::parse_bandwidth(raw)
            .ok()
            .map(|(lo, hi)| (lo + hi) * 4e-6),
        _ => raw.parse().ok(),
    }
}

/// The published stale rate at a point whose first swept value is `raw`, if any: the
/// published figure at the same value (compared as numbers, so 60s matches 1m).
fn published_at(published: Option<&Published>, name: &str, raw: &str) -> Option<f64> {
    let p = published.filter(|p| p.flag == name)?;
    let x = axis_value(name, raw);
    p.at.iter()
        .position(|at| at == raw || (x.is_some() && axis_value(name, at) == x))
        .map(|i| p.stale_rate[i])
}

/// The unit a swept parameter's axis is drawn in.
fn axis_label(name: &str) -> String {
    match name {
        "block_interval" => "block interval (s)".into(),
        "block_size" => "block size (bytes)".into(),
        "latency" => "latency, middle of the range (ms)".into(),
        "bandwidth" => "bandwidth, middle of the range (Mbit/s)".into(),
        "selfish" => "pool's share of the hash power (alpha)".into(),
        other => other.replace('_', " "),
    }
}

/// A point of a sweep (the swept flags' values) with its runs.
type Point<'a> = (Vec<(String, String)>, Vec<&'a Outcome>);

/// The sweep's points in run order, each with its outcomes.
fn points(outcomes: &[Outcome]) -> Vec<Point<'_>> {
    let mut points: Vec<Point<'_>> = Vec::new();
    for o in outcomes {
        match points.iter_mut().find(|(p, _)| *p == o.point) {
            Some((_, v)) => v.push(o),
            None => points.push((o.point.clone(), vec![o])),
        }
    }
    points
}

/// Writes the report of `outcomes` (of a sweep over `swept`) into `dir`; returns the
/// files written.
pub fn write(
    dir: &Path,
    swept: &[String],
    outcomes: &[Outcome],
    published: Option<&Published>,
) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    let mut put = |name: &str, text: String| -> Result<(), String> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
        Ok(())
    };

    // Every run: JSON and CSV.
    let runs: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            json!({
                "point": o.point.iter().cloned().collect::<BTreeMap<_, _>>(),
                "seed": o.seed,
                "ok": o.error.is_none(),
                "error": o.error,
                "summary": o.summary,
            })
        })
        .collect();
    put(
        "runs.json",
        serde_json::to_string_pretty(&runs).map_err(|e| e.to_string())? + "\n",
    )?;
    let mut csv = String::new();
    let header: Vec<String> = swept
        .iter()
        .cloned()
        .chain(["seed".into(), "ok".into()])
        .chain(COLUMNS.iter().map(|c| (*c).to_owned()))
        .collect();
    csv += &(header.join(",") + "\n");
    for o in outcomes {
        let f = o.figures();
        let mut row: Vec<String> = swept
            .iter()
            .map(|s| {
                let v = o
                    .point
                    .iter()
                    .find(|(k, _)| k == s)
                    .map(|(_, v)| v.as_str());
                csv_field(v.unwrap_or_default())
            })
            .collect();
        row.push(o.seed.to_string());
        row.push(o.error.is_none().to_string());
        row.extend(COLUMNS.iter().map(|c| csv_number(f.get(c).copied())));
        csv += &(row.join(",") + "\n");
    }
    put("runs.csv", csv)?;

    // The sweep: one row per point, over the runs that held their invariants.
    let points = points(outcomes);
    let mut csv = String::new();
    let mut header: Vec<String> = swept.to_vec();
    header.extend(["runs".into(), "failed".into()]);
    for c in COLUMNS {
        header.push(format!("{c}_mean"));
        header.push(format!("{c}_sd"));
    }
    if published.is_some() {
        header.push("published_stale_rate".into());
    }
    csv += &(header.join(",") + "\n");
    for (point, runs) in &points {
        let mut row: Vec<String> = point.iter().map(|(_, v)| csv_field(v)).collect();
        let ok: Vec<BTreeMap<&str, f64>> = runs
            .iter()
            .filter(|o| o.error.is_none())
            .map(|o| o.figures())
            .collect();
        row.push(runs.len().to_string());
        row.push((runs.len() - ok.len()).to_string());
        for c in COLUMNS {
            let v: Vec<f64> = ok.iter().filter_map(|f| f.get(c).copied()).collect();
            let (m, sd) = mean_sd(&v);
            let (m, sd) = if v.is_empty() {
                (None, None)
            } else {
                (Some(m), Some(sd))
            };
            row.push(csv_number(m));
            row.push(csv_number(sd));
        }
        if published.is_some() {
            let at = point
                .first()
                .and_then(|(k, v)| published_at(published, k, v));
            row.push(csv_number(at));
        }
        csv += &(row.join(",") + "\n");
    }
    put("sweep.csv", csv)?;

    // Plots.
    put("propagation.svg", plot_propagation(&points)?)?;
    if let Some(first) = swept.first() {
        if first == "selfish" {
            put("revenue.svg", plot_revenue(&points)?)?;
        } else if points
            .iter()
            .all(|(p, _)| axis_value(first, &p[0].1).is_some())
        {
            put(
                "stale_rate.svg",
                plot_stale_rate(first, &points, published)?,
            )?;
        }
    }
    if let Some(o) = outcomes
        .iter()
        .find(|o| o.summary["options"]["partition"].is_object() && o.series.is_some())
    {
        put("heights.svg", plot_heights(o)?)?;
    }
    Ok(written)
}

/// The sweep's means and standard deviations over seeds as a text table, one line per
/// point (what `simulate --scenario` prints on stderr).
pub fn table(swept: &[String], outcomes: &[Outcome], published: Option<&Published>) -> String {
    let selfish = outcomes.iter().any(|o| o.summary.get("selfish").is_some());
    let columns: &[&str] = if selfish {
        &[
            "stale_rate",
            "to_90pct_p50_s",
            "relative_revenue",
            "theory_at_measured_gamma",
        ]
    } else {
        &[
            "stale_rate",
            "theory_stale_rate",
            "to_50pct_p50_s",
            "to_90pct_p50_s",
            "mean_delay_s",
        ]
    };
    let mut head: Vec<String> = swept.to_vec();
    head.push("runs".into());
    head.extend(columns.iter().map(|c| (*c).to_owned()));
    if published.is_some() {
        head.push("published_stale_rate".into());
    }
    let mut out = head.join(" | ") + "\n";
    for (point, runs) in points(outcomes) {
        let at = point
            .first()
            .and_then(|(k, v)| published_at(published, k, v));
        let mut row: Vec<String> = point.into_iter().map(|(_, v)| v).collect();
        row.push(runs.len().to_string());
        for c in columns {
            row.push(figure(&runs, c).map_or("-".into(), |(m, sd)| format!("{m:.3} ± {sd:.3}")));
        }
        if published.is_some() {
            row.push(at.map_or("-".into(), |r| format!("{r:.4}")));
        }
        out += &(row.join(" | ") + "\n");
    }
    out
}

type Points<'a> = [Point<'a>];

const SIZE: (u32, u32) = (800, 500);
const FONT: (&str, u32) = ("sans-serif", 20);
const LABELS: (&str, u32) = ("sans-serif", 15);

/// A chart of f64 against f64 (the x axis linear or logarithmic), as every plot here draws.
type Chart<'a, 'b, X = RangedCoordf64> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, RangedCoordf64>>;

/// Draws a chart's caption, axes and grid on `root`.
fn axes<'a, 'b, X>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: impl AsRef<str>,
    (x, y): (X, std::ops::Range<f64>),
    (x_desc, y_desc): (impl AsRef<str>, impl AsRef<str>),
) -> Result<Chart<'a, 'b, X::CoordDescType>, String>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    axes_with(root, caption, (x, y), (x_desc, y_desc), None)
}

/// [`axes`], with the x axis's tick labels from `x_ticks` and no finer grid when given
/// (a log axis: it labels every integer of a decade otherwise, and they run together).
fn axes_with<'a, 'b, X>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: impl AsRef<str>,
    (x, y): (X, std::ops::Range<f64>),
    (x_desc, y_desc): (impl AsRef<str>, impl AsRef<str>),
    x_ticks: Option<&dyn Fn(&f64) -> String>,
) -> Result<Chart<'a, 'b, X::CoordDescType>, String>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(caption, FONT)
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)
        .map_err(plot_err)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc.as_ref())
        .y_desc(y_desc.as_ref())
        .label_style(LABELS);
    if let Some(ticks) = x_ticks {
        mesh.x_label_formatter(ticks).light_line_style(TRANSPARENT);
    }
    mesh.draw().map_err(plot_err)?;
    Ok(chart)
}

/// Draws a chart's legend at `at`.
fn legend<'a, 'b: 'a, X: Ranged<ValueType = f64>>(
    chart: &mut Chart<'a, 'b, X>,
    at: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(LABELS)
        .draw()
        .map_err(plot_err)
}

fn label_of(point: &[(String, String)]) -> String {
    if point.is_empty() {
        return "run".into();
    }
    point
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plot_err<E: std::fmt::Debug>(e: E) -> String {
    format!("cannot draw a plot: {e:?}")
}

/// The share of nodes holding a block against the seconds since it was mined (median over
/// the final chain's blocks), for the first run of each point.
fn plot_propagation(points: &Points<'_>) -> Result<String, String> {
    let curves: Vec<(String, Vec<(f64, f64)>)> = points
        .iter()
        .filter_map(|(p, runs)| {
            let series = runs.iter().find_map(|o| o.series.as_ref())?;
            let n = series.propagation.len().max(1) as f64;
            let nodes = runs[0].summary["options"]["nodes"].as_f64().unwrap_or(n);
            let curve = series
                .propagation
                .iter()
                .enumerate()
                .map(|(k, t)| (*t, (k + 1) as f64 / nodes))
                .collect();
            Some((label_of(p), curve))
        })
        .collect();
    let max_t = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.0))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = axes(
            &root,
            "Propagation: share of nodes holding a block",
            (0.0..max_t, 0.0..1.0),
            (
                "seconds since the block was mined (median over blocks)",
                "share of nodes",
            ),
        )?;
        for (i, (label, curve)) in curves.into_iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(curve, color.stroke_width(2)))
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Mean and standard deviation of a figure over a point's good runs.
fn figure(runs: &[&Outcome], name: &str) -> Option<(f64, f64)> {
    let v: Vec<f64> = runs
        .iter()
        .filter(|o| o.error.is_none())
        .filter_map(|o| o.figures().get(name).copied())
        .collect();
    (!v.is_empty()).then(|| mean_sd(&v))
}

/// Stale rate measured against the swept parameter, beside 1 - e^(-t/T) from each
/// point's own mean delay, one colour per value of a second swept parameter, and the
/// published figures if the scenario gives them. The x axis is logarithmic when the swept
/// values span a factor of 20 or more.
fn plot_stale_rate(
    name: &str,
    points: &Points<'_>,
    published: Option<&Published>,
) -> Result<String, String> {
    let mut groups: Vec<StaleGroup> = Vec::new();
    for (p, runs) in points {
        let Some(x) = axis_value(name, &p[0].1) else {
            continue;
        };
        let (Some((m, sd)), Some((th, _))) = (
            figure(runs, "stale_rate"),
            figure(runs, "theory_stale_rate"),
        ) else {
            continue;
        };
        let group = label_of(&p[1..]);
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, v)) => v.push((x, m, sd, th)),
            None => groups.push((group, vec![(x, m, sd, th)])),
        }
    }
    let paper: Vec<(f64, f64)> = published
        .filter(|p| p.flag == name)
        .map(|p| {
            p.at.iter()
                .zip(&p.stale_rate)
                .filter_map(|(at, r)| Some((axis_value(name, at)?, *r)))
                .collect()
        })
        .unwrap_or_default();
    let xs = groups
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.0))
        .chain(paper.iter().map(|p| p.0));
    let (lo, hi) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo, hi) };
    let top = groups
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| (p.1 + p.2).max(p.3)))
        .chain(paper.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(0.01)
        * 1.15;
    let caption = "Stale rate: measured and from the run's own delays";
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let paper = published.map(|p| (p.label.as_str(), &paper[..]));
        if lo > 0.0 && hi / lo >= 20.0 {
            let label = format!("{} (log scale)", axis_label(name));
            let x = ((lo / 1.2)..(hi * 1.2)).log_scale();
            let ticks: &dyn Fn(&f64) -> String = &log_tick;
            let mut chart = axes_with(
                &root,
                caption,
                (x, 0.0..top),
                (label, "stale rate"),
                Some(ticks),
            )?;
            draw_stale_rate(&mut chart, groups, paper)?;
        } else {
            let pad = ((hi - lo) * 0.05).max(hi.abs() * 0.05).max(1e-9);
            let x = (lo - pad)..(hi + pad);
            let label = axis_label(name);
            let mut chart = axes(&root, caption, (x, 0.0..top), (label, "stale rate"))?;
            draw_stale_rate(&mut chart, groups, paper)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// A log axis's tick label: the value when it is 1, 2 or 5 times a power of ten, else
/// nothing.
fn log_tick(v: &f64) -> String {
    if !(v.is_finite() && *v > 0.0) {
        return String::new();
    }
    let decade = 10f64.powf(v.log10().floor());
    let m = v / decade;
    if [1.0, 2.0, 5.0].iter().any(|k| (m - k).abs() < 1e-6) {
        let text = format!("{:.3}", v);
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        String::new()
    }
}

/// A group of a stale-rate plot: its label and its points (x, measured mean, sd, theory).
type StaleGroup = (String, Vec<(f64, f64, f64, f64)>);

/// Draws a stale-rate plot's groups and the published points (their label and (x, rate))
/// on its chart, with the legend.
fn draw_stale_rate<'a, 'b: 'a, X: Ranged<ValueType = f64>>(
    chart: &mut Chart<'a, 'b, X>,
    groups: Vec<StaleGroup>,
    paper: Option<(&str, &[(f64, f64)])>,
) -> Result<(), String> {
    for (i, (group, v)) in groups.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let prefix = if group == "run" {
            String::new()
        } else {
            format!("{group}: ")
        };
        chart
            .draw_series(v.iter().map(|(x, m, sd, _)| {
                ErrorBar::new_vertical(*x, (m - sd).max(0.0), *m, m + sd, color.filled(), 8)
            }))
            .map_err(plot_err)?
            .label(format!("{prefix}measured (mean, sd over seeds)"))
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
        chart
            .draw_series(LineSeries::new(
                v.iter().map(|(x, _, _, th)| (*x, *th)),
                color.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(format!(
                "{prefix}p / (1 + p), p = 1 - exp(-mean delay / interval)"
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    if let Some((label, points)) = paper.filter(|(_, points)| !points.is_empty()) {
        chart
            .draw_series(
                points
                    .iter()
                    .map(|(x, r)| Cross::new((*x, *r), 6, BLACK.stroke_width(2))),
            )
            .map_err(plot_err)?
            .label(format!("published: {label}"))
            .legend(|(x, y)| Cross::new((x + 10, y), 5, BLACK.stroke_width(2)));
    }
    legend(chart, SeriesLabelPosition::UpperRight)
}

/// A selfish pool's relative revenue against its share, beside Eyal and Sirer's curves
/// (gamma 0 and 1/2) and the honest share (revenue = alpha).
fn plot_revenue(points: &Points<'_>) -> Result<String, String> {
    let measured: Vec<(f64, f64, f64)> = points
        .iter()
        .filter_map(|(p, runs)| {
            let alpha = axis_value("selfish", &p[0].1)?;
            let (m, sd) = figure(runs, "relative_revenue")?;
            Some((alpha, m, sd))
        })
        .collect();
    let curve = |gamma: f64| -> Vec<(f64, f64)> {
        (1..=49)
            .map(|i| {
                let a = f64::from(i) / 100.0;
                (a, sim::selfish_revenue(a, gamma).clamp(0.0, 1.0))
            })
            .collect()
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = axes(
            &root,
            "Selfish mining: the pool's share of the final chain",
            (0.0..0.5, 0.0..0.8),
            (axis_label("selfish"), "relative revenue"),
        )?;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 0.0), (0.5, 0.5)],
                BLACK.stroke_width(1),
            ))
            .map_err(plot_err)?
            .label("honest mining (revenue = alpha)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        for (gamma, color) in [(0.0, BLUE), (0.5, GREEN)] {
            chart
                .draw_series(LineSeries::new(curve(gamma), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(format!("Eyal and Sirer, gamma = {gamma}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .draw_series(
                measured.iter().map(|(a, m, sd)| {
                    ErrorBar::new_vertical(*a, m - sd, *m, m + sd, RED.filled(), 8)
                }),
            )
            .map_err(plot_err)?
            .label("powchain (mean, sd over seeds)")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, RED.filled()));
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// The highest height in each half of the network over time, through a partition.
fn plot_heights(o: &Outcome) -> Result<String, String> {
    let heights = o.series.as_ref().map_or(&[][..], |s| &s.heights[..]);
    let end = heights.last().map_or(1.0, |h| h.0).max(1.0);
    let top = heights
        .iter()
        .map(|h| h.1.max(h.2))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.05;
    let p = &o.summary["options"]["partition"];
    let at = p["at_s"].as_f64().unwrap_or(0.0);
    let until = at + p["lasting_s"].as_f64().unwrap_or(0.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = axes(
            &root,
            "Heights of both halves through the partition",
            (0.0..end, 0.0..top),
            ("simulated seconds", "highest height in the half"),
        )?;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(at, 0.0), (until, top)],
                BLACK.mix(0.08).filled(),
            )))
            .map_err(plot_err)?
            .label("partitioned")
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 20, y + 5)], BLACK.mix(0.2).filled())
            });
        for (half, color) in [(0usize, BLUE), (1, RED)] {
            let line = heights
                .iter()
                .map(|h| (h.0, if half == 0 { h.1 } else { h.2 } as f64));
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))
                .map_err(plot_err)?
                .label(if half == 0 {
                    "first half"
                } else {
                    "second half"
                })
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(alpha: &str, seed: u64, revenue: f64) -> Outcome {
        Outcome {
            point: vec![("selfish".into(), alpha.into())],
            seed,
            summary: json!({
                "options": {"nodes": 4, "block_interval_s": 2.0},
                "blocks": {"mined": 10, "in_final_chain": 9, "stale_rate": 0.1},
                "propagation_s": {"mean_delay": 0.05, "to_50pct": {"p50": 0.04}},
                "selfish": {"alpha": alpha.parse::<f64>().unwrap(), "relative_revenue": revenue},
            }),
            series: Some(Series {
                propagation: vec![0.0, 0.03, 0.05, 0.08],
                heights: vec![(5.0, 2, 2)],
            }),
            error: None,
        }
    }

    #[test]
    fn a_sweep_report_has_its_files_and_means() {
        let dir = tempfile::tempdir().unwrap();
        let runs = [
            outcome("0.25", 1, 0.2),
            outcome("0.25", 2, 0.3),
            outcome("0.4", 1, 0.5),
        ];
        let files = write(dir.path(), &["selfish".into()], &runs, None).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "runs.json",
                "runs.csv",
                "sweep.csv",
                "propagation.svg",
                "revenue.svg"
            ]
        );
        let sweep = std::fs::read_to_string(dir.path().join("sweep.csv")).unwrap();
        let lines: Vec<&str> = sweep.lines().collect();
        assert_eq!(lines.len(), 3);
        let header: Vec<&str> = lines[0].split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let row: Vec<&str> = lines[1].split(',').collect();
        assert_eq!((row[0], row[col("runs")]), ("0.25", "2"));
        assert_eq!(row[col("relative_revenue_mean")], "0.25");
        assert_eq!(row[col("relative_revenue_sd")], "0.070711");
        // p / (1 + p), p = 1 - e^(-0.05/2)
        assert_eq!(row[col("theory_stale_rate_mean")], "0.024095");
        let runs_json: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("runs.json")).unwrap())
                .unwrap();
        assert_eq!(runs_json.as_array().unwrap().len(), 3);
        let svg = std::fs::read_to_string(dir.path().join("revenue.svg")).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("Eyal and Sirer"),
            "{svg}"
        );
    }

    fn interval_run(interval: &str, secs: f64, stale: f64) -> Outcome {
        Outcome {
            point: vec![("block_interval".into(), interval.into())],
            seed: 1,
            summary: json!({
                "options": {"nodes": 4, "block_interval_s": secs},
                "blocks": {"mined": 100, "in_final_chain": 95, "stale_rate": stale},
                "propagation_s": {"mean_delay": 0.5, "to_50pct": {"p50": 0.4}},
            }),
            series: None,
            error: None,
        }
    }

    #[test]
    fn published_figures_stand_beside_the_measured_ones() {
        let dir = tempfile::tempdir().unwrap();
        let runs = [
            interval_run("10s", 10.0, 0.05),
            interval_run("60s", 60.0, 0.01),
            interval_run("10m", 600.0, 0.0),
        ];
        let published = Published {
            label: "a paper".into(),
            flag: "block_interval".into(),
            at: vec!["10s".into(), "1m".into()],
            stale_rate: vec![0.0477, 0.0215],
        };
        let swept = ["block_interval".to_owned()];
        write(dir.path(), &swept, &runs, Some(&published)).unwrap();
        let sweep = std::fs::read_to_string(dir.path().join("sweep.csv")).unwrap();
        let lines: Vec<Vec<&str>> = sweep.lines().map(|l| l.split(',').collect()).collect();
        let col = lines[0]
            .iter()
            .position(|h| *h == "published_stale_rate")
            .unwrap();
        // 60s is the paper's 1m; the paper gives nothing at 10m.
        let got: Vec<&str> = lines[1..].iter().map(|r| r[col]).collect();
        assert_eq!(got, ["0.0477", "0.0215", ""]);
        let table = table(&swept, &runs, Some(&published));
        assert!(
            table
                .lines()
                .next()
                .unwrap()
                .ends_with("published_stale_rate"),
            "{table}"
        );
        assert!(
            table.lines().nth(2).unwrap().ends_with("| 0.0215"),
            "{table}"
        );
        // 10 s to 10 min spans 60x: a logarithmic axis, the paper's points in the legend.
        let svg = std::fs::read_to_string(dir.path().join("stale_rate.svg")).unwrap();
        assert!(svg.contains("published: a paper"), "{svg}");
        assert!(svg.contains("block interval (s) (log scale)"), "{svg}");
        // Without published figures nothing of the kind appears.
        let plain = tempfile::tempdir().unwrap();
        write(plain.path(), &swept, &runs[..2], None).unwrap();
        let svg = std::fs::read_to_string(plain.path().join("stale_rate.svg")).unwrap();
        assert!(
            !svg.contains("published") && !svg.contains("log scale"),
            "{svg}"
        );
        let sweep = std::fs::read_to_string(plain.path().join("sweep.csv")).unwrap();
        assert!(!sweep.contains("published"));
    }

    #[test]
    fn log_ticks_label_one_two_and_five_of_a_decade() {
        let got: Vec<String> = [10.0, 20.0, 30.0, 50.0, 100.0, 0.5, 0.7, 600.0]
            .iter()
            .map(log_tick)
            .collect();
        assert_eq!(got, ["10", "20", "", "50", "100", "0.5", "", ""]);
    }

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        assert_eq!(csv_field("10ms..50ms"), "10ms..50ms");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
    }

    #[test]
    fn swept_values_become_axis_numbers() {
        assert_eq!(axis_value("block_interval", "2m"), Some(120.0));
        assert_eq!(axis_value("block_size", "1MB"), Some(1e6));
        assert_eq!(axis_value("latency", "10ms..50ms"), Some(30.0));
        assert_eq!(axis_value("selfish", "0.4"), Some(0.4));
        assert_eq!(axis_value("partition", "halves@1s+1s"), None);
    }
}
