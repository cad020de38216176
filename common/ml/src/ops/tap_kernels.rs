//! The AVX2 + FMA kernels of the direct convolutions, over any [`TapLayout`]: output pixel `q` of
//! channel `co` sums `weights[co][ci][t] * input[ci * plane + q + offsets[t]]`, so that every
//! kernel tap is a contiguous vector load at a fixed offset. `conv_direct` (stride-1 same convs)
//! and `conv_stride2` (phase-split stride-2 convs) build the layouts and the inputs.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use std::mem::MaybeUninit;

/// Output channels per register block of the weight gradient.
const CO_BLOCK: usize = 4;
/// 8-float vectors of pixels per register block.
const Q_VECS: usize = 2;
const Q_BLOCK: usize = 8 * Q_VECS;
/// Computed pixels per channel are a whole number of vectors: full blocks, then at most one
/// single-vector block (a 7x7 image computes 56 pixels rather than 64).
const Q_ALIGN: usize = 8;
/// Kernel taps per register block of the weight gradient.
const TAP_BLOCK: usize = 3;

/// Whether this CPU runs the kernels here (checked once per call by the `applies` functions).
pub(super) fn cpu_has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Where the kernels read one image's input and which output pixels they compute: output pixel
/// `q` (rows of `wp`) of channel `co` sums `weights[co][ci][t] * input[ci * plane + q + offsets[t]]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct TapLayout {
    /// Width of the computed output rows (the image's width plus columns that are dropped).
    pub wp: usize,
    /// Output pixels computed per channel, whole rows rounded up to whole register blocks.
    pub q: usize,
    /// Floats per input channel: room for every read of the last block.
    pub plane: usize,
    offsets: [usize; MAX_TAPS],
    pub taps: usize,
}

/// Largest kernel the direct path takes is 7x7.
pub(super) const MAX_TAPS: usize = 49;

impl TapLayout {
    /// `out_rows` output rows of `wp` pixels, with taps at `offsets` into input channels of at
    /// least `plane_min` floats.
    pub fn new(wp: usize, out_rows: usize, plane_min: usize, offsets: &[usize]) -> Self {
        assert!(offsets.len() <= MAX_TAPS, "too many kernel taps");
        let q = (out_rows * wp).div_ceil(Q_ALIGN) * Q_ALIGN;
        let max_offset = offsets.iter().copied().max().unwrap_or(0);
        let mut taps = [0; MAX_TAPS];
        taps[..offsets.len()].copy_from_slice(offsets);
        Self {
            wp,
            q,
            plane: plane_min.max(q + max_offset),
            offsets: taps,
            taps: offsets.len(),
        }
    }

    fn offsets(&self) -> &[usize] {
        &self.offsets[..self.taps]
    }
}

/// Output channels in the next register block of `same_conv` when `left` remain: 6 x 2 vectors
/// keep 12 accumulators in flight (FMA has 4 cycles of latency on two ports); blocks of 5 (10
/// accumulators) make up the rest wherever 6s and 5s add up exactly (16 = 6 + 5 + 5, any count
/// from 20 on), and 4 and 1 the remainders of small counts.
fn output_block(left: usize) -> usize {
    let sum_of_6s_and_5s = |n: usize| (0..=n / 5).any(|fives| (n - 5 * fives).is_multiple_of(6));
    if left >= 6 && sum_of_6s_and_5s(left - 6) {
        6
    } else if left >= 5 && sum_of_6s_and_5s(left - 5) {
        5
    } else if left >= 4 {
        4
    } else {
        1
    }
}

/// `out[co] = sum_ci sum_t weights[co][ci][t] * input[ci][q + offset[t]]` over padded-width
/// pixels `q`: one image, `n_in` padded input planes, `weights` as `[n_out, n_in, taps]`, `out`
/// as `[n_out, l.q]`.
pub(super) fn same_conv(
    l: &TapLayout,
    input: &[f32],
    n_in: usize,
    weights: &[f32],
    n_out: usize,
    out: &mut [MaybeUninit<f32>],
) {
    assert!(input.len() >= n_in * l.plane, "padded input too short");
    assert!(weights.len() >= n_out * n_in * l.taps, "weights too short");
    assert!(out.len() >= n_out * l.q, "output too short");
    let mut co = 0;
    while co < n_out {
        // SAFETY: the asserts above and `TapLayout::new` keep every access in bounds (the last
        // block reads at most `l.q - 1 + max offset < l.plane` into a plane), and `applies`
        // checked that the CPU has AVX2 and FMA.
        co += unsafe {
            match output_block(n_out - co) {
                6 => same_conv_block::<6>(l, input, n_in, weights, co, out),
                5 => same_conv_block::<5>(l, input, n_in, weights, co, out),
                4 => same_conv_block::<4>(l, input, n_in, weights, co, out),
                _ => same_conv_block::<1>(l, input, n_in, weights, co, out),
            }
        };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn same_conv_block<const CB: usize>(
    l: &TapLayout,
    input: &[f32],
    n_in: usize,
    weights: &[f32],
    co: usize,
    out: &mut [MaybeUninit<f32>],
) -> usize {
    // Stores through this pointer initialise the slots; nothing reads them here.
    let (x, w, y) = (
        input.as_ptr(),
        weights.as_ptr(),
        out.as_mut_ptr().cast::<f32>(),
    );
    let mut q0 = 0;
    while q0 + Q_BLOCK <= l.q {
        unsafe { pixel_block::<CB, Q_VECS>(l, x, n_in, w, co, y, q0) };
        q0 += Q_BLOCK;
    }
    // `l.q` is a whole number of vectors: one vector of pixels may be left.
    if q0 < l.q {
        unsafe { pixel_block::<CB, 1>(l, x, n_in, w, co, y, q0) };
    }
    CB
}

/// Output channels `co..co + CB` at pixels `q0..q0 + 8 * QV`, accumulated in `CB * QV`
/// registers over every input channel and tap.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn pixel_block<const CB: usize, const QV: usize>(
    l: &TapLayout,
    x: *const f32,
    n_in: usize,
    w: *const f32,
    co: usize,
    y: *mut f32,
    q0: usize,
) {
    let taps = l.taps;
    let mut acc = [[_mm256_setzero_ps(); QV]; CB];
    for ci in 0..n_in {
        let xb = unsafe { x.add(ci * l.plane + q0) };
        let wb = unsafe { w.add((co * n_in + ci) * taps) };
        for (t, &off) in l.offsets().iter().enumerate() {
            let xp = unsafe { xb.add(off) };
            let xv: [__m256; QV] =
                std::array::from_fn(|v| unsafe { _mm256_loadu_ps(xp.add(8 * v)) });
            for (c, acc_c) in acc.iter_mut().enumerate() {
                let wv = unsafe { _mm256_broadcast_ss(&*wb.add(c * n_in * taps + t)) };
                for v in 0..QV {
                    acc_c[v] = _mm256_fmadd_ps(xv[v], wv, acc_c[v]);
                }
            }
        }
    }
    for (c, acc_c) in acc.iter().enumerate() {
        for (v, a) in acc_c.iter().enumerate() {
            unsafe { _mm256_storeu_ps(y.add((co + c) * l.q + q0 + 8 * v), *a) };
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn same_conv_block<const CB: usize>(
    _: &TapLayout,
    _: &[f32],
    _: usize,
    _: &[f32],
    _: usize,
    _: &mut [MaybeUninit<f32>],
) -> usize {
    unreachable!("the direct conv runs only where `applies` found AVX2")
}

/// `dw[co][ci][t] += sum_q dy[co][q] * x[ci][q + offset[t]]` for one image: `dy` as
/// `[n_out, l.q]` padded-width rows (zero outside the image), `x` as `n_in` padded planes.
pub(super) fn same_conv_weight_grad(
    l: &TapLayout,
    x: &[f32],
    n_in: usize,
    dy: &[f32],
    n_out: usize,
    dw: &mut [f32],
) {
    assert!(x.len() >= n_in * l.plane, "padded input too short");
    assert!(dy.len() >= n_out * l.q, "output gradient too short");
    assert!(
        dw.len() >= n_out * n_in * l.taps,
        "weight gradient too short"
    );
    let mut co = 0;
    while co < n_out {
        let cb = if n_out - co >= CO_BLOCK { CO_BLOCK } else { 1 };
        for ci in 0..n_in {
            let mut t = 0;
            while t < l.taps {
                let tb = if l.taps - t >= TAP_BLOCK {
                    TAP_BLOCK
                } else {
                    1
                };
                // SAFETY: as in `same_conv`; pixel reads stop at `l.q`, tap reads at
                // `l.q - 1 + max offset < l.plane`.
                unsafe {
                    match (cb, tb) {
                        (CO_BLOCK, TAP_BLOCK) => {
                            weight_grad_block::<CO_BLOCK, TAP_BLOCK>(l, x, n_in, dy, co, ci, t, dw)
                        }
                        (CO_BLOCK, _) => {
                            weight_grad_block::<CO_BLOCK, 1>(l, x, n_in, dy, co, ci, t, dw)
                        }
                        (_, TAP_BLOCK) => {
                            weight_grad_block::<1, TAP_BLOCK>(l, x, n_in, dy, co, ci, t, dw)
                        }
                        _ => weight_grad_block::<1, 1>(l, x, n_in, dy, co, ci, t, dw),
                    }
                }
                t += tb;
            }
        }
        co += cb;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_block<const CB: usize, const TB: usize>(
    l: &TapLayout,
    x: &[f32],
    n_in: usize,
    dy: &[f32],
    co: usize,
    ci: usize,
    t0: usize,
    dw: &mut [f32],
) {
    let offsets = l.offsets();
    let (xp, dyp) = (x.as_ptr(), dy.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); TB]; CB];
    let xb = unsafe { xp.add(ci * l.plane) };
    for q in (0..l.q).step_by(8) {
        let xv: [__m256; TB] =
            std::array::from_fn(|t| unsafe { _mm256_loadu_ps(xb.add(q + offsets[t0 + t])) });
        for (c, acc_c) in acc.iter_mut().enumerate() {
            let dv = unsafe { _mm256_loadu_ps(dyp.add((co + c) * l.q + q)) };
            for t in 0..TB {
                acc_c[t] = _mm256_fmadd_ps(dv, xv[t], acc_c[t]);
            }
        }
    }
    for (c, acc_c) in acc.iter().enumerate() {
        for (t, a) in acc_c.iter().enumerate() {
            dw[((co + c) * n_in + ci) * l.taps + t0 + t] += hsum(*a);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_block<const CB: usize, const TB: usize>(
    _: &TapLayout,
    _: &[f32],
    _: usize,
    _: &[f32],
    _: usize,
    _: usize,
    _: usize,
    _: &mut [f32],
) {
    unreachable!("the direct conv runs only where `applies` found AVX2")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_blocks_cover_the_channels_in_wide_blocks() {
        let split = |mut left: usize| {
            let mut blocks = Vec::new();
            while left > 0 {
                let b = output_block(left);
                assert!(b <= left);
                blocks.push(b);
                left -= b;
            }
            blocks
        };
        assert_eq!(split(16), [6, 5, 5]);
        assert_eq!(split(32), [6, 6, 5, 5, 5, 5]);
        assert_eq!(split(64), [6, 6, 6, 6, 6, 6, 6, 6, 6, 5, 5]);
        assert_eq!(split(12), [6, 6]);
        assert_eq!(split(7), [4, 1, 1, 1]);
        assert_eq!(split(1), [1]);
    }
}
