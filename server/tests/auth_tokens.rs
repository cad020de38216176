//! Who may talk to the coordinator, by token: enrollment, session and admin tokens over real
//! gRPC. Every refusal is UNAUTHENTICATED or PERMISSION_DENIED and leaves the job and worker
//! lists as they were; the test also shows the same calls succeeding with the right token, so
//! the refusals could have failed. And no secret shows in a configuration's debug output.
//! TLS is in auth_tls.rs, the real binaries in auth_binaries.rs.

mod support;

use fedcsg_server::config::CoordinatorArgs;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use fedcsg_wire::proto::v1::worker_service_client::WorkerServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

use support::auth::{ADMIN, ENROLL, args, assert_refused, join_request, start, with_token};
use support::pki::{pki, temp_dir, write};

fn job_spec() -> pb::JobSpec {
    support::job_spec(
        "auth",
        support::JobShape {
            rounds: 1,
            min_workers: 5,
            deadline_seconds: 600,
            max_samples: 0,
            seed: 1,
        },
    )
}

/// (job ids, worker ids and states) as the admin sees them.
async fn snapshot(
    op: &mut OperatorServiceClient<Channel>,
) -> (Vec<(String, i32)>, Vec<(String, String)>) {
    let jobs = op
        .list_jobs(with_token(pb::ListJobsRequest::default(), Some(ADMIN)))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let workers = op
        .list_workers(with_token(pb::ListWorkersRequest::default(), Some(ADMIN)))
        .await
        .unwrap()
        .into_inner()
        .workers;
    (
        jobs.into_iter().map(|j| (j.job_id, j.state)).collect(),
        workers
            .into_iter()
            .map(|w| (w.worker_id, w.state))
            .collect(),
    )
}

/// Every operator call with `token` is refused with `code`.
async fn operator_refuses(
    op: &mut OperatorServiceClient<Channel>,
    who: &str,
    token: Option<&str>,
    code: Code,
    job: &str,
) {
    let id = || job.to_string();
    let c = [code];
    assert_refused(
        &format!("{who}: CreateJob"),
        op.create_job(with_token(
            pb::CreateJobRequest {
                spec: Some(job_spec()),
            },
            token,
        ))
        .await,
        &c,
    );
    assert_refused(
        &format!("{who}: ListJobs"),
        op.list_jobs(with_token(pb::ListJobsRequest::default(), token))
            .await,
        &c,
    );
    assert_refused(
        &format!("{who}: GetJob"),
        op.get_job(with_token(
            pb::GetJobRequest {
                job_id: id(),
                ..Default::default()
            },
            token,
        ))
        .await,
        &c,
    );
    assert_refused(
        &format!("{who}: CancelJob"),
        op.cancel_job(with_token(pb::CancelJobRequest { job_id: id() }, token))
            .await,
        &c,
    );
    assert_refused(
        &format!("{who}: ListWorkers"),
        op.list_workers(with_token(pb::ListWorkersRequest::default(), token))
            .await,
        &c,
    );
    assert_refused(
        &format!("{who}: WatchJob"),
        op.watch_job(with_token(pb::WatchJobRequest { job_id: id() }, token))
            .await
            .map(|_| ()),
        &c,
    );
    assert_refused(
        &format!("{who}: ExportModel"),
        op.export_model(with_token(pb::ExportModelRequest { job_id: id() }, token))
            .await
            .map(|_| ()),
        &c,
    );
}

// ----- tokens -----

/// Joining needs the enrollment token, every later worker call the caller's own session token,
/// and the operator API the admin token: a missing token is UNAUTHENTICATED, a wrong one on the
/// worker API UNAUTHENTICATED, and any other token on the operator API (a worker's session
/// token, the enrollment token, a guess) PERMISSION_DENIED. None of the refused calls creates,
/// cancels or changes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_and_refusals_change_nothing() {
    let (addr, _stop) = start(args().resolve().unwrap()).await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut op = OperatorServiceClient::new(channel.clone());
    let mut w = WorkerServiceClient::new(channel);

    // Join: missing, wrong, wrongly spelled and other tokens.
    let bad_joins: [(&str, Option<&str>); 5] = [
        ("no token", None),
        ("wrong token", Some("enroll-0123456788")),
        ("admin token", Some(ADMIN)),
        ("token prefix", Some(&ENROLL[..8])),
        ("token with a suffix", Some("enroll-0123456789x")),
    ];
    for (case, token) in bad_joins {
        assert_refused(
            &format!("join with {case}"),
            w.join(with_token(join_request("intruder"), token)).await,
            &[Code::Unauthenticated],
        );
    }
    let mut lowercase = Request::new(join_request("intruder"));
    lowercase
        .metadata_mut()
        .insert("authorization", format!("bearer {ENROLL}").parse().unwrap());
    assert_refused(
        "join with `bearer` in lower case",
        w.join(lowercase).await,
        &[Code::Unauthenticated],
    );
    let mut basic = Request::new(join_request("intruder"));
    basic
        .metadata_mut()
        .insert("authorization", format!("Basic {ENROLL}").parse().unwrap());
    assert_refused(
        "join with Basic auth",
        w.join(basic).await,
        &[Code::Unauthenticated],
    );
    assert_eq!(
        snapshot(&mut op).await,
        (vec![], vec![]),
        "a refused join registered a worker"
    );

    let one = w
        .join(with_token(join_request("one"), Some(ENROLL)))
        .await
        .unwrap()
        .into_inner();
    let two = w
        .join(with_token(join_request("two"), Some(ENROLL)))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(one.session_token, two.session_token);
    let job = op
        .create_job(with_token(
            pb::CreateJobRequest {
                spec: Some(job_spec()),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    let before = snapshot(&mut op).await;
    assert_eq!(before.0.len(), 1);
    assert_eq!(before.1.len(), 2);

    // Worker calls of worker one with anything but its own session token.
    let wrong: [(&str, Option<&str>); 5] = [
        ("no token", None),
        ("a guessed token", Some("00000000000000000000000000000000")),
        ("worker two's session token", Some(&two.session_token)),
        ("the enrollment token", Some(ENROLL)),
        ("the admin token", Some(ADMIN)),
    ];
    let u = [Code::Unauthenticated];
    for (case, token) in wrong {
        let id = || one.worker_id.clone();
        assert_refused(
            &format!("GetTask, {case}"),
            w.get_task(with_token(
                pb::GetTaskRequest {
                    worker_id: id(),
                    wait_ms: 0,
                },
                token,
            ))
            .await,
            &u,
        );
        let hb = pb::HeartbeatRequest {
            worker_id: id(),
            busy_with_round_token: String::new(),
        };
        assert_refused(
            &format!("Heartbeat, {case}"),
            w.heartbeat(with_token(hb, token)).await,
            &u,
        );
        assert_refused(
            &format!("Leave, {case}"),
            w.leave(with_token(pb::LeaveRequest { worker_id: id() }, token))
                .await,
            &u,
        );
        let dl = pb::DownloadModelRequest {
            worker_id: id(),
            job_id: job.job_id.clone(),
            round_token: "t".into(),
        };
        assert_refused(
            &format!("DownloadModel, {case}"),
            w.download_model(with_token(dl, token)).await.map(|_| ()),
            &u,
        );
        let ev = pb::ReportEvaluationRequest {
            worker_id: id(),
            job_id: job.job_id.clone(),
            round_token: "t".into(),
            num_samples: 1,
            correct: 1,
            loss_sum: 0.0,
        };
        assert_refused(
            &format!("ReportEvaluation, {case}"),
            w.report_evaluation(with_token(ev, token)).await,
            &u,
        );
        let header = pb::UpdateHeader {
            worker_id: id(),
            job_id: job.job_id.clone(),
            round: 1,
            round_token: "t".into(),
            num_samples: 1,
            ..Default::default()
        };
        let chunks = vec![pb::UpdateChunk {
            part: Some(pb::update_chunk::Part::Header(header)),
        }];
        assert_refused(
            &format!("UploadUpdate, {case}"),
            w.upload_update(with_token(tokio_stream::iter(chunks), token))
                .await,
            &u,
        );
    }
    // A session token of a worker id that does not exist.
    let ghost = pb::GetTaskRequest {
        worker_id: "w-999".into(),
        wait_ms: 0,
    };
    assert_refused(
        "GetTask of an unknown worker",
        w.get_task(with_token(ghost, Some(&one.session_token)))
            .await,
        &u,
    );

    // The operator API: no token, a guess, a worker's session token, the enrollment token.
    operator_refuses(
        &mut op,
        "no token",
        None,
        Code::Unauthenticated,
        &job.job_id,
    )
    .await;
    operator_refuses(
        &mut op,
        "a guessed token",
        Some("admin-0123456788"),
        Code::PermissionDenied,
        &job.job_id,
    )
    .await;
    operator_refuses(
        &mut op,
        "a worker session token",
        Some(&one.session_token),
        Code::PermissionDenied,
        &job.job_id,
    )
    .await;
    operator_refuses(
        &mut op,
        "the enrollment token",
        Some(ENROLL),
        Code::PermissionDenied,
        &job.job_id,
    )
    .await;

    assert_eq!(
        snapshot(&mut op).await,
        before,
        "a refused call changed the jobs or the workers"
    );
    // The right tokens work: the same calls could have succeeded.
    w.get_task(with_token(
        pb::GetTaskRequest {
            worker_id: one.worker_id.clone(),
            wait_ms: 0,
        },
        Some(&one.session_token),
    ))
    .await
    .unwrap();
    let cancelled = op
        .cancel_job(with_token(
            pb::CancelJobRequest {
                job_id: job.job_id.clone(),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state, pb::JobState::Cancelled as i32);
}

/// Secrets stay out of `{:?}` output: the tokens and the TLS key of a resolved configuration.
#[test]
fn configuration_debug_hides_secrets() {
    let pki = pki();
    let dir = temp_dir("debug");
    let config = CoordinatorArgs {
        tls_cert: Some(write(&dir, "server.pem", &pki.server_cert)),
        tls_key: Some(write(&dir, "server.key", &pki.server_key)),
        ..args()
    }
    .resolve()
    .unwrap();
    let text = format!("{config:?} {config:#?}");
    for secret in [ENROLL, ADMIN, pki.server_key.lines().nth(1).unwrap()] {
        assert!(!text.contains(secret), "{secret:?} shows in {text}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
