//! Times the fast conv2d against candle's reference at the ResNet-20 shapes (batch 64, 28x28
//! input): forward, input gradient and weight gradient, median milliseconds of several runs.
//!
//! `cargo run --release -p fedcsg-ml --example conv_bench -- [--batch 64] [--reps 7]`
//! The reference gradients are the ops candle's autograd runs for `conv2d` (backprop.rs).

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use fedcsg_ml::ops::{self, ConvBackend};

/// (label, c_in, c_out, input side, stride): the distinct 3x3 convs of ResNet-20 on 28x28 inputs.
const SHAPES: &[(&str, usize, usize, usize, usize)] = &[
    ("stem 1->16 28x28", 1, 16, 28, 1),
    ("16->16 28x28", 16, 16, 28, 1),
    ("16->32 s2 28->14", 16, 32, 28, 2),
    ("32->32 14x14", 32, 32, 14, 1),
    ("32->64 s2 14->7", 32, 64, 14, 2),
    ("64->64 7x7", 64, 64, 7, 1),
];

/// How many times each 3x3 shape runs in one ResNet-20 forward pass (stem, 6/5/5 stage convs).
const COUNT_IN_RESNET20: [usize; 6] = [1, 6, 1, 5, 1, 5];

fn median_ms(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up: page in buffers, spin up the pool
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn arg(name: &str, default: usize) -> Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .with_context(|| format!("{name} needs a value"))?
            .parse()
            .with_context(|| name.to_string()),
        None => Ok(default),
    }
}

fn main() -> Result<()> {
    let batch = arg("--batch", 64)?;
    let reps = arg("--reps", 7)?;
    // For profiling the fast kernels alone: skip the slow reference ops.
    let fast_only = std::env::args().any(|a| a == "--fast-only");
    let dev = Device::Cpu;
    println!(
        "batch {batch}, {} rayon threads, kernels {} ({}), median of {reps} runs, ms per call",
        rayon::current_num_threads(),
        ops::VectorIsa::selected_name(),
        ops::ISA_ENV
    );
    println!(
        "{:<18} | {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6}",
        "shape", "fwd ref", "fast", "x", "dx ref", "fast", "x", "dw ref", "fast", "x"
    );
    let (mut total_ref, mut total_fast) = (0.0, 0.0);
    for (&(label, c_in, c_out, side, stride), &count) in SHAPES.iter().zip(&COUNT_IN_RESNET20) {
        let padding = 1;
        let x = Tensor::randn(0f32, 1.0, (batch, c_in, side, side), &dev)?;
        let w = Tensor::randn(0f32, 0.1, (c_out, c_in, 3, 3), &dev)?;
        let y = x.conv2d(&w, padding, stride, 1, 1)?;
        let dy = Tensor::randn(0f32, 1.0, y.dims(), &dev)?;
        let out_padding = side - ((y.dim(2)? - 1) * stride + 3 - 2 * padding);

        let reference = |f: &mut dyn FnMut() -> Result<()>| {
            if fast_only {
                Ok(f64::NAN)
            } else {
                median_ms(reps, f)
            }
        };
        let fwd_ref = reference(&mut || {
            ops::conv2d(&x, &w, stride, padding, ConvBackend::Reference)?;
            Ok(())
        })?;
        let fwd_fast = median_ms(reps, || {
            ops::conv2d(&x, &w, stride, padding, ConvBackend::Fast)?;
            Ok(())
        })?;
        let dx_ref = reference(&mut || {
            dy.conv_transpose2d(&w, padding, out_padding, stride, 1)?;
            Ok(())
        })?;
        let dx_fast = median_ms(reps, || {
            ops::conv2d_input_grad(&dy, &w, x.dims(), stride, padding)?;
            Ok(())
        })?;
        let dw_ref = reference(&mut || {
            let g = x
                .transpose(0, 1)?
                .conv2d(&dy.transpose(0, 1)?, padding, 1, stride, 1)?
                .transpose(0, 1)?;
            g.narrow(2, 0, 3)?.narrow(3, 0, 3)?.contiguous()?;
            Ok(())
        })?;
        let dw_fast = median_ms(reps, || {
            ops::conv2d_weight_grad(&x, &dy, w.dims(), stride, padding)?;
            Ok(())
        })?;
        println!(
            "{label:<18} | {fwd_ref:>8.2} {fwd_fast:>8.2} {:>6.1} | {dx_ref:>8.2} {dx_fast:>8.2} {:>6.1} | {dw_ref:>8.2} {dw_fast:>8.2} {:>6.1}",
            fwd_ref / fwd_fast,
            dx_ref / dx_fast,
            dw_ref / dw_fast
        );
        // The stem's input gradient is never needed in training.
        let dx_used = if c_in == 1 { 0.0 } else { 1.0 };
        total_ref += count as f64 * (fwd_ref + dx_used * dx_ref + dw_ref);
        total_fast += count as f64 * (fwd_fast + dx_used * dx_fast + dw_fast);
    }
    println!(
        "all ResNet-20 3x3 convs, one training step: reference {total_ref:.1} ms, fast {total_fast:.1} ms ({:.1}x)",
        total_ref / total_fast
    );
    Ok(())
}
