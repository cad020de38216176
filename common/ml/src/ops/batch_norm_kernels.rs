//! Training-mode batch norm over contiguous NCHW f32 slices, one channel per task: statistics,
//! normalisation and the backward pass each read the data in as few passes as the math allows.

use super::cpu_features::vectorized;
use super::output_buffer::{OutSlots, OutputBuffer};
use super::parallel::for_each_part;
use super::sizes;

/// Per-channel batch statistics of one forward pass, kept for its backward pass.
#[derive(Debug, Clone)]
pub struct ChannelStats {
    pub mean: Vec<f32>,
    /// Biased (divide by count) variance, the one the forward pass normalises with.
    pub var: Vec<f32>,
    pub inv_std: Vec<f32>,
}

/// Sizes of an `[n, c, hw]` tensor seen channel by channel.
#[derive(Debug, Clone, Copy)]
pub struct Planes {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
}

impl Planes {
    /// Values per channel.
    pub fn count(&self) -> usize {
        self.n * self.hw
    }

    /// Values in all planes.
    fn len(&self) -> usize {
        sizes::product("batch norm planes", &[self.n, self.c, self.hw])
    }

    /// The `n` contiguous planes of each channel of `buf`, grouped by channel.
    fn by_channel<'a>(&self, buf: OutSlots<'a>) -> Vec<Vec<OutSlots<'a>>> {
        assert_eq!(buf.len(), self.len(), "buffer does not match the planes");
        let mut groups: Vec<Vec<OutSlots<'a>>> =
            (0..self.c).map(|_| Vec::with_capacity(self.n)).collect();
        for (i, plane) in buf.chunks(self.hw.max(1)).enumerate().take(self.n * self.c) {
            groups[i % self.c].push(plane);
        }
        groups
    }

    fn plane<'a>(&self, buf: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        let start = (n * self.c + c) * self.hw;
        &buf[start..start + self.hw]
    }
}

/// `(sum a, sum b)` of `(a, b) = f(x, g)` over two equally long slices, in eight independent
/// f32 lanes each, so that the loop vectorises (a single running sum is a chain of dependent adds
/// the compiler may not reorder). Planes are short (hundreds of values), so f32 partial sums lose
/// nothing that matters; callers sum planes in f64. Runs compiled for the selected ISA
/// (`vectorized`); the lanes and so the sums are the same on every ISA.
fn lane_sum2(xs: &[f32], gs: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> (f32, f32) {
    vectorized(
        #[inline(always)]
        move || {
            let (mut acc_a, mut acc_b) = ([0f32; 8], [0f32; 8]);
            let (xc, gc) = (xs.chunks_exact(8), gs.chunks_exact(8));
            let (mut tail_a, mut tail_b) = (0f32, 0f32);
            for (&x, &g) in xc.remainder().iter().zip(gc.remainder()) {
                let (a, b) = f(x, g);
                tail_a += a;
                tail_b += b;
            }
            for (x8, g8) in xc.zip(gc) {
                for i in 0..8 {
                    let (a, b) = f(x8[i], g8[i]);
                    acc_a[i] += a;
                    acc_b[i] += b;
                }
            }
            (
                acc_a.iter().sum::<f32>() + tail_a,
                acc_b.iter().sum::<f32>() + tail_b,
            )
        },
    )
}

/// `out[i] = f(x[i], r[i])` over one plane, compiled for the selected ISA (`vectorized`).
fn map_plane2(out: OutSlots<'_>, xs: &[f32], rs: &[f32], f: impl Fn(f32, f32) -> f32) {
    vectorized(
        #[inline(always)]
        move || {
            for ((mut o, &x), &r) in out.iter().zip(xs).zip(rs) {
                o.write(f(x, r));
            }
        },
    )
}

/// `out[i] = f(x[i])` over one plane, compiled for the selected ISA (`vectorized`).
fn map_plane(out: OutSlots<'_>, xs: &[f32], f: impl Fn(f32) -> f32) {
    vectorized(
        #[inline(always)]
        move || {
            for (mut o, &x) in out.iter().zip(xs) {
                o.write(f(x));
            }
        },
    )
}

/// `y = x * scale[c] + shift[c]` per channel, then `max(y, 0)` when `relu` is set: batch norm
/// in evaluation, with the running statistics folded into `scale` and `shift`.
pub fn affine(p: Planes, x: &[f32], scale: &[f32], shift: &[f32], relu: bool) -> Vec<f32> {
    assert_eq!(x.len(), p.len(), "input does not match the planes");
    let mut y = OutputBuffer::new(x.len());
    let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
    let planes: Vec<OutSlots<'_>> = y.slots().chunks(p.hw.max(1)).collect();
    for_each_part(planes, |i, out| {
        let c = i % p.c;
        let (s, t) = (scale[c], shift[c]);
        map_plane(out.reborrow(), &x[i * p.hw..(i + 1) * p.hw], move |v| {
            (v * s + t).max(floor)
        });
    });
    // SAFETY: the planes cover `y`, and each is zipped with an equally long plane of `x`.
    unsafe { y.assume_written() }
}

/// `y = (x - mean) / sqrt(var + eps) * gamma + beta` with the batch's own statistics, plus
/// `skip` (a residual of `x`'s shape) when given, followed by `max(y, 0)` when `relu` is set.
pub fn forward(
    p: Planes,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    relu: bool,
    skip: Option<&[f32]>,
) -> (Vec<f32>, ChannelStats) {
    if let Some(skip) = skip {
        assert_eq!(skip.len(), x.len(), "residual does not match the input");
    }
    let mut y = OutputBuffer::new(x.len());
    let mut stats = vec![(0f32, 0f32, 0f32); p.c];
    let count = p.count().max(1) as f64;
    let parts: Vec<_> = p
        .by_channel(y.slots())
        .into_iter()
        .zip(stats.iter_mut())
        .collect();
    for_each_part(parts, |c, (y_planes, stat)| {
        // One pass of shifted sums: with `k` a value of the channel itself, sum (x - k) and
        // sum (x - k)^2 stay small next to the variance, so E[(x-k)^2] - E[x-k]^2 does not lose
        // it to cancellation the way E[x^2] - E[x]^2 does for large-mean activations. Planes are
        // summed in f32 lanes, planes together in f64.
        let k = p.plane(x, 0, c).first().copied().unwrap_or(0.0);
        let (sum, sq) = (0..p.n).fold((0f64, 0f64), |(s1, s2), n| {
            let (a, b) = lane_sum2(p.plane(x, n, c), p.plane(x, n, c), move |v, _| {
                let d = v - k;
                (d, d * d)
            });
            (s1 + f64::from(a), s2 + f64::from(b))
        });
        let shifted_mean = sum / count;
        let mean = f64::from(k) + shifted_mean;
        let var = (sq / count - shifted_mean * shifted_mean).max(0.0);
        let inv_std = 1.0 / (var + f64::from(eps)).sqrt();
        let scale = (f64::from(gamma[c]) * inv_std) as f32;
        let shift = (f64::from(beta[c]) - mean * f64::from(gamma[c]) * inv_std) as f32;
        let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
        for (n, out) in y_planes.iter_mut().enumerate() {
            let xs = p.plane(x, n, c);
            match skip {
                None => map_plane(out.reborrow(), xs, move |v| (v * scale + shift).max(floor)),
                Some(skip) => map_plane2(out.reborrow(), xs, p.plane(skip, n, c), move |v, r| {
                    (v * scale + shift + r).max(floor)
                }),
            }
        }
        **stat = (mean as f32, var as f32, inv_std as f32);
    });
    let stats = ChannelStats {
        mean: stats.iter().map(|s| s.0).collect(),
        var: stats.iter().map(|s| s.1).collect(),
        inv_std: stats.iter().map(|s| s.2).collect(),
    };
    // SAFETY: `by_channel` hands out every plane of `y` once, and each is zipped with an
    // equally long plane of `x`.
    (unsafe { y.assume_written() }, stats)
}

/// Gradients of the forward pass, packed as `[dx (n*c*hw), dgamma (c), dbeta (c)]`:
/// `dbeta = sum dy`, `dgamma = sum dy * xhat`,
/// `dx = gamma * inv_std * (dy - dbeta / m - xhat * dgamma / m)` with `m` values per channel.
/// With `relu`, `dy` first passes only where the normalised output (recomputed from `x`; `beta`
/// is needed for that) was positive.
pub fn backward(
    p: Planes,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    beta: &[f32],
    stats: &ChannelStats,
    relu: bool,
) -> Vec<f32> {
    let len = p.len();
    let mut out = OutputBuffer::new(sizes::sum("batch norm gradients", &[len, 2 * p.c]));
    let (dx, params) = out.slots().split_at(len);
    let (dgamma, dbeta) = params.split_at(p.c);
    let m = p.count().max(1) as f32;
    let parts: Vec<_> = p
        .by_channel(dx)
        .into_iter()
        .zip(dgamma.iter().zip(dbeta.iter()))
        .collect();
    for_each_part(parts, |c, (dx_planes, (dg, db))| {
        let (mean, inv_std) = (stats.mean[c], stats.inv_std[c]);
        // The forward's affine map, to recompute which outputs the ReLU let through.
        let (fwd_scale, fwd_shift) = (gamma[c] * inv_std, beta[c] - mean * gamma[c] * inv_std);
        let pass = move |xv: f32, g: f32| {
            if !relu || xv * fwd_scale + fwd_shift > 0.0 {
                g
            } else {
                0.0
            }
        };
        let (mut sum_dy, mut sum_dy_xc) = (0f64, 0f64);
        for n in 0..p.n {
            let (xs, dys) = (p.plane(x, n, c), p.plane(dy, n, c));
            let (a, b) = lane_sum2(xs, dys, move |xv, g| {
                let g = pass(xv, g);
                (g, g * (xv - mean))
            });
            sum_dy += f64::from(a);
            sum_dy_xc += f64::from(b);
        }
        let dgamma_c = (sum_dy_xc * f64::from(inv_std)) as f32;
        db.write(sum_dy as f32);
        dg.write(dgamma_c);
        let scale = gamma[c] * inv_std;
        let mean_dy = sum_dy as f32 / m;
        // xhat * dgamma / m = (x - mean) * inv_std * dgamma / m
        let k = inv_std * dgamma_c / m;
        for (n, out) in dx_planes.iter_mut().enumerate() {
            let (xs, dys) = (p.plane(x, n, c), p.plane(dy, n, c));
            map_plane2(out.reborrow(), xs, dys, move |xv, g| {
                scale * (pass(xv, g) - mean_dy - (xv - mean) * k)
            });
        }
    });
    // SAFETY: `by_channel` hands out every plane of `dx` once, each zipped with equally long
    // planes of `x` and `dy`, and every channel writes its `dgamma` and `dbeta`.
    unsafe { out.assume_written() }
}
