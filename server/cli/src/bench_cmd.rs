//! `fedcsg bench`: training-step and evaluation throughput of a model on synthetic 28x28 (or
//! 32x32) batches, after warm-up steps, with peak memory; a table line and a JSON line.

use std::time::Instant;

use candle_core::{Device, Tensor};
use clap::Args;
use fedcsg_ml::model::{Model, ModelSpec};
use fedcsg_ml::optim::{LrSchedule, Optimizer, OptimizerConfig};

use crate::train_cmd::conv_backend;

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "resnet20")]
    model: String,
    /// none | S-C | seeded:S-C.
    #[arg(long, default_value = "none")]
    csg: String,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Timed training steps (after the warm-up).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[arg(long, default_value_t = 1)]
    in_channels: usize,
    /// Image side (28 for Fashion-MNIST, 32 for CIFAR-10).
    #[arg(long, default_value_t = 28)]
    size: usize,
    /// fast | reference convolution kernels.
    #[arg(long, default_value = "fast")]
    conv: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak resident set size of this process in KiB (Linux), if known.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.steps > 0 && args.batch > 0,
        "--steps and --batch must be positive"
    );
    let spec = ModelSpec::new(args.model.parse()?, args.csg.parse()?, args.in_channels, 10);
    let model = Model::new(&spec, 0, conv_backend(&args.conv)?)?;
    let vars = model.trainable_vars().into_iter().map(|(_, v)| v).collect();
    let mut opt = Optimizer::new(
        vars,
        OptimizerConfig::sgd(0.01, 0.9, 5e-4),
        LrSchedule::Constant,
    )?;
    let x = Tensor::randn(
        0f32,
        1.0,
        (args.batch, args.in_channels, args.size, args.size),
        &Device::Cpu,
    )?;
    let y = Tensor::from_vec(
        (0..args.batch as u32).map(|i| i % 10).collect::<Vec<_>>(),
        args.batch,
        &Device::Cpu,
    )?;
    let (mut fwd, mut bwd, mut step_t) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.warmup + args.steps {
        let t0 = Instant::now();
        let loss = candle_nn::loss::cross_entropy(&model.forward_t(&x, true)?, &y)?;
        loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        opt.step(&grads)?;
        let t3 = Instant::now();
        if i >= args.warmup {
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
            step_t.push((t3 - t0).as_secs_f64());
        }
    }
    let train_ips = args.batch as f64 / median(step_t.clone());
    let mut eval_t = Vec::new();
    for i in 0..args.warmup + args.steps {
        let t0 = Instant::now();
        model.forward_t(&x, false)?.to_vec2::<f32>()?;
        if i >= args.warmup {
            eval_t.push(t0.elapsed().as_secs_f64());
        }
    }
    let eval_ips = args.batch as f64 / median(eval_t);
    let threads = format!(
        "rayon:{} candle:{}",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "cores".into()),
        std::env::var("CANDLE_NUM_THREADS").unwrap_or_else(|_| "cores".into())
    );
    let rss = peak_rss_kib().unwrap_or(0);
    let isa = fedcsg_ml::ops::VectorIsa::selected_name();
    println!(
        "{:<10} csg={:<14} conv={:<9} isa={} batch={} threads={}: train {:8.1} images/s (fwd {:.1} ms, bwd {:.1} ms, step {:.1} ms median of {})  eval {:8.1} images/s  peak RSS {:.0} MiB",
        spec.arch.to_string(),
        spec.csg.to_string(),
        args.conv,
        isa,
        args.batch,
        threads,
        train_ips,
        1e3 * median(fwd.clone()),
        1e3 * median(bwd.clone()),
        1e3 * median(step_t.clone()),
        args.steps,
        eval_ips,
        rss as f64 / 1024.0
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "train_step", "impl": "candle", "model": spec.arch.to_string(), "csg": spec.csg.to_string(),
            "conv": args.conv, "isa": isa.as_str(), "batch": args.batch, "steps": args.steps, "threads": threads,
            "train_images_per_second": train_ips, "eval_images_per_second": eval_ips,
            "forward_ms": 1e3 * median(fwd), "backward_ms": 1e3 * median(bwd),
            "peak_rss_kib": rss,
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    /// `fedcsg bench` measures full-filter ResNet-20 at batch 64 on 28x28 one-channel images with
    /// the fast kernels unless told otherwise (the figures in bench/README.md use these).
    #[test]
    fn defaults_match_bench_readme() {
        let Ok(Cli {
            command: Command::Bench(a),
        }) = Cli::try_parse_from(["fedcsg", "bench"])
        else {
            panic!("bench did not parse");
        };
        assert_eq!(
            (a.model.as_str(), a.csg.as_str(), a.conv.as_str()),
            ("resnet20", "none", "fast")
        );
        assert_eq!(
            (a.batch, a.steps, a.warmup, a.in_channels, a.size),
            (64, 20, 3, 1, 28)
        );
    }

    /// The middle value of the sorted times; of an even count, the upper of the two middles.
    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
    }
}
