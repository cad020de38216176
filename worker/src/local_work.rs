//! The CPU side of a task: the models kept per job, and training or evaluating one round on the
//! local partition. Everything here is synchronous; the task loop calls it through
//! [`on_blocking_thread`] so heartbeats and RPCs keep running meanwhile.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use fedcsg_core::tensor::StateDict;
use fedcsg_ml::model::{Model, ModelSpec};
use fedcsg_ml::ops::ConvBackend;
use fedcsg_ml::train::{EpochReport, EvalReport, evaluate, train};
use tracing::{Instrument, Span, debug};

use crate::assignment::{EvalAssignment, TrainAssignment};
use crate::error::WorkerError;
use crate::local_data::LocalData;
use crate::transfer::UpdateSummary;

/// How many jobs' models a worker keeps. A model is kept across rounds so that state the
/// federation does not exchange (local batch-norm statistics) survives; a few jobs at once is
/// plenty, and an evicted model is rebuilt from the next download.
pub const MODELS_KEPT: usize = 4;

/// The models of the most recent jobs, newest first.
#[derive(Debug)]
pub struct ModelCache {
    backend: ConvBackend,
    entries: VecDeque<(String, Arc<Model>)>,
}

impl ModelCache {
    pub fn new(backend: ConvBackend) -> Self {
        Self {
            backend,
            entries: VecDeque::new(),
        }
    }

    /// The model of `job_id` if it was built with `spec`; otherwise a new one (built on a
    /// blocking thread), which replaces any older model of that job.
    pub async fn model_for(
        &mut self,
        job_id: &str,
        spec: ModelSpec,
    ) -> Result<Arc<Model>, WorkerError> {
        if let Some(i) = self.entries.iter().position(|(job, _)| job == job_id) {
            let (job, model) = self.entries.remove(i).expect("position is in range");
            if *model.spec() == spec {
                self.entries.push_front((job, Arc::clone(&model)));
                return Ok(model);
            }
        }
        let backend = self.backend;
        // The initial weights are overwritten by the downloaded global state; a seeded slice
        // generator is fixed by the spec itself (its seed is part of the csg spelling).
        let model = on_blocking_thread("model construction", move || {
            Ok(Arc::new(Model::new(&spec, 0, backend)?))
        })
        .await?;
        debug!(job_id, %spec, "built a model for the job");
        self.entries
            .push_front((job_id.to_string(), Arc::clone(&model)));
        self.entries.truncate(MODELS_KEPT);
        Ok(model)
    }

    pub fn forget(&mut self, job_id: &str) {
        self.entries.retain(|(job, _)| job != job_id);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Runs `work` on tokio's blocking pool inside the current span; a panic becomes an error.
pub async fn on_blocking_thread<T, F>(what: &'static str, work: F) -> Result<T, WorkerError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, WorkerError> + Send + 'static,
{
    let span = Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .instrument(Span::current())
        .await
        .map_err(|e| WorkerError::Panicked {
            what,
            why: e.to_string(),
        })?
}

/// The result of one round of local training.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The tensors this round exchanges (per the task's batch-norm policy).
    pub update: StateDict,
    pub summary: UpdateSummary,
    pub epochs: Vec<EpochReport>,
    /// Seconds of each training step (forward, backward, optimiser), in order.
    pub step_seconds: Vec<f64>,
    /// Images trained on (samples times epochs).
    pub images: u64,
}

fn check_classes(model: &Model, data: &LocalData) -> Result<(), WorkerError> {
    let (model_classes, data_classes) = (model.spec().num_classes, data.train.num_classes());
    if model_classes < data_classes {
        return Err(WorkerError::Protocol {
            what: "task",
            why: format!(
                "the model has {model_classes} classes but the local data has {data_classes}"
            ),
        });
    }
    Ok(())
}

/// Loads `global` into `model`, trains on the local partition (or its seeded subset) and returns
/// the exchanged state. `should_stop` is polled before every step.
pub fn train_round(
    model: &Model,
    data: &LocalData,
    task: &TrainAssignment,
    global: &StateDict,
    should_stop: &dyn Fn() -> bool,
) -> Result<TrainOutcome, WorkerError> {
    check_classes(model, data)?;
    model.load_state(global)?;
    let subset;
    let samples = match task.max_samples {
        Some(max) if max < data.train.len() => {
            subset = data.train.seeded_subset(max, task.seed);
            &subset
        }
        _ => &data.train,
    };
    let start = Instant::now();
    let mut step_seconds = Vec::new();
    let mut last_step = start;
    let mut on_step = |p: fedcsg_ml::train::StepProgress| {
        let now = Instant::now();
        step_seconds.push(now.duration_since(last_step).as_secs_f64());
        last_step = now;
        if p.step.is_multiple_of(50) {
            debug!(
                epoch = p.epoch,
                step = p.step,
                steps = p.steps_per_epoch,
                loss = p.loss,
                "training"
            );
        }
    };
    let epochs = train(
        model,
        samples,
        &data.normalization,
        &task.settings(data.augmentation),
        &mut on_step,
        should_stop,
    )?;
    let train_seconds = start.elapsed().as_secs_f64();
    let train_loss = epochs.last().map_or(f64::NAN, |e| e.train_loss);
    let images = samples.len() as u64 * epochs.len() as u64;
    let update = model.exchanged_state(task.bn_stats)?;
    Ok(TrainOutcome {
        update,
        summary: UpdateSummary {
            num_samples: samples.len() as u64,
            train_loss,
            train_seconds,
        },
        epochs,
        step_seconds,
        images,
    })
}

/// Loads `global` into `model` and evaluates it on the local test partition. State the global
/// model lacks (local batch-norm statistics) is this worker's own.
pub fn evaluate_round(
    model: &Model,
    data: &LocalData,
    task: &EvalAssignment,
    global: &StateDict,
) -> Result<EvalReport, WorkerError> {
    check_classes(model, data)?;
    model.load_state(global)?;
    Ok(evaluate(
        model,
        &data.test,
        &data.normalization,
        task.batch_size,
    )?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fedcsg_ml::model::BnStatsPolicy;
    use fedcsg_ml::optim::OptimizerConfig;
    use fedcsg_ml::train::TrainError;

    use super::*;
    use crate::assignment::RoundRef;
    use crate::config::WorkerConfig;

    fn spec() -> ModelSpec {
        ModelSpec::new("resnet20".parse().unwrap(), "none".parse().unwrap(), 1, 10)
    }

    fn data() -> LocalData {
        let mut c = WorkerConfig::for_coordinator("http://127.0.0.1:1").unwrap();
        c.num_partitions = 10;
        LocalData::load(&c).unwrap()
    }

    fn task(bn_stats: BnStatsPolicy) -> TrainAssignment {
        TrainAssignment {
            round: RoundRef {
                job_id: "j".into(),
                round: 1,
                round_token: "t".into(),
            },
            spec: spec(),
            epochs: 1,
            batch_size: 16,
            optimizer: OptimizerConfig::sgd(0.05, 0.9, 0.0),
            max_samples: Some(48),
            seed: 3,
            bn_stats,
            deadline: Duration::from_secs(60),
            upload: Default::default(),
            proximal_mu: 0.0,
            local_privacy: None,
        }
    }

    /// The L2 distance of the trained tensors of `update` from `global`.
    fn distance(update: &StateDict, global: &StateDict) -> f64 {
        update
            .tensors()
            .iter()
            .filter(|t| !t.name.contains("running_"))
            .flat_map(|t| {
                let g = global.get(&t.name).unwrap();
                t.values
                    .iter()
                    .zip(&g.values)
                    .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            })
            .sum::<f64>()
            .sqrt()
    }

    /// FedProx: the task's μ reaches the training step, and a large μ keeps the round's model
    /// closer to the global model than plain local training from the same seed.
    #[test]
    fn the_proximal_term_keeps_the_update_near_the_global_model() {
        let data = data();
        let global = Model::new(&spec(), 2, ConvBackend::Fast)
            .unwrap()
            .state()
            .unwrap();
        let moved = |mu: f64| {
            let model = Model::new(&spec(), 1, ConvBackend::Fast).unwrap();
            let task = TrainAssignment {
                proximal_mu: mu,
                epochs: 2,
                ..task(BnStatsPolicy::Averaged)
            };
            let out = train_round(&model, &data, &task, &global, &|| false).unwrap();
            distance(&out.update, &global)
        };
        let (free, held) = (moved(0.0), moved(5.0));
        assert!(free > 0.0);
        assert!(
            held < 0.8 * free,
            "mu = 5 moved {held}, mu = 0 moved {free}"
        );
    }

    /// A round trains on the seeded subset, changes the weights, and returns exactly the
    /// exchanged tensors: batch-norm statistics only when they are averaged.
    #[test]
    fn a_round_returns_the_exchanged_update() {
        let (model, data) = (Model::new(&spec(), 1, ConvBackend::Fast).unwrap(), data());
        let global = Model::new(&spec(), 2, ConvBackend::Fast)
            .unwrap()
            .state()
            .unwrap();
        let out = train_round(
            &model,
            &data,
            &task(BnStatsPolicy::Averaged),
            &global,
            &|| false,
        )
        .unwrap();
        assert_eq!(out.summary.num_samples, 48);
        assert!(out.summary.train_loss.is_finite() && out.summary.train_loss > 0.0);
        assert_eq!(out.epochs.len(), 1);
        assert_eq!(
            out.update.len(),
            global.len(),
            "averaged: every variable travels"
        );
        assert_ne!(
            out.update.fingerprint(),
            global.fingerprint(),
            "training must change the weights"
        );

        let local = train_round(&model, &data, &task(BnStatsPolicy::Local), &global, &|| {
            false
        })
        .unwrap();
        assert!(local.update.len() < global.len());
        assert!(
            local
                .update
                .tensors()
                .iter()
                .all(|t| !t.name.ends_with("running_mean") && !t.name.ends_with("running_var"))
        );

        let eval = EvalAssignment {
            round: task(BnStatsPolicy::Local).round,
            spec: spec(),
            batch_size: 64,
        };
        let report = evaluate_round(&model, &data, &eval, &global).unwrap();
        assert_eq!(report.samples, data.test.len());
    }

    /// A stop request (abandon or shutdown) ends training before the next step.
    #[test]
    fn a_stop_request_cancels_training() {
        let (model, data) = (Model::new(&spec(), 1, ConvBackend::Fast).unwrap(), data());
        let global = model.state().unwrap();
        let err = train_round(
            &model,
            &data,
            &task(BnStatsPolicy::Averaged),
            &global,
            &|| true,
        )
        .unwrap_err();
        assert!(
            matches!(err, WorkerError::Train(TrainError::Cancelled)),
            "{err}"
        );
    }

    /// The cache hands back the same model for the same job and spec, rebuilds on a new spec,
    /// and keeps only the newest few jobs.
    #[tokio::test]
    async fn models_are_kept_per_job() {
        let mut cache = ModelCache::new(ConvBackend::Fast);
        let a = cache.model_for("a", spec()).await.unwrap();
        assert!(Arc::ptr_eq(
            &a,
            &cache.model_for("a", spec()).await.unwrap()
        ));
        let other = ModelSpec::new("resnet20".parse().unwrap(), "none".parse().unwrap(), 3, 10);
        assert!(!Arc::ptr_eq(
            &a,
            &cache.model_for("a", other).await.unwrap()
        ));
        for job in ["b", "c", "d", "e"] {
            cache.model_for(job, spec()).await.unwrap();
        }
        assert_eq!(cache.len(), MODELS_KEPT);
        assert!(
            !cache.entries.iter().any(|(job, _)| job == "a"),
            "the oldest job is evicted"
        );
        cache.forget("e");
        assert_eq!(cache.len(), MODELS_KEPT - 1);
    }
}
