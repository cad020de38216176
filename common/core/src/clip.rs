//! The L2 norm of a set of tensors, and clipping it to a bound: what bounds one update's
//! influence (the coordinator's update clipping, differential privacy at either end).

use crate::tensor::NamedTensor;

/// The L2 norm (in f64) of the tensors `counts` selects.
pub fn l2_norm(tensors: &[NamedTensor], counts: impl Fn(&str) -> bool) -> f64 {
    tensors
        .iter()
        .filter(|t| counts(&t.name))
        .flat_map(|t| &t.values)
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
}

/// Scales the selected tensors to L2 norm `bound` when their norm exceeds it; returns the norm
/// before clipping and whether it was clipped.
pub fn clip(tensors: &mut [NamedTensor], bound: f64, counts: impl Fn(&str) -> bool) -> (f64, bool) {
    let norm = l2_norm(tensors, &counts);
    if norm <= bound {
        return (norm, false);
    }
    let factor = bound / norm;
    for t in tensors.iter_mut().filter(|t| counts(&t.name)) {
        for v in &mut t.values {
            *v = (*v as f64 * factor) as f32;
        }
    }
    (norm, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, values: Vec<f32>) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            shape: vec![values.len()],
            values,
        }
    }

    /// Only selected tensors count and are scaled; within the bound nothing changes.
    #[test]
    fn clips_the_selected_tensors_to_the_bound() {
        let mut ts = vec![t("w", vec![3.0, 4.0]), t("bn.running_mean", vec![100.0])];
        let counts = |n: &str| !n.contains("running");
        assert_eq!(l2_norm(&ts, counts), 5.0);
        assert_eq!(clip(&mut ts, 10.0, counts), (5.0, false));
        assert_eq!(ts[0].values, vec![3.0, 4.0]);
        assert_eq!(clip(&mut ts, 1.0, counts), (5.0, true));
        assert!((l2_norm(&ts, counts) - 1.0).abs() < 1e-6);
        assert_eq!(ts[1].values, vec![100.0]);
    }
}
