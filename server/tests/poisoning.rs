//! Poisoning with real gRPC: four honest in-process workers (the real worker loop, training on
//! the bundled data) and one hostile client in every round, which uploads the round's global
//! model scaled by −10 (a finite update, every trained tensor, honest batch-norm statistics and
//! sample count). FedAvg without clipping is ruined by it; median, trimmed mean and Multi-Krum
//! finish within 3 points of the clean run (the same four honest workers, FedAvg, no attacker);
//! clipping alone bounds the damage.

mod support;

use std::time::Duration;

use fedcsg_core::tensor::{NamedTensor, StateDict};
use fedcsg_server::config::CoordinatorArgs;
use fedcsg_wire::delta::stays_plain;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use fedcsg_wire::proto::v1::worker_service_client::WorkerServiceClient;
use support::hostile::{header_of, messages};
use support::in_process::{InProcessWorkers, wait_for_workers, watch_rounds};
use support::{JobShape, assemble, authed, job_spec, start_with};
use tonic::transport::Channel;

const HONEST: usize = 4;
const ROUNDS: u32 = 8;
const SAMPLES_PER_ROUND: u64 = 384;

/// How one federation aggregates, and whether the attacker takes part.
struct Scenario {
    name: &'static str,
    strategy: &'static str,
    params: pb::StrategyParams,
    clipping: Option<pb::UpdateClipping>,
    attacked: bool,
    rounds: u32,
}

fn scenario(name: &'static str, strategy: &'static str, attacked: bool) -> Scenario {
    Scenario {
        name,
        strategy,
        params: pb::StrategyParams::default(),
        clipping: None,
        attacked,
        rounds: ROUNDS,
    }
}

/// Runs one federation to its end; returns the test accuracy after each round and the number
/// of updates clipped in each.
async fn federation(s: &Scenario) -> (Vec<f64>, Vec<u32>) {
    let (url, stop) = start_with(CoordinatorArgs {
        data: Some("bundled".into()),
        test_limit: Some(1000),
        ..Default::default()
    })
    .await;
    let channel = Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut op = OperatorServiceClient::new(channel.clone());
    let workers = InProcessWorkers::start(&url, HONEST, "honest", &mut op).await;
    let participants = HONEST + usize::from(s.attacked);
    let attacker = s
        .attacked
        .then(|| tokio::spawn(attack(channel.clone(), workers.quitting())));
    // Every participant joins before the job exists, so each round samples all of them.
    wait_for_workers(&mut op, participants).await;
    let spec = pb::JobSpec {
        strategy: s.strategy.into(),
        strategy_params: Some(s.params),
        clipping: s.clipping,
        ..job_spec(
            s.name,
            JobShape {
                rounds: s.rounds,
                min_workers: participants as u32,
                deadline_seconds: 300,
                max_samples: SAMPLES_PER_ROUND,
                seed: 7,
            },
        )
    };
    let job = op
        .create_job(pb::CreateJobRequest { spec: Some(spec) })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let (mut accuracy, mut clipped) = (Vec::new(), Vec::new());
    for e in watch_rounds(&mut op, &job).await {
        assert_eq!(
            e.participants as usize, participants,
            "{}: round {}",
            s.name, e.round
        );
        accuracy.push(e.test_accuracy);
        clipped.push(e.clipped_updates);
    }
    println!(
        "{}: accuracy per round {accuracy:?}, clipped {clipped:?}",
        s.name
    );
    workers.stop().await;
    if let Some(a) = attacker {
        a.abort();
    }
    drop(stop);
    assert_eq!(accuracy.len(), s.rounds as usize, "{}: rounds", s.name);
    (accuracy, clipped)
}

/// The accuracy a run ends with: the mean of its last three rounds, which damps the
/// round-to-round swing of a short run (one round can move 5 points at this size).
fn final_accuracy(per_round: &[f64]) -> f64 {
    let last = &per_round[per_round.len() - 3..];
    last.iter().sum::<f64>() / last.len() as f64
}

/// The hostile participant: joins like a worker, and in every round it is given uploads the
/// round's global model scaled by −10 in every trained tensor (batch-norm statistics and the
/// sample count as an honest worker would send them).
async fn attack(channel: Channel, quitting: tokio::sync::watch::Receiver<bool>) {
    let mut w = WorkerServiceClient::new(channel);
    let join = w
        .join(pb::JoinRequest {
            num_samples: 1500,
            ..support::hostile::join_request("attacker")
        })
        .await
        .unwrap()
        .into_inner();
    let (id, token) = (join.worker_id, join.session_token);
    let mut last_round = 0;
    while !*quitting.borrow() {
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
            .map(|r| r.into_inner().task);
        if let Ok(Some(pb::get_task_response::Task::Train(t))) = task
            && t.round != last_round
        {
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
            let poisoned = StateDict::new(
                global
                    .into_tensors()
                    .into_iter()
                    .map(|t| NamedTensor {
                        values: if stays_plain(&t.name) {
                            t.values
                        } else {
                            t.values.iter().map(|v| -10.0 * v).collect()
                        },
                        ..t
                    })
                    .collect(),
            )
            .unwrap();
            let (mut header, chunks) =
                header_of(&poisoned, &id, &t.job_id, t.round, &t.round_token);
            header.num_samples = SAMPLES_PER_ROUND;
            let sent = w
                .upload_update(authed(
                    tokio_stream::iter(messages(Some(header), chunks)),
                    &token,
                ))
                .await;
            assert!(
                sent.is_ok(),
                "the poisoned update is finite and well-formed: {sent:?}"
            );
            last_round = t.round;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn robust_strategies_survive_a_poisoning_worker() {
    let clean = federation(&scenario("clean", "fedavg", false)).await.0;
    let clean_final = final_accuracy(&clean);
    assert!(clean_final > 0.5, "the clean run must learn: {clean:?}");

    // FedAvg collapses within a round or two: three show it.
    let fedavg = federation(&Scenario {
        rounds: 3,
        ..scenario("fedavg-attacked", "fedavg", true)
    })
    .await
    .0;
    let fedavg_final = final_accuracy(&fedavg);
    assert!(
        fedavg_final < clean_final - 0.2,
        "FedAvg without clipping must visibly degrade: {fedavg_final} vs clean {clean_final}"
    );

    // The bound sits near honest updates' norms; the attacker's (11x the model's norm) is far
    // above it and is cut down to it.
    let clipped_run = federation(&Scenario {
        clipping: Some(pb::UpdateClipping {
            norm: 2.0,
            ..Default::default()
        }),
        ..scenario("fedavg-clipped", "fedavg", true)
    })
    .await;
    let clipped_final = final_accuracy(&clipped_run.0);
    assert!(
        clipped_run.1.iter().all(|&c| c >= 1),
        "the attacker's update is clipped every round: {:?}",
        clipped_run.1
    );
    assert!(
        clipped_final > fedavg_final + 0.2 && clipped_final > 0.4,
        "clipping bounds the damage: {clipped_final} (unclipped {fedavg_final}, clean {clean_final})"
    );

    for robust in [
        scenario("median", "median", true),
        Scenario {
            params: pb::StrategyParams {
                trim_fraction: Some(0.2),
                ..Default::default()
            },
            ..scenario("trimmed-mean", "trimmed-mean", true)
        },
        // m = n − f, the most Multi-Krum can keep while still leaving f updates out: with the
        // attacker scored out, the four honest updates are averaged. m = 3 dropped an honest update every round as
        // well, and its last rounds trailed the clean run by 3.5 points in one run.
        Scenario {
            params: pb::StrategyParams {
                krum_byzantine: Some(1),
                krum_selected: Some(4),
                ..Default::default()
            },
            ..scenario("multi-krum", "krum", true)
        },
    ] {
        let acc = federation(&robust).await.0;
        let last = final_accuracy(&acc);
        assert!(
            last >= clean_final - 0.03,
            "{} must finish within 3 points of the clean run: {last} vs {clean_final} ({acc:?})",
            robust.name
        );
    }
}
