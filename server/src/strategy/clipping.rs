//! Server-side clipping of each update's L2 norm, before any strategy sees it: fixed, or adaptive
//! to a target quantile of the updates' norms (Andrew, Thakkar, McMahan and Ramaswamy 2021,
//! "Differentially Private Learning with Adaptive Clipping", the geometric update without noise).
//! Bounds what one update can move the global model, whatever its size; only trained tensors
//! count toward the norm and are scaled (batch-norm running statistics are not a step).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Clipping {
    /// Every update's delta is scaled down to at most `norm`.
    Fixed { norm: f64 },
    /// Starts at `initial_norm`; after each round `C ← C·exp(−η·(b − γ))`, with b the fraction
    /// of that round's updates that were not clipped, γ = `target_quantile` and η =
    /// `learning_rate`, so C tracks the γ-quantile of the updates' norms.
    Adaptive {
        initial_norm: f64,
        target_quantile: f64,
        learning_rate: f64,
    },
}

impl Clipping {
    /// Andrew et al.'s learning rate for the geometric update.
    pub const DEFAULT_LEARNING_RATE: f64 = 0.2;

    /// The message names the field (`spec.clipping.*`).
    pub fn validate(&self) -> Result<(), String> {
        let norm = match *self {
            Clipping::Fixed { norm } => norm,
            Clipping::Adaptive {
                initial_norm,
                target_quantile,
                learning_rate,
            } => {
                if !(target_quantile.is_finite() && target_quantile > 0.0 && target_quantile < 1.0)
                {
                    return Err(format!(
                        "spec.clipping.target_quantile must be in (0, 1), got {target_quantile}"
                    ));
                }
                if !(learning_rate.is_finite() && learning_rate > 0.0 && learning_rate <= 10.0) {
                    return Err(format!(
                        "spec.clipping.learning_rate must be in (0, 10], got {learning_rate}"
                    ));
                }
                initial_norm
            }
        };
        if !(norm.is_finite() && norm > 0.0 && norm <= 1e12) {
            return Err(format!(
                "spec.clipping.norm must be a positive number up to 1e12, got {norm}"
            ));
        }
        Ok(())
    }

    /// The bound of the first round.
    pub fn initial_norm(&self) -> f64 {
        match *self {
            Clipping::Fixed { norm } => norm,
            Clipping::Adaptive { initial_norm, .. } => initial_norm,
        }
    }

    /// The bound after a round with bound `current` in which `unclipped` of `count` updates were
    /// within it (unchanged for fixed clipping or a round without updates).
    pub fn next_norm(&self, current: f64, unclipped: usize, count: usize) -> f64 {
        match *self {
            Clipping::Fixed { norm } => norm,
            Clipping::Adaptive {
                target_quantile,
                learning_rate,
                ..
            } => {
                if count == 0 {
                    return current;
                }
                let b = unclipped as f64 / count as f64;
                current * (-learning_rate * (b - target_quantile)).exp()
            }
        }
    }
}

pub use fedcsg_core::clip::{clip, l2_norm};
