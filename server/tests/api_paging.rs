//! The operator API stays within its message limits on a long job of a large fleet: GetJob
//! sends the job and its last rounds, ListRounds pages through every round, ListJobs and
//! ListWorkers page; every answer is far below 1 MiB. The long job is a real SQLite state
//! directory holding 300 committed rounds of 200 workers each (about 4 MB of round records),
//! served by a real coordinator over gRPC.

use std::collections::BTreeSet;

use fedcsg_server::config::CoordinatorArgs;
use fedcsg_server::job::{JobState, RoundRecord, WorkerRoundStats};
use fedcsg_server::store::{RoundFiles, Store};
use fedcsg_wire::proto::v1 as pb;
use prost::Message;
use tonic::Code;

mod support;
use support::fake_worker::FakeWorker;
use support::{operator, pki::temp_dir, start_with};

const ROUNDS: u64 = 300;
const WORKERS: usize = 200;
const MIB: usize = 1024 * 1024;

fn args(state_dir: &std::path::Path) -> CoordinatorArgs {
    CoordinatorArgs {
        data: Some("none".into()),
        state_dir: Some(state_dir.to_path_buf()),
        ..Default::default()
    }
}

fn record(round: u64, model_sha256: &str) -> RoundRecord {
    let workers: Vec<WorkerRoundStats> = (0..WORKERS)
        .map(|w| WorkerRoundStats {
            worker_id: format!("w-{w}"),
            num_samples: 600 + w as u64,
            train_loss: 1.0 / (round as f64 + w as f64 + 1.0),
            bytes_up: 466_123,
            bytes_down: 466_456,
            train_seconds: 3.25,
            full_filter_f32_bytes: 1_098_000,
        })
        .collect();
    RoundRecord {
        round,
        sampled: WORKERS,
        participants: workers.iter().map(|w| w.worker_id.clone()).collect(),
        train_loss: 0.5,
        test_accuracy: Some(0.8),
        test_loss: Some(0.6),
        federated_accuracy: None,
        bytes_down: 466_456 * WORKERS as u64,
        bytes_up: 466_123 * WORKERS as u64,
        full_filter_f32_bytes_up: 1_098_000 * WORKERS as u64,
        full_filter_f32_bytes_down: 1_098_000 * WORKERS as u64,
        seconds: 4.5,
        model_sha256: model_sha256.into(),
        workers,
        clip_norm: None,
        clipped_updates: 0,
        aggregation_seconds: 0.01,
        selected: None,
        learning_rate: Some(0.05),
        client_evaluation: None,
        privacy: None,
    }
}

/// A state directory with one job of `ROUNDS` committed rounds (made by a real coordinator,
/// then given its history through the store) and two more jobs.
async fn long_job_state() -> std::path::PathBuf {
    let dir = temp_dir("api-paging");
    {
        let (url, stop) = start_with(args(&dir)).await;
        let mut op = operator(&url).await;
        let mut spec = support::job_spec(
            "long",
            support::JobShape {
                rounds: 1000,
                min_workers: 1000,
                deadline_seconds: 60,
                max_samples: 32,
                seed: 1,
            },
        );
        if let Some(m) = spec.model.as_mut() {
            m.csg = "seeded:12-72".into();
        }
        for _ in 0..3 {
            op.create_job(pb::CreateJobRequest {
                spec: Some(spec.clone()),
            })
            .await
            .unwrap();
        }
        drop(stop);
        // The coordinator lets go of the database once its serve future ends.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let store = Store::open(&dir).unwrap();
    let job = store
        .load_jobs()
        .unwrap()
        .into_iter()
        .find(|j| j.id == "job-1")
        .unwrap();
    // Every round names the same model file: only the last one is read back.
    let (file, sha) = store.write_model("job-1", ROUNDS, &job.global).unwrap();
    let files = RoundFiles {
        model: (file, sha.clone()),
        strategy: None,
    };
    for round in 1..=ROUNDS {
        store
            .commit_round(
                "job-1",
                &record(round, &sha),
                &files,
                JobState::Running,
                "running",
            )
            .unwrap();
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_jobs_answers_stay_small_and_list_rounds_pages_through_every_round() {
    let dir = long_job_state().await;
    let (url, _stop) = start_with(args(&dir)).await;
    let mut op = operator(&url).await;

    // GetJob: the job and its last 10 rounds by default.
    let job = op
        .get_job(pb::GetJobRequest {
            job_id: "job-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.rounds_completed, ROUNDS);
    let rounds: Vec<u64> = job.rounds.iter().map(|r| r.round).collect();
    assert_eq!(rounds, ((ROUNDS - 9)..=ROUNDS).collect::<Vec<_>>());
    assert_eq!(job.rounds[0].workers.len(), WORKERS);
    assert!(
        job.encoded_len() < MIB,
        "GetJob answer is {} bytes",
        job.encoded_len()
    );

    // Asking for every round gets as many of the last ones as fit, still under 1 MiB.
    let all = op
        .get_job(pb::GetJobRequest {
            job_id: "job-1".into(),
            last_rounds: Some(1000),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        all.encoded_len() < MIB,
        "GetJob answer is {} bytes",
        all.encoded_len()
    );
    assert!(all.rounds.len() > 10 && (all.rounds.len() as u64) < ROUNDS);
    assert_eq!(all.rounds.last().unwrap().round, ROUNDS);
    let summary = op
        .get_job(pb::GetJobRequest {
            job_id: "job-1".into(),
            last_rounds: Some(0),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(summary.rounds.is_empty());
    assert_eq!(summary.rounds_completed, ROUNDS);

    // ListRounds: every round exactly once, in order, each page under 1 MiB.
    let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = op
            .list_rounds(pb::ListRoundsRequest {
                job_id: "job-1".into(),
                page_size: 100,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            page.encoded_len() < MIB,
            "page of {} bytes",
            page.encoded_len()
        );
        assert!(!page.rounds.is_empty());
        seen.extend(page.rounds.iter().map(|r| r.round));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, (1..=ROUNDS).collect::<Vec<_>>());
    assert!(
        pages > 3,
        "100-round pages are cut by the byte budget: {pages} pages"
    );

    // Refusals name what was wrong.
    for (req, needle) in [
        (
            pb::ListRoundsRequest {
                job_id: "job-1".into(),
                page_size: 5000,
                page_token: String::new(),
            },
            "page_size 5000",
        ),
        (
            pb::ListRoundsRequest {
                job_id: "job-1".into(),
                page_size: 0,
                page_token: "17".into(),
            },
            "page_token",
        ),
    ] {
        let err = op.list_rounds(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(needle), "{}", err.message());
    }
    let err = op
        .list_rounds(pb::ListRoundsRequest {
            job_id: "job-9".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // ListJobs pages in id order, without rounds.
    let first = op
        .list_jobs(pb::ListJobsRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.jobs.len(), 2);
    assert!(first.jobs.iter().all(|j| j.rounds.is_empty()));
    assert_eq!(first.jobs[0].rounds_completed, ROUNDS);
    let second = op
        .list_jobs(pb::ListJobsRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.jobs.len(), 1);
    assert!(second.next_page_token.is_empty());
    let ids: BTreeSet<String> = first
        .jobs
        .iter()
        .chain(&second.jobs)
        .map(|j| j.job_id.clone())
        .collect();
    assert_eq!(ids.len(), 3);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_workers_pages_through_every_worker_once() {
    let (url, _stop) = start_with(CoordinatorArgs {
        data: Some("none".into()),
        ..Default::default()
    })
    .await;
    let mut op = operator(&url).await;
    let mut joined = BTreeSet::new();
    let mut keep = Vec::new();
    for i in 0..25 {
        let w = FakeWorker::join(&url, &format!("pager-{i}")).await;
        joined.insert(w.id.clone());
        keep.push(w);
    }
    let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = op
            .list_workers(pb::ListWorkersRequest {
                page_size: 10,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.workers.len() <= 10);
        seen.extend(page.workers.into_iter().map(|w| w.worker_id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25, "no worker twice");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), joined);
    let err = op
        .list_workers(pb::ListWorkersRequest {
            page_size: 5001,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
