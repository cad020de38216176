//! The worker's requests other than update uploads, malformed or misdirected, over real gRPC
//! against an in-process coordinator: every JoinRequest field; the worker id and round tokens of
//! GetTask, Heartbeat, Leave and DownloadModel; and evaluation reports, before any evaluation is
//! open and from workers not asked. Each is refused with INVALID_ARGUMENT (or NOT_FOUND /
//! FAILED_PRECONDITION where the value is well-formed but names nothing or comes at the wrong
//! time) and a message naming the field or the rule, and afterwards the jobs, the workers and
//! the global model are exactly as before. Uploads are in hostile_upload_requests.rs, the
//! operator's requests in hostile_job_requests.rs.

use std::time::Duration;

use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use fedcsg_wire::proto::v1::worker_service_client::WorkerServiceClient;
use tonic::Code;
use tonic::transport::Channel;

mod support;
use support::hostile::{
    Refusals, RoundInTraining, header_of, join_request, messages, round_in_training, snapshot,
};
use support::{assemble, authed, start};

/// Every malformed JoinRequest is refused, naming the field (a wrong protocol version with
/// FAILED_PRECONDITION), and registers no worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_joins_are_refused_and_register_nothing() {
    let (url, _stop) = start().await;
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut op = OperatorServiceClient::new(channel.clone());
    let mut w = WorkerServiceClient::new(channel);
    let mut refused = Refusals::default();
    let ia = Code::InvalidArgument;

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
            "name with a zero-width space (displays as another worker's)",
            pb::JoinRequest {
                worker_name: "hw\u{200b}-0".into(),
                ..join_request("x")
            },
            ia,
            "U+200B",
        ),
        (
            "name with a bidi override",
            pb::JoinRequest {
                worker_name: "w\u{202e}1-wh".into(),
                ..join_request("x")
            },
            ia,
            "U+202E",
        ),
        (
            "previous session token with a space",
            pb::JoinRequest {
                previous_session_token: "not a token".into(),
                ..join_request("x")
            },
            ia,
            "previous_session_token",
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
            "an absurd sample count",
            pb::JoinRequest {
                num_samples: u64::MAX,
                ..join_request("x")
            },
            ia,
            "--max-worker-samples",
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
        op.list_workers(pb::ListWorkersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .workers
            .is_empty(),
        "a refused join registered a worker"
    );
    eprintln!(
        "hostile joins: {} distinct malformed or misdirected requests refused",
        refused.0
    );
}

/// A malformed worker id on GetTask, Heartbeat and Leave, a malformed busy token on Heartbeat,
/// and a malformed, unknown or foreign job id or round token on DownloadModel are refused, and
/// the round, its workers and the model stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_worker_calls_are_refused_and_change_nothing() {
    let RoundInTraining {
        mut op,
        mut w,
        job,
        wid,
        tok,
        train,
        late,
        before,
        stop: _stop,
        ..
    } = round_in_training().await;
    let mut refused = Refusals::default();
    let ia = Code::InvalidArgument;

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
                    wait_ms: 0,
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

    assert_eq!(
        snapshot(&mut op, &job).await,
        before,
        "a refused request changed the jobs, the workers or the model"
    );
    eprintln!(
        "hostile worker calls: {} distinct malformed or misdirected requests refused",
        refused.0
    );
}

/// An evaluation report is refused when its figures are impossible, its loss is not a finite
/// non-negative number, its round token is missing, or no evaluation is open (and the refusals
/// change nothing); once the round commits and its federated evaluation opens, a worker that was
/// not asked is refused, the asked worker's report is taken, its identical retry is idempotent
/// and a different second report is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_reports_are_refused_unless_asked_for() {
    let RoundInTraining {
        mut op,
        mut w,
        job,
        wid,
        tok,
        train,
        before,
        stop: _stop,
        ..
    } = round_in_training().await;
    let mut refused = Refusals::default();
    let ia = Code::InvalidArgument;

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
    let global = {
        let req = dl(&job, &train.round_token);
        assemble(w.download_model(req).await.unwrap().into_inner()).await
    };
    let (header, chunks) = header_of(&global, &wid, &job, train.round, &train.round_token);
    let uploader = w.clone();
    let up = |msgs: Vec<pb::UpdateChunk>, token: &str| {
        let mut w = uploader.clone();
        let req = authed(tokio_stream::iter(msgs), token);
        async move { w.upload_update(req).await }
    };

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
    // Figures no worker can hold are refused before they reach any sum.
    refused.check(
        "ReportEvaluation: u64::MAX samples",
        w.report_evaluation(authed(
            report(&wid, &eval.round_token, u64::MAX, u64::MAX, 1.0),
            &tok,
        ))
        .await,
        ia,
        "exceeds",
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
        "hostile evaluation reports: {} distinct malformed or misdirected requests refused",
        refused.0
    );
}
