//! The worker's Prometheus metrics, served on `--metrics-listen` (off by default): local
//! training speed, bytes each way, rounds, joins and reconnects. README lists every name.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::local_work::TrainOutcome;

#[derive(Debug)]
pub struct WorkerMetrics {
    registry: Arc<Registry>,
    rounds_trained: Counter,
    evaluations: Counter,
    train_images_per_second: Gauge<f64, AtomicU64>,
    train_step_duration: Histogram,
    upload_bytes: Counter,
    download_bytes: Counter,
    joins: Counter,
    reconnects: Counter,
    task_failures: Counter,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fedcsg_worker");
        let rounds_trained = Counter::default();
        let evaluations = Counter::default();
        let train_images_per_second = Gauge::<f64, AtomicU64>::default();
        // 1 ms to about 33 s.
        let train_step_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let upload_bytes = Counter::default();
        let download_bytes = Counter::default();
        let joins = Counter::default();
        let reconnects = Counter::default();
        let task_failures = Counter::default();
        registry.register(
            "rounds_trained",
            "Training tasks finished (an update was produced)",
            rounds_trained.clone(),
        );
        registry.register(
            "evaluations",
            "Federated evaluation reports sent",
            evaluations.clone(),
        );
        registry.register(
            "train_images_per_second",
            "Local training speed of the last round: images (samples times epochs) per second",
            train_images_per_second.clone(),
        );
        registry.register_with_unit(
            "train_step_duration",
            "One local training step (forward, backward and optimiser on one batch)",
            Unit::Seconds,
            train_step_duration.clone(),
        );
        registry.register_with_unit(
            "upload",
            "Update bytes sent to the coordinator (as the coordinator counts them)",
            Unit::Bytes,
            upload_bytes.clone(),
        );
        registry.register_with_unit(
            "download",
            "Global-model bytes received from the coordinator",
            Unit::Bytes,
            download_bytes.clone(),
        );
        registry.register(
            "joins",
            "Sessions opened with the coordinator (more than one: it rejoined)",
            joins.clone(),
        );
        registry.register(
            "reconnects",
            "Times the worker lost the coordinator (unreachable, or it forgot the session) and retried",
            reconnects.clone(),
        );
        registry.register(
            "task_failures",
            "Tasks that failed for another reason (the next task is asked for)",
            task_failures.clone(),
        );
        Self {
            registry: Arc::new(registry),
            rounds_trained,
            evaluations,
            train_images_per_second,
            train_step_duration,
            upload_bytes,
            download_bytes,
            joins,
            reconnects,
            task_failures,
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// A finished training task: speed and step times.
    pub fn trained(&self, outcome: &TrainOutcome) {
        self.rounds_trained.inc();
        for s in &outcome.step_seconds {
            self.train_step_duration.observe(*s);
        }
        if outcome.summary.train_seconds > 0.0 {
            self.train_images_per_second
                .set(outcome.images as f64 / outcome.summary.train_seconds);
        }
    }

    pub fn evaluated(&self) {
        self.evaluations.inc();
    }

    pub fn uploaded(&self, bytes: u64) {
        self.upload_bytes.inc_by(bytes);
    }

    pub fn downloaded(&self, bytes: u64) {
        self.download_bytes.inc_by(bytes);
    }

    pub fn joined(&self) {
        self.joins.inc();
    }

    pub fn reconnecting(&self) {
        self.reconnects.inc();
    }

    pub fn task_failed(&self) {
        self.task_failures.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::UpdateSummary;

    #[test]
    fn a_training_round_sets_speed_and_steps() {
        let m = WorkerMetrics::new();
        m.trained(&TrainOutcome {
            update: Default::default(),
            summary: UpdateSummary {
                num_samples: 100,
                train_loss: 1.0,
                train_seconds: 2.0,
            },
            epochs: vec![],
            step_seconds: vec![0.5, 0.7, 0.8],
            images: 200,
        });
        m.uploaded(1234);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, m.registry()).unwrap();
        for line in [
            "fedcsg_worker_rounds_trained_total 1",
            "fedcsg_worker_train_images_per_second 100.0",
            "fedcsg_worker_train_step_duration_seconds_count 3",
            "fedcsg_worker_upload_bytes_total 1234",
            "fedcsg_worker_reconnects_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
