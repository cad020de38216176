//! What a job asks for, validated, and the states it goes through.

use fedcsg_ml::model::{BnStatsPolicy, ModelSpec};
use fedcsg_wire::delta::UpdateKind;
use fedcsg_wire::{Accepted, Compression, TensorEncoding, TopK};
use serde::{Deserialize, Serialize};

pub use crate::client_evaluation::ClientEvaluation;
pub use crate::lr_schedule::LrSchedule;
pub use crate::strategy::{Clipping, Strategy};
pub use fedcsg_core::privacy::{DifferentialPrivacy, DpMode, RoundPrivacy};

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

/// How a job's models travel (DESIGN §2.3a): updates as deltas in `upload` (optionally top-k),
/// the global model in `download`, encoded once per round. The default (a job stored before
/// compression existed) is the exact f32 exchange.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Exchange {
    pub upload: TensorEncoding,
    pub download: TensorEncoding,
    /// The fraction of each update tensor's values sent; `None` = dense.
    pub upload_topk: Option<f64>,
    /// Workers feed what compression dropped into their next round.
    pub error_feedback: bool,
}

impl Exchange {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(k) = self.upload_topk {
            TopK::new(k).map_err(|e| format!("spec.upload_topk: {e}"))?;
        }
        Ok(())
    }

    /// The compression workers are asked to upload in.
    pub fn upload_compression(&self) -> Compression {
        Compression {
            encoding: self.upload,
            topk: self.upload_topk.and_then(|k| TopK::new(k).ok()),
        }
    }

    /// What an upload of `kind` may contain: f32 (exact, always welcome) and the job's upload
    /// encoding; sparse tensors only in a delta of a top-k job.
    pub fn accepted(&self, kind: UpdateKind) -> Accepted {
        Accepted::f32_and(self.upload)
            .with_sparse(kind == UpdateKind::Delta && self.upload_topk.is_some())
    }
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
    #[serde(default)]
    pub exchange: Exchange,
    /// Server-side clipping of each update's L2 norm; `None` = off.
    #[serde(default)]
    pub clipping: Option<Clipping>,
    /// The most of a round's FedAvg weight one update may hold, in (0, 1]; `None` = no cap.
    #[serde(default)]
    pub max_weight_share: Option<f64>,
    /// The learning rate across rounds (a job stored before schedules existed: constant).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// The updates a round needs to close at its deadline; `None` = `min_workers`.
    #[serde(default)]
    pub quorum: Option<usize>,
    /// How many times one round may be retried (quorum missed, or the round could not be
    /// aggregated or committed) before the job fails.
    #[serde(default = "JobSpec::default_max_round_retries")]
    pub max_round_retries: u32,
    /// Differential privacy; `None` = off.
    #[serde(default)]
    pub privacy: Option<DifferentialPrivacy>,
}

impl JobSpec {
    /// Retries of one round before its job fails, when a spec does not say.
    pub const DEFAULT_MAX_ROUND_RETRIES: u32 = 5;

    fn default_max_round_retries() -> u32 {
        Self::DEFAULT_MAX_ROUND_RETRIES
    }

    /// The updates a round needs to close at its deadline.
    pub fn quorum(&self) -> usize {
        self.quorum.unwrap_or(self.min_workers)
    }

    /// The local training settings of `round`: the base settings at the round's scheduled rate.
    pub fn training_for_round(&self, round: u64) -> LocalTraining {
        LocalTraining {
            learning_rate: self
                .lr_schedule
                .rate(self.training.learning_rate, round, self.rounds),
            ..self.training
        }
    }
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
        crate::ids::check_display_name(&self.name, "spec.name")?;
        if let Some(q) = self.quorum
            && !(1..=self.min_workers).contains(&q)
        {
            return Err(format!(
                "spec.quorum must be 1..=min_workers ({}), got {q}: a round starts with at least min_workers and closes at its deadline with at least quorum updates",
                self.min_workers
            ));
        }
        if self.max_round_retries > 1000 {
            return Err(format!(
                "spec.max_round_retries must be 0..=1000, got {}",
                self.max_round_retries
            ));
        }
        // A round may close with only the quorum: the strategy must work with that many.
        self.strategy
            .validate_for(self.min_workers, self.quorum())?;
        if let Some(c) = &self.clipping {
            c.validate()?;
        }
        if let Some(p) = &self.privacy {
            self.validate_privacy(p)?;
        }
        if let Some(s) = self.max_weight_share
            && !(s.is_finite() && s > 0.0 && s <= 1.0)
        {
            return Err(format!("spec.max_weight_share must be in (0, 1], got {s}"));
        }
        self.exchange.validate()
    }

    /// Differential privacy holds only for what it noises: the settings it cannot coexist with
    /// are refused, each with what to do instead.
    fn validate_privacy(&self, p: &DifferentialPrivacy) -> Result<(), String> {
        p.validate()?;
        if self.bn_stats != BnStatsPolicy::Local {
            return Err(
                "spec.privacy needs bn_stats local: batch-norm running statistics are statistics \
                 of the workers' data and are neither clipped nor noised, so they must stay on the \
                 workers"
                    .into(),
            );
        }
        if self.federated_evaluation {
            return Err(
                "spec.privacy cannot be combined with federated_evaluation: the workers' \
                 evaluation reports (accuracy and loss on their own data) are not noised"
                    .into(),
            );
        }
        if self.clipping.is_some() {
            return Err(
                "spec.privacy clips updates itself (clip_norm, target_quantile): leave \
                 spec.clipping unset"
                    .into(),
            );
        }
        if p.mode == DpMode::Central {
            if self.strategy.needs_every_update() {
                return Err(format!(
                    "spec.privacy mode central averages clipped updates and noises the sum; \
                     strategy {} looks at individual updates: use fedavg, fedavgm, fedadam, \
                     fedyogi, fedadagrad or fedprox",
                    self.strategy
                ));
            }
            if self.max_weight_share.is_some() {
                return Err(
                    "spec.privacy mode central gives every update the same weight: leave \
                     spec.max_weight_share unset"
                        .into(),
                );
            }
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
    /// One plain-f32 transfer of the full-filter model's exchanged tensors (4 bytes per value),
    /// what each direction would have cost without CSG and compression.
    #[serde(default)]
    pub full_filter_f32_bytes: u64,
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
    /// The same round's uploads and downloads as plain-f32 full-filter transfers.
    #[serde(default)]
    pub full_filter_f32_bytes_up: u64,
    #[serde(default)]
    pub full_filter_f32_bytes_down: u64,
    pub seconds: f64,
    pub model_sha256: String,
    pub workers: Vec<WorkerRoundStats>,
    /// The L2 bound this round's updates were clipped to (`None` without clipping).
    #[serde(default)]
    pub clip_norm: Option<f64>,
    /// How many of the participants' updates were clipped.
    #[serde(default)]
    pub clipped_updates: u64,
    /// Coordinator seconds spent aggregating: folding updates as they arrived plus the close
    /// step of the strategy.
    #[serde(default)]
    pub aggregation_seconds: f64,
    /// The participants whose updates Krum averaged (`None` for other strategies).
    #[serde(default)]
    pub selected: Option<Vec<String>>,
    /// The learning rate of the round's train tasks (`None` in records older than schedules).
    #[serde(default)]
    pub learning_rate: Option<f64>,
    /// The federated evaluation of the round's global model on the clients' held-out data.
    #[serde(default)]
    pub client_evaluation: Option<ClientEvaluation>,
    /// The round's differential privacy and the job's ε after it (`None` without DP).
    #[serde(default)]
    pub privacy: Option<RoundPrivacy>,
}

impl RoundRecord {
    /// The clipping bound of the round after this one, under `clipping`.
    pub fn next_clip_norm(&self, clipping: &Clipping) -> f64 {
        let current = self.clip_norm.unwrap_or_else(|| clipping.initial_norm());
        let count = self.participants.len();
        let unclipped = count.saturating_sub(self.clipped_updates as usize);
        clipping.next_norm(current, unclipped, count)
    }
}

#[cfg(test)]
mod tests {
    use fedcsg_wire::UpdateKind;

    use super::*;

    fn int8_topk() -> Exchange {
        Exchange {
            upload: TensorEncoding::Int8Scaled,
            download: TensorEncoding::F16,
            upload_topk: Some(0.1),
            error_feedback: true,
        }
    }

    /// An upload may be f32 or the job's encoding; sparse only in a delta of a top-k job.
    #[test]
    fn uploads_accept_f32_and_the_jobs_encoding() {
        let a = int8_topk().accepted(UpdateKind::Delta);
        assert!(a.encoding(TensorEncoding::F32) && a.encoding(TensorEncoding::Int8Scaled));
        assert!(!a.encoding(TensorEncoding::F16) && !a.encoding(TensorEncoding::Bf16));
        assert!(a.sparse());
        assert!(!int8_topk().accepted(UpdateKind::Weights).sparse());
        assert!(!Exchange::default().accepted(UpdateKind::Delta).sparse());
        let c = int8_topk().upload_compression();
        assert_eq!(c.encoding, TensorEncoding::Int8Scaled);
        assert_eq!(c.topk.map(|k| k.fraction()), Some(0.1));
    }

    /// A job stored before compression existed loads as the exact f32 exchange; a stored
    /// compressed job keeps its settings.
    #[test]
    fn stored_specs_without_exchange_settings_are_exact() {
        let stored = serde_json::json!({
            "upload": "int8", "download": "f16", "upload_topk": 0.1, "error_feedback": true
        });
        let e: Exchange = serde_json::from_value(stored).unwrap();
        assert_eq!(e, int8_topk());
        let spec = JobSpec {
            name: "old".into(),
            model: ModelSpec::new("resnet20".parse().unwrap(), "12-72".parse().unwrap(), 1, 10),
            training: LocalTraining {
                local_epochs: 1,
                batch_size: 32,
                learning_rate: 0.05,
                momentum: 0.9,
                weight_decay: 5e-4,
                max_samples_per_round: 0,
            },
            strategy: Strategy::FedAvg,
            rounds: 3,
            fraction: 1.0,
            min_workers: 1,
            round_deadline_seconds: 60,
            seed: 1,
            bn_stats: BnStatsPolicy::default(),
            federated_evaluation: false,
            exchange: int8_topk(),
            clipping: None,
            max_weight_share: None,
            lr_schedule: LrSchedule::default(),
            quorum: None,
            max_round_retries: 3,
            privacy: None,
        };
        let mut stored = serde_json::to_value(&spec).unwrap();
        let back: JobSpec = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(back, spec);
        for field in [
            "exchange",
            "clipping",
            "max_weight_share",
            "lr_schedule",
            "quorum",
            "max_round_retries",
        ] {
            stored.as_object_mut().unwrap().remove(field);
        }
        let old: JobSpec = serde_json::from_value(stored).unwrap();
        assert_eq!(old.exchange, Exchange::default());
        assert!(old.exchange.upload_compression().is_exact());
        assert_eq!(old.lr_schedule, LrSchedule::Constant);
        assert_eq!((old.quorum(), old.max_round_retries), (1, 5));
        assert!(old.validate().is_ok());

        // A round's train tasks carry the scheduled rate; everything else is the base setting.
        let cosine = JobSpec {
            lr_schedule: "cosine".parse().unwrap(),
            ..spec
        };
        assert_eq!(cosine.training_for_round(1), cosine.training);
        let last = cosine.training_for_round(3);
        assert!((last.learning_rate - 0.05 * 0.25).abs() < 1e-12, "{last:?}");
        assert_eq!(last.momentum, 0.9);
    }

    #[test]
    fn topk_fractions_outside_the_range_are_refused() {
        for k in [0.0, 1.5, -0.1, f64::NAN] {
            let e = Exchange {
                upload_topk: Some(k),
                ..Exchange::default()
            };
            let why = e.validate().unwrap_err();
            assert!(why.starts_with("spec.upload_topk"), "{why}");
        }
    }
}
