//! A real federation for end-to-end tests: a `fedcsg-coordinator` process and `fedcsg-worker`
//! processes on loopback (bundled data, one partition each), killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use tonic::transport::Channel;

use super::bin;

/// Real processes, killed when the cluster is dropped (also when a test fails).
pub struct Cluster {
    pub dir: PathBuf,
    pub url: String,
    pub coordinator: Child,
    pub workers: Vec<Option<Child>>,
    pub num_workers: usize,
    /// Extra flags of worker i (none past the end).
    pub worker_flags: Vec<Vec<String>>,
}

impl Cluster {
    pub fn start(name: &str, workers: usize, extra: &[&str]) -> Self {
        Self::start_with(name, workers, extra, Vec::new())
    }

    /// [`Cluster::start`], with extra flags for worker i in `worker_flags[i]`.
    pub fn start_with(
        name: &str,
        workers: usize,
        extra: &[&str],
        worker_flags: Vec<Vec<String>>,
    ) -> Self {
        let dir = std::env::temp_dir().join(format!("fedcsg-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let addr_file = dir.join("addr");
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--data",
            "bundled",
            "--test-limit",
            "500",
        ];
        args.extend_from_slice(extra);
        let coordinator = Command::new(bin("fedcsg-coordinator"))
            .args(&args)
            .arg("--addr-file")
            .arg(&addr_file)
            .stderr(std::fs::File::create(dir.join("coordinator.log")).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let addr = loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                break a;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "coordinator did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut c = Cluster {
            dir,
            url: format!("http://{addr}"),
            coordinator,
            workers: Vec::new(),
            num_workers: workers,
            worker_flags,
        };
        for i in 0..workers {
            let w = c.spawn_worker(i);
            c.workers.push(Some(w));
        }
        c
    }

    pub fn spawn_worker(&self, i: usize) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("worker-{i}.log")))
            .unwrap();
        Command::new(bin("fedcsg-worker"))
            .args([
                "--coordinator",
                &self.url,
                "--name",
                &format!("e2e-{i}"),
                "--data",
                "bundled",
            ])
            .args([
                "--num-partitions",
                &self.num_workers.to_string(),
                "--partition-id",
                &i.to_string(),
            ])
            .args(self.worker_flags.get(i).into_iter().flatten())
            .env("RUST_LOG", "info")
            .stderr(log)
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    pub fn kill_worker(&mut self, i: usize) {
        if let Some(mut w) = self.workers[i].take() {
            w.kill().unwrap();
            w.wait().unwrap();
        }
    }

    pub fn restart_worker(&mut self, i: usize) {
        self.kill_worker(i);
        self.workers[i] = Some(self.spawn_worker(i));
    }

    pub async fn operator(&self) -> OperatorServiceClient<Channel> {
        OperatorServiceClient::new(
            Channel::from_shared(self.url.clone())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        )
    }

    /// Waits until `n` workers have joined, so the first round samples all of them.
    pub async fn wait_for_workers(&self, op: &mut OperatorServiceClient<Channel>, n: usize) {
        let start = Instant::now();
        loop {
            let workers = op
                .list_workers(pb::ListWorkersRequest::default())
                .await
                .unwrap()
                .into_inner()
                .workers;
            if workers.iter().filter(|w| w.state != "gone").count() >= n {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "only {} workers joined\n{}",
                workers.len(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out += &format!(
                "--- {}\n{}\n",
                entry.path().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for w in self.workers.iter_mut().flatten() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.coordinator.kill();
        let _ = self.coordinator.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("{}", self.logs());
        }
    }
}
