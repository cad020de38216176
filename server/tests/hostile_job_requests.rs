//! The operator's requests, malformed, over real gRPC against an in-process coordinator: every
//! JobSpec field of CreateJob, and every job id GetJob, CancelJob, WatchJob and ExportModel take.
//! Each is refused with INVALID_ARGUMENT (NOT_FOUND for a well-formed id that names no job) and a
//! message naming the field or the rule, and afterwards the jobs, the workers and the global
//! model are exactly as before. The worker's requests are in hostile_worker_requests.rs and
//! hostile_upload_requests.rs.

use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use tonic::Code;
use tonic::transport::Channel;

mod support;
use support::hostile::{Refusals, RoundInTraining, round_in_training, snapshot, spec};
use support::start;

/// Every malformed JobSpec is refused, naming the field, and creates no job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_job_specs_are_refused_and_create_nothing() {
    let (url, _stop) = start().await;
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut op = OperatorServiceClient::new(channel.clone());
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
            with(&|s| s.strategy = "fedsgd".into()),
            "unknown strategy",
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
        (
            "unknown upload encoding",
            with(&|s| s.upload_encoding = 9),
            "spec.upload_encoding: unknown encoding 9",
        ),
        (
            "unknown download encoding",
            with(&|s| s.download_encoding = -1),
            "spec.download_encoding: unknown encoding -1",
        ),
        (
            "top-k fraction above 1",
            with(&|s| s.upload_topk = 1.5),
            "spec.upload_topk",
        ),
        (
            "negative top-k fraction",
            with(&|s| s.upload_topk = -0.1),
            "spec.upload_topk",
        ),
        (
            "NaN top-k fraction",
            with(&|s| s.upload_topk = f64::NAN),
            "spec.upload_topk",
        ),
        (
            "a parameter the strategy does not have",
            with(&|s| {
                s.strategy_params = Some(pb::StrategyParams {
                    beta1: Some(0.9),
                    ..Default::default()
                })
            }),
            "beta1 does not apply to fedavg",
        ),
        (
            "zero adaptivity",
            with(&|s| {
                s.strategy = "fedadam".into();
                s.strategy_params = Some(pb::StrategyParams {
                    tau: Some(0.0),
                    ..Default::default()
                });
            }),
            "strategy_params.tau",
        ),
        (
            "NaN server learning rate",
            with(&|s| {
                s.strategy = "fedavgm".into();
                s.strategy_params = Some(pb::StrategyParams {
                    server_learning_rate: Some(f64::NAN),
                    ..Default::default()
                });
            }),
            "strategy_params.server_learning_rate",
        ),
        (
            "trimming half",
            with(&|s| {
                s.strategy = "trimmed-mean".into();
                s.strategy_params = Some(pb::StrategyParams {
                    trim_fraction: Some(0.5),
                    ..Default::default()
                });
            }),
            "strategy_params.trim_fraction",
        ),
        (
            "krum without enough participants",
            with(&|s| s.strategy = "krum".into()),
            "spec.min_workers when unset) >= 5",
        ),
        (
            "a quorum of 0",
            with(&|s| s.quorum = Some(0)),
            "spec.quorum must be 1..=min_workers",
        ),
        (
            "a quorum above min_workers",
            with(&|s| s.quorum = Some(s.min_workers + 1)),
            "spec.quorum must be 1..=min_workers",
        ),
        (
            "more round retries than allowed",
            with(&|s| s.max_round_retries = Some(1001)),
            "spec.max_round_retries",
        ),
        (
            "a name with a bidi override",
            with(&|s| s.name = "job\u{202e}exe".into()),
            "spec.name",
        ),
        (
            "a robust strategy over its participant cap",
            with(&|s| {
                s.strategy = "median".into();
                s.min_workers = 65;
            }),
            "exceeds the 64 participants",
        ),
        (
            "negative proximal mu",
            with(&|s| {
                s.strategy = "fedprox".into();
                s.strategy_params = Some(pb::StrategyParams {
                    proximal_mu: Some(-1.0),
                    ..Default::default()
                });
            }),
            "strategy_params.proximal_mu",
        ),
        (
            "zero clipping bound",
            with(&|s| {
                s.clipping = Some(pb::UpdateClipping {
                    norm: 0.0,
                    ..Default::default()
                })
            }),
            "spec.clipping.norm",
        ),
        (
            "adaptive clipping quantile of 1",
            with(&|s| {
                s.clipping = Some(pb::UpdateClipping {
                    norm: 1.0,
                    target_quantile: Some(1.0),
                    learning_rate: None,
                })
            }),
            "spec.clipping.target_quantile",
        ),
        (
            "weight share above 1",
            with(&|s| s.max_weight_share = Some(1.5)),
            "spec.max_weight_share",
        ),
        (
            "unknown learning-rate schedule",
            with(&|s| s.lr_schedule = "linear".into()),
            "spec.lr_schedule",
        ),
        (
            "step schedule that grows the rate",
            with(&|s| s.lr_schedule = "step:5:2".into()),
            "spec.lr_schedule",
        ),
        (
            "unknown code initialisation",
            with(&|s| s.model.as_mut().unwrap().csg = "12-72/huge".into()),
            "spec.model.csg",
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
        op.list_jobs(pb::ListJobsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .jobs
            .is_empty(),
        "a refused spec created a job"
    );
    eprintln!(
        "hostile job specs: {} distinct malformed or misdirected requests refused",
        refused.0
    );
}

/// A job id that is missing, too long, holds a control character or names no job is refused by
/// each operator call that takes one, and the job in training, its workers and its model stay
/// as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_calls_naming_a_bad_job_are_refused_and_change_nothing() {
    let RoundInTraining {
        mut op,
        job,
        before,
        stop: _stop,
        ..
    } = round_in_training().await;
    let mut refused = Refusals::default();
    let ia = Code::InvalidArgument;

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
            op.get_job(pb::GetJobRequest {
                job_id: id.clone(),
                ..Default::default()
            })
            .await,
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
    eprintln!(
        "hostile operator calls: {} distinct malformed or misdirected requests refused",
        refused.0
    );
}
