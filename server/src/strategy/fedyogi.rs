//! FedYogi (Reddi et al. 2021, after Zaheer et al. 2018's Yogi): the second moment moves toward
//! Δ² by an additive step, `v ← v − (1 − β2)·Δ²·sign(v − Δ²)`, so it grows as fast as Adam's
//! but shrinks more slowly, which keeps the effective learning rate from jumping. The step itself
//! is [`Adaptive::step`](super::Adaptive::step).

/// FedYogi's second-moment rule (`sign(0) = 0`).
pub fn second_moment(v: f64, delta_sq: f64, beta2: f64) -> f64 {
    let diff = v - delta_sq;
    let sign = if diff > 0.0 {
        1.0
    } else if diff < 0.0 {
        -1.0
    } else {
        0.0
    };
    v - (1.0 - beta2) * delta_sq * sign
}
