//! Seeded sample orders: the epoch order and the seed mixing every random choice here uses.
//!
//! Randomness comes from `rand::rngs::StdRng` (ChaCha12) seeded with `seed_from_u64`, which gives
//! the same stream on every platform for a given `rand` release; `rand` does not promise the
//! same stream across releases, so `epoch_order_is_pinned` fails loudly if an upgrade changes it.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

pub use fedcsg_core::seed::derive_seed;

/// A permutation of `0..len` for one epoch: the same for the same `(seed, epoch)` on every
/// machine, different across epochs.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = StdRng::seed_from_u64(derive_seed(seed, epoch));
    order.shuffle(&mut rng);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_permutation_that_changes_per_epoch() {
        // Proves that every index appears once and that consecutive epochs differ.
        let a = epoch_order(1000, 42, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(a, epoch_order(1000, 42, 1));
        assert_eq!(a, epoch_order(1000, 42, 0));
    }

    #[test]
    fn epoch_order_is_pinned() {
        // Proves that the order for a fixed seed has not changed (reference values recorded from
        // this implementation with rand 0.9.5); if it fails, runs stop being comparable.
        assert_eq!(epoch_order(10, 1, 0), PINNED);
    }

    const PINNED: [usize; 10] = [1, 7, 3, 5, 8, 6, 4, 9, 2, 0];
}
