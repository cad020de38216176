//! The Gaussian noise of differential privacy, from ChaCha20 (a cryptographically secure
//! generator), seeded from the operating system; tests seed it to reproduce a draw. The normal
//! variates come from `rand_distr` (ziggurat) in f64 and are rounded to f32 only when added.

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal};

/// A source of Gaussian noise.
#[derive(Debug, Clone)]
pub struct GaussianNoise {
    rng: ChaCha20Rng,
}

impl GaussianNoise {
    /// Seeded from the operating system's generator.
    pub fn from_os() -> Self {
        Self {
            rng: ChaCha20Rng::from_os_rng(),
        }
    }

    /// Reproducible noise, for tests only: anyone who knows the seed can remove the noise.
    pub fn from_seed_for_tests(seed: u64) -> Self {
        Self {
            rng: ChaCha20Rng::seed_from_u64(seed),
        }
    }

    /// Adds N(0, std²) to every value (nothing when `std` is 0).
    pub fn add(&mut self, values: &mut [f32], std: f64) {
        if std == 0.0 {
            return;
        }
        let normal = Normal::new(0.0, std).expect("a finite, non-negative standard deviation");
        for v in values {
            *v = (f64::from(*v) + normal.sample(&mut self.rng)) as f32;
        }
    }

    /// Adds N(0, std²) to every value, in f64.
    pub fn add_f64(&mut self, values: &mut [f64], std: f64) {
        if std == 0.0 {
            return;
        }
        let normal = Normal::new(0.0, std).expect("a finite, non-negative standard deviation");
        for v in values {
            *v += normal.sample(&mut self.rng);
        }
    }

    /// One N(0, std²) draw.
    pub fn sample(&mut self, std: f64) -> f64 {
        Normal::new(0.0, std)
            .expect("a finite, non-negative standard deviation")
            .sample(&mut self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The added noise has the asked standard deviation and mean 0 (within 5 standard errors
    /// over 200,000 draws), the same seed gives the same noise, and std 0 adds nothing.
    #[test]
    fn noise_has_the_asked_scale() {
        let n = 200_000;
        let mut values = vec![0.0f32; n];
        GaussianNoise::from_seed_for_tests(7).add(&mut values, 2.5);
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        let var = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / (n - 1) as f64;
        let std = var.sqrt();
        assert!(mean.abs() < 5.0 * 2.5 / (n as f64).sqrt(), "mean {mean}");
        // The standard error of a sample std is about σ/√(2n).
        assert!(
            (std - 2.5).abs() < 5.0 * 2.5 / (2.0 * n as f64).sqrt(),
            "std {std}"
        );
        let mut again = vec![0.0f32; n];
        GaussianNoise::from_seed_for_tests(7).add(&mut again, 2.5);
        assert_eq!(values, again);
        let mut untouched = vec![1.5f32; 10];
        GaussianNoise::from_os().add(&mut untouched, 0.0);
        assert_eq!(untouched, vec![1.5f32; 10]);
    }
}
