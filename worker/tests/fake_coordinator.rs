//! The worker's task loop against a scripted in-process coordinator on 127.0.0.1:0, over real
//! gRPC: join retries, bearer tokens, re-join after the coordinator forgets the worker, a full
//! train / evaluate / done cycle, compressed downloads and uploads, abandoned tasks, refused joins
//! and shutdown mid-training.
//! (The real coordinator is exercised by the server crate's end-to-end tests.)

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fedcsg_core::tensor::StateDict;
use fedcsg_ml::model::{Model, ModelSpec};
use fedcsg_ml::ops::ConvBackend;
use fedcsg_wire::convert::{meta_to_proto, metas_from_proto};
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::get_task_response::Task;
use fedcsg_wire::proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use fedcsg_wire::proto::v1::{model_chunk, update_chunk};
use fedcsg_wire::{
    Accepted, Compression, ModelAssembler, TensorEncoding, WireLimits, encode_state_with,
};
use fedcsg_worker::{WorkerConfig, WorkerError};
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status, Streaming};

/// One scripted answer to GetTask.
enum Step {
    Answer(Box<Task>),
    Fail(Code),
}

#[derive(Default)]
struct Script {
    /// UNAVAILABLE answers before a join succeeds.
    join_failures: u32,
    /// Refuse every join with this code.
    refuse_join: Option<Code>,
    /// GetTask answers in order; `Done` once they run out.
    tasks: VecDeque<Step>,
    /// Heartbeats from a busy worker are answered with "abandon".
    abandon: bool,
    /// The encoding of the global model served.
    download: TensorEncoding,
}

/// What the fake coordinator saw.
#[derive(Default, Debug)]
struct Seen {
    join_attempts: u32,
    joins: u32,
    join_auth: Vec<String>,
    /// `authorization` of every call after the join.
    session_auth: Vec<String>,
    busy_tokens: Vec<String>,
    uploads: Vec<(pb::UpdateHeader, StateDict)>,
    evaluations: Vec<pb::ReportEvaluationRequest>,
    leaves: u32,
}

struct Fake {
    script: Mutex<Script>,
    seen: Arc<Mutex<Seen>>,
    global: StateDict,
}

#[derive(Clone)]
struct FakeCoordinator(Arc<Fake>);

fn auth<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

impl FakeCoordinator {
    fn session_call<T>(&self, request: &Request<T>) {
        self.0.seen.lock().unwrap().session_auth.push(auth(request));
    }
}

#[tonic::async_trait]
impl WorkerService for FakeCoordinator {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let mut seen = self.0.seen.lock().unwrap();
        seen.join_attempts += 1;
        seen.join_auth.push(auth(&request));
        let mut script = self.0.script.lock().unwrap();
        if let Some(code) = script.refuse_join {
            return Err(Status::new(code, "protocol version 99 expected"));
        }
        if script.join_failures > 0 {
            script.join_failures -= 1;
            return Err(Status::unavailable("starting up"));
        }
        let join = request.into_inner();
        assert_eq!(join.protocol_version, fedcsg_wire::proto::PROTOCOL_VERSION);
        assert_eq!(
            (join.num_samples, join.in_channels, join.num_classes),
            (600, 1, 10),
            "a tenth of the bundled set"
        );
        seen.joins += 1;
        Ok(Response::new(pb::JoinResponse {
            worker_id: "w-1".into(),
            session_token: format!("session-{}", seen.joins),
            heartbeat_interval_ms: 100,
            protocol_version: fedcsg_wire::proto::PROTOCOL_VERSION,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.session_call(&request);
        let token = request.into_inner().busy_with_round_token;
        let abandon = self.0.script.lock().unwrap().abandon && !token.is_empty();
        self.0.seen.lock().unwrap().busy_tokens.push(token);
        Ok(Response::new(pb::HeartbeatResponse {
            abandon_current_task: abandon,
        }))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        self.session_call(&request);
        let step = self.0.script.lock().unwrap().tasks.pop_front();
        match step {
            Some(Step::Answer(task)) => {
                Ok(Response::new(pb::GetTaskResponse { task: Some(*task) }))
            }
            Some(Step::Fail(code)) => Err(Status::new(code, "scripted failure")),
            None => Ok(Response::new(pb::GetTaskResponse {
                task: Some(Task::Done(pb::DoneTask {
                    reason: "script over".into(),
                })),
            })),
        }
    }

    type DownloadModelStream = Pin<Box<dyn Stream<Item = Result<pb::ModelChunk, Status>> + Send>>;

    async fn download_model(
        &self,
        request: Request<pb::DownloadModelRequest>,
    ) -> Result<Response<Self::DownloadModelStream>, Status> {
        self.session_call(&request);
        let request = request.into_inner();
        let download = Compression::dense(self.0.script.lock().unwrap().download);
        let encoded = encode_state_with(&self.0.global, download, 7).unwrap();
        let (metas, data) = (encoded.metas, encoded.chunks);
        let header = pb::ModelHeader {
            job_id: request.job_id,
            round: 1,
            round_token: request.round_token,
            tensors: metas.iter().map(meta_to_proto).collect(),
            model_sha256: self.0.global.fingerprint(),
        };
        let parts = std::iter::once(model_chunk::Part::Header(header))
            .chain(data.into_iter().map(|d| model_chunk::Part::Data(d.into())));
        let chunks: Vec<Result<pb::ModelChunk, Status>> = parts
            .map(|p| Ok(pb::ModelChunk { part: Some(p) }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn upload_update(
        &self,
        request: Request<Streaming<pb::UpdateChunk>>,
    ) -> Result<Response<pb::UploadUpdateResponse>, Status> {
        self.session_call(&request);
        let mut stream = request.into_inner();
        let Some(pb::UpdateChunk {
            part: Some(update_chunk::Part::Header(header)),
        }) = stream.message().await?
        else {
            return Err(Status::invalid_argument("header first"));
        };
        let limits = WireLimits::default();
        let metas = metas_from_proto(&header.tensors, &limits)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut assembler = ModelAssembler::accepting(metas, limits, Accepted::ANY)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        while let Some(chunk) = stream.message().await? {
            let Some(update_chunk::Part::Data(data)) = chunk.part else {
                return Err(Status::invalid_argument("data after the header"));
            };
            assembler
                .push(&data)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let state = assembler
            .finish()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.0.seen.lock().unwrap().uploads.push((header, state));
        Ok(Response::new(pb::UploadUpdateResponse {
            accepted: true,
            duplicate: false,
            bytes_received: 0,
        }))
    }

    async fn report_evaluation(
        &self,
        request: Request<pb::ReportEvaluationRequest>,
    ) -> Result<Response<pb::ReportEvaluationResponse>, Status> {
        self.session_call(&request);
        self.0
            .seen
            .lock()
            .unwrap()
            .evaluations
            .push(request.into_inner());
        Ok(Response::new(pb::ReportEvaluationResponse {}))
    }

    async fn leave(
        &self,
        request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        self.session_call(&request);
        self.0.seen.lock().unwrap().leaves += 1;
        Ok(Response::new(pb::LeaveResponse {}))
    }
}

fn model_spec() -> pb::ModelSpec {
    pb::ModelSpec {
        architecture: "resnet20".into(),
        csg: "none".into(),
        in_channels: 1,
        num_classes: 10,
    }
}

fn train(round_token: &str, epochs: u32, max_samples: u64) -> Step {
    train_task(round_token, epochs, max_samples, TensorEncoding::F32)
}

fn train_task(round_token: &str, epochs: u32, max_samples: u64, upload: TensorEncoding) -> Step {
    Step::Answer(Box::new(Task::Train(pb::TrainTask {
        job_id: "job-1".into(),
        round: 1,
        round_token: round_token.into(),
        model: Some(model_spec()),
        training: Some(pb::TrainingConfig {
            local_epochs: epochs,
            batch_size: 16,
            learning_rate: 0.05,
            momentum: 0.9,
            weight_decay: 0.0,
            max_samples_per_round: max_samples,
        }),
        seed: 5,
        bn_stats: "averaged".into(),
        deadline_seconds: 60,
        upload_encoding: fedcsg_wire::convert::encoding_to_proto(upload) as i32,
        upload_topk: 0.0,
        error_feedback: true,
        proximal_mu: 0.0,
        local_privacy: None,
    })))
}

/// Starts the fake on a free port; returns its URL and what it sees.
async fn start(script: Script) -> (String, Arc<Mutex<Seen>>) {
    let spec: ModelSpec =
        fedcsg_wire::convert::model_spec_from_proto(Some(&model_spec()), "model").unwrap();
    let global = Model::new(&spec, 42, ConvBackend::Fast)
        .unwrap()
        .state()
        .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let fake = FakeCoordinator(Arc::new(Fake {
        script: Mutex::new(script),
        seen: Arc::clone(&seen),
        global,
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WorkerServiceServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (url, seen)
}

fn config(url: &str) -> WorkerConfig {
    let mut c = WorkerConfig::for_coordinator(url).unwrap();
    c.name = "fake-test".into();
    c.token = Some(fedcsg_core::secret::Secret::new("enroll"));
    c.num_partitions = 10;
    c.partition_id = 3;
    c.max_retry = Duration::from_millis(200);
    c
}

/// The whole life of a worker: two refused connection attempts are retried, the enrollment token
/// goes on the join and the session token on every later call, a coordinator that forgets the
/// worker gets a re-join, the train task's update carries the task's identity and the trained
/// state as a delta from the global model, the evaluation covers the local test partition, and
/// Done ends with a Leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cycle_with_retries_and_a_rejoin() {
    let (url, seen) = start(Script {
        join_failures: 2,
        tasks: VecDeque::from([
            Step::Answer(Box::new(Task::Wait(pb::WaitTask {
                retry_after_ms: 10,
                reason: "no job yet".into(),
            }))),
            Step::Fail(Code::NotFound),
            train("r1", 1, 32),
            Step::Answer(Box::new(Task::Evaluate(pb::EvaluateTask {
                job_id: "job-1".into(),
                round: 1,
                round_token: "r1".into(),
                model: Some(model_spec()),
                batch_size: 50,
            }))),
        ]),
        ..Script::default()
    })
    .await;
    tokio::time::timeout(
        Duration::from_secs(120),
        fedcsg_worker::run(config(&url), std::future::pending()),
    )
    .await
    .expect("the worker finishes")
    .unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(
        (seen.join_attempts, seen.joins),
        (4, 2),
        "two retries, then a join and a re-join"
    );
    assert!(
        seen.join_auth.iter().all(|a| a == "Bearer enroll"),
        "{:?}",
        seen.join_auth
    );
    assert!(
        seen.session_auth
            .iter()
            .all(|a| a.starts_with("Bearer session-")),
        "{:?}",
        seen.session_auth
    );
    assert_eq!(
        seen.session_auth.last().map(String::as_str),
        Some("Bearer session-2"),
        "the re-join's token is used"
    );

    assert_eq!(seen.uploads.len(), 1);
    let (header, update) = &seen.uploads[0];
    assert_eq!(
        (
            header.worker_id.as_str(),
            header.job_id.as_str(),
            header.round,
            header.round_token.as_str()
        ),
        ("w-1", "job-1", 1, "r1")
    );
    assert_eq!(
        header.num_samples, 32,
        "max_samples_per_round bounds the local samples"
    );
    assert!(
        header.train_loss.is_finite() && header.train_loss > 0.0 && header.train_seconds > 0.0,
        "{header:?}"
    );
    let global = Model::new(
        &fedcsg_wire::convert::model_spec_from_proto(Some(&model_spec()), "m").unwrap(),
        42,
        ConvBackend::Fast,
    )
    .unwrap()
    .state()
    .unwrap();
    let names = |s: &StateDict| {
        s.tensors()
            .iter()
            .map(|t| t.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(update),
        names(&global),
        "averaged batch norm: every variable is exchanged"
    );
    assert_eq!(header.kind, pb::UpdateKind::Delta as i32);
    let moved = |name: &str| update.get(name).unwrap().values.iter().any(|v| *v != 0.0);
    assert!(
        moved("fc.weight") && moved("layer1.0.conv1.weight"),
        "the delta of a trained model is not zero"
    );
    // Running statistics travel plain: the trained variances themselves, all positive.
    let var = &update.get("bn1.running_var").unwrap().values;
    assert!(var.iter().all(|v| *v > 0.0), "{var:?}");

    assert_eq!(seen.evaluations.len(), 1);
    let eval = &seen.evaluations[0];
    assert_eq!(
        (
            eval.job_id.as_str(),
            eval.round_token.as_str(),
            eval.num_samples
        ),
        ("job-1", "r1", 100)
    );
    assert!(eval.correct <= eval.num_samples && eval.loss_sum > 0.0);
    assert_eq!(seen.leaves, 1);
}

/// When heartbeats say the task no longer matters, training stops early and no update is sent;
/// the heartbeats carried the round token the worker was busy with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_task_sends_no_update() {
    let (url, seen) = start(Script {
        tasks: VecDeque::from([train("r-long", 500, 0)]),
        abandon: true,
        ..Script::default()
    })
    .await;
    let start = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(60),
        fedcsg_worker::run(config(&url), std::future::pending()),
    )
    .await
    .expect("500 epochs would take far longer: training must have stopped")
    .unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.uploads.is_empty(), "an abandoned round gets no update");
    assert!(
        seen.busy_tokens.iter().any(|t| t == "r-long"),
        "{:?}",
        seen.busy_tokens
    );
    assert!(start.elapsed() < Duration::from_secs(60));
}

/// A join refused for a reason retrying cannot fix ends the worker with that reason.
#[tokio::test]
async fn a_refused_join_is_fatal() {
    let (url, seen) = start(Script {
        refuse_join: Some(Code::FailedPrecondition),
        ..Script::default()
    })
    .await;
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        fedcsg_worker::run(config(&url), std::future::pending()),
    )
    .await
    .expect("a refused join must not be retried forever")
    .unwrap_err();
    assert!(
        matches!(
            err,
            WorkerError::JoinRefused {
                code: Code::FailedPrecondition,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("protocol version 99 expected"),
        "{err}"
    );
    assert_eq!(seen.lock().unwrap().join_attempts, 1);
}

/// Shutdown in the middle of a long training run returns promptly and says goodbye.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_training_leaves_promptly() {
    let (url, seen) = start(Script {
        tasks: VecDeque::from([train("r-long", 500, 0)]),
        ..Script::default()
    })
    .await;
    let watched = Arc::clone(&seen);
    let busy_training = async move {
        while !watched
            .lock()
            .unwrap()
            .busy_tokens
            .iter()
            .any(|t| t == "r-long")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(
        Duration::from_secs(60),
        fedcsg_worker::run(config(&url), busy_training),
    )
    .await
    .expect("shutdown must not wait for training to finish")
    .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.leaves, 1);
    assert!(seen.uploads.is_empty());
}

/// A compressed exchange: the worker decodes an f16 global model and sends int8 deltas of the
/// exact byte size the encoding implies (n values + 4 bytes per 256), two rounds in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f16_downloads_and_int8_delta_uploads() {
    let (url, seen) = start(Script {
        tasks: VecDeque::from([
            train_task("r1", 1, 16, TensorEncoding::Int8Scaled),
            train_task("r2", 1, 16, TensorEncoding::Int8Scaled),
        ]),
        download: TensorEncoding::F16,
        ..Script::default()
    })
    .await;
    tokio::time::timeout(
        Duration::from_secs(120),
        fedcsg_worker::run(config(&url), std::future::pending()),
    )
    .await
    .expect("the worker finishes")
    .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.uploads.len(), 2, "both rounds sent an update");
    for (header, update) in &seen.uploads {
        assert_eq!(header.kind, pb::UpdateKind::Delta as i32);
        for t in &header.tensors {
            let n: u64 = t.shape.iter().product();
            assert_eq!(t.encoding, pb::Encoding::Int8Scaled as i32, "{}", t.name);
            assert_eq!(
                (t.values_per_scale, t.byte_length),
                (256, n + 4 * n.div_ceil(256)),
                "{}",
                t.name
            );
        }
        assert!(
            update
                .tensors()
                .iter()
                .all(|t| t.first_non_finite().is_none())
        );
    }
}
