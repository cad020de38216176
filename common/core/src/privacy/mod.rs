//! Differential privacy of a job (DP-FedAvg, McMahan, Ramage, Talwar and Zhang 2018, "Learning
//! Differentially Private Recurrent Language Models"): user-level privacy, each worker's whole
//! update being the unit protected.
//!
//! - **Central** DP: the coordinator clips every update's L2 norm to C (fixed, or adaptive to a
//!   target quantile of the norms with a noised count, Andrew, Thakkar, McMahan and Ramaswamy
//!   2021), averages the clipped updates with equal weights and adds Gaussian noise of standard
//!   deviation z·C to their sum. The coordinator sees updates in the clear; what leaves it
//!   (every global model) is private.
//! - **Local** DP: each worker clips its own update to C and adds the noise z·C before it
//!   uploads; the coordinator never sees an unnoised update, at the price of noise from every
//!   worker instead of once.
//!
//! Either way batch-norm running statistics stay on the workers (`bn_stats = local`): they are
//! statistics of the local data and are not clipped or noised. The [`accountant`] turns z, the
//! rate at which workers are sampled and the rounds into ε for the job's δ after every round.
//! The noise comes from ChaCha20 ([`noise`]), seeded from the operating system.

pub mod accountant;
pub mod noise;

use serde::{Deserialize, Serialize};

use crate::clip::clip;
use crate::tensor::NamedTensor;
pub use accountant::RdpAccountant;
pub use noise::GaussianNoise;

/// Where the noise is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DpMode {
    Central,
    Local,
}

impl DpMode {
    pub fn name(self) -> &'static str {
        match self {
            DpMode::Central => "central",
            DpMode::Local => "local",
        }
    }
}

impl std::str::FromStr for DpMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "central" => Ok(DpMode::Central),
            "local" => Ok(DpMode::Local),
            other => Err(format!(
                "spec.privacy.mode must be central or local, got {other:?}"
            )),
        }
    }
}

/// A job's differential-privacy settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DifferentialPrivacy {
    pub mode: DpMode,
    /// z: the noise's standard deviation over the clipping bound.
    pub noise_multiplier: f64,
    /// C: each update's L2 bound (the first round's, when adaptive).
    pub clip_norm: f64,
    /// Central only: C follows this quantile of the updates' norms (Andrew et al. 2021);
    /// `None` keeps C fixed.
    pub target_quantile: Option<f64>,
    /// δ of the (ε, δ) guarantee reported after each round.
    pub delta: f64,
    /// The job ends (succeeded) before a round that would take ε past this.
    pub target_epsilon: Option<f64>,
}

/// Andrew et al.'s learning rate of the adaptive bound's geometric update.
pub const ADAPTIVE_LEARNING_RATE: f64 = 0.2;

impl DifferentialPrivacy {
    /// δ unless a job sets one.
    pub const DEFAULT_DELTA: f64 = 1e-5;

    /// The message names the field (`spec.privacy.*`).
    pub fn validate(&self) -> Result<(), String> {
        let z = self.noise_multiplier;
        if !(z.is_finite() && z > 0.0 && z <= 1e6) {
            return Err(format!(
                "spec.privacy.noise_multiplier must be in (0, 1e6], got {z}"
            ));
        }
        let c = self.clip_norm;
        if !(c.is_finite() && c > 0.0 && c <= 1e12) {
            return Err(format!(
                "spec.privacy.clip_norm must be a positive number up to 1e12, got {c}"
            ));
        }
        if let Some(q) = self.target_quantile {
            if self.mode == DpMode::Local {
                return Err(
                    "spec.privacy.target_quantile (adaptive clipping) needs mode central: \
                     with local DP each worker clips to the fixed clip_norm"
                        .into(),
                );
            }
            if !(q.is_finite() && q > 0.0 && q < 1.0) {
                return Err(format!(
                    "spec.privacy.target_quantile must be in (0, 1), got {q}"
                ));
            }
        }
        let d = self.delta;
        if !(d.is_finite() && d > 0.0 && d < 1.0) {
            return Err(format!("spec.privacy.delta must be in (0, 1), got {d}"));
        }
        if let Some(e) = self.target_epsilon
            && !(e.is_finite() && e > 0.0)
        {
            return Err(format!(
                "spec.privacy.target_epsilon must be positive, got {e}"
            ));
        }
        Ok(())
    }

    /// The noise multiplier applied to the updates. With adaptive clipping part of the
    /// privacy budget goes to the noised count of unclipped updates (standard deviation
    /// `count_noise`, Andrew et al.'s σ_b): z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2), so that the two
    /// mechanisms together cost what z alone does. `None` when σ_b is too small for z.
    pub fn update_noise_multiplier(&self, count_noise: f64) -> Option<f64> {
        if self.target_quantile.is_none() {
            return Some(self.noise_multiplier);
        }
        let rest = self.noise_multiplier.powi(-2) - (2.0 * count_noise).powi(-2);
        (rest > 0.0).then(|| rest.powf(-0.5))
    }
}

/// What a worker does to its update under local DP (sent with each train task).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LocalPrivacy {
    pub clip_norm: f64,
    pub noise_multiplier: f64,
}

impl DifferentialPrivacy {
    /// The worker's part, for a local-DP job.
    pub fn local(&self) -> Option<LocalPrivacy> {
        (self.mode == DpMode::Local).then_some(LocalPrivacy {
            clip_norm: self.clip_norm,
            noise_multiplier: self.noise_multiplier,
        })
    }
}

/// Local DP on a trained model: its difference from `global` over the tensors `counts`
/// selects is clipped to the L2 bound and gets N(0, (z·C)²) noise per value; the model is
/// then the global model plus that private difference. Returns the difference's norm before
/// clipping. Tensors are matched by position (the caller's exchanged state and the global
/// model it started from); mismatched names or shapes are refused.
pub fn privatize(
    model: &mut [NamedTensor],
    global: &[NamedTensor],
    counts: impl Fn(&str) -> bool,
    settings: LocalPrivacy,
    noise: &mut GaussianNoise,
) -> Result<f64, String> {
    if model.len() != global.len() {
        return Err(format!(
            "local DP: the model has {} tensors, the global model {}",
            model.len(),
            global.len()
        ));
    }
    for (m, g) in model.iter_mut().zip(global) {
        if m.name != g.name || m.shape != g.shape {
            return Err(format!(
                "local DP: tensor {:?} {:?} does not match the global {:?} {:?}",
                m.name, m.shape, g.name, g.shape
            ));
        }
        if counts(&m.name) {
            for (v, base) in m.values.iter_mut().zip(&g.values) {
                *v -= base;
            }
        }
    }
    let (norm, _) = clip(model, settings.clip_norm, &counts);
    let std = settings.noise_multiplier * settings.clip_norm;
    for (m, g) in model.iter_mut().zip(global) {
        if counts(&m.name) {
            noise.add(&mut m.values, std);
            for (v, base) in m.values.iter_mut().zip(&g.values) {
                *v += base;
            }
        }
    }
    Ok(norm)
}

/// Andrew et al.'s σ_b for a round expecting `participants` updates: participants / 20.
pub fn count_noise(participants: usize) -> f64 {
    participants.max(1) as f64 / 20.0
}

/// What a round's privacy cost and guarantee were, kept in its record.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoundPrivacy {
    pub mode: DpMode,
    /// The noise multiplier accounted for this round.
    pub noise_multiplier: f64,
    /// The probability with which any worker took part: sampled / eligible workers (1 with
    /// local DP, where each worker's own updates are accounted).
    pub sample_rate: f64,
    /// The bound this round's updates were clipped to.
    pub clip_norm: f64,
    /// ε after this round for the job's δ.
    pub epsilon: f64,
    pub delta: f64,
    /// The bound of the next round (adaptive clipping moves it with a noised count).
    #[serde(default)]
    pub next_clip_norm: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dp() -> DifferentialPrivacy {
        DifferentialPrivacy {
            mode: DpMode::Central,
            noise_multiplier: 1.0,
            clip_norm: 1.0,
            target_quantile: None,
            delta: 1e-5,
            target_epsilon: None,
        }
    }

    #[test]
    fn bad_settings_name_their_field() {
        for (bad, field) in [
            (
                DifferentialPrivacy {
                    noise_multiplier: 0.0,
                    ..dp()
                },
                "noise_multiplier",
            ),
            (
                DifferentialPrivacy {
                    noise_multiplier: f64::NAN,
                    ..dp()
                },
                "noise_multiplier",
            ),
            (
                DifferentialPrivacy {
                    clip_norm: -1.0,
                    ..dp()
                },
                "clip_norm",
            ),
            (DifferentialPrivacy { delta: 1.0, ..dp() }, "delta"),
            (
                DifferentialPrivacy {
                    target_epsilon: Some(0.0),
                    ..dp()
                },
                "target_epsilon",
            ),
            (
                DifferentialPrivacy {
                    target_quantile: Some(1.5),
                    ..dp()
                },
                "target_quantile",
            ),
            (
                DifferentialPrivacy {
                    mode: DpMode::Local,
                    target_quantile: Some(0.5),
                    ..dp()
                },
                "needs mode central",
            ),
        ] {
            let err = bad.validate().unwrap_err();
            assert!(err.contains(field), "{err}");
        }
        assert!(dp().validate().is_ok());
        assert_eq!("local".parse::<DpMode>(), Ok(DpMode::Local));
        assert!(
            "both"
                .parse::<DpMode>()
                .unwrap_err()
                .contains("central or local")
        );
    }

    fn t(name: &str, values: Vec<f32>) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            shape: vec![values.len()],
            values,
        }
    }

    /// Local DP clips the difference from the global model and adds noise of z·C around it;
    /// tensors not selected (batch-norm statistics) pass unchanged.
    #[test]
    fn privatize_clips_then_noises_the_difference() {
        let global = vec![t("w", vec![1.0; 4]), t("bn.running_var", vec![2.0])];
        let counts = |n: &str| !n.contains("running");
        // A difference of norm 4 (each value +2), clipped to 1, without noise.
        let mut model = vec![t("w", vec![3.0; 4]), t("bn.running_var", vec![5.0])];
        let exact = LocalPrivacy {
            clip_norm: 1.0,
            noise_multiplier: 1e-12,
        };
        let mut noise = GaussianNoise::from_seed_for_tests(1);
        let norm = privatize(&mut model, &global, counts, exact, &mut noise).unwrap();
        assert!((norm - 4.0).abs() < 1e-9);
        for v in &model[0].values {
            assert!((v - 1.5).abs() < 1e-6, "{v}");
        }
        assert_eq!(model[1].values, vec![5.0]);
        // With z = 2 and C = 1 the values scatter around 1.5 with standard deviation 2.
        let mut big = vec![t("w", vec![3.0; 20_000])];
        let settings = LocalPrivacy {
            clip_norm: 1.0,
            noise_multiplier: 2.0,
        };
        privatize(
            &mut big,
            &[t("w", vec![1.0; 20_000])],
            |_| true,
            settings,
            &mut noise,
        )
        .unwrap();
        let n = big[0].values.len() as f64;
        let mean = big[0].values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = big[0]
            .values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        // The clipped difference is 1/√20000 per value: the mean sits near 1 + 0.007.
        assert!((mean - 1.007).abs() < 0.1, "{mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.05, "{}", var.sqrt());
        let err = privatize(
            &mut big,
            &[t("v", vec![1.0; 20_000])],
            |_| true,
            settings,
            &mut noise,
        )
        .unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    /// Andrew et al.'s split: the count's noise takes a share of the budget, so the updates get
    /// more noise than z alone; a fixed bound keeps z.
    #[test]
    fn adaptive_clipping_takes_its_share_of_the_noise() {
        assert_eq!(dp().update_noise_multiplier(0.5), Some(1.0));
        let adaptive = DifferentialPrivacy {
            target_quantile: Some(0.5),
            ..dp()
        };
        // z = 1, σ_b = 5 (100 participants): z_Δ = (1 − 1/100)^(−1/2).
        let z = adaptive.update_noise_multiplier(count_noise(100)).unwrap();
        assert!((z - (1.0f64 - 0.01).powf(-0.5)).abs() < 1e-12, "{z}");
        // σ_b = 0.25 (5 participants) leaves nothing for z = 1: (1 − 4) < 0.
        assert_eq!(adaptive.update_noise_multiplier(count_noise(5)), None);
    }
}
