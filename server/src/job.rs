//! What a job asks for, validated, and the states it goes through.

use fedcsg_ml::model::{BnStatsPolicy, ModelSpec};
use serde::{Deserialize, Serialize};

/// Aggregation strategies. FedAvg folds updates into a running weighted sum, so coordinator
/// memory stays O(model size) whatever the number of workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    FedAvg,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" | "fedavg" => Ok(Strategy::FedAvg),
            other => Err(format!("unknown strategy {other:?}: use fedavg")),
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fedavg")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LocalTraining {
    pub local_epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// 0 = every local sample each round.
    pub max_samples_per_round: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub model: ModelSpec,
    pub training: LocalTraining,
    pub strategy: Strategy,
    pub rounds: u64,
    pub fraction: f64,
    pub min_workers: usize,
    pub round_deadline_seconds: u64,
    pub seed: u64,
    pub bn_stats: BnStatsPolicy,
    pub federated_evaluation: bool,
}

impl JobSpec {
    /// Every limit a job must respect; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        self.model
            .validate()
            .map_err(|e| format!("spec.model: {e}"))?;
        let t = &self.training;
        if !(1..=1000).contains(&t.local_epochs) {
            return Err(format!(
                "spec.training.local_epochs must be 1..=1000, got {}",
                t.local_epochs
            ));
        }
        if !(1..=4096).contains(&t.batch_size) {
            return Err(format!(
                "spec.training.batch_size must be 1..=4096, got {}",
                t.batch_size
            ));
        }
        if !(t.learning_rate.is_finite() && t.learning_rate > 0.0 && t.learning_rate <= 10.0) {
            return Err(format!(
                "spec.training.learning_rate must be in (0, 10], got {}",
                t.learning_rate
            ));
        }
        if !(t.momentum.is_finite() && (0.0..1.0).contains(&t.momentum)) {
            return Err(format!(
                "spec.training.momentum must be in [0, 1), got {}",
                t.momentum
            ));
        }
        if !(t.weight_decay.is_finite() && (0.0..1.0).contains(&t.weight_decay)) {
            return Err(format!(
                "spec.training.weight_decay must be in [0, 1), got {}",
                t.weight_decay
            ));
        }
        if !(1..=100_000).contains(&self.rounds) {
            return Err(format!(
                "spec.rounds must be 1..=100000, got {}",
                self.rounds
            ));
        }
        if !(self.fraction.is_finite() && self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err(format!(
                "spec.fraction must be in (0, 1], got {}",
                self.fraction
            ));
        }
        if !(1..=100_000).contains(&self.min_workers) {
            return Err(format!(
                "spec.min_workers must be 1..=100000, got {}",
                self.min_workers
            ));
        }
        if !(1..=86_400).contains(&self.round_deadline_seconds) {
            return Err(format!(
                "spec.round_deadline_seconds must be 1..=86400, got {}",
                self.round_deadline_seconds
            ));
        }
        if self.name.len() > 128 {
            return Err("spec.name must be at most 128 bytes".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Per-worker figures of one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRoundStats {
    pub worker_id: String,
    pub num_samples: u64,
    pub train_loss: f64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub train_seconds: f64,
}

/// The committed record of one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u64,
    pub sampled: usize,
    pub participants: Vec<String>,
    pub train_loss: f64,
    /// Coordinator-side test accuracy; `None` without a test set.
    pub test_accuracy: Option<f64>,
    pub test_loss: Option<f64>,
    pub federated_accuracy: Option<f64>,
    pub bytes_down: u64,
    pub bytes_up: u64,
    pub seconds: f64,
    pub model_sha256: String,
    pub workers: Vec<WorkerRoundStats>,
}
