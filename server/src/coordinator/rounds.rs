//! The round state machine (DESIGN §2.3), driven by a periodic tick and by wake-ups: start a
//! round when enough workers are free, close it when every sampled worker reported or at the
//! deadline with a quorum (otherwise retry it), aggregate with the job's strategy and evaluate
//! the new global model off the async runtime and outside the state lock, commit it, and
//! optionally run a federated evaluation.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use fedcsg_core::privacy::{
    DifferentialPrivacy, DpMode, GaussianNoise, RdpAccountant, RoundPrivacy,
};
use fedcsg_core::tensor::StateDict;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use tracing::{error, info, info_span, warn};

use super::evaluation::{Evaluation, open_federated_evaluation};
use super::privacy;
use super::seeds::round_sampling_seed;
use super::state::{ActiveRound, Assignment, JobEntry, Phase, State, TaskKind};
use super::store_writes::QueuedWrite;
use super::{Coordinator, JobEvent};
use crate::ids::{JobId, RoundToken, WorkerId, random_hex};
use crate::job::{JobState, RoundRecord};
use crate::store::RoundFiles;
use crate::strategy::{
    MAX_ROBUST_PARTICIPANTS, RoundAggregation, ServerState, Strategy, weighting,
};

/// A round whose updates must be aggregated, and the new global model evaluated and committed.
struct Closing {
    job: JobId,
    round: u64,
    token: RoundToken,
    model: fedcsg_ml::model::ModelSpec,
    bn_stats: fedcsg_ml::model::BnStatsPolicy,
    strategy: Strategy,
    /// The round's global model (every variable), and its exchanged part.
    global: Arc<StateDict>,
    exchanged: Arc<StateDict>,
    exchanged_names: Vec<String>,
    aggregation: RoundAggregation,
    /// The strategy's state before this round.
    state: Arc<ServerState>,
    fold_seconds: f64,
    /// Central DP: the settings, the bound the updates were clipped to, and how many of them
    /// were within it.
    central_dp: Option<(DifferentialPrivacy, f64, usize)>,
}

/// What closing a round produced, ready to commit.
struct Closed {
    global: StateDict,
    /// The exchanged part of `global`.
    exchanged: Arc<StateDict>,
    /// SHA-256 of the model file (or of `global`, without a store).
    model_sha256: String,
    state: ServerState,
    selected: Option<Vec<String>>,
    aggregation_seconds: f64,
    evaluation: Evaluation,
    /// The durable files, when the coordinator has a store.
    files: Option<RoundFiles>,
    /// Central DP with adaptive clipping: the next round's bound.
    next_clip_norm: Option<f64>,
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
            let closings = self.tick();
            self.announce_tasks();
            self.flush_store_writes();
            for closing in closings {
                let this = Arc::clone(&self);
                tokio::spawn(async move {
                    let span = info_span!("round_close", job_id = %closing.job);
                    let _enter = span.enter();
                    drop(_enter);
                    let (job, round, token) =
                        (closing.job.clone(), closing.round, closing.token.clone());
                    let work_self = Arc::clone(&this);
                    // Aggregation, evaluation and the file writes are CPU and disk work: off the
                    // runtime, and outside the state lock.
                    let closed =
                        tokio::task::spawn_blocking(move || work_self.close_round(closing))
                            .await
                            .unwrap_or_else(|e| Err(format!("the round closing task failed: {e}")));
                    let committed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        crate::fault::hit("after-model-write", round);
                        this.commit(&job, round, &token, closed);
                        crate::fault::hit("after-commit", round);
                    }));
                    if let Err(panic) = committed {
                        let reason = format!(
                            "committing round {round} panicked: {}",
                            panic_message(&*panic)
                        );
                        this.fail_job(&mut this.lock(), &job, reason);
                    }
                    this.announce_tasks();
                    this.flush_store_writes();
                    this.wake.notify_one();
                });
            }
        }
    }

    /// Wakes long-polling GetTask calls if tasks were handed out.
    fn announce_tasks(&self) {
        if std::mem::take(&mut self.lock().tasks_assigned) {
            self.tasks_changed.notify_waiters();
        }
    }

    /// Aggregates a closing round with its strategy, evaluates the new global model and writes
    /// its files. Nothing in memory changes here; [`Coordinator::commit`] applies the result.
    fn close_round(&self, c: Closing) -> Result<Closed, String> {
        // CPU time spent, measured on the wall clock even when the coordinator's clock is paused.
        let started = std::time::Instant::now();
        let exchanged = c.exchanged;
        let mut state = (*c.state).clone();
        let mut noise = GaussianNoise::from_os();
        let count = c.aggregation.count();
        let (noise_std, next_clip_norm) = match &c.central_dp {
            Some((dp, clip_norm, unclipped)) => (
                Some(privacy::noise_std_of_mean(dp, *clip_norm, count)?),
                privacy::adaptive_next_norm(dp, *clip_norm, *unclipped, count, &mut noise),
            ),
            None => (None, None),
        };
        let outcome = c
            .aggregation
            .close_with_noise(
                &c.strategy,
                &exchanged,
                &mut state,
                noise_std.map(|std| (std, &mut noise)),
            )?
            .ok_or("no accepted update carried any weight")?;
        crate::fault::hit("aggregate", c.round);
        let aggregation_seconds = c.fold_seconds + started.elapsed().as_secs_f64();
        let global = c.global.merged_with(&outcome.global);
        let exchanged = super::jobs::exchanged_part(&global, &c.exchanged_names);
        if let Some((name, i)) = global
            .tensors()
            .iter()
            .find_map(|t| t.first_non_finite().map(|i| (t.name.clone(), i)))
        {
            return Err(format!(
                "{} produced a non-finite value in {name:?} at index {i} (clip updates to bound them): the round is not committed",
                c.strategy
            ));
        }
        let evaluation = self.evaluate_global(&c.model, c.bn_stats, &global);
        let files = match &self.store {
            Some(store) => {
                let model = store
                    .write_model(c.job.as_str(), c.round, &global)
                    .map_err(|e| e.to_string())?;
                let strategy = if state.is_empty() {
                    None
                } else {
                    Some(
                        store
                            .write_strategy_state(c.job.as_str(), c.round, &state.to_state_dict())
                            .map_err(|e| e.to_string())?,
                    )
                };
                Some(RoundFiles { model, strategy })
            }
            None => None,
        };
        let model_sha256 = match &files {
            Some(files) => files.model.1.clone(),
            None => global.fingerprint(),
        };
        Ok(Closed {
            global,
            exchanged,
            model_sha256,
            state,
            selected: outcome.selected,
            aggregation_seconds,
            evaluation,
            files,
            next_clip_norm,
        })
    }

    /// One pass of the state machine; returns rounds ready to be evaluated and committed.
    ///
    /// Each job's pass is supervised: a panic in it fails that job (state FAILED with the
    /// reason, logged, sent to watchers) and the other jobs go on.
    fn tick(&self) -> Vec<Closing> {
        let mut st = self.lock();
        let now = Instant::now();
        let timeout = self.settings.heartbeat_timeout;
        for w in st.workers.values_mut() {
            if !w.gone && now.duration_since(w.last_seen) > timeout {
                warn!(worker_id = %w.id, silent_for = ?now.duration_since(w.last_seen), "worker missed its heartbeats: dropped");
                w.mark_gone(now);
            }
        }
        self.forget_gone_workers(&mut st, now);
        if st.shutting_down {
            return Vec::new();
        }
        let mut out = Vec::new();
        let job_ids: Vec<JobId> = st.jobs.keys().cloned().collect();
        for id in job_ids {
            if st.jobs[&id].state.is_finished() {
                continue;
            }
            let pass =
                std::panic::catch_unwind(AssertUnwindSafe(|| self.tick_job(&mut st, &id, now)));
            match pass {
                Ok(Some(closing)) => out.push(closing),
                Ok(None) => {}
                Err(panic) => self.fail_job(
                    &mut st,
                    &id,
                    format!("the round driver panicked: {}", panic_message(&*panic)),
                ),
            }
        }
        out
    }

    /// One job's pass of the state machine.
    fn tick_job(&self, st: &mut State, id: &JobId, now: Instant) -> Option<Closing> {
        let job = &st.jobs[id];
        let round = job
            .active
            .as_ref()
            .map_or(job.records.len() as u64 + 1, |a| a.round);
        crate::fault::hit("tick", round);
        match job.active.as_ref().map(|a| a.phase) {
            None => {
                match privacy_stop(st, id) {
                    Ok(Some(why)) => self.finish_job_early(st, id, why),
                    Ok(None) => start_round(st, id, now),
                    Err(why) => self.fail_job(st, id, format!("privacy accounting: {why}")),
                }
                None
            }
            Some(Phase::Training) => match check_training(st, id, now) {
                TrainingCheck::Open => None,
                TrainingCheck::Close(closing) => Some(*closing),
                TrainingCheck::Retry(why) => {
                    self.retry_round(st, id, why);
                    None
                }
            },
            Some(Phase::Closing) => None,
            Some(Phase::FederatedEvaluation) => {
                let active = job.active.as_ref().expect("phase");
                // Every live asked worker has reported (a gone one never will), or time is up.
                let waiting = active
                    .sampled
                    .iter()
                    .filter(|w| !active.evaluations.contains_key(*w))
                    .filter(|w| st.workers.get(*w).is_some_and(|e| !e.gone))
                    .count();
                if waiting == 0 || now >= active.deadline {
                    self.finish_federated_evaluation(st, id);
                }
                None
            }
        }
    }

    /// Gives up the active round of a job and counts the retry; past the job's
    /// `max_round_retries` the job fails with `why`.
    fn retry_round(&self, st: &mut State, id: &JobId, why: String) {
        let job = st.jobs.get_mut(id).expect("exists");
        let Some(active) = job.active.take() else {
            return;
        };
        release_assignments(st, &active.token);
        let job = st.jobs.get_mut(id).expect("exists");
        job.retries += 1;
        job.round_retries += 1;
        self.metrics.round_retried();
        if job.round_retries > job.spec.max_round_retries {
            let reason = format!(
                "round {} failed {} times (max_round_retries {}); last: {why}",
                active.round, job.round_retries, job.spec.max_round_retries
            );
            self.fail_job(st, id, reason);
            return;
        }
        warn!(job_id = %id, round = active.round, retry = job.round_retries, max = job.spec.max_round_retries, reason = %why, "round retried");
        job.message = format!(
            "round {} retry {} of {}: {why}",
            active.round, job.round_retries, job.spec.max_round_retries
        );
    }

    /// Ends a job as FAILED with `reason`: durable when the coordinator has a store, logged,
    /// and sent to watchers. Its round (if any) is dropped and its workers are freed.
    pub(super) fn fail_job(&self, st: &mut State, id: &JobId, reason: String) {
        error!(job_id = %id, reason = %reason, "job failed");
        self.end_job(st, id, JobState::Failed, reason);
    }

    /// Ends a job between rounds as SUCCEEDED with `reason` (its privacy budget is spent).
    fn finish_job_early(&self, st: &mut State, id: &JobId, reason: String) {
        info!(job_id = %id, reason = %reason, "job finished early");
        self.end_job(st, id, JobState::Succeeded, reason);
    }

    /// Ends a job in `state` with `reason`: durable when the coordinator has a store, and sent
    /// to watchers. Its round (if any) is dropped and its workers are freed.
    fn end_job(&self, st: &mut State, id: &JobId, state: JobState, reason: String) {
        let Some(job) = st.jobs.get_mut(id) else {
            return;
        };
        job.state = state;
        job.message = reason;
        let token = job.active.take().map(|a| a.token);
        let write = QueuedWrite::JobState {
            job: id.to_string(),
            state,
            message: job.message.clone(),
        };
        let record = job.records.last().cloned();
        st.queued_writes.push(write);
        if let Some(token) = token {
            release_assignments(st, &token);
        }
        let _ = self.events.send(JobEvent {
            job: id.clone(),
            state,
            record,
        });
    }

    /// Makes the closed round durable and current, then starts federated evaluation or ends the
    /// round. A round that could not be closed (or committed) is retried from the start. The
    /// store write (an fsync) happens outside the state lock; the round becomes current only
    /// once it is durable.
    fn commit(&self, id: &JobId, round: u64, token: &RoundToken, closed: Result<Closed, String>) {
        let _order = self.store_writes.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = self.lock();
        let Some(job) = st.jobs.get(id) else {
            return;
        };
        let Some(active) = job
            .active
            .as_ref()
            .filter(|a| &a.token == token && a.phase == Phase::Closing)
        else {
            return; // cancelled meanwhile
        };
        let closed = match closed {
            Ok(c) => c,
            Err(why) => {
                error!(job_id = %id, round, error = %why, "cannot close the round");
                self.retry_round(&mut st, id, format!("could not be closed: {why}"));
                return;
            }
        };
        let mut record = round_record(job, active, &closed);
        let accounted = account_round(job, active, closed.next_clip_norm);
        let last = job.records.len() as u64 + 1 >= job.spec.rounds;
        let accounted = match accounted {
            Ok(Some((accountant, privacy))) => {
                record.privacy = Some(privacy);
                Some(accountant)
            }
            Ok(None) => None,
            Err(why) => {
                error!(job_id = %id, round, error = %why, "cannot account the round's privacy");
                self.retry_round(&mut st, id, format!("privacy accounting failed: {why}"));
                return;
            }
        };
        drop(st);
        if let (Some(store), Some(files)) = (&self.store, &closed.files) {
            let (state, message) = if last {
                (JobState::Succeeded, format!("completed {round} rounds"))
            } else {
                (JobState::Running, format!("round {round} committed"))
            };
            let writing = std::time::Instant::now();
            let committed = store.commit_round(id.as_str(), &record, files, state, &message);
            self.metrics.store_committed(writing.elapsed());
            if let Err(e) = committed {
                // The round is not durable: do not pretend it happened. Retry it later.
                error!(job_id = %id, round, error = %e, "cannot commit the round");
                self.retry_round(&mut self.lock(), id, format!("could not be committed: {e}"));
                return;
            }
        }
        let mut st = self.lock();
        // Cancellation waits for `store_writes`; only a failure of the job (a panic in its
        // driver) can have ended the round meanwhile: the job stays failed.
        let Some(job) = st.jobs.get_mut(id).filter(|j| {
            j.active
                .as_ref()
                .is_some_and(|a| &a.token == token && a.phase == Phase::Closing)
        }) else {
            warn!(job_id = %id, round, "the job ended while its round was being committed");
            return;
        };
        info!(
            job_id = %id, round, participants = record.participants.len(),
            train_loss = record.train_loss, test_accuracy = ?record.test_accuracy, seconds = record.seconds,
            aggregation_seconds = record.aggregation_seconds, clipped = record.clipped_updates,
            "round committed"
        );
        self.metrics.round_committed(&record);
        job.global_sha256 = record.model_sha256.clone();
        job.global = Arc::new(closed.global);
        job.exchanged = closed.exchanged;
        job.strategy_state = Arc::new(closed.state);
        job.clip_norm = match &job.spec.privacy {
            Some(dp) => privacy::next_clip_norm(dp, std::slice::from_ref(&record)),
            None => job.spec.clipping.map(|c| record.next_clip_norm(&c)),
        };
        if accounted.is_some() {
            job.accountant = accounted;
        }
        job.download = Default::default();
        job.round_retries = 0;
        let participants = record.participants.clone();
        job.records.push(record);
        let federated = job.spec.federated_evaluation;
        for p in participants {
            if let Some(w) = st.workers.get_mut(&WorkerId::new(p)) {
                w.rounds_contributed += 1;
            }
        }
        if federated {
            open_federated_evaluation(&mut st, id, round);
        } else {
            self.end_round(&mut st, id);
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

/// A DP job's accountant after the closing round, and the round's privacy record; `None`
/// without DP.
fn account_round(
    job: &JobEntry,
    active: &ActiveRound,
    next_clip_norm: Option<f64>,
) -> Result<Option<(RdpAccountant, RoundPrivacy)>, String> {
    let (Some(dp), Some(accountant)) = (&job.spec.privacy, &job.accountant) else {
        return Ok(None);
    };
    let rate = privacy::sample_rate(dp, active.sampled.len(), active.eligible);
    let bound = active.clip_norm.unwrap_or(dp.clip_norm);
    let (next, epsilon) = privacy::after_round(dp, accountant, rate)?;
    let record = privacy::round_privacy(dp, rate, bound, epsilon, next_clip_norm);
    Ok(Some((next, record)))
}

/// The record of a round that closed as `closed`.
fn round_record(job: &JobEntry, active: &ActiveRound, closed: &Closed) -> RoundRecord {
    let full_f32 = job.full_filter_f32_bytes();
    let accepted: Vec<_> = active.accepted.values().map(|u| u.stats.clone()).collect();
    let weight: f64 = accepted.iter().map(|s| s.num_samples as f64).sum();
    RoundRecord {
        round: active.round,
        sampled: active.sampled.len(),
        participants: accepted.iter().map(|s| s.worker_id.clone()).collect(),
        train_loss: accepted
            .iter()
            .map(|s| s.train_loss * s.num_samples as f64)
            .sum::<f64>()
            / weight.max(1.0),
        test_accuracy: closed.evaluation.map(|e| e.0),
        test_loss: closed.evaluation.map(|e| e.1),
        federated_accuracy: None,
        bytes_down: active.bytes_down.values().sum(),
        bytes_up: accepted.iter().map(|s| s.bytes_up).sum(),
        full_filter_f32_bytes_up: accepted.len() as u64 * full_f32,
        full_filter_f32_bytes_down: active.downloads * full_f32,
        seconds: active.started.elapsed().as_secs_f64(),
        model_sha256: closed.model_sha256.clone(),
        workers: accepted,
        clip_norm: active.clip_norm,
        clipped_updates: active.clipped as u64,
        aggregation_seconds: closed.aggregation_seconds,
        selected: closed.selected.clone(),
        client_evaluation: None,
        learning_rate: Some(job.spec.training_for_round(active.round).learning_rate),
        privacy: None,
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

/// How many of `free` workers a round of `spec` samples.
fn wanted_workers(spec: &crate::job::JobSpec, free: usize) -> usize {
    let wanted = ((spec.fraction * free as f64).ceil() as usize)
        .max(spec.min_workers)
        .min(free);
    if spec.strategy.needs_every_update() {
        // Validated at create: min_workers <= the cap.
        wanted.min(MAX_ROBUST_PARTICIPANTS)
    } else {
        wanted
    }
}

/// Why a DP job must end before the round it would start now (one more round would take ε
/// past its target), if so.
fn privacy_stop(st: &State, id: &JobId) -> Result<Option<String>, String> {
    let job = &st.jobs[id];
    let (Some(dp), Some(accountant)) = (&job.spec.privacy, &job.accountant) else {
        return Ok(None);
    };
    let free = free_workers(st, &job.spec.model).len();
    if free < job.spec.min_workers {
        return Ok(None); // no round starts yet
    }
    let rate = privacy::sample_rate(dp, wanted_workers(&job.spec, free), free);
    privacy::budget_exhausted(dp, accountant, rate)
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
    let wanted = wanted_workers(&job.spec, free.len());
    let round = job.records.len() as u64 + 1;
    let mut rng = StdRng::seed_from_u64(round_sampling_seed(job.spec.seed, round, job.retries));
    let mut sampled: Vec<WorkerId> = free.choose_multiple(&mut rng, wanted).cloned().collect();
    sampled.sort();
    let token = RoundToken::new(random_hex());
    let template = job.exchanged_global();
    let deadline = Duration::from_secs(job.spec.round_deadline_seconds);
    let weight_caps = weight_caps(st, &job.spec, &sampled);
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
        aggregation: RoundAggregation::new(&job.spec.strategy, &template),
        clip_norm: job.clip_norm,
        clipped: 0,
        weight_caps,
        eligible: free.len(),
        fold_seconds: 0.0,
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
    st.tasks_assigned = true;
}

/// Each sampled worker's weight cap under the job's `max_weight_share`, from the other sampled
/// workers' expected weights (their join declarations bounded by what the job asks for).
fn weight_caps(
    st: &State,
    spec: &crate::job::JobSpec,
    sampled: &[WorkerId],
) -> std::collections::HashMap<WorkerId, f64> {
    let Some(share) = spec.max_weight_share else {
        return Default::default();
    };
    let asked =
        (spec.training.max_samples_per_round > 0).then_some(spec.training.max_samples_per_round);
    let expected: Vec<u64> = sampled
        .iter()
        .map(|w| weighting::expected(st.workers.get(w).map_or(0, |e| e.num_samples), asked))
        .collect();
    let total: u64 = expected.iter().fold(0u64, |a, &e| a.saturating_add(e));
    sampled
        .iter()
        .zip(&expected)
        .filter_map(|(w, &e)| weighting::share_cap(share, total - e).map(|c| (w.clone(), c)))
        .collect()
}

/// What a training round should do now.
enum TrainingCheck {
    /// Keep collecting updates.
    Open,
    /// Close it: every sampled worker reported, or the quorum is in and the deadline passed or
    /// the rest are gone.
    Close(Box<Closing>),
    /// Give it up: past the deadline without the quorum.
    Retry(String),
}

/// Closes a training round that is complete, or past its deadline (or with every outstanding
/// worker gone) with its quorum; gives up one past its deadline without.
fn check_training(st: &mut State, id: &JobId, now: Instant) -> TrainingCheck {
    let job = &st.jobs[id];
    let active = job.active.as_ref().expect("training");
    let all_in = active.accepted.len() == active.sampled.len();
    let quorum = active.accepted.len() >= job.spec.quorum();
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
        if !active.aggregation.is_ready() {
            return TrainingCheck::Open;
        }
        if !all_in {
            warn!(job_id = %id, round = active.round, accepted = active.accepted.len(), sampled = active.sampled.len(), "round closing with the quorum");
        }
        active.phase = Phase::Closing;
        // The accumulator moves to the closing task; an empty one of the same kind stays.
        let empty = RoundAggregation::new(&job.spec.strategy, &StateDict::default());
        let aggregation = std::mem::replace(&mut active.aggregation, empty);
        let fold_seconds = active.fold_seconds;
        let model = job.spec.model;
        let bn_stats = job.spec.bn_stats;
        let strategy = job.spec.strategy;
        let global = Arc::clone(&job.global);
        let exchanged = Arc::clone(&job.exchanged);
        let exchanged_names = job.exchanged_names.clone();
        let state = Arc::clone(&job.strategy_state);
        let central_dp = job
            .spec
            .privacy
            .filter(|p| p.mode == DpMode::Central)
            .zip(active.clip_norm)
            .map(|(dp, bound)| (dp, bound, active.accepted.len() - active.clipped));
        job.message = format!("round {} closing", active.round);
        let round = active.round;
        release_assignments(st, &token);
        return TrainingCheck::Close(Box::new(Closing {
            job: id.clone(),
            round,
            token,
            model,
            bn_stats,
            strategy,
            global,
            exchanged,
            exchanged_names,
            aggregation,
            state,
            fold_seconds,
            central_dp,
        }));
    }
    if past_deadline {
        return TrainingCheck::Retry(format!(
            "{} of the {} updates needed (quorum) by the deadline",
            active.accepted.len(),
            job.spec.quorum()
        ));
    }
    TrainingCheck::Open
}

/// Frees the workers holding a task of the round with `token`.
pub(super) fn release_assignments(st: &mut State, token: &RoundToken) {
    for w in st.workers.values_mut() {
        if w.assignment.as_ref().is_some_and(|a| &a.token == token) {
            w.assignment = None;
        }
    }
}

/// The message of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
