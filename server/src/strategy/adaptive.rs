//! The adaptive server optimisers of Reddi et al. 2021 ("Adaptive Federated Optimization",
//! Algorithm 2), which differ only in their second moment ([`fedadam`](super::fedadam),
//! [`fedyogi`](super::fedyogi), [`fedadagrad`](super::fedadagrad)). With Δ the round's mean
//! delta: `m ← β1·m + (1 − β1)·Δ`, `v ←` the optimiser's rule, `x ← x + η·m / (√v + τ)`.
//! As in the paper there is no bias correction; m starts at 0 and v at τ² (the paper's
//! `v₋₁ ≥ τ²`), so the first steps are not inflated by a tiny v.

use serde::{Deserialize, Serialize};

use super::{StrategyParams, check_param};

/// The second-moment rule of one adaptive optimiser: `v_next = rule(v, Δ², β2)`.
pub type SecondMoment = fn(v: f64, delta_sq: f64, beta2: f64) -> f64;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Adaptive {
    /// η, the server learning rate.
    pub server_learning_rate: f64,
    pub beta1: f64,
    /// Unused by FedAdagrad.
    pub beta2: f64,
    /// τ, the adaptivity: larger τ is closer to server SGD with momentum.
    pub tau: f64,
}

impl Adaptive {
    /// FedAdam's defaults: η = 0.01, β1 = 0.9, β2 = 0.99, τ = 1e-3 (within the grid of
    /// Reddi et al., whose best settings put η at 10^-2.5 .. 10^-1 and τ at 1e-3).
    pub const ADAM: Adaptive = Adaptive {
        server_learning_rate: 0.01,
        beta1: 0.9,
        beta2: 0.99,
        tau: 1e-3,
    };
    /// FedYogi's defaults: as FedAdam.
    pub const YOGI: Adaptive = Self::ADAM;
    /// FedAdagrad's defaults: η = 0.01, no first-moment momentum (β1 = 0), τ = 1e-3.
    pub const ADAGRAD: Adaptive = Adaptive {
        server_learning_rate: 0.01,
        beta1: 0.0,
        beta2: 0.0,
        tau: 1e-3,
    };

    pub(super) fn from_params(defaults: Adaptive, p: &StrategyParams) -> Self {
        Self {
            server_learning_rate: p
                .server_learning_rate
                .unwrap_or(defaults.server_learning_rate),
            beta1: p.beta1.unwrap_or(defaults.beta1),
            beta2: p.beta2.unwrap_or(defaults.beta2),
            tau: p.tau.unwrap_or(defaults.tau),
        }
    }

    pub(super) fn params(&self, with_beta2: bool) -> StrategyParams {
        StrategyParams {
            server_learning_rate: Some(self.server_learning_rate),
            beta1: Some(self.beta1),
            beta2: with_beta2.then_some(self.beta2),
            tau: Some(self.tau),
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
        check_param("beta1", self.beta1, 0.0, 0.999_999, true)?;
        check_param("beta2", self.beta2, 0.0, 0.999_999, true)?;
        check_param("tau", self.tau, 0.0, 1.0, false)
    }

    /// The initial second moment, τ².
    pub fn initial_v(&self) -> f32 {
        (self.tau * self.tau) as f32
    }

    /// One server step on one tensor (f64 arithmetic, f32 storage of x, m and v).
    pub fn step(
        &self,
        rule: SecondMoment,
        x: &mut [f32],
        mean_delta: &[f64],
        m: &mut [f32],
        v: &mut [f32],
    ) {
        let (b1, b2) = (self.beta1, self.beta2);
        for (((x, &d), m), v) in x
            .iter_mut()
            .zip(mean_delta)
            .zip(m.iter_mut())
            .zip(v.iter_mut())
        {
            let m_next = b1 * *m as f64 + (1.0 - b1) * d;
            let v_next = rule(*v as f64, d * d, b2);
            *m = m_next as f32;
            *v = v_next as f32;
            *x = (*x as f64 + self.server_learning_rate * m_next / (v_next.sqrt() + self.tau))
                as f32;
        }
    }
}
