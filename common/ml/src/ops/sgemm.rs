//! A bounds-checked view of the `gemm` crate's f32 matrix product, the one candle itself uses.

use gemm::Parallelism;

use super::sizes;

/// A strided read-only matrix inside a slice.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A strided writable matrix inside a slice.
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// Elements from the first to one past the last addressed by a strided matrix. Checked: a
/// wrapped span would let `sgemm`'s bounds asserts pass for a slice that is too short.
fn span(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        sizes::sum(
            "strided matrix",
            &[
                sizes::product("strided matrix rows", &[rows - 1, row_stride]),
                sizes::product("strided matrix columns", &[cols - 1, col_stride]),
                1,
            ],
        )
    }
}

impl<'a> MatRef<'a> {
    /// The first `rows * cols` elements of `data` read row by row.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        // A bad slice here is a bug in the kernel that built it, never a user input.
        assert!(
            data.len() >= sizes::product("matrix", &[rows, cols]),
            "matrix {rows}x{cols} does not fit {} elements",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The same elements read as the transposed matrix, without a copy.
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

impl<'a> MatMut<'a> {
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        assert!(
            data.len() >= sizes::product("matrix", &[rows, cols]),
            "matrix {rows}x{cols} does not fit {} elements",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }
}

/// `dst = lhs * rhs`, or `dst += lhs * rhs` when `accumulate` is set.
///
/// `threads > 1` lets gemm split this one product over the rayon pool; the conv kernels pass 1
/// when they already run one product per image in parallel.
pub fn sgemm(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool, threads: usize) {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    assert!(
        lhs.rows == m && rhs.rows == k && rhs.cols == n,
        "gemm shapes do not chain"
    );
    assert!(
        span(m, n, dst.row_stride, dst.col_stride) <= dst.data.len(),
        "gemm destination does not fit its slice"
    );
    assert!(
        span(m, k, lhs.row_stride, lhs.col_stride) <= lhs.data.len(),
        "gemm left factor does not fit its slice"
    );
    assert!(
        span(k, n, rhs.row_stride, rhs.col_stride) <= rhs.data.len(),
        "gemm right factor does not fit its slice"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.data[..span(m, n, dst.row_stride, dst.col_stride)].fill(0.0);
        }
        return;
    }
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let stride = |s: usize| isize::try_from(s).expect("matrix stride fits in isize");
    let (dst_cs, dst_rs) = (stride(dst.col_stride), stride(dst.row_stride));
    let (lhs_cs, lhs_rs) = (stride(lhs.col_stride), stride(lhs.row_stride));
    let (rhs_cs, rhs_rs) = (stride(rhs.col_stride), stride(rhs.row_stride));
    // SAFETY: the asserts above (on spans computed without overflow) keep every strided access
    // of all three matrices inside their slices, and the strides convert to isize unchanged.
    // `dst` is borrowed mutably, so it aliases neither input. gemm writes only computed floats
    // into `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst_cs,
            dst_rs,
            accumulate,
            lhs.data.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.data.as_ptr(),
            rhs_cs,
            rhs_rs,
            // gemm computes dst = alpha * dst + beta * lhs * rhs; alpha is read only with read_dst.
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}
