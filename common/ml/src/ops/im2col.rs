//! im2col and its adjoint col2im for one image, the data movement around the conv matrix products.
//!
//! The column matrix is `[c_in * kh * kw, oh * ow]`, row-major, rows ordered (channel, kernel row,
//! kernel column) so that a `[c_out, c_in, kh, kw]` weight is its left factor as it lies in memory.

use super::conv_geometry::ConvGeometry;

/// Output columns `[lo, hi)` whose input column `ox * stride + kx - padding` lies inside `[0, w)`.
fn valid_columns(g: &ConvGeometry, kx: usize) -> (usize, usize) {
    let lo = if g.padding > kx {
        (g.padding - kx).div_ceil(g.stride)
    } else {
        0
    };
    let hi = if g.w + g.padding > kx {
        ((g.w - 1 + g.padding - kx) / g.stride + 1).min(g.ow)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// Input row read by output row `oy` at kernel row `ky`, if it is not padding.
fn input_row(g: &ConvGeometry, oy: usize, ky: usize) -> Option<usize> {
    (oy * g.stride + ky)
        .checked_sub(g.padding)
        .filter(|&iy| iy < g.h)
}

/// A stride-1 convolution whose output has the input's size ("same" padding, the 3x3 convs of
/// every ResNet): each im2col row is then the input plane shifted by a constant offset, with the
/// wrapped-around edge columns and the rows off the top or bottom zeroed. The fast paths below
/// copy or add whole planes at a time instead of row pieces of `w` elements.
fn is_same_stride1(g: &ConvGeometry) -> bool {
    g.stride == 1 && g.oh == g.h && g.ow == g.w
}

/// For the im2col row of kernel tap `(ky, kx)` of a same-size stride-1 conv: the signed offset
/// from an output pixel to the input pixel it reads, the output rows `[y_lo, y_hi)` that read
/// inside the image, and the output columns `[x_lo, x_hi)` that do.
struct Shift {
    offset: isize,
    rows: (usize, usize),
    cols: (usize, usize),
}

fn shift(g: &ConvGeometry, ky: usize, kx: usize) -> Shift {
    let (dy, dx) = (
        ky as isize - g.padding as isize,
        kx as isize - g.padding as isize,
    );
    let clamp = |d: isize, n: usize| {
        let lo = (-d).clamp(0, n as isize) as usize;
        let hi = (n as isize - d).clamp(lo as isize, n as isize) as usize;
        (lo, hi)
    };
    Shift {
        offset: dy * g.w as isize + dx,
        rows: clamp(dy, g.h),
        cols: clamp(dx, g.w),
    }
}

fn im2col_same_stride1(g: &ConvGeometry, x: &[f32], col: &mut [f32]) {
    let (hw, w) = (g.in_pixels(), g.w);
    for ci in 0..g.c_in {
        let plane = &x[ci * hw..(ci + 1) * hw];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let r = (ci * g.kh + ky) * g.kw + kx;
                let row = &mut col[r * hw..(r + 1) * hw];
                let s = shift(g, ky, kx);
                let (start, end) = (s.rows.0 * w, s.rows.1 * w);
                row[..start].fill(0.0);
                row[end..].fill(0.0);
                if start == end {
                    continue;
                }
                // Output pixels [start, end) read input pixels [start + offset, end + offset),
                // clipped to the plane; whatever is clipped lies in an edge column, zeroed next.
                let src_lo = (start as isize + s.offset).max(0) as usize;
                let src_hi = ((end as isize + s.offset) as usize).min(hw);
                let dst_lo = (src_lo as isize - s.offset) as usize;
                row[dst_lo..dst_lo + (src_hi - src_lo)].copy_from_slice(&plane[src_lo..src_hi]);
                let (x_lo, x_hi) = s.cols;
                if x_lo > 0 || x_hi < w {
                    for out in row[start..end].chunks_exact_mut(w) {
                        out[..x_lo].fill(0.0);
                        out[x_hi..].fill(0.0);
                    }
                }
            }
        }
    }
}

/// `col2im_add` for a same-size stride-1 conv. `col` is scratch the caller is done with: its
/// edge columns (which map to padding) are zeroed so that each row adds as one span.
fn col2im_add_same_stride1(g: &ConvGeometry, col: &mut [f32], dx: &mut [f32]) {
    let (hw, w) = (g.in_pixels(), g.w);
    for ci in 0..g.c_in {
        let plane = &mut dx[ci * hw..(ci + 1) * hw];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let r = (ci * g.kh + ky) * g.kw + kx;
                let row = &mut col[r * hw..(r + 1) * hw];
                let s = shift(g, ky, kx);
                let (start, end) = (s.rows.0 * w, s.rows.1 * w);
                if start == end {
                    continue;
                }
                let (x_lo, x_hi) = s.cols;
                if x_lo > 0 || x_hi < w {
                    for out in row[start..end].chunks_exact_mut(w) {
                        out[..x_lo].fill(0.0);
                        out[x_hi..].fill(0.0);
                    }
                }
                let src_lo = (start as isize + s.offset).max(0) as usize;
                let src_hi = ((end as isize + s.offset) as usize).min(hw);
                let dst_lo = (src_lo as isize - s.offset) as usize;
                for (d, v) in plane[src_lo..src_hi]
                    .iter_mut()
                    .zip(&row[dst_lo..dst_lo + (src_hi - src_lo)])
                {
                    *d += *v;
                }
            }
        }
    }
}

/// Fills `col` from one image `x` (`[c_in, h, w]`).
pub fn im2col(g: &ConvGeometry, x: &[f32], col: &mut [f32]) {
    if is_same_stride1(g) {
        return im2col_same_stride1(g, x, col);
    }
    let (hw, p) = (g.in_pixels(), g.out_pixels());
    for ci in 0..g.c_in {
        let plane = &x[ci * hw..(ci + 1) * hw];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let r = (ci * g.kh + ky) * g.kw + kx;
                let row = &mut col[r * p..(r + 1) * p];
                let (lo, hi) = valid_columns(g, kx);
                for oy in 0..g.oh {
                    let out = &mut row[oy * g.ow..(oy + 1) * g.ow];
                    let Some(iy) = input_row(g, oy, ky) else {
                        out.fill(0.0);
                        continue;
                    };
                    let src = &plane[iy * g.w..(iy + 1) * g.w];
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    if lo == hi {
                        continue;
                    }
                    // lo * stride + kx >= padding by construction of valid_columns.
                    let first = lo * g.stride + kx - g.padding;
                    if g.stride == 1 {
                        out[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                    } else {
                        for (o, s) in out[lo..hi]
                            .iter_mut()
                            .zip(src[first..].iter().step_by(g.stride))
                        {
                            *o = *s;
                        }
                    }
                }
            }
        }
    }
}

/// Adds `col` into one image's input gradient `dx` (`[c_in, h, w]`): the transpose of `im2col`.
/// `col` is scratch: its entries that map to padding may be overwritten.
pub fn col2im_add(g: &ConvGeometry, col: &mut [f32], dx: &mut [f32]) {
    if is_same_stride1(g) {
        return col2im_add_same_stride1(g, col, dx);
    }
    let (hw, p) = (g.in_pixels(), g.out_pixels());
    for ci in 0..g.c_in {
        let plane = &mut dx[ci * hw..(ci + 1) * hw];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let r = (ci * g.kh + ky) * g.kw + kx;
                let row = &col[r * p..(r + 1) * p];
                let (lo, hi) = valid_columns(g, kx);
                if lo == hi {
                    continue;
                }
                let first = lo * g.stride + kx - g.padding;
                for oy in 0..g.oh {
                    let Some(iy) = input_row(g, oy, ky) else {
                        continue;
                    };
                    let src = &row[oy * g.ow + lo..oy * g.ow + hi];
                    let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
                    if g.stride == 1 {
                        for (d, s) in dst[first..first + (hi - lo)].iter_mut().zip(src) {
                            *d += *s;
                        }
                    } else {
                        for (d, s) in dst[first..].iter_mut().step_by(g.stride).zip(src) {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! col2im must be the exact adjoint of im2col (`<im2col x, c> = <x, col2im c>`), which is
    //! what makes the input gradient right for every stride and padding.

    use super::*;
    use crate::ops::test_support::values;

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        for (c, hw, k, stride, padding) in [
            (3, 7, 3, 1, 1),
            (2, 8, 3, 2, 1),
            (2, 9, 3, 2, 0),
            (1, 5, 1, 2, 0),
            (2, 6, 5, 1, 2),
            (1, 4, 1, 1, 1),
            (3, 4, 3, 1, 1),
            (2, 1, 3, 1, 1),
            (2, 5, 5, 1, 2),
        ] {
            let Ok(g) = ConvGeometry::new(&[1, c, hw, hw], &[1, c, k, k], stride, padding) else {
                panic!("test geometry {c} {hw} {k} {stride} {padding} is invalid");
            };
            let x = values(g.c_in * g.in_pixels(), 1);
            let c_mat = values(g.patch_len() * g.out_pixels(), 2);
            let mut col = vec![f32::NAN; c_mat.len()];
            im2col(&g, &x, &mut col);
            let mut back = vec![0.0; x.len()];
            col2im_add(&g, &mut c_mat.clone(), &mut back);
            let (lhs, rhs) = (dot(&col, &c_mat), dot(&x, &back));
            assert!(
                (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
                "{g:?}: {lhs} vs {rhs}"
            );
        }
    }
}
