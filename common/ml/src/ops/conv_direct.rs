//! Direct convolution for stride-1 "same" convolutions (odd square kernel up to 7x7, padding
//! `(k-1)/2`: every 3x3 conv of a ResNet but the two downsampling ones), forward and both
//! gradients, on the AVX2 kernels of `tap_kernels`.
//!
//! im2col + gemm copies each image nine times into a column matrix and gemm packs that copy
//! again, while a 16-channel layer does only 16 multiply-adds per copied value: it is bound by
//! those copies, not by arithmetic. Here each image is copied once per kernel column instead
//! (see `shifted_copies_layout`), outputs come out dense at the image's own width, and 6 output
//! channels x 16 pixels accumulate in 12 AVX registers.
//!
//! The input gradient of a same conv is the same conv of `dy` with the kernel flipped and its
//! channel axes swapped; the weight gradient reduces `dy * shifted x` over the pixels.

use super::conv_geometry::ConvGeometry;
use super::cpu_features::VectorIsa;
use super::image_tasks::{map_images, place_rows, sum_over_images, take_rows, tap_scratch_len};
use super::output_buffer::OutSlots;
use super::sizes;
use super::tap_kernels::{MAX_TAPS, TapLayout, same_conv, same_conv_weight_grad};

/// Whether this geometry takes the direct kernels, and on which ISA (the one the process
/// selected: `VectorIsa::selected`); `None` for im2col + gemm.
pub fn applies(g: &ConvGeometry) -> Option<VectorIsa> {
    fits(g).then(VectorIsa::selected).flatten()
}

/// Whether the geometry is a stride-1 "same" convolution the direct kernels take.
fn fits(g: &ConvGeometry) -> bool {
    let same = g.stride == 1 && g.kh == g.kw && g.kh % 2 == 1 && 2 * g.padding + 1 == g.kh;
    same && g.kh > 1 && g.kh * g.kh <= MAX_TAPS
}

/// Whether the direct weight gradient beats im2col + gemm. It sums each image's pixels into
/// registers and then into the weight gradient, so small images spend their time in those
/// per-image reductions: at batch 64 it took 2.2 ms against gemm's 4.5 ms for 16 channels at
/// 28x28 and 2.7 against 3.6 at 14x14, but 5.2 against 3.6 for 64 channels at 7x7
/// (`examples/conv_bench.rs`).
pub fn weight_grad_pays(g: &ConvGeometry) -> bool {
    g.out_pixels() >= 100
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
    let copy = sizes::sum(
        "shifted copy",
        &[
            GUARD,
            sizes::product("shifted copy", &[h + 2 * p, w]),
            GUARD,
        ],
    );
    let offsets: Vec<usize> = (0..k * k)
        .map(|t| {
            let (ky, kx) = (t / k, t % k);
            kx * copy + GUARD + ky * w + kx - p
        })
        .collect();
    (
        TapLayout::new(w, h, sizes::product("shifted copies", &[k, copy]), &offsets),
        copy,
    )
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
            let start = c * l.plane() + kx * copy + GUARD + p * w;
            let data = &mut dst[start..start + h * w];
            OutSlots::from(&mut *data).copy_from_slice(image);
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

/// `y[n] = conv(x[n], w)`.
pub fn forward(cpu: VectorIsa, g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    same_conv_images(cpu, g, x, g.c_in, w, g.c_out)
}

/// `dx[n] = conv(dy[n], w flipped, channels swapped)`.
pub fn input_grad(cpu: VectorIsa, g: &ConvGeometry, dy: &[f32], w: &[f32]) -> Vec<f32> {
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
    same_conv_images(cpu, g, dy, g.c_out, &flipped, g.c_in)
}

/// The same conv of every image of `input` (`[batch, n_in, h, w]`) with `weights`
/// (`[n_out, n_in, k, k]`), as `[batch, n_out, h, w]`.
fn same_conv_images(
    cpu: VectorIsa,
    g: &ConvGeometry,
    input: &[f32],
    n_in: usize,
    weights: &[f32],
    n_out: usize,
) -> Vec<f32> {
    let (l, copy) = shifted_copies_layout(g);
    let pixels = g.h * g.w;
    let image_in = n_in * pixels;
    let per_image = |n: usize, scratch: &mut [f32], out_n: OutSlots<'_>| {
        let (copies, wide) = scratch.split_at_mut(n_in * l.plane());
        let x_n = &input[n * image_in..(n + 1) * image_in];
        place_shifted_copies(g, &l, copy, x_n, n_in, copies);
        if l.q() == pixels {
            // Whole blocks cover the image exactly: write the output in place.
            same_conv(cpu, &l, copies, n_in, weights, n_out, out_n);
        } else {
            same_conv(
                cpu,
                &l,
                copies,
                n_in,
                weights,
                n_out,
                OutSlots::from(&mut *wide),
            );
            take_rows(wide, l.q(), pixels, n_out, 1, pixels, out_n);
        }
    };
    let scratch = tap_scratch_len(n_in, l.plane(), n_out, l.q());
    // SAFETY: each image's output is `n_out` planes of `l.q` pixels when `l.q == h * w`, all of
    // which `same_conv` stores; otherwise `take_rows` writes all `n_out * h * w` floats.
    unsafe { map_images(g.batch, n_out * pixels, scratch, per_image) }
}

/// `dW = sum_n sum_q dy[n] x[n] shifted`.
pub fn weight_grad(cpu: VectorIsa, g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (l, copy) = shifted_copies_layout(g);
    let pixels = g.h * g.w;
    let (image_in, image_out) = (g.c_in * pixels, g.c_out * pixels);
    let per_image = |n: usize, scratch: &mut [f32], dw: &mut [f32]| {
        let (copies, wide) = scratch.split_at_mut(g.c_in * l.plane());
        let x_n = &x[n * image_in..(n + 1) * image_in];
        place_shifted_copies(g, &l, copy, x_n, g.c_in, copies);
        // dy as dense planes `l.q` apart, zero past the image.
        let dy_n = &dy[n * image_out..(n + 1) * image_out];
        place_rows(dy_n, g.c_out, 1, pixels, wide, l.q(), pixels, 0);
        same_conv_weight_grad(cpu, &l, copies, g.c_in, wide, g.c_out, dw);
    };
    let len = g.c_out * g.c_in * l.taps();
    sum_over_images(
        g.batch,
        len,
        tap_scratch_len(g.c_in, l.plane(), g.c_out, l.q()),
        per_image,
    )
}

#[cfg(test)]
mod tests {
    //! The direct kernels against im2col + gemm (itself checked against candle's reference op in
    //! `tests/ops_numerics.rs`), over block remainders: channel counts not multiples of 4, pixel
    //! counts not multiples of 24, 5x5 kernels (tap remainders), 1-pixel-wide images.

    use super::*;
    use crate::ops::cpu_features::IsaName;
    use crate::ops::test_support::assert_matches_gemm;

    #[test]
    #[cfg_attr(
        not(fedcsg_host_avx512),
        ignore = "this CPU has no AVX-512F: the AVX-512 kernels cannot run here"
    )]
    fn avx512_direct_kernels_match_im2col_gemm() {
        direct_kernels_match_im2col_gemm(IsaName::Avx512);
    }

    #[test]
    #[cfg_attr(
        not(fedcsg_host_avx2),
        ignore = "this CPU has no AVX2+FMA: the AVX2 kernels cannot run here"
    )]
    fn avx2_direct_kernels_match_im2col_gemm() {
        direct_kernels_match_im2col_gemm(IsaName::Avx2);
    }

    fn direct_kernels_match_im2col_gemm(isa: IsaName) {
        let cpu = isa
            .resolve()
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("{isa} has kernels"));
        for (n, c_in, c_out, h, w, k) in [
            (2, 16, 16, 28, 28, 3),
            (1, 1, 16, 28, 28, 3),
            (3, 5, 7, 9, 11, 3),
            (2, 3, 6, 10, 7, 5),
            (2, 4, 9, 5, 1, 3),
            (1, 33, 4, 7, 7, 3),
            (2, 8, 5, 3, 3, 7),
            (2, 64, 64, 7, 7, 3),
            (2, 32, 32, 14, 14, 3),
            (1, 6, 11, 4, 4, 3),
        ] {
            let p = (k - 1) / 2;
            let g = ConvGeometry::new(&[n, c_in, h, w], &[c_out, c_in, k, k], 1, p)
                .unwrap_or_else(|e| panic!("test geometry: {e}"));
            assert!(fits(&g), "{g:?} should take the direct path");
            assert_matches_gemm(cpu, &g, [forward, input_grad, weight_grad]);
        }
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
                !fits(&geometry(k, stride, padding)),
                "k {k} stride {stride} pad {padding}"
            );
        }
    }
}
