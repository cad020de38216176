//! Conversions between the coordinator's domain types and fedcsg.v1 messages.

use fedcsg_ml::model::BnStatsPolicy;
use fedcsg_wire::convert::{
    encoding_setting_from_proto, encoding_to_proto, model_spec_from_proto, model_spec_to_proto,
    topk_setting_from_proto,
};
use fedcsg_wire::proto::v1 as pb;

use crate::coordinator::{JobView, Task};
use crate::error::ServerError;
use crate::job::{Clipping, Exchange, JobSpec, JobState, LocalTraining, RoundRecord, Strategy};
use crate::strategy::{StrategyParams, clipping};
use fedcsg_core::privacy::DifferentialPrivacy;

pub fn job_spec_from_proto(spec: Option<pb::JobSpec>) -> Result<JobSpec, ServerError> {
    let bad = |why: String| ServerError::InvalidArgument { why };
    let s = spec.ok_or_else(|| bad("spec is missing".into()))?;
    let model = model_spec_from_proto(s.model.as_ref(), "spec.model").map_err(bad)?;
    let t = s
        .training
        .ok_or_else(|| bad("spec.training is missing".into()))?;
    let bn_stats: BnStatsPolicy = if s.bn_stats.is_empty() {
        BnStatsPolicy::default()
    } else {
        s.bn_stats
            .parse()
            .map_err(|e| bad(format!("spec.bn_stats: {e}")))?
    };
    super::validate::text(&s.name, "spec.name", super::validate::MAX_NAME_LEN)?;
    let exchange = Exchange {
        upload: encoding_setting_from_proto(s.upload_encoding, "spec.upload_encoding")
            .map_err(bad)?,
        download: encoding_setting_from_proto(s.download_encoding, "spec.download_encoding")
            .map_err(bad)?,
        upload_topk: topk_setting_from_proto(s.upload_topk, "spec.upload_topk")
            .map_err(bad)?
            .map(|k| k.fraction()),
        error_feedback: !s.disable_error_feedback,
    };
    let spec = JobSpec {
        name: s.name,
        model,
        training: LocalTraining {
            local_epochs: t.local_epochs as usize,
            batch_size: t.batch_size as usize,
            learning_rate: t.learning_rate,
            momentum: t.momentum,
            weight_decay: t.weight_decay,
            max_samples_per_round: t.max_samples_per_round,
        },
        strategy: Strategy::from_parts(&s.strategy, &strategy_params_from_proto(s.strategy_params))
            .map_err(|e| bad(format!("spec.strategy: {e}")))?,
        rounds: s.rounds as u64,
        fraction: s.fraction,
        min_workers: s.min_workers as usize,
        round_deadline_seconds: s.round_deadline_seconds as u64,
        seed: s.seed,
        bn_stats,
        federated_evaluation: s.federated_evaluation,
        exchange,
        clipping: s.clipping.map(clipping_from_proto),
        max_weight_share: s.max_weight_share,
        lr_schedule: s
            .lr_schedule
            .parse()
            .map_err(|e| bad(format!("spec.lr_schedule: {e}")))?,
        quorum: s.quorum.map(|q| q as usize),
        max_round_retries: s
            .max_round_retries
            .unwrap_or(JobSpec::DEFAULT_MAX_ROUND_RETRIES),
        privacy: s.privacy.map(privacy_from_proto).transpose().map_err(bad)?,
    };
    spec.validate().map_err(bad)?;
    Ok(spec)
}

fn privacy_from_proto(p: pb::DifferentialPrivacy) -> Result<DifferentialPrivacy, String> {
    Ok(DifferentialPrivacy {
        mode: p.mode.parse()?,
        noise_multiplier: p.noise_multiplier,
        clip_norm: p.clip_norm,
        target_quantile: p.target_quantile,
        delta: p.delta.unwrap_or(DifferentialPrivacy::DEFAULT_DELTA),
        target_epsilon: p.target_epsilon,
    })
}

fn privacy_to_proto(p: &DifferentialPrivacy) -> pb::DifferentialPrivacy {
    pb::DifferentialPrivacy {
        mode: p.mode.name().into(),
        noise_multiplier: p.noise_multiplier,
        clip_norm: p.clip_norm,
        target_quantile: p.target_quantile,
        delta: Some(p.delta),
        target_epsilon: p.target_epsilon,
    }
}

fn strategy_params_from_proto(p: Option<pb::StrategyParams>) -> StrategyParams {
    let p = p.unwrap_or_default();
    StrategyParams {
        server_learning_rate: p.server_learning_rate,
        server_momentum: p.server_momentum,
        beta1: p.beta1,
        beta2: p.beta2,
        tau: p.tau,
        proximal_mu: p.proximal_mu,
        trim_fraction: p.trim_fraction,
        krum_byzantine: p.krum_byzantine,
        krum_selected: p.krum_selected,
    }
}

fn strategy_params_to_proto(p: StrategyParams) -> pb::StrategyParams {
    pb::StrategyParams {
        server_learning_rate: p.server_learning_rate,
        server_momentum: p.server_momentum,
        beta1: p.beta1,
        beta2: p.beta2,
        tau: p.tau,
        proximal_mu: p.proximal_mu,
        trim_fraction: p.trim_fraction,
        krum_byzantine: p.krum_byzantine,
        krum_selected: p.krum_selected,
    }
}

/// A bound with a target quantile is adaptive; validated with the spec.
fn clipping_from_proto(c: pb::UpdateClipping) -> Clipping {
    match c.target_quantile {
        None => Clipping::Fixed { norm: c.norm },
        Some(q) => Clipping::Adaptive {
            initial_norm: c.norm,
            target_quantile: q,
            learning_rate: c
                .learning_rate
                .unwrap_or(clipping::Clipping::DEFAULT_LEARNING_RATE),
        },
    }
}

fn clipping_to_proto(c: Clipping) -> pb::UpdateClipping {
    match c {
        Clipping::Fixed { norm } => pb::UpdateClipping {
            norm,
            target_quantile: None,
            learning_rate: None,
        },
        Clipping::Adaptive {
            initial_norm,
            target_quantile,
            learning_rate,
        } => pb::UpdateClipping {
            norm: initial_norm,
            target_quantile: Some(target_quantile),
            learning_rate: Some(learning_rate),
        },
    }
}

fn training_to_proto(t: &LocalTraining) -> pb::TrainingConfig {
    pb::TrainingConfig {
        local_epochs: t.local_epochs as u32,
        batch_size: t.batch_size as u32,
        learning_rate: t.learning_rate,
        momentum: t.momentum,
        weight_decay: t.weight_decay,
        max_samples_per_round: t.max_samples_per_round,
    }
}

pub fn job_spec_to_proto(s: &JobSpec) -> pb::JobSpec {
    pb::JobSpec {
        name: s.name.clone(),
        model: Some(model_spec_to_proto(&s.model)),
        training: Some(training_to_proto(&s.training)),
        strategy: s.strategy.to_string(),
        rounds: s.rounds as u32,
        fraction: s.fraction,
        min_workers: s.min_workers as u32,
        round_deadline_seconds: s.round_deadline_seconds as u32,
        seed: s.seed,
        bn_stats: s.bn_stats.to_string(),
        federated_evaluation: s.federated_evaluation,
        upload_encoding: encoding_to_proto(s.exchange.upload) as i32,
        download_encoding: encoding_to_proto(s.exchange.download) as i32,
        upload_topk: s.exchange.upload_topk.unwrap_or(0.0),
        disable_error_feedback: !s.exchange.error_feedback,
        strategy_params: Some(strategy_params_to_proto(s.strategy.params())),
        clipping: s.clipping.map(clipping_to_proto),
        max_weight_share: s.max_weight_share,
        lr_schedule: s.lr_schedule.to_string(),
        quorum: Some(s.quorum() as u32),
        max_round_retries: Some(s.max_round_retries),
        privacy: s.privacy.as_ref().map(privacy_to_proto),
    }
}

pub fn job_state_to_proto(s: JobState) -> pb::JobState {
    match s {
        JobState::Pending => pb::JobState::Pending,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

pub fn round_to_proto(job: &str, r: &RoundRecord, state: JobState) -> pb::RoundEvent {
    pb::RoundEvent {
        job_id: job.to_string(),
        round: r.round,
        participants: r.participants.len() as u32,
        sampled: r.sampled as u32,
        train_loss: r.train_loss,
        test_accuracy: r.test_accuracy.unwrap_or(-1.0),
        test_loss: r.test_loss.unwrap_or(-1.0),
        federated_accuracy: r.federated_accuracy.unwrap_or(-1.0),
        bytes_down: r.bytes_down,
        bytes_up: r.bytes_up,
        full_filter_f32_bytes_up: r.full_filter_f32_bytes_up,
        full_filter_f32_bytes_down: r.full_filter_f32_bytes_down,
        seconds: r.seconds,
        participant_ids: r.participants.clone(),
        job_state: job_state_to_proto(state) as i32,
        model_sha256: r.model_sha256.clone(),
        workers: r
            .workers
            .iter()
            .map(|w| pb::WorkerRoundStats {
                worker_id: w.worker_id.clone(),
                num_samples: w.num_samples,
                train_loss: w.train_loss,
                bytes_up: w.bytes_up,
                bytes_down: w.bytes_down,
                train_seconds: w.train_seconds,
                full_filter_f32_bytes: w.full_filter_f32_bytes,
            })
            .collect(),
        clip_norm: r.clip_norm.unwrap_or(0.0),
        clipped_updates: r.clipped_updates as u32,
        aggregation_seconds: r.aggregation_seconds,
        selected_ids: r.selected.clone().unwrap_or_default(),
        learning_rate: r.learning_rate.unwrap_or(0.0),
        client_evaluation: r.client_evaluation.map(|e| pb::ClientEvaluation {
            clients: e.clients as u32,
            weighted_accuracy: e.weighted_accuracy,
            mean_accuracy: e.mean_accuracy,
            worst_accuracy: e.worst_accuracy,
            p10_accuracy: e.p10_accuracy,
            loss: e.loss,
        }),
        job_message: String::new(),
        privacy: r.privacy.map(|p| pb::RoundPrivacy {
            mode: p.mode.name().into(),
            noise_multiplier: p.noise_multiplier,
            sample_rate: p.sample_rate,
            clip_norm: p.clip_norm,
            epsilon: p.epsilon,
            delta: p.delta,
        }),
    }
}

pub fn job_to_proto(v: &JobView) -> pb::Job {
    pb::Job {
        job_id: v.id.to_string(),
        spec: Some(job_spec_to_proto(&v.spec)),
        state: job_state_to_proto(v.state) as i32,
        rounds_completed: v.rounds_completed,
        message: v.message.clone(),
        rounds: v
            .records
            .iter()
            .map(|r| round_to_proto(v.id.as_str(), r, v.state))
            .collect(),
        exchanged_values: v.exchanged_values,
        full_filter_exchanged_values: v.full_filter_exchanged_values,
    }
}

pub fn task_to_proto(t: Task) -> pb::GetTaskResponse {
    use pb::get_task_response::Task as T;
    let task = match t {
        Task::Train(t) => T::Train(pb::TrainTask {
            job_id: t.job.to_string(),
            round: t.round,
            round_token: t.token.to_string(),
            model: Some(model_spec_to_proto(&t.model)),
            training: Some(training_to_proto(&t.training)),
            seed: t.seed,
            bn_stats: t.bn_stats.to_string(),
            deadline_seconds: t.deadline_seconds.min(u32::MAX as u64) as u32,
            upload_encoding: encoding_to_proto(t.upload.encoding) as i32,
            upload_topk: t.upload.topk.map_or(0.0, |k| k.fraction()),
            error_feedback: t.error_feedback,
            proximal_mu: t.proximal_mu,
            local_privacy: t.local_privacy.map(|l| pb::LocalPrivacy {
                clip_norm: l.clip_norm,
                noise_multiplier: l.noise_multiplier,
            }),
        }),
        Task::Evaluate {
            job,
            round,
            token,
            model,
            batch_size,
        } => T::Evaluate(pb::EvaluateTask {
            job_id: job.to_string(),
            round,
            round_token: token.to_string(),
            model: Some(model_spec_to_proto(&model)),
            batch_size: batch_size as u32,
        }),
        Task::Wait {
            retry_after,
            reason,
        } => T::Wait(pb::WaitTask {
            retry_after_ms: retry_after.as_millis() as u32,
            reason,
        }),
        Task::Done { reason } => T::Done(pb::DoneTask { reason }),
    };
    pb::GetTaskResponse { task: Some(task) }
}
