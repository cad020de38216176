//! Aggregation strategies: how a round's accepted updates, each a delta from the round's global
//! model, become the next global model. One file per strategy, the way candle-nn keeps one layer
//! per file:
//!
//! - streaming (O(model) memory whatever the number of workers; the updates' sample-weighted
//!   mean delta, then a server step): [`fedavg`], [`fedavgm`] (server momentum), the adaptive
//!   server optimisers [`fedadam`], [`fedyogi`], [`fedadagrad`] (sharing [`adaptive`]), and
//!   [`fedprox`] (FedAvg on the server, a proximal term on the workers);
//! - robust (every update of the round at once, O(participants × model) memory, capped by
//!   [`MAX_ROBUST_PARTICIPANTS`]): [`median`], [`trimmed_mean`], [`krum`];
//! - for every strategy, update hygiene before aggregation: [`clipping`] of each update's L2 norm
//!   (fixed or adaptive) and [`weighting`] (the bounded FedAvg weight).
//!
//! [`round`] holds a round's accumulator and the step that closes it; [`state`] the server-side
//! state (momentum, moments) committed with each round's model.
//!
//! Batch-norm running statistics are not parameters: the server optimisers move only trained
//! tensors and give the statistics the plain weighted mean of their deltas; the robust
//! aggregators treat statistics like any other coordinate, so a poisoned statistic is outvoted
//! as well.

pub mod adaptive;
pub mod clipping;
pub mod fedadagrad;
pub mod fedadam;
pub mod fedavg;
pub mod fedavgm;
pub mod fedprox;
pub mod fedyogi;
pub mod krum;
pub mod median;
pub mod round;
pub mod state;
pub mod trimmed_mean;
pub mod weighting;

use serde::{Deserialize, Serialize};

pub use adaptive::Adaptive;
pub use clipping::Clipping;
pub use fedavgm::FedAvgM;
pub use fedprox::FedProx;
pub use krum::Krum;
pub use round::{RoundAggregation, RoundOutcome};
pub use state::ServerState;
pub use trimmed_mean::TrimmedMean;

/// The most participants a round of a robust strategy (median, trimmed mean, Krum) samples: they
/// hold every update of the round in memory at once (about 1 MiB each for a full-filter
/// ResNet-20, 0.45 MiB for CSG 12-72), and Krum's pairwise distances grow with its square.
pub const MAX_ROBUST_PARTICIPANTS: usize = 64;

/// A job's aggregation strategy with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Strategy {
    /// McMahan et al. 2017: the sample-weighted mean of the updates.
    FedAvg,
    FedAvgM(FedAvgM),
    FedAdam(Adaptive),
    FedYogi(Adaptive),
    FedAdagrad(Adaptive),
    FedProx(FedProx),
    /// Yin et al. 2018: the coordinate-wise median of the deltas.
    Median,
    TrimmedMean(TrimmedMean),
    Krum(Krum),
}

/// A strategy's parameters as a request gives them: every field optional, an unset one takes the
/// strategy's default, and a set one the strategy does not have is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StrategyParams {
    pub server_learning_rate: Option<f64>,
    pub server_momentum: Option<f64>,
    pub beta1: Option<f64>,
    pub beta2: Option<f64>,
    pub tau: Option<f64>,
    pub proximal_mu: Option<f64>,
    pub trim_fraction: Option<f64>,
    pub krum_byzantine: Option<u32>,
    pub krum_selected: Option<u32>,
}

/// The names [`Strategy::from_parts`] accepts.
pub const STRATEGY_NAMES: &str =
    "fedavg, fedavgm, fedadam, fedyogi, fedadagrad, fedprox, median, trimmed-mean, krum";

impl Strategy {
    /// The strategy called `name` with `params`, each checked; the message names the field.
    pub fn from_parts(name: &str, params: &StrategyParams) -> Result<Self, String> {
        let p = params;
        let strategy = match name {
            "" | "fedavg" => Strategy::FedAvg,
            "fedavgm" => Strategy::FedAvgM(FedAvgM::from_params(p)),
            "fedadam" => Strategy::FedAdam(Adaptive::from_params(Adaptive::ADAM, p)),
            "fedyogi" => Strategy::FedYogi(Adaptive::from_params(Adaptive::YOGI, p)),
            "fedadagrad" => Strategy::FedAdagrad(Adaptive::from_params(Adaptive::ADAGRAD, p)),
            "fedprox" => Strategy::FedProx(FedProx::from_params(p)),
            "median" => Strategy::Median,
            "trimmed-mean" | "trimmed_mean" => Strategy::TrimmedMean(TrimmedMean::from_params(p)),
            "krum" | "multi-krum" => Strategy::Krum(Krum::from_params(p)),
            other => {
                return Err(format!(
                    "unknown strategy {other:?}: use one of {STRATEGY_NAMES}"
                ));
            }
        };
        // A parameter the strategy does not read is a mistake worth reporting, not ignoring.
        let own = strategy.params();
        let given = [
            (
                "server_learning_rate",
                p.server_learning_rate.is_some(),
                own.server_learning_rate.is_some(),
            ),
            (
                "server_momentum",
                p.server_momentum.is_some(),
                own.server_momentum.is_some(),
            ),
            ("beta1", p.beta1.is_some(), own.beta1.is_some()),
            ("beta2", p.beta2.is_some(), own.beta2.is_some()),
            ("tau", p.tau.is_some(), own.tau.is_some()),
            (
                "proximal_mu",
                p.proximal_mu.is_some(),
                own.proximal_mu.is_some(),
            ),
            (
                "trim_fraction",
                p.trim_fraction.is_some(),
                own.trim_fraction.is_some(),
            ),
            (
                "krum_byzantine",
                p.krum_byzantine.is_some(),
                own.krum_byzantine.is_some(),
            ),
            (
                "krum_selected",
                p.krum_selected.is_some(),
                own.krum_selected.is_some(),
            ),
        ];
        if let Some((field, _, _)) = given.iter().find(|(_, set, used)| *set && !*used) {
            return Err(format!(
                "strategy_params.{field} does not apply to {}",
                strategy.name()
            ));
        }
        strategy.validate_params()?;
        Ok(strategy)
    }

    /// The strategy's name, as [`Strategy::from_parts`] takes it.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::FedAvg => "fedavg",
            Strategy::FedAvgM(_) => "fedavgm",
            Strategy::FedAdam(_) => "fedadam",
            Strategy::FedYogi(_) => "fedyogi",
            Strategy::FedAdagrad(_) => "fedadagrad",
            Strategy::FedProx(_) => "fedprox",
            Strategy::Median => "median",
            Strategy::TrimmedMean(_) => "trimmed-mean",
            Strategy::Krum(_) => "krum",
        }
    }

    /// Every parameter the strategy has, set to its value (the inverse of `from_parts`).
    pub fn params(&self) -> StrategyParams {
        match *self {
            Strategy::FedAvg | Strategy::Median => StrategyParams::default(),
            Strategy::FedAvgM(m) => m.params(),
            Strategy::FedAdam(a) | Strategy::FedYogi(a) => a.params(true),
            Strategy::FedAdagrad(a) => a.params(false),
            Strategy::FedProx(p) => p.params(),
            Strategy::TrimmedMean(t) => t.params(),
            Strategy::Krum(k) => k.params(),
        }
    }

    fn validate_params(&self) -> Result<(), String> {
        match self {
            Strategy::FedAvg | Strategy::Median => Ok(()),
            Strategy::FedAvgM(m) => m.validate(),
            Strategy::FedAdam(a) | Strategy::FedYogi(a) | Strategy::FedAdagrad(a) => a.validate(),
            Strategy::FedProx(p) => p.validate(),
            Strategy::TrimmedMean(t) => t.validate(),
            Strategy::Krum(k) => k.validate(),
        }
    }

    /// Whether the strategy needs every update of a round at once (the robust ones).
    pub fn needs_every_update(&self) -> bool {
        matches!(
            self,
            Strategy::Median | Strategy::TrimmedMean(_) | Strategy::Krum(_)
        )
    }

    /// The proximal coefficient μ workers add to their local loss (0 except for FedProx).
    pub fn proximal_mu(&self) -> f64 {
        match self {
            Strategy::FedProx(p) => p.mu,
            _ => 0.0,
        }
    }

    /// Checks the strategy against the job's participant bounds: a robust strategy may not need
    /// more participants than it can hold, and Krum needs more than 2f + 2.
    /// Checks the parameters against a job whose rounds start with at least `min_workers` and
    /// may close with as few as `quorum` updates.
    pub fn validate_for(&self, min_workers: usize, quorum: usize) -> Result<(), String> {
        self.validate_params()?;
        if self.needs_every_update() && min_workers > MAX_ROBUST_PARTICIPANTS {
            return Err(format!(
                "spec.min_workers {min_workers} exceeds the {MAX_ROBUST_PARTICIPANTS} participants a round of {} holds in memory",
                self.name()
            ));
        }
        if let Strategy::Krum(k) = self {
            k.validate_for(quorum)?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A parameter in `range` (`lo < x <= hi`, or `lo <= x <= hi` with `closed_low`), or a message
/// naming it.
pub(crate) fn check_param(
    name: &str,
    x: f64,
    lo: f64,
    hi: f64,
    closed_low: bool,
) -> Result<(), String> {
    let low_ok = if closed_low { x >= lo } else { x > lo };
    if x.is_finite() && low_ok && x <= hi {
        Ok(())
    } else {
        let open = if closed_low { '[' } else { '(' };
        Err(format!(
            "strategy_params.{name} must be in {open}{lo}, {hi}], got {x}"
        ))
    }
}

#[cfg(test)]
mod tests;
