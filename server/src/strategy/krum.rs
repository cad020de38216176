//! Krum and Multi-Krum (Blanchard et al. 2017, "Machine learning with adversaries: Byzantine
//! tolerant gradient descent"): with n updates of which at most f are hostile, each update is
//! scored by the sum of its squared distances to its n − f − 2 nearest other updates; the m
//! lowest-scoring updates (ties to the lower index) are averaged, unweighted. m = 1 is Krum.
//! Needs n > 2f + 2.

use serde::{Deserialize, Serialize};

use super::StrategyParams;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Krum {
    /// f, the number of hostile participants tolerated.
    pub byzantine: usize,
    /// m, how many of the best-scored updates are averaged (1 = Krum).
    pub selected: usize,
}

impl Default for Krum {
    /// f = 1, m = 1: classic Krum against one hostile participant (needs 5 participants).
    fn default() -> Self {
        Self {
            byzantine: 1,
            selected: 1,
        }
    }
}

impl Krum {
    pub(super) fn from_params(p: &StrategyParams) -> Self {
        let d = Self::default();
        Self {
            byzantine: p.krum_byzantine.map_or(d.byzantine, |f| f as usize),
            selected: p.krum_selected.map_or(d.selected, |m| m as usize),
        }
    }

    pub(super) fn params(&self) -> StrategyParams {
        StrategyParams {
            krum_byzantine: Some(self.byzantine as u32),
            krum_selected: Some(self.selected as u32),
            ..StrategyParams::default()
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if self.selected == 0 {
            return Err("strategy_params.krum_selected must be at least 1".into());
        }
        Ok(())
    }

    /// The fewest participants the scores are defined for: 2f + 3.
    pub fn min_participants(&self) -> usize {
        2 * self.byzantine + 3
    }

    /// A job's quorum must give Krum enough participants, and at least m of them.
    /// `quorum`: the fewest updates a round may close with.
    pub(super) fn validate_for(&self, quorum: usize) -> Result<(), String> {
        let need = self.min_participants().max(self.selected);
        if quorum < need {
            return Err(format!(
                "krum with f = {} and m = {} needs a quorum (spec.quorum, or spec.min_workers when unset) >= {need} (n > 2f + 2 and n >= m), got {quorum}",
                self.byzantine, self.selected
            ));
        }
        Ok(())
    }

    /// Each update's score (sum of squared distances to its n − f − 2 nearest others), from the
    /// pairwise squared distances `dist[i][j]`.
    pub fn scores(&self, dist: &[Vec<f64>]) -> Vec<f64> {
        let n = dist.len();
        let nearest = n.saturating_sub(self.byzantine + 2);
        (0..n)
            .map(|i| {
                let mut others: Vec<f64> = (0..n).filter(|&j| j != i).map(|j| dist[i][j]).collect();
                others.sort_unstable_by(f64::total_cmp);
                others.iter().take(nearest).sum()
            })
            .collect()
    }

    /// The indices of the m lowest scores, ties to the lower index, in ascending order.
    pub fn select(&self, scores: &[f64]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
        let mut chosen: Vec<usize> = order.into_iter().take(self.selected).collect();
        chosen.sort_unstable();
        chosen
    }
}

/// Adds the squared distances between `deltas`' slices (one tensor of every update) into `dist`.
pub fn add_squared_distances(deltas: &[&[f32]], dist: &mut [Vec<f64>]) {
    let n = deltas.len();
    for i in 0..n {
        for j in i + 1..n {
            let d: f64 = deltas[i]
                .iter()
                .zip(deltas[j])
                .map(|(a, b)| {
                    let x = *a as f64 - *b as f64;
                    x * x
                })
                .sum();
            dist[i][j] += d;
            dist[j][i] += d;
        }
    }
}
