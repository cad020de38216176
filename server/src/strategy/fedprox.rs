//! FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks"): each worker adds
//! the proximal term `μ/2·‖w − w_global‖²` to its local loss, which keeps local models near the
//! round's global model when data differ across workers. The coordinator aggregates as FedAvg and
//! sends μ with every train task; the term itself lives in the worker's training step.

use serde::{Deserialize, Serialize};

use super::{StrategyParams, check_param};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FedProx {
    /// μ, the proximal coefficient.
    pub mu: f64,
}

impl Default for FedProx {
    /// μ = 0.01, among the values Li et al. report best (0.001 .. 1).
    fn default() -> Self {
        Self { mu: 0.01 }
    }
}

impl FedProx {
    pub(super) fn from_params(p: &StrategyParams) -> Self {
        Self {
            mu: p.proximal_mu.unwrap_or(Self::default().mu),
        }
    }

    pub(super) fn params(&self) -> StrategyParams {
        StrategyParams {
            proximal_mu: Some(self.mu),
            ..StrategyParams::default()
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        check_param("proximal_mu", self.mu, 0.0, 10.0, true)
    }
}
