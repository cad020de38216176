//! Tasks from the coordinator, validated into domain types at the edge: the rest of the worker
//! never sees a `GetTaskResponse`. A missing or nonsensical field is a [`WorkerError::Protocol`].

use std::time::Duration;

use fedcsg_core::privacy::LocalPrivacy;

use fedcsg_ml::data::Augmentation;
use fedcsg_ml::model::{BnStatsPolicy, ModelSpec};
use fedcsg_ml::optim::{LrSchedule, OptimizerConfig};
use fedcsg_ml::train::TrainSettings;
use fedcsg_wire::Compression;
use fedcsg_wire::convert::{compression_from_proto, model_spec_from_proto};
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::get_task_response::Task;

use crate::error::WorkerError;

/// Bounds on a coordinator's "ask again later", so a zero does not spin and a huge value does
/// not park the worker.
pub const MIN_WAIT: Duration = Duration::from_millis(50);
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// Which job, round and round token a task belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundRef {
    pub job_id: String,
    pub round: u64,
    pub round_token: String,
}

/// How to send an update: a delta in this compression, with or without error feedback.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UploadPlan {
    pub compression: Compression,
    pub error_feedback: bool,
}

/// Train the round's global model on the local partition and send the update.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainAssignment {
    pub round: RoundRef,
    pub spec: ModelSpec,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    /// At most this many local samples per round, drawn with `seed`; `None` for all of them.
    pub max_samples: Option<usize>,
    pub seed: u64,
    pub bn_stats: BnStatsPolicy,
    /// Time left until the round's deadline when the task was handed out.
    pub deadline: Duration,
    pub upload: UploadPlan,
    /// FedProx's μ for the local loss (0 = plain local training).
    pub proximal_mu: f64,
    /// Local DP: clip and noise the update before it is sent.
    pub local_privacy: Option<LocalPrivacy>,
}

impl TrainAssignment {
    /// The local training settings, with the data set's own augmentation.
    pub fn settings(&self, augmentation: Augmentation) -> TrainSettings {
        TrainSettings {
            epochs: self.epochs,
            batch_size: self.batch_size,
            optimizer: self.optimizer,
            schedule: LrSchedule::Constant,
            augmentation,
            seed: self.seed,
            proximal_mu: self.proximal_mu,
        }
    }
}

/// Evaluate the round's global model on the local test partition.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalAssignment {
    pub round: RoundRef,
    pub spec: ModelSpec,
    pub batch_size: usize,
}

/// What the coordinator wants next.
#[derive(Debug, Clone, PartialEq)]
pub enum Assignment {
    Train(TrainAssignment),
    Evaluate(EvalAssignment),
    /// Nothing to do yet; ask again after this long (already bounded to `MIN_WAIT..=MAX_WAIT`).
    Wait {
        retry_after: Duration,
        reason: String,
    },
    /// The federation is over for this worker.
    Done {
        reason: String,
    },
}

fn invalid(why: impl Into<String>) -> WorkerError {
    WorkerError::Protocol {
        what: "task",
        why: why.into(),
    }
}

fn round_ref(
    job_id: String,
    round: u64,
    round_token: String,
    kind: &str,
) -> Result<RoundRef, WorkerError> {
    if job_id.is_empty() {
        return Err(invalid(format!("{kind}.job_id is empty")));
    }
    if round_token.is_empty() {
        return Err(invalid(format!("{kind}.round_token is empty")));
    }
    Ok(RoundRef {
        job_id,
        round,
        round_token,
    })
}

impl Assignment {
    pub fn from_proto(response: pb::GetTaskResponse) -> Result<Self, WorkerError> {
        match response.task {
            None => Err(invalid("GetTaskResponse.task is not set")),
            Some(Task::Wait(w)) => Ok(Assignment::Wait {
                retry_after: Duration::from_millis(u64::from(w.retry_after_ms))
                    .clamp(MIN_WAIT, MAX_WAIT),
                reason: w.reason,
            }),
            Some(Task::Done(d)) => Ok(Assignment::Done { reason: d.reason }),
            Some(Task::Evaluate(e)) => {
                let spec =
                    model_spec_from_proto(e.model.as_ref(), "evaluate.model").map_err(invalid)?;
                let round = round_ref(e.job_id, e.round, e.round_token, "evaluate")?;
                // 0 is proto3's "unset": fall back to a batch that fits any model here.
                let batch_size = if e.batch_size == 0 {
                    256
                } else {
                    e.batch_size as usize
                };
                Ok(Assignment::Evaluate(EvalAssignment {
                    round,
                    spec,
                    batch_size,
                }))
            }
            Some(Task::Train(t)) => train_from_proto(t).map(Assignment::Train),
        }
    }
}

/// A local-DP setting the worker can apply: a positive, finite bound and noise multiplier.
fn local_privacy_from_proto(p: pb::LocalPrivacy) -> Result<LocalPrivacy, WorkerError> {
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(p.clip_norm) || !positive(p.noise_multiplier) {
        return Err(invalid(format!(
            "train.local_privacy: clip_norm ({}) and noise_multiplier ({}) must be positive",
            p.clip_norm, p.noise_multiplier
        )));
    }
    Ok(LocalPrivacy {
        clip_norm: p.clip_norm,
        noise_multiplier: p.noise_multiplier,
    })
}

fn train_from_proto(t: pb::TrainTask) -> Result<TrainAssignment, WorkerError> {
    let spec = model_spec_from_proto(t.model.as_ref(), "train.model").map_err(invalid)?;
    let training = t
        .training
        .ok_or_else(|| invalid("train.training is missing"))?;
    let bn_stats = match t.bn_stats.as_str() {
        "" => BnStatsPolicy::default(),
        s => s
            .parse()
            .map_err(|e: String| invalid(format!("train.bn_stats: {e}")))?,
    };
    let upload = UploadPlan {
        compression: compression_from_proto(t.upload_encoding, t.upload_topk, "train.upload")
            .map_err(invalid)?,
        error_feedback: t.error_feedback,
    };
    let max_samples = match training.max_samples_per_round {
        0 => None,
        n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let assignment = TrainAssignment {
        round: round_ref(t.job_id, t.round, t.round_token, "train")?,
        spec,
        epochs: training.local_epochs as usize,
        batch_size: training.batch_size as usize,
        optimizer: OptimizerConfig::sgd(
            training.learning_rate,
            training.momentum,
            training.weight_decay,
        ),
        max_samples,
        seed: t.seed,
        bn_stats,
        deadline: Duration::from_secs(u64::from(t.deadline_seconds)),
        upload,
        proximal_mu: t.proximal_mu,
        local_privacy: t.local_privacy.map(local_privacy_from_proto).transpose()?,
    };
    assignment
        .settings(Augmentation::none())
        .validate()
        .map_err(|e| invalid(format!("train.training: {e}")))?;
    Ok(assignment)
}

#[cfg(test)]
mod tests {
    use fedcsg_ml::model::{Architecture, CsgMode};
    use fedcsg_wire::{TensorEncoding, TopK};

    use super::*;

    fn model() -> Option<pb::ModelSpec> {
        Some(pb::ModelSpec {
            architecture: "resnet20".into(),
            csg: "none".into(),
            in_channels: 1,
            num_classes: 10,
        })
    }

    fn train_task() -> pb::TrainTask {
        pb::TrainTask {
            job_id: "job-1".into(),
            round: 3,
            round_token: "tok".into(),
            model: model(),
            training: Some(pb::TrainingConfig {
                local_epochs: 2,
                batch_size: 32,
                learning_rate: 0.05,
                momentum: 0.9,
                weight_decay: 5e-4,
                max_samples_per_round: 100,
            }),
            seed: 11,
            bn_stats: "local".into(),
            deadline_seconds: 60,
            upload_encoding: pb::Encoding::Int8Scaled as i32,
            upload_topk: 0.25,
            error_feedback: true,
            proximal_mu: 0.01,
            local_privacy: None,
        }
    }

    fn parse(task: Task) -> Result<Assignment, WorkerError> {
        Assignment::from_proto(pb::GetTaskResponse { task: Some(task) })
    }

    /// A well-formed train task becomes training settings with every field carried over.
    #[test]
    fn train_task_is_carried_over() {
        let Assignment::Train(a) = parse(Task::Train(train_task())).unwrap() else {
            panic!("not a train task")
        };
        assert_eq!(
            a.round,
            RoundRef {
                job_id: "job-1".into(),
                round: 3,
                round_token: "tok".into()
            }
        );
        assert_eq!(a.spec.arch, "resnet20".parse::<Architecture>().unwrap());
        assert_eq!(a.spec.csg, CsgMode::Full);
        assert_eq!(
            (a.epochs, a.batch_size, a.max_samples, a.seed),
            (2, 32, Some(100), 11)
        );
        assert_eq!(a.optimizer, OptimizerConfig::sgd(0.05, 0.9, 5e-4));
        assert_eq!(a.bn_stats, BnStatsPolicy::Local);
        assert_eq!(a.deadline, Duration::from_secs(60));
        assert_eq!(a.proximal_mu, 0.01);
        assert_eq!(a.settings(Augmentation::none()).proximal_mu, 0.01);
        assert_eq!(
            a.upload,
            UploadPlan {
                compression: Compression {
                    encoding: TensorEncoding::Int8Scaled,
                    topk: Some(TopK::new(0.25).unwrap()),
                },
                error_feedback: true,
            }
        );
    }

    /// Missing or impossible fields are refused and named, not defaulted into nonsense.
    #[test]
    fn malformed_tasks_are_refused() {
        let cases: Vec<(pb::TrainTask, &str)> = vec![
            (
                pb::TrainTask {
                    model: None,
                    ..train_task()
                },
                "train.model is missing",
            ),
            (
                pb::TrainTask {
                    training: None,
                    ..train_task()
                },
                "train.training is missing",
            ),
            (
                pb::TrainTask {
                    bn_stats: "mean".into(),
                    ..train_task()
                },
                "train.bn_stats",
            ),
            (
                pb::TrainTask {
                    round_token: String::new(),
                    ..train_task()
                },
                "round_token is empty",
            ),
            (
                pb::TrainTask {
                    upload_encoding: 9,
                    ..train_task()
                },
                "train.upload_encoding: unknown encoding 9",
            ),
            (
                pb::TrainTask {
                    upload_topk: 1.5,
                    ..train_task()
                },
                "train.upload_topk",
            ),
            (
                pb::TrainTask {
                    proximal_mu: f64::NAN,
                    ..train_task()
                },
                "proximal mu",
            ),
            (
                pb::TrainTask {
                    local_privacy: Some(pb::LocalPrivacy {
                        clip_norm: 1.0,
                        noise_multiplier: 0.0,
                    }),
                    ..train_task()
                },
                "train.local_privacy",
            ),
            (
                pb::TrainTask {
                    training: Some(pb::TrainingConfig {
                        local_epochs: 0,
                        ..train_task().training.unwrap()
                    }),
                    ..train_task()
                },
                "epochs",
            ),
        ];
        for (task, why) in cases {
            let e = parse(Task::Train(task)).unwrap_err().to_string();
            assert!(e.contains(why), "expected {why:?} in {e:?}");
        }
        assert!(Assignment::from_proto(pb::GetTaskResponse { task: None }).is_err());
    }

    /// Wait hints are bounded to 50 ms..10 s; an empty bn_stats means the default (averaged).
    #[test]
    fn waits_are_bounded_and_defaults_apply() {
        let wait = |ms| match parse(Task::Wait(pb::WaitTask {
            retry_after_ms: ms,
            reason: String::new(),
        }))
        .unwrap()
        {
            Assignment::Wait { retry_after, .. } => retry_after,
            other => panic!("{other:?}"),
        };
        assert_eq!(wait(0), MIN_WAIT);
        assert_eq!(wait(700), Duration::from_millis(700));
        assert_eq!(wait(u32::MAX), MAX_WAIT);
        let Assignment::Train(a) = parse(Task::Train(pb::TrainTask {
            bn_stats: String::new(),
            ..train_task()
        }))
        .unwrap() else {
            panic!()
        };
        assert_eq!(a.bn_stats, BnStatsPolicy::Averaged);
        // A coordinator that says nothing about uploads gets exact f32 deltas.
        let Assignment::Train(a) = parse(Task::Train(pb::TrainTask {
            upload_encoding: 0,
            upload_topk: 0.0,
            error_feedback: false,
            ..train_task()
        }))
        .unwrap() else {
            panic!()
        };
        assert_eq!(a.upload, UploadPlan::default());
        assert!(a.upload.compression.is_exact());
    }
}
