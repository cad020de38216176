//! The coordinator's Prometheus metrics: what happened (counters of rounds, updates, bytes),
//! how long it took (histograms of rounds, aggregation, RPCs, store commits) and what is there
//! now (gauges of jobs and workers by state, refreshed at each scrape). Served on
//! `--metrics-listen` by [`crate::http`]; README lists every name.
//!
//! The figures are kept whether or not anything scrapes them: an update is a few atomic adds.

mod rpc_timing;

pub use rpc_timing::RpcTimingLayer;

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tonic::Code;

use crate::job::{JobState, RoundRecord};

/// Every RPC the coordinator serves, by service: the values of the `service` and `method`
/// labels (anything else is counted as `other`, so a client cannot grow the label set).
pub const RPCS: &[(&str, &[&str])] = &[
    (
        "fedcsg.v1.WorkerService",
        &[
            "Join",
            "Heartbeat",
            "GetTask",
            "DownloadModel",
            "UploadUpdate",
            "ReportEvaluation",
            "Leave",
        ],
    ),
    (
        "fedcsg.v1.OperatorService",
        &[
            "CreateJob",
            "ListJobs",
            "GetJob",
            "ListRounds",
            "CancelJob",
            "WatchJob",
            "ListWorkers",
            "ExportModel",
        ],
    ),
    ("grpc.health.v1.Health", &["Check", "Watch"]),
    (
        "grpc.reflection.v1.ServerReflection",
        &["ServerReflectionInfo"],
    ),
];

/// The states a worker is reported in (see [`crate::coordinator::WorkerView::state`]).
pub const WORKER_STATES: &[&str] = &["idle", "training", "evaluating", "gone", "left"];

const JOB_STATES: [JobState; 5] = [
    JobState::Pending,
    JobState::Running,
    JobState::Succeeded,
    JobState::Failed,
    JobState::Cancelled,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    service: &'static str,
    method: &'static str,
}

/// Jobs and workers by state, counted under one short look at the state.
#[derive(Debug, Default, Clone)]
pub struct Census {
    pub jobs: Vec<(JobState, usize)>,
    pub workers: Vec<(&'static str, usize)>,
    pub upload_buffered_bytes: u64,
}

/// The coordinator's metrics and the registry that exposes them.
#[derive(Debug)]
pub struct CoordinatorMetrics {
    registry: Registry,
    rounds_committed: Counter,
    round_retries: Counter,
    round_participants: Histogram,
    round_duration: Histogram,
    aggregation_duration: Histogram,
    round_bytes_up: Counter,
    round_bytes_down: Counter,
    round_full_filter_bytes_up: Counter,
    updates_accepted: Counter,
    updates_rejected: Family<ReasonLabels, Counter>,
    rpc_duration: Family<RpcLabels, Histogram, fn() -> Histogram>,
    store_commit_duration: Histogram,
    jobs: Family<StateLabels, Gauge>,
    workers: Family<StateLabels, Gauge>,
    upload_buffered_bytes: Gauge,
}

fn rpc_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for CoordinatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CoordinatorMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fedcsg");
        let m = Self {
            rounds_committed: Counter::default(),
            round_retries: Counter::default(),
            // 1 to 4096 participants.
            round_participants: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            // 0.1 s to about 27 min.
            round_duration: Histogram::new(exponential_buckets(0.1, 2.0, 15)),
            // 1 ms to about 33 s.
            aggregation_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            round_bytes_up: Counter::default(),
            round_bytes_down: Counter::default(),
            round_full_filter_bytes_up: Counter::default(),
            updates_accepted: Counter::default(),
            updates_rejected: Family::default(),
            rpc_duration: Family::new_with_constructor(rpc_histogram),
            // 0.1 ms to about 3 s.
            store_commit_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            jobs: Family::default(),
            workers: Family::default(),
            upload_buffered_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "rounds_committed",
            "Rounds committed (made durable and current), over all jobs",
            m.rounds_committed.clone(),
        );
        registry.register(
            "round_retries",
            "Rounds started again (too few updates by the deadline, or a close or commit that failed)",
            m.round_retries.clone(),
        );
        registry.register(
            "round_participants",
            "Workers whose updates a committed round aggregated",
            m.round_participants.clone(),
        );
        registry.register_with_unit(
            "round_duration",
            "Committed rounds from their start to their commit",
            Unit::Seconds,
            m.round_duration.clone(),
        );
        registry.register_with_unit(
            "aggregation_duration",
            "Coordinator time aggregating a committed round: folding updates plus the strategy's close step",
            Unit::Seconds,
            m.aggregation_duration.clone(),
        );
        registry.register_with_unit(
            "round_up",
            "Update bytes workers uploaded in committed rounds (the rounds' bytes_up)",
            Unit::Bytes,
            m.round_bytes_up.clone(),
        );
        registry.register_with_unit(
            "round_down",
            "Global-model bytes workers downloaded in committed rounds (the rounds' bytes_down)",
            Unit::Bytes,
            m.round_bytes_down.clone(),
        );
        registry.register_with_unit(
            "round_full_filter_f32_up",
            "What the committed rounds' uploads would have been as plain-f32 full-filter updates",
            Unit::Bytes,
            m.round_full_filter_bytes_up.clone(),
        );
        registry.register(
            "updates_accepted",
            "Updates accepted into a round (resent duplicates not counted)",
            m.updates_accepted.clone(),
        );
        registry.register(
            "updates_rejected",
            "Uploads refused, by reason (the gRPC status code, snake case)",
            m.updates_rejected.clone(),
        );
        registry.register_with_unit(
            "rpc_duration",
            "gRPC calls from their arrival until the response starts (a streamed upload: until all of it is read), by method",
            Unit::Seconds,
            m.rpc_duration.clone(),
        );
        registry.register_with_unit(
            "store_commit_duration",
            "Durable writes to the state store (SQLite transactions, fsync included)",
            Unit::Seconds,
            m.store_commit_duration.clone(),
        );
        registry.register("jobs", "Jobs by state", m.jobs.clone());
        registry.register("workers", "Known workers by state", m.workers.clone());
        registry.register_with_unit(
            "upload_buffered",
            "Upload bytes held by the coordinator now (received, not yet decoded)",
            Unit::Bytes,
            m.upload_buffered_bytes.clone(),
        );
        Self { registry, ..m }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A committed round's figures.
    pub fn round_committed(&self, record: &RoundRecord) {
        self.rounds_committed.inc();
        self.round_participants
            .observe(record.participants.len() as f64);
        self.round_duration.observe(record.seconds);
        self.aggregation_duration
            .observe(record.aggregation_seconds);
        self.round_bytes_up.inc_by(record.bytes_up);
        self.round_bytes_down.inc_by(record.bytes_down);
        self.round_full_filter_bytes_up
            .inc_by(record.full_filter_f32_bytes_up);
    }

    pub fn round_retried(&self) {
        self.round_retries.inc();
    }

    pub fn update_accepted(&self) {
        self.updates_accepted.inc();
    }

    /// An upload refused with `code`.
    pub fn update_rejected(&self, code: Code) {
        self.updates_rejected
            .get_or_create(&ReasonLabels {
                reason: code_name(code),
            })
            .inc();
    }

    pub fn store_committed(&self, took: Duration) {
        self.store_commit_duration.observe(took.as_secs_f64());
    }

    /// The labels of the RPC at `path` (`/package.Service/Method`), or `other`.
    pub fn rpc_labels(path: &str) -> RpcLabels {
        let known = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .and_then(|(service, method)| {
                let (service, methods) = RPCS.iter().find(|(s, _)| *s == service)?;
                let method = methods.iter().find(|m| **m == method)?;
                Some(RpcLabels { service, method })
            });
        known.unwrap_or(RpcLabels {
            service: "other",
            method: "other",
        })
    }

    pub fn rpc_finished(&self, labels: &RpcLabels, took: Duration) {
        self.rpc_duration
            .get_or_create(labels)
            .observe(took.as_secs_f64());
    }

    /// Sets the gauges from a fresh census (called before each scrape).
    pub fn refresh(&self, census: &Census) {
        for state in JOB_STATES {
            let count = census
                .jobs
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.jobs
                .get_or_create(&StateLabels {
                    state: job_state_name(state),
                })
                .set(count as i64);
        }
        for state in WORKER_STATES {
            let count = census
                .workers
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n);
            self.workers
                .get_or_create(&StateLabels { state })
                .set(count as i64);
        }
        self.upload_buffered_bytes
            .set(census.upload_buffered_bytes.min(i64::MAX as u64) as i64);
    }
}

/// A job state's lower-case name, as the metrics and the dashboard show it.
pub fn job_state_name(state: JobState) -> &'static str {
    match state {
        JobState::Pending => "pending",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

/// A gRPC status code in snake case (`invalid_argument`), the `reason` of a rejected update.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn text(metrics: &CoordinatorMetrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, metrics.registry()).unwrap();
        text
    }

    /// The RPC list names exactly the methods the fedcsg.v1 proto declares.
    #[test]
    fn the_rpc_list_matches_the_proto() {
        let proto = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../proto/fedcsg/v1/fedcsg.proto"
        ))
        .unwrap();
        let declared: BTreeSet<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .map(|l| l.split('(').next().unwrap().trim())
            .collect();
        let listed: BTreeSet<&str> = RPCS
            .iter()
            .filter(|(s, _)| s.starts_with("fedcsg.v1."))
            .flat_map(|(_, m)| m.iter().copied())
            .collect();
        assert_eq!(declared, listed);
    }

    #[test]
    fn unknown_paths_are_labelled_other() {
        let known = CoordinatorMetrics::rpc_labels("/fedcsg.v1.WorkerService/Heartbeat");
        assert_eq!(
            (known.service, known.method),
            ("fedcsg.v1.WorkerService", "Heartbeat")
        );
        for path in [
            "/fedcsg.v1.WorkerService/Nope",
            "/x.Y/Heartbeat",
            "/",
            "",
            "Heartbeat",
        ] {
            let l = CoordinatorMetrics::rpc_labels(path);
            assert_eq!((l.service, l.method), ("other", "other"), "{path}");
        }
    }

    /// A committed round moves the counters by its own figures; names follow the conventions.
    #[test]
    fn a_committed_round_is_counted() {
        let m = CoordinatorMetrics::new();
        let record = RoundRecord {
            round: 1,
            sampled: 3,
            participants: vec!["a".into(), "b".into()],
            train_loss: 1.0,
            test_accuracy: None,
            test_loss: None,
            federated_accuracy: None,
            bytes_down: 700,
            bytes_up: 500,
            full_filter_f32_bytes_up: 2000,
            full_filter_f32_bytes_down: 2000,
            seconds: 1.5,
            model_sha256: String::new(),
            workers: vec![],
            clip_norm: None,
            clipped_updates: 0,
            aggregation_seconds: 0.01,
            selected: None,
            learning_rate: None,
            client_evaluation: None,
            privacy: None,
        };
        m.round_committed(&record);
        m.round_committed(&record);
        m.update_rejected(Code::InvalidArgument);
        m.refresh(&Census {
            jobs: vec![(JobState::Running, 2)],
            workers: vec![("idle", 3)],
            upload_buffered_bytes: 10,
        });
        let t = text(&m);
        for line in [
            "fedcsg_rounds_committed_total 2",
            "fedcsg_round_up_bytes_total 1000",
            "fedcsg_round_down_bytes_total 1400",
            "fedcsg_round_full_filter_f32_up_bytes_total 4000",
            "fedcsg_round_duration_seconds_count 2",
            "fedcsg_round_participants_sum 4.0",
            "fedcsg_updates_rejected_total{reason=\"invalid_argument\"} 1",
            "fedcsg_jobs{state=\"running\"} 2",
            "fedcsg_jobs{state=\"failed\"} 0",
            "fedcsg_workers{state=\"idle\"} 3",
            "fedcsg_upload_buffered_bytes 10",
        ] {
            assert!(t.lines().any(|l| l == line), "no line {line:?} in:\n{t}");
        }
    }
}
