//! Liveness over real sockets: a slow worker that keeps heartbeating is never declared dead; a
//! silent one is dropped after the configured timeout and its round closes with the quorum; a
//! real worker process cut off from the coordinator by a network partition (a TCP proxy that
//! drops every connection) keeps running and rejoins the federation when the network returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fedcsg_server::config::CoordinatorArgs;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;

mod support;
use support::fake_worker::{FakeWorker, workers};
use support::start_with;

async fn start_coordinator(extra: CoordinatorArgs) -> (String, tokio::sync::oneshot::Sender<()>) {
    start_with(CoordinatorArgs {
        data: Some("none".into()),
        heartbeat_interval_ms: Some(200),
        heartbeat_timeout_secs: Some(2),
        ..extra
    })
    .await
}

fn spec(min_workers: u32, rounds: u32, deadline: u32) -> pb::JobSpec {
    let mut spec = support::job_spec(
        "liveness",
        support::JobShape {
            rounds,
            min_workers,
            deadline_seconds: deadline,
            max_samples: 32,
            seed: 1,
        },
    );
    // A seeded generator: nothing of it is trained, so rounds stay cheap.
    if let Some(model) = spec.model.as_mut() {
        model.csg = "seeded:12-72".into();
    }
    spec
}

/// A worker that "trains" for three heartbeat timeouts while heartbeating is never dropped and
/// its update is accepted; a worker that goes silent is dropped after the timeout and the round
/// closes with the quorum long before its 60 s deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_slow_workers_and_silence_drops_them() {
    let (url, _stop) = start_coordinator(CoordinatorArgs::default()).await;
    let mut op = OperatorServiceClient::new(
        Channel::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let mut slow = FakeWorker::join(&url, "slow").await;
    let mut silent = FakeWorker::join(&url, "silent").await;
    op.create_job(pb::CreateJobRequest {
        spec: Some(spec(1, 1, 60)),
    })
    .await
    .unwrap();
    let t_slow = slow.train_task().await;
    let _t_silent = silent.train_task().await;
    let global = slow.download(&t_slow).await;
    let started = Instant::now();
    // 6 s of "training" with heartbeats every 200 ms; the other worker says nothing.
    while started.elapsed() < Duration::from_secs(6) {
        slow.heartbeat(&t_slow.round_token).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let list = workers(&mut op).await;
    let state = |name: &str| {
        list.iter()
            .find(|w| w.worker_name == name)
            .unwrap()
            .state
            .clone()
    };
    assert_eq!(
        state("slow"),
        "training",
        "a heartbeating worker was dropped"
    );
    assert_eq!(state("silent"), "gone", "a silent worker was kept");
    let ok = slow.upload(&t_slow, &global).await.unwrap();
    assert!(ok.accepted);
    // The silent worker is gone, the quorum (1) is met: the round closes now, not at 60 s.
    let mut stream = op
        .watch_job(pb::WatchJobRequest {
            job_id: t_slow.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let e = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("round did not close at quorum")
        .unwrap()
        .unwrap();
    assert_eq!(e.participant_ids, vec![slow.id.clone()]);
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A TCP proxy whose link can be cut (every connection dropped, new ones refused) and restored.
async fn proxy(target: String, up: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                return;
            };
            if !up.load(Ordering::SeqCst) {
                drop(inbound);
                continue;
            }
            let up = Arc::clone(&up);
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(&target).await else {
                    return;
                };
                let (mut ri, mut wi) = inbound.into_split();
                let (mut ro, mut wo) = outbound.into_split();
                let a = tokio::io::copy(&mut ri, &mut wo);
                let b = tokio::io::copy(&mut ro, &mut wi);
                let cut = async {
                    while up.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                tokio::select! { _ = a => {}, _ = b => {}, _ = cut => {} }
            });
        }
    });
    format!("http://{addr}")
}

/// A real worker process behind a partitionable link: cut for longer than the heartbeat
/// timeout, the coordinator drops it and rounds go on without it; the process keeps running,
/// and when the link returns it rejoins and takes part in rounds again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_worker_rejoins_when_the_network_returns() {
    let (url, _stop) = start_coordinator(CoordinatorArgs::default()).await;
    let target = url.trim_start_matches("http://").to_string();
    let up = Arc::new(AtomicBool::new(true));
    let via_proxy = proxy(target, Arc::clone(&up)).await;
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_fedcsg-coordinator"))
        .with_file_name("fedcsg-worker");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    let mut worker = std::process::Command::new(bin)
        .args([
            "--coordinator",
            &via_proxy,
            "--name",
            "island",
            "--data",
            "bundled",
            "--max-retry-seconds",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut op = OperatorServiceClient::new(
        Channel::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let start = Instant::now();
    while !workers(&mut op)
        .await
        .iter()
        .any(|w| w.worker_name == "island" && w.state != "gone")
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "worker never joined"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    up.store(false, Ordering::SeqCst);
    let start = Instant::now();
    while !workers(&mut op)
        .await
        .iter()
        .any(|w| w.worker_name == "island" && w.state == "gone")
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "isolated worker was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the isolated worker process exited"
    );
    // While it is cut off, a job starts and cannot use it.
    let job = op
        .create_job(pb::CreateJobRequest {
            spec: Some(spec(1, 1, 120)),
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_secs(1)).await;
    up.store(true, Ordering::SeqCst);
    let mut stream = op
        .watch_job(pb::WatchJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let e = tokio::time::timeout(Duration::from_secs(120), stream.message())
        .await
        .expect("round never ran after the network returned")
        .unwrap()
        .unwrap();
    assert_eq!(e.participants, 1);
    let list = workers(&mut op).await;
    let island = list
        .iter()
        .find(|w| w.worker_name == "island" && w.state != "gone")
        .expect("worker rejoined");
    assert_eq!(e.participant_ids, vec![island.worker_id.clone()]);
    assert!(worker.try_wait().unwrap().is_none());
    drop(Kill(worker));
}
