//! A job's differential privacy in the round state machine: the clipping bound each round
//! uses, the noise its aggregate gets, the accountant stepped at each commit, and the budget
//! check before a round starts (`fedcsg_core::privacy` has the settings, noise and accountant).

use fedcsg_core::privacy::{
    ADAPTIVE_LEARNING_RATE, DifferentialPrivacy, DpMode, GaussianNoise, RdpAccountant,
    RoundPrivacy, count_noise,
};

use crate::job::{JobSpec, RoundRecord};

/// The accountant after the committed `records` of a job (replayed on resume).
pub fn replay_accountant(
    spec: &JobSpec,
    records: &[RoundRecord],
) -> Result<Option<RdpAccountant>, String> {
    if spec.privacy.is_none() {
        return Ok(None);
    }
    let mut accountant = RdpAccountant::new();
    for r in records {
        if let Some(p) = &r.privacy {
            accountant
                .step(p.noise_multiplier, p.sample_rate, 1)
                .map_err(|e| format!("round {}: {e}", r.round))?;
        }
    }
    Ok(Some(accountant))
}

/// The bound the next round clips to: central DP's (the last round's adaptive move, or the
/// configured bound); `None` for local DP (workers clip) and jobs without DP.
pub fn next_clip_norm(dp: &DifferentialPrivacy, records: &[RoundRecord]) -> Option<f64> {
    (dp.mode == DpMode::Central).then(|| {
        records
            .last()
            .and_then(|r| r.privacy.and_then(|p| p.next_clip_norm))
            .unwrap_or(dp.clip_norm)
    })
}

/// The probability each worker takes part in a round that samples `sampled` of `eligible`
/// workers: what the accountant is stepped with (1 under local DP, where each worker accounts
/// its own updates and is assumed to take part in every round).
pub fn sample_rate(dp: &DifferentialPrivacy, sampled: usize, eligible: usize) -> f64 {
    match dp.mode {
        DpMode::Local => 1.0,
        DpMode::Central => (sampled as f64 / eligible.max(1) as f64).min(1.0),
    }
}

/// The accountant after one more round at `sample_rate`, and ε for the job's δ.
pub fn after_round(
    dp: &DifferentialPrivacy,
    accountant: &RdpAccountant,
    sample_rate: f64,
) -> Result<(RdpAccountant, f64), String> {
    let mut next = accountant.clone();
    next.step(dp.noise_multiplier, sample_rate, 1)
        .map_err(|e| e.to_string())?;
    let (epsilon, _) = next.epsilon(dp.delta).map_err(|e| e.to_string())?;
    Ok((next, epsilon))
}

/// Why a job must stop before a round at `sample_rate` (its ε would pass the target), if so.
pub fn budget_exhausted(
    dp: &DifferentialPrivacy,
    accountant: &RdpAccountant,
    sample_rate: f64,
) -> Result<Option<String>, String> {
    let Some(target) = dp.target_epsilon else {
        return Ok(None);
    };
    let (_, epsilon) = after_round(dp, accountant, sample_rate)?;
    Ok((epsilon > target).then(|| {
        format!(
            "privacy budget reached: one more round would take epsilon to {epsilon:.3} > target \
             {target} (delta {})",
            dp.delta
        )
    }))
}

/// Central DP's noise for one round's mean of `count` clipped updates (bound `clip_norm`): the
/// standard deviation per value of the mean, z_Δ·C/count, with z_Δ the updates' share of the
/// noise multiplier under adaptive clipping.
pub fn noise_std_of_mean(
    dp: &DifferentialPrivacy,
    clip_norm: f64,
    count: usize,
) -> Result<f64, String> {
    let z = dp
        .update_noise_multiplier(count_noise(count))
        .ok_or_else(|| {
            format!(
                "adaptive clipping under DP spends noise of std count/20 = {:.3} on the count of \
             unclipped updates, more than noise_multiplier {} allows with {count} updates: use a \
             fixed bound (no target_quantile), a larger noise multiplier or more workers per round",
                count_noise(count),
                dp.noise_multiplier
            )
        })?;
    Ok(z * clip_norm / count.max(1) as f64)
}

/// The next bound under adaptive clipping (Andrew et al. 2021): C·exp(−η(b̃ − γ)) with b̃ the
/// fraction of unclipped updates plus N(0, σ_b²)/count; `None` for a fixed bound.
pub fn adaptive_next_norm(
    dp: &DifferentialPrivacy,
    clip_norm: f64,
    unclipped: usize,
    count: usize,
    noise: &mut GaussianNoise,
) -> Option<f64> {
    let quantile = dp.target_quantile?;
    let count = count.max(1);
    let noised = (unclipped as f64 + noise.sample(count_noise(count))) / count as f64;
    Some(clip_norm * (-ADAPTIVE_LEARNING_RATE * (noised - quantile)).exp())
}

/// The record of a committed round's privacy.
pub fn round_privacy(
    dp: &DifferentialPrivacy,
    sample_rate: f64,
    clip_norm: f64,
    epsilon: f64,
    next_clip_norm: Option<f64>,
) -> RoundPrivacy {
    RoundPrivacy {
        mode: dp.mode,
        noise_multiplier: dp.noise_multiplier,
        sample_rate,
        clip_norm,
        epsilon,
        delta: dp.delta,
        next_clip_norm,
    }
}
