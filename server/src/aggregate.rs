//! FedAvg's aggregation: a running sample-weighted sum of updates, so memory is one model's size
//! whatever the number of workers. Accumulates in f64 so the result does not depend on the
//! order updates arrive in (up to f64 rounding, far below f32 resolution).

use fedcsg_core::tensor::{NamedTensor, StateDict};

#[derive(Debug, Clone)]
pub struct WeightedMean {
    names: Vec<(String, Vec<usize>)>,
    sums: Vec<Vec<f64>>,
    total_weight: f64,
    count: usize,
}

impl WeightedMean {
    /// An empty accumulator for tensors named and shaped like `template`.
    pub fn new(template: &StateDict) -> Self {
        let names = template
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        let sums = template
            .tensors()
            .iter()
            .map(|t| vec![0.0; t.values.len()])
            .collect();
        Self {
            names,
            sums,
            total_weight: 0.0,
            count: 0,
        }
    }

    /// Adds `update` with `weight` (its sample count). The update must have exactly the
    /// template's names and shapes (validated by the caller; checked again here).
    pub fn add(&mut self, update: &StateDict, weight: f64) -> Result<(), String> {
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(format!(
                "weight {weight} is not a finite non-negative number"
            ));
        }
        if update.len() != self.names.len() {
            return Err(format!(
                "update has {} tensors, expected {}",
                update.len(),
                self.names.len()
            ));
        }
        for ((name, shape), t) in self.names.iter().zip(update.tensors()) {
            if &t.name != name || &t.shape != shape {
                return Err(format!(
                    "update tensor {:?} {:?} does not match {:?} {:?}",
                    t.name, t.shape, name, shape
                ));
            }
        }
        for (sum, t) in self.sums.iter_mut().zip(update.tensors()) {
            for (s, v) in sum.iter_mut().zip(&t.values) {
                *s += weight * *v as f64;
            }
        }
        self.total_weight += weight;
        self.count += 1;
        Ok(())
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }

    /// The weighted mean per tensor in f64 (template order), or `None` when no weight has been
    /// added.
    pub fn mean_values(&self) -> Option<Vec<Vec<f64>>> {
        if self.total_weight <= 0.0 {
            return None;
        }
        Some(
            self.sums
                .iter()
                .map(|sum| sum.iter().map(|s| s / self.total_weight).collect())
                .collect(),
        )
    }

    /// The weighted mean, or `None` when no weight has been added.
    pub fn mean(&self) -> Option<StateDict> {
        if self.total_weight <= 0.0 {
            return None;
        }
        let tensors = self
            .names
            .iter()
            .zip(&self.sums)
            .map(|((name, shape), sum)| NamedTensor {
                name: name.clone(),
                shape: shape.clone(),
                values: sum.iter().map(|s| (s / self.total_weight) as f32).collect(),
            })
            .collect();
        StateDict::new(tensors).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(values: &[f32]) -> StateDict {
        StateDict::new(vec![NamedTensor {
            name: "a".into(),
            shape: vec![values.len()],
            values: values.to_vec(),
        }])
        .unwrap()
    }

    /// Weighted by sample counts: (1*[0,4] + 3*[4,0]) / 4 = [3, 1].
    #[test]
    fn weights_by_samples() {
        let mut m = WeightedMean::new(&state(&[0.0, 0.0]));
        m.add(&state(&[0.0, 4.0]), 1.0).unwrap();
        m.add(&state(&[4.0, 0.0]), 3.0).unwrap();
        assert_eq!(m.mean().unwrap().tensors()[0].values, vec![3.0, 1.0]);
    }

    /// An update of zero samples contributes nothing; with only such updates there is no mean.
    #[test]
    fn zero_sample_updates_do_not_count() {
        let mut m = WeightedMean::new(&state(&[0.0]));
        m.add(&state(&[100.0]), 0.0).unwrap();
        assert!(m.mean().is_none());
        m.add(&state(&[2.0]), 5.0).unwrap();
        assert_eq!(m.mean().unwrap().tensors()[0].values, vec![2.0]);
    }

    /// Wrong names or shapes are refused and leave the sums untouched.
    #[test]
    fn mismatched_updates_are_refused() {
        let mut m = WeightedMean::new(&state(&[0.0, 0.0]));
        m.add(&state(&[1.0, 1.0]), 1.0).unwrap();
        assert!(m.add(&state(&[1.0]), 1.0).is_err());
        assert!(m.add(&state(&[1.0, 1.0]), f64::NAN).is_err());
        assert_eq!(m.count(), 1);
        assert_eq!(m.mean().unwrap().tensors()[0].values, vec![1.0, 1.0]);
    }

    fn updates() -> impl Strategy<Value = Vec<(Vec<f32>, u32)>> {
        proptest::collection::vec(
            (proptest::collection::vec(-1e3f32..1e3, 4), 1u32..1000),
            1..8,
        )
    }

    fn mean_of<'a>(updates: impl IntoIterator<Item = &'a (Vec<f32>, u32)>) -> Vec<f32> {
        let mut m = WeightedMean::new(&state(&[0.0; 4]));
        for (v, w) in updates {
            m.add(&state(v), *w as f64).unwrap();
        }
        m.mean().unwrap().tensors()[0].values.clone()
    }

    proptest! {
        /// The mean does not depend on the order updates arrive in (reversed, or any shuffle).
        #[test]
        fn order_independent(updates in updates(), seed in any::<u64>()) {
            let mut shuffled = updates.clone();
            // A seeded Fisher-Yates shuffle: any permutation, reproducible from the seed.
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let fwd = mean_of(&updates);
            prop_assert_eq!(&fwd, &mean_of(updates.iter().rev()));
            prop_assert_eq!(&fwd, &mean_of(&shuffled));
        }

        /// Weights are sample counts: the mean is sum(w*v)/sum(w) (computed here independently),
        /// and an update of weight k counts exactly like k updates of weight 1.
        #[test]
        fn weighted_by_samples(updates in proptest::collection::vec((proptest::collection::vec(-1e3f32..1e3, 4), 1u32..6), 1..6)) {
            let total: f64 = updates.iter().map(|(_, w)| *w as f64).sum();
            let got = mean_of(&updates);
            for (i, g) in got.iter().enumerate() {
                let want = updates.iter().map(|(v, w)| *w as f64 * v[i] as f64).sum::<f64>() / total;
                prop_assert!((*g as f64 - want).abs() <= 1e-6 * want.abs().max(1.0), "{g} vs {want}");
            }
            let copies: Vec<(Vec<f32>, u32)> = updates.iter().flat_map(|(v, w)| std::iter::repeat_n((v.clone(), 1), *w as usize)).collect();
            let by_copies = mean_of(&copies);
            for (a, b) in got.iter().zip(&by_copies) {
                prop_assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{a} vs {b}");
            }
        }

        /// An update of zero samples, whatever its values, leaves the mean unchanged.
        #[test]
        fn zero_sample_updates_change_nothing(updates in updates(), junk in proptest::collection::vec(-1e30f32..1e30, 4), at in any::<usize>()) {
            let mut with_junk: Vec<(Vec<f32>, u32)> = updates.clone();
            with_junk.insert(at % (updates.len() + 1), (junk, 0));
            let (a, b) = (mean_of(&updates), mean_of(&with_junk));
            prop_assert_eq!(a, b);
        }
    }
}
