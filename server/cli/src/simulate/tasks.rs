//! Handing the coordinator's tasks to the virtual clients: the clients the coordinator has
//! given a task (one `ListWorkers` call shows them all) ask for it with `GetTask`, as a real
//! worker would, and run it; at most `concurrency` train or evaluate at once (the model pool's
//! permits), and a round's uploads go in client order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fedcsg_wire::proto::v1 as pb;
use fedcsg_worker::assignment::Assignment;
use tokio::task::{JoinHandle, JoinSet};

use super::clients::{self, ModelPool, Pristine, UploadTurn, VirtualClient};
use crate::remote::Operator;

/// How often the coordinator's worker list is read while the job runs.
const POLL: Duration = Duration::from_millis(50);

/// What the clients did over the whole job.
#[derive(Debug, Default, Clone, Copy)]
pub struct TaskCounts {
    pub trained: usize,
    pub evaluated: usize,
    pub failed: usize,
}

enum Work {
    Train(clients::TrainReport),
    Evaluated,
}

/// Runs every task the coordinator hands out until `watcher` (the job's event stream) ends.
pub async fn run_tasks<T>(
    op: &mut Operator,
    clients: &[Arc<VirtualClient>],
    pool: &Arc<ModelPool>,
    watcher: &JoinHandle<T>,
) -> anyhow::Result<TaskCounts> {
    let by_id: HashMap<&str, usize> = clients
        .iter()
        .map(|c| (c.worker_id.as_str(), c.index))
        .collect();
    let pristine = Arc::new(Pristine::default());
    let mut counts = TaskCounts::default();
    let mut busy: HashSet<usize> = HashSet::new();
    let mut handled: HashSet<(usize, String)> = HashSet::new();
    let mut running: JoinSet<(usize, anyhow::Result<Work>)> = JoinSet::new();
    let mut latest_round = 0;
    while !watcher.is_finished() {
        while let Some(done) = running.try_join_next() {
            let (index, outcome) = done?;
            busy.remove(&index);
            match outcome {
                Ok(Work::Train(report)) if report.accepted => counts.trained += 1,
                Ok(Work::Train(_)) => {
                    counts.failed += 1;
                    eprintln!("client {index}: the coordinator did not accept its update");
                }
                Ok(Work::Evaluated) => counts.evaluated += 1,
                Err(e) => {
                    counts.failed += 1;
                    eprintln!("client {index}: task failed: {e:#}");
                }
            }
        }
        let listed = op.all_workers().await?;
        let mut trains = Vec::new();
        for w in listed {
            if w.state != "training" && w.state != "evaluating" {
                continue;
            }
            let Some(&index) = by_id.get(w.worker_id.as_str()) else {
                continue;
            };
            if busy.contains(&index) {
                continue;
            }
            let client = &clients[index];
            let response = client
                .client()
                .get_task(pb::GetTaskRequest {
                    worker_id: client.worker_id.clone(),
                    wait_ms: 0,
                })
                .await?;
            match Assignment::from_proto(response)? {
                Assignment::Train(task) => {
                    if handled.insert((index, task.round.round_token.clone())) {
                        trains.push((index, task));
                    }
                }
                Assignment::Evaluate(task) => {
                    if handled.insert((index, task.round.round_token.clone())) {
                        busy.insert(index);
                        let (client, pool, pristine) =
                            (Arc::clone(client), Arc::clone(pool), Arc::clone(&pristine));
                        running.spawn(async move {
                            let outcome = clients::evaluate(client, task, pool, pristine)
                                .await
                                .map(|()| Work::Evaluated);
                            (index, outcome)
                        });
                    }
                }
                Assignment::Wait { .. } | Assignment::Done { .. } => {}
            }
        }
        // The list is one snapshot, and a round's tasks are handed out at once: these are all
        // of the round's, in client order.
        trains.sort_by_key(|(index, _)| *index);
        if let Some(round) = trains.iter().map(|(_, t)| t.round.round).max()
            && round > latest_round
        {
            latest_round = round;
            for c in clients {
                c.forget_stale_residual(round);
            }
        }
        let turns = UploadTurn::chain(trains.len());
        for ((index, task), turn) in trains.into_iter().zip(turns) {
            busy.insert(index);
            let (client, pool, pristine) = (
                Arc::clone(&clients[index]),
                Arc::clone(pool),
                Arc::clone(&pristine),
            );
            running.spawn(async move {
                let outcome = clients::train(client, task, pool, pristine, turn)
                    .await
                    .map(Work::Train);
                (index, outcome)
            });
        }
        tokio::time::sleep(POLL).await;
    }
    // The job has ended: what is still running finishes (an evaluation report, say) or stops.
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(done) = running.join_next().await {
            let (index, outcome) = done?;
            match outcome {
                Ok(Work::Train(report)) if report.accepted => counts.trained += 1,
                Ok(Work::Evaluated) => counts.evaluated += 1,
                _ => counts.failed += 1,
            }
            busy.remove(&index);
        }
        anyhow::Ok(())
    })
    .await;
    if drained.is_err() {
        running.abort_all();
    }
    Ok(counts)
}
