//! Evaluating global models: on the coordinator's own test set before a round commits, and
//! federated, where the workers free after a commit evaluate it on their data and report
//! (samples, correct). A report is taken once; its identical retry is idempotent.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use fedcsg_core::tensor::StateDict;
use fedcsg_ml::model::{BnStatsPolicy, Model, ModelSpec};
use fedcsg_ml::ops::ConvBackend;
use fedcsg_ml::train::{self, TrainError};
use tracing::error;

use super::Coordinator;
use super::rounds::free_workers;
use super::state::{ActiveRound, Assignment, Phase, State, TaskKind};
use super::store_writes::QueuedWrite;
use crate::client_evaluation::{ClientEvaluation, ClientReport};
use crate::error::{Result, ServerError};
use crate::ids::{JobId, RoundToken, WorkerId, random_hex};
use crate::strategy::RoundAggregation;

/// Coordinator-side evaluation: (accuracy, mean loss).
pub(super) type Evaluation = Option<(f64, f64)>;

/// Test images the coordinator re-estimates batch-norm statistics from before it evaluates a
/// `bn_stats = local` model: 40 batches of 64.
pub const BN_CALIBRATION_IMAGES: usize = 2560;

impl Coordinator {
    pub fn report_evaluation(
        &self,
        worker: &WorkerId,
        job: &JobId,
        token: &str,
        samples: u64,
        correct: u64,
        loss_sum: f64,
    ) -> Result<()> {
        if samples > self.settings.max_worker_samples {
            return Err(ServerError::invalid(format!(
                "num_samples {samples} exceeds the {} a worker may hold (the coordinator's --max-worker-samples)",
                self.settings.max_worker_samples
            )));
        }
        if correct > samples {
            return Err(ServerError::invalid(format!(
                "correct {correct} exceeds num_samples {samples}"
            )));
        }
        if !(loss_sum.is_finite() && loss_sum >= 0.0) {
            return Err(ServerError::invalid(format!(
                "loss_sum must be finite and non-negative, got {loss_sum}"
            )));
        }
        let report = ClientReport {
            samples,
            correct,
            loss_sum,
        };
        let mut st = self.lock();
        let assigned = st
            .workers
            .get(worker)
            .and_then(|w| w.assignment.as_ref())
            .is_some_and(|a| {
                &a.job == job && a.token.as_str() == token && a.kind == TaskKind::Evaluate
            });
        let active = st
            .jobs
            .get_mut(job)
            .and_then(|j| j.active.as_mut())
            .filter(|a| a.token.as_str() == token && a.phase == Phase::FederatedEvaluation)
            .ok_or_else(|| {
                ServerError::precondition(format!(
                    "no federated evaluation with token {token:?} is open in job {job}"
                ))
            })?;
        if !assigned {
            // A retry of a report already taken is idempotent; anything else was never asked for.
            if active.evaluations.get(worker) == Some(&report) {
                return Ok(());
            }
            return Err(ServerError::precondition(format!(
                "worker {worker} was not asked to evaluate in this round of job {job}"
            )));
        }
        active.evaluations.insert(worker.clone(), report);
        if let Some(w) = st.workers.get_mut(worker) {
            w.assignment = None;
        }
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    /// Evaluates a new global model on the coordinator's test set, if it has one that fits the
    /// model (CPU work: call from a blocking thread). A failure is logged, not fatal.
    ///
    /// With `bn_stats = local` the global model's batch-norm running statistics never left the
    /// workers (they are still the initial ones): they are first re-estimated from a seeded
    /// subset of the test set's images ([`BN_CALIBRATION_IMAGES`], images only, no labels), so
    /// that the accuracy measures the trained parameters.
    pub(super) fn evaluate_global(
        &self,
        spec: &ModelSpec,
        bn_stats: BnStatsPolicy,
        global: &StateDict,
    ) -> Evaluation {
        let test = self.test_set.as_ref()?;
        if test.data.channels() != spec.in_channels || test.data.num_classes() != spec.num_classes {
            return None;
        }
        let run = || -> Result<(f64, f64), TrainError> {
            let model = Model::new(spec, 0, ConvBackend::default())?;
            model.load_state(global)?;
            if bn_stats == BnStatsPolicy::Local {
                let calibration = test.data.seeded_subset(BN_CALIBRATION_IMAGES, 0);
                train::recalibrate_batch_norm(&model, &calibration, &test.normalization, 64)?;
            }
            let r = train::evaluate(
                &model,
                &test.data,
                &test.normalization,
                self.settings.eval_batch,
            )?;
            Ok((r.accuracy(), r.mean_loss()))
        };
        match run() {
            Ok(r) => Some(r),
            Err(e) => {
                error!(error = %e, "coordinator-side evaluation failed");
                None
            }
        }
    }

    /// Closes a federated evaluation (every asked worker reported, or the deadline passed):
    /// records the accuracy over the reports in the round's record and ends the round.
    pub(super) fn finish_federated_evaluation(&self, st: &mut State, id: &JobId) {
        let job = st.jobs.get_mut(id).expect("exists");
        let active = job.active.as_ref().expect("active");
        let evaluation = ClientEvaluation::from_reports(active.evaluations.values().copied());
        if let Some(r) = job.records.last_mut() {
            r.federated_accuracy = evaluation.map(|e| e.weighted_accuracy);
            r.client_evaluation = evaluation;
            let write = QueuedWrite::RoundRecord {
                job: job.id.to_string(),
                record: Box::new(r.clone()),
            };
            st.queued_writes.push(write);
        }
        let token = active.token.clone();
        for w in st.workers.values_mut() {
            if w.assignment.as_ref().is_some_and(|a| a.token == token) {
                w.assignment = None;
            }
        }
        self.end_round(st, id);
    }
}

/// Opens the federated evaluation of `round`, just committed: every free worker that fits the
/// model is asked to evaluate it, under a fresh token, by the job's round deadline.
pub(super) fn open_federated_evaluation(st: &mut State, id: &JobId, round: u64) {
    let job = st.jobs.get_mut(id).expect("exists");
    let deadline = Duration::from_secs(job.spec.round_deadline_seconds);
    let spec = job.spec.model;
    job.active = None;
    let free = free_workers(st, &spec);
    let job = st.jobs.get_mut(id).expect("exists");
    let token = RoundToken::new(random_hex());
    job.active = Some(ActiveRound {
        round,
        token: token.clone(),
        phase: Phase::FederatedEvaluation,
        started: Instant::now(),
        deadline: Instant::now() + deadline,
        sampled: free.clone(),
        accepted: BTreeMap::new(),
        aggregation: RoundAggregation::Streaming(crate::aggregate::WeightedMean::new(
            &StateDict::default(),
        )),
        clip_norm: None,
        clipped: 0,
        weight_caps: Default::default(),
        eligible: free.len(),
        fold_seconds: 0.0,
        bytes_down: Default::default(),
        downloads: 0,
        evaluations: BTreeMap::new(),
    });
    for w in &free {
        if let Some(entry) = st.workers.get_mut(w) {
            entry.assignment = Some(Assignment {
                job: id.clone(),
                round,
                token: token.clone(),
                kind: TaskKind::Evaluate,
            });
        }
    }
    st.tasks_assigned = true;
}
