//! Stochastic rounding for the int8 encoding: `y` becomes `floor(y)` or `floor(y) + 1`, the upper
//! one with probability `y - floor(y)`, so the rounded value equals `y` in expectation.
//!
//! The uniform draws come from SplitMix64, spelled out here rather than taken from `rand`, whose
//! generators may change between versions: the same seed must give the same bytes in every
//! build, so that a run is reproducible and a re-sent update is the very same update. Seeds are
//! derived with [`fedcsg_core::seed::derive_seed`] per transfer (worker and round) and tensor.

use fedcsg_core::seed::derive_seed;

/// A reproducible stream of uniform draws in [0, 1) for one tensor.
#[derive(Debug, Clone)]
pub struct StochasticRounding {
    state: u64,
}

impl StochasticRounding {
    /// The stream of tensor number `tensor` (its position in the transfer) of a transfer seeded
    /// with `seed`.
    pub fn for_tensor(seed: u64, tensor: u64) -> Self {
        Self {
            state: derive_seed(seed, tensor),
        }
    }

    /// A uniform draw in [0, 1) with 53 random bits.
    fn next_unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `y` rounded down or up at random, unbiased: `E[round(y)] = y`.
    pub fn round(&mut self, y: f64) -> f64 {
        let floor = y.floor();
        let up = self.next_unit() < y - floor;
        floor + f64::from(u8::from(up))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same seed and tensor give the same draws; another tensor gives others.
    #[test]
    fn streams_are_reproducible_and_distinct() {
        let draws = |seed, tensor| {
            let mut r = StochasticRounding::for_tensor(seed, tensor);
            (0..64).map(|_| r.round(0.5)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7, 1), draws(7, 1));
        assert_ne!(draws(7, 1), draws(7, 2));
        assert_ne!(draws(7, 1), draws(8, 1));
    }

    /// Integers stay put; a fraction rounds to one of its two neighbours with the right odds
    /// (0.3 over 100,000 draws: the mean is within 5 standard deviations, 0.0072, of 0.3).
    #[test]
    fn rounding_is_unbiased_and_stays_between_neighbours() {
        let mut r = StochasticRounding::for_tensor(1, 0);
        assert_eq!(r.round(3.0), 3.0);
        assert_eq!(r.round(-2.0), -2.0);
        let n = 100_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let v = r.round(-4.7);
            assert!(v == -5.0 || v == -4.0, "{v}");
            sum += v + 5.0;
        }
        let mean = sum / n as f64;
        assert!((mean - 0.3).abs() < 0.0072, "mean {mean}");
    }
}
