//! Differential privacy with real gRPC and the real worker loop (in-process workers training on
//! the bundled data): central DP reports each round's ε from the accountant and stops before a
//! round would pass the target; local DP sends each worker its clipping and noise; settings DP
//! cannot honour are refused at create, naming what to change.

mod support;

use fedcsg_core::privacy::RdpAccountant;
use fedcsg_server::config::CoordinatorArgs;
use fedcsg_wire::proto::v1 as pb;
use support::in_process::{InProcessWorkers, watch_rounds};
use support::{JobShape, job_spec, start_with};

const WORKERS: usize = 3;

/// The L2 bound of the tests' updates: far below what a round of local SGD moves, so every
/// update is clipped.
const CLIP: f64 = 1e-3;

fn dp(mode: &str, z: f64, target_epsilon: Option<f64>) -> pb::DifferentialPrivacy {
    pb::DifferentialPrivacy {
        mode: mode.into(),
        noise_multiplier: z,
        clip_norm: CLIP,
        target_quantile: None,
        delta: Some(1e-5),
        target_epsilon,
    }
}

fn spec(rounds: u32, privacy: pb::DifferentialPrivacy) -> pb::JobSpec {
    pb::JobSpec {
        bn_stats: "local".into(),
        privacy: Some(privacy),
        ..job_spec(
            "dp",
            JobShape {
                rounds,
                min_workers: WORKERS as u32,
                deadline_seconds: 300,
                max_samples: 64,
                seed: 9,
            },
        )
    }
}

/// Runs `spec` on a fresh coordinator with three in-process workers; the job's rounds and the
/// finished job.
async fn run(spec: pb::JobSpec) -> (Vec<pb::RoundEvent>, pb::Job) {
    let (url, _stop) = start_with(CoordinatorArgs {
        data: Some("bundled".into()),
        test_limit: Some(200),
        ..Default::default()
    })
    .await;
    let mut op = support::operator(&url).await;
    let workers = InProcessWorkers::start(&url, WORKERS, "dp", &mut op).await;
    let job = op
        .create_job(pb::CreateJobRequest { spec: Some(spec) })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let rounds = watch_rounds(&mut op, &job).await;
    let done = op
        .get_job(pb::GetJobRequest {
            job_id: job,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    workers.stop().await;
    (rounds, done)
}

/// ε after `rounds` rounds of noise multiplier `z` at sampling rate `q` (δ = 1e-5), from the
/// accountant itself.
fn epsilon(z: f64, q: f64, rounds: u64) -> f64 {
    let mut a = RdpAccountant::new();
    a.step(z, q, rounds).unwrap();
    a.epsilon(1e-5).unwrap().0
}

/// Central DP: every round records its sampling rate (all 3 of 3 workers: 1), bound and noise
/// multiplier, and ε equals the accountant's after that many rounds; the job stops, succeeded,
/// before the round that would pass the target (between ε after 2 and after 3 rounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_dp_reports_epsilon_and_stops_at_the_target() {
    let z = 2.0;
    let target = (epsilon(z, 1.0, 2) + epsilon(z, 1.0, 3)) / 2.0;
    let (rounds, job) = run(spec(5, dp("central", z, Some(target)))).await;
    assert_eq!(rounds.len(), 2, "{}", job.message);
    assert_eq!(job.state, pb::JobState::Succeeded as i32);
    assert!(
        job.message.contains("privacy budget reached"),
        "{}",
        job.message
    );
    for (i, e) in rounds.iter().enumerate() {
        let p = e.privacy.as_ref().expect("a DP round records its privacy");
        assert_eq!(p.mode, "central");
        assert_eq!(
            (p.sample_rate, p.clip_norm, p.noise_multiplier),
            (1.0, CLIP, z)
        );
        let expected = epsilon(z, 1.0, i as u64 + 1);
        assert!(
            (p.epsilon - expected).abs() < 1e-9 * expected,
            "round {}: epsilon {} != {expected}",
            e.round,
            p.epsilon
        );
        assert_eq!(e.participants as usize, WORKERS);
        // The coordinator clipped every update to the bound.
        assert_eq!((e.clip_norm, e.clipped_updates), (CLIP, WORKERS as u32));
    }
    assert!(
        rounds[1].privacy.as_ref().unwrap().epsilon > rounds[0].privacy.as_ref().unwrap().epsilon
    );
}

/// Local DP: the job runs with every round accounted at sampling rate 1 (each worker's own
/// updates), and the coordinator does not clip (the workers did).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_dp_accounts_each_workers_updates() {
    let z = 1.5;
    let (rounds, job) = run(spec(2, dp("local", z, None))).await;
    assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.message);
    assert_eq!(rounds.len(), 2);
    for (i, e) in rounds.iter().enumerate() {
        let p = e.privacy.as_ref().unwrap();
        assert_eq!((p.mode.as_str(), p.sample_rate), ("local", 1.0));
        let expected = epsilon(z, 1.0, i as u64 + 1);
        assert!((p.epsilon - expected).abs() < 1e-9 * expected);
        assert_eq!(
            e.clip_norm, 0.0,
            "the coordinator does not clip under local DP"
        );
        assert_eq!(e.participants as usize, WORKERS);
    }
}

/// Settings DP cannot honour are refused at create with INVALID_ARGUMENT naming the fix, and
/// create nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_dp_cannot_honour_are_refused() {
    let (url, _stop) = support::start().await;
    let mut op = support::operator(&url).await;
    let base = spec(3, dp("central", 1.0, None));
    let cases: Vec<(pb::JobSpec, &str)> = vec![
        (
            pb::JobSpec {
                bn_stats: "averaged".into(),
                ..base.clone()
            },
            "needs bn_stats local",
        ),
        (
            pb::JobSpec {
                strategy: "median".into(),
                ..base.clone()
            },
            "looks at individual updates",
        ),
        (
            pb::JobSpec {
                federated_evaluation: true,
                ..base.clone()
            },
            "federated_evaluation",
        ),
        (
            pb::JobSpec {
                clipping: Some(pb::UpdateClipping {
                    norm: 1.0,
                    ..Default::default()
                }),
                ..base.clone()
            },
            "leave spec.clipping unset",
        ),
        (
            pb::JobSpec {
                privacy: Some(dp("central", 0.0, None)),
                ..base.clone()
            },
            "spec.privacy.noise_multiplier",
        ),
        (
            pb::JobSpec {
                privacy: Some(dp("somewhere", 1.0, None)),
                ..base.clone()
            },
            "central or local",
        ),
        (
            pb::JobSpec {
                privacy: Some(pb::DifferentialPrivacy {
                    target_quantile: Some(0.5),
                    ..dp("local", 1.0, None)
                }),
                ..base.clone()
            },
            "needs mode central",
        ),
    ];
    for (spec, why) in cases {
        let status = op
            .create_job(pb::CreateJobRequest { spec: Some(spec) })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(why),
            "{why}: {}",
            status.message()
        );
    }
    let jobs = op
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(jobs.is_empty(), "a refused job was created: {jobs:?}");
}
