//! Helpers the in-process gRPC tests share: a coordinator on 127.0.0.1:0, bearer metadata, the
//! job spec they submit, and reassembling a model stream; and by theme, [`hostile`] (the
//! hostile-request tests), [`auth`] (tokens and TLS) and [`pki`] (test certificates).

// Each test file compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod auth;
pub mod cluster;
pub mod fake_worker;
pub mod hostile;
pub mod http;
pub mod in_process;
pub mod pki;

use fedcsg_core::tensor::StateDict;
use fedcsg_server::config::CoordinatorArgs;
use fedcsg_wire::convert::metas_from_proto;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use fedcsg_wire::{Accepted, ModelAssembler, WireLimits};
use tonic::transport::Channel;
use tonic::{Request, Streaming};

/// A binary of this workspace (the end-to-end tests start the real processes), built by
/// `cargo build --workspace --bins`.
pub fn bin(name: &str) -> std::path::PathBuf {
    let path =
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_fedcsg-coordinator")).with_file_name(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// An operator client connected to `url`.
pub async fn operator(url: &str) -> OperatorServiceClient<Channel> {
    OperatorServiceClient::new(
        Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

/// Serves a coordinator with `args` on a free loopback port until the sender is dropped or
/// fired; returns its URL.
pub async fn start_with(args: CoordinatorArgs) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = args.resolve().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(fedcsg_server::run(listener, config, async move {
        let _ = rx.await;
    }));
    (format!("http://{addr}"), tx)
}

/// A coordinator without a test set.
pub async fn start() -> (String, tokio::sync::oneshot::Sender<()>) {
    start_with(CoordinatorArgs {
        data: Some("none".into()),
        ..Default::default()
    })
    .await
}

pub fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// The model a header-then-data chunk stream carries (in any dense encoding).
pub async fn assemble(mut s: Streaming<pb::ModelChunk>) -> StateDict {
    let Some(pb::model_chunk::Part::Header(h)) = s.message().await.unwrap().unwrap().part else {
        panic!("no header")
    };
    let mut a = ModelAssembler::accepting(
        metas_from_proto(&h.tensors, &WireLimits::default()).unwrap(),
        WireLimits::default(),
        Accepted::ANY_DENSE,
    )
    .unwrap();
    while let Some(m) = s.message().await.unwrap() {
        if let Some(pb::model_chunk::Part::Data(d)) = m.part {
            a.push(&d).unwrap();
        }
    }
    a.finish().unwrap()
}

/// A job's global model through the operator API.
pub async fn export(op: &mut OperatorServiceClient<Channel>, job: &str) -> StateDict {
    assemble(
        op.export_model(pb::ExportModelRequest { job_id: job.into() })
            .await
            .unwrap()
            .into_inner(),
    )
    .await
}

/// How a test job runs: everything else is the tests' common job (ResNet-20 with a 12-72 slice
/// generator on 1x28x28 inputs and 10 classes, one local epoch of SGD at batch 32, lr 0.05,
/// momentum 0.9, weight decay 5e-4, every worker sampled, averaged batch-norm statistics, no
/// federated evaluation).
pub struct JobShape {
    pub rounds: u32,
    pub min_workers: u32,
    pub deadline_seconds: u32,
    /// 0: each worker's whole shard.
    pub max_samples: u64,
    pub seed: u64,
}

/// The tests' common job spec (see [`JobShape`]).
pub fn job_spec(name: &str, shape: JobShape) -> pb::JobSpec {
    pb::JobSpec {
        name: name.into(),
        model: Some(pb::ModelSpec {
            architecture: "resnet20".into(),
            csg: "12-72".into(),
            in_channels: 1,
            num_classes: 10,
        }),
        training: Some(pb::TrainingConfig {
            local_epochs: 1,
            batch_size: 32,
            learning_rate: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            max_samples_per_round: shape.max_samples,
        }),
        strategy: "fedavg".into(),
        rounds: shape.rounds,
        fraction: 1.0,
        min_workers: shape.min_workers,
        round_deadline_seconds: shape.deadline_seconds,
        seed: shape.seed,
        bn_stats: "averaged".into(),
        federated_evaluation: false,
        // Exact f32 both ways unless a test asks for compression.
        ..Default::default()
    }
}
