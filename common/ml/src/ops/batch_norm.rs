//! Training-mode batch norm as one fused candle custom op (forward and backward), replacing the
//! dozen elementwise ops, transposes and copies candle-nn's `BatchNorm::forward_train` runs.

use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Error, InplaceOp1, Layout, Result, Shape, Tensor};
use candle_nn::BatchNorm;

use super::batch_norm_kernels::{self, ChannelStats, Planes};

/// `x.apply_t(bn, train)`, with a fused op for f32 CPU tensors of rank 4 and an affine `bn`
/// (training: batch statistics; evaluation: the running ones); candle-nn's own code otherwise.
pub fn batch_norm(bn: &BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
    dispatch(bn, x, train, false)
}

/// `x.apply_t(bn, train)?.relu()`, fused into the batch norm op (forward and backward) when
/// training, as [`batch_norm`] is.
pub fn batch_norm_relu(bn: &BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
    dispatch(bn, x, train, true)
}

/// `relu(x.apply_t(bn, train)? + skip)`, the end of a residual block: one fused op (forward and
/// backward) when training on f32 CPU tensors of rank 4 with an affine `bn`, saving the batch
/// norm's output and the sum's separate pass; [`batch_norm`] and [`add_relu`] otherwise.
///
/// [`add_relu`]: super::add_relu
pub fn batch_norm_add_relu(
    bn: &BatchNorm,
    x: &Tensor,
    skip: &Tensor,
    train: bool,
) -> Result<Tensor> {
    match bn.weight_and_bias() {
        Some((weight, bias)) if train && x.rank() == 4 && is_cpu_f32(&[x, skip, weight, bias]) => {
            if skip.dims() != x.dims() {
                candle_core::bail!(
                    "residual has shape {:?} but the batch norm input has {:?}",
                    skip.dims(),
                    x.dims()
                );
            }
            let running = RunningStats {
                mean: bn.running_mean(),
                var: bn.running_var(),
                momentum: bn.momentum(),
            };
            let (_, c, _, _) = x.dims4()?;
            check_channels(c, &[weight, bias, running.mean, running.var])?;
            let stats = Arc::new(OnceLock::new());
            let op = BatchNormAddReluTrain {
                eps: bn.eps() as f32,
                stats: Arc::clone(&stats),
            };
            let params = Tensor::cat(&[weight, bias], 0)?;
            let y = x
                .contiguous()?
                .apply_op3(&params, &skip.contiguous()?, op)?;
            update_running(&stats, &running, x.elem_count() / c.max(1))?;
            Ok(y)
        }
        _ => super::add_relu(&batch_norm(bn, x, train)?, skip),
    }
}

fn dispatch(bn: &BatchNorm, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
    match bn.weight_and_bias() {
        Some((weight, bias)) if train && x.rank() == 4 && is_cpu_f32(&[x, weight, bias]) => {
            let stats = RunningStats {
                mean: bn.running_mean(),
                var: bn.running_var(),
                momentum: bn.momentum(),
            };
            fused_train(x, weight, bias, stats, bn.eps(), relu)
        }
        Some((weight, bias))
            if !train
                && x.rank() == 4
                && is_cpu_f32(&[x, weight, bias, bn.running_mean(), bn.running_var()]) =>
        {
            fused_eval(bn, x, weight, bias, relu)
        }
        _ if relu => candle_core::ModuleT::forward_t(bn, x, train)?.relu(),
        _ => candle_core::ModuleT::forward_t(bn, x, train),
    }
}

/// The running statistics a training pass updates, and how far it moves them.
struct RunningStats<'a> {
    mean: &'a Tensor,
    var: &'a Tensor,
    momentum: f64,
}

fn is_cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// Batch norm of `x` (`[n, c, h, w]`, f32, CPU) with the batch's statistics, scaled by `weight`
/// and shifted by `bias` (both `[c]`), differentiable in all three.
///
/// Like candle-nn, it also moves `running_mean` and `running_var` (`[c]`) in place towards the
/// batch mean and unbiased variance by `momentum`: they are the `Var`s of a `BatchNorm`.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    fused_train(
        x,
        weight,
        bias,
        RunningStats {
            mean: running_mean,
            var: running_var,
            momentum,
        },
        eps,
        false,
    )
}

fn fused_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running: RunningStats,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    check_channels(c, &[weight, bias, running.mean, running.var])?;
    let stats = Arc::new(OnceLock::new());
    let op = BatchNormTrain {
        eps: eps as f32,
        relu,
        stats: Arc::clone(&stats),
    };
    let y = x
        .contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    update_running(&stats, &running, x.elem_count() / c.max(1))?;
    Ok(y)
}

/// Checks that the weight, bias and running statistics (in that order) all have `c` entries.
fn check_channels(c: usize, per_channel: &[&Tensor; 4]) -> Result<()> {
    for (what, t) in ["weight", "bias", "running mean", "running var"]
        .iter()
        .zip(per_channel)
    {
        if t.dims() != [c] {
            candle_core::bail!("batch norm {what} has shape {:?}, expected [{c}]", t.dims());
        }
    }
    Ok(())
}

/// Moves the running statistics towards the batch statistics a forward pass kept, as candle-nn
/// does: `count` values per channel, the variance tracked unbiased (as PyTorch does too).
fn update_running(
    stats: &OnceLock<ChannelStats>,
    running: &RunningStats,
    count: usize,
) -> Result<()> {
    let stats = stats
        .get()
        .ok_or_else(|| Error::Msg("batch norm forward kept no statistics".into()))?;
    let unbiased = count as f32 / (count.max(2) - 1) as f32;
    running.mean.inplace_op1(&MoveTowards {
        target: stats.mean.clone(),
        momentum: running.momentum as f32,
    })?;
    running.var.inplace_op1(&MoveTowards {
        target: stats.var.iter().map(|v| v * unbiased).collect(),
        momentum: running.momentum as f32,
    })
}

/// Evaluation: `y = x * scale + shift` per channel with `scale = gamma / sqrt(running_var + eps)`
/// and `shift = beta - running_mean * scale`, in one pass (candle-nn runs five broadcast ops).
fn fused_eval(
    bn: &BatchNorm,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    relu: bool,
) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    let mean = bn.running_mean().to_vec1::<f32>()?;
    let var = bn.running_var().to_vec1::<f32>()?;
    let (gamma, beta) = (weight.to_vec1::<f32>()?, bias.to_vec1::<f32>()?);
    if [mean.len(), var.len(), gamma.len(), beta.len()] != [c; 4] {
        candle_core::bail!("batch norm parameters do not have {c} channels");
    }
    let eps = bn.eps() as f32;
    let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let scale: Vec<f32> = gamma.iter().zip(&inv_std).map(|(g, s)| g * s).collect();
    let shift = beta
        .iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    let op = BatchNormEval {
        mean,
        inv_std,
        scale,
        shift,
        relu,
    };
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)
}

/// `(x, weight, bias) -> y` with fixed statistics (evaluation).
struct BatchNormEval {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
    relu: bool,
}

impl CustomOp3 for BatchNormEval {
    fn name(&self) -> &'static str {
        "fast-batch-norm-eval"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        _gs: &CpuStorage,
        _gl: &Layout,
        _bs: &CpuStorage,
        _bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = planes(xl.dims())?;
        if p.c != self.scale.len() {
            candle_core::bail!(
                "batch norm got {} channels, expected {}",
                p.c,
                self.scale.len()
            );
        }
        let x = dense_f32(xs, xl, self.name())?;
        let y = batch_norm_kernels::affine(p, x, &self.scale, &self.shift, self.relu);
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    /// Rarely needed (gradients through a model in evaluation mode), so plain candle ops:
    /// with `g = dy` masked by the ReLU, `dx = g * scale`, `dbeta = sum g`,
    /// `dgamma = sum g * (x - mean) * inv_std`.
    fn bwd(
        &self,
        x: &Tensor,
        _gamma: &Tensor,
        _beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = self.scale.len();
        let per_channel = |v: &[f32]| Tensor::from_slice(v, (1, c, 1, 1), x.device());
        let g = if self.relu {
            (dy * y.gt(0f32)?.to_dtype(dy.dtype())?)?
        } else {
            dy.clone()
        };
        let dx = g.broadcast_mul(&per_channel(&self.scale)?)?;
        let xhat = x
            .broadcast_sub(&per_channel(&self.mean)?)?
            .broadcast_mul(&per_channel(&self.inv_std)?)?;
        let dgamma = (&g * xhat)?.sum((0, 2, 3))?;
        let dbeta = g.sum((0, 2, 3))?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
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

/// Splits `[gamma, beta]` packed in one tensor (as the ops pass them) for `c` channels.
fn gamma_and_beta(params: &[f32], c: usize) -> Result<(&[f32], &[f32])> {
    if params.len() != 2 * c {
        candle_core::bail!(
            "batch norm got {} parameters for {c} channels",
            params.len()
        );
    }
    Ok(params.split_at(c))
}

fn planes(dims: &[usize]) -> Result<Planes> {
    match *dims {
        [n, c, h, w] => Ok(Planes { n, c, hw: h * w }),
        _ => Err(Error::UnexpectedNumberOfDims {
            expected: 4,
            got: dims.len(),
            shape: Shape::from(dims),
        }),
    }
}

/// `(x, weight, bias) -> y`; keeps the batch statistics for its backward pass and its caller.
struct BatchNormTrain {
    eps: f32,
    relu: bool,
    stats: Arc<OnceLock<ChannelStats>>,
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "fast-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = planes(xl.dims())?;
        let x = dense_f32(xs, xl, self.name())?;
        let (gamma, beta) = (
            dense_f32(gs, gl, self.name())?,
            dense_f32(bs, bl, self.name())?,
        );
        let (y, stats) = batch_norm_kernels::forward(p, x, gamma, beta, self.eps, self.relu, None);
        keep_stats(&self.stats, stats)?;
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = gamma.elem_count();
        // gamma and beta travel as one tensor so that the gradient op keeps three operands.
        let params = Tensor::cat(&[gamma, beta], 0)?;
        let (dx, dparams) = batch_norm_grads(&self.stats, x, dy, &params, self.relu)?;
        Ok((
            Some(dx),
            Some(dparams.narrow(0, 0, c)?),
            Some(dparams.narrow(0, c, c)?),
        ))
    }
}

/// Keeps a training forward's batch statistics for its backward pass and its caller.
fn keep_stats(cell: &OnceLock<ChannelStats>, stats: ChannelStats) -> Result<()> {
    cell.set(stats)
        .map_err(|_| Error::Msg("batch norm op ran twice".into()))
}

/// `(dx, [dweight, dbias])` of a training batch norm of `x` whose forward kept `stats`, given
/// the gradient `dy` of its output (before the fused ReLU when `relu` is set) and its packed
/// `[weight, bias]`.
fn batch_norm_grads(
    stats: &OnceLock<ChannelStats>,
    x: &Tensor,
    dy: &Tensor,
    params: &Tensor,
    relu: bool,
) -> Result<(Tensor, Tensor)> {
    let stats = stats
        .get()
        .ok_or_else(|| Error::Msg("batch norm backward before forward".into()))?;
    let grad_op = BatchNormGrad {
        stats: stats.clone(),
        relu,
    };
    let packed = x.apply_op3_no_bwd(&dy.contiguous()?, params, &grad_op)?;
    let n = x.elem_count();
    let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
    Ok((dx, packed.narrow(0, n, params.elem_count())?))
}

/// `(x, dy, [weight, bias]) -> [dx, dweight, dbias]` flattened into one vector.
struct BatchNormGrad {
    stats: ChannelStats,
    relu: bool,
}

impl CustomOp3 for BatchNormGrad {
    fn name(&self) -> &'static str {
        "fast-batch-norm-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = planes(xl.dims())?;
        if dyl.dims() != xl.dims() {
            return Err(Error::ShapeMismatchBinaryOp {
                lhs: xl.shape().clone(),
                rhs: dyl.shape().clone(),
                op: self.name(),
            });
        }
        let x = dense_f32(xs, xl, self.name())?;
        let dy = dense_f32(dys, dyl, self.name())?;
        let (gamma, beta) = gamma_and_beta(dense_f32(gs, gl, self.name())?, p.c)?;
        let out = batch_norm_kernels::backward(p, x, dy, gamma, beta, &self.stats, self.relu);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// `(x, [weight, bias], skip) -> relu(bn(x) + skip)`; keeps the batch statistics.
struct BatchNormAddReluTrain {
    eps: f32,
    stats: Arc<OnceLock<ChannelStats>>,
}

impl CustomOp3 for BatchNormAddReluTrain {
    fn name(&self) -> &'static str {
        "fast-batch-norm-add-relu-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = planes(xl.dims())?;
        if sl.dims() != xl.dims() {
            return Err(Error::ShapeMismatchBinaryOp {
                lhs: xl.shape().clone(),
                rhs: sl.shape().clone(),
                op: self.name(),
            });
        }
        let x = dense_f32(xs, xl, self.name())?;
        let (gamma, beta) = gamma_and_beta(dense_f32(ps, pl, self.name())?, p.c)?;
        let skip = dense_f32(ss, sl, self.name())?;
        let (y, stats) = batch_norm_kernels::forward(p, x, gamma, beta, self.eps, true, Some(skip));
        keep_stats(&self.stats, stats)?;
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    /// The ReLU passes `dy` where the output was positive; that gradient reaches the residual
    /// as it is and the batch norm's input through the batch norm's backward.
    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _skip: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let through_relu = super::add_relu::relu_grad(y, dy)?;
        let (dx, dparams) = batch_norm_grads(&self.stats, x, &through_relu, params, false)?;
        Ok((Some(dx), Some(dparams), Some(through_relu)))
    }
}

/// `running = (1 - momentum) * running + momentum * target`, in place.
struct MoveTowards {
    target: Vec<f32>,
    momentum: f32,
}

impl InplaceOp1 for MoveTowards {
    fn name(&self) -> &'static str {
        "batch-norm-running-update"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let CpuStorage::F32(data) = s else {
            return Err(Error::UnsupportedDTypeForOp(s.dtype(), self.name()));
        };
        let (start, end) = l
            .contiguous_offsets()
            .ok_or(Error::RequiresContiguous { op: self.name() })?;
        for (r, &t) in data[start..end].iter_mut().zip(&self.target) {
            *r = (1.0 - self.momentum) * *r + self.momentum * t;
        }
        Ok(())
    }
}
