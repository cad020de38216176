//! The coordinator's domain logic: workers join and ask for tasks, jobs run rounds, updates are
//! validated and folded into a weighted sum, rounds close and commit. No protobuf types here: the
//! gRPC services in [`crate::service`] convert and call these methods.

mod rounds;
pub mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fedcsg_core::secret::Secret;
pub use fedcsg_core::secret::constant_time_eq;
use fedcsg_core::tensor::StateDict;
use fedcsg_ml::data::{Dataset, Normalization};
use fedcsg_ml::model::{BnStatsPolicy, Model, ModelSpec};
use fedcsg_ml::ops::ConvBackend;
use fedcsg_wire::proto::PROTOCOL_VERSION;
use fedcsg_wire::{ModelAssembler, TensorMeta, WireLimits};
use tokio::sync::{Notify, broadcast};
use tracing::{info, warn};

use crate::error::{Result, ServerError};
use crate::ids::{JobId, RoundToken, WorkerId, random_hex};
use crate::job::{JobSpec, JobState, LocalTraining, RoundRecord, WorkerRoundStats};
use crate::store::Store;
use state::{AcceptedUpdate, JobEntry, Phase, State, TaskKind, WorkerEntry};

/// How the coordinator behaves; built from the validated configuration.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is considered gone.
    pub heartbeat_timeout: Duration,
    pub enrollment_token: Option<Secret>,
    pub tick: Duration,
    pub eval_batch: usize,
    pub wire_limits: WireLimits,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_timeout: Duration::from_secs(10),
            enrollment_token: None,
            tick: Duration::from_millis(200),
            eval_batch: 128,
            wire_limits: WireLimits::default(),
        }
    }
}

/// A coordinator-side test set for evaluating global models.
#[derive(Debug)]
pub struct TestSet {
    pub data: Dataset,
    pub normalization: Normalization,
}

/// Sent to watchers when a round commits or a job changes state.
#[derive(Debug, Clone)]
pub struct JobEvent {
    pub job: JobId,
    pub state: JobState,
    pub record: Option<RoundRecord>,
}

pub struct Joined {
    pub worker_id: WorkerId,
    pub session_token: String,
    pub heartbeat_interval: Duration,
}

pub struct JoinInfo {
    pub protocol_version: u32,
    pub name: String,
    pub num_samples: u64,
    pub in_channels: usize,
    pub num_classes: usize,
}

#[derive(Debug, Clone)]
pub struct TrainTask {
    pub job: JobId,
    pub round: u64,
    pub token: RoundToken,
    pub model: ModelSpec,
    pub training: LocalTraining,
    pub seed: u64,
    pub bn_stats: BnStatsPolicy,
    pub deadline_seconds: u64,
}

#[derive(Debug, Clone)]
pub enum Task {
    Train(TrainTask),
    Evaluate {
        job: JobId,
        round: u64,
        token: RoundToken,
        model: ModelSpec,
        batch_size: usize,
    },
    Wait {
        retry_after: Duration,
        reason: String,
    },
    Done {
        reason: String,
    },
}

/// The header of an upload, in domain form.
#[derive(Debug, Clone)]
pub struct UpdateHeader {
    pub worker: WorkerId,
    pub job: JobId,
    pub round: u64,
    pub token: RoundToken,
    pub num_samples: u64,
    pub train_loss: f64,
    pub train_seconds: f64,
    pub tensors: Vec<TensorMeta>,
}

/// A snapshot of a job for the operator API.
#[derive(Debug, Clone)]
pub struct JobView {
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    pub message: String,
    pub records: Vec<RoundRecord>,
    pub exchanged_values: u64,
    pub full_filter_exchanged_values: u64,
}

#[derive(Debug, Clone)]
pub struct WorkerView {
    pub id: WorkerId,
    pub name: String,
    pub num_samples: u64,
    pub state: &'static str,
    pub seconds_since_heartbeat: f64,
    pub rounds_contributed: u64,
}

pub struct Coordinator {
    state: Mutex<State>,
    store: Option<Arc<Store>>,
    settings: CoordinatorSettings,
    test_set: Option<Arc<TestSet>>,
    events: broadcast::Sender<JobEvent>,
    wake: Notify,
}

impl Coordinator {
    /// A coordinator with durable state in `store` (resuming every job it holds), or with
    /// in-memory state only.
    pub fn new(
        settings: CoordinatorSettings,
        test_set: Option<TestSet>,
        store: Option<Store>,
    ) -> Result<Arc<Self>> {
        let (events, _) = broadcast::channel(1024);
        let mut state = State::default();
        if let Some(store) = &store {
            for job in store
                .load_jobs()
                .map_err(|e| ServerError::Internal(e.to_string()))?
            {
                let entry = resume_job(job)?;
                info!(job_id = %entry.id, state = ?entry.state, rounds_committed = entry.records.len(), "job loaded from the state store");
                state.jobs.insert(entry.id.clone(), entry);
            }
        }
        Ok(Arc::new(Self {
            state: Mutex::new(state),
            store: store.map(Arc::new),
            settings,
            test_set: test_set.map(Arc::new),
            events,
            wake: Notify::new(),
        }))
    }

    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    pub fn settings(&self) -> &CoordinatorSettings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; keep serving with the state as it is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    // ----- workers -----

    pub fn join(&self, info: JoinInfo, enrollment_token: Option<&str>) -> Result<Joined> {
        if let Some(expected) = &self.settings.enrollment_token {
            match enrollment_token {
                Some(t) if constant_time_eq(t, expected.expose()) => {}
                Some(_) => {
                    return Err(ServerError::Unauthenticated(
                        "enrollment token is wrong".into(),
                    ));
                }
                None => {
                    return Err(ServerError::Unauthenticated(
                        "enrollment token missing: send authorization: Bearer <token>".into(),
                    ));
                }
            }
        }
        if info.protocol_version != PROTOCOL_VERSION {
            return Err(ServerError::FailedPrecondition(format!(
                "protocol version {} is not supported: this coordinator speaks version {PROTOCOL_VERSION}",
                info.protocol_version
            )));
        }
        if info.name.is_empty() || info.name.len() > 128 {
            return Err(ServerError::InvalidArgument(
                "worker_name must be 1..=128 bytes".into(),
            ));
        }
        if info.num_samples == 0 {
            return Err(ServerError::InvalidArgument(
                "num_samples must be positive: a worker without data cannot train".into(),
            ));
        }
        if info.in_channels == 0
            || info.in_channels > 64
            || info.num_classes < 2
            || info.num_classes > 10_000
        {
            return Err(ServerError::InvalidArgument(format!(
                "in_channels {} / num_classes {} out of range",
                info.in_channels, info.num_classes
            )));
        }
        let mut st = self.lock();
        // A rejoin under the same name replaces the old entry (the process restarted).
        let old: Vec<WorkerId> = st
            .workers
            .values()
            .filter(|w| w.name == info.name)
            .map(|w| w.id.clone())
            .collect();
        for id in old {
            st.workers.remove(&id);
        }
        st.next_worker += 1;
        let seq = match &self.store {
            Some(store) => store
                .next_id("worker")
                .map_err(|e| ServerError::Internal(e.to_string()))?,
            None => st.next_worker,
        };
        let id = WorkerId::new(format!("w-{seq}"));
        if let Some(store) = &self.store {
            store
                .record_worker(id.as_str(), &info.name, info.num_samples)
                .map_err(|e| ServerError::Internal(e.to_string()))?;
        }
        let session_token = random_hex();
        st.workers.insert(
            id.clone(),
            WorkerEntry {
                id: id.clone(),
                name: info.name.clone(),
                session_token: fedcsg_core::secret::Secret::new(session_token.clone()),
                num_samples: info.num_samples,
                in_channels: info.in_channels,
                num_classes: info.num_classes,
                last_seen: Instant::now(),
                gone: false,
                assignment: None,
                rounds_contributed: 0,
                busy: false,
            },
        );
        drop(st);
        info!(worker_id = %id, name = %info.name, samples = info.num_samples, "worker joined");
        self.wake.notify_one();
        Ok(Joined {
            worker_id: id,
            session_token,
            heartbeat_interval: self.settings.heartbeat_interval,
        })
    }

    /// Checks a worker's session token and marks it alive.
    pub fn authenticate_worker(&self, worker: &WorkerId, token: Option<&str>) -> Result<()> {
        let mut st = self.lock();
        let entry = st.workers.get_mut(worker).ok_or_else(|| {
            ServerError::Unauthenticated(format!("unknown worker {worker}: join again"))
        })?;
        match token {
            Some(t) if constant_time_eq(t, entry.session_token.expose()) => {}
            Some(_) => {
                return Err(ServerError::Unauthenticated(format!(
                    "session token of worker {worker} is wrong"
                )));
            }
            None => {
                return Err(ServerError::Unauthenticated(
                    "session token missing: send authorization: Bearer <token>".into(),
                ));
            }
        }
        entry.last_seen = Instant::now();
        if entry.gone {
            info!(worker_id = %worker, "worker is back");
            entry.gone = false;
        }
        Ok(())
    }

    /// Records a heartbeat; returns true when the worker should abandon its current task.
    pub fn heartbeat(&self, worker: &WorkerId, busy_with: Option<&str>) -> Result<bool> {
        let mut st = self.lock();
        let entry = st
            .workers
            .get_mut(worker)
            .ok_or_else(|| ServerError::NotFound(format!("unknown worker {worker}")))?;
        entry.last_seen = Instant::now();
        entry.busy = busy_with.is_some();
        Ok(match busy_with {
            None => false,
            Some(token) => entry
                .assignment
                .as_ref()
                .is_none_or(|a| a.token.as_str() != token),
        })
    }

    pub fn leave(&self, worker: &WorkerId) {
        let mut st = self.lock();
        if let Some(w) = st.workers.get_mut(worker) {
            w.gone = true;
            w.assignment = None;
            info!(worker_id = %worker, "worker left");
        }
    }

    pub fn next_task(&self, worker: &WorkerId) -> Result<Task> {
        let st = self.lock();
        if st.shutting_down {
            return Ok(Task::Done {
                reason: "coordinator is shutting down".into(),
            });
        }
        let entry = st
            .workers
            .get(worker)
            .ok_or_else(|| ServerError::NotFound(format!("unknown worker {worker}")))?;
        let wait = |reason: &str| Task::Wait {
            retry_after: Duration::from_millis(500),
            reason: reason.into(),
        };
        let Some(a) = &entry.assignment else {
            return Ok(wait("no task for this worker now"));
        };
        let Some(job) = st.jobs.get(&a.job) else {
            return Ok(wait("job is gone"));
        };
        let Some(active) = &job.active else {
            return Ok(wait("round is closing"));
        };
        let deadline_seconds = active
            .deadline
            .saturating_duration_since(Instant::now())
            .as_secs()
            .max(1);
        Ok(match a.kind {
            TaskKind::Train => Task::Train(TrainTask {
                job: job.id.clone(),
                round: a.round,
                token: a.token.clone(),
                model: job.spec.model,
                training: job.spec.training,
                seed: job.spec.seed ^ (a.round << 20) ^ fnv(worker.as_str()),
                bn_stats: job.spec.bn_stats,
                deadline_seconds,
            }),
            TaskKind::Evaluate => Task::Evaluate {
                job: job.id.clone(),
                round: a.round,
                token: a.token.clone(),
                model: job.spec.model,
                batch_size: job.spec.training.batch_size.max(64),
            },
        })
    }

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
            .ok_or_else(|| ServerError::NotFound(format!("unknown worker {worker}")))?;
        let j = st
            .jobs
            .get(job)
            .ok_or_else(|| ServerError::NotFound(format!("job {job} does not exist")))?;
        match &entry.assignment {
            Some(a) if &a.job == job && a.token.as_str() == token => {}
            _ => {
                return Err(ServerError::FailedPrecondition(format!(
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
            return Err(ServerError::InvalidArgument(format!(
                "update names {} tensors this job does not exchange, e.g. {:?}",
                unknown.len(),
                &unknown[..unknown.len().min(3)]
            )));
        }
        if !missing.is_empty() {
            return Err(ServerError::InvalidArgument(format!(
                "update lacks {} exchanged tensors, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(3)]
            )));
        }
        for m in &h.tensors {
            let t = template.get(&m.name).expect("checked above");
            if t.shape != m.shape {
                return Err(ServerError::InvalidArgument(format!(
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
            .ok_or_else(|| ServerError::NotFound(format!("job {} does not exist", h.job)))?;
        let active = job.active.as_ref().filter(|a| a.token == h.token).ok_or_else(|| {
            ServerError::FailedPrecondition(format!(
                "round token {:?} is not the open round of job {} (it closed, was retried or never existed); the update is not credited",
                h.token.as_str(),
                h.job
            ))
        })?;
        if active.phase != Phase::Training {
            return Err(ServerError::FailedPrecondition(format!(
                "round {} of job {} is closed: the update is not credited",
                active.round, h.job
            )));
        }
        if h.round != active.round {
            return Err(ServerError::InvalidArgument(format!(
                "round {} does not match the round token's round {}",
                h.round, active.round
            )));
        }
        if !active.sampled.contains(&h.worker) {
            return Err(ServerError::FailedPrecondition(format!(
                "worker {} was not given a task in round {} of job {}",
                h.worker, active.round, h.job
            )));
        }
        if h.num_samples == 0 {
            return Err(ServerError::InvalidArgument(
                "num_samples must be positive".into(),
            ));
        }
        let declared = st
            .workers
            .get(&h.worker)
            .map(|w| w.num_samples)
            .unwrap_or(0);
        if h.num_samples > declared {
            return Err(ServerError::InvalidArgument(format!(
                "num_samples {} exceeds the {declared} samples the worker declared at join",
                h.num_samples
            )));
        }
        if !h.train_loss.is_finite() || !h.train_seconds.is_finite() {
            return Err(ServerError::InvalidArgument(
                "train_loss and train_seconds must be finite".into(),
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
            return Err(ServerError::InvalidArgument(format!(
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
            return Err(ServerError::FailedPrecondition(format!(
                "worker {} already uploaded a different update for round {}",
                h.worker, active.round
            )));
        }
        active
            .sum
            .add(&update, h.num_samples as f64)
            .map_err(ServerError::InvalidArgument)?;
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

    pub fn report_evaluation(
        &self,
        worker: &WorkerId,
        job: &JobId,
        token: &str,
        samples: u64,
        correct: u64,
    ) -> Result<()> {
        if correct > samples {
            return Err(ServerError::InvalidArgument(format!(
                "correct {correct} exceeds num_samples {samples}"
            )));
        }
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
                ServerError::FailedPrecondition(format!(
                    "no federated evaluation with token {token:?} is open in job {job}"
                ))
            })?;
        if !assigned {
            // A retry of a report already taken is idempotent; anything else was never asked for.
            if active.evaluations.get(worker) == Some(&(samples, correct)) {
                return Ok(());
            }
            return Err(ServerError::FailedPrecondition(format!(
                "worker {worker} was not asked to evaluate in this round of job {job}"
            )));
        }
        active
            .evaluations
            .insert(worker.clone(), (samples, correct));
        if let Some(w) = st.workers.get_mut(worker) {
            w.assignment = None;
        }
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    // ----- operators -----

    /// Creates a job: builds its initial global model from the spec and seed (CPU work: call
    /// from a blocking thread).
    pub fn create_job(&self, spec: JobSpec) -> Result<JobView> {
        spec.validate().map_err(ServerError::InvalidArgument)?;
        let model = Model::new(&spec.model, spec.seed, ConvBackend::Reference)
            .map_err(|e| ServerError::InvalidArgument(e.to_string()))?;
        let inventory = model.inventory(spec.bn_stats);
        let full = Model::new(&spec.model.full_filter(), spec.seed, ConvBackend::Reference)
            .map_err(|e| ServerError::Internal(e.to_string()))?
            .inventory(spec.bn_stats);
        let global = model
            .state()
            .map_err(|e| ServerError::Internal(e.to_string()))?;
        let id = match &self.store {
            Some(store) => {
                let id = JobId::new(format!(
                    "job-{}",
                    store
                        .next_id("job")
                        .map_err(|e| ServerError::Internal(e.to_string()))?
                ));
                // Durable before it is visible: the initial model file, then the job row.
                store
                    .insert_job(id.as_str(), &spec, &global)
                    .map_err(|e| ServerError::Internal(e.to_string()))?;
                id
            }
            None => {
                let mut st = self.lock();
                st.next_job += 1;
                JobId::new(format!("job-{}", st.next_job))
            }
        };
        let mut st = self.lock();
        let entry = JobEntry {
            id: id.clone(),
            global_sha256: global.fingerprint(),
            global: Arc::new(global),
            exchanged_names: inventory
                .exchanged_names()
                .into_iter()
                .map(String::from)
                .collect(),
            exchanged_values: inventory.exchanged_value_count() as u64,
            full_filter_exchanged_values: full.exchanged_value_count() as u64,
            spec,
            state: JobState::Pending,
            message: "waiting for workers".into(),
            records: Vec::new(),
            active: None,
            retries: 0,
        };
        let view = view_of(&entry);
        info!(job_id = %id, model = %entry.spec.model, rounds = entry.spec.rounds, "job created");
        st.jobs.insert(id, entry);
        drop(st);
        self.wake.notify_one();
        Ok(view)
    }

    pub fn list_jobs(&self) -> Vec<JobView> {
        self.lock().jobs.values().map(view_of).collect()
    }

    pub fn get_job(&self, job: &JobId) -> Result<JobView> {
        self.lock()
            .jobs
            .get(job)
            .map(view_of)
            .ok_or_else(|| ServerError::NotFound(format!("job {job} does not exist")))
    }

    pub fn cancel_job(&self, job: &JobId) -> Result<JobView> {
        let mut st = self.lock();
        let j = st
            .jobs
            .get_mut(job)
            .ok_or_else(|| ServerError::NotFound(format!("job {job} does not exist")))?;
        if !j.state.is_finished() {
            if let Some(store) = &self.store {
                store
                    .set_job_state(
                        job.as_str(),
                        JobState::Cancelled,
                        "cancelled by an operator",
                    )
                    .map_err(|e| ServerError::Internal(e.to_string()))?;
            }
            j.state = JobState::Cancelled;
            j.message = "cancelled by an operator".into();
            j.active = None;
        }
        let view = view_of(j);
        for w in st.workers.values_mut() {
            if w.assignment.as_ref().is_some_and(|a| &a.job == job) {
                w.assignment = None;
            }
        }
        drop(st);
        let _ = self.events.send(JobEvent {
            job: job.clone(),
            state: JobState::Cancelled,
            record: None,
        });
        warn!(job_id = %job, "job cancelled");
        Ok(view)
    }

    /// The full global model of a job (every variable).
    pub fn export(&self, job: &JobId) -> Result<(u64, Arc<StateDict>, String)> {
        let st = self.lock();
        let j = st
            .jobs
            .get(job)
            .ok_or_else(|| ServerError::NotFound(format!("job {job} does not exist")))?;
        Ok((
            j.rounds_completed(),
            Arc::clone(&j.global),
            j.global_sha256.clone(),
        ))
    }

    pub fn list_workers(&self) -> Vec<WorkerView> {
        let now = Instant::now();
        self.lock()
            .workers
            .values()
            .map(|w| WorkerView {
                id: w.id.clone(),
                name: w.name.clone(),
                num_samples: w.num_samples,
                state: if w.gone {
                    "gone"
                } else {
                    match w.assignment.as_ref().map(|a| &a.kind) {
                        Some(TaskKind::Train) => "training",
                        Some(TaskKind::Evaluate) => "evaluating",
                        None => "idle",
                    }
                },
                seconds_since_heartbeat: now.duration_since(w.last_seen).as_secs_f64(),
                rounds_contributed: w.rounds_contributed,
            })
            .collect()
    }

    /// Tells workers to stop and stops starting rounds.
    pub fn begin_shutdown(&self) {
        self.lock().shutting_down = true;
    }
}

/// Rebuilds a job's in-memory entry from the store; an unfinished job resumes with the round
/// after its last committed one.
fn resume_job(p: crate::store::PersistedJob) -> Result<JobEntry> {
    let model = Model::new(&p.spec.model, p.spec.seed, ConvBackend::Reference)
        .map_err(|e| ServerError::Internal(e.to_string()))?;
    let inventory = model.inventory(p.spec.bn_stats);
    let full = Model::new(
        &p.spec.model.full_filter(),
        p.spec.seed,
        ConvBackend::Reference,
    )
    .map_err(|e| ServerError::Internal(e.to_string()))?
    .inventory(p.spec.bn_stats);
    model
        .check_state(&p.global, true)
        .map_err(|e| ServerError::Internal(format!("stored model of {}: {e}", p.id)))?;
    Ok(JobEntry {
        id: JobId::new(p.id),
        global_sha256: p
            .records
            .last()
            .map(|r| r.model_sha256.clone())
            .unwrap_or(p.global_file_sha256),
        global: Arc::new(p.global),
        exchanged_names: inventory
            .exchanged_names()
            .into_iter()
            .map(String::from)
            .collect(),
        exchanged_values: inventory.exchanged_value_count() as u64,
        full_filter_exchanged_values: full.exchanged_value_count() as u64,
        message: p.message,
        state: p.state,
        spec: p.spec,
        records: p.records,
        active: None,
        retries: 0,
    })
}

fn view_of(j: &JobEntry) -> JobView {
    JobView {
        id: j.id.clone(),
        spec: j.spec.clone(),
        state: j.state,
        message: j.message.clone(),
        records: j.records.clone(),
        exchanged_values: j.exchanged_values,
        full_filter_exchanged_values: j.full_filter_exchanged_values,
    }
}

/// FNV-1a, to derive per-worker seeds.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
