//! The model transfers of a training round: the global model a worker downloads for its task,
//! and the update it uploads, checked against the round it claims before and after its data
//! arrives, then folded into the round's weighted sum.

use fedcsg_core::tensor::StateDict;
use fedcsg_wire::ModelAssembler;
use tracing::info;

use super::state::{AcceptedUpdate, Phase, State};
use super::{Coordinator, UpdateHeader};
use crate::error::{Result, ServerError};
use crate::ids::{JobId, WorkerId};
use crate::job::WorkerRoundStats;

impl Coordinator {
    /// The exchanged part of the global model for the worker's current task.
    pub fn model_for_download(
        &self,
        worker: &WorkerId,
        job: &JobId,
        token: &str,
    ) -> Result<(u64, StateDict, String)> {
        let st = self.lock();
        let entry = st
            .workers
            .get(worker)
            .ok_or_else(|| ServerError::UnknownWorker {
                worker: worker.clone(),
            })?;
        let j = st
            .jobs
            .get(job)
            .ok_or_else(|| ServerError::UnknownJob { job: job.clone() })?;
        match &entry.assignment {
            Some(a) if &a.job == job && a.token.as_str() == token => {}
            _ => {
                return Err(ServerError::precondition(format!(
                    "round token {token:?} is not a task of worker {worker} in job {job} (round closed or never issued): ask for a new task"
                )));
            }
        }
        crate::fault::hit("download", j.rounds_completed() + 1);
        Ok((
            j.rounds_completed(),
            j.exchanged_global(),
            j.global_sha256.clone(),
        ))
    }

    pub fn record_download(&self, job: &JobId, token: &str, worker: &WorkerId, bytes: u64) {
        let mut st = self.lock();
        if let Some(active) = st
            .jobs
            .get_mut(job)
            .and_then(|j| j.active.as_mut())
            .filter(|a| a.token.as_str() == token)
        {
            *active.bytes_down.entry(worker.clone()).or_default() += bytes;
        }
    }

    /// Validates an upload header against the round it claims and returns the assembler for its
    /// data. Nothing changes until [`Coordinator::finish_upload`].
    pub fn begin_upload(&self, h: &UpdateHeader) -> Result<ModelAssembler> {
        let st = self.lock();
        self.check_upload_target(&st, h)?;
        // The wire limits first (count, names, rank, elements, encodings, lengths): the most
        // basic fault is the one reported.
        let assembler = ModelAssembler::new(h.tensors.clone(), self.settings.wire_limits)?;
        let job = &st.jobs[&h.job];
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
        }
        Ok(assembler)
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

    /// Folds a fully received and decoded update into the round's sum. Returns whether it was
    /// a duplicate of an update already accepted (an idempotent retry).
    pub fn finish_upload(
        &self,
        h: &UpdateHeader,
        update: StateDict,
        bytes_up: u64,
    ) -> Result<bool> {
        if let Some((name, i)) = update
            .tensors()
            .iter()
            .find_map(|t| t.first_non_finite().map(|i| (t.name.clone(), i)))
        {
            return Err(ServerError::invalid(format!(
                "tensor {name:?} has a non-finite value at index {i}"
            )));
        }
        let fingerprint = update.fingerprint();
        let mut st = self.lock();
        // The round may have closed while the data was arriving.
        self.check_upload_target(&st, h)?;
        let job = st.jobs.get_mut(&h.job).expect("checked");
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
        active
            .sum
            .add(&update, h.num_samples as f64)
            .map_err(ServerError::invalid)?;
        let stats = WorkerRoundStats {
            worker_id: h.worker.to_string(),
            num_samples: h.num_samples,
            train_loss: h.train_loss,
            bytes_up,
            bytes_down: active.bytes_down.get(&h.worker).copied().unwrap_or(0),
            train_seconds: h.train_seconds,
        };
        active
            .accepted
            .insert(h.worker.clone(), AcceptedUpdate { fingerprint, stats });
        info!(job_id = %h.job, round = h.round, worker_id = %h.worker, samples = h.num_samples, bytes_up, "update accepted");
        if let Some(w) = st.workers.get_mut(&h.worker) {
            w.assignment = None;
        }
        drop(st);
        self.wake.notify_one();
        Ok(false)
    }
}
