//! Helpers for the kernels' unit tests: deterministic data and the comparison of a kernel path
//! with im2col + gemm (itself checked against candle's reference op in `tests/ops_numerics.rs`).

use super::conv_geometry::ConvGeometry;
use super::conv_kernels::{forward_gemm, input_grad_gemm, weight_grad_gemm};
use super::cpu_features::VectorIsa;

/// Deterministic values in [-1, 1) (a multiplicative hash of the index).
pub fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
        })
        .collect()
}

/// `max |a - b|` relative to `max |b|`.
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// The three functions of a direct convolution path: forward `(cpu, g, x, w)`, input gradient
/// `(cpu, g, dy, w)`, weight gradient `(cpu, g, x, dy)`.
pub type ConvPath = [fn(VectorIsa, &ConvGeometry, &[f32], &[f32]) -> Vec<f32>; 3];

/// Asserts that `path` computes what im2col + gemm computes for geometry `g` (relative 1e-5).
pub fn assert_matches_gemm(cpu: VectorIsa, g: &ConvGeometry, path: ConvPath) {
    let x = values(g.batch * g.c_in * g.in_pixels(), 1);
    let w = values(g.c_out * g.c_in * g.kh * g.kw, 2);
    let dy = values(g.batch * g.c_out * g.out_pixels(), 3);
    let [forward, input_grad, weight_grad] = path;
    let checks = [
        ("forward", forward(cpu, g, &x, &w), forward_gemm(g, &x, &w)),
        (
            "input grad",
            input_grad(cpu, g, &dy, &w),
            input_grad_gemm(g, &dy, &w),
        ),
        (
            "weight grad",
            weight_grad(cpu, g, &x, &dy),
            weight_grad_gemm(g, &x, &dy),
        ),
    ];
    for (what, got, want) in checks {
        let err = max_rel_diff(&got, &want);
        assert!(err < 1e-5, "{g:?} {what}: relative difference {err}");
    }
}
