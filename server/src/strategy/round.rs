//! One round's aggregation: the accumulator updates go into as they are accepted (a streaming
//! weighted sum, or every update for the robust strategies), and the step that closes the round
//! into the next global model. The close is CPU work over the whole model (Krum's over every
//! pair of updates): the coordinator runs it off the async runtime and outside its state lock.

use fedcsg_core::privacy::GaussianNoise;
use fedcsg_core::tensor::{NamedTensor, StateDict};
use fedcsg_wire::delta::stays_plain;

use super::{ServerState, Strategy, fedadagrad, fedadam, fedavg, fedyogi, krum, median};
use crate::aggregate::WeightedMean;

/// One accepted update as a robust strategy keeps it.
#[derive(Debug, Clone)]
pub struct CollectedUpdate {
    /// Who sent it (a worker id): fixes the order the update is aggregated in, so a round's
    /// result does not depend on arrival order, and names Krum's choice.
    pub label: String,
    /// Differences from the round's global model, every exchanged tensor.
    pub delta: StateDict,
}

#[derive(Debug, Clone)]
pub enum RoundAggregation {
    /// The sample-weighted sum of the deltas (O(model) memory).
    Streaming(WeightedMean),
    /// Every delta of the round (O(participants × model) memory).
    Collecting {
        template: Vec<(String, Vec<usize>)>,
        updates: Vec<CollectedUpdate>,
    },
}

/// The next global model's exchanged tensors, and for Krum the updates it chose.
#[derive(Debug, Clone)]
pub struct RoundOutcome {
    pub global: StateDict,
    pub selected: Option<Vec<String>>,
}

impl RoundAggregation {
    /// An empty accumulator for deltas shaped like `template` (the round's exchanged tensors).
    pub fn new(strategy: &Strategy, template: &StateDict) -> Self {
        if strategy.needs_every_update() {
            RoundAggregation::Collecting {
                template: template
                    .tensors()
                    .iter()
                    .map(|t| (t.name.clone(), t.shape.clone()))
                    .collect(),
                updates: Vec::new(),
            }
        } else {
            RoundAggregation::Streaming(WeightedMean::new(template))
        }
    }

    /// Adds one update's delta with its FedAvg weight (the robust strategies ignore the weight:
    /// a declared sample count buys no influence there). Names and shapes must be the
    /// template's; a refused update changes nothing.
    pub fn add(&mut self, label: &str, delta: StateDict, weight: f64) -> Result<(), String> {
        match self {
            RoundAggregation::Streaming(sum) => sum.add(&delta, weight),
            RoundAggregation::Collecting { template, updates } => {
                if delta.len() != template.len()
                    || template
                        .iter()
                        .zip(delta.tensors())
                        .any(|((name, shape), t)| &t.name != name || &t.shape != shape)
                {
                    return Err("update does not match the round's tensors".into());
                }
                if updates.iter().any(|u| u.label == label) {
                    return Err(format!("{label} already has an update in this round"));
                }
                updates.push(CollectedUpdate {
                    label: label.to_owned(),
                    delta,
                });
                Ok(())
            }
        }
    }

    /// Updates added so far.
    pub fn count(&self) -> usize {
        match self {
            RoundAggregation::Streaming(sum) => sum.count(),
            RoundAggregation::Collecting { updates, .. } => updates.len(),
        }
    }

    /// Whether the round has something to aggregate (a positive weight, or any update).
    pub fn is_ready(&self) -> bool {
        match self {
            RoundAggregation::Streaming(sum) => sum.total_weight() > 0.0,
            RoundAggregation::Collecting { updates, .. } => !updates.is_empty(),
        }
    }

    /// The next global model from the round's `global` (its exchanged tensors), updating the
    /// strategy's `state`. `None` when nothing was aggregated. On an error `state` may be
    /// partly updated: callers pass a copy and keep it only on success.
    pub fn close(
        self,
        strategy: &Strategy,
        global: &StateDict,
        state: &mut ServerState,
    ) -> Result<Option<RoundOutcome>, String> {
        self.close_with_noise(strategy, global, state, None)
    }

    /// [`RoundAggregation::close`], with central DP's Gaussian noise (`std` per value) added to
    /// the mean of the trained tensors before the strategy's step (batch-norm running
    /// statistics, which DP jobs keep local, are left alone). Only a streaming sum can be
    /// noised.
    pub fn close_with_noise(
        self,
        strategy: &Strategy,
        global: &StateDict,
        state: &mut ServerState,
        noise: Option<(f64, &mut GaussianNoise)>,
    ) -> Result<Option<RoundOutcome>, String> {
        match self {
            RoundAggregation::Streaming(sum) => {
                let Some(mut mean) = sum.mean_values() else {
                    return Ok(None);
                };
                if let Some((std, noise)) = noise {
                    for (t, values) in global.tensors().iter().zip(&mut mean) {
                        if !stays_plain(&t.name) {
                            noise.add_f64(values, std);
                        }
                    }
                }
                let tensors = global
                    .tensors()
                    .iter()
                    .zip(&mean)
                    .map(|(g, d)| server_step(strategy, g, d, state))
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(Some(RoundOutcome {
                    global: StateDict::new(tensors)?,
                    selected: None,
                }))
            }
            RoundAggregation::Collecting { mut updates, .. } => {
                if noise.is_some() {
                    return Err(format!(
                        "{strategy} cannot be combined with central DP noise"
                    ));
                }
                if updates.is_empty() {
                    return Ok(None);
                }
                updates.sort_by(|a, b| a.label.cmp(&b.label));
                robust_step(strategy, global, &updates).map(Some)
            }
        }
    }
}

/// One tensor's server step: the strategy's optimiser for trained tensors, the plain mean delta
/// for batch-norm running statistics.
fn server_step(
    strategy: &Strategy,
    g: &NamedTensor,
    mean_delta: &[f64],
    state: &mut ServerState,
) -> Result<NamedTensor, String> {
    let mut x = g.values.clone();
    let name = g.name.as_str();
    if stays_plain(name) {
        fedavg::step(&mut x, mean_delta);
    } else {
        match strategy {
            Strategy::FedAvg | Strategy::FedProx(_) => fedavg::step(&mut x, mean_delta),
            Strategy::FedAvgM(m) => {
                let mut momentum = state.take("momentum", name, x.len(), 0.0)?;
                m.step(&mut x, mean_delta, &mut momentum);
                state.put("momentum", name, momentum);
            }
            Strategy::FedAdam(a) | Strategy::FedYogi(a) | Strategy::FedAdagrad(a) => {
                let rule = match strategy {
                    Strategy::FedAdam(_) => fedadam::second_moment,
                    Strategy::FedYogi(_) => fedyogi::second_moment,
                    _ => fedadagrad::second_moment,
                };
                let mut m = state.take("m", name, x.len(), 0.0)?;
                let mut v = state.take("v", name, x.len(), a.initial_v())?;
                a.step(rule, &mut x, mean_delta, &mut m, &mut v);
                state.put("m", name, m);
                state.put("v", name, v);
            }
            Strategy::Median | Strategy::TrimmedMean(_) | Strategy::Krum(_) => {
                return Err(format!("{strategy} does not aggregate a streaming sum"));
            }
        }
    }
    Ok(NamedTensor {
        name: g.name.clone(),
        shape: g.shape.clone(),
        values: x,
    })
}

/// The robust strategies over every update: the aggregate delta per coordinate (median, trimmed
/// mean) or of the updates Krum selects, added to the global model.
fn robust_step(
    strategy: &Strategy,
    global: &StateDict,
    updates: &[CollectedUpdate],
) -> Result<RoundOutcome, String> {
    let column = |i: usize| -> Vec<&[f32]> {
        updates
            .iter()
            .map(|u| u.delta.tensors()[i].values.as_slice())
            .collect()
    };
    let mut chosen: Option<Vec<usize>> = None;
    if let Strategy::Krum(k) = strategy {
        if updates.len() < k.min_participants() {
            return Err(format!(
                "krum with f = {} needs at least {} updates, the round has {}",
                k.byzantine,
                k.min_participants(),
                updates.len()
            ));
        }
        let n = updates.len();
        let mut dist = vec![vec![0.0; n]; n];
        for i in 0..global.len() {
            krum::add_squared_distances(&column(i), &mut dist);
        }
        chosen = Some(k.select(&k.scores(&dist)));
    }
    let mut tensors = Vec::with_capacity(global.len());
    for (i, g) in global.tensors().iter().enumerate() {
        let deltas = column(i);
        let mut agg = vec![0.0f64; g.values.len()];
        match strategy {
            Strategy::Median => median::aggregate(&deltas, &mut agg),
            Strategy::TrimmedMean(t) => t.aggregate(&deltas, &mut agg),
            Strategy::Krum(_) => {
                let chosen = chosen.as_deref().expect("scored above");
                for &j in chosen {
                    for (a, v) in agg.iter_mut().zip(deltas[j]) {
                        *a += *v as f64;
                    }
                }
                for a in &mut agg {
                    *a /= chosen.len() as f64;
                }
            }
            _ => return Err(format!("{strategy} does not need every update")),
        }
        let mut x = g.values.clone();
        fedavg::step(&mut x, &agg);
        tensors.push(NamedTensor {
            name: g.name.clone(),
            shape: g.shape.clone(),
            values: x,
        });
    }
    Ok(RoundOutcome {
        global: StateDict::new(tensors)?,
        selected: chosen.map(|c| c.iter().map(|&j| updates[j].label.clone()).collect()),
    })
}
