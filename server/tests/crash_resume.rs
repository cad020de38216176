//! Crash safety with real processes: one job, the coordinator killed eight times (at chosen
//! points through fault injection, which aborts the process like SIGKILL, and twice by a real
//! SIGKILL at random moments) and restarted on the same state directory each time. The job
//! completes; no committed round is lost or repeated; the final model file's SHA-256 equals the
//! one its round record holds; the two workers are never restarted and reconnect by themselves.
//! The job runs FedAdam, so every round also commits the optimiser's moments, and every
//! committed round's state file matches its SHA-256 (the moments a restart resumes from; that
//! resuming them is exact is `strategy_resume.rs`).

mod support;
use support::bin;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

const ROUNDS: u32 = 8;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Procs {
    dir: PathBuf,
    coordinator: Option<Child>,
    workers: Vec<Child>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.workers.iter_mut().chain(self.coordinator.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
                if entry.path().extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(20).collect();
                    eprintln!(
                        "--- {}\n{}",
                        entry.path().display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn start_coordinator(dir: &Path, port: u16, fault: &str, incarnation: usize) -> Child {
    let log = std::fs::File::create(dir.join(format!("coordinator-{incarnation}.log"))).unwrap();
    Command::new(bin("fedcsg-coordinator"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
            "bundled",
            "--test-limit",
            "200",
        ])
        .args([
            "--heartbeat-interval-ms",
            "300",
            "--heartbeat-timeout-secs",
            "3",
        ])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("FEDCSG_FAULT", fault)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn connect(port: u16) -> OperatorServiceClient<Channel> {
    let start = Instant::now();
    loop {
        if let Ok(ch) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            return OperatorServiceClient::new(ch);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "coordinator did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Committed rounds as the database holds them: round -> (record json, model file, sha256).
fn committed(dir: &Path) -> BTreeMap<i64, (String, String, String)> {
    let conn = rusqlite::Connection::open(dir.join("state/state.db")).unwrap();
    let mut stmt = conn.prepare("SELECT round, record_json, model_file, file_sha256 FROM rounds WHERE job_id = 'job-1' ORDER BY round").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

async fn wait_exit(child: &mut Child, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_eight_times_loses_no_round() {
    let dir = std::env::temp_dir().join(format!("fedcsg-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut procs = Procs {
        dir: dir.clone(),
        coordinator: None,
        workers: Vec::new(),
    };
    procs.coordinator = Some(start_coordinator(&dir, port, "", 0));
    let mut op = connect(port).await;
    for i in 0..2 {
        let log = std::fs::File::create(dir.join(format!("worker-{i}.log"))).unwrap();
        procs.workers.push(
            Command::new(bin("fedcsg-worker"))
                .args([
                    "--coordinator",
                    &format!("http://127.0.0.1:{port}"),
                    "--name",
                    &format!("crash-{i}"),
                    "--data",
                    "bundled",
                ])
                .args([
                    "--num-partitions",
                    "2",
                    "--partition-id",
                    &i.to_string(),
                    "--max-retry-seconds",
                    "1",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    let spec = pb::JobSpec {
        strategy: "fedadam".into(),
        ..support::job_spec(
            "crash",
            support::JobShape {
                rounds: ROUNDS,
                min_workers: 2,
                deadline_seconds: 60,
                max_samples: 64,
                seed: 11,
            },
        )
    };
    let job = op
        .create_job(pb::CreateJobRequest { spec: Some(spec) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.job_id, "job-1");
    // Wait for round 1 so every later crash happens mid-job.
    while committed(&dir).is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Each incarnation crashes at its own moment; `None` = a real SIGKILL at a random time.
    let plan: Vec<Option<&str>> = vec![
        Some("download@3"),
        Some("upload@3"),
        Some("aggregate@4"),
        None,
        Some("after-model-write@5"),
        Some("after-commit@6"),
        None,
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut seen: BTreeMap<i64, (String, String, String)> = committed(&dir);
    let mut kills = 0;
    // Incarnation 0 is killed first (at a random moment): it has no fault plan.
    let mut current_fault: Option<&str> = None;
    for (i, next_fault) in plan.iter().enumerate() {
        let coordinator = procs.coordinator.as_mut().unwrap();
        match current_fault {
            Some(point) => assert!(
                wait_exit(coordinator, Duration::from_secs(180)).await,
                "incarnation {i} never reached {point}"
            ),
            None => {
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..4000))).await;
                coordinator.kill().unwrap(); // SIGKILL
            }
        }
        coordinator.wait().unwrap();
        kills += 1;
        // Nothing committed before the kill was lost or changed.
        let now = committed(&dir);
        for (round, row) in &seen {
            assert_eq!(
                now.get(round),
                Some(row),
                "round {round} changed or vanished after kill {kills}"
            );
        }
        seen = now;
        for w in procs.workers.iter_mut() {
            assert!(w.try_wait().unwrap().is_none(), "a worker exited");
        }
        println!(
            "kill {kills} ({}): {} rounds committed",
            current_fault.unwrap_or("SIGKILL"),
            seen.len()
        );
        current_fault = *next_fault;
        procs.coordinator = Some(start_coordinator(
            &dir,
            port,
            current_fault.unwrap_or(""),
            i + 1,
        ));
    }
    // The last incarnation in the loop had the final plan entry (a random SIGKILL): do it, then
    // run a clean one to the end.
    let coordinator = procs.coordinator.as_mut().unwrap();
    tokio::time::sleep(Duration::from_millis(rng.random_range(500..3000))).await;
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    kills += 1;
    procs.coordinator = Some(start_coordinator(&dir, port, "", 99));
    let mut op = connect(port).await;
    let mut stream = op
        .watch_job(pb::WatchJobRequest {
            job_id: "job-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let deadline = Instant::now() + Duration::from_secs(300);
    while let Some(_e) = tokio::time::timeout_at(deadline.into(), stream.message())
        .await
        .expect("job did not finish")
        .unwrap()
    {}
    let done = op
        .get_job(pb::GetJobRequest {
            job_id: "job-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        done.state,
        pb::JobState::Succeeded as i32,
        "{}",
        done.message
    );
    println!("coordinator kills survived: {kills}");
    assert!(kills >= 8);

    let rows = committed(&dir);
    assert_eq!(
        rows.keys().copied().collect::<Vec<_>>(),
        (1..=ROUNDS as i64).collect::<Vec<_>>(),
        "rounds lost or repeated"
    );
    for (round, row) in &seen {
        assert_eq!(rows.get(round), Some(row), "round {round} was redone");
    }
    let (record_json, file, sha) = &rows[&(ROUNDS as i64)];
    let bytes = std::fs::read(dir.join("state").join(file)).unwrap();
    assert_eq!(
        &hex::encode(Sha256::digest(&bytes)),
        sha,
        "final model file does not match its record"
    );
    // Every committed round names its FedAdam state file, and each file is what was committed.
    let conn = rusqlite::Connection::open(dir.join("state/state.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT round, strategy_file, strategy_sha256 FROM rounds WHERE job_id = 'job-1'")
        .unwrap();
    let states: Vec<(i64, Option<String>, Option<String>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(states.len(), ROUNDS as usize);
    for (round, file, sha) in states {
        let (file, sha) = (file.expect("a state file"), sha.expect("its sha256"));
        let bytes = std::fs::read(dir.join("state").join(&file)).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            sha,
            "round {round}'s state file"
        );
    }
    let record: serde_json::Value = serde_json::from_str(record_json).unwrap();
    assert_eq!(record["model_sha256"].as_str(), Some(sha.as_str()));
    assert_eq!(done.rounds.last().unwrap().model_sha256, *sha);
    // Workers were never restarted and are connected to the last incarnation.
    for w in procs.workers.iter_mut() {
        assert!(w.try_wait().unwrap().is_none(), "a worker exited");
    }
    let workers = op
        .list_workers(pb::ListWorkersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .workers;
    let live: Vec<_> = workers
        .iter()
        .filter(|w| w.state != "gone")
        .map(|w| w.worker_name.clone())
        .collect();
    assert!(
        live.contains(&"crash-0".to_string()) && live.contains(&"crash-1".to_string()),
        "{live:?}"
    );
}
