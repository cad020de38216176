//! `relu(a + b)`, the end of every residual block, as one custom op with a one-pass backward.
//!
//! candle runs it as an add and a ReLU forward, and a compare, a cast and a multiply backward,
//! each a full pass over the activations.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Error, Layout, Result, Shape, Tensor};

use super::cpu_features::vectorized;
use super::output_buffer::{OutSlots, OutputBuffer};
use super::parallel::for_each_part;

/// Elements per parallel task: big enough to amortise the dispatch, small enough to balance.
const CHUNK: usize = 1 << 15;

/// `relu(a + b)` for two tensors of the same shape; candle's ops unless both are f32 on the CPU.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let fast = [a, b]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32);
    if !fast {
        return (a + b)?.relu();
    }
    if a.dims() != b.dims() {
        return Err(Error::ShapeMismatchBinaryOp {
            lhs: a.shape().clone(),
            rhs: b.shape().clone(),
            op: "add-relu",
        });
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}

fn dense_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        return Err(Error::UnsupportedDTypeForOp(s.dtype(), op));
    };
    let (start, end) = l
        .contiguous_offsets()
        .ok_or(Error::RequiresContiguous { op })?;
    Ok(&data[start..end])
}

/// `out[i] = f(lhs[i], rhs[i])` over equal-length slices, in parallel chunks.
fn zip_map(lhs: &[f32], rhs: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Copy) -> Vec<f32> {
    assert_eq!(lhs.len(), rhs.len(), "zip_map operands differ in length");
    let mut out = OutputBuffer::new(lhs.len());
    for_each_part(
        out.slots().chunks(CHUNK).collect(),
        |i, chunk: &mut OutSlots<'_>| {
            vectorized(
                #[inline(always)]
                move || {
                    let start = i * CHUNK;
                    for ((mut o, &l), &r) in chunk
                        .reborrow()
                        .iter()
                        .zip(&lhs[start..])
                        .zip(&rhs[start..])
                    {
                        o.write(f(l, r));
                    }
                },
            )
        },
    );
    // SAFETY: the chunks cover `out`, and each chunk is zipped with equally long stretches of
    // `lhs` and `rhs` (same length as `out`), so every element was written.
    unsafe { out.assume_written() }
}

struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "fast-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (
            dense_f32(s1, l1, self.name())?,
            dense_f32(s2, l2, self.name())?,
        );
        if a.len() != b.len() {
            return Err(Error::ShapeMismatchBinaryOp {
                lhs: l1.shape().clone(),
                rhs: l2.shape().clone(),
                op: self.name(),
            });
        }
        Ok((
            CpuStorage::F32(zip_map(a, b, |x, y| (x + y).max(0.0))),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        out: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Both summands receive the same gradient: the output's, where the output was positive.
        let grad = relu_grad(out, dout)?;
        Ok((Some(grad.clone()), Some(grad)))
    }
}

/// The gradient reaching the input of a ReLU whose output is `out`: `dout * (out > 0)`.
pub(super) fn relu_grad(out: &Tensor, dout: &Tensor) -> Result<Tensor> {
    out.apply_op2_no_bwd(&dout.contiguous()?, &PassWherePositive)
}

/// `(out, dout) -> dout * (out > 0)`.
struct PassWherePositive;

impl CustomOp2 for PassWherePositive {
    fn name(&self) -> &'static str {
        "fast-relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (out, dout) = (
            dense_f32(s1, l1, self.name())?,
            dense_f32(s2, l2, self.name())?,
        );
        if out.len() != dout.len() {
            return Err(Error::ShapeMismatchBinaryOp {
                lhs: l1.shape().clone(),
                rhs: l2.shape().clone(),
                op: self.name(),
            });
        }
        Ok((
            CpuStorage::F32(zip_map(out, dout, |o, g| if o > 0.0 { g } else { 0.0 })),
            l1.shape().clone(),
        ))
    }
}
