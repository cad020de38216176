//! Per-channel normalisation `(pixel / 255 - mean) / std`, from known constants or a training set.

use super::dataset::Dataset;
use super::error::DataError;

/// Per-channel mean and standard deviation on the `[0, 1]` pixel scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Normalization {
    /// Checks that there is one finite mean and one finite positive std per channel.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self, DataError> {
        let invalid = |detail: String| Err(DataError::InvalidNormalization { detail });
        if mean.is_empty() || mean.len() != std.len() {
            return invalid(format!("{} means but {} stds", mean.len(), std.len()));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return invalid(format!("mean {m} is not finite"));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return invalid(format!("std {s} is not finite and positive"));
        }
        Ok(Self { mean, std })
    }

    /// Fashion-MNIST training set: mean 0.2860, std 0.3530 (population statistics of the
    /// 60,000 images; `system_fashion_mnist_matches_constants` recomputes them).
    pub fn fashion_mnist() -> Self {
        Self {
            mean: vec![0.2860],
            std: vec![0.3530],
        }
    }

    /// MNIST training set: mean 0.1307, std 0.3081 (the values in PyTorch's MNIST example).
    pub fn mnist() -> Self {
        Self {
            mean: vec![0.1307],
            std: vec![0.3081],
        }
    }

    /// CIFAR-10 training set, R/G/B: mean 0.4914/0.4822/0.4465, std 0.2470/0.2435/0.2616
    /// (population std over all pixels; the often-copied 0.2023/0.1994/0.2010 are averages of
    /// per-image stds and understate it).
    pub fn cifar10() -> Self {
        Self {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
        }
    }

    /// The identity on the `[0, 1]` scale: mean 0, std 1 for each channel.
    pub fn unit(channels: usize) -> Self {
        Self {
            mean: vec![0.0; channels.max(1)],
            std: vec![1.0; channels.max(1)],
        }
    }

    /// Statistics of `ds` itself, computed exactly from per-channel pixel histograms. An empty
    /// set gives mean 0, std 1; a constant channel gets std 1 rather than a division by zero.
    pub fn from_dataset(ds: &Dataset) -> Self {
        let plane = ds.height() * ds.width();
        let mut hist = vec![[0u64; 256]; ds.channels()];
        for image in ds.images().chunks_exact(ds.image_len()) {
            for (c, pixels) in image.chunks_exact(plane).enumerate() {
                for &p in pixels {
                    hist[c][usize::from(p)] += 1;
                }
            }
        }
        let (mut mean, mut std) = (Vec::new(), Vec::new());
        for h in &hist {
            let n: u64 = h.iter().sum();
            if n == 0 {
                mean.push(0.0);
                std.push(1.0);
                continue;
            }
            let (mut sum, mut sq) = (0f64, 0f64);
            for (v, &count) in h.iter().enumerate() {
                let x = v as f64 / 255.0;
                sum += x * count as f64;
                sq += x * x * count as f64;
            }
            let m = sum / n as f64;
            let s = (sq / n as f64 - m * m).max(0.0).sqrt();
            mean.push(m as f32);
            std.push(if s > 1e-6 { s as f32 } else { 1.0 });
        }
        Self { mean, std }
    }

    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    pub fn std(&self) -> &[f32] {
        &self.std
    }

    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// For each channel, the normalised value of every possible pixel byte: a batch then costs
    /// one table look-up per pixel.
    pub fn lookup_tables(&self) -> Vec<[f32; 256]> {
        self.mean
            .iter()
            .zip(&self.std)
            .map(|(&m, &s)| std::array::from_fn(|v| (v as f32 / 255.0 - m) / s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_dataset_matches_hand_computed_stats() {
        // Proves the statistics on two pixels, 0 and 255: mean 0.5, std 0.5 on the [0, 1] scale.
        let ds = Dataset::new("two", vec![0, 255], vec![0, 0], (1, 1, 1), 1).unwrap();
        let n = Normalization::from_dataset(&ds);
        assert!(
            (n.mean()[0] - 0.5).abs() < 1e-6 && (n.std()[0] - 0.5).abs() < 1e-6,
            "{n:?}"
        );
        assert_eq!(n.lookup_tables()[0][255], 1.0);
    }

    #[test]
    fn new_rejects_bad_statistics() {
        // Proves that mismatched lengths and a zero std are refused.
        assert!(Normalization::new(vec![0.5], vec![]).is_err());
        assert!(Normalization::new(vec![0.5], vec![0.0]).is_err());
        assert!(Normalization::new(vec![0.5], vec![0.2]).is_ok());
    }
}
