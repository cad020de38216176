//! `fedcsg plot SOURCE --out FILE.png|.svg`: one picture of a job's rounds: test accuracy, the
//! training and test loss, bytes per round (up and down, with the plain-f32 full-filter upload
//! as a dashed reference) and each worker's local training time. SOURCE is a summary JSON
//! written by `fedcsg local` or `simulate` (`--summary-json`), or the id of a job on a running
//! coordinator (`--coordinator`, `--admin-token`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use crate::chart::register_font;
use crate::local::round_json;
use crate::remote::{Operator, Remote};

#[derive(Args)]
pub struct PlotArgs {
    /// A summary JSON (`fedcsg local` / `simulate` `--summary-json`), or a job id on the
    /// coordinator of `--coordinator`.
    source: String,
    /// The picture to write; its extension picks the format: .png or .svg.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    remote: Remote,
}

/// The figures of one round that the plot draws.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotRound {
    pub round: u64,
    pub test_accuracy: Option<f64>,
    pub federated_accuracy: Option<f64>,
    pub train_loss: Option<f64>,
    pub test_loss: Option<f64>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub full_filter_f32_bytes_up: u64,
    /// (worker id, local training seconds) of each participant.
    pub train_seconds: Vec<(String, f64)>,
}

/// A job's rounds and a title for the picture.
#[derive(Debug, Clone)]
pub struct JobPlot {
    pub title: String,
    pub rounds: Vec<PlotRound>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Png,
    Svg,
}

fn format_of(path: &Path) -> anyhow::Result<Format> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => Ok(Format::Png),
        Some("svg") => Ok(Format::Svg),
        _ => anyhow::bail!(
            "--out {}: the file name must end in .png or .svg",
            path.display()
        ),
    }
}

/// Refuses an output path whose format the plot cannot write (before any work is done).
pub fn check_out(path: &Path) -> anyhow::Result<()> {
    format_of(path).map(|_| ())
}

fn optional_number(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64).filter(|x| x.is_finite())
}

fn count(v: &Value, key: &str, round: usize) -> anyhow::Result<u64> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(x) => x
            .as_u64()
            .with_context(|| format!("round {round}: {key} is not a byte count: {x}")),
    }
}

/// The rounds of a summary JSON (its `rounds` array, in the schema README gives).
pub fn from_summary(summary: &Value) -> anyhow::Result<JobPlot> {
    let rounds = summary
        .get("rounds")
        .and_then(Value::as_array)
        .context("not a fedcsg summary: no \"rounds\" array")?;
    let title = format!(
        "{} {} csg={} ({} workers)",
        summary
            .get("job_id")
            .and_then(Value::as_str)
            .unwrap_or("job"),
        summary.get("model").and_then(Value::as_str).unwrap_or("?"),
        summary.get("csg").and_then(Value::as_str).unwrap_or("?"),
        summary
            .get("workers")
            .and_then(Value::as_u64)
            .map_or_else(|| "?".to_string(), |n| n.to_string()),
    );
    Ok(JobPlot {
        title,
        rounds: rounds
            .iter()
            .enumerate()
            .map(|(i, r)| parse_round(r, i + 1))
            .collect::<anyhow::Result<_>>()?,
    })
}

fn parse_round(r: &Value, position: usize) -> anyhow::Result<PlotRound> {
    let round = r
        .get("round")
        .and_then(Value::as_u64)
        .with_context(|| format!("rounds[{}] has no round number", position - 1))?;
    let train_seconds = r
        .get("workers")
        .and_then(Value::as_array)
        .map(|ws| {
            ws.iter()
                .filter_map(|w| {
                    Some((
                        w.get("worker_id")?.as_str()?.to_string(),
                        optional_number(w, "train_seconds")?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(PlotRound {
        round,
        test_accuracy: optional_number(r, "test_accuracy"),
        federated_accuracy: optional_number(r, "federated_accuracy"),
        train_loss: optional_number(r, "train_loss"),
        test_loss: optional_number(r, "test_loss"),
        bytes_up: count(r, "bytes_up", position)?,
        bytes_down: count(r, "bytes_down", position)?,
        full_filter_f32_bytes_up: count(r, "full_filter_f32_bytes_up", position)?,
        train_seconds,
    })
}

/// A job's rounds from a running coordinator.
async fn from_coordinator(remote: &Remote, job_id: &str) -> anyhow::Result<JobPlot> {
    let mut op = Operator::connect(remote).await?;
    let (job, state) = op
        .job_state(job_id)
        .await
        .with_context(|| format!("GetJob {job_id}"))?;
    let rounds = op
        .all_rounds(job_id)
        .await
        .with_context(|| format!("ListRounds {job_id}"))?;
    let model = job
        .spec
        .as_ref()
        .and_then(|s| s.model.as_ref())
        .map(|m| format!("{} csg={}", m.architecture, m.csg))
        .unwrap_or_default();
    let summary = serde_json::json!({
        "rounds": rounds.iter().map(round_json).collect::<Vec<_>>(),
    });
    let mut plot = from_summary(&summary)?;
    plot.title = format!(
        "{job_id} {model} ({})",
        state.trim_start_matches("JOB_STATE_").to_lowercase()
    );
    Ok(plot)
}

/// Writes the plot to `path` (.png or .svg).
pub fn write(plot: &JobPlot, path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !plot.rounds.is_empty(),
        "nothing to plot: the job has no committed rounds"
    );
    let size = (1400, 1000);
    // Both backends lay text out with the embedded font.
    register_font()?;
    match format_of(path)? {
        Format::Png => {
            let root = BitMapBackend::new(path, size).into_drawing_area();
            draw(&root, plot).map_err(|e| anyhow::anyhow!("drawing {}: {e:?}", path.display()))?;
            root.present()
                .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", path.display()))?;
        }
        Format::Svg => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            draw(&root, plot).map_err(|e| anyhow::anyhow!("drawing {}: {e:?}", path.display()))?;
            root.present()
                .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", path.display()))?;
        }
    }
    Ok(())
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// One line of a panel: its name, colour, width, whether dashed, and its points.
struct Line {
    name: String,
    color: RGBAColor,
    width: u32,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

fn line(name: &str, color: RGBColor, points: Vec<(f64, f64)>) -> Line {
    Line {
        name: name.to_string(),
        color: color.to_rgba(),
        width: 2,
        dashed: false,
        points,
    }
}

/// A panel's vertical range and where its legend goes.
struct Axis {
    /// Fixed bounds, or `None` to fit the values.
    fixed: Option<(f64, f64)>,
    /// Starts at zero when fitted.
    from_zero: bool,
    /// Room above the highest value, as a fraction of the range (for the legend).
    headroom: f64,
    legend: SeriesLabelPosition,
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, plot: &JobPlot) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let body = root.titled(&plot.title, ("sans-serif", 26))?;
    let panels = body.split_evenly((2, 2));
    let rounds = &plot.rounds;
    let series = |f: &dyn Fn(&PlotRound) -> Option<f64>| -> Vec<(f64, f64)> {
        rounds
            .iter()
            .filter_map(|r| f(r).map(|y| (r.round as f64, y)))
            .collect()
    };
    let mut accuracy = vec![line(
        "test accuracy",
        BLUE,
        series(&|r| r.test_accuracy.map(|a| 100.0 * a)),
    )];
    let federated = series(&|r| r.federated_accuracy.map(|a| 100.0 * a));
    if !federated.is_empty() {
        accuracy.push(line("federated accuracy (workers' data)", GREEN, federated));
    }
    let axis = |fixed, from_zero, headroom, legend| Axis {
        fixed,
        from_zero,
        headroom,
        legend,
    };
    panel(
        &panels[0],
        "Test accuracy (%)",
        rounds,
        accuracy,
        axis(
            Some((0.0, 100.0)),
            true,
            0.0,
            SeriesLabelPosition::LowerRight,
        ),
    )?;
    let loss = vec![
        line("train loss", RED, series(&|r| r.train_loss)),
        line("test loss", BLUE, series(&|r| r.test_loss)),
    ];
    let upper_right = SeriesLabelPosition::UpperRight;
    panel(
        &panels[1],
        "Loss",
        rounds,
        loss,
        axis(None, false, 0.08, upper_right),
    )?;
    let mb = |b: u64| b as f64 / 1e6;
    // Up under down, wider, so that both show where they are equal.
    let mut bytes = vec![
        Line {
            width: 6,
            ..line(
                "up",
                RGBColor(240, 120, 120),
                series(&|r| Some(mb(r.bytes_up))),
            )
        },
        line("down", BLUE, series(&|r| Some(mb(r.bytes_down)))),
    ];
    let reference =
        series(&|r| (r.full_filter_f32_bytes_up > 0).then(|| mb(r.full_filter_f32_bytes_up)));
    if !reference.is_empty() {
        bytes.push(Line {
            dashed: true,
            ..line("up as full filters, f32", BLACK, reference)
        });
    }
    let upper_left = SeriesLabelPosition::UpperLeft;
    panel(
        &panels[2],
        "MB per round (all workers)",
        rounds,
        bytes,
        axis(None, true, 0.45, upper_left),
    )?;
    let mut per_worker: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for r in rounds {
        for (worker, seconds) in &r.train_seconds {
            per_worker
                .entry(worker.as_str())
                .or_default()
                .push((r.round as f64, *seconds));
        }
    }
    let workers = per_worker
        .into_iter()
        .enumerate()
        .map(|(i, (worker, points))| Line {
            name: worker.to_string(),
            color: Palette99::pick(i).to_rgba(),
            width: 2,
            dashed: false,
            points,
        })
        .collect();
    panel(
        &panels[3],
        "Local training seconds per worker",
        rounds,
        workers,
        axis(None, true, 0.08, SeriesLabelPosition::LowerRight),
    )?;
    Ok(())
}

/// The most lines a panel names in its legend.
const MAX_LEGEND: usize = 10;

/// One chart against the round number.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    rounds: &[PlotRound],
    lines: Vec<Line>,
    axis: Axis,
) -> DrawResult<DB> {
    let first = rounds.iter().map(|r| r.round).min().unwrap_or(1) as f64;
    let last = rounds.iter().map(|r| r.round).max().unwrap_or(1) as f64;
    let values = || lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let (lo, hi) = values().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let span = if axis.from_zero { hi } else { hi - lo };
    let margin = (span * 0.08).max(1e-3);
    let (y_lo, y_hi) = match axis.fixed {
        Some(bounds) => bounds,
        None if axis.from_zero => (0.0, hi + (span * axis.headroom).max(1e-3)),
        None => (
            (lo - margin).max(0.0),
            hi + (span * axis.headroom).max(1e-3),
        ),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(first - 0.5..last + 0.5, y_lo..y_hi.max(y_lo + 1e-3))?;
    chart
        .configure_mesh()
        .x_desc("round")
        .x_labels(rounds.len().clamp(2, 12))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    let named = lines.len() <= MAX_LEGEND;
    for l in lines.iter().filter(|l| !l.points.is_empty()) {
        let style = l.color.stroke_width(l.width);
        let drawn = if l.dashed {
            chart.draw_series(DashedLineSeries::new(l.points.clone(), 8, 6, style))?
        } else {
            chart.draw_series(LineSeries::new(l.points.clone(), style))?
        };
        if named {
            let (color, width) = (l.color, l.width);
            drawn.label(l.name.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
            });
        }
        if !l.dashed {
            chart.draw_series(
                l.points
                    .iter()
                    .map(|p| Circle::new(*p, 3, l.color.filled())),
            )?;
        }
    }
    if named && lines.iter().any(|l| !l.points.is_empty()) {
        chart
            .configure_series_labels()
            .position(axis.legend)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

pub async fn run(args: PlotArgs) -> anyhow::Result<()> {
    check_out(&args.out)?;
    let source = Path::new(&args.source);
    let plot = if source.is_file() {
        let text = std::fs::read_to_string(source)
            .with_context(|| format!("reading {}", source.display()))?;
        let summary: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", source.display()))?;
        from_summary(&summary).with_context(|| format!("{}", source.display()))?
    } else if args.source.ends_with(".json") {
        anyhow::bail!("{}: no such file", source.display());
    } else {
        from_coordinator(&args.remote, &args.source).await?
    };
    write(&plot, &args.out)?;
    println!(
        "plot of {} rounds written to {}",
        plot.rounds.len(),
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Value {
        serde_json::json!({
            "job_id": "job-1", "model": "resnet20", "csg": "12-72", "workers": 2,
            "rounds": [
                {"round": 1, "test_accuracy": 0.41, "test_loss": 1.6, "train_loss": 1.9,
                 "bytes_up": 900_000, "bytes_down": 900_000, "full_filter_f32_bytes_up": 2_100_000,
                 "workers": [{"worker_id": "w1", "train_seconds": 3.1}, {"worker_id": "w2", "train_seconds": 2.9}]},
                {"round": 2, "test_accuracy": null, "test_loss": null, "train_loss": 1.2,
                 "bytes_up": 910_000, "bytes_down": 900_000, "full_filter_f32_bytes_up": 2_100_000,
                 "workers": [{"worker_id": "w1", "train_seconds": 3.0}]}
            ]
        })
    }

    #[test]
    fn a_summary_becomes_rounds() {
        let plot = from_summary(&summary()).unwrap();
        assert_eq!(plot.title, "job-1 resnet20 csg=12-72 (2 workers)");
        assert_eq!(plot.rounds.len(), 2);
        assert_eq!(plot.rounds[0].test_accuracy, Some(0.41));
        assert_eq!(plot.rounds[1].test_accuracy, None);
        assert_eq!(plot.rounds[0].full_filter_f32_bytes_up, 2_100_000);
        assert_eq!(plot.rounds[1].train_seconds, vec![("w1".to_string(), 3.0)]);
    }

    #[test]
    fn bad_summaries_are_explained() {
        let err = from_summary(&serde_json::json!({"jobs": []})).unwrap_err();
        assert!(err.to_string().contains("no \"rounds\" array"), "{err}");
        let err = from_summary(&serde_json::json!({"rounds": [{"round": 1, "bytes_up": -3}]}))
            .unwrap_err();
        assert!(
            err.to_string().contains("bytes_up is not a byte count"),
            "{err}"
        );
        let err = from_summary(&serde_json::json!({"rounds": [{"bytes_up": 3}]})).unwrap_err();
        assert!(err.to_string().contains("no round number"), "{err}");
        let err = format_of(Path::new("plot.jpg")).unwrap_err();
        assert!(err.to_string().contains(".png or .svg"), "{err}");
    }

    #[test]
    fn an_svg_has_every_panel() {
        let path = std::env::temp_dir().join(format!("fedcsg-plot-{}.svg", std::process::id()));
        write(&from_summary(&summary()).unwrap(), &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        for caption in [
            "Test accuracy (%)",
            "Loss",
            "MB per round (all workers)",
            "Local training seconds per worker",
            "up as full filters, f32",
        ] {
            assert!(svg.contains(caption), "no {caption:?} in the SVG");
        }
    }

    #[test]
    fn no_rounds_is_refused() {
        let plot = JobPlot {
            title: "x".into(),
            rounds: vec![],
        };
        let err = write(&plot, Path::new("never-written.png")).unwrap_err();
        assert!(err.to_string().contains("no committed rounds"), "{err}");
    }
}
