//! The dashboard's JSON API: domain views of the coordinator as plain JSON (no protobuf).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{Dashboard, error};
use crate::coordinator::{JobView, RoundsWanted, WorkerView};
use crate::ids::{JobId, WorkerId};
use crate::job::RoundRecord;
use crate::metrics::job_state_name;

/// The most jobs and workers one overview lists (the oldest first; the operator API pages the
/// rest).
const OVERVIEW_LIMIT: usize = 500;
/// Rounds of a job's detail unless `last_rounds` says otherwise, and the most it may ask.
const DEFAULT_ROUNDS: usize = 200;
const MAX_ROUNDS: usize = 1000;

#[derive(Debug, Serialize)]
struct Overview {
    coordinator: CoordinatorInfo,
    jobs: Vec<JobSummary>,
    workers: Vec<WorkerSummary>,
}

#[derive(Debug, Serialize)]
struct CoordinatorInfo {
    version: &'static str,
    shutting_down: bool,
    token_required: bool,
}

#[derive(Debug, Serialize)]
struct JobSummary {
    id: String,
    name: String,
    state: &'static str,
    message: String,
    rounds_completed: u64,
    rounds_total: u64,
    model: String,
    csg: String,
    strategy: String,
    latest_test_accuracy: Option<f64>,
    exchanged_values: u64,
    full_filter_exchanged_values: u64,
}

impl From<&JobView> for JobSummary {
    fn from(j: &JobView) -> Self {
        Self {
            id: j.id.to_string(),
            name: j.spec.name.clone(),
            state: job_state_name(j.state),
            message: j.message.clone(),
            rounds_completed: j.rounds_completed,
            rounds_total: j.spec.rounds,
            model: j.spec.model.arch.to_string(),
            csg: j.spec.model.csg.to_string(),
            strategy: j.spec.strategy.to_string(),
            latest_test_accuracy: j.latest_test_accuracy,
            exchanged_values: j.exchanged_values,
            full_filter_exchanged_values: j.full_filter_exchanged_values,
        }
    }
}

#[derive(Debug, Serialize)]
struct WorkerSummary {
    id: String,
    name: String,
    state: &'static str,
    num_samples: u64,
    seconds_since_heartbeat: f64,
    rounds_contributed: u64,
}

impl From<WorkerView> for WorkerSummary {
    fn from(w: WorkerView) -> Self {
        Self {
            id: w.id.to_string(),
            name: w.name,
            state: w.state,
            num_samples: w.num_samples,
            seconds_since_heartbeat: w.seconds_since_heartbeat,
            rounds_contributed: w.rounds_contributed,
        }
    }
}

/// `GET /api/overview`: the coordinator, its jobs and its workers.
pub(super) async fn overview(State(d): State<Dashboard>) -> Response {
    let (jobs, _) = d.coordinator.list_jobs(None::<&JobId>, OVERVIEW_LIMIT);
    let (workers, _) = d
        .coordinator
        .list_workers(None::<&WorkerId>, OVERVIEW_LIMIT);
    Json(Overview {
        coordinator: CoordinatorInfo {
            version: env!("CARGO_PKG_VERSION"),
            shutting_down: d.coordinator.is_shutting_down(),
            token_required: d.admin_token.is_some(),
        },
        jobs: jobs.iter().map(JobSummary::from).collect(),
        workers: workers.into_iter().map(WorkerSummary::from).collect(),
    })
    .into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct JobQuery {
    last_rounds: Option<usize>,
}

#[derive(Debug, Serialize)]
struct JobDetail {
    job: JobSummary,
    rounds: Vec<RoundRecord>,
}

/// `GET /api/jobs/{id}?last_rounds=N`: a job and its last N committed rounds, oldest first.
pub(super) async fn job(
    State(d): State<Dashboard>,
    Path(id): Path<String>,
    Query(query): Query<JobQuery>,
) -> Response {
    let last = query.last_rounds.unwrap_or(DEFAULT_ROUNDS);
    if last > MAX_ROUNDS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("last_rounds must be at most {MAX_ROUNDS}"),
        );
    }
    match d
        .coordinator
        .get_job(&JobId::new(id), RoundsWanted::Last(last))
    {
        Ok(view) => Json(JobDetail {
            job: JobSummary::from(&view),
            rounds: view.records,
        })
        .into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
    }
}
