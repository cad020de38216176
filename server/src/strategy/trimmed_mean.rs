//! Coordinate-wise trimmed mean (Yin et al. 2018): per coordinate, drop the ⌊β·n⌋ smallest and
//! the ⌊β·n⌋ largest of the n deltas and average the rest, unweighted. Tolerates up to ⌊β·n⌋
//! hostile participants; β → 0.5 approaches the median, β = 0 is the plain mean.

use serde::{Deserialize, Serialize};

use super::{StrategyParams, check_param};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrimmedMean {
    /// β, the fraction trimmed from each end, in [0, 0.5).
    pub beta: f64,
}

impl Default for TrimmedMean {
    /// β = 0.2: with 5 participants one is dropped from each end.
    fn default() -> Self {
        Self { beta: 0.2 }
    }
}

impl TrimmedMean {
    pub(super) fn from_params(p: &StrategyParams) -> Self {
        Self {
            beta: p.trim_fraction.unwrap_or(Self::default().beta),
        }
    }

    pub(super) fn params(&self) -> StrategyParams {
        StrategyParams {
            trim_fraction: Some(self.beta),
            ..StrategyParams::default()
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        check_param("trim_fraction", self.beta, 0.0, 0.499, true)
    }

    /// How many values are dropped from each end among `n`.
    pub fn trimmed(&self, n: usize) -> usize {
        ((self.beta * n as f64).floor() as usize).min(n.saturating_sub(1) / 2)
    }

    /// The coordinate-wise trimmed mean of `deltas` (every slice the same length) into `out`.
    pub fn aggregate(&self, deltas: &[&[f32]], out: &mut [f64]) {
        let k = self.trimmed(deltas.len());
        let mut column = Vec::with_capacity(deltas.len());
        for (i, o) in out.iter_mut().enumerate() {
            column.clear();
            column.extend(deltas.iter().map(|d| d[i] as f64));
            column.sort_unstable_by(f64::total_cmp);
            let kept = &column[k..column.len() - k];
            *o = kept.iter().sum::<f64>() / kept.len() as f64;
        }
    }
}
