//! The fast convolution as candle custom ops: a forward op whose backward returns the input and
//! weight gradients computed by two more custom ops, so autograd never reaches candle's slow
//! `conv_transpose2d`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Error, Layout, Result, Shape, Tensor};

use super::conv_geometry::ConvGeometry;
use super::conv_kernels;

/// Whether the fast op can run these operands; anything else takes candle's reference op.
pub fn supports(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu() && w.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32
}

/// `conv2d(x, w)` with the fast forward and backward; `x` and `w` must be f32 on the CPU.
pub fn conv2d_fast(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    // Validate here so a shape mistake is reported against the caller, not deep in autograd.
    ConvGeometry::new(x.dims(), w.dims(), stride, padding)?;
    // The kernels read dense NCHW; `contiguous` is free for the usual already-dense tensors.
    x.contiguous()?
        .apply_op2(&w.contiguous()?, Conv2dForward { stride, padding })
}

/// The contiguous f32 elements of a CPU operand.
fn dense_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        return Err(Error::UnsupportedDTypeForOp(s.dtype(), op));
    };
    let (start, end) = l
        .contiguous_offsets()
        .ok_or(Error::RequiresContiguous { op })?;
    Ok(&data[start..end])
}

struct Conv2dForward {
    stride: usize,
    padding: usize,
}

impl CustomOp2 for Conv2dForward {
    fn name(&self) -> &'static str {
        "fast-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = ConvGeometry::new(xl.dims(), wl.dims(), self.stride, self.padding)?;
        let x = dense_f32(xs, xl, self.name())?;
        let w = dense_f32(ws, wl, self.name())?;
        Ok((
            CpuStorage::F32(conv_kernels::forward(&g, x, w)),
            g.output_shape(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The stem's input is data: skip its gradient rather than compute and drop it.
        let dx = if x.track_op() {
            Some(input_grad(dy, w, x.dims(), self.stride, self.padding)?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(weight_grad(x, dy, w.dims(), self.stride, self.padding)?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// The gradient of `conv2d_fast(x, w)` with respect to `x` (of shape `x_dims`), given the output
/// gradient `dy`; f32 on the CPU.
pub fn input_grad(
    dy: &Tensor,
    w: &Tensor,
    x_dims: &[usize],
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let g = ConvGeometry::new(x_dims, w.dims(), stride, padding)?;
    g.check_output_grad(dy.dims())?;
    // Gradients arriving from a sum are broadcasts with zero strides; the kernels want dense.
    // No backward of its own: nothing here differentiates twice, and `_no_bwd` keeps the result
    // out of the graph.
    dy.contiguous()?
        .apply_op2_no_bwd(&w.contiguous()?, &Conv2dInputGrad { geometry: g })
}

/// The gradient of `conv2d_fast(x, w)` with respect to `w` (of shape `w_dims`), given the output
/// gradient `dy`; f32 on the CPU.
pub fn weight_grad(
    x: &Tensor,
    dy: &Tensor,
    w_dims: &[usize],
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let g = ConvGeometry::new(x.dims(), w_dims, stride, padding)?;
    g.check_output_grad(dy.dims())?;
    x.contiguous()?
        .apply_op2_no_bwd(&dy.contiguous()?, &Conv2dWeightGrad { geometry: g })
}

/// `(dy, w) -> dx`.
struct Conv2dInputGrad {
    geometry: ConvGeometry,
}

impl CustomOp2 for Conv2dInputGrad {
    fn name(&self) -> &'static str {
        "fast-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        dys: &CpuStorage,
        dyl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        g.check_output_grad(dyl.dims())?;
        let dy = dense_f32(dys, dyl, self.name())?;
        let w = dense_f32(ws, wl, self.name())?;
        Ok((
            CpuStorage::F32(conv_kernels::input_grad(g, dy, w)),
            g.input_shape(),
        ))
    }
}

/// `(x, dy) -> dw`.
struct Conv2dWeightGrad {
    geometry: ConvGeometry,
}

impl CustomOp2 for Conv2dWeightGrad {
    fn name(&self) -> &'static str {
        "fast-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        g.check_output_grad(dyl.dims())?;
        let x = dense_f32(xs, xl, self.name())?;
        let dy = dense_f32(dys, dyl, self.name())?;
        Ok((
            CpuStorage::F32(conv_kernels::weight_grad(g, x, dy)),
            g.weight_shape(),
        ))
    }
}
