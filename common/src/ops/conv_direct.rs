//! Direct convolution for stride-1 "same" convolutions (odd square kernel, padding `(k-1)/2`:
//! every 3x3 conv of a ResNet but the two downsampling ones), forward and both gradients, with
//! AVX2 + FMA.
//!
//! im2col + gemm copies each image nine times into a column matrix and gemm packs that copy
//! again, while a 16-channel layer does only 16 multiply-adds per copied value: it is bound by
//! those copies, not by arithmetic. Here the input is copied once into a zero-bordered plane of
//! width `wp = w + 2p`, and output pixel `q = oy * wp + ox` (in padded-width coordinates) reads
//! input `q + ky * wp + kx` for kernel tap `(ky, kx)`: every tap is a contiguous vector load at a
//! fixed offset. Outputs are computed for all `wp` columns of a row (the `2p` extra ones are
//! dropped) in blocks of 4 output channels x 16 pixels held in 8 AVX registers.
//!
//! The input gradient of a same conv is the same conv of `dy` with the kernel flipped and its
//! channel axes swapped; the weight gradient reduces `dy * shifted x` over the pixels.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use std::mem::MaybeUninit;

use super::conv_geometry::ConvGeometry;
use super::output_buffer::{OutputBuffer, as_slots};
use super::parallel::{for_each_part, threads, with_scratch};

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

/// Whether this geometry and CPU take the direct kernels.
pub fn applies(g: &ConvGeometry) -> bool {
    let same = g.stride == 1 && g.kh == g.kw && g.kh % 2 == 1 && 2 * g.padding + 1 == g.kh;
    same && g.kh > 1 && g.kh * g.kh <= MAX_TAPS && cpu_has_avx2_fma()
}

/// Whether the direct weight gradient beats im2col + gemm. It sums each image's pixels into
/// registers and then into the weight gradient, so small images spend their time in those
/// per-image reductions: at batch 64 it took 2.2 ms against gemm's 4.5 ms for 16 channels at
/// 28x28 and 2.7 against 3.6 at 14x14, but 5.2 against 3.6 for 64 channels at 7x7
/// (`examples/conv_bench.rs`).
pub fn weight_grad_pays(g: &ConvGeometry) -> bool {
    g.out_pixels() >= 100
}

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
const MAX_TAPS: usize = 49;

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

/// Zeros before the first padded row of each input copy (at least the padding, at most 3 for
/// the 7x7 kernels `applies` admits): the first pixels' left taps read there.
const GUARD: usize = 8;

/// The input layout of a stride-1 same conv, which computes outputs at the image's own width:
/// output pixel `q = oy * w + ox` of tap `(ky, kx)` reads `q + (ky - p) * w + (kx - p)` of the
/// image with `p` zero rows above and below. Where `ox + kx - p` falls off the row, that read
/// lands on the previous or next row instead of padding, so each channel holds one copy of the
/// image per kernel column `kx`, with the columns such wrapped reads land on zeroed (a tap
/// shifted left by `s` never reads the last `s` columns legitimately, nor a right shift the first
/// `s`). The output is then dense, with no padding columns to compute and drop. Returns the
/// layout and the floats per copy.
fn shifted_copies_layout(g: &ConvGeometry) -> (TapLayout, usize) {
    let (k, p, h, w) = (g.kh, g.padding, g.h, g.w);
    debug_assert!(p <= GUARD);
    let copy = GUARD + (h + 2 * p) * w + GUARD;
    let offsets: Vec<usize> = (0..k * k)
        .map(|t| {
            let (ky, kx) = (t / k, t % k);
            kx * copy + GUARD + ky * w + kx - p
        })
        .collect();
    (TapLayout::new(w, h, k * copy, &offsets), copy)
}

/// Writes `channels` images (`[channels, h, w]`) into their shifted copies (see
/// `shifted_copies_layout`); everything else of `dst` stays as the caller zeroed it.
fn place_shifted_copies(
    g: &ConvGeometry,
    l: &TapLayout,
    copy: usize,
    src: &[f32],
    channels: usize,
    dst: &mut [f32],
) {
    let (k, p, h, w) = (g.kh, g.padding, g.h, g.w);
    for c in 0..channels {
        let image = &src[c * h * w..(c + 1) * h * w];
        for kx in 0..k {
            let start = c * l.plane + kx * copy + GUARD + p * w;
            let data = &mut dst[start..start + h * w];
            copy_row(as_slots(data), image);
            // Columns a shift of kx - p wraps onto from the neighbouring row.
            let wrapped = if kx < p {
                w.saturating_sub(p - kx)..w
            } else {
                0..(kx - p).min(w)
            };
            // Column by column: strided stores, rather than a `memset` call per row.
            for col in wrapped {
                for v in data.iter_mut().skip(col).step_by(w) {
                    *v = 0.0;
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for image rows of a few dozen floats, inline: `copy_from_slice`
/// calls `memcpy`, whose call overhead is most of the cost at this size (6% of a ResNet-20
/// step in `perf`).
#[inline(always)]
fn copy_row(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    let len = dst.len();
    assert_eq!(len, src.len(), "row lengths differ");
    let copy8 = |d: &mut [MaybeUninit<f32>], s: &[f32]| {
        let d: &mut [MaybeUninit<f32>; 8] = d.try_into().expect("8 floats");
        let s: [f32; 8] = s.try_into().expect("8 floats");
        *d = s.map(MaybeUninit::new);
    };
    if len < 8 {
        for (d, &v) in dst.iter_mut().zip(src) {
            d.write(v);
        }
        return;
    }
    for (d, s) in dst.chunks_exact_mut(8).zip(src.chunks_exact(8)) {
        copy8(d, s);
    }
    if !len.is_multiple_of(8) {
        // The last 8, overlapping the last full chunk: same values written twice.
        copy8(&mut dst[len - 8..], &src[len - 8..]);
    }
}

/// Copies `channels` planes of `rows x cols` from dense `src` into `dst`, row `y` of channel `c`
/// at `offset + c * channel_stride + y * row_stride`; the rest of `dst` is left as it is (the
/// zero borders the caller cleared once).
#[allow(clippy::too_many_arguments)]
pub(super) fn place_rows(
    src: &[f32],
    channels: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    channel_stride: usize,
    row_stride: usize,
    offset: usize,
) {
    for c in 0..channels {
        for y in 0..rows {
            let row = &src[(c * rows + y) * cols..(c * rows + y + 1) * cols];
            let start = offset + c * channel_stride + y * row_stride;
            copy_row(as_slots(&mut dst[start..start + cols]), row);
        }
    }
}

/// The inverse of `place_rows` at offset 0: gathers `channels` planes of `rows x cols` from rows
/// of `row_stride` into dense `dst`, writing every element of it.
pub(super) fn take_rows(
    src: &[f32],
    channel_stride: usize,
    row_stride: usize,
    channels: usize,
    rows: usize,
    cols: usize,
    dst: &mut [MaybeUninit<f32>],
) {
    assert_eq!(dst.len(), channels * rows * cols, "output planes");
    for c in 0..channels {
        for y in 0..rows {
            let start = c * channel_stride + y * row_stride;
            copy_row(
                &mut dst[(c * rows + y) * cols..(c * rows + y + 1) * cols],
                &src[start..start + cols],
            );
        }
    }
}

/// Runs `per_image(n, scratch, out_n)` for every image `n < batch` in image-range tasks over the
/// pool, and returns the outputs (`image_out` floats per image). Each task zeroes its scratch
/// (`scratch_len` floats) once, before its first image: the kernels' padding stays zero.
///
/// # Safety
/// `per_image` must write every element of `out_n`.
pub(super) unsafe fn map_images(
    batch: usize,
    image_out: usize,
    scratch_len: usize,
    per_image: impl Fn(usize, &mut [f32], &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    if batch * image_out == 0 {
        return Vec::new();
    }
    let mut out = OutputBuffer::new(batch * image_out);
    let per_task = images_per_task(batch);
    for_each_part(
        out.as_mut_slice()
            .chunks_mut(per_task * image_out)
            .collect(),
        |t, out_t: &mut &mut [MaybeUninit<f32>]| {
            with_scratch(scratch_len, |scratch| {
                scratch.fill(0.0);
                for (i, out_n) in out_t.chunks_mut(image_out).enumerate() {
                    per_image(t * per_task + i, scratch, out_n);
                }
            })
        },
    );
    // SAFETY: the tasks' chunks cover `out` in whole images, and the caller guarantees that
    // `per_image` writes each image's output in full.
    unsafe { out.assume_written() }
}

/// `sum_n per_image(n)` of `len`-float gradients: each image-range task adds its images into a
/// partial sum (`per_image(n, scratch, partial)`), then the partials are added up. Scratch is
/// zeroed once per task, as in `map_images`.
pub(super) fn sum_over_images(
    batch: usize,
    len: usize,
    scratch_len: usize,
    per_image: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    if len == 0 || batch == 0 {
        return vec![0f32; len];
    }
    let per_task = images_per_task(batch);
    let tasks = batch.div_ceil(per_task);
    let mut partials = vec![vec![0f32; len]; tasks];
    for_each_part(
        partials.iter_mut().collect(),
        |t, partial: &mut &mut Vec<f32>| {
            with_scratch(scratch_len, |scratch| {
                scratch.fill(0.0);
                for n in t * per_task..((t + 1) * per_task).min(batch) {
                    per_image(n, scratch, partial);
                }
            })
        },
    );
    let mut sum = partials.pop().unwrap_or_else(|| vec![0f32; len]);
    for part in partials {
        sum.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
    }
    sum
}

/// Images per task: two tasks per thread, so that a thread slowed by other load hands work
/// over, while each task zeroes its scratch borders once for many images.
fn images_per_task(batch: usize) -> usize {
    batch.div_ceil((2 * threads()).clamp(1, batch.max(1)))
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

/// `y[n] = conv(x[n], w)`.
pub fn forward(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    same_conv_images(g, x, g.c_in, w, g.c_out)
}

/// `dx[n] = conv(dy[n], w flipped, channels swapped)`.
pub fn input_grad(g: &ConvGeometry, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let taps = g.kh * g.kw;
    let mut flipped = vec![0f32; w.len()];
    for co in 0..g.c_out {
        for ci in 0..g.c_in {
            for t in 0..taps {
                flipped[(ci * g.c_out + co) * taps + t] =
                    w[(co * g.c_in + ci) * taps + taps - 1 - t];
            }
        }
    }
    same_conv_images(g, dy, g.c_out, &flipped, g.c_in)
}

/// The same conv of every image of `input` (`[batch, n_in, h, w]`) with `weights`
/// (`[n_out, n_in, k, k]`), as `[batch, n_out, h, w]`.
fn same_conv_images(
    g: &ConvGeometry,
    input: &[f32],
    n_in: usize,
    weights: &[f32],
    n_out: usize,
) -> Vec<f32> {
    let (l, copy) = shifted_copies_layout(g);
    let pixels = g.h * g.w;
    let image_in = n_in * pixels;
    let per_image = |n: usize, scratch: &mut [f32], out_n: &mut [MaybeUninit<f32>]| {
        let (copies, wide) = scratch.split_at_mut(n_in * l.plane);
        let x_n = &input[n * image_in..(n + 1) * image_in];
        place_shifted_copies(g, &l, copy, x_n, n_in, copies);
        if l.q == pixels {
            // Whole blocks cover the image exactly: write the output in place.
            same_conv(&l, copies, n_in, weights, n_out, out_n);
        } else {
            same_conv(&l, copies, n_in, weights, n_out, as_slots(wide));
            take_rows(wide, l.q, pixels, n_out, 1, pixels, out_n);
        }
    };
    // SAFETY: each image's output is `n_out` planes of `l.q` pixels when `l.q == h * w`, all of
    // which `same_conv` stores; otherwise `take_rows` writes all `n_out * h * w` floats.
    unsafe {
        map_images(
            g.batch,
            n_out * pixels,
            n_in * l.plane + n_out * l.q,
            per_image,
        )
    }
}

/// `dW = sum_n sum_q dy[n] x[n] shifted`.
pub fn weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (l, copy) = shifted_copies_layout(g);
    let pixels = g.h * g.w;
    let (image_in, image_out) = (g.c_in * pixels, g.c_out * pixels);
    let per_image = |n: usize, scratch: &mut [f32], dw: &mut [f32]| {
        let (copies, wide) = scratch.split_at_mut(g.c_in * l.plane);
        let x_n = &x[n * image_in..(n + 1) * image_in];
        place_shifted_copies(g, &l, copy, x_n, g.c_in, copies);
        // dy as dense planes `l.q` apart, zero past the image.
        let dy_n = &dy[n * image_out..(n + 1) * image_out];
        place_rows(dy_n, g.c_out, 1, pixels, wide, l.q, pixels, 0);
        same_conv_weight_grad(&l, copies, g.c_in, wide, g.c_out, dw);
    };
    let len = g.c_out * g.c_in * l.taps;
    sum_over_images(g.batch, len, g.c_in * l.plane + g.c_out * l.q, per_image)
}

#[cfg(test)]
mod tests {
    //! The direct kernels against im2col + gemm (itself checked against candle's reference op in
    //! `tests/ops_numerics.rs`), over block remainders: channel counts not multiples of 4, pixel
    //! counts not multiples of 24, 5x5 kernels (tap remainders), 1-pixel-wide images.

    use super::*;
    use crate::ops::test_support::assert_matches_gemm;

    #[test]
    fn direct_kernels_match_im2col_gemm() {
        if !cpu_has_avx2_fma() {
            eprintln!("skipped: this CPU has no AVX2/FMA, the direct kernels never run here");
            return;
        }
        for (n, c_in, c_out, h, w, k) in [
            (2, 16, 16, 28, 28, 3),
            (1, 1, 16, 28, 28, 3),
            (3, 5, 7, 9, 11, 3),
            (2, 3, 6, 10, 7, 5),
            (2, 4, 9, 5, 1, 3),
            (1, 33, 4, 7, 7, 3),
            (2, 8, 5, 3, 3, 7),
        ] {
            let p = (k - 1) / 2;
            let g = ConvGeometry::new(&[n, c_in, h, w], &[c_out, c_in, k, k], 1, p)
                .unwrap_or_else(|e| panic!("test geometry: {e}"));
            assert!(applies(&g), "{g:?} should take the direct path");
            assert_matches_gemm(&g, [forward, input_grad, weight_grad]);
        }
    }

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

    #[test]
    fn only_stride_1_same_convolutions_apply() {
        let geometry = |k: usize, stride: usize, padding: usize| {
            ConvGeometry::new(&[1, 2, 8, 8], &[2, 2, k, k], stride, padding)
                .unwrap_or_else(|e| panic!("test geometry: {e}"))
        };
        for (k, stride, padding) in [
            (3, 2, 1),
            (3, 1, 0),
            (3, 1, 2),
            (1, 1, 0),
            (4, 1, 1),
            (9, 1, 4),
        ] {
            assert!(
                !applies(&geometry(k, stride, padding)),
                "k {k} stride {stride} pad {padding}"
            );
        }
    }
}
