//! One SGD step over a variable, in place and in one pass: weight decay, FedProx's proximal pull,
//! momentum and the update, as a candle in-place op.
//!
//! As candle ops the same step took five to seven ops per variable (each a pass over the tensor
//! and a fresh allocation), all on the calling thread; this is one loop that reads the gradient
//! and writes the weights and the momentum buffer. Its arithmetic is the ops' own, in f32 and in
//! the same order (`g + w * decay`, `- anchor`, `buf * momentum + g`, `w - g * lr`), so that it
//! computes the same values (tested against the tensor-op formulation).

use std::sync::Mutex;

use candle_core::{CpuStorage, Error, InplaceOp2, Layout, Result};

/// The step's settings for one variable. `anchor` is FedProx's `μ·w₀` (`decay` then includes
/// `μ`); `buffer` is the momentum buffer, empty before the first step (which then starts it at
/// the gradient, as PyTorch does).
pub struct SgdStep<'a> {
    pub lr: f32,
    pub momentum: f32,
    pub decay: f32,
    pub anchor: Option<&'a [f32]>,
    pub buffer: &'a Mutex<Vec<f32>>,
}

fn dense<'a>(data: &'a [f32], l: &Layout, what: &'static str) -> Result<&'a [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or(Error::RequiresContiguous { op: what })?;
    Ok(&data[start..end])
}

impl InplaceOp2 for SgdStep<'_> {
    fn name(&self) -> &'static str {
        "sgd-step"
    }

    fn cpu_fwd(
        &self,
        ws: &mut CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(w), CpuStorage::F32(g)) = (ws, gs) else {
            candle_core::bail!("sgd-step: weights and gradient must be f32");
        };
        let (start, end) = wl.contiguous_offsets().ok_or(Error::RequiresContiguous {
            op: "sgd-step weights",
        })?;
        let w = &mut w[start..end];
        let g = dense(g, gl, "sgd-step gradient")?;
        if g.len() != w.len() || self.anchor.is_some_and(|a| a.len() != w.len()) {
            candle_core::bail!(
                "sgd-step: {} weights, {} gradient values, {:?} anchor values",
                w.len(),
                g.len(),
                self.anchor.map(<[f32]>::len)
            );
        }
        let mut buffer = self
            .buffer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let first = buffer.is_empty();
        if self.momentum != 0.0 && first {
            buffer.resize(w.len(), 0.0);
        }
        let (lr, momentum, decay) = (self.lr, self.momentum, self.decay);
        for i in 0..w.len() {
            let mut step = g[i];
            if decay != 0.0 {
                step += w[i] * decay;
            }
            if let Some(anchor) = self.anchor {
                step -= anchor[i];
            }
            if momentum != 0.0 {
                if !first {
                    step += buffer[i] * momentum;
                }
                buffer[i] = step;
            }
            w[i] -= step * lr;
        }
        Ok(())
    }
}
