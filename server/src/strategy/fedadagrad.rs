//! FedAdagrad (Reddi et al. 2021): the second moment sums every round's Δ², `v ← v + Δ²`, so
//! each coordinate's step shrinks with its history. The step itself is
//! [`Adaptive::step`](super::Adaptive::step).

/// FedAdagrad's second-moment rule (β2 unused).
pub fn second_moment(v: f64, delta_sq: f64, _beta2: f64) -> f64 {
    v + delta_sq
}
