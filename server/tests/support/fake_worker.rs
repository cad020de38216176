//! A hand-driven worker over real gRPC (join, heartbeat, tasks, download, upload) for tests
//! that need exact control over what a worker sends and when.

use fedcsg_core::tensor::StateDict;
use fedcsg_wire::convert::meta_to_proto;
use fedcsg_wire::encode_state;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use fedcsg_wire::proto::v1::worker_service_client::WorkerServiceClient;
use std::time::Duration;
use tonic::transport::Channel;

use super::hostile::{join_request, messages};
use super::{assemble, authed};

/// A hand-driven worker over real gRPC.
pub struct FakeWorker {
    pub client: WorkerServiceClient<Channel>,
    pub id: String,
    pub token: String,
}

impl FakeWorker {
    pub async fn join(url: &str, name: &str) -> Self {
        Self::join_with(url, join_request(name)).await.unwrap()
    }

    /// Joins with exactly `request`; the coordinator's refusal as it came.
    pub async fn join_with(url: &str, request: pb::JoinRequest) -> Result<Self, tonic::Status> {
        let mut client = WorkerServiceClient::new(
            Channel::from_shared(url.to_string())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
        let j = client.join(request).await?.into_inner();
        Ok(Self {
            client,
            id: j.worker_id,
            token: j.session_token,
        })
    }

    /// Heartbeats, returning the refusal if any.
    pub async fn try_heartbeat(&mut self) -> Result<(), tonic::Status> {
        self.client
            .heartbeat(authed(
                pb::HeartbeatRequest {
                    worker_id: self.id.clone(),
                    busy_with_round_token: String::new(),
                },
                &self.token,
            ))
            .await
            .map(|_| ())
    }

    /// One GetTask call.
    pub async fn task(&mut self) -> Result<pb::GetTaskResponse, tonic::Status> {
        self.client
            .get_task(authed(
                pb::GetTaskRequest {
                    worker_id: self.id.clone(),
                    wait_ms: 0,
                },
                &self.token,
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn leave(&mut self) {
        self.client
            .leave(authed(
                pb::LeaveRequest {
                    worker_id: self.id.clone(),
                },
                &self.token,
            ))
            .await
            .unwrap();
    }

    pub async fn heartbeat(&mut self, busy: &str) {
        self.client
            .heartbeat(authed(
                pb::HeartbeatRequest {
                    worker_id: self.id.clone(),
                    busy_with_round_token: busy.into(),
                },
                &self.token,
            ))
            .await
            .unwrap();
    }

    pub async fn train_task(&mut self) -> pb::TrainTask {
        loop {
            let t = self.task().await.unwrap();
            if let Some(pb::get_task_response::Task::Train(t)) = t.task {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn download(&mut self, t: &pb::TrainTask) -> StateDict {
        let req = authed(
            pb::DownloadModelRequest {
                worker_id: self.id.clone(),
                job_id: t.job_id.clone(),
                round_token: t.round_token.clone(),
            },
            &self.token,
        );
        assemble(self.client.download_model(req).await.unwrap().into_inner()).await
    }

    pub async fn upload(
        &mut self,
        t: &pb::TrainTask,
        state: &StateDict,
    ) -> Result<pb::UploadUpdateResponse, tonic::Status> {
        let (metas, chunks) = encode_state(state);
        let header = pb::UpdateHeader {
            worker_id: self.id.clone(),
            job_id: t.job_id.clone(),
            round: t.round,
            round_token: t.round_token.clone(),
            num_samples: 32,
            train_loss: 2.0,
            train_seconds: 1.0,
            tensors: metas.iter().map(meta_to_proto).collect(),
            kind: pb::UpdateKind::Weights as i32,
        };
        let msgs = messages(Some(header), chunks);
        self.client
            .upload_update(authed(tokio_stream::iter(msgs), &self.token))
            .await
            .map(|r| r.into_inner())
    }
}

pub async fn workers(op: &mut OperatorServiceClient<Channel>) -> Vec<pb::WorkerInfo> {
    op.list_workers(pb::ListWorkersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .workers
}
