//! The reconnect schedule: exponential (200 ms, doubling) up to a cap, each delay jittered down
//! by up to half so that workers cut off together do not reconnect together.

use std::time::Duration;

use rand::Rng;

/// First delay of a run of failures.
pub const INITIAL_DELAY: Duration = Duration::from_millis(200);
const FACTOR: u32 = 2;

/// Delays for consecutive failures; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(cap: Duration) -> Self {
        Self {
            cap: cap.max(Duration::from_millis(1)),
            failures: 0,
        }
    }

    /// Failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The un-jittered delay after `failures` consecutive failures (1 = the first).
    pub fn base_delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        INITIAL_DELAY
            .saturating_mul(FACTOR.pow(doublings))
            .min(self.cap)
    }

    /// Records a failure and returns how long to wait: uniform in `[base / 2, base]`.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let base = self.base_delay(self.failures);
        base.mul_f64(rng.random_range(0.5..=1.0))
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    /// Base delays start at 200 ms, double, never decrease, and stop at the cap.
    #[test]
    fn base_delays_double_up_to_the_cap() {
        let b = Backoff::new(Duration::from_secs(30));
        let bases: Vec<u128> = (1..=12).map(|n| b.base_delay(n).as_millis()).collect();
        assert_eq!(
            bases,
            [
                200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000, 30000
            ]
        );
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(30));
        assert!(bases.windows(2).all(|w| w[0] <= w[1]));
        // A cap below the first delay wins from the start.
        assert_eq!(
            Backoff::new(Duration::from_millis(50)).base_delay(1),
            Duration::from_millis(50)
        );
    }

    /// Each jittered delay lies in [base / 2, base], and the jitter actually varies.
    #[test]
    fn delays_are_jittered_within_bounds() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = Backoff::new(Duration::from_secs(5));
        let mut seen = std::collections::HashSet::new();
        for n in 1..=40 {
            let d = b.next_delay(&mut rng);
            let base = b.base_delay(n);
            assert!(
                d >= base / 2 && d <= base,
                "failure {n}: {d:?} outside [{:?}, {base:?}]",
                base / 2
            );
            seen.insert(d);
        }
        assert!(
            seen.len() > 30,
            "jitter should spread delays, got {} distinct",
            seen.len()
        );
    }

    /// A success starts the schedule over.
    #[test]
    fn reset_restarts_from_the_first_delay() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut b = Backoff::new(Duration::from_secs(30));
        for _ in 0..6 {
            b.next_delay(&mut rng);
        }
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_delay(&mut rng) <= INITIAL_DELAY);
    }
}
