//! Proves the fused training batch norm agrees with candle-nn's `BatchNorm::forward_train`:
//! output, the gradients reaching the input, the scale and the shift, and the running
//! statistics it updates in place; with the ReLU fused, against candle-nn followed by `relu`.

use anyhow::{Context, Result};
use candle_core::{D, Device, ModuleT, Tensor, Var};
use candle_nn::BatchNorm;
use fedcsg_common::ops;

/// Deterministic values in [-1, 1) (a 64-bit LCG, top bits).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn random(dims: &[usize], seed: u64) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        values(dims.iter().product(), seed),
        dims,
        &Device::Cpu,
    )?)
}

fn rel_err(got: &Tensor, want: &Tensor) -> Result<f32> {
    assert_eq!(got.dims(), want.dims());
    let diff = (got - want)?
        .abs()?
        .flatten_all()?
        .max(D::Minus1)?
        .to_scalar::<f32>()?;
    let scale = want
        .abs()?
        .flatten_all()?
        .max(D::Minus1)?
        .to_scalar::<f32>()?;
    Ok(diff / scale.max(1e-6))
}

struct Outcome {
    y: Tensor,
    grads: [Tensor; 3],
    running: [Tensor; 2],
}

fn run(dims: [usize; 4], fused: bool, relu: bool, train: bool, seed: u64) -> Result<Outcome> {
    let c = dims[1];
    // A mean far from zero checks the variance is computed without cancellation.
    let x = Var::from_tensor(&random(&dims, seed)?.affine(3.0, 5.0)?)?;
    let weight = Var::from_tensor(&(random(&[c], seed + 1)? + 1.5)?)?;
    let bias = Var::from_tensor(&random(&[c], seed + 2)?)?;
    let bn = BatchNorm::new(
        c,
        random(&[c], seed + 3)?,
        (random(&[c], seed + 4)? + 2.0)?,
        weight.as_tensor().clone(),
        bias.as_tensor().clone(),
        1e-5,
    )?;
    let y = match (fused, relu) {
        (true, false) => ops::batch_norm(&bn, x.as_tensor(), train)?,
        (true, true) => ops::batch_norm_relu(&bn, x.as_tensor(), train)?,
        (false, false) => bn.forward_t(x.as_tensor(), train)?,
        (false, true) => bn.forward_t(x.as_tensor(), train)?.relu()?,
    };
    let grads = (&y * random(y.dims(), seed + 5)?)?.sum_all()?.backward()?;
    let grad = |v: &Var| {
        grads
            .get(v.as_tensor())
            .cloned()
            .context("missing gradient")
    };
    Ok(Outcome {
        y,
        grads: [grad(&x)?, grad(&weight)?, grad(&bias)?],
        running: [bn.running_mean().copy()?, bn.running_var().copy()?],
    })
}

#[test]
fn fused_batch_norm_matches_candle_nn_in_training() -> Result<()> {
    let shapes = [
        [4, 16, 28, 28],
        [2, 3, 5, 7],
        [1, 7, 3, 3],
        [8, 64, 7, 7],
        [3, 10, 1, 1],
    ];
    for (i, (dims, relu)) in shapes
        .into_iter()
        .flat_map(|d| [(d, false), (d, true)])
        .enumerate()
    {
        let seed = 10 * i as u64;
        let fast = run(dims, true, relu, true, seed)?;
        let reference = run(dims, false, relu, true, seed)?;
        assert!(
            rel_err(&fast.y, &reference.y)? < 1e-4,
            "{dims:?} relu {relu} output"
        );
        for (what, (got, want)) in ["input", "weight", "bias"]
            .iter()
            .zip(fast.grads.iter().zip(&reference.grads))
        {
            let err = rel_err(got, want)?;
            assert!(
                err < 1e-4,
                "{dims:?} relu {relu} {what} gradient: relative error {err}"
            );
        }
        for (what, (got, want)) in ["mean", "var"]
            .iter()
            .zip(fast.running.iter().zip(&reference.running))
        {
            assert!(rel_err(got, want)? < 1e-5, "{dims:?} running {what}");
        }
    }
    Ok(())
}

/// `relu(bn(x) + skip)` with every gradient, fused or from candle-nn's ops.
fn run_residual(
    dims: [usize; 4],
    fused: bool,
    seed: u64,
) -> Result<(Tensor, [Tensor; 4], [Tensor; 2])> {
    let c = dims[1];
    let x = Var::from_tensor(&random(&dims, seed)?.affine(3.0, 5.0)?)?;
    let skip = Var::from_tensor(&random(&dims, seed + 6)?)?;
    let weight = Var::from_tensor(&(random(&[c], seed + 1)? + 1.5)?)?;
    let bias = Var::from_tensor(&random(&[c], seed + 2)?)?;
    let bn = BatchNorm::new(
        c,
        random(&[c], seed + 3)?,
        (random(&[c], seed + 4)? + 2.0)?,
        weight.as_tensor().clone(),
        bias.as_tensor().clone(),
        1e-5,
    )?;
    let y = if fused {
        ops::batch_norm_add_relu(&bn, x.as_tensor(), skip.as_tensor(), true)?
    } else {
        (bn.forward_t(x.as_tensor(), true)? + skip.as_tensor())?.relu()?
    };
    let grads = (&y * random(y.dims(), seed + 5)?)?.sum_all()?.backward()?;
    let grad = |v: &Var| {
        grads
            .get(v.as_tensor())
            .cloned()
            .context("missing gradient")
    };
    Ok((
        y,
        [grad(&x)?, grad(&skip)?, grad(&weight)?, grad(&bias)?],
        [bn.running_mean().copy()?, bn.running_var().copy()?],
    ))
}

#[test]
fn fused_batch_norm_add_relu_matches_candle_nn() -> Result<()> {
    for (i, dims) in [[4, 16, 28, 28], [2, 3, 5, 7], [3, 10, 1, 1]]
        .into_iter()
        .enumerate()
    {
        let seed = 200 + 10 * i as u64;
        let (y, grads, running) = run_residual(dims, true, seed)?;
        let (y_ref, grads_ref, running_ref) = run_residual(dims, false, seed)?;
        assert!(rel_err(&y, &y_ref)? < 1e-4, "{dims:?} output");
        for (what, (got, want)) in ["input", "residual", "weight", "bias"]
            .iter()
            .zip(grads.iter().zip(&grads_ref))
        {
            let err = rel_err(got, want)?;
            assert!(err < 1e-4, "{dims:?} {what} gradient: relative error {err}");
        }
        for (got, want) in running.iter().zip(&running_ref) {
            assert!(rel_err(got, want)? < 1e-5, "{dims:?} running statistics");
        }
    }
    // A residual of another shape is an error, not a broadcast.
    let bn = BatchNorm::new(
        2,
        random(&[2], 1)?,
        (random(&[2], 2)? + 2.0)?,
        random(&[2], 3)?,
        random(&[2], 4)?,
        1e-5,
    )?;
    let err = ops::batch_norm_add_relu(
        &bn,
        &random(&[1, 2, 3, 3], 5)?,
        &random(&[1, 2, 3, 1], 6)?,
        true,
    )
    .err()
    .context("a mismatched residual was accepted")?;
    assert!(err.to_string().contains("residual"), "{err}");
    Ok(())
}

#[test]
fn fused_evaluation_matches_candle_nn_with_gradients() -> Result<()> {
    for (i, (dims, relu)) in [[2, 5, 4, 4], [1, 16, 7, 7], [3, 9, 1, 1]]
        .into_iter()
        .flat_map(|d| [(d, false), (d, true)])
        .enumerate()
    {
        let seed = 100 + 10 * i as u64;
        let fast = run(dims, true, relu, false, seed)?;
        let reference = run(dims, false, relu, false, seed)?;
        assert!(
            rel_err(&fast.y, &reference.y)? < 1e-5,
            "{dims:?} relu {relu} output"
        );
        for (what, (got, want)) in ["input", "weight", "bias"]
            .iter()
            .zip(fast.grads.iter().zip(&reference.grads))
        {
            let err = rel_err(got, want)?;
            assert!(
                err < 1e-4,
                "{dims:?} relu {relu} {what} gradient: relative error {err}"
            );
        }
        // Evaluation reads the running statistics and never moves them.
        let untouched = run(dims, false, relu, false, seed)?;
        for (got, want) in fast.running.iter().zip(&untouched.running) {
            assert!(
                rel_err(got, want)? == 0.0,
                "{dims:?} evaluation moved the statistics"
            );
        }
    }
    Ok(())
}

#[test]
fn evaluation_uses_the_running_statistics() -> Result<()> {
    let c = 5;
    let bn = BatchNorm::new(
        c,
        random(&[c], 1)?,
        (random(&[c], 2)? + 2.0)?,
        random(&[c], 3)?,
        random(&[c], 4)?,
        1e-5,
    )?;
    let x = random(&[2, c, 4, 4], 5)?;
    let before = bn.running_mean().copy()?;
    let y = ops::batch_norm(&bn, &x, false)?;
    assert!(rel_err(&y, &bn.forward_t(&x, false)?)? < 1e-6);
    assert!(
        rel_err(bn.running_mean(), &before)? == 0.0,
        "evaluation must not move the statistics"
    );
    Ok(())
}
