//! The update a worker sends: its delta from the round's global model, compressed as the task
//! asks, with error feedback (EF-SGD, Karimireddy et al. 2019, in the memory form EF21 builds
//! on): what compression dropped from round r's delta (the residual, target − decoded) is added
//! to round r+1's delta before compressing it. The sum of what a worker sent then differs from
//! the sum of its true deltas by the current residual alone, which stays bounded, instead of by
//! everything ever dropped.
//!
//! Residuals live in memory only, per job, and carry over exactly one round: a worker that
//! missed a round (not sampled, update refused or lost, round retried) or restarted starts again
//! from none, because the residual was computed against a global model that is no longer the
//! one it trains from. A residual is kept only once the coordinator accepted its update.
//! Batch-norm running statistics travel as plain values (see `fedcsg_wire::delta`), dense and
//! without feedback.

use std::collections::VecDeque;

use fedcsg_core::seed::derive_seed;
use fedcsg_core::tensor::{NamedTensor, StateDict};
use fedcsg_wire::delta::{delta_from, stays_plain};
use fedcsg_wire::{Compression, EncodedState, encode_tensors};

use crate::assignment::UploadPlan;
use crate::error::WorkerError;
use crate::local_work::MODELS_KEPT;

/// Seed stream of int8's stochastic rounding, derived from the task's per-worker, per-round seed.
const ROUNDING_STREAM: u64 = 0x524f_554e_4449_4e47; // "ROUNDING"

/// What one round left behind for the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Residual {
    pub job_id: String,
    pub round: u64,
    /// target − decoded, for the tensors that travel as deltas.
    pub values: StateDict,
}

/// The residuals of the most recent jobs (a few, like the models kept).
#[derive(Debug, Default)]
pub struct FeedbackMemory {
    residuals: VecDeque<Residual>,
}

impl FeedbackMemory {
    /// Takes `job_id`'s residual for `round`: only one left by the round just before is
    /// returned; any other is dropped (the worker missed a round).
    pub fn take(&mut self, job_id: &str, round: u64) -> Option<StateDict> {
        let i = self.residuals.iter().position(|r| r.job_id == job_id)?;
        let r = self.residuals.remove(i).expect("position is in range");
        (r.round.checked_add(1) == Some(round)).then_some(r.values)
    }

    /// Keeps a residual for the job's next round, replacing the job's older one.
    pub fn keep(&mut self, residual: Residual) {
        self.forget(&residual.job_id);
        self.residuals.push_front(residual);
        self.residuals.truncate(MODELS_KEPT);
    }

    pub fn forget(&mut self, job_id: &str) {
        self.residuals.retain(|r| r.job_id != job_id);
    }

    pub fn len(&self) -> usize {
        self.residuals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.residuals.is_empty()
    }
}

/// An update ready to send, and the residual it leaves if the coordinator accepts it.
#[derive(Debug)]
pub struct PreparedUpdate {
    pub encoded: EncodedState,
    /// `None` when error feedback is off or the compression is exact.
    pub residual: Option<StateDict>,
}

/// The delta of `trained` from `global` (the model as this worker decoded it), plus the
/// `carried` residual, compressed per `plan`; `seed` is the task's per-worker, per-round seed.
pub fn prepare_update(
    trained: &StateDict,
    global: &StateDict,
    plan: &UploadPlan,
    seed: u64,
    carried: Option<&StateDict>,
) -> Result<PreparedUpdate, WorkerError> {
    let delta = delta_from(trained, global).map_err(|why| WorkerError::Protocol {
        what: "global model",
        why,
    })?;
    let feedback = plan.error_feedback && !plan.compression.is_exact();
    let target = match carried.filter(|_| feedback) {
        Some(residual) => add_residual(delta, residual),
        None => delta,
    };
    let compression = plan.compression;
    let encoded = encode_tensors(&target, derive_seed(seed, ROUNDING_STREAM), |t| {
        if stays_plain(&t.name) {
            Compression::dense(compression.encoding)
        } else {
            compression
        }
    })?;
    let residual = if feedback {
        Some(residual_of(&target, &encoded.decode()?))
    } else {
        None
    };
    Ok(PreparedUpdate { encoded, residual })
}

/// `delta + residual` for the delta tensors the residual has (same name and shape).
fn add_residual(delta: StateDict, residual: &StateDict) -> StateDict {
    let tensors = delta
        .into_tensors()
        .into_iter()
        .map(|mut t| {
            if let Some(r) = residual.get(&t.name).filter(|r| r.shape == t.shape)
                && !stays_plain(&t.name)
            {
                for (v, e) in t.values.iter_mut().zip(&r.values) {
                    *v += e;
                }
            }
            t
        })
        .collect();
    StateDict::new(tensors).expect("same tensors as a valid state")
}

/// `target − decoded` for the tensors that travel as deltas.
fn residual_of(target: &StateDict, decoded: &StateDict) -> StateDict {
    let tensors = target
        .tensors()
        .iter()
        .filter(|t| !stays_plain(&t.name))
        .filter_map(|t| {
            let d = decoded.get(&t.name)?;
            Some(NamedTensor {
                name: t.name.clone(),
                shape: t.shape.clone(),
                values: t.values.iter().zip(&d.values).map(|(a, b)| a - b).collect(),
            })
        })
        .collect();
    StateDict::new(tensors).expect("a subset of a valid state")
}

#[cfg(test)]
mod tests;
