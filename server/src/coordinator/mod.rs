//! The coordinator's domain logic: workers join and ask for tasks, jobs run rounds, updates are
//! validated and folded into a weighted sum, rounds close and commit. No protobuf types here: the
//! gRPC services in [`crate::service`] convert and call these methods.
//!
//! This file holds the types and the [`Coordinator`] itself; its methods live by concern in
//! `workers` (join, sessions, heartbeats, tasks), `downloads` (the global model, encoded once
//! per round), `uploads` (update uploads: validation, decoding, deltas), `jobs` (the operator's
//! job calls), `evaluation` (federated evaluation reports) and `rounds` (the round state
//! machine); `seeds` derives every seed the coordinator hands out.

mod downloads;
mod evaluation;
mod jobs;
mod privacy;
mod rounds;
mod seeds;
pub mod state;
mod store_writes;
pub mod transfers;
mod uploads;
mod workers;

pub use downloads::{DownloadSource, EncodedModel};
pub use jobs::RoundsWanted;
pub use uploads::PendingUpload;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fedcsg_core::secret::Secret;
pub use fedcsg_core::secret::constant_time_eq;
use fedcsg_ml::data::{Dataset, Normalization};
use fedcsg_ml::model::{BnStatsPolicy, ModelSpec};
use fedcsg_wire::{Compression, TensorMeta, UpdateKind, WireLimits};
use tokio::sync::{Notify, broadcast};
use tracing::info;

use crate::error::Result;
use crate::ids::{JobId, RoundToken, WorkerId};
use crate::job::{JobSpec, JobState, LocalTraining, RoundRecord};
use crate::metrics::{Census, CoordinatorMetrics};
use crate::store::Store;
use state::State;
use transfers::{TransferLimits, Transfers};

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
    /// The most samples a worker may declare at join.
    pub max_worker_samples: u64,
    /// How long a gone or departed worker is remembered (in memory and the store).
    pub gone_worker_retention: Duration,
    /// Caps on concurrent transfers and their idle timeout.
    pub transfers: TransferLimits,
}

impl CoordinatorSettings {
    /// A billion samples: far beyond any one worker's data set, far below the counts that
    /// would swamp a round's weight or overflow a sum.
    pub const DEFAULT_MAX_WORKER_SAMPLES: u64 = 1_000_000_000;
    pub const DEFAULT_GONE_WORKER_RETENTION: Duration = Duration::from_secs(3600);
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
            max_worker_samples: Self::DEFAULT_MAX_WORKER_SAMPLES,
            gone_worker_retention: Self::DEFAULT_GONE_WORKER_RETENTION,
            transfers: TransferLimits::default(),
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
    /// The session token of this worker's previous session, if it has one: lets it take its
    /// name over from a session that still looks alive.
    pub previous_session_token: Option<String>,
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
    /// How to send the update (always a delta), and whether to feed back what it dropped.
    pub upload: Compression,
    pub error_feedback: bool,
    /// FedProx's μ (0 = no proximal term).
    pub proximal_mu: f64,
    /// Local DP: what the worker does to its update before sending it.
    pub local_privacy: Option<fedcsg_core::privacy::LocalPrivacy>,
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
    pub kind: UpdateKind,
    pub tensors: Vec<TensorMeta>,
}

/// A snapshot of a job for the operator API.
#[derive(Debug, Clone)]
pub struct JobView {
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    pub message: String,
    /// The committed rounds asked for (see [`RoundsWanted`]), oldest first.
    pub records: Vec<RoundRecord>,
    pub rounds_completed: u64,
    /// The coordinator-side test accuracy of the last committed round.
    pub latest_test_accuracy: Option<f64>,
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
    /// Orders store writes with the state changes they make durable (taken before `state`).
    store_writes: Mutex<()>,
    settings: CoordinatorSettings,
    test_set: Option<Arc<TestSet>>,
    events: broadcast::Sender<JobEvent>,
    wake: Notify,
    /// Notified whenever tasks may have been handed out (a round or an evaluation opened, the
    /// coordinator began shutting down): long-polling GetTask calls look again.
    tasks_changed: Notify,
    /// Open uploads and downloads per worker, fleet-wide permits, buffered upload bytes.
    transfers: Arc<Transfers>,
    /// Counters and histograms of what happened, for `/metrics`.
    metrics: Arc<CoordinatorMetrics>,
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
            let forgotten = store.forget_workers_joined_before(settings.gone_worker_retention)?;
            if forgotten > 0 {
                info!(
                    workers = forgotten,
                    "forgot workers of earlier runs past the retention period"
                );
            }
            for job in store.load_jobs()? {
                let entry = jobs::resume_job(job)?;
                info!(job_id = %entry.id, state = ?entry.state, rounds_committed = entry.records.len(), "job loaded from the state store");
                state.jobs.insert(entry.id.clone(), entry);
            }
        }
        Ok(Arc::new(Self {
            state: Mutex::new(state),
            store: store.map(Arc::new),
            store_writes: Mutex::new(()),
            test_set: test_set.map(Arc::new),
            events,
            wake: Notify::new(),
            tasks_changed: Notify::new(),
            transfers: Transfers::new(settings.transfers),
            metrics: Arc::new(CoordinatorMetrics::new()),
            settings,
        }))
    }

    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    pub fn settings(&self) -> &CoordinatorSettings {
        &self.settings
    }

    pub fn transfers(&self) -> &Arc<Transfers> {
        &self.transfers
    }

    pub fn metrics(&self) -> &Arc<CoordinatorMetrics> {
        &self.metrics
    }

    /// Jobs and workers by state, and the upload bytes buffered now.
    pub fn census(&self) -> Census {
        let st = self.lock();
        let mut census = Census {
            upload_buffered_bytes: self.transfers.buffered_bytes(),
            ..Census::default()
        };
        for job in st.jobs.values() {
            match census.jobs.iter_mut().find(|(s, _)| *s == job.state) {
                Some((_, n)) => *n += 1,
                None => census.jobs.push((job.state, 1)),
            }
        }
        for worker in st.workers.values() {
            let state = worker.state_name();
            match census.workers.iter_mut().find(|(s, _)| *s == state) {
                Some((_, n)) => *n += 1,
                None => census.workers.push((state, 1)),
            }
        }
        census
    }

    pub fn is_shutting_down(&self) -> bool {
        self.lock().shutting_down
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; keep serving with the state as it is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    /// Tells workers to stop and stops starting rounds.
    pub fn begin_shutdown(&self) {
        self.lock().shutting_down = true;
        self.tasks_changed.notify_waiters();
    }

    /// The longest a GetTask call may wait for a task.
    pub const MAX_TASK_WAIT: Duration = Duration::from_secs(60);

    /// The worker's task; with nothing to do, waits up to `wait` for one (or for shutdown).
    pub async fn wait_for_task(&self, worker: &WorkerId, wait: Duration) -> Result<Task> {
        let deadline = tokio::time::Instant::now() + wait.min(Self::MAX_TASK_WAIT);
        loop {
            // Registered before looking, so a task assigned in between is not missed.
            let changed = self.tasks_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let task = self.next_task(worker)?;
            if !matches!(task, Task::Wait { .. }) || tokio::time::Instant::now() >= deadline {
                return Ok(task);
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}
