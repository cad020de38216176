//! The coordinator's in-memory state: workers, jobs, and the round in progress of each job.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use fedcsg_core::tensor::StateDict;

use super::downloads::DownloadCell;
use crate::client_evaluation::ClientReport;
use crate::ids::{JobId, RoundToken, WorkerId};
use crate::job::{JobSpec, JobState, RoundRecord, WorkerRoundStats};
use crate::strategy::{RoundAggregation, ServerState};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskKind {
    Train,
    Evaluate,
}

/// A task handed to a worker: valid until its round closes or is abandoned.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub job: JobId,
    pub round: u64,
    pub token: RoundToken,
    pub kind: TaskKind,
}

#[derive(Debug)]
pub struct WorkerEntry {
    pub id: WorkerId,
    pub name: String,
    pub session_token: fedcsg_core::secret::Secret,
    pub num_samples: u64,
    pub in_channels: usize,
    pub num_classes: usize,
    pub last_seen: Instant,
    pub gone: bool,
    pub assignment: Option<Assignment>,
    pub rounds_contributed: u64,
    /// Training or evaluating, as the worker's last heartbeat said.
    pub busy: bool,
}

/// An accepted update, kept as its figures (the values are already in the round's aggregation).
#[derive(Debug, Clone)]
pub struct AcceptedUpdate {
    pub fingerprint: String,
    pub stats: WorkerRoundStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Workers train; updates go into the round's aggregation.
    Training,
    /// The new global model is being evaluated before it is committed.
    Closing,
    /// Workers evaluate the committed model on their data.
    FederatedEvaluation,
}

#[derive(Debug)]
pub struct ActiveRound {
    pub round: u64,
    pub token: RoundToken,
    pub phase: Phase,
    pub started: Instant,
    pub deadline: Instant,
    pub sampled: Vec<WorkerId>,
    pub accepted: BTreeMap<WorkerId, AcceptedUpdate>,
    /// The accepted updates, as the job's strategy aggregates them; taken when the round
    /// closes.
    pub aggregation: RoundAggregation,
    /// The L2 bound each update of this round is clipped to (`None` without clipping).
    pub clip_norm: Option<f64>,
    /// Accepted updates that were clipped.
    pub clipped: usize,
    /// Per sampled worker, the largest FedAvg weight its update may have (the job's
    /// `max_weight_share`); absent = no cap.
    pub weight_caps: HashMap<WorkerId, f64>,
    /// Seconds spent folding updates into `aggregation`.
    pub fold_seconds: f64,
    pub bytes_down: HashMap<WorkerId, u64>,
    /// Downloads counted in `bytes_down` (retries included).
    pub downloads: u64,
    /// Federated evaluation reports: (samples, correct).
    pub evaluations: BTreeMap<WorkerId, ClientReport>,
}

#[derive(Debug)]
pub struct JobEntry {
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    pub message: String,
    /// Every variable of the global model (what is exported and evaluated).
    pub global: Arc<StateDict>,
    pub global_sha256: String,
    /// The names (and through the template, shapes) that travel in this job.
    pub exchanged_names: Vec<String>,
    pub exchanged_values: u64,
    pub full_filter_exchanged_values: u64,
    pub records: Vec<RoundRecord>,
    pub active: Option<ActiveRound>,
    /// Rounds retried because the quorum was not met by the deadline.
    pub retries: u64,
    /// The strategy's server-side state after the last committed round (momentum, moments).
    pub strategy_state: Arc<ServerState>,
    /// The clipping bound of the next round (`None` without clipping).
    pub clip_norm: Option<f64>,
    /// The current global model in the job's download encoding, once a download asked for it;
    /// replaced by a fresh cell whenever the global model changes.
    pub download: DownloadCell,
}

impl JobEntry {
    pub fn exchanged_global(&self) -> StateDict {
        let names: Vec<&str> = self.exchanged_names.iter().map(String::as_str).collect();
        self.global.restricted_to(&names)
    }

    pub fn rounds_completed(&self) -> u64 {
        self.records.len() as u64
    }

    /// One plain-f32 transfer of the full-filter model's exchanged tensors.
    pub fn full_filter_f32_bytes(&self) -> u64 {
        4 * self.full_filter_exchanged_values
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub workers: BTreeMap<WorkerId, WorkerEntry>,
    pub jobs: BTreeMap<JobId, JobEntry>,
    pub next_worker: u64,
    pub next_job: u64,
    pub shutting_down: bool,
}
