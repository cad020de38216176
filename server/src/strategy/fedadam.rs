//! FedAdam (Reddi et al. 2021): the second moment is an exponential moving average of Δ²,
//! `v ← β2·v + (1 − β2)·Δ²`. The step itself is [`Adaptive::step`](super::Adaptive::step).

/// FedAdam's second-moment rule.
pub fn second_moment(v: f64, delta_sq: f64, beta2: f64) -> f64 {
    beta2 * v + (1.0 - beta2) * delta_sq
}
