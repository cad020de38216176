//! fedcsg.v1.OperatorService: create, list, get and cancel jobs, watch a job's rounds, list
//! workers, export a model. Requires the admin token when one is configured.

use std::pin::Pin;
use std::sync::Arc;

use fedcsg_core::secret::Secret;
use fedcsg_wire::convert::meta_to_proto;
use fedcsg_wire::encode_state;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_server::OperatorService;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::bearer;
use super::convert::{job_spec_from_proto, job_state_to_proto, job_to_proto, round_to_proto};
use super::paging::{self, within_budget};
use super::refusals::RefusalLog;
use super::worker_api::model_stream;
use crate::coordinator::{Coordinator, RoundsWanted, constant_time_eq};
use crate::error::ServerError;
use crate::ids::{JobId, WorkerId};
use crate::job::JobState;

pub struct OperatorApi {
    coordinator: Arc<Coordinator>,
    admin_token: Option<Secret>,
    refusals: Arc<RefusalLog>,
}

impl OperatorApi {
    pub fn new(
        coordinator: Arc<Coordinator>,
        admin_token: Option<Secret>,
        refusals: Arc<RefusalLog>,
    ) -> Self {
        Self {
            coordinator,
            admin_token,
            refusals,
        }
    }

    /// Checks the admin token (when one is configured); a refusal is logged.
    fn auth<T>(&self, method: &str, req: &Request<T>) -> Result<(), Status> {
        let Some(expected) = &self.admin_token else {
            return Ok(());
        };
        let refusal = match bearer(req.metadata()) {
            Some(t) if constant_time_eq(t, expected.expose()) => return Ok(()),
            Some(_) => ServerError::PermissionDenied {
                why: "this token may not use the operator API".into(),
            },
            None => ServerError::unauthenticated(
                "admin token missing: send authorization: Bearer <token>",
            ),
        };
        Err(self
            .refusals
            .note(method, req.remote_addr(), refusal.into()))
    }
}

/// The event that ends a watch on a job finished without a new round: round 0, the final state
/// and the job's message.
fn state_event(coordinator: &Coordinator, id: &JobId, state: JobState) -> pb::RoundEvent {
    pb::RoundEvent {
        job_id: id.to_string(),
        job_state: job_state_to_proto(state) as i32,
        job_message: coordinator
            .get_job(id, RoundsWanted::None)
            .map(|v| v.message)
            .unwrap_or_default(),
        ..Default::default()
    }
}

fn job_id(s: &str) -> Result<JobId, Status> {
    Ok(JobId::new(super::validate::id(s, "job_id")?))
}

/// A page token that names the last id of the previous page, or nothing.
fn optional_id(s: &str, field: &str) -> Result<Option<String>, Status> {
    Ok(super::validate::optional_id(s, field)?.map(str::to_owned))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RoundEvent, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ModelChunk, Status>> + Send>>;

#[tonic::async_trait]
impl OperatorService for OperatorApi {
    async fn create_job(
        &self,
        req: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        self.auth("CreateJob", &req)?;
        let spec = job_spec_from_proto(req.into_inner().spec)?;
        let coordinator = Arc::clone(&self.coordinator);
        // Building the initial model is CPU work: keep it off the async runtime.
        let view = tokio::task::spawn_blocking(move || coordinator.create_job(spec))
            .await
            .map_err(ServerError::from)??;
        Ok(Response::new(job_to_proto(&view)))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        self.auth("ListJobs", &req)?;
        let r = req.into_inner();
        let limit = paging::JOBS.resolve(r.page_size)?;
        let after = optional_id(&r.page_token, "page_token")?.map(JobId::new);
        let (views, more) = self.coordinator.list_jobs(after.as_ref(), limit);
        let mut jobs: Vec<pb::Job> = views.iter().map(job_to_proto).collect();
        let next_page_token = paging::cut_by_id(&mut jobs, more, |j| &j.job_id);
        Ok(Response::new(pb::ListJobsResponse {
            jobs,
            next_page_token,
        }))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        self.auth("GetJob", &req)?;
        let r = req.get_ref();
        let last = paging::LAST_ROUNDS.resolve(r.last_rounds.unwrap_or(0))?;
        let last = if r.last_rounds == Some(0) { 0 } else { last };
        let view = self
            .coordinator
            .get_job(&job_id(&r.job_id)?, RoundsWanted::Last(last))?;
        let mut job = job_to_proto(&view);
        // The newest rounds first into the budget.
        job.rounds.reverse();
        let kept = within_budget(&job.rounds);
        job.rounds.truncate(kept);
        job.rounds.reverse();
        Ok(Response::new(job))
    }

    async fn list_rounds(
        &self,
        req: Request<pb::ListRoundsRequest>,
    ) -> Result<Response<pb::ListRoundsResponse>, Status> {
        self.auth("ListRounds", &req)?;
        let r = req.into_inner();
        let id = job_id(&r.job_id)?;
        let limit = paging::ROUNDS.resolve(r.page_size)?;
        let first = paging::round_token(&r.page_token)?;
        let (records, state, completed) = self.coordinator.list_rounds(&id, first, limit)?;
        let mut rounds: Vec<pb::RoundEvent> = records
            .iter()
            .map(|rec| round_to_proto(id.as_str(), rec, state))
            .collect();
        rounds.truncate(within_budget(&rounds));
        let next_page_token = match rounds.last() {
            Some(last) if last.round < completed => paging::next_round_token(last.round + 1),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListRoundsResponse {
            rounds,
            next_page_token,
        }))
    }

    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        self.auth("CancelJob", &req)?;
        let view = self
            .coordinator
            .cancel_job(&job_id(&req.get_ref().job_id)?)?;
        Ok(Response::new(job_to_proto(&view)))
    }

    type WatchJobStream = EventStream;

    async fn watch_job(
        &self,
        req: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        self.auth("WatchJob", &req)?;
        let id = job_id(&req.get_ref().job_id)?;
        // Subscribe before the snapshot so no round falls between the two.
        let mut events = self.coordinator.subscribe();
        let view = self.coordinator.get_job(&id, RoundsWanted::All)?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let coordinator = Arc::clone(&self.coordinator);
        tokio::spawn(async move {
            let mut last = 0;
            for r in &view.records {
                last = r.round;
                if tx
                    .send(Ok(round_to_proto(id.as_str(), r, view.state)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if view.state.is_finished() {
                return;
            }
            loop {
                match events.recv().await {
                    Ok(e) if e.job == id => {
                        let mut sent = false;
                        if let Some(r) = e.record.filter(|r| r.round > last) {
                            last = r.round;
                            sent = true;
                            if tx
                                .send(Ok(round_to_proto(id.as_str(), &r, e.state)))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        if e.state.is_finished() {
                            if !sent {
                                // Failed or cancelled between rounds: say so, and why.
                                let _ = tx.send(Ok(state_event(&coordinator, &id, e.state))).await;
                            }
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(ServerError::WatcherLagged { missed: n }.into()))
                            .await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_workers(
        &self,
        req: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        self.auth("ListWorkers", &req)?;
        let r = req.into_inner();
        let limit = paging::WORKERS.resolve(r.page_size)?;
        let after = optional_id(&r.page_token, "page_token")?.map(WorkerId::new);
        let (views, more) = self.coordinator.list_workers(after.as_ref(), limit);
        let mut workers: Vec<pb::WorkerInfo> = views
            .into_iter()
            .map(|w| pb::WorkerInfo {
                worker_id: w.id.to_string(),
                worker_name: w.name,
                num_samples: w.num_samples,
                state: w.state.to_string(),
                seconds_since_heartbeat: w.seconds_since_heartbeat,
                rounds_contributed: w.rounds_contributed,
            })
            .collect();
        let next_page_token = paging::cut_by_id(&mut workers, more, |w| &w.worker_id);
        Ok(Response::new(pb::ListWorkersResponse {
            workers,
            next_page_token,
        }))
    }

    type ExportModelStream = ChunkStream;

    async fn export_model(
        &self,
        req: Request<pb::ExportModelRequest>,
    ) -> Result<Response<Self::ExportModelStream>, Status> {
        self.auth("ExportModel", &req)?;
        let id = job_id(&req.get_ref().job_id)?;
        let (round, state, sha) = self.coordinator.export(&id)?;
        let (metas, chunks) = encode_state(&state);
        let header = pb::ModelHeader {
            job_id: id.to_string(),
            round,
            round_token: String::new(),
            tensors: metas.iter().map(meta_to_proto).collect(),
            model_sha256: sha,
        };
        let chunks: Vec<bytes::Bytes> = chunks.into_iter().map(Into::into).collect();
        let idle = self.coordinator.transfers().limits().idle_timeout;
        Ok(Response::new(model_stream(header, &chunks, idle, ()).0))
    }
}
