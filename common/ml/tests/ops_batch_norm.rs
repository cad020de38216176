//! Proves the fused batch norm ops agree with candle-nn's `BatchNorm`, in training and in
//! evaluation: output, the gradients reaching the input, the scale, the shift (and the residual),
//! and the running statistics; with a ReLU or a residual sum + ReLU fused, against candle-nn
//! followed by the same candle ops.

use anyhow::{Context, Result};
use candle_core::{D, Device, ModuleT, Tensor, Var};
use candle_nn::BatchNorm;
use fedcsg_ml::ops;

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

/// What follows the batch norm.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tail {
    None,
    Relu,
    /// `relu(bn(x) + skip)`.
    AddRelu,
}

struct Outcome {
    y: Tensor,
    /// Gradients of the input, weight and bias, then of the residual for `Tail::AddRelu`.
    grads: Vec<Tensor>,
    running: [Tensor; 2],
}

fn run(dims: [usize; 4], fused: bool, tail: Tail, train: bool, seed: u64) -> Result<Outcome> {
    let c = dims[1];
    // A mean far from zero checks the variance is computed without cancellation.
    let x = Var::from_tensor(&random(&dims, seed)?.affine(3.0, 5.0)?)?;
    let weight = Var::from_tensor(&(random(&[c], seed + 1)? + 1.5)?)?;
    let bias = Var::from_tensor(&random(&[c], seed + 2)?)?;
    let skip = Var::from_tensor(&random(&dims, seed + 6)?)?;
    let bn = BatchNorm::new(
        c,
        random(&[c], seed + 3)?,
        (random(&[c], seed + 4)? + 2.0)?,
        weight.as_tensor().clone(),
        bias.as_tensor().clone(),
        1e-5,
    )?;
    let (x_t, skip_t) = (x.as_tensor(), skip.as_tensor());
    let y = match (fused, tail) {
        (true, Tail::None) => ops::batch_norm(&bn, x_t, train)?,
        (true, Tail::Relu) => ops::batch_norm_relu(&bn, x_t, train)?,
        (true, Tail::AddRelu) => ops::batch_norm_add_relu(&bn, x_t, skip_t, train)?,
        (false, Tail::None) => bn.forward_t(x_t, train)?,
        (false, Tail::Relu) => bn.forward_t(x_t, train)?.relu()?,
        (false, Tail::AddRelu) => (bn.forward_t(x_t, train)? + skip_t)?.relu()?,
    };
    let grads = (&y * random(y.dims(), seed + 5)?)?.sum_all()?.backward()?;
    let grad = |v: &Var| {
        grads
            .get(v.as_tensor())
            .cloned()
            .context("missing gradient")
    };
    let mut all = vec![grad(&x)?, grad(&weight)?, grad(&bias)?];
    if tail == Tail::AddRelu {
        all.push(grad(&skip)?);
    }
    Ok(Outcome {
        y,
        grads: all,
        running: [bn.running_mean().copy()?, bn.running_var().copy()?],
    })
}

/// Asserts a fused and a candle-nn outcome agree: output within `tolerance`, gradients within
/// 1e-4, running statistics within 1e-5 (relative).
fn assert_agree(what: &str, fast: &Outcome, reference: &Outcome, tolerance: f32) -> Result<()> {
    assert!(rel_err(&fast.y, &reference.y)? < tolerance, "{what} output");
    assert_eq!(fast.grads.len(), reference.grads.len(), "{what} gradients");
    for (name, (got, want)) in ["input", "weight", "bias", "residual"]
        .iter()
        .zip(fast.grads.iter().zip(&reference.grads))
    {
        let err = rel_err(got, want)?;
        assert!(err < 1e-4, "{what} {name} gradient: relative error {err}");
    }
    for (name, (got, want)) in ["mean", "var"]
        .iter()
        .zip(fast.running.iter().zip(&reference.running))
    {
        assert!(rel_err(got, want)? < 1e-5, "{what} running {name}");
    }
    Ok(())
}

const TAILS: [Tail; 3] = [Tail::None, Tail::Relu, Tail::AddRelu];

#[test]
fn fused_batch_norm_matches_candle_nn_in_training() -> Result<()> {
    let shapes = [
        [4, 16, 28, 28],
        [2, 3, 5, 7],
        [1, 7, 3, 3],
        [8, 64, 7, 7],
        [3, 10, 1, 1],
    ];
    for (i, (dims, tail)) in shapes
        .into_iter()
        .flat_map(|d| TAILS.map(|t| (d, t)))
        .enumerate()
    {
        let seed = 10 * i as u64;
        let fast = run(dims, true, tail, true, seed)?;
        let reference = run(dims, false, tail, true, seed)?;
        assert_agree(&format!("{dims:?} {tail:?}"), &fast, &reference, 1e-4)?;
    }
    Ok(())
}

#[test]
fn fused_evaluation_matches_candle_nn_with_gradients() -> Result<()> {
    for (i, (dims, tail)) in [[2, 5, 4, 4], [1, 16, 7, 7], [3, 9, 1, 1]]
        .into_iter()
        .flat_map(|d| TAILS.map(|t| (d, t)))
        .enumerate()
    {
        let seed = 100 + 10 * i as u64;
        let fast = run(dims, true, tail, false, seed)?;
        let reference = run(dims, false, tail, false, seed)?;
        assert_agree(
            &format!("{dims:?} {tail:?} evaluation"),
            &fast,
            &reference,
            1e-5,
        )?;
        // Evaluation reads the running statistics and never moves them.
        let untouched = run(dims, false, tail, false, seed)?;
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
fn mismatched_residual_is_an_error() -> Result<()> {
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
    .context("a residual of another shape was accepted")?;
    assert!(err.to_string().contains("residual"), "{err}");
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
