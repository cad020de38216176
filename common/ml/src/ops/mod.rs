//! Compute kernels the models call instead of candle's directly, so that a faster CPU path can
//! replace candle's reference ops without touching any model definition.
//!
//! `conv2d` with [`ConvBackend::Fast`] runs custom ops (forward and both gradients) for f32 on
//! the CPU and candle's own op everywhere else. Stride-1 "same" convolutions and stride-2 3x3
//! ones run direct kernels (`conv_direct`, `conv_stride2`) that read shifted copies of the input
//! instead of an im2col matrix, on AVX-512 (`tap_kernels_avx512`) or AVX2 + FMA
//! (`tap_kernels_avx2`), whichever [`VectorIsa::selected`] picks: the widest the CPU has, or
//! what `FEDCSG_ISA=avx512|avx2|generic` asks for; everything else (and `generic`) runs im2col +
//! gemm. [`batch_norm`] is a drop-in for `x.apply_t(&bn, train)` whose training pass is one
//! fused op with a fused backward (and whose evaluation pass is one scale-and-shift);
//! [`batch_norm_relu`], [`batch_norm_add_relu`] and [`add_relu`] fold in the ReLU and the
//! residual sum that follow a batch norm, saving candle's separate passes; their loops are
//! compiled for the selected ISA too (`cpu_features::vectorized`). [`SgdStep`] is the
//! optimiser's whole step per variable as one in-place pass.
//!
//! Threads: run training after [`tune_process_for_training`] (`CANDLE_NUM_THREADS=1`, malloc
//! keeps freed buffers). candle 0.11's own elementwise pool spins its workers after each op;
//! with it on, those spinners and the kernels' threads fight for the cores on a shared machine.
//! With it off, the kernels here run on rayon's pool, sized by `RAYON_NUM_THREADS` (or
//! [`set_kernel_threads`], the worker's `--threads`). See `bench/README.md` for the measurements.
//!
//! Unsafe code (this workspace has none elsewhere) keeps to a few contracts, each in one place:
//! kernels fill fresh outputs only through the write-only `OutSlots` of an `OutputBuffer`,
//! whose debug builds check that every slot was written; `#[target_feature]` code is reachable
//! only with an `Avx2Fma` or `Avx512` token from the run-time CPU check; sizes that bound raw-pointer
//! accesses are computed with overflow checks (`sizes`); and the process-wide settings change
//! only while the process provably has one thread.

mod add_relu;
mod batch_norm;
mod batch_norm_kernels;
mod conv_direct;
mod conv_fast;
mod conv_geometry;
mod conv_kernels;
mod conv_stride2;
mod cpu_features;
mod im2col;
mod image_tasks;
mod output_buffer;
mod parallel;
mod process_tuning;
mod sgd_step;
mod sgemm;
mod sizes;
mod tap_kernels;
mod tap_kernels_avx2;
mod tap_kernels_avx512;
#[cfg(test)]
mod test_support;

use candle_core::{Result, Tensor};

pub use add_relu::add_relu;
pub use batch_norm::{batch_norm, batch_norm_add_relu, batch_norm_relu, batch_norm_train};
pub use conv_fast::{input_grad as conv2d_input_grad, weight_grad as conv2d_weight_grad};
pub use conv_geometry::ConvShapeError;
pub use cpu_features::{ISA_ENV, IsaError, IsaName, VectorIsa, isa_from_env};
pub use parallel::set_kernel_threads;
pub use process_tuning::{ProcessTuning, tune_process_for_training};
pub use sgd_step::SgdStep;

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
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    backend: ConvBackend,
) -> Result<Tensor> {
    match backend {
        ConvBackend::Fast if conv_fast::supports(x, w) => {
            conv_fast::conv2d_fast(x, w, stride, padding)
        }
        // Other dtypes and devices have no fast path: candle's op is correct there.
        ConvBackend::Fast | ConvBackend::Reference => x.conv2d(w, padding, stride, 1, 1),
    }
}
