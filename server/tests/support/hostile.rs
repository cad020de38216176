//! What the hostile-request tests share: the job and join requests they start from, the
//! refusal checker, a snapshot of what a refusal must leave unchanged, update messages, and a
//! coordinator with a job in its first training round.

use std::time::Duration;

use fedcsg_core::tensor::StateDict;
use fedcsg_wire::convert::meta_to_proto;
use fedcsg_wire::encode_state;
use fedcsg_wire::proto::PROTOCOL_VERSION;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use fedcsg_wire::proto::v1::worker_service_client::WorkerServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::{authed, export, start};

pub fn join_request(name: &str) -> pb::JoinRequest {
    pb::JoinRequest {
        protocol_version: PROTOCOL_VERSION,
        worker_name: name.into(),
        num_samples: 100,
        in_channels: 1,
        num_classes: 10,
        data_description: "bundled 1/1".into(),
        previous_session_token: String::new(),
    }
}

pub fn spec() -> pb::JobSpec {
    pb::JobSpec {
        federated_evaluation: true,
        ..super::job_spec(
            "hostile-requests",
            super::JobShape {
                rounds: 2,
                min_workers: 1,
                deadline_seconds: 600,
                max_samples: 0,
                seed: 3,
            },
        )
    }
}

/// Counts the refusals and checks each one.
#[derive(Default)]
pub struct Refusals(pub usize);

impl Refusals {
    pub fn check<T: std::fmt::Debug>(
        &mut self,
        case: &str,
        result: Result<T, Status>,
        code: Code,
        needle: &str,
    ) {
        let err = result.expect_err(case);
        assert_eq!(err.code(), code, "{case}: {}", err.message());
        assert!(
            err.message().contains(needle),
            "{case}: message {:?} lacks {needle:?}",
            err.message()
        );
        self.0 += 1;
    }
}

/// The jobs (id, state, rounds), the workers (id, name, state) and the global model's hash.
pub async fn snapshot(op: &mut OperatorServiceClient<Channel>, job: &str) -> Snapshot {
    let jobs = op
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let workers = op
        .list_workers(pb::ListWorkersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .workers;
    (
        jobs.into_iter()
            .map(|j| (j.job_id, j.state, j.rounds_completed))
            .collect(),
        workers
            .into_iter()
            .map(|w| (w.worker_id, w.worker_name, w.state))
            .collect(),
        export(op, job).await.fingerprint(),
    )
}

pub fn header_of(
    state: &StateDict,
    worker: &str,
    job: &str,
    round: u64,
    token: &str,
) -> (pb::UpdateHeader, Vec<Vec<u8>>) {
    let (metas, chunks) = encode_state(state);
    let header = pb::UpdateHeader {
        worker_id: worker.into(),
        job_id: job.into(),
        round,
        round_token: token.into(),
        num_samples: 50,
        train_loss: 1.0,
        train_seconds: 1.0,
        tensors: metas.iter().map(meta_to_proto).collect(),
        kind: pb::UpdateKind::Weights as i32,
    };
    (header, chunks)
}

pub fn messages(header: Option<pb::UpdateHeader>, chunks: Vec<Vec<u8>>) -> Vec<pb::UpdateChunk> {
    let mut msgs: Vec<pb::UpdateChunk> = header
        .into_iter()
        .map(|h| pb::UpdateChunk {
            part: Some(pb::update_chunk::Part::Header(h)),
        })
        .collect();
    msgs.extend(chunks.into_iter().map(|c| pb::UpdateChunk {
        part: Some(pb::update_chunk::Part::Data(c)),
    }));
    msgs
}

/// What [`snapshot`] returns.
pub type Snapshot = (
    Vec<(String, i32, u64)>,
    Vec<(String, String, String)>,
    String,
);

/// A coordinator with a job in its first round: worker "one" holds the round's training task,
/// worker "late" joined too late to be sampled. `before` is the snapshot every refusal must
/// leave as it is.
pub struct RoundInTraining {
    pub op: OperatorServiceClient<Channel>,
    pub w: WorkerServiceClient<Channel>,
    pub job: String,
    /// Worker one's id and session token.
    pub wid: String,
    pub tok: String,
    pub train: pb::TrainTask,
    pub late: pb::JoinResponse,
    pub before: Snapshot,
    /// Stops the coordinator when dropped.
    pub stop: tokio::sync::oneshot::Sender<()>,
}

pub async fn round_in_training() -> RoundInTraining {
    let (url, stop) = start().await;
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut op = OperatorServiceClient::new(channel.clone());
    let mut w = WorkerServiceClient::new(channel);
    let create = |s: Option<pb::JobSpec>| pb::CreateJobRequest { spec: s };

    // A job and a worker in its first round; a second worker that joined too late to be sampled.
    let job = op
        .create_job(create(Some(spec())))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let one = w.join(join_request("one")).await.unwrap().into_inner();
    let (wid, tok) = (one.worker_id.clone(), one.session_token.clone());
    let train = loop {
        match w
            .get_task(authed(
                pb::GetTaskRequest {
                    worker_id: wid.clone(),
                    wait_ms: 0,
                },
                &tok,
            ))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap()
        {
            pb::get_task_response::Task::Train(t) => break t,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let late = w.join(join_request("late")).await.unwrap().into_inner();
    let before = snapshot(&mut op, &job).await;
    RoundInTraining {
        op,
        w,
        job,
        wid,
        tok,
        train,
        late,
        before,
        stop,
    }
}
