//! fedcsg.v1.WorkerService: join, heartbeat, tasks, model download, update upload, evaluation
//! reports, leave. Every call after Join authenticates with the worker's session token.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fedcsg_wire::convert::{meta_to_proto, metas_from_proto, update_kind_from_proto};
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::worker_service_server::WorkerService;
use prost::Message;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, info_span, instrument, warn};

use super::bearer;
use super::convert::task_to_proto;
use super::refusals::RefusalLog;
use super::validate::{self, MAX_DESCRIPTION_LEN, MAX_NAME_LEN};
use crate::coordinator::transfers::Direction;
use crate::coordinator::{Coordinator, JoinInfo, UpdateHeader};
use crate::error::ServerError;
use crate::ids::{JobId, RoundToken, WorkerId};

pub struct WorkerApi {
    coordinator: Arc<Coordinator>,
    refusals: Arc<RefusalLog>,
}

impl WorkerApi {
    pub fn new(coordinator: Arc<Coordinator>, refusals: Arc<RefusalLog>) -> Self {
        Self {
            coordinator,
            refusals,
        }
    }

    /// Receives, checks and folds in one update (counted as accepted or rejected by the caller).
    async fn receive_update(
        &self,
        req: Request<Streaming<pb::UpdateChunk>>,
    ) -> Result<Response<pb::UploadUpdateResponse>, Status> {
        let token = bearer(req.metadata()).map(str::to_owned);
        let peer = req.remote_addr();
        let mut stream = req.into_inner();
        let transfers = Arc::clone(self.coordinator.transfers());
        let idle = transfers.limits().idle_timeout;
        let first = next_within(&mut stream, idle).await?.ok_or_else(|| {
            ServerError::invalid("upload is empty: the first message must be the header")
        })?;
        let mut bytes_up = first.encoded_len() as u64;
        let Some(pb::update_chunk::Part::Header(h)) = first.part else {
            return Err(ServerError::invalid("the first upload message must be the header").into());
        };
        let worker = WorkerId::new(required(&h.worker_id, "header.worker_id")?);
        self.coordinator
            .authenticate_worker(&worker, token.as_deref())
            .map_err(|e| self.refusals.note("UploadUpdate", peer, e.into()))?;
        let _slot = transfers.open(&worker, Direction::Upload)?;
        let limits = self.coordinator.settings().wire_limits;
        let header = UpdateHeader {
            worker: worker.clone(),
            job: JobId::new(required(&h.job_id, "header.job_id")?),
            round: h.round,
            token: RoundToken::new(required(&h.round_token, "header.round_token")?),
            num_samples: h.num_samples,
            train_loss: validate::non_negative(h.train_loss, "header.train_loss")?,
            train_seconds: validate::non_negative(h.train_seconds, "header.train_seconds")?,
            kind: update_kind_from_proto(h.kind).map_err(ServerError::from)?,
            tensors: metas_from_proto(&h.tensors, &limits).map_err(ServerError::from)?,
        };
        let span =
            info_span!("upload", job_id = %header.job, round = header.round, worker_id = %worker);
        async move {
            let mut pending = self.coordinator.begin_upload(&header)?;
            // Within the fleet-wide budget of upload bytes, or refused at once (the worker sends
            // it again shortly).
            let reservation = transfers.reserve_upload(pending.assembler.expected_bytes())?;
            let mut buffered = transfers.buffer();
            while let Some(msg) = next_within(&mut stream, idle).await? {
                bytes_up += msg.encoded_len() as u64;
                match msg.part {
                    // An empty chunk carries nothing and would only keep the stream open.
                    Some(pb::update_chunk::Part::Data(d)) if d.is_empty() => {
                        return Err(ServerError::invalid("empty data chunk").into());
                    }
                    Some(pb::update_chunk::Part::Data(d)) => {
                        pending.assembler.push(&d).map_err(ServerError::from)?;
                        buffered.add(d.len() as u64);
                    }
                    _ => {
                        return Err(
                            ServerError::invalid("only data chunks may follow the header").into(),
                        );
                    }
                }
            }
            // Checksums, decoding and the delta's addition are CPU work: off the runtime, and
            // no more at once than the decode permits allow.
            let decoding = transfers.decode_permit().await;
            let update = tokio::task::spawn_blocking(move || {
                let update = pending.finish();
                drop((buffered, reservation));
                update
            })
            .await
            .map_err(ServerError::from)??;
            drop(decoding);
            let duplicate = self
                .coordinator
                .finish_upload(&header, update, bytes_up)
                .inspect_err(|e| warn!(error = %e, "update refused"))?;
            Ok(Response::new(pb::UploadUpdateResponse {
                accepted: true,
                duplicate,
                bytes_received: bytes_up,
            }))
        }
        .instrument(span)
        .await
    }

    /// Authenticates a worker's call with its session token; a refusal is logged.
    fn auth<T>(&self, method: &str, req: &Request<T>, worker_id: &str) -> Result<WorkerId, Status> {
        let id = WorkerId::new(validate::id(worker_id, "worker_id")?);
        self.coordinator
            .authenticate_worker(&id, bearer(req.metadata()))
            .map_err(|e| self.refusals.note(method, req.remote_addr(), e.into()))?;
        Ok(id)
    }
}

fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    Ok(validate::id(value, field)?)
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ModelChunk, Status>> + Send>>;

/// The data bytes of one model-download message.
const DOWNLOAD_MESSAGE_BYTES: usize = 64 * 1024;

/// Streams a model as a header and data chunks; returns the stream and its encoded size. The
/// chunks are shared, not copied. `hold` (a transfer slot) lives as long as the stream; a reader
/// that takes no chunk for `idle` is cut off.
pub fn model_stream(
    header: pb::ModelHeader,
    chunks: &[Bytes],
    idle: Duration,
    hold: impl Send + 'static,
) -> (ChunkStream, u64) {
    let mut messages = Vec::with_capacity(chunks.len() + 1);
    messages.push(pb::ModelChunk {
        part: Some(pb::model_chunk::Part::Header(header)),
    });
    // Slices of the shared chunks, not copies: each message is encoded into the stream's send
    // buffer, so small messages keep a thousand concurrent downloads to a small buffer each.
    messages.extend(chunks.iter().flat_map(|c| {
        (0..c.len())
            .step_by(DOWNLOAD_MESSAGE_BYTES)
            .map(|at| pb::ModelChunk {
                part: Some(pb::model_chunk::Part::Data(
                    c.slice(at..(at + DOWNLOAD_MESSAGE_BYTES).min(c.len())),
                )),
            })
    }));
    let bytes: u64 = messages.iter().map(|m| m.encoded_len() as u64).sum();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let _hold = hold;
        for m in messages {
            match tokio::time::timeout(idle, tx.send(Ok(m))).await {
                Ok(Ok(())) => {}
                // The peer went away.
                Ok(Err(_)) => break,
                Err(_) => {
                    let cut = ServerError::TransferIdle {
                        what: "the model download",
                        idle,
                    };
                    warn!(error = %cut, "model download cut off");
                    // The channel is full: the status goes out if the reader ever reads again.
                    let _ = tx.try_send(Err(cut.into()));
                    break;
                }
            }
        }
    });
    (Box::pin(ReceiverStream::new(rx)), bytes)
}

/// The next message of an upload, or the error that cuts it off after `idle` without one.
async fn next_within<T>(stream: &mut Streaming<T>, idle: Duration) -> Result<Option<T>, Status> {
    match tokio::time::timeout(idle, stream.next()).await {
        Ok(next) => next.transpose(),
        Err(_) => Err(ServerError::TransferIdle {
            what: "the upload",
            idle,
        }
        .into()),
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    #[instrument(skip_all, fields(name = %req.get_ref().worker_name))]
    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let token = bearer(req.metadata()).map(str::to_owned);
        let peer = req.remote_addr();
        let refused = |e: ServerError| self.refusals.note("Join", peer, e.into());
        // The token first: an unauthenticated caller learns nothing about the other rules.
        self.coordinator
            .check_enrollment(token.as_deref())
            .map_err(refused)?;
        let r = req.into_inner();
        validate::text(&r.worker_name, "worker_name", MAX_NAME_LEN)?;
        validate::text(&r.data_description, "data_description", MAX_DESCRIPTION_LEN)?;
        let previous = validate::optional_id(&r.previous_session_token, "previous_session_token")?;
        let joined = self
            .coordinator
            .join(
                JoinInfo {
                    protocol_version: r.protocol_version,
                    previous_session_token: previous.map(str::to_owned),
                    name: r.worker_name.clone(),
                    num_samples: r.num_samples,
                    in_channels: r.in_channels as usize,
                    num_classes: r.num_classes as usize,
                },
                token.as_deref(),
            )
            .map_err(refused)?;
        Ok(Response::new(pb::JoinResponse {
            worker_id: joined.worker_id.to_string(),
            session_token: joined.session_token,
            heartbeat_interval_ms: joined.heartbeat_interval.as_millis() as u32,
            protocol_version: fedcsg_wire::proto::PROTOCOL_VERSION,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let id = self.auth("Heartbeat", &req, &req.get_ref().worker_id)?;
        let busy = validate::optional_id(
            &req.get_ref().busy_with_round_token,
            "busy_with_round_token",
        )?;
        let abandon = self.coordinator.heartbeat(&id, busy)?;
        Ok(Response::new(pb::HeartbeatResponse {
            abandon_current_task: abandon,
        }))
    }

    async fn get_task(
        &self,
        req: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let id = self.auth("GetTask", &req, &req.get_ref().worker_id)?;
        let wait = std::time::Duration::from_millis(req.get_ref().wait_ms.into());
        Ok(Response::new(task_to_proto(
            self.coordinator.wait_for_task(&id, wait).await?,
        )))
    }

    type DownloadModelStream = ChunkStream;

    async fn download_model(
        &self,
        req: Request<pb::DownloadModelRequest>,
    ) -> Result<Response<Self::DownloadModelStream>, Status> {
        let id = self.auth("DownloadModel", &req, &req.get_ref().worker_id)?;
        let r = req.into_inner();
        let job = JobId::new(required(&r.job_id, "job_id")?);
        let token = required(&r.round_token, "round_token")?;
        let slot = self
            .coordinator
            .transfers()
            .open(&id, Direction::Download)?;
        let source = self.coordinator.model_for_download(&id, &job, token)?;
        let encoded = source.encoded().await?;
        let header = pb::ModelHeader {
            job_id: job.to_string(),
            round: source.round,
            round_token: token.to_string(),
            tensors: encoded.metas.iter().map(meta_to_proto).collect(),
            model_sha256: source.model_sha256,
        };
        let transfers = self.coordinator.transfers();
        let idle = transfers.limits().idle_timeout;
        // A bounded number of downloads send at once; this one waits its turn here.
        let sending = transfers.send_permit().await;
        let (stream, bytes) = model_stream(header, &encoded.chunks, idle, (slot, sending));
        self.coordinator.record_download(&job, token, &id, bytes);
        Ok(Response::new(stream))
    }

    async fn upload_update(
        &self,
        req: Request<Streaming<pb::UpdateChunk>>,
    ) -> Result<Response<pb::UploadUpdateResponse>, Status> {
        let result = self.receive_update(req).await;
        let metrics = self.coordinator.metrics();
        match &result {
            Ok(response) if !response.get_ref().duplicate => metrics.update_accepted(),
            Ok(_) => {}
            Err(status) => metrics.update_rejected(status.code()),
        }
        result
    }

    async fn report_evaluation(
        &self,
        req: Request<pb::ReportEvaluationRequest>,
    ) -> Result<Response<pb::ReportEvaluationResponse>, Status> {
        let id = self.auth("ReportEvaluation", &req, &req.get_ref().worker_id)?;
        let r = req.into_inner();
        let job = JobId::new(required(&r.job_id, "job_id")?);
        validate::non_negative(r.loss_sum, "loss_sum")?;
        self.coordinator.report_evaluation(
            &id,
            &job,
            required(&r.round_token, "round_token")?,
            r.num_samples,
            r.correct,
            r.loss_sum,
        )?;
        Ok(Response::new(pb::ReportEvaluationResponse {}))
    }

    async fn leave(
        &self,
        req: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        let id = self.auth("Leave", &req, &req.get_ref().worker_id)?;
        self.coordinator.leave(&id);
        Ok(Response::new(pb::LeaveResponse {}))
    }
}
