//! Stride-2 3x3 convolutions with padding 1 (the downsampling convs of a ResNet) on the direct
//! kernels of `tap_kernels`, by splitting images into their four phases.
//!
//! Phase `(a, b)` of an image holds the pixels `x[2i + a][2j + b]`. Input row `2 oy + ky - 1` of
//! kernel row `ky` is phase row `oy - 1` of the odd phase for `ky = 0`, row `oy` of the even phase
//! for `ky = 1` and row `oy` of the odd phase for `ky = 2`, and columns alike. On phase planes
//! with one zero row above and one zero column on the left, every tap therefore reads at a fixed
//! offset from the output pixel, as in a stride-1 conv: the forward and the weight gradient run
//! the direct kernels unchanged.
//!
//! The input gradient splits by the phase of `dx` instead: its even rows take kernel row 1 from
//! `dy` row `i`, its odd rows kernel row 0 from `dy` row `i + 1` and kernel row 2 from row `i`
//! (columns alike). Each of the four phases of `dx` is a stride-1 conv of `dy`, zero-padded
//! below and on the right, with 1, 2 or 4 of the nine taps.

use super::conv_geometry::ConvGeometry;
use super::cpu_features::VectorIsa;
use super::image_tasks::{map_images, place_rows, sum_over_images, take_rows, tap_scratch_len};
use super::output_buffer::OutSlots;
use super::sizes;
use super::tap_kernels::{TapLayout, same_conv, same_conv_weight_grad};

/// Whether this geometry takes the phase-split direct kernels, and on which ISA (the one the
/// process selected: `VectorIsa::selected`); `None` for im2col + gemm.
pub fn applies(g: &ConvGeometry) -> Option<VectorIsa> {
    fits(g).then(VectorIsa::selected).flatten()
}

/// Whether the geometry is a stride-2 3x3 convolution with padding 1.
fn fits(g: &ConvGeometry) -> bool {
    g.stride == 2 && g.kh == 3 && g.kw == 3 && g.padding == 1
}

/// For kernel row (or column) `k` of the forward pass: the input phase it reads and its row
/// (or column) shift in the bordered phase plane.
const FORWARD_TAP: [(usize, usize); 3] = [(1, 0), (0, 1), (1, 1)];

/// For the even and the odd phase of `dx`: the kernel rows (or columns) that reach it and the
/// `dy` row (or column) shift each reads.
const INPUT_GRAD_TAPS: [&[(usize, usize)]; 2] = [&[(1, 0)], &[(0, 1), (2, 0)]];

/// The forward layout: per input channel four phase planes of `(oh + 1) x (ow + 1)` (a zero row
/// above, a zero column on the left), phase `(a, b)` at `(2a + b) * phase_plane`. Returns the
/// layout and `phase_plane`.
fn phase_layout(g: &ConvGeometry) -> (TapLayout, usize) {
    let wp = g.ow + 1;
    let phase_plane = sizes::product("phase plane", &[g.oh + 1, wp]);
    let offsets: Vec<usize> = (0..9)
        .map(|t| {
            let ((a, ry), (b, rx)) = (FORWARD_TAP[t / 3], FORWARD_TAP[t % 3]);
            (2 * a + b) * phase_plane + ry * wp + rx
        })
        .collect();
    (
        TapLayout::new(
            wp,
            g.oh,
            sizes::product("phase planes", &[4, phase_plane]),
            &offsets,
        ),
        phase_plane,
    )
}

/// Writes the four phases of one image (`[c_in, h, w]`) into the interiors of its bordered phase
/// planes in `dst`; the borders stay as the caller zeroed them.
fn split_phases(g: &ConvGeometry, l: &TapLayout, phase_plane: usize, x: &[f32], dst: &mut [f32]) {
    for c in 0..g.c_in {
        for r in 0..g.h {
            let row = &x[(c * g.h + r) * g.w..(c * g.h + r + 1) * g.w];
            let even = c * l.plane() + 2 * (r % 2) * phase_plane + (r / 2 + 1) * l.wp() + 1;
            let odd = even + phase_plane;
            for (j, pair) in row.chunks(2).enumerate() {
                dst[even + j] = pair[0];
                if let Some(&v) = pair.get(1) {
                    dst[odd + j] = v;
                }
            }
        }
    }
}

/// `y[n] = conv(x[n], w)` with stride 2.
pub fn forward(cpu: VectorIsa, g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (l, phase_plane) = phase_layout(g);
    let (image_in, image_out) = (g.c_in * g.in_pixels(), g.c_out * g.out_pixels());
    let per_image = |n: usize, scratch: &mut [f32], out_n: OutSlots<'_>| {
        let (phases, wide) = scratch.split_at_mut(g.c_in * l.plane());
        split_phases(
            g,
            &l,
            phase_plane,
            &x[n * image_in..(n + 1) * image_in],
            phases,
        );
        same_conv(
            cpu,
            &l,
            phases,
            g.c_in,
            w,
            g.c_out,
            OutSlots::from(&mut *wide),
        );
        take_rows(wide, l.q(), l.wp(), g.c_out, g.oh, g.ow, out_n);
    };
    let scratch = tap_scratch_len(g.c_in, l.plane(), g.c_out, l.q());
    // SAFETY: `take_rows` writes all `c_out * oh * ow` floats of each image's output.
    unsafe { map_images(g.batch, image_out, scratch, per_image) }
}

/// `dW = sum_n sum_q dy[n] x[n]`, each tap reading its phase at its offset.
pub fn weight_grad(cpu: VectorIsa, g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (l, phase_plane) = phase_layout(g);
    let (image_in, image_out) = (g.c_in * g.in_pixels(), g.c_out * g.out_pixels());
    let per_image = |n: usize, scratch: &mut [f32], dw: &mut [f32]| {
        let (phases, wide) = scratch.split_at_mut(g.c_in * l.plane());
        split_phases(
            g,
            &l,
            phase_plane,
            &x[n * image_in..(n + 1) * image_in],
            phases,
        );
        let dy_n = &dy[n * image_out..(n + 1) * image_out];
        place_rows(dy_n, g.c_out, g.oh, g.ow, wide, l.q(), l.wp(), 0);
        same_conv_weight_grad(cpu, &l, phases, g.c_in, wide, g.c_out, dw);
    };
    let scratch = tap_scratch_len(g.c_in, l.plane(), g.c_out, l.q());
    sum_over_images(g.batch, g.c_out * g.c_in * 9, scratch, per_image)
}

/// One phase `(a, b)` of the input gradient: its layout over `dy` and its taps' weights as
/// `[c_in, c_out, taps]`.
struct GradPhase {
    a: usize,
    b: usize,
    layout: TapLayout,
    weights: Vec<f32>,
}

/// `dx[n]` of the stride-2 conv, phase by phase.
pub fn input_grad(cpu: VectorIsa, g: &ConvGeometry, dy: &[f32], w: &[f32]) -> Vec<f32> {
    // dy planes of `(oh + 1) x (ow + 1)`: a zero row below and a zero column on the right.
    let wp = g.ow + 1;
    let phase_taps = |a: usize, b: usize| {
        let mut taps = Vec::new();
        for &(ky, dr) in INPUT_GRAD_TAPS[a] {
            for &(kx, dc) in INPUT_GRAD_TAPS[b] {
                taps.push((ky * 3 + kx, dr * wp + dc));
            }
        }
        taps
    };
    // The odd-odd phase reads furthest; its plane size serves all four.
    let widest: Vec<usize> = phase_taps(1, 1).iter().map(|&(_, o)| o).collect();
    let dy_plane = sizes::product("gradient plane", &[g.oh + 1, wp]);
    let plane = TapLayout::new(wp, g.oh, dy_plane, &widest).plane();
    let phases: Vec<GradPhase> = [(0, 0), (0, 1), (1, 0), (1, 1)]
        .into_iter()
        .map(|(a, b)| {
            let taps = phase_taps(a, b);
            let offsets: Vec<usize> = taps.iter().map(|&(_, o)| o).collect();
            let mut weights = Vec::with_capacity(g.c_in * g.c_out * taps.len());
            for ci in 0..g.c_in {
                for co in 0..g.c_out {
                    for &(t, _) in &taps {
                        weights.push(w[(co * g.c_in + ci) * 9 + t]);
                    }
                }
            }
            GradPhase {
                a,
                b,
                layout: TapLayout::new(wp, g.oh, plane, &offsets),
                weights,
            }
        })
        .collect();
    let q = phases[0].layout.q();
    let (image_in, image_out) = (g.c_in * g.in_pixels(), g.c_out * g.out_pixels());
    let per_image = |n: usize, scratch: &mut [f32], mut dx_n: OutSlots<'_>| {
        let (dy_planes, wide) = scratch.split_at_mut(g.c_out * plane);
        let dy_n = &dy[n * image_out..(n + 1) * image_out];
        place_rows(dy_n, g.c_out, g.oh, g.ow, dy_planes, plane, wp, 0);
        for p in &phases {
            same_conv(
                cpu,
                &p.layout,
                dy_planes,
                g.c_out,
                &p.weights,
                g.c_in,
                OutSlots::from(&mut *wide),
            );
            // Phase rows i with 2i + a < h, columns j with 2j + b < w.
            let (rows, cols) = ((g.h - p.a).div_ceil(2), (g.w - p.b).div_ceil(2));
            for ci in 0..g.c_in {
                for i in 0..rows {
                    let src = &wide[ci * q + i * wp..ci * q + i * wp + cols];
                    let row = (ci * g.h + 2 * i + p.a) * g.w;
                    let mut dst = dx_n.slice(row..row + g.w);
                    for (j, &v) in src.iter().enumerate() {
                        dst.write(2 * j + p.b, v);
                    }
                }
            }
        }
    };
    let scratch = tap_scratch_len(g.c_out, plane, g.c_in, q);
    // SAFETY: every pixel (r, c) of every channel belongs to exactly one phase (r % 2, c % 2),
    // and that phase writes all its rows and columns, so each image's `dx` is written in full.
    unsafe { map_images(g.batch, image_in, scratch, per_image) }
}

#[cfg(test)]
mod tests {
    //! The phase-split kernels against im2col + gemm (itself checked against candle's reference
    //! op in `tests/ops_numerics.rs`): even and odd sizes, non-square images, 1-pixel images,
    //! channel counts that leave register-block remainders.

    use super::*;
    use crate::ops::cpu_features::IsaName;
    use crate::ops::test_support::assert_matches_gemm;

    #[test]
    #[cfg_attr(
        not(fedcsg_host_avx512),
        ignore = "this CPU has no AVX-512F: the AVX-512 kernels cannot run here"
    )]
    fn avx512_phase_split_kernels_match_im2col_gemm() {
        phase_split_kernels_match_im2col_gemm(IsaName::Avx512);
    }

    #[test]
    #[cfg_attr(
        not(fedcsg_host_avx2),
        ignore = "this CPU has no AVX2+FMA: the AVX2 kernels cannot run here"
    )]
    fn avx2_phase_split_kernels_match_im2col_gemm() {
        phase_split_kernels_match_im2col_gemm(IsaName::Avx2);
    }

    fn phase_split_kernels_match_im2col_gemm(isa: IsaName) {
        let cpu = isa
            .resolve()
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("{isa} has kernels"));
        for (n, c_in, c_out, h, w) in [
            (2, 16, 32, 28, 28),
            (3, 32, 64, 14, 14),
            (2, 3, 5, 7, 7),
            (2, 5, 7, 9, 6),
            (1, 4, 6, 1, 1),
            (2, 33, 4, 5, 8),
        ] {
            let g = ConvGeometry::new(&[n, c_in, h, w], &[c_out, c_in, 3, 3], 2, 1)
                .unwrap_or_else(|e| panic!("test geometry: {e}"));
            assert!(fits(&g), "{g:?} should take the phase-split path");
            assert_matches_gemm(cpu, &g, [forward, input_grad, weight_grad]);
        }
    }

    #[test]
    fn only_stride_2_padding_1_3x3_applies() {
        for (k, stride, padding) in [(3, 1, 1), (3, 2, 0), (1, 2, 0), (5, 2, 2), (3, 3, 1)] {
            let g = ConvGeometry::new(&[1, 2, 8, 8], &[2, 2, k, k], stride, padding)
                .unwrap_or_else(|e| panic!("test geometry: {e}"));
            assert!(!fits(&g), "k {k} stride {stride} pad {padding}");
        }
    }
}
