//! The coordinator's in-memory state: workers, jobs, and the round in progress of each job.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::time::Instant;

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
    /// Silent past the heartbeat timeout, or left; a gone worker that heartbeats with its
    /// token is back, a left one is not.
    pub gone: bool,
    /// When it went (or left): it is forgotten a retention period later.
    pub gone_at: Option<Instant>,
    /// Left with Leave: its session token is refused.
    pub left: bool,
    /// Answered "done" after shutdown began.
    pub told_done: bool,
    pub assignment: Option<Assignment>,
    pub rounds_contributed: u64,
    /// Training or evaluating, as the worker's last heartbeat said.
    pub busy: bool,
}

impl WorkerEntry {
    /// Alive and with an open session.
    pub fn is_present(&self) -> bool {
        !self.gone && !self.left
    }

    /// What the worker is doing, as the operator API, the dashboard and the metrics name it
    /// (one of [`crate::metrics::WORKER_STATES`]).
    pub fn state_name(&self) -> &'static str {
        if self.left {
            "left"
        } else if self.gone {
            "gone"
        } else {
            match self.assignment.as_ref().map(|a| &a.kind) {
                Some(TaskKind::Train) => "training",
                Some(TaskKind::Evaluate) => "evaluating",
                None => "idle",
            }
        }
    }

    /// Marks the worker gone and drops its task.
    pub fn mark_gone(&mut self, now: Instant) {
        if !self.gone {
            self.gone_at = Some(now);
        }
        self.gone = true;
        self.assignment = None;
    }
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
    /// Free workers when the round started (a DP job's sampling rate is sampled / eligible).
    pub eligible: usize,
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
    /// The tensors of `global` that travel (the template uploads are checked against and the
    /// base their deltas apply to); replaced with `global`.
    pub exchanged: Arc<StateDict>,
    pub global_sha256: String,
    /// The names (and through the template, shapes) that travel in this job.
    pub exchanged_names: Vec<String>,
    pub exchanged_values: u64,
    pub full_filter_exchanged_values: u64,
    pub records: Vec<RoundRecord>,
    pub active: Option<ActiveRound>,
    /// Rounds retried in this job (quorum missed, or not closed or committed): seeds the
    /// sampling of a retried round.
    pub retries: u64,
    /// Retries of the current round; reset when a round commits.
    pub round_retries: u32,
    /// The strategy's server-side state after the last committed round (momentum, moments).
    pub strategy_state: Arc<ServerState>,
    /// The clipping bound of the next round (`None` without clipping).
    pub clip_norm: Option<f64>,
    /// A DP job's privacy spent so far (`None` without DP).
    pub accountant: Option<fedcsg_core::privacy::RdpAccountant>,
    /// The current global model in the job's download encoding, once a download asked for it;
    /// replaced by a fresh cell whenever the global model changes.
    pub download: DownloadCell,
}

impl JobEntry {
    /// The exchanged part of the global model: shared, never copied under the lock.
    pub fn exchanged_global(&self) -> Arc<StateDict> {
        Arc::clone(&self.exchanged)
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
    /// Tasks were handed out since long-polling GetTask calls were last woken.
    pub tasks_assigned: bool,
    /// Store writes of what memory already says, flushed outside the lock.
    pub queued_writes: Vec<super::store_writes::QueuedWrite>,
}
