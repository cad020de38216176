//! Supervision with real processes: a panic in one job's round driver (injected through
//! FEDCSG_FAULT) fails that job and not another, and the coordinator keeps serving; on SIGTERM
//! the coordinator tells its waiting workers they are done (they exit cleanly instead of
//! retrying a closed port) and then exits.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use tonic::transport::Channel;

mod support;
use support::bin;
use support::operator;

/// The processes of one test, killed when it ends; their logs are printed if it failed.
struct Procs {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Procs {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("fedcsg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            dir,
            children: Vec::new(),
        }
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap()
    }

    fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Starts the coordinator on a free port; returns its child index and URL.
    async fn coordinator(&mut self, fault: &str) -> (usize, String) {
        let addr_file = self.dir.join("addr");
        let child = Command::new(bin("fedcsg-coordinator"))
            .args(["--listen", "127.0.0.1:0", "--data", "none"])
            .args(["--heartbeat-interval-ms", "300"])
            .arg("--addr-file")
            .arg(&addr_file)
            .env("FEDCSG_FAULT", fault)
            .stdout(Stdio::null())
            .stderr(self.log("coordinator"))
            .spawn()
            .unwrap();
        self.children.push(child);
        let start = Instant::now();
        let addr = loop {
            if let Ok(addr) = std::fs::read_to_string(&addr_file) {
                break addr;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no coordinator");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        (self.children.len() - 1, format!("http://{addr}"))
    }

    fn worker(&mut self, url: &str, i: usize) -> usize {
        let child = Command::new(bin("fedcsg-worker"))
            .args(["--coordinator", url, "--name", &format!("sup-{i}")])
            .args(["--data", "bundled", "--num-partitions", "2"])
            .args(["--partition-id", &i.to_string(), "--max-retry-seconds", "1"])
            .stdout(Stdio::null())
            .stderr(self.log(&format!("worker-{i}")))
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    async fn wait_exit(&mut self, i: usize, within: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Some(status) = self.children[i].try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            print_logs(&self.dir);
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn print_logs(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            eprintln!(
                "--- {}\n{}",
                entry.path().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

fn spec(name: &str, rounds: u32) -> pb::JobSpec {
    let mut spec = support::job_spec(
        name,
        support::JobShape {
            rounds,
            min_workers: 1,
            deadline_seconds: 60,
            max_samples: 32,
            seed: 3,
        },
    );
    if let Some(model) = spec.model.as_mut() {
        model.csg = "seeded:12-72".into();
    }
    spec
}

async fn wait_state(
    op: &mut OperatorServiceClient<Channel>,
    job: &str,
    want: pb::JobState,
    within: Duration,
) -> pb::Job {
    let start = Instant::now();
    loop {
        let j = op
            .get_job(pb::GetJobRequest {
                job_id: job.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if j.state == want as i32 {
            return j;
        }
        assert!(
            start.elapsed() < within,
            "{job} is {:?}, not {want:?}, after {within:?}: {}",
            pb::JobState::try_from(j.state),
            j.message
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `tick@2:panic` panics in the round driver's pass over any job about to run its round 2: the
/// 3-round job fails with the panic as its reason, the 1-round job (never at round 2) succeeds,
/// and the coordinator process lives on and accepts new jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_round_driver_fails_one_job_and_not_another() {
    let mut procs = Procs::new("supervision-panic");
    let (coordinator, url) = procs.coordinator("tick@2:panic").await;
    let mut op = operator(&url).await;
    let long = op
        .create_job(pb::CreateJobRequest {
            spec: Some(spec("long", 3)),
        })
        .await
        .unwrap()
        .into_inner();
    let short = op
        .create_job(pb::CreateJobRequest {
            spec: Some(spec("short", 1)),
        })
        .await
        .unwrap()
        .into_inner();
    procs.worker(&url, 0);
    procs.worker(&url, 1);
    let failed = wait_state(
        &mut op,
        &long.job_id,
        pb::JobState::Failed,
        Duration::from_secs(120),
    )
    .await;
    assert!(
        failed.message.contains("round driver panicked")
            && failed.message.contains("injected panic at tick@2"),
        "{}",
        failed.message
    );
    assert_eq!(failed.rounds.len(), 1, "round 1 committed before the panic");
    let done = wait_state(
        &mut op,
        &short.job_id,
        pb::JobState::Succeeded,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(done.rounds.len(), 1);
    assert!(procs.children[coordinator].try_wait().unwrap().is_none());
    op.list_jobs(pb::ListJobsRequest::default()).await.unwrap();
    assert!(procs.read_log("coordinator").contains("job failed"));
}

/// SIGTERM with two idle workers waiting for tasks: both hear "done" and exit with success
/// within the grace period, and the coordinator exits with success after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_waiting_workers_they_are_done() {
    let mut procs = Procs::new("supervision-sigterm");
    let (coordinator, url) = procs.coordinator("").await;
    let mut op = operator(&url).await;
    let workers = [procs.worker(&url, 0), procs.worker(&url, 1)];
    let start = Instant::now();
    loop {
        let list = op
            .list_workers(pb::ListWorkersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .workers;
        if list.len() == 2 && list.iter().all(|w| w.state == "idle") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{list:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = procs.children[coordinator].id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    for (i, w) in workers.into_iter().enumerate() {
        let status = procs
            .wait_exit(w, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("worker {i} still running 10 s after SIGTERM"));
        assert!(status.success(), "worker {i}: {status}");
        let log = procs.read_log(&format!("worker-{i}"));
        assert!(
            log.contains("coordinator is shutting down"),
            "worker {i}:\n{log}"
        );
        assert!(
            !log.contains("unreachable"),
            "worker {i} retried a closed port:\n{log}"
        );
    }
    let status = procs
        .wait_exit(coordinator, Duration::from_secs(10))
        .await
        .expect("the coordinator exits");
    assert!(status.success(), "coordinator: {status}");
}
