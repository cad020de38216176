//! The AVX2 + FMA register blocks of the direct convolutions (see `tap_kernels`): 8-float
//! vectors in 16 registers. Forward: 6 (or 5, 4, 1) output channels x 2 vectors of pixels
//! accumulate in up to 12 registers; weight gradient: 4 output channels x 3 taps.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::cpu_features::Avx2Fma;
use super::tap_kernels::{RegisterBlocks, TapLayout};

/// 8-float vectors of pixels per register block.
const Q_VECS: usize = 2;
const Q_BLOCK: usize = 8 * Q_VECS;

/// Output channels `co..co + CB` of `same_conv` at every pixel.
///
/// # Safety
/// The CPU has AVX2 and FMA (the `Avx2Fma` argument proves it; it is here so that the proof
/// travels with the call). `x` points at `n_in * l.plane` readable floats, `w` at
/// `(co + CB) * n_in * l.taps` and `y` at `(co + CB) * l.q` writable ones, with `l` built by
/// `TapLayout::new`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn same_conv_block<const CB: usize>(
    _cpu: Avx2Fma,
    l: &TapLayout,
    x: *const f32,
    n_in: usize,
    w: *const f32,
    co: usize,
    y: *mut f32,
) {
    let mut q0 = 0;
    while q0 + Q_BLOCK <= l.q() {
        // SAFETY: pixels `q0..q0 + Q_BLOCK` lie below `l.q`; the rest is this fn's contract.
        unsafe { pixel_block::<CB, Q_VECS>(l, x, n_in, w, co, y, q0) };
        q0 += Q_BLOCK;
    }
    // `l.q` is a whole number of vectors: one vector of pixels may be left.
    if q0 < l.q() {
        // SAFETY: `l.q` is a multiple of 8, so pixels `q0..q0 + 8` lie below it.
        unsafe { pixel_block::<CB, 1>(l, x, n_in, w, co, y, q0) };
    }
}

/// Output channels `co..co + CB` at pixels `q0..q0 + 8 * QV`, accumulated in `CB * QV`
/// registers over every input channel and tap.
///
/// # Safety
/// As for `same_conv_block`, with `q0 + 8 * QV <= l.q` (the CPU check is the caller's
/// `#[target_feature]`).
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
    let taps = l.taps();
    let plane = l.plane();
    let mut acc = [[_mm256_setzero_ps(); QV]; CB];
    for ci in 0..n_in {
        // SAFETY: `ci * plane + q0 < n_in * plane`: inside the input (contract).
        let xb = unsafe { x.add(ci * plane + q0) };
        // SAFETY: `(co * n_in + ci) * taps` is below `(co + CB) * n_in * taps` (contract).
        let wb = unsafe { w.add((co * n_in + ci) * taps) };
        for (t, &off) in l.offsets().iter().enumerate() {
            // SAFETY: `q0 + off + 8 * QV - 1 <= l.q - 1 + max offset < plane`: the reads
            // below stay inside channel `ci`'s plane.
            let xp = unsafe { xb.add(off) };
            // SAFETY: as above, `xp + 8 * v + 7` is inside the plane for every `v < QV`.
            let xv: [__m256; QV] =
                std::array::from_fn(|v| unsafe { _mm256_loadu_ps(xp.add(8 * v)) });
            for (c, acc_c) in acc.iter_mut().enumerate() {
                // SAFETY: `((co + c) * n_in + ci) * taps + t` with `c < CB`, `t < taps` is below
                // `(co + CB) * n_in * taps`.
                let wv = unsafe { _mm256_broadcast_ss(&*wb.add(c * n_in * taps + t)) };
                for v in 0..QV {
                    acc_c[v] = _mm256_fmadd_ps(xv[v], wv, acc_c[v]);
                }
            }
        }
    }
    for (c, acc_c) in acc.iter().enumerate() {
        for (v, a) in acc_c.iter().enumerate() {
            // SAFETY: `(co + c) * l.q + q0 + 8 * v + 7 < (co + CB) * l.q` as
            // `q0 + 8 * QV <= l.q`; the store writes computed floats only.
            unsafe { _mm256_storeu_ps(y.add((co + c) * l.q() + q0 + 8 * v), *a) };
        }
    }
}

/// Adds output channels `co..co + CB` x taps `t0..t0 + TB` of input channel `ci` into `dw`.
///
/// # Safety
/// The CPU has AVX2 and FMA (the `Avx2Fma` argument proves it). `l` comes from
/// `TapLayout::new`, `ci < n_in`, `t0 + TB <= l.taps`, `x` holds at least `(ci + 1) * l.plane`
/// floats and `dy` at least `(co + CB) * l.q` (the `dw` writes are bounds-checked).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
// Each argument is one coordinate of the block; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_block<const CB: usize, const TB: usize>(
    _cpu: Avx2Fma,
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
    // SAFETY: `ci * l.plane` is inside `x` (contract).
    let xb = unsafe { xp.add(ci * l.plane()) };
    for q in (0..l.q()).step_by(8) {
        // SAFETY: `q + 7 + offsets[t0 + t] <= l.q - 1 + max offset < l.plane`: inside channel
        // `ci`'s plane for every `t < TB`.
        let xv: [__m256; TB] =
            std::array::from_fn(|t| unsafe { _mm256_loadu_ps(xb.add(q + offsets[t0 + t])) });
        for (c, acc_c) in acc.iter_mut().enumerate() {
            // SAFETY: `(co + c) * l.q + q + 7 < (co + CB) * l.q`: inside `dy` (contract).
            let dv = unsafe { _mm256_loadu_ps(dyp.add((co + c) * l.q() + q)) };
            for t in 0..TB {
                acc_c[t] = _mm256_fmadd_ps(dv, xv[t], acc_c[t]);
            }
        }
    }
    for (c, acc_c) in acc.iter().enumerate() {
        for (t, a) in acc_c.iter().enumerate() {
            dw[((co + c) * n_in + ci) * l.taps() + t0 + t] += hsum(*a);
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

impl RegisterBlocks for Avx2Fma {
    unsafe fn same_conv_block<const CB: usize>(
        self,
        l: &TapLayout,
        x: *const f32,
        n_in: usize,
        w: *const f32,
        co: usize,
        y: *mut f32,
    ) {
        // SAFETY: the trait method's contract is this fn's, `self` the proof of AVX2 and FMA.
        unsafe { same_conv_block::<CB>(self, l, x, n_in, w, co, y) }
    }

    unsafe fn weight_grad_block<const CB: usize, const TB: usize>(
        self,
        l: &TapLayout,
        x: &[f32],
        n_in: usize,
        dy: &[f32],
        co: usize,
        ci: usize,
        t0: usize,
        dw: &mut [f32],
    ) {
        // SAFETY: the trait method's contract is this fn's, `self` the proof of AVX2 and FMA.
        unsafe { weight_grad_block::<CB, TB>(self, l, x, n_in, dy, co, ci, t0, dw) }
    }
}

/// # Safety
/// None needed: an `Avx2Fma` token cannot exist off x86_64, so this is never called.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn same_conv_block<const CB: usize>(
    _: Avx2Fma,
    _: &TapLayout,
    _: *const f32,
    _: usize,
    _: *const f32,
    _: usize,
    _: *mut f32,
) {
    unreachable!("an Avx2Fma token exists only on x86_64")
}

/// # Safety
/// None needed: an `Avx2Fma` token cannot exist off x86_64, so this is never called.
#[cfg(not(target_arch = "x86_64"))]
// The x86_64 version's signature.
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_block<const CB: usize, const TB: usize>(
    _: Avx2Fma,
    _: &TapLayout,
    _: &[f32],
    _: usize,
    _: &[f32],
    _: usize,
    _: usize,
    _: usize,
    _: &mut [f32],
) {
    unreachable!("an Avx2Fma token exists only on x86_64")
}
