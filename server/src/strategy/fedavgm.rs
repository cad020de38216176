//! FedAvgM (Hsu, Qi and Brown 2019, "Measuring the effects of non-identical data distribution"):
//! FedAvg with server momentum. With Δ the round's mean delta, `m ← β·m + Δ` and
//! `x ← x + η·m`; η = 1 and β = 0 is FedAvg.

use serde::{Deserialize, Serialize};

use super::{StrategyParams, check_param};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FedAvgM {
    /// η, the server learning rate.
    pub server_learning_rate: f64,
    /// β, the server momentum.
    pub momentum: f64,
}

impl Default for FedAvgM {
    /// Hsu et al.'s setting: η = 1, β = 0.9.
    fn default() -> Self {
        Self {
            server_learning_rate: 1.0,
            momentum: 0.9,
        }
    }
}

impl FedAvgM {
    pub(super) fn from_params(p: &StrategyParams) -> Self {
        let d = Self::default();
        Self {
            server_learning_rate: p.server_learning_rate.unwrap_or(d.server_learning_rate),
            momentum: p.server_momentum.unwrap_or(d.momentum),
        }
    }

    pub(super) fn params(&self) -> StrategyParams {
        StrategyParams {
            server_learning_rate: Some(self.server_learning_rate),
            server_momentum: Some(self.momentum),
            ..StrategyParams::default()
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        check_param(
            "server_learning_rate",
            self.server_learning_rate,
            0.0,
            100.0,
            false,
        )?;
        check_param("server_momentum", self.momentum, 0.0, 0.999, true)
    }

    /// One server step on one tensor: `m ← β·m + Δ; x ← x + η·m` (f64 arithmetic, f32 storage).
    pub fn step(&self, x: &mut [f32], mean_delta: &[f64], momentum: &mut [f32]) {
        for ((x, d), m) in x.iter_mut().zip(mean_delta).zip(momentum.iter_mut()) {
            let next = self.momentum * *m as f64 + d;
            *m = next as f32;
            *x = (*x as f64 + self.server_learning_rate * next) as f32;
        }
    }
}
