//! The convolution forward and both gradients on plain f32 slices: the direct kernels of
//! `conv_direct` for stride-1 same convolutions and of `conv_stride2` for stride-2 3x3 ones on
//! CPUs with AVX2, im2col + one gemm per image for everything else; images spread over the
//! worker pool.
//!
//! All tensors are contiguous NCHW, the weight `[c_out, c_in, kh, kw]`. Per image, with
//! `col = im2col(x)` of shape `[K, P]` (`K = c_in*kh*kw`, `P = oh*ow`):
//! forward `y = W col`, input gradient `dx = col2im(W^T dy)`, weight gradient `dW = sum dy col^T`.

use std::sync::Mutex;

use super::conv_direct;
use super::conv_geometry::ConvGeometry;
use super::conv_stride2;
use super::im2col::{col2im_add, im2col};
use super::parallel::{for_each_index, for_each_part, threads, with_scratch};
use super::sgemm::{MatMut, MatRef, sgemm};

/// Threads each image's gemm may use itself. With at least one image per thread the images run
/// in parallel and each gemm stays single-threaded (no fork/join per product); with fewer, gemm
/// splits each product over rayon's pool.
fn gemm_threads(batch: usize) -> usize {
    let threads = threads();
    if batch >= threads {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// Runs `f` on one image's im2col matrix: the image itself for a pointwise conv, else scratch.
fn with_columns<R>(g: &ConvGeometry, x_n: &[f32], f: impl FnOnce(&[f32]) -> R) -> R {
    if g.is_pointwise() {
        return f(x_n);
    }
    with_scratch(g.patch_len() * g.out_pixels(), |col| {
        im2col(g, x_n, col);
        f(col)
    })
}

/// `y[n] = conv(x[n], w)`.
pub fn forward(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    if let Some(cpu) = conv_direct::applies(g) {
        conv_direct::forward(cpu, g, x, w)
    } else if let Some(cpu) = conv_stride2::applies(g) {
        conv_stride2::forward(cpu, g, x, w)
    } else {
        forward_gemm(g, x, w)
    }
}

/// The input gradient `dx` of `conv(x, w)` given `dy`.
pub fn input_grad(g: &ConvGeometry, dy: &[f32], w: &[f32]) -> Vec<f32> {
    if let Some(cpu) = conv_direct::applies(g) {
        conv_direct::input_grad(cpu, g, dy, w)
    } else if let Some(cpu) = conv_stride2::applies(g) {
        conv_stride2::input_grad(cpu, g, dy, w)
    } else {
        input_grad_gemm(g, dy, w)
    }
}

/// The weight gradient `dW` of `conv(x, w)` given `dy`.
pub fn weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let direct_pays = conv_direct::weight_grad_pays(g);
    if let Some(cpu) = conv_direct::applies(g).filter(|_| direct_pays) {
        conv_direct::weight_grad(cpu, g, x, dy)
    } else if let Some(cpu) = conv_stride2::applies(g).filter(|_| direct_pays) {
        conv_stride2::weight_grad(cpu, g, x, dy)
    } else {
        weight_grad_gemm(g, x, dy)
    }
}

/// `y[n] = W im2col(x[n])`.
pub(super) fn forward_gemm(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (k, p) = (g.patch_len(), g.out_pixels());
    let image = g.c_in * g.in_pixels();
    let mut y = vec![0f32; g.batch * g.c_out * p];
    if y.is_empty() {
        return y;
    }
    let threads = gemm_threads(g.batch);
    for_each_part(
        y.chunks_mut(g.c_out * p).collect(),
        |n, y_n: &mut &mut [f32]| {
            with_columns(g, &x[n * image..(n + 1) * image], |col| {
                sgemm(
                    MatMut::row_major(y_n, g.c_out, p),
                    MatRef::row_major(w, g.c_out, k),
                    MatRef::row_major(col, k, p),
                    false,
                    threads,
                )
            });
        },
    );
    y
}

/// `dx[n] = col2im(W^T dy[n])`.
pub(super) fn input_grad_gemm(g: &ConvGeometry, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let (k, p) = (g.patch_len(), g.out_pixels());
    let image = g.c_in * g.in_pixels();
    let mut dx = vec![0f32; g.batch * image];
    if dx.is_empty() {
        return dx;
    }
    let threads = gemm_threads(g.batch);
    let w_t = MatRef::row_major(w, g.c_out, k).t();
    for_each_part(
        dx.chunks_mut(image).collect(),
        |n, dx_n: &mut &mut [f32]| {
            let dy_n = MatRef::row_major(&dy[n * g.c_out * p..(n + 1) * g.c_out * p], g.c_out, p);
            if g.is_pointwise() {
                // The column matrix is the image gradient itself: write it in place.
                sgemm(MatMut::row_major(dx_n, k, p), w_t, dy_n, false, threads);
                return;
            }
            with_scratch(k * p, |dcol| {
                sgemm(MatMut::row_major(dcol, k, p), w_t, dy_n, false, threads);
                col2im_add(g, dcol, dx_n);
            });
        },
    );
    dx
}

/// `dW = sum_n dy[n] im2col(x[n])^T`, summed per task and then across tasks.
pub(super) fn weight_grad_gemm(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, p) = (g.patch_len(), g.out_pixels());
    let image = g.c_in * g.in_pixels();
    let len = g.c_out * k;
    if len == 0 || g.batch == 0 {
        return vec![0f32; len];
    }
    let threads = gemm_threads(g.batch);
    // Twice as many tasks as threads lets a thread slowed by other load hand work over, while
    // each task still sums several images before the cheap cross-task reduction.
    let per_task = g.batch.div_ceil((2 * self::threads()).clamp(1, g.batch));
    let tasks = g.batch.div_ceil(per_task);
    let partials: Vec<Mutex<Vec<f32>>> = (0..tasks).map(|_| Mutex::new(Vec::new())).collect();
    for_each_index(tasks, |t| {
        let mut dw = vec![0f32; len];
        for n in t * per_task..((t + 1) * per_task).min(g.batch) {
            with_columns(g, &x[n * image..(n + 1) * image], |col| {
                sgemm(
                    MatMut::row_major(&mut dw, g.c_out, k),
                    MatRef::row_major(&dy[n * g.c_out * p..(n + 1) * g.c_out * p], g.c_out, p),
                    MatRef::row_major(col, k, p).t(),
                    true,
                    threads,
                )
            });
        }
        *partials[t]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = dw;
    });
    let mut dw = vec![0f32; len];
    for part in partials {
        let part = part
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        dw.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
    }
    dw
}
