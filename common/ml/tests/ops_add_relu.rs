//! Proves the fused `relu(a + b)` of the residual blocks matches candle's add then ReLU, output
//! and the gradients of both summands.

use anyhow::{Context, Result};
use candle_core::{D, Device, Tensor, Var};
use fedcsg_ml::ops;

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

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?
        .abs()?
        .flatten_all()?
        .max(D::Minus1)?
        .to_scalar::<f32>()?)
}

#[test]
fn fused_add_relu_matches_candle() -> Result<()> {
    // Large enough to span several parallel chunks, with a ragged tail.
    let dims = [3, 17, 29, 31];
    let len = dims.iter().product();
    let mut results = Vec::new();
    for fused in [true, false] {
        let a = Var::from_tensor(&Tensor::from_vec(values(len, 1), &dims, &Device::Cpu)?)?;
        let b = Var::from_tensor(&Tensor::from_vec(values(len, 2), &dims, &Device::Cpu)?)?;
        let y = if fused {
            ops::add_relu(&a, &b)?
        } else {
            (a.as_tensor() + b.as_tensor())?.relu()?
        };
        let r = Tensor::from_vec(values(len, 3), &dims, &Device::Cpu)?;
        let grads = (&y * r)?.sum_all()?.backward()?;
        let da = grads
            .get(a.as_tensor())
            .cloned()
            .context("no gradient for a")?;
        let db = grads
            .get(b.as_tensor())
            .cloned()
            .context("no gradient for b")?;
        results.push((y, da, db));
    }
    let [(y, da, db), (y_ref, da_ref, db_ref)] = results.as_slice() else {
        unreachable!("two runs")
    };
    assert!(max_abs_diff(y, y_ref)? < 1e-6);
    assert!(max_abs_diff(da, da_ref)? < 1e-6);
    assert!(max_abs_diff(db, db_ref)? < 1e-6);
    Ok(())
}

#[test]
fn mismatched_shapes_are_errors() -> Result<()> {
    let a = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu)?;
    let b = Tensor::zeros((3, 2), candle_core::DType::F32, &Device::Cpu)?;
    assert!(ops::add_relu(&a, &b).is_err());
    Ok(())
}
