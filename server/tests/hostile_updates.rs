//! An in-process coordinator on 127.0.0.1:0, driven over real gRPC by a hand-rolled worker:
//! every malformed or misdirected update is refused with a status that names the problem, and
//! the global model stays bit-for-bit unchanged; a good update is then accepted and changes it.

use std::time::Duration;

use fedcsg_core::tensor::StateDict;
use fedcsg_wire::convert::meta_to_proto;
use fedcsg_wire::encode_state;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use fedcsg_wire::proto::v1::worker_service_client::WorkerServiceClient;
use tonic::Code;
use tonic::transport::Channel;

mod support;
use support::{assemble, authed, export, start};

async fn download(
    w: &mut WorkerServiceClient<Channel>,
    token: &str,
    worker: &str,
    job: &str,
    round_token: &str,
) -> StateDict {
    let req = authed(
        pb::DownloadModelRequest {
            worker_id: worker.into(),
            job_id: job.into(),
            round_token: round_token.into(),
        },
        token,
    );
    assemble(w.download_model(req).await.unwrap().into_inner()).await
}

#[derive(Clone, Copy)]
struct Upload<'a> {
    worker: &'a str,
    job: &'a str,
    round: u64,
    round_token: &'a str,
    num_samples: u64,
}

async fn upload(
    w: &mut WorkerServiceClient<Channel>,
    token: &str,
    u: &Upload<'_>,
    state: &StateDict,
) -> Result<pb::UploadUpdateResponse, tonic::Status> {
    let (metas, chunks) = encode_state(state);
    let header = pb::UpdateHeader {
        worker_id: u.worker.into(),
        job_id: u.job.into(),
        round: u.round,
        round_token: u.round_token.into(),
        num_samples: u.num_samples,
        train_loss: 1.0,
        train_seconds: 1.0,
        tensors: metas.iter().map(meta_to_proto).collect(),
        kind: pb::UpdateKind::Weights as i32,
    };
    let mut msgs = vec![pb::UpdateChunk {
        part: Some(pb::update_chunk::Part::Header(header)),
    }];
    msgs.extend(chunks.into_iter().map(|c| pb::UpdateChunk {
        part: Some(pb::update_chunk::Part::Data(c)),
    }));
    w.upload_update(authed(tokio_stream::iter(msgs), token))
        .await
        .map(|r| r.into_inner())
}

fn edit(
    state: &StateDict,
    f: impl FnOnce(&mut Vec<fedcsg_core::tensor::NamedTensor>),
) -> StateDict {
    let mut t = state.clone().into_tensors();
    f(&mut t);
    StateDict::new(t).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_updates_are_refused_and_change_nothing() {
    let (url, _stop) = start().await;
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut op = OperatorServiceClient::new(channel.clone());
    let mut w = WorkerServiceClient::new(channel);

    let spec = support::job_spec(
        "hostile",
        support::JobShape {
            rounds: 1,
            min_workers: 1,
            deadline_seconds: 600,
            max_samples: 0,
            seed: 5,
        },
    );
    // A malformed job is refused with the field named.
    let mut bad_spec = spec.clone();
    bad_spec.model.as_mut().unwrap().csg = "12-x".into();
    let err = op
        .create_job(pb::CreateJobRequest {
            spec: Some(bad_spec),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("spec.model.csg"),
        "{}",
        err.message()
    );

    let job = op
        .create_job(pb::CreateJobRequest { spec: Some(spec) })
        .await
        .unwrap()
        .into_inner();
    let before = export(&mut op, &job.job_id).await;

    // A worker speaking another protocol version is refused at join.
    let err = w
        .join(pb::JoinRequest {
            protocol_version: 99,
            worker_name: "x".into(),
            num_samples: 10,
            in_channels: 1,
            num_classes: 10,
            data_description: String::new(),
            previous_session_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let joined = w
        .join(pb::JoinRequest {
            protocol_version: fedcsg_wire::proto::PROTOCOL_VERSION,
            worker_name: "fake".into(),
            num_samples: 100,
            in_channels: 1,
            num_classes: 10,
            data_description: String::new(),
            previous_session_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let (wid, tok) = (joined.worker_id.clone(), joined.session_token.clone());
    // Calls without or with a wrong session token are refused.
    let err = w
        .get_task(pb::GetTaskRequest {
            worker_id: wid.clone(),
            wait_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = w
        .get_task(authed(
            pb::GetTaskRequest {
                worker_id: wid.clone(),
                wait_ms: 0,
            },
            "nope",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let train = loop {
        let t = w
            .get_task(authed(
                pb::GetTaskRequest {
                    worker_id: wid.clone(),
                    wait_ms: 0,
                },
                &tok,
            ))
            .await
            .unwrap()
            .into_inner();
        match t.task.unwrap() {
            pb::get_task_response::Task::Train(t) => break t,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let global = download(&mut w, &tok, &wid, &train.job_id, &train.round_token).await;
    let good = edit(&global, |t| {
        for x in &mut t.iter_mut().find(|t| t.name == "fc.bias").unwrap().values {
            *x += 0.25;
        }
    });
    let target = Upload {
        worker: &wid,
        job: &train.job_id,
        round: train.round,
        round_token: &train.round_token,
        num_samples: 50,
    };

    let fc = global
        .tensors()
        .iter()
        .position(|t| t.name == "fc.weight")
        .unwrap();
    let cases: Vec<(&str, StateDict, Upload, Code, &str)> = vec![
        (
            "wrong round token",
            good.clone(),
            Upload {
                round_token: "deadbeef",
                ..target
            },
            Code::FailedPrecondition,
            "round token",
        ),
        (
            "unknown job",
            good.clone(),
            Upload {
                job: "job-404",
                ..target
            },
            Code::NotFound,
            "job-404",
        ),
        (
            "zero samples",
            good.clone(),
            Upload {
                num_samples: 0,
                ..target
            },
            Code::InvalidArgument,
            "num_samples",
        ),
        (
            "more samples than declared",
            good.clone(),
            Upload {
                num_samples: 101,
                ..target
            },
            Code::InvalidArgument,
            "num_samples",
        ),
        (
            "unknown tensor",
            edit(&good, |t| t[fc].name = "fc.weight_typo".into()),
            target,
            Code::InvalidArgument,
            "fc.weight_typo",
        ),
        (
            "missing tensor",
            edit(&good, |t| {
                t.remove(fc);
            }),
            target,
            Code::InvalidArgument,
            "fc.weight",
        ),
        (
            "wrong shape",
            edit(&good, |t| {
                t[fc].shape = vec![64, 10];
            }),
            target,
            Code::InvalidArgument,
            "fc.weight",
        ),
        (
            "NaN value",
            edit(&good, |t| t[fc].values[3] = f32::NAN),
            target,
            Code::InvalidArgument,
            "fc.weight",
        ),
        (
            "infinite value",
            edit(&good, |t| t[fc].values[0] = f32::INFINITY),
            target,
            Code::InvalidArgument,
            "non-finite",
        ),
        (
            "negative running variance",
            edit(&good, |t| {
                let var = t
                    .iter_mut()
                    .find(|t| t.name.ends_with("running_var"))
                    .unwrap();
                var.values[0] = -1.0;
            }),
            target,
            Code::InvalidArgument,
            "negative value",
        ),
    ];
    for (case, state, u, code, needle) in cases {
        let err = upload(&mut w, &tok, &u, &state).await.expect_err(case);
        assert_eq!(err.code(), code, "{case}: {}", err.message());
        assert!(
            err.message().contains(needle),
            "{case}: message {:?} lacks {needle:?}",
            err.message()
        );
        assert_eq!(
            export(&mut op, &job.job_id).await.fingerprint(),
            before.fingerprint(),
            "{case} changed the global model"
        );
    }
    // A worker token is not an admin token when one is configured: covered by the Python test.

    // The good update is accepted, a retry of it is an idempotent duplicate, and the round
    // closes with a changed model: the checks above could have failed.
    let ok = upload(&mut w, &tok, &target, &good).await.unwrap();
    assert!(ok.accepted && !ok.duplicate);
    let mut after = export(&mut op, &job.job_id).await;
    for _ in 0..100 {
        if after.fingerprint() != before.fingerprint() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = export(&mut op, &job.job_id).await;
    }
    assert_ne!(after.fingerprint(), before.fingerprint());
    let bias = |s: &StateDict| s.get("fc.bias").unwrap().values.clone();
    for (a, b) in bias(&after).iter().zip(bias(&before)) {
        assert!((a - b - 0.25).abs() < 1e-6);
    }
    // The round is closed now: the same update again is refused as stale.
    let err = upload(&mut w, &tok, &target, &good).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
}
