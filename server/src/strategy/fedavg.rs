//! FedAvg's server step (McMahan et al. 2017): the next global model is the round's global model
//! plus the sample-weighted mean of the updates' deltas. Also the step every strategy takes for
//! batch-norm running statistics, which are not trained.

/// `x ← x + Δ`, computed in f64 and stored as f32.
pub fn step(x: &mut [f32], mean_delta: &[f64]) {
    for (x, d) in x.iter_mut().zip(mean_delta) {
        *x = (*x as f64 + d) as f32;
    }
}
