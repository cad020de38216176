//! Compute kernels the models call instead of candle's directly, so that a faster CPU path can
//! replace candle's reference ops without touching any model definition.

use candle_core::{Result, Tensor};

/// Which implementation a convolution uses.
///
/// `Reference` is candle's own `conv2d` (forward) with candle's autograd (backward through
/// `conv_transpose2d`); it is kept for numerics tests and as a fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvBackend {
    #[default]
    Fast,
    Reference,
}

/// 2-D convolution without bias: `x` is `[n, c_in, h, w]`, `w` is `[c_out, c_in, k, k]`.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize, backend: ConvBackend) -> Result<Tensor> {
    match backend {
        // Until the fast kernels land, both backends run candle's reference op.
        ConvBackend::Fast | ConvBackend::Reference => x.conv2d(w, padding, stride, 1, 1),
    }
}
