//! Every request field of every RPC, malformed, over real gRPC against an in-process coordinator:
//! each is refused with INVALID_ARGUMENT (or NOT_FOUND / FAILED_PRECONDITION where the value is
//! well-formed but names nothing or comes at the wrong time) and a message naming the field or
//! the rule, and afterwards the jobs, the workers and the global model are exactly as before.
//! Complements hostile_updates.rs (misdirected and malformed update *contents*).

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

mod support;
use support::{assemble, authed, export, start};

fn join_request(name: &str) -> pb::JoinRequest {
    pb::JoinRequest {
        protocol_version: PROTOCOL_VERSION,
        worker_name: name.into(),
        num_samples: 100,
        in_channels: 1,
        num_classes: 10,
        data_description: "bundled 1/1".into(),
    }
}

fn spec() -> pb::JobSpec {
    pb::JobSpec {
        federated_evaluation: true,
        ..support::job_spec(
            "hostile-requests",
            support::JobShape {
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
struct Refusals(usize);

impl Refusals {
    fn check<T: std::fmt::Debug>(
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
async fn snapshot(
    op: &mut OperatorServiceClient<Channel>,
    job: &str,
) -> (
    Vec<(String, i32, u64)>,
    Vec<(String, String, String)>,
    String,
) {
    let jobs = op
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let workers = op
        .list_workers(pb::ListWorkersRequest {})
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

fn header_of(
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
    };
    (header, chunks)
}

fn messages(header: Option<pb::UpdateHeader>, chunks: Vec<Vec<u8>>) -> Vec<pb::UpdateChunk> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_and_change_nothing() {
    let (url, _stop) = start().await;
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut op = OperatorServiceClient::new(channel.clone());
    let mut w = WorkerServiceClient::new(channel);
    let mut refused = Refusals::default();
    let ia = Code::InvalidArgument;

    // ----- CreateJob: every JobSpec field -----
    let create = |s: Option<pb::JobSpec>| pb::CreateJobRequest { spec: s };
    let with = |f: &dyn Fn(&mut pb::JobSpec)| {
        let mut s = spec();
        f(&mut s);
        Some(s)
    };
    let bad_specs: Vec<(&str, Option<pb::JobSpec>, &str)> = vec![
        ("spec missing", None, "spec is missing"),
        ("model missing", with(&|s| s.model = None), "spec.model"),
        (
            "training missing",
            with(&|s| s.training = None),
            "spec.training",
        ),
        (
            "unknown architecture",
            with(&|s| s.model.as_mut().unwrap().architecture = "resnet21".into()),
            "spec.model.architecture",
        ),
        (
            "empty architecture",
            with(&|s| s.model.as_mut().unwrap().architecture = String::new()),
            "spec.model.architecture",
        ),
        (
            "zero input channels",
            with(&|s| s.model.as_mut().unwrap().in_channels = 0),
            "spec.model",
        ),
        (
            "one class",
            with(&|s| s.model.as_mut().unwrap().num_classes = 1),
            "spec.model",
        ),
        (
            "name with a newline",
            with(&|s| s.name = "a\nb".into()),
            "spec.name",
        ),
        (
            "name too long",
            with(&|s| s.name = "n".repeat(129)),
            "spec.name",
        ),
        (
            "unknown strategy",
            with(&|s| s.strategy = "fedprox".into()),
            "spec.strategy",
        ),
        (
            "unknown bn_stats",
            with(&|s| s.bn_stats = "sometimes".into()),
            "sometimes",
        ),
        ("zero rounds", with(&|s| s.rounds = 0), "spec.rounds"),
        (
            "too many rounds",
            with(&|s| s.rounds = 100_001),
            "spec.rounds",
        ),
        (
            "zero fraction",
            with(&|s| s.fraction = 0.0),
            "spec.fraction",
        ),
        (
            "fraction above 1",
            with(&|s| s.fraction = 1.5),
            "spec.fraction",
        ),
        (
            "NaN fraction",
            with(&|s| s.fraction = f64::NAN),
            "spec.fraction",
        ),
        (
            "zero min_workers",
            with(&|s| s.min_workers = 0),
            "spec.min_workers",
        ),
        (
            "zero deadline",
            with(&|s| s.round_deadline_seconds = 0),
            "spec.round_deadline_seconds",
        ),
        (
            "deadline above a day",
            with(&|s| s.round_deadline_seconds = 86_401),
            "spec.round_deadline_seconds",
        ),
        (
            "zero local epochs",
            with(&|s| s.training.as_mut().unwrap().local_epochs = 0),
            "local_epochs",
        ),
        (
            "zero batch size",
            with(&|s| s.training.as_mut().unwrap().batch_size = 0),
            "batch_size",
        ),
        (
            "huge batch size",
            with(&|s| s.training.as_mut().unwrap().batch_size = 1 << 20),
            "batch_size",
        ),
        (
            "negative learning rate",
            with(&|s| s.training.as_mut().unwrap().learning_rate = -0.1),
            "learning_rate",
        ),
        (
            "NaN learning rate",
            with(&|s| s.training.as_mut().unwrap().learning_rate = f64::NAN),
            "learning_rate",
        ),
        (
            "infinite learning rate",
            with(&|s| s.training.as_mut().unwrap().learning_rate = f64::INFINITY),
            "learning_rate",
        ),
        (
            "momentum 1",
            with(&|s| s.training.as_mut().unwrap().momentum = 1.0),
            "momentum",
        ),
        (
            "negative weight decay",
            with(&|s| s.training.as_mut().unwrap().weight_decay = -1e-4),
            "weight_decay",
        ),
    ];
    for (case, s, needle) in bad_specs {
        refused.check(
            &format!("CreateJob: {case}"),
            op.create_job(create(s)).await,
            ia,
            needle,
        );
    }
    assert!(
        op.list_jobs(pb::ListJobsRequest {})
            .await
            .unwrap()
            .into_inner()
            .jobs
            .is_empty(),
        "a refused spec created a job"
    );

    // ----- Join: every JoinRequest field -----
    let bad_joins: Vec<(&str, pb::JoinRequest, Code, &str)> = vec![
        (
            "empty name",
            pb::JoinRequest {
                worker_name: String::new(),
                ..join_request("x")
            },
            ia,
            "worker_name",
        ),
        (
            "name too long",
            pb::JoinRequest {
                worker_name: "n".repeat(129),
                ..join_request("x")
            },
            ia,
            "worker_name",
        ),
        (
            "name with an escape sequence",
            pb::JoinRequest {
                worker_name: "\u{1b}[2Jworker".into(),
                ..join_request("x")
            },
            ia,
            "worker_name",
        ),
        (
            "description too long",
            pb::JoinRequest {
                data_description: "d".repeat(1025),
                ..join_request("x")
            },
            ia,
            "data_description",
        ),
        (
            "description with a newline",
            pb::JoinRequest {
                data_description: "fake\nlog line".into(),
                ..join_request("x")
            },
            ia,
            "data_description",
        ),
        (
            "no samples",
            pb::JoinRequest {
                num_samples: 0,
                ..join_request("x")
            },
            ia,
            "num_samples",
        ),
        (
            "no input channels",
            pb::JoinRequest {
                in_channels: 0,
                ..join_request("x")
            },
            ia,
            "in_channels",
        ),
        (
            "65 input channels",
            pb::JoinRequest {
                in_channels: 65,
                ..join_request("x")
            },
            ia,
            "in_channels",
        ),
        (
            "one class",
            pb::JoinRequest {
                num_classes: 1,
                ..join_request("x")
            },
            ia,
            "num_classes",
        ),
        (
            "protocol version 0",
            pb::JoinRequest {
                protocol_version: 0,
                ..join_request("x")
            },
            Code::FailedPrecondition,
            "protocol version",
        ),
    ];
    for (case, req, code, needle) in bad_joins {
        refused.check(&format!("Join: {case}"), w.join(req).await, code, needle);
    }
    assert!(
        op.list_workers(pb::ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers
            .is_empty(),
        "a refused join registered a worker"
    );

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

    // ----- worker_id and round tokens on every worker call -----
    for (case, id) in [
        ("empty worker_id", String::new()),
        ("worker_id too long", "w".repeat(257)),
        ("worker_id with a space", "w 1".into()),
    ] {
        let needle = "worker_id";
        refused.check(
            &format!("GetTask: {case}"),
            w.get_task(authed(
                pb::GetTaskRequest {
                    worker_id: id.clone(),
                },
                &tok,
            ))
            .await,
            ia,
            needle,
        );
        refused.check(
            &format!("Heartbeat: {case}"),
            w.heartbeat(authed(
                pb::HeartbeatRequest {
                    worker_id: id.clone(),
                    busy_with_round_token: String::new(),
                },
                &tok,
            ))
            .await,
            ia,
            needle,
        );
        refused.check(
            &format!("Leave: {case}"),
            w.leave(authed(
                pb::LeaveRequest {
                    worker_id: id.clone(),
                },
                &tok,
            ))
            .await,
            ia,
            needle,
        );
    }
    let hb = |t: &str| {
        authed(
            pb::HeartbeatRequest {
                worker_id: wid.clone(),
                busy_with_round_token: t.into(),
            },
            &tok,
        )
    };
    refused.check(
        "Heartbeat: busy token with a control character",
        w.heartbeat(hb("abc\u{7f}")).await,
        ia,
        "busy_with_round_token",
    );
    refused.check(
        "Heartbeat: busy token too long",
        w.heartbeat(hb(&"a".repeat(257))).await,
        ia,
        "busy_with_round_token",
    );

    let dl = |job: &str, token: &str| {
        authed(
            pb::DownloadModelRequest {
                worker_id: wid.clone(),
                job_id: job.into(),
                round_token: token.into(),
            },
            &tok,
        )
    };
    refused.check(
        "DownloadModel: empty job_id",
        w.download_model(dl("", &train.round_token))
            .await
            .map(|_| ()),
        ia,
        "job_id",
    );
    refused.check(
        "DownloadModel: empty round_token",
        w.download_model(dl(&job, "")).await.map(|_| ()),
        ia,
        "round_token",
    );
    refused.check(
        "DownloadModel: job_id too long",
        w.download_model(dl(&"j".repeat(257), &train.round_token))
            .await
            .map(|_| ()),
        ia,
        "job_id",
    );
    refused.check(
        "DownloadModel: unknown job",
        w.download_model(dl("job-404", &train.round_token))
            .await
            .map(|_| ()),
        Code::NotFound,
        "job-404",
    );
    refused.check(
        "DownloadModel: a token never issued",
        w.download_model(dl(&job, "feedface")).await.map(|_| ()),
        Code::FailedPrecondition,
        "round token",
    );
    let late_dl = authed(
        pb::DownloadModelRequest {
            worker_id: late.worker_id.clone(),
            job_id: job.clone(),
            round_token: train.round_token.clone(),
        },
        &late.session_token,
    );
    refused.check(
        "DownloadModel: another worker's task",
        w.download_model(late_dl).await.map(|_| ()),
        Code::FailedPrecondition,
        "not a task of worker",
    );

    // ----- UploadUpdate: stream shape, header figures, tensor specs, chunks -----
    let global = {
        let req = dl(&job, &train.round_token);
        assemble(w.download_model(req).await.unwrap().into_inner()).await
    };
    let (header, chunks) = header_of(&global, &wid, &job, train.round, &train.round_token);
    let data: Vec<u8> = chunks.concat();
    let uploader = w.clone();
    let up = |msgs: Vec<pb::UpdateChunk>, token: &str| {
        let mut w = uploader.clone();
        let req = authed(tokio_stream::iter(msgs), token);
        async move { w.upload_update(req).await }
    };
    let h = |f: &dyn Fn(&mut pb::UpdateHeader)| {
        let mut h = header.clone();
        f(&mut h);
        Some(h)
    };
    let t = |f: &dyn Fn(&mut pb::TensorSpec)| h(&|h| f(&mut h.tensors[1]));
    let mut flipped = data.clone();
    flipped[100] ^= 0x40;
    let uploads: Vec<(&str, Vec<pb::UpdateChunk>, Code, &str)> = vec![
        ("empty stream", vec![], ia, "empty"),
        (
            "data before the header",
            messages(None, vec![data.clone()]),
            ia,
            "header",
        ),
        (
            "header twice",
            {
                let mut m = messages(Some(header.clone()), vec![]);
                m.extend(messages(Some(header.clone()), chunks.clone()));
                m
            },
            ia,
            "only data chunks",
        ),
        (
            "a message with no part",
            {
                let mut m = messages(Some(header.clone()), chunks.clone());
                m.insert(1, pb::UpdateChunk { part: None });
                m
            },
            ia,
            "only data chunks",
        ),
        (
            "empty worker_id",
            messages(h(&|h| h.worker_id.clear()), chunks.clone()),
            ia,
            "worker_id",
        ),
        (
            "empty job_id",
            messages(h(&|h| h.job_id.clear()), chunks.clone()),
            ia,
            "job_id",
        ),
        (
            "round token with a space",
            messages(h(&|h| h.round_token = "a b".into()), chunks.clone()),
            ia,
            "round_token",
        ),
        (
            "round number of another round",
            messages(h(&|h| h.round += 1), chunks.clone()),
            ia,
            "round",
        ),
        (
            "negative train_loss",
            messages(h(&|h| h.train_loss = -1.0), chunks.clone()),
            ia,
            "train_loss",
        ),
        (
            "NaN train_seconds",
            messages(h(&|h| h.train_seconds = f64::NAN), chunks.clone()),
            ia,
            "train_seconds",
        ),
        (
            "dtype unspecified",
            messages(t(&|t| t.dtype = 0), chunks.clone()),
            ia,
            "dtype",
        ),
        (
            "unknown encoding",
            messages(t(&|t| t.encoding = 42), chunks.clone()),
            ia,
            "encoding",
        ),
        (
            "f16 encoding (reserved)",
            messages(
                t(&|t| t.encoding = pb::Encoding::F16 as i32),
                chunks.clone(),
            ),
            ia,
            "not supported",
        ),
        (
            "scale on an f32 tensor",
            messages(t(&|t| t.scale = 0.5), chunks.clone()),
            ia,
            "scale",
        ),
        (
            "byte_length that disagrees with the shape",
            messages(t(&|t| t.byte_length += 4), chunks.clone()),
            ia,
            "byte length",
        ),
        (
            "rank 9",
            messages(t(&|t| t.shape = vec![1; 9]), chunks.clone()),
            ia,
            "rank",
        ),
        (
            "2^30 elements",
            messages(t(&|t| t.shape = vec![1 << 15, 1 << 15]), chunks.clone()),
            ia,
            "elements",
        ),
        (
            "dimension overflowing u64",
            messages(t(&|t| t.shape = vec![u64::MAX, 2]), chunks.clone()),
            ia,
            "elements",
        ),
        (
            "name of 257 bytes",
            messages(t(&|t| t.name = "n".repeat(257)), chunks.clone()),
            ia,
            "name",
        ),
        (
            "empty tensor name",
            messages(t(&|t| t.name.clear()), chunks.clone()),
            ia,
            "empty name",
        ),
        (
            "a tensor named twice",
            messages(
                h(&|h| {
                    let first = h.tensors[0].clone();
                    h.tensors[1] = first;
                }),
                chunks.clone(),
            ),
            ia,
            "twice",
        ),
        (
            "4097 tensors",
            messages(
                h(&|h| {
                    let x = h.tensors[0].clone();
                    h.tensors = vec![x; 4097];
                }),
                chunks.clone(),
            ),
            ia,
            "4097 tensors",
        ),
        (
            "an empty data chunk",
            messages(Some(header.clone()), vec![Vec::new(), data.clone()]),
            ia,
            "empty data chunk",
        ),
        (
            "a chunk above 2 MiB",
            messages(Some(header.clone()), vec![vec![0u8; (2 << 20) + 1]]),
            ia,
            "exceeds the limit",
        ),
        (
            "a byte more than announced",
            messages(Some(header.clone()), vec![data.clone(), vec![0]]),
            ia,
            "announces",
        ),
        (
            "a byte less than announced",
            messages(Some(header.clone()), vec![data[..data.len() - 1].to_vec()]),
            ia,
            "announces",
        ),
        (
            "a flipped bit",
            messages(Some(header.clone()), vec![flipped]),
            ia,
            "checksum",
        ),
        (
            "a wrong checksum",
            messages(t(&|t| t.crc32 ^= 1), chunks.clone()),
            ia,
            "checksum",
        ),
    ];
    for (case, msgs, code, needle) in uploads {
        refused.check(
            &format!("UploadUpdate: {case}"),
            up(msgs, &tok).await,
            code,
            needle,
        );
    }
    // The late worker holds a valid session but no task in this round.
    let (late_header, late_chunks) = header_of(
        &global,
        &late.worker_id,
        &job,
        train.round,
        &train.round_token,
    );
    refused.check(
        "UploadUpdate: a worker not sampled",
        up(
            messages(Some(late_header), late_chunks),
            &late.session_token,
        )
        .await,
        Code::FailedPrecondition,
        "was not given a task",
    );

    // ----- ReportEvaluation before any evaluation is open -----
    let report = |worker: &str, token: &str, samples: u64, correct: u64, loss: f64| {
        pb::ReportEvaluationRequest {
            worker_id: worker.into(),
            job_id: job.clone(),
            round_token: token.into(),
            num_samples: samples,
            correct,
            loss_sum: loss,
        }
    };
    refused.check(
        "ReportEvaluation: more correct than samples",
        w.report_evaluation(authed(report(&wid, &train.round_token, 10, 11, 1.0), &tok))
            .await,
        ia,
        "correct",
    );
    refused.check(
        "ReportEvaluation: NaN loss_sum",
        w.report_evaluation(authed(
            report(&wid, &train.round_token, 10, 5, f64::NAN),
            &tok,
        ))
        .await,
        ia,
        "loss_sum",
    );
    refused.check(
        "ReportEvaluation: negative loss_sum",
        w.report_evaluation(authed(report(&wid, &train.round_token, 10, 5, -1.0), &tok))
            .await,
        ia,
        "loss_sum",
    );
    refused.check(
        "ReportEvaluation: empty round_token",
        w.report_evaluation(authed(report(&wid, "", 10, 5, 1.0), &tok))
            .await,
        ia,
        "round_token",
    );
    refused.check(
        "ReportEvaluation: no evaluation open",
        w.report_evaluation(authed(report(&wid, &train.round_token, 10, 5, 1.0), &tok))
            .await,
        Code::FailedPrecondition,
        "no federated evaluation",
    );

    // ----- operator calls naming a job -----
    for (case, id, code, needle) in [
        ("empty job_id", String::new(), ia, "job_id"),
        ("job_id too long", "j".repeat(257), ia, "job_id"),
        (
            "job_id with a control character",
            "job-1\u{0}".into(),
            ia,
            "job_id",
        ),
        ("unknown job", "job-404".into(), Code::NotFound, "job-404"),
    ] {
        refused.check(
            &format!("GetJob: {case}"),
            op.get_job(pb::GetJobRequest { job_id: id.clone() }).await,
            code,
            needle,
        );
        refused.check(
            &format!("CancelJob: {case}"),
            op.cancel_job(pb::CancelJobRequest { job_id: id.clone() })
                .await,
            code,
            needle,
        );
        refused.check(
            &format!("WatchJob: {case}"),
            op.watch_job(pb::WatchJobRequest { job_id: id.clone() })
                .await
                .map(|_| ()),
            code,
            needle,
        );
        refused.check(
            &format!("ExportModel: {case}"),
            op.export_model(pb::ExportModelRequest { job_id: id.clone() })
                .await
                .map(|_| ()),
            code,
            needle,
        );
    }

    assert_eq!(
        snapshot(&mut op, &job).await,
        before,
        "a refused request changed the jobs, the workers or the model"
    );

    // ----- the good update closes the round; federated evaluation checks who was asked -----
    let ok = up(messages(Some(header.clone()), chunks.clone()), &tok)
        .await
        .unwrap()
        .into_inner();
    assert!(ok.accepted && !ok.duplicate);
    let eval = loop {
        match w
            .get_task(authed(
                pb::GetTaskRequest {
                    worker_id: wid.clone(),
                },
                &tok,
            ))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap()
        {
            pb::get_task_response::Task::Evaluate(e) => break e,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    // A worker that joins after the evaluation started was not asked to evaluate.
    let later = w.join(join_request("later")).await.unwrap().into_inner();
    let r = report(&later.worker_id, &eval.round_token, 10, 5, 1.0);
    refused.check(
        "ReportEvaluation: a worker not asked",
        w.report_evaluation(authed(r, &later.session_token)).await,
        Code::FailedPrecondition,
        "not asked to evaluate",
    );
    // The asked worker's report is taken, and its retry is idempotent.
    w.report_evaluation(authed(report(&wid, &eval.round_token, 10, 7, 3.0), &tok))
        .await
        .unwrap();
    w.report_evaluation(authed(report(&wid, &eval.round_token, 10, 7, 3.0), &tok))
        .await
        .unwrap();
    refused.check(
        "ReportEvaluation: a different second report",
        w.report_evaluation(authed(report(&wid, &eval.round_token, 10, 8, 3.0), &tok))
            .await,
        Code::FailedPrecondition,
        "not asked to evaluate",
    );

    eprintln!(
        "hostile_requests: {} distinct malformed or misdirected requests refused",
        refused.0
    );
}
