//! Coordinate-wise median (Yin et al. 2018, "Byzantine-robust distributed learning"): each
//! coordinate of the aggregate is the median of the updates' deltas there, unweighted (a declared
//! sample count cannot buy influence). With an even count, the mean of the two middle values.
//! Tolerates up to half the participants sending anything at all.

/// The coordinate-wise median of `deltas` (every slice the same length) into `out`.
pub fn aggregate(deltas: &[&[f32]], out: &mut [f64]) {
    let mut column = Vec::with_capacity(deltas.len());
    for (i, o) in out.iter_mut().enumerate() {
        column.clear();
        column.extend(deltas.iter().map(|d| d[i] as f64));
        *o = median(&mut column);
    }
}

/// The median of finite values (reorders them); NaN for none.
fn median(values: &mut [f64]) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    values.sort_unstable_by(f64::total_cmp);
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
