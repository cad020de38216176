//! Real worker loops (`fedcsg_worker::run`, training on the bundled data) inside the test
//! process, and following a job's rounds: for tests that need real training but not processes.

use std::time::Duration;

use clap::Parser;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use fedcsg_worker::{WorkerArgs, WorkerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// `n` in-process workers; worker i trains partition i of n.
pub struct InProcessWorkers {
    quit: watch::Sender<bool>,
    handles: Vec<JoinHandle<Result<(), fedcsg_worker::WorkerError>>>,
}

impl InProcessWorkers {
    /// Starts them against the coordinator at `url`, named `{name}-{i}`, one at a time (each
    /// joined before the next starts), so worker ids, and with them the local training seeds,
    /// follow the partitions the same way in every run.
    pub async fn start(
        url: &str,
        n: usize,
        name: &str,
        op: &mut OperatorServiceClient<Channel>,
    ) -> Self {
        let (quit, quitting) = watch::channel(false);
        let mut handles = Vec::new();
        for i in 0..n {
            let args = WorkerArgs::try_parse_from([
                "fedcsg-worker",
                "--coordinator",
                url,
                "--name",
                &format!("{name}-{i}"),
                "--data",
                "bundled",
                "--num-partitions",
                &n.to_string(),
                "--partition-id",
                &i.to_string(),
            ])
            .unwrap();
            let config = WorkerConfig::from_args(args).unwrap();
            let mut q = quitting.clone();
            handles.push(tokio::spawn(fedcsg_worker::run(config, async move {
                let _ = q.wait_for(|q| *q).await;
            })));
            wait_for_workers(op, i + 1).await;
        }
        Self { quit, handles }
    }

    /// Set when the workers are asked to stop (for other tasks of a test to stop with them).
    pub fn quitting(&self) -> watch::Receiver<bool> {
        self.quit.subscribe()
    }

    /// Asks every worker to stop and waits for them (30 s at most each).
    pub async fn stop(self) {
        let _ = self.quit.send(true);
        for w in self.handles {
            let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
        }
    }
}

/// Waits until the coordinator lists at least `n` workers.
pub async fn wait_for_workers(op: &mut OperatorServiceClient<Channel>, n: usize) {
    while op
        .list_workers(pb::ListWorkersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .workers
        .len()
        < n
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every committed round of `job` until it ends (a round over 5 minutes fails the test).
pub async fn watch_rounds(
    op: &mut OperatorServiceClient<Channel>,
    job: &str,
) -> Vec<pb::RoundEvent> {
    let mut stream = op
        .watch_job(pb::WatchJobRequest {
            job_id: job.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut rounds = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(300), stream.message())
        .await
        .expect("a round took over 5 minutes")
        .unwrap()
    {
        // Round 0 ends a watch on a job that ended between rounds.
        if e.round > 0 {
            rounds.push(e);
        }
    }
    rounds
}
