//! The direct convolutions' kernels, over any [`TapLayout`]: output pixel `q` of channel `co`
//! sums `weights[co][ci][t] * input[ci * plane + q + offsets[t]]`, so that every kernel tap is a
//! contiguous vector load at a fixed offset. `conv_direct` (stride-1 same convs) and
//! `conv_stride2` (phase-split stride-2 convs) build the layouts and the inputs.
//!
//! The two safe entry points, [`same_conv`] and [`same_conv_weight_grad`], take a [`VectorIsa`]
//! (the CPU check cannot be skipped: it carries the token of `cpu_features`), assert the buffer
//! lengths, computed with overflow checks, that keep the raw-pointer loads and stores of the
//! unsafe blocks in bounds, and hand the register blocks to `tap_kernels_avx512` (16-float
//! vectors, 32 registers, masked tails) or `tap_kernels_avx2` (8-float vectors, 16 registers).

use super::cpu_features::VectorIsa;
use super::output_buffer::OutSlots;
use super::sizes;

/// Output channels per register block of the weight gradient.
const CO_BLOCK: usize = 4;
/// Kernel taps per register block of the weight gradient.
const TAP_BLOCK: usize = 3;

/// Computed pixels per channel are a whole number of 8-float vectors (a 7x7 image computes 56
/// pixels rather than 49): the AVX2 kernels' width, and half the AVX-512 one, whose last vector
/// of a row is then loaded and stored under a mask.
const Q_ALIGN: usize = 8;

/// Where the kernels read one image's input and which output pixels they compute: output pixel
/// `q` (rows of `wp`) of channel `co` sums `weights[co][ci][t] * input[ci * plane + q + offsets[t]]`.
///
/// Fields are private and read through methods: the kernels' unsafe blocks rely on the invariant
/// `new` establishes (`q` a multiple of 8, `q - 1 + max offset < plane`), which nothing may edit.
#[derive(Debug, Clone, Copy)]
pub(super) struct TapLayout {
    wp: usize,
    q: usize,
    plane: usize,
    offsets: [usize; MAX_TAPS],
    taps: usize,
}

/// Largest kernel the direct path takes is 7x7.
pub(super) const MAX_TAPS: usize = 49;

impl TapLayout {
    /// `out_rows` output rows of `wp` pixels, with taps at `offsets` into input channels of at
    /// least `plane_min` floats.
    ///
    /// The kernels' bounds checks rest on `q - 1 + max offset < plane`: the arithmetic here is
    /// checked, so a huge geometry panics instead of wrapping into a plane that is too small.
    pub fn new(wp: usize, out_rows: usize, plane_min: usize, offsets: &[usize]) -> Self {
        assert!(offsets.len() <= MAX_TAPS, "too many kernel taps");
        let pixels = sizes::product("tap layout output", &[out_rows, wp]);
        let q = sizes::product("tap layout output", &[pixels.div_ceil(Q_ALIGN), Q_ALIGN]);
        let max_offset = offsets.iter().copied().max().unwrap_or(0);
        let mut taps = [0; MAX_TAPS];
        taps[..offsets.len()].copy_from_slice(offsets);
        Self {
            wp,
            q,
            plane: plane_min.max(sizes::sum("tap layout plane", &[q, max_offset])),
            offsets: taps,
            taps: offsets.len(),
        }
    }

    /// Width of the computed output rows (the image's width plus columns that are dropped).
    pub fn wp(&self) -> usize {
        self.wp
    }

    /// Output pixels computed per channel, whole rows rounded up to whole register blocks.
    pub fn q(&self) -> usize {
        self.q
    }

    /// Floats per input channel: room for every read of the last block.
    pub fn plane(&self) -> usize {
        self.plane
    }

    /// Kernel taps.
    pub fn taps(&self) -> usize {
        self.taps
    }

    pub(super) fn offsets(&self) -> &[usize] {
        &self.offsets[..self.taps]
    }
}

/// Output channels in the next register block of `same_conv` when `left` remain: blocks of 6
/// keep 6 x 2 accumulators in flight on AVX2 (FMA has 4 cycles of latency on two ports) and
/// 6 x 4 on AVX-512; blocks of 5 make up the rest wherever 6s and 5s add up exactly (16 = 6 + 5 +
/// 5, any count from 20 on), and 4 and 1 the remainders of small counts.
pub(super) fn output_block(left: usize) -> usize {
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
/// as `[n_out, l.q]` (it writes all `n_out * l.q` of those slots). `isa` proves the kernels can
/// run here.
pub(super) fn same_conv(
    isa: VectorIsa,
    l: &TapLayout,
    input: &[f32],
    n_in: usize,
    weights: &[f32],
    n_out: usize,
    mut out: OutSlots<'_>,
) {
    assert!(
        input.len() >= sizes::product("padded input", &[n_in, l.plane]),
        "padded input too short"
    );
    assert!(
        weights.len() >= sizes::product("weights", &[n_out, n_in, l.taps]),
        "weights too short"
    );
    assert!(
        out.len() >= sizes::product("output", &[n_out, l.q]),
        "output too short"
    );
    let (x, w, y) = (input.as_ptr(), weights.as_ptr(), out.as_mut_ptr());
    match isa {
        // SAFETY: the token proves the CPU has the ISA; the asserts above (whose sizes did not
        // overflow) and `TapLayout::new` are the rest of the contract: `x` holds `n_in * plane`
        // floats, `w` `n_out * n_in * taps`, `y` has `n_out * q` writable slots.
        VectorIsa::Avx512(cpu) => unsafe { same_conv_blocks(cpu, l, x, n_in, w, n_out, y) },
        // SAFETY: as above.
        VectorIsa::Avx2(cpu) => unsafe { same_conv_blocks(cpu, l, x, n_in, w, n_out, y) },
    }
}

/// `dw[co][ci][t] += sum_q dy[co][q] * x[ci][q + offset[t]]` for one image: `dy` as
/// `[n_out, l.q]` padded-width rows (zero outside the image), `x` as `n_in` padded planes.
/// `isa` proves the kernels can run here.
pub(super) fn same_conv_weight_grad(
    isa: VectorIsa,
    l: &TapLayout,
    x: &[f32],
    n_in: usize,
    dy: &[f32],
    n_out: usize,
    dw: &mut [f32],
) {
    assert!(
        x.len() >= sizes::product("padded input", &[n_in, l.plane]),
        "padded input too short"
    );
    assert!(
        dy.len() >= sizes::product("output gradient", &[n_out, l.q]),
        "output gradient too short"
    );
    assert!(
        dw.len() >= sizes::product("weight gradient", &[n_out, n_in, l.taps]),
        "weight gradient too short"
    );
    match isa {
        // SAFETY: the token proves the CPU has the ISA; the asserts above and `TapLayout::new`
        // are the rest of the contract.
        VectorIsa::Avx512(cpu) => unsafe { weight_grad_blocks(cpu, l, x, n_in, dy, n_out, dw) },
        // SAFETY: as above.
        VectorIsa::Avx2(cpu) => unsafe { weight_grad_blocks(cpu, l, x, n_in, dy, n_out, dw) },
    }
}

/// The register blocks of one vector ISA, implemented by its token in `tap_kernels_avx512` and
/// `tap_kernels_avx2`. The loops over blocks are the same for every ISA and live here.
pub(super) trait RegisterBlocks: Copy {
    /// Output channels `co..co + CB` of `same_conv` at every pixel.
    ///
    /// # Safety
    /// The CPU has the ISA (`self` is its token). `x` points at `n_in * l.plane()` readable
    /// floats, `w` at `(co + CB) * n_in * l.taps()` and `y` at `(co + CB) * l.q()` writable ones,
    /// with `l` built by `TapLayout::new` (so that `l.q() - 1 + max offset < l.plane()`, and
    /// `l.q()` is a multiple of 8).
    unsafe fn same_conv_block<const CB: usize>(
        self,
        l: &TapLayout,
        x: *const f32,
        n_in: usize,
        w: *const f32,
        co: usize,
        y: *mut f32,
    );

    /// Adds output channels `co..co + CB` x taps `t0..t0 + TB` of input channel `ci` into `dw`.
    ///
    /// # Safety
    /// The CPU has the ISA. `l` comes from `TapLayout::new`, `ci < n_in`, `t0 + TB <= l.taps()`,
    /// `x` holds at least `(ci + 1) * l.plane()` floats and `dy` at least `(co + CB) * l.q()`
    /// (the `dw` writes are bounds-checked).
    // Each argument is one coordinate of the block; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
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
    );
}

/// `same_conv` over all output channels, in blocks of `output_block`.
///
/// # Safety
/// The CPU has the ISA of `cpu`; `x` points at `n_in * l.plane()` readable floats, `w` at
/// `n_out * n_in * l.taps()` and `y` at `n_out * l.q()` writable ones, `l` from `TapLayout::new`.
unsafe fn same_conv_blocks<B: RegisterBlocks>(
    cpu: B,
    l: &TapLayout,
    x: *const f32,
    n_in: usize,
    w: *const f32,
    n_out: usize,
    y: *mut f32,
) {
    let mut co = 0;
    while co < n_out {
        let cb = output_block(n_out - co);
        // SAFETY: block `co..co + cb` with `co + cb <= n_out` reads weights below
        // `n_out * n_in * taps` and stores below `n_out * l.q`; pixel reads stop at
        // `(n_in - 1) * plane + l.q - 1 + max offset < n_in * plane` (this fn's contract).
        unsafe {
            match cb {
                6 => cpu.same_conv_block::<6>(l, x, n_in, w, co, y),
                5 => cpu.same_conv_block::<5>(l, x, n_in, w, co, y),
                4 => cpu.same_conv_block::<4>(l, x, n_in, w, co, y),
                _ => cpu.same_conv_block::<1>(l, x, n_in, w, co, y),
            }
        }
        co += cb;
    }
}

/// `same_conv_weight_grad` over all channel pairs and taps, in blocks of `CO_BLOCK` channels and
/// `TAP_BLOCK` taps (and single ones for the remainders).
///
/// # Safety
/// The CPU has the ISA of `cpu`; `x` holds at least `n_in * l.plane()` floats, `dy` at least
/// `n_out * l.q()`, `dw` at least `n_out * n_in * l.taps()`, `l` from `TapLayout::new`.
unsafe fn weight_grad_blocks<B: RegisterBlocks>(
    cpu: B,
    l: &TapLayout,
    x: &[f32],
    n_in: usize,
    dy: &[f32],
    n_out: usize,
    dw: &mut [f32],
) {
    let mut co = 0;
    while co < n_out {
        let cb = if n_out - co >= CO_BLOCK { CO_BLOCK } else { 1 };
        for ci in 0..n_in {
            let mut t = 0;
            while t < l.taps() {
                let tb = if l.taps() - t >= TAP_BLOCK {
                    TAP_BLOCK
                } else {
                    1
                };
                // SAFETY: with this fn's contract, `co + cb <= n_out`, `ci < n_in` and
                // `t + tb <= l.taps`: `dy` reads stop at `(co + cb) * l.q`, `x` reads at
                // `ci * l.plane + l.q - 1 + max offset < (ci + 1) * l.plane`.
                unsafe {
                    match (cb, tb) {
                        (CO_BLOCK, TAP_BLOCK) => cpu.weight_grad_block::<CO_BLOCK, TAP_BLOCK>(
                            l, x, n_in, dy, co, ci, t, dw,
                        ),
                        (CO_BLOCK, _) => {
                            cpu.weight_grad_block::<CO_BLOCK, 1>(l, x, n_in, dy, co, ci, t, dw)
                        }
                        (_, TAP_BLOCK) => {
                            cpu.weight_grad_block::<1, TAP_BLOCK>(l, x, n_in, dy, co, ci, t, dw)
                        }
                        _ => cpu.weight_grad_block::<1, 1>(l, x, n_in, dy, co, ci, t, dw),
                    }
                }
                t += tb;
            }
        }
        co += cb;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
