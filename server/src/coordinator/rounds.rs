//! The round state machine (DESIGN §2.3), driven by a periodic tick and by wake-ups: start a
//! round when enough workers are free, close it when every sampled worker reported or at the
//! deadline with a quorum (otherwise retry it), evaluate the new global model off the async
//! runtime, commit it, and optionally run a federated evaluation.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedcsg_core::tensor::StateDict;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use tracing::{error, info, info_span, warn};

use super::evaluation::{Evaluation, open_federated_evaluation};
use super::seeds::round_sampling_seed;
use super::state::{ActiveRound, Assignment, Phase, State, TaskKind};
use super::{Coordinator, JobEvent};
use crate::aggregate::WeightedMean;
use crate::ids::{JobId, RoundToken, WorkerId, random_hex};
use crate::job::{JobState, RoundRecord};

/// A round whose new global model must be evaluated and committed.
struct Closing {
    job: JobId,
    round: u64,
    token: RoundToken,
    model: fedcsg_ml::model::ModelSpec,
    global: StateDict,
}

impl Coordinator {
    /// Runs the state machine until `shutdown` resolves.
    pub async fn drive(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(self.settings.tick) => {}
                _ = self.wake.notified() => {}
            }
            for closing in self.tick() {
                let this = Arc::clone(&self);
                tokio::spawn(async move {
                    let span = info_span!("round_close", job_id = %closing.job);
                    let _enter = span.enter();
                    drop(_enter);
                    let work_self = Arc::clone(&this);
                    let spec = closing.model;
                    let global = closing.global.clone();
                    let (job, round) = (closing.job.clone(), closing.round);
                    // Evaluation and the model file write are CPU and disk work: off the runtime.
                    let work = tokio::task::spawn_blocking(move || {
                        let evaluation = work_self.evaluate_global(&spec, &global);
                        let file = work_self
                            .store
                            .as_ref()
                            .map(|store| store.write_model(job.as_str(), round, &global));
                        (evaluation, file)
                    })
                    .await;
                    let (evaluation, file) = match work {
                        Ok(w) => w,
                        Err(e) => {
                            error!(error = %e, "round closing task failed");
                            (
                                None,
                                Some(Err(crate::store::StoreError::Io {
                                    path: "model".into(),
                                    why: e.to_string(),
                                })),
                            )
                        }
                    };
                    crate::fault::hit("after-model-write", closing.round);
                    let round = closing.round;
                    this.commit(closing, evaluation, file);
                    crate::fault::hit("after-commit", round);
                    this.wake.notify_one();
                });
            }
        }
    }

    /// One pass of the state machine; returns rounds ready to be evaluated and committed.
    fn tick(&self) -> Vec<Closing> {
        let mut st = self.lock();
        let now = Instant::now();
        let timeout = self.settings.heartbeat_timeout;
        for w in st.workers.values_mut() {
            if !w.gone && now.duration_since(w.last_seen) > timeout {
                warn!(worker_id = %w.id, silent_for = ?now.duration_since(w.last_seen), "worker missed its heartbeats: dropped");
                w.gone = true;
                w.assignment = None;
            }
        }
        if st.shutting_down {
            return Vec::new();
        }
        let mut out = Vec::new();
        let job_ids: Vec<JobId> = st.jobs.keys().cloned().collect();
        for id in job_ids {
            if st.jobs[&id].state.is_finished() {
                continue;
            }
            let phase = st.jobs[&id].active.as_ref().map(|a| a.phase);
            match phase {
                None => start_round(&mut st, &id, now),
                Some(Phase::Training) => {
                    if let Some(c) = check_training(&mut st, &id, now) {
                        out.push(c);
                    }
                }
                Some(Phase::Closing) => {}
                Some(Phase::FederatedEvaluation) => {
                    let active = st.jobs[&id].active.as_ref().expect("phase");
                    let waiting = active
                        .sampled
                        .iter()
                        .filter(|w| !active.evaluations.contains_key(*w))
                        .count();
                    if waiting == 0 || now >= active.deadline {
                        self.finish_federated_evaluation(&mut st, &id);
                    }
                }
            }
        }
        out
    }

    /// Makes the evaluated round durable in memory, then starts federated evaluation or ends
    /// the round.
    fn commit(
        &self,
        closing: Closing,
        evaluation: Evaluation,
        file: Option<Result<(String, String), crate::store::StoreError>>,
    ) {
        let mut st = self.lock();
        let Some(job) = st.jobs.get_mut(&closing.job) else {
            return;
        };
        let full_f32 = job.full_filter_f32_bytes();
        let Some(active) = job
            .active
            .as_mut()
            .filter(|a| a.token == closing.token && a.phase == Phase::Closing)
        else {
            return; // cancelled meanwhile
        };
        let accepted: Vec<_> = active.accepted.values().map(|u| u.stats.clone()).collect();
        let weight: f64 = accepted.iter().map(|s| s.num_samples as f64).sum();
        let record = RoundRecord {
            round: active.round,
            sampled: active.sampled.len(),
            participants: accepted.iter().map(|s| s.worker_id.clone()).collect(),
            train_loss: accepted
                .iter()
                .map(|s| s.train_loss * s.num_samples as f64)
                .sum::<f64>()
                / weight.max(1.0),
            test_accuracy: evaluation.map(|e| e.0),
            test_loss: evaluation.map(|e| e.1),
            federated_accuracy: None,
            bytes_down: active.bytes_down.values().sum(),
            bytes_up: accepted.iter().map(|s| s.bytes_up).sum(),
            full_filter_f32_bytes_up: accepted.len() as u64 * full_f32,
            full_filter_f32_bytes_down: active.downloads * full_f32,
            seconds: active.started.elapsed().as_secs_f64(),
            model_sha256: match &file {
                Some(Ok((_, sha))) => sha.clone(),
                _ => closing.global.fingerprint(),
            },
            workers: accepted,
        };
        if let (Some(store), Some(file)) = (&self.store, file) {
            let last = job.records.len() as u64 + 1 >= job.spec.rounds;
            let (state, message) = if last {
                (
                    JobState::Succeeded,
                    format!("completed {} rounds", job.records.len() + 1),
                )
            } else {
                (
                    JobState::Running,
                    format!("round {} committed", record.round),
                )
            };
            let committed = file.and_then(|(path, sha)| {
                store.commit_round(job.id.as_str(), &record, &path, &sha, state, &message)
            });
            if let Err(e) = committed {
                // The round is not durable: do not pretend it happened. Retry it later.
                error!(job_id = %job.id, round = record.round, error = %e, "cannot commit the round: it will be retried");
                job.active = None;
                job.message = format!("round {} could not be committed: {e}", record.round);
                return;
            }
        }
        info!(
            job_id = %job.id, round = record.round, participants = record.participants.len(),
            train_loss = record.train_loss, test_accuracy = ?record.test_accuracy, seconds = record.seconds,
            "round committed"
        );
        job.global_sha256 = record.model_sha256.clone();
        job.global = Arc::new(closing.global);
        job.download = Default::default();
        let participants = record.participants.clone();
        job.records.push(record);
        let (id, round, federated) = (job.id.clone(), active.round, job.spec.federated_evaluation);
        for p in participants {
            if let Some(w) = st.workers.get_mut(&WorkerId::new(p)) {
                w.rounds_contributed += 1;
            }
        }
        if federated {
            open_federated_evaluation(&mut st, &id, round);
        } else {
            self.end_round(&mut st, &id);
        }
    }

    /// Clears the active round, finishes the job after its last round, notifies watchers.
    pub(super) fn end_round(&self, st: &mut State, id: &JobId) {
        let job = st.jobs.get_mut(id).expect("exists");
        job.active = None;
        if job.records.len() as u64 >= job.spec.rounds {
            job.state = JobState::Succeeded;
            job.message = format!("completed {} rounds", job.records.len());
            info!(job_id = %id, "job succeeded");
        }
        let _ = self.events.send(JobEvent {
            job: id.clone(),
            state: job.state,
            record: job.records.last().cloned(),
        });
    }
}

/// Workers that are alive, idle and fit the model's input and classes.
pub(super) fn free_workers(st: &State, spec: &fedcsg_ml::model::ModelSpec) -> Vec<WorkerId> {
    st.workers
        .values()
        .filter(|w| {
            !w.gone
                && w.assignment.is_none()
                && w.in_channels == spec.in_channels
                && w.num_classes == spec.num_classes
        })
        .map(|w| w.id.clone())
        .collect()
}

fn start_round(st: &mut State, id: &JobId, now: Instant) {
    let job = &st.jobs[id];
    let free = free_workers(st, &job.spec.model);
    if free.len() < job.spec.min_workers {
        let job = st.jobs.get_mut(id).expect("exists");
        job.message = format!(
            "waiting for workers: {} free, {} needed",
            free.len(),
            job.spec.min_workers
        );
        return;
    }
    let wanted = ((job.spec.fraction * free.len() as f64).ceil() as usize)
        .max(job.spec.min_workers)
        .min(free.len());
    let round = job.records.len() as u64 + 1;
    let mut rng = StdRng::seed_from_u64(round_sampling_seed(job.spec.seed, round, job.retries));
    let mut sampled: Vec<WorkerId> = free.choose_multiple(&mut rng, wanted).cloned().collect();
    sampled.sort();
    let token = RoundToken::new(random_hex());
    let template = job.exchanged_global();
    let deadline = Duration::from_secs(job.spec.round_deadline_seconds);
    info!(job_id = %id, round, sampled = ?sampled, "round started");
    let job = st.jobs.get_mut(id).expect("exists");
    job.state = JobState::Running;
    job.message = format!("round {round} training on {} workers", sampled.len());
    job.active = Some(ActiveRound {
        round,
        token: token.clone(),
        phase: Phase::Training,
        started: now,
        deadline: now + deadline,
        sampled: sampled.clone(),
        accepted: BTreeMap::new(),
        sum: WeightedMean::new(&template),
        bytes_down: Default::default(),
        downloads: 0,
        evaluations: BTreeMap::new(),
    });
    for w in &sampled {
        if let Some(entry) = st.workers.get_mut(w) {
            entry.assignment = Some(Assignment {
                job: id.clone(),
                round,
                token: token.clone(),
                kind: TaskKind::Train,
            });
        }
    }
}

/// Closes a training round that is complete or past its deadline with a quorum; retries one
/// past its deadline without.
fn check_training(st: &mut State, id: &JobId, now: Instant) -> Option<Closing> {
    let job = &st.jobs[id];
    let active = job.active.as_ref().expect("training");
    let all_in = active.accepted.len() == active.sampled.len();
    let quorum = active.accepted.len() >= job.spec.min_workers;
    let outstanding_gone = active
        .sampled
        .iter()
        .filter(|w| !active.accepted.contains_key(*w))
        .all(|w| st.workers.get(w).is_none_or(|e| e.gone));
    let past_deadline = now >= active.deadline;
    if all_in || (quorum && (past_deadline || outstanding_gone)) {
        let token = active.token.clone();
        let job = st.jobs.get_mut(id).expect("exists");
        let active = job.active.as_mut().expect("training");
        let mean = active.sum.mean()?;
        crate::fault::hit("aggregate", active.round);
        if !all_in {
            warn!(job_id = %id, round = active.round, accepted = active.accepted.len(), sampled = active.sampled.len(), "round closing with the quorum");
        }
        active.phase = Phase::Closing;
        let global = job.global.merged_with(&mean);
        let model = job.spec.model;
        job.message = format!("round {} closing", active.round);
        for w in st.workers.values_mut() {
            if w.assignment.as_ref().is_some_and(|a| a.token == token) {
                w.assignment = None;
            }
        }
        let round = active.round;
        return Some(Closing {
            job: id.clone(),
            round,
            token,
            model,
            global,
        });
    }
    if past_deadline {
        let job = st.jobs.get_mut(id).expect("exists");
        let active = job.active.take().expect("training");
        job.retries += 1;
        job.message = format!(
            "round {} retried: {} of {} needed updates by the deadline",
            active.round,
            active.accepted.len(),
            job.spec.min_workers
        );
        warn!(job_id = %id, round = active.round, accepted = active.accepted.len(), "round missed its quorum: retrying");
        for w in st.workers.values_mut() {
            if w.assignment
                .as_ref()
                .is_some_and(|a| a.token == active.token)
            {
                w.assignment = None;
            }
        }
    }
    None
}
