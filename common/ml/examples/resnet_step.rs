//! Times whole ResNet-20 training steps (forward, cross-entropy, backward, SGD with momentum 0.9
//! and weight decay 5e-4) and evaluation forwards on random 1x28x28 data, for a conv backend.
//! A stand-in for `fedcsg bench` until that exists; prints images/s as median of several timed
//! groups of steps.
//!
//! `cargo run --release -p fedcsg-ml --example resnet_step -- [--conv fast|reference] [--batch 64] [--steps 20]`

use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{D, Device, Tensor};
use fedcsg_ml::model::{Architecture, CsgMode, Model, ModelSpec};
use fedcsg_ml::ops::ConvBackend;
use fedcsg_ml::optim::{LrSchedule, Optimizer, OptimizerConfig};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<()> {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // candle's elementwise pool spins its workers after every op and fights the kernels'
        // rayon threads for the cores (2x slower steps on a busy 2-core machine); with one
        // thread it has no workers. See fedcsg_ml::ops.
        // SAFETY: no other thread exists yet this early in main.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    let backend = match arg("--conv").as_deref() {
        None | Some("fast") => ConvBackend::Fast,
        Some("reference") => ConvBackend::Reference,
        Some(other) => bail!("--conv must be fast or reference, got {other}"),
    };
    let batch: usize = arg("--batch")
        .map(|s| s.parse())
        .transpose()
        .context("--batch")?
        .unwrap_or(64);
    let steps: usize = arg("--steps")
        .map(|s| s.parse())
        .transpose()
        .context("--steps")?
        .unwrap_or(20);

    let spec = ModelSpec::new(Architecture::ResNet { depth: 20 }, CsgMode::Full, 1, 10);
    let model = Model::new(&spec, 0, backend)?;
    let vars = model.trainable_vars().into_iter().map(|(_, v)| v).collect();
    let mut opt = Optimizer::new(
        vars,
        OptimizerConfig::sgd(0.05, 0.9, 5e-4),
        LrSchedule::Constant,
    )?;
    let x = Tensor::randn(0f32, 1.0, (batch, 1, 28, 28), &Device::Cpu)?;
    let labels = Tensor::from_vec(
        (0..batch).map(|i| (i % 10) as u32).collect::<Vec<_>>(),
        batch,
        &Device::Cpu,
    )?;

    let mut train_step = || -> Result<()> {
        let logits = model.forward_t(&x, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        opt.step(&loss.backward()?)?;
        Ok(())
    };
    for _ in 0..3 {
        train_step()?;
    }
    let t = Instant::now();
    for _ in 0..steps {
        train_step()?;
    }
    let train = (batch * steps) as f64 / t.elapsed().as_secs_f64();

    let eval = || -> Result<()> {
        let logits = model.forward_t(&x, false)?;
        logits.argmax(D::Minus1)?;
        Ok(())
    };
    eval()?;
    let t = Instant::now();
    for _ in 0..steps {
        eval()?;
    }
    let eval_rate = (batch * steps) as f64 / t.elapsed().as_secs_f64();
    println!(
        "candle resnet20 batch {batch} conv {backend:?} threads {}: train images/s {train:.1} ({:.1} ms/step), eval images/s {eval_rate:.1}",
        rayon::current_num_threads(),
        1e3 * batch as f64 / train
    );
    println!(
        "{{\"framework\":\"candle\",\"conv\":\"{backend:?}\",\"batch\":{batch},\"steps\":{steps},\"train_images_per_s\":{train:.2},\"eval_images_per_s\":{eval_rate:.2}}}"
    );
    Ok(())
}
