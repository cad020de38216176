//! The update a worker uploads: checked against the round it claims before and after its data
//! arrives; decoded (any encoding the job accepts), turned into its delta from the round's
//! global model, checked and clipped off the async runtime; then given its bounded weight and
//! added to the round's aggregation. A refused update changes nothing.

use std::sync::Arc;
use std::time::Instant;

use fedcsg_core::tensor::{NamedTensor, StateDict};
use fedcsg_wire::delta::{apply_delta, stays_plain};
use fedcsg_wire::{ModelAssembler, UpdateKind};
use tracing::info;

use super::state::{AcceptedUpdate, Phase, State};
use super::{Coordinator, UpdateHeader};
use crate::error::{Result, ServerError};
use crate::job::WorkerRoundStats;
use crate::strategy::clipping;
use crate::strategy::weighting::WeightBounds;

/// An upload whose header was accepted: the assembler its data goes to, and what turns the
/// decoded tensors into the delta a strategy aggregates.
#[derive(Debug)]
pub struct PendingUpload {
    pub assembler: ModelAssembler,
    /// The round's exact global model (exchanged tensors), shared with the job.
    base: Arc<StateDict>,
    kind: UpdateKind,
    /// The round's clipping bound, if the job clips.
    clip_norm: Option<f64>,
}

/// A decoded, checked update: its delta from the round's global model (every exchanged tensor,
/// running statistics included), clipped when the job clips.
#[derive(Debug)]
pub struct ReceivedUpdate {
    pub delta: StateDict,
    pub clipped: bool,
    /// SHA-256 of the delta: tells an idempotent retry from a different second update.
    pub fingerprint: String,
}

impl PendingUpload {
    /// Checks the length and checksums, decodes, rebuilds the trained values, checks them
    /// (finite; running variances not negative), clips the delta and hashes it. CPU-bound: run it off the
    /// async runtime.
    pub fn finish(self) -> Result<ReceivedUpdate> {
        let decoded = self.assembler.finish()?;
        let values = match self.kind {
            UpdateKind::Delta => apply_delta(&self.base, &decoded).map_err(ServerError::invalid)?,
            UpdateKind::Weights => decoded.clone(),
        };
        check_values(&values)?;
        let mut delta = Vec::with_capacity(values.len());
        for (v, b) in values.tensors().iter().zip(self.base.tensors()) {
            let exact = (self.kind == UpdateKind::Delta && !stays_plain(&v.name))
                .then(|| decoded.get(&v.name))
                .flatten();
            let values = match exact {
                // The worker's own delta, not (base + delta) − base.
                Some(d) => d.values.clone(),
                None => v.values.iter().zip(&b.values).map(|(v, b)| v - b).collect(),
            };
            delta.push(NamedTensor {
                name: v.name.clone(),
                shape: v.shape.clone(),
                values,
            });
        }
        if let Some((name, i)) = delta
            .iter()
            .find_map(|t| t.first_non_finite().map(|i| (t.name.clone(), i)))
        {
            return Err(ServerError::invalid(format!(
                "tensor {name:?} moves by a non-finite amount at index {i} (out of f32 range)"
            )));
        }
        let clipped = self
            .clip_norm
            .is_some_and(|bound| clipping::clip(&mut delta, bound, |n| !stays_plain(n)).1);
        let delta = StateDict::new(delta).map_err(ServerError::invalid)?;
        Ok(ReceivedUpdate {
            fingerprint: delta.fingerprint(),
            delta,
            clipped,
        })
    }
}

/// Trained values an update may hold: finite, and running variances not negative.
fn check_values(values: &StateDict) -> Result<()> {
    if let Some((name, i)) = values
        .tensors()
        .iter()
        .find_map(|t| t.first_non_finite().map(|i| (t.name.clone(), i)))
    {
        return Err(ServerError::invalid(format!(
            "tensor {name:?} has a non-finite value at index {i}"
        )));
    }
    if let Some((name, i)) = values
        .tensors()
        .iter()
        .filter(|t| t.name.ends_with("running_var"))
        .find_map(|t| {
            t.values
                .iter()
                .position(|v| *v < 0.0)
                .map(|i| (t.name.clone(), i))
        })
    {
        return Err(ServerError::invalid(format!(
            "tensor {name:?} is a variance but has a negative value at index {i}"
        )));
    }
    Ok(())
}

impl Coordinator {
    /// Validates an upload header against the round it claims and the job's exchange settings,
    /// and returns what receives its data. Nothing changes until [`Coordinator::finish_upload`].
    pub fn begin_upload(&self, h: &UpdateHeader) -> Result<PendingUpload> {
        let st = self.lock();
        self.check_upload_target(&st, h)?;
        let job = &st.jobs[&h.job];
        // The wire limits first (count, names, rank, elements, encodings the job accepts,
        // lengths): the most basic fault is the one reported.
        let assembler = ModelAssembler::accepting(
            h.tensors.clone(),
            self.settings.wire_limits,
            job.spec.exchange.accepted(h.kind),
        )?;
        let template = job.exchanged_global();
        let declared: Vec<&str> = h.tensors.iter().map(|m| m.name.as_str()).collect();
        let missing: Vec<&str> = template
            .tensors()
            .iter()
            .map(|t| t.name.as_str())
            .filter(|n| !declared.contains(n))
            .collect();
        let unknown: Vec<&str> = declared
            .iter()
            .copied()
            .filter(|n| template.get(n).is_none())
            .collect();
        if !unknown.is_empty() {
            return Err(ServerError::invalid(format!(
                "update names {} tensors this job does not exchange, e.g. {:?}",
                unknown.len(),
                &unknown[..unknown.len().min(3)]
            )));
        }
        if !missing.is_empty() {
            return Err(ServerError::invalid(format!(
                "update lacks {} exchanged tensors, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(3)]
            )));
        }
        for m in &h.tensors {
            let t = template.get(&m.name).expect("checked above");
            if t.shape != m.shape {
                return Err(ServerError::invalid(format!(
                    "tensor {:?} has shape {:?}, expected {:?}",
                    m.name, m.shape, t.shape
                )));
            }
            if m.kept_values.is_some() && stays_plain(&m.name) {
                return Err(ServerError::invalid(format!(
                    "tensor {:?} is a batch-norm running statistic: it travels plain and dense, never sparse",
                    m.name
                )));
            }
        }
        Ok(PendingUpload {
            assembler,
            base: template,
            kind: h.kind,
            clip_norm: job.active.as_ref().and_then(|a| a.clip_norm),
        })
    }

    fn check_upload_target(&self, st: &State, h: &UpdateHeader) -> Result<()> {
        let job = st
            .jobs
            .get(&h.job)
            .ok_or_else(|| ServerError::UnknownJob { job: h.job.clone() })?;
        let active = job.active.as_ref().filter(|a| a.token == h.token).ok_or_else(|| {
            ServerError::precondition(format!(
                "round token {:?} is not the open round of job {} (it closed, was retried or never existed); the update is not credited",
                h.token.as_str(),
                h.job
            ))
        })?;
        if active.phase != Phase::Training {
            return Err(ServerError::precondition(format!(
                "round {} of job {} is closed: the update is not credited",
                active.round, h.job
            )));
        }
        if h.round != active.round {
            return Err(ServerError::invalid(format!(
                "round {} does not match the round token's round {}",
                h.round, active.round
            )));
        }
        if !active.sampled.contains(&h.worker) {
            return Err(ServerError::precondition(format!(
                "worker {} was not given a task in round {} of job {}",
                h.worker, active.round, h.job
            )));
        }
        if h.num_samples == 0 {
            return Err(ServerError::invalid("num_samples must be positive"));
        }
        let declared = st
            .workers
            .get(&h.worker)
            .map(|w| w.num_samples)
            .unwrap_or(0);
        if h.num_samples > declared {
            return Err(ServerError::invalid(format!(
                "num_samples {} exceeds the {declared} samples the worker declared at join",
                h.num_samples
            )));
        }
        if !h.train_loss.is_finite() || !h.train_seconds.is_finite() {
            return Err(ServerError::invalid(
                "train_loss and train_seconds must be finite",
            ));
        }
        Ok(())
    }

    /// Adds a fully received and checked update to the round's aggregation, with its bounded
    /// weight. Returns whether it was a duplicate of an update already accepted (an idempotent
    /// retry).
    pub fn finish_upload(
        &self,
        h: &UpdateHeader,
        update: ReceivedUpdate,
        bytes_up: u64,
    ) -> Result<bool> {
        let fingerprint = update.fingerprint;
        let mut st = self.lock();
        // The round may have closed while the data was arriving.
        self.check_upload_target(&st, h)?;
        let joined = st.workers.get(&h.worker).map_or(0, |w| w.num_samples);
        let job = st.jobs.get_mut(&h.job).expect("checked");
        let full_f32 = job.full_filter_f32_bytes();
        let asked = job.spec.training.max_samples_per_round;
        // Central DP averages the clipped updates with equal weights: a sample count would
        // change one worker's influence beyond the clipping bound the noise is scaled to.
        let central_dp = job
            .spec
            .privacy
            .is_some_and(|p| p.mode == fedcsg_core::privacy::DpMode::Central);
        let active = job.active.as_mut().expect("checked");
        crate::fault::hit("upload", active.round);
        if let Some(prev) = active.accepted.get(&h.worker) {
            if prev.fingerprint == fingerprint {
                return Ok(true);
            }
            return Err(ServerError::precondition(format!(
                "worker {} already uploaded a different update for round {}",
                h.worker, active.round
            )));
        }
        let bounds = WeightBounds {
            asked: (asked > 0).then_some(asked),
            joined,
            cap: active.weight_caps.get(&h.worker).copied(),
        };
        let weight = if central_dp {
            1.0
        } else {
            bounds.weight(h.num_samples)
        };
        let started = Instant::now();
        active
            .aggregation
            .add(h.worker.as_str(), update.delta, weight)
            .map_err(ServerError::invalid)?;
        active.fold_seconds += started.elapsed().as_secs_f64();
        active.clipped += usize::from(update.clipped);
        let stats = WorkerRoundStats {
            worker_id: h.worker.to_string(),
            num_samples: h.num_samples,
            train_loss: h.train_loss,
            bytes_up,
            bytes_down: active.bytes_down.get(&h.worker).copied().unwrap_or(0),
            train_seconds: h.train_seconds,
            full_filter_f32_bytes: full_f32,
        };
        active
            .accepted
            .insert(h.worker.clone(), AcceptedUpdate { fingerprint, stats });
        info!(job_id = %h.job, round = h.round, worker_id = %h.worker, samples = h.num_samples, weight, clipped = update.clipped, bytes_up, "update accepted");
        if let Some(w) = st.workers.get_mut(&h.worker) {
            w.assignment = None;
        }
        drop(st);
        self.wake.notify_one();
        Ok(false)
    }
}
