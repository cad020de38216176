//! A stateful strategy survives a coordinator restart exactly: a FedAdam job whose updates are
//! scripted (deterministic deltas from two clients over real gRPC, no training) runs 3 rounds
//! on a coordinator stopped and restarted on the same state directory after round 2, and ends
//! with a global model bit-identical to an uninterrupted run's. The restart reloads the round's
//! moments (m, v) from their committed file; restarting with fresh moments would give another
//! model, so the comparison fails if the state is not resumed.

mod support;

use std::path::Path;
use std::time::Duration;

use fedcsg_core::tensor::{NamedTensor, StateDict};
use fedcsg_server::config::CoordinatorArgs;
use fedcsg_wire::delta::stays_plain;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use fedcsg_wire::proto::v1::worker_service_client::WorkerServiceClient;
use support::hostile::{header_of, join_request, messages};
use support::{JobShape, assemble, authed, export, job_spec};
use tonic::transport::Channel;

const ROUNDS: u64 = 3;

/// A coordinator on `dir`; stopping it waits until it has shut down.
struct Running {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

async fn start(dir: &Path) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = CoordinatorArgs {
        data: Some("none".into()),
        state_dir: Some(dir.to_path_buf()),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        fedcsg_server::run(listener, config, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Running { url, stop, done }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.done)
            .await
            .expect("the coordinator shuts down")
            .unwrap();
    }
}

/// Client `who`'s scripted update for `round`: the global model plus a fixed pattern of small
/// steps in every trained tensor (running statistics unchanged).
fn scripted(global: StateDict, who: usize, round: u64) -> StateDict {
    let tensors = global
        .into_tensors()
        .into_iter()
        .map(|t| {
            if stays_plain(&t.name) {
                return t;
            }
            let values = t
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let phase = (i as f32) * 0.37 + (who as f32) * 1.3 + (round as f32) * 0.71;
                    v + 0.01 * phase.sin()
                })
                .collect();
            NamedTensor { values, ..t }
        })
        .collect();
    StateDict::new(tensors).unwrap()
}

/// Joins client `who` and, until `rounds` rounds of `job` are committed, answers each train task
/// with its scripted update.
async fn client(url: String, who: usize, job: String, rounds: u64) {
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut w = WorkerServiceClient::new(channel.clone());
    let mut op = OperatorServiceClient::new(channel);
    let join = w
        .join(join_request(&format!("scripted-{who}")))
        .await
        .unwrap()
        .into_inner();
    let (id, token) = (join.worker_id, join.session_token);
    loop {
        let done = op
            .get_job(pb::GetJobRequest {
                job_id: job.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .rounds_completed;
        if done >= rounds {
            return;
        }
        let _ = w
            .heartbeat(authed(
                pb::HeartbeatRequest {
                    worker_id: id.clone(),
                    busy_with_round_token: String::new(),
                },
                &token,
            ))
            .await;
        let task = w
            .get_task(authed(
                pb::GetTaskRequest {
                    worker_id: id.clone(),
                    wait_ms: 0,
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner()
            .task;
        if let Some(pb::get_task_response::Task::Train(t)) = task {
            let global = assemble(
                w.download_model(authed(
                    pb::DownloadModelRequest {
                        worker_id: id.clone(),
                        job_id: t.job_id.clone(),
                        round_token: t.round_token.clone(),
                    },
                    &token,
                ))
                .await
                .unwrap()
                .into_inner(),
            )
            .await;
            let update = scripted(global, who, t.round);
            let (header, chunks) = header_of(&update, &id, &t.job_id, t.round, &t.round_token);
            w.upload_update(authed(
                tokio_stream::iter(messages(Some(header), chunks)),
                &token,
            ))
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the job's rounds up to `until` with two scripted clients on a running coordinator.
async fn run_rounds(url: &str, job: &str, until: u64) {
    let clients: Vec<_> = (0..2)
        .map(|who| tokio::spawn(client(url.to_owned(), who, job.to_owned(), until)))
        .collect();
    for c in clients {
        tokio::time::timeout(Duration::from_secs(120), c)
            .await
            .expect("rounds complete")
            .unwrap();
    }
}

async fn create_fedadam_job(url: &str) -> String {
    let mut op = OperatorServiceClient::new(
        Channel::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let spec = pb::JobSpec {
        strategy: "fedadam".into(),
        strategy_params: Some(pb::StrategyParams {
            server_learning_rate: Some(0.05),
            ..Default::default()
        }),
        ..job_spec(
            "fedadam-resume",
            JobShape {
                rounds: ROUNDS as u32,
                min_workers: 2,
                deadline_seconds: 120,
                max_samples: 0,
                seed: 11,
            },
        )
    };
    op.create_job(pb::CreateJobRequest { spec: Some(spec) })
        .await
        .unwrap()
        .into_inner()
        .job_id
}

async fn final_model(url: &str, job: &str) -> StateDict {
    let mut op = OperatorServiceClient::new(
        Channel::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    export(&mut op, job).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fedadam_resumes_bit_identically_after_a_restart() {
    let base = std::env::temp_dir().join(format!("fedcsg-strategy-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (straight, restarted) = (base.join("straight"), base.join("restarted"));

    // Uninterrupted: 3 rounds on one coordinator.
    let c = start(&straight).await;
    let job = create_fedadam_job(&c.url).await;
    run_rounds(&c.url, &job, ROUNDS).await;
    let want = final_model(&c.url, &job).await;
    c.stop().await;

    // Interrupted: 2 rounds, a restart on the same state directory, the last round.
    let c = start(&restarted).await;
    let job2 = create_fedadam_job(&c.url).await;
    assert_eq!(job2, job, "the same job id in a fresh state directory");
    run_rounds(&c.url, &job, 2).await;
    c.stop().await;
    let state_file = restarted.join(format!("models/{job}/round-000002.strategy.safetensors"));
    assert!(
        state_file.exists(),
        "round 2's moments are committed beside its model"
    );
    let c = start(&restarted).await;
    run_rounds(&c.url, &job, ROUNDS).await;
    let got = final_model(&c.url, &job).await;
    c.stop().await;

    assert_eq!(
        got.fingerprint(),
        want.fingerprint(),
        "the resumed FedAdam job must end bit-identical to the uninterrupted one"
    );
    let _ = std::fs::remove_dir_all(&base);
}
