//! The AVX-512 register blocks of the direct convolutions (see `tap_kernels`): 16-float vectors
//! in 32 registers. Forward: 6 (or 5, 4, 1) output channels x 4 vectors (64 pixels) accumulate
//! in up to 24 registers, the 4 input vectors and the broadcast weights taking most of the rest;
//! weight gradient: 4 output channels x 3 taps.
//!
//! Rows of computed pixels are a multiple of 8, not 16 (`TapLayout`): the last vector of a row
//! that ends half-way is loaded and stored under the mask `0x00ff`. Masked loads suppress faults
//! and read nothing outside the mask, so the bounds the AVX2 kernels keep hold here unchanged.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::cpu_features::Avx512;
use super::tap_kernels::{RegisterBlocks, TapLayout};

/// Floats per vector.
const LANES: usize = 16;
/// Vectors of pixels per register block of the forward pass.
const Q_VECS: usize = 4;
const Q_BLOCK: usize = LANES * Q_VECS;
/// Every lane; the lower half (a row that ends 8 floats into a vector).
const FULL: u16 = 0xffff;
const HALF: u16 = 0x00ff;

/// Output channels `co..co + CB` of `same_conv` at every pixel.
///
/// # Safety
/// The CPU has AVX-512F (the `Avx512` argument proves it; it is here so that the proof travels
/// with the call). `x` points at `n_in * l.plane` readable floats, `w` at
/// `(co + CB) * n_in * l.taps` and `y` at `(co + CB) * l.q` writable ones, with `l` built by
/// `TapLayout::new`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn same_conv_block<const CB: usize>(
    _cpu: Avx512,
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
        unsafe { pixel_block::<CB, Q_VECS>(l, x, n_in, w, co, y, q0, FULL) };
        q0 += Q_BLOCK;
    }
    // Fewer than 64 pixels are left, a multiple of 8: up to 4 vectors, the last maybe half.
    let rest = l.q() - q0;
    let last = if rest.is_multiple_of(LANES) {
        FULL
    } else {
        HALF
    };
    // SAFETY: the block's unmasked lanes are pixels `q0..q0 + rest`, below `l.q`.
    unsafe {
        match rest.div_ceil(LANES) {
            0 => {}
            1 => pixel_block::<CB, 1>(l, x, n_in, w, co, y, q0, last),
            2 => pixel_block::<CB, 2>(l, x, n_in, w, co, y, q0, last),
            3 => pixel_block::<CB, 3>(l, x, n_in, w, co, y, q0, last),
            _ => pixel_block::<CB, 4>(l, x, n_in, w, co, y, q0, last),
        }
    }
}

/// Output channels `co..co + CB` at pixels `q0..q0 + 16 * QV` (the last vector's lanes limited
/// to `last_mask`), accumulated in `CB * QV` registers over every input channel and tap.
///
/// # Safety
/// As for `same_conv_block`, with every lane of the block that `last_mask` keeps below `l.q`
/// (the CPU check is the caller's `#[target_feature]`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
// Each argument is one coordinate of the block; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
unsafe fn pixel_block<const CB: usize, const QV: usize>(
    l: &TapLayout,
    x: *const f32,
    n_in: usize,
    w: *const f32,
    co: usize,
    y: *mut f32,
    q0: usize,
    last_mask: u16,
) {
    let taps = l.taps();
    let plane = l.plane();
    let mask = |v: usize| if v + 1 == QV { last_mask } else { FULL };
    let mut acc = [[_mm512_setzero_ps(); QV]; CB];
    for ci in 0..n_in {
        // SAFETY: `ci * plane + q0 < n_in * plane`: inside the input (contract).
        let xb = unsafe { x.add(ci * plane + q0) };
        // SAFETY: `(co * n_in + ci) * taps` is below `(co + CB) * n_in * taps` (contract).
        let wb = unsafe { w.add((co * n_in + ci) * taps) };
        for (t, &off) in l.offsets().iter().enumerate() {
            // SAFETY: every unmasked lane `q` of the block has `q + off <= l.q - 1 + max offset
            // < plane`: the reads below stay inside channel `ci`'s plane (masked-off lanes are
            // not read).
            let xp = unsafe { xb.add(off) };
            // SAFETY: as above, for every `v < QV`.
            let xv: [__m512; QV] = std::array::from_fn(|v| unsafe {
                _mm512_maskz_loadu_ps(mask(v), xp.add(LANES * v))
            });
            for (c, acc_c) in acc.iter_mut().enumerate() {
                // SAFETY: `((co + c) * n_in + ci) * taps + t` with `c < CB`, `t < taps` is below
                // `(co + CB) * n_in * taps`.
                let wv = _mm512_set1_ps(unsafe { *wb.add(c * n_in * taps + t) });
                for v in 0..QV {
                    acc_c[v] = _mm512_fmadd_ps(xv[v], wv, acc_c[v]);
                }
            }
        }
    }
    for (c, acc_c) in acc.iter().enumerate() {
        for (v, a) in acc_c.iter().enumerate() {
            // SAFETY: the unmasked lanes are pixels below `l.q` of channel `co + c < co + CB`;
            // the store writes computed floats only, and only there.
            unsafe { _mm512_mask_storeu_ps(y.add((co + c) * l.q() + q0 + LANES * v), mask(v), *a) };
        }
    }
}

/// Adds output channels `co..co + CB` x taps `t0..t0 + TB` of input channel `ci` into `dw`.
///
/// # Safety
/// The CPU has AVX-512F (the `Avx512` argument proves it). `l` comes from `TapLayout::new`,
/// `ci < n_in`, `t0 + TB <= l.taps`, `x` holds at least `(ci + 1) * l.plane` floats and `dy` at
/// least `(co + CB) * l.q` (the `dw` writes are bounds-checked).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
// Each argument is one coordinate of the block; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_block<const CB: usize, const TB: usize>(
    _cpu: Avx512,
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
    let mut acc = [[_mm512_setzero_ps(); TB]; CB];
    // SAFETY: `ci * l.plane` is inside `x` (contract).
    let xb = unsafe { xp.add(ci * l.plane()) };
    let mut q = 0;
    while q < l.q() {
        // `l.q` is a multiple of 8: the last vector may hold only 8 pixels.
        let mask = if q + LANES <= l.q() { FULL } else { HALF };
        // SAFETY: every unmasked lane `p < l.q` has `p + offsets[t0 + t] <= l.q - 1 + max offset
        // < l.plane`: inside channel `ci`'s plane for every `t < TB`.
        let xv: [__m512; TB] = std::array::from_fn(|t| unsafe {
            _mm512_maskz_loadu_ps(mask, xb.add(q + offsets[t0 + t]))
        });
        for (c, acc_c) in acc.iter_mut().enumerate() {
            // SAFETY: the unmasked lanes lie below `(co + c) * l.q + l.q <= (co + CB) * l.q`:
            // inside `dy` (contract). Masked-off lanes load zeros and add nothing.
            let dv = unsafe { _mm512_maskz_loadu_ps(mask, dyp.add((co + c) * l.q() + q)) };
            for t in 0..TB {
                acc_c[t] = _mm512_fmadd_ps(dv, xv[t], acc_c[t]);
            }
        }
        q += LANES;
    }
    for (c, acc_c) in acc.iter().enumerate() {
        for (t, a) in acc_c.iter().enumerate() {
            dw[((co + c) * n_in + ci) * l.taps() + t0 + t] += _mm512_reduce_add_ps(*a);
        }
    }
}

impl RegisterBlocks for Avx512 {
    unsafe fn same_conv_block<const CB: usize>(
        self,
        l: &TapLayout,
        x: *const f32,
        n_in: usize,
        w: *const f32,
        co: usize,
        y: *mut f32,
    ) {
        // SAFETY: the trait method's contract is this fn's, `self` the proof of AVX-512F.
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
        // SAFETY: the trait method's contract is this fn's, `self` the proof of AVX-512F.
        unsafe { weight_grad_block::<CB, TB>(self, l, x, n_in, dy, co, ci, t0, dw) }
    }
}

/// # Safety
/// None needed: an `Avx512` token cannot exist off x86_64, so this is never called.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn same_conv_block<const CB: usize>(
    _: Avx512,
    _: &TapLayout,
    _: *const f32,
    _: usize,
    _: *const f32,
    _: usize,
    _: *mut f32,
) {
    unreachable!("an Avx512 token exists only on x86_64")
}

/// # Safety
/// None needed: an `Avx512` token cannot exist off x86_64, so this is never called.
#[cfg(not(target_arch = "x86_64"))]
// The x86_64 version's signature.
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_block<const CB: usize, const TB: usize>(
    _: Avx512,
    _: &TapLayout,
    _: &[f32],
    _: usize,
    _: &[f32],
    _: usize,
    _: usize,
    _: usize,
    _: &mut [f32],
) {
    unreachable!("an Avx512 token exists only on x86_64")
}
