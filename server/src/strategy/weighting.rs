//! Update hygiene for the FedAvg weight: a worker's update counts with the smallest of the sample
//! count it reports, what the coordinator asked for (`max_samples_per_round`), what it declared
//! at join, and, when the job sets one, a cap on its share of the round's weight. A worker that
//! declares 2^64 − 1 samples therefore weighs no more than an honest one asked for the same work.

/// The bounds one worker's update weight is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightBounds {
    /// The job's `max_samples_per_round`; `None` = every local sample.
    pub asked: Option<u64>,
    /// What the worker declared at join.
    pub joined: u64,
    /// From [`share_cap`]; `None` = no cap.
    pub cap: Option<f64>,
}

impl WeightBounds {
    /// The weight an update reporting `reported` samples gets.
    pub fn weight(&self, reported: u64) -> f64 {
        let samples = reported
            .min(self.joined)
            .min(self.asked.unwrap_or(u64::MAX));
        let w = samples as f64;
        self.cap.map_or(w, |c| w.min(c))
    }
}

/// The largest weight one worker may have when no worker may hold more than `share` of a round's
/// weight, given the expected weights of the round's other sampled workers: `w ≤ s/(1−s)·Σothers`
/// is `w/(w + Σothers) ≤ s`. Counting only the others keeps a worker from raising its own cap by
/// inflating its own declaration. `None` when `share` is 1 or the worker is alone in its round.
pub fn share_cap(share: f64, others_expected: u64) -> Option<f64> {
    if share >= 1.0 || others_expected == 0 {
        return None;
    }
    Some(share / (1.0 - share) * others_expected as f64)
}

/// The weight a worker is expected to bring: its join declaration bounded by what it is asked.
pub fn expected(joined: u64, asked: Option<u64>) -> u64 {
    joined.min(asked.unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An absurd report weighs what the worker was asked for, and no more than its join said.
    #[test]
    fn weight_is_the_smallest_bound() {
        let b = WeightBounds {
            asked: Some(2000),
            joined: 5000,
            cap: None,
        };
        assert_eq!(b.weight(u64::MAX), 2000.0);
        assert_eq!(b.weight(100), 100.0);
        let b = WeightBounds {
            asked: None,
            joined: 300,
            cap: Some(150.0),
        };
        assert_eq!(b.weight(u64::MAX), 150.0);
        assert_eq!(b.weight(100), 100.0);
    }

    /// With share s, a worker capped at s/(1−s)·others holds exactly s of the total.
    #[test]
    fn share_cap_bounds_the_share() {
        let cap = share_cap(0.25, 3000).unwrap();
        assert!((cap / (cap + 3000.0) - 0.25).abs() < 1e-12);
        assert_eq!(share_cap(1.0, 3000), None);
        assert_eq!(share_cap(0.5, 0), None);
        assert_eq!(expected(10, Some(5)), 5);
        assert_eq!(expected(10, None), 10);
    }
}
