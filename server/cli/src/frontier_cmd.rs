//! `fedcsg frontier`: accuracy per byte from simulation summaries. Groups runs by label (one
//! label per mode and partition, one run per seed), and writes a markdown table (final and
//! per-client accuracy as mean ± spread over seeds, bytes and simulated time to a target
//! accuracy) and a PNG plot of test accuracy against cumulative bytes per client, one line per
//! label.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use plotters::prelude::*;

use crate::chart::register_font;
use serde_json::Value;

#[derive(Args)]
pub struct FrontierArgs {
    /// Summary JSONs written by `fedcsg simulate --summary-json` (with `--label`).
    #[arg(required = true)]
    pub summaries: Vec<PathBuf>,
    /// Write the markdown table here (default: print it).
    #[arg(long)]
    pub table: Option<PathBuf>,
    /// Write the PNG plot here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// The target is this fraction of the final accuracy of full filters (`csg` none) on the
    /// same partition.
    #[arg(long, default_value_t = 0.8)]
    pub target_fraction: f64,
}

/// Where a run stands after a round.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    /// Cumulative bytes per client.
    bytes: f64,
    accuracy: f64,
    /// Simulated seconds so far, and how many of them were transfers.
    seconds: f64,
    transfer_seconds: f64,
}

/// One run's figures.
#[derive(Debug, Clone)]
struct Run {
    partition: String,
    csg: String,
    curve: Vec<Point>,
    client_mean: Option<f64>,
    client_worst: Option<f64>,
}

fn number(v: &Value, what: &str) -> anyhow::Result<f64> {
    v.as_f64()
        .with_context(|| format!("{what} is not a number"))
}

fn read_run(path: &Path) -> anyhow::Result<(String, Run)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let s: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let sim = &s["simulation"];
    anyhow::ensure!(
        sim.is_object(),
        "{} is not a `fedcsg simulate` summary (no simulation object)",
        path.display()
    );
    let partition = sim["partition"].as_str().unwrap_or("?").to_string();
    let csg = s["csg"].as_str().unwrap_or("?").to_string();
    let label = s["label"]
        .as_str()
        .map_or_else(|| format!("{partition} {csg}"), str::to_string);
    let rounds = s["rounds"].as_array().context("no rounds")?;
    anyhow::ensure!(!rounds.is_empty(), "{} has no rounds", path.display());
    let mut transfer_seconds = 0.0;
    let curve = rounds
        .iter()
        .map(|r| {
            transfer_seconds += number(
                &r["simulated_transfer_seconds"],
                "simulated_transfer_seconds",
            )?;
            Ok(Point {
                bytes: number(
                    &r["cumulative_bytes_per_client"],
                    "cumulative_bytes_per_client",
                )?,
                accuracy: number(&r["test_accuracy"], "test_accuracy")?,
                seconds: number(&r["simulated_elapsed_seconds"], "simulated_elapsed_seconds")?,
                transfer_seconds,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .with_context(|| path.display().to_string())?;
    let last = rounds.last().expect("not empty");
    let client = &last["client_evaluation"];
    Ok((
        label,
        Run {
            partition,
            csg,
            curve,
            client_mean: client["mean_accuracy"].as_f64(),
            client_worst: client["worst_accuracy"].as_f64(),
        },
    ))
}

/// Mean and sample standard deviation (0 for one value).
fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

fn pct(v: (f64, f64)) -> String {
    format!("{:.2} ± {:.2}", 100.0 * v.0, 100.0 * v.1)
}

/// Where a run first reaches `target`.
fn first_reaching(run: &Run, target: f64) -> Option<Point> {
    run.curve.iter().find(|p| p.accuracy >= target).copied()
}

/// The markdown table of `groups` (label → runs).
fn table(groups: &BTreeMap<String, Vec<Run>>, target_fraction: f64) -> String {
    // The target of a partition: a fraction of full filters' mean final accuracy there.
    let mut targets: BTreeMap<&str, f64> = BTreeMap::new();
    for runs in groups.values() {
        if runs[0].csg == "none" {
            let finals: Vec<f64> = runs
                .iter()
                .map(|r| r.curve.last().expect("rounds").accuracy)
                .collect();
            targets.insert(&runs[0].partition, target_fraction * mean_std(&finals).0);
        }
    }
    let mut out = format!(
        "| mode | seeds | rounds | final accuracy (%) | client mean (%) | worst client (%) | MB per client (all rounds) | MB per client to {:.0}% of full filters' final | simulated time to it (s) | of which transfers (s) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        100.0 * target_fraction
    );
    for (label, runs) in groups {
        let finals: Vec<f64> = runs
            .iter()
            .map(|r| r.curve.last().expect("rounds").accuracy)
            .collect();
        let clients: Vec<f64> = runs.iter().filter_map(|r| r.client_mean).collect();
        let worst: Vec<f64> = runs.iter().filter_map(|r| r.client_worst).collect();
        let bytes: Vec<f64> = runs
            .iter()
            .map(|r| r.curve.last().expect("rounds").bytes)
            .collect();
        let optional = |v: &[f64]| {
            if v.is_empty() {
                "n/a".to_string()
            } else {
                pct(mean_std(v))
            }
        };
        let (to_target, time, transfer) = match targets.get(runs[0].partition.as_str()) {
            None => (
                "no full-filter run".to_string(),
                String::new(),
                String::new(),
            ),
            Some(&target) => {
                let reached: Vec<Point> = runs
                    .iter()
                    .filter_map(|r| first_reaching(r, target))
                    .collect();
                if reached.len() < runs.len() {
                    (
                        format!(
                            "not reached in {} of {} runs",
                            runs.len() - reached.len(),
                            runs.len()
                        ),
                        String::new(),
                        String::new(),
                    )
                } else {
                    let spread = |f: fn(&Point) -> f64, digits: usize| {
                        let (m, s) = mean_std(&reached.iter().map(f).collect::<Vec<_>>());
                        format!("{m:.digits$} ± {s:.digits$}")
                    };
                    (
                        spread(|p| p.bytes / 1e6, 1),
                        spread(|p| p.seconds, 0),
                        spread(|p| p.transfer_seconds, 1),
                    )
                }
            }
        };
        out.push_str(&format!(
            "| {label} | {} | {} | {} | {} | {} | {:.1} | {to_target} | {time} | {transfer} |\n",
            runs.len(),
            runs[0].curve.len(),
            pct(mean_std(&finals)),
            optional(&clients),
            optional(&worst),
            mean_std(&bytes).0 / 1e6,
        ));
    }
    out
}

/// Test accuracy against cumulative MB per client, the mean over seeds per label.
fn plot(groups: &BTreeMap<String, Vec<Run>>, path: &Path) -> anyhow::Result<()> {
    register_font()?;
    let lines: Vec<(&String, Vec<(f64, f64)>)> = groups
        .iter()
        .map(|(label, runs)| {
            let rounds = runs.iter().map(|r| r.curve.len()).min().unwrap_or(0);
            let points = (0..rounds)
                .map(|i| {
                    let bytes: Vec<f64> = runs.iter().map(|r| r.curve[i].bytes / 1e6).collect();
                    let acc: Vec<f64> = runs.iter().map(|r| 100.0 * r.curve[i].accuracy).collect();
                    (mean_std(&bytes).0, mean_std(&acc).0)
                })
                .collect();
            (label, points)
        })
        .collect();
    let max_x = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(0.0f64, f64::max)
        * 1.05;
    let (min_y, max_y) = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold((100.0f64, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let root = BitMapBackend::new(path, (1200, 800)).into_drawing_area();
    let draw = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Test accuracy against bytes per client", ("sans-serif", 30))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(
            0.0..max_x.max(1e-6),
            (min_y - 2.0).max(0.0)..(max_y + 2.0).min(100.0),
        )
        .map_err(draw)?;
    chart
        .configure_mesh()
        .x_desc("cumulative MB per client (down + up, mean over the round's participants)")
        .y_desc("test accuracy (%)")
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()
        .map_err(draw)?;
    for (i, (label, points)) in lines.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(draw)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(draw)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw)?;
    root.present().map_err(draw)?;
    Ok(())
}

pub fn run(args: FrontierArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.target_fraction > 0.0 && args.target_fraction <= 1.0,
        "--target-fraction must be in (0, 1]"
    );
    let mut groups: BTreeMap<String, Vec<Run>> = BTreeMap::new();
    for path in &args.summaries {
        let (label, run) = read_run(path)?;
        groups.entry(label).or_default().push(run);
    }
    let text = table(&groups, args.target_fraction);
    match &args.table {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    if let Some(path) = &args.plot {
        plot(&groups, path)?;
        println!("plot written to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(csg: &str, accuracies: &[f64]) -> Run {
        Run {
            partition: "iid".into(),
            csg: csg.into(),
            curve: accuracies
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let round = (i + 1) as f64;
                    Point {
                        bytes: round * 1e6,
                        accuracy: *a,
                        seconds: round * 10.0,
                        transfer_seconds: round,
                    }
                })
                .collect(),
            client_mean: Some(accuracies[accuracies.len() - 1] - 0.01),
            client_worst: None,
        }
    }

    /// Seeds are averaged, the target is a fraction of full filters' final accuracy on the
    /// same partition, and a mode that never reaches it says so.
    #[test]
    fn the_table_averages_seeds_and_finds_the_target() {
        let mut groups = BTreeMap::new();
        groups.insert(
            "a full".to_string(),
            vec![run("none", &[0.5, 0.8, 0.9]), run("none", &[0.5, 0.7, 0.7])],
        );
        groups.insert("b csg".to_string(), vec![run("12-72", &[0.6, 0.7, 0.75])]);
        groups.insert(
            "c seeded".to_string(),
            vec![run("seeded:12-72", &[0.1, 0.2, 0.3])],
        );
        let t = table(&groups, 0.8);
        // Full filters: final 80 ± 14.14; target 0.64, reached at round 2 (2 MB, 20 s) in both.
        // (2 s of them on the links).
        assert!(t.contains("| a full | 2 | 3 | 80.00 ± 14.14 | 79.00 ± 14.14 | n/a | 3.0 | 2.0 ± 0.0 | 20 ± 0 | 2.0 ± 0.0 |"), "{t}");
        // CSG reaches 0.64 at round 2 too.
        assert!(t.contains("| b csg | 1 | 3 | 75.00 ± 0.00 | 74.00 ± 0.00 | n/a | 3.0 | 2.0 ± 0.0 | 20 ± 0 | 2.0 ± 0.0 |"), "{t}");
        assert!(t.contains("not reached in 1 of 1 runs"), "{t}");
    }

    #[test]
    fn the_plot_is_a_png_with_lines() {
        let mut groups = BTreeMap::new();
        groups.insert("full".to_string(), vec![run("none", &[0.5, 0.8, 0.9])]);
        groups.insert("csg".to_string(), vec![run("12-72", &[0.6, 0.7, 0.75])]);
        let path = std::env::temp_dir().join(format!("fedcsg-frontier-{}.png", std::process::id()));
        plot(&groups, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(
            bytes.len() > 10_000,
            "a drawn chart, not a blank image: {} bytes",
            bytes.len()
        );
    }
}
