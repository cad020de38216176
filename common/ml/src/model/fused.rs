//! Batch norm, ReLU and residual sums as the models call them: the fused CPU kernels of
//! [`crate::ops`] on the fast path, candle-nn's ops on the reference path.

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::BatchNorm;

use crate::ops::{self, ConvBackend};

/// `relu(bn(x))`.
pub fn bn_relu(bn: &BatchNorm, x: &Tensor, train: bool, backend: ConvBackend) -> Result<Tensor> {
    match backend {
        ConvBackend::Fast => ops::batch_norm_relu(bn, x, train),
        ConvBackend::Reference => bn.forward_t(x, train)?.relu(),
    }
}

/// `relu(bn(x) + skip)`, the end of a residual block.
pub fn bn_add_relu(
    bn: &BatchNorm,
    x: &Tensor,
    skip: &Tensor,
    train: bool,
    backend: ConvBackend,
) -> Result<Tensor> {
    match backend {
        ConvBackend::Fast => ops::batch_norm_add_relu(bn, x, skip, train),
        ConvBackend::Reference => (bn.forward_t(x, train)? + skip)?.relu(),
    }
}
