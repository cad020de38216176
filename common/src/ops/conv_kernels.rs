//! The convolution forward and both gradients on plain f32 slices: im2col + one gemm per image,
//! images spread over the rayon pool.
//!
//! All tensors are contiguous NCHW, the weight `[c_out, c_in, kh, kw]`. Per image, with
//! `col = im2col(x)` of shape `[K, P]` (`K = c_in*kh*kw`, `P = oh*ow`):
//! forward `y = W col`, input gradient `dx = col2im(W^T dy)`, weight gradient `dW = sum dy col^T`.

use rayon::prelude::*;

use super::conv_geometry::ConvGeometry;
use super::im2col::{col2im_add, im2col};
use super::sgemm::{MatMut, MatRef, sgemm};

/// How to spread `batch` independent images over the pool: the number of threads each image's
/// gemm may use itself. With at least one image per thread the images run in parallel and each
/// gemm stays single-threaded (no fork/join per product); with fewer, gemm splits each product.
fn gemm_threads(batch: usize) -> usize {
    let threads = rayon::current_num_threads();
    if batch >= threads { 1 } else { threads }
}

/// One image's im2col matrix: the image itself for a pointwise conv, else `buf` after filling it.
fn columns<'a>(g: &ConvGeometry, x_n: &'a [f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
    if g.is_pointwise() {
        return x_n;
    }
    buf.resize(g.patch_len() * g.out_pixels(), 0.0);
    im2col(g, x_n, buf);
    buf
}

/// `y[n] = W im2col(x[n])`.
pub fn forward(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (k, p) = (g.patch_len(), g.out_pixels());
    let image = g.c_in * g.in_pixels();
    let mut y = vec![0f32; g.batch * g.c_out * p];
    if y.is_empty() {
        return y;
    }
    let threads = gemm_threads(g.batch);
    y.par_chunks_mut(g.c_out * p).enumerate().for_each_init(Vec::new, |buf, (n, y_n)| {
        let col = columns(g, &x[n * image..(n + 1) * image], buf);
        sgemm(
            MatMut::row_major(y_n, g.c_out, p),
            MatRef::row_major(w, g.c_out, k),
            MatRef::row_major(col, k, p),
            false,
            threads,
        );
    });
    y
}

/// `dx[n] = col2im(W^T dy[n])`.
pub fn input_grad(g: &ConvGeometry, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let (k, p) = (g.patch_len(), g.out_pixels());
    let image = g.c_in * g.in_pixels();
    let mut dx = vec![0f32; g.batch * image];
    if dx.is_empty() {
        return dx;
    }
    let threads = gemm_threads(g.batch);
    let w_t = MatRef::row_major(w, g.c_out, k).t();
    dx.par_chunks_mut(image).enumerate().for_each_init(Vec::new, |buf: &mut Vec<f32>, (n, dx_n)| {
        let dy_n = MatRef::row_major(&dy[n * g.c_out * p..(n + 1) * g.c_out * p], g.c_out, p);
        if g.is_pointwise() {
            // The column matrix is the image gradient itself: write it in place.
            sgemm(MatMut::row_major(dx_n, k, p), w_t, dy_n, false, threads);
            return;
        }
        buf.resize(k * p, 0.0);
        sgemm(MatMut::row_major(buf, k, p), w_t, dy_n, false, threads);
        col2im_add(g, buf, dx_n);
    });
    dx
}

/// `dW = sum_n dy[n] im2col(x[n])^T`, summed per task and then across tasks.
pub fn weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, p) = (g.patch_len(), g.out_pixels());
    let image = g.c_in * g.in_pixels();
    let len = g.c_out * k;
    if len == 0 || g.batch == 0 {
        return vec![0f32; len];
    }
    let threads = gemm_threads(g.batch);
    // Twice as many tasks as threads lets work stealing even out a core slowed by other load,
    // while each task still sums several images before the cheap cross-task reduction.
    let tasks = (2 * rayon::current_num_threads()).clamp(1, g.batch);
    let per_task = g.batch.div_ceil(tasks);
    let partials: Vec<Vec<f32>> = (0..g.batch.div_ceil(per_task))
        .into_par_iter()
        .map(|t| {
            let mut dw = vec![0f32; len];
            let mut buf = Vec::new();
            for n in t * per_task..((t + 1) * per_task).min(g.batch) {
                let col = columns(g, &x[n * image..(n + 1) * image], &mut buf);
                sgemm(
                    MatMut::row_major(&mut dw, g.c_out, k),
                    MatRef::row_major(&dy[n * g.c_out * p..(n + 1) * g.c_out * p], g.c_out, p),
                    MatRef::row_major(col, k, p).t(),
                    true,
                    threads,
                );
            }
            dw
        })
        .collect();
    let mut parts = partials.into_iter();
    let mut dw = parts.next().unwrap_or_else(|| vec![0f32; len]);
    for part in parts {
        dw.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
    }
    dw
}
