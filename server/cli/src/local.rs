//! `fedcsg local`: a whole federation on this machine. Starts a coordinator and N worker OS
//! processes on free loopback ports, runs one job, prints a line per round, writes a summary
//! JSON, and stops everything it started (also on Ctrl-C).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use fedcsg_wire::proto::v1 as pb;
use tokio::process::{Child, Command};

use crate::job_args::JobArgs;
use crate::remote::{Operator, round_line};

#[derive(Args)]
pub struct LocalArgs {
    #[arg(long, default_value_t = 4)]
    workers: usize,
    #[command(flatten)]
    job: JobArgs,
    /// iid | dirichlet:ALPHA | shards[:K].
    #[arg(long, default_value = "iid")]
    partition: String,
    /// Coordinator test images (0 = all).
    #[arg(long, default_value_t = 0)]
    test_limit: usize,
    /// Write the run's summary here (schema in README).
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Write a plot of the rounds here at the end (.png or .svg; see `fedcsg plot`).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// The coordinator serves Prometheus metrics here (HOST:PORT).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// The coordinator serves its live dashboard here (HOST:PORT; may equal --metrics-listen).
    #[arg(long)]
    dashboard_listen: Option<String>,
    /// Directory for process logs (default: a temporary directory).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Training threads per worker (default: this machine's cores divided among the workers,
    /// at least 1, so that workers do not fight over the cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// Training threads for each of `workers` workers sharing `cores` cores: an equal share, at
/// least one.
pub fn threads_per_worker(cores: usize, workers: usize) -> usize {
    (cores / workers.max(1)).max(1)
}

pub(crate) fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found next to {}: build it with `cargo build --workspace --bins`",
        name,
        exe.display()
    );
    Ok(path)
}

pub(crate) fn spawn(bin: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

/// Peak resident memory of process `pid` (Linux `VmHWM`), in KiB.
pub fn peak_rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.workers >= 1 && args.workers <= 64,
        "--workers must be 1..=64"
    );
    anyhow::ensure!(
        args.threads.is_none_or(|t| (1..=1024).contains(&t)),
        "--threads must be 1..=1024"
    );
    if let Some(path) = &args.plot {
        crate::plot_cmd::check_out(path)?;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args
        .threads
        .unwrap_or_else(|| threads_per_worker(cores, args.workers));
    let coordinator_bin = sibling_binary("fedcsg-coordinator")?;
    let worker_bin = sibling_binary("fedcsg-worker")?;
    let log_dir = match &args.log_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("fedcsg-local-{}", std::process::id())),
    };
    std::fs::create_dir_all(&log_dir)?;
    let addr_file = log_dir.join("coordinator.addr");
    let _ = std::fs::remove_file(&addr_file);
    let mut children: Vec<Child> = Vec::new();
    let mut coordinator_args = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--addr-file".into(),
        addr_file.display().to_string(),
        "--data".into(),
        args.job.data.clone(),
        "--test-limit".into(),
        args.test_limit.to_string(),
    ];
    for (flag, value) in [
        ("--metrics-listen", &args.metrics_listen),
        ("--dashboard-listen", &args.dashboard_listen),
    ] {
        if let Some(v) = value {
            coordinator_args.extend([flag.to_string(), v.clone()]);
        }
    }
    children.push(spawn(
        &coordinator_bin,
        &coordinator_args,
        &log_dir.join("coordinator.log"),
    )?);
    let started = Instant::now();
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            break a;
        }
        if let Some(status) = children[0].try_wait()? {
            anyhow::bail!(
                "coordinator exited with {status}; see {}",
                log_dir.join("coordinator.log").display()
            );
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "coordinator did not start within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let url = format!("http://{addr}");
    println!(
        "coordinator at {url}; {} workers with {threads} training thread(s) each on {cores} \
         core(s); logs in {}",
        args.workers,
        log_dir.display()
    );
    for i in 0..args.workers {
        let worker_args = vec![
            "--coordinator".into(),
            url.clone(),
            "--name".into(),
            format!("local-{i}"),
            "--data".into(),
            args.job.data.clone(),
            "--partition".into(),
            args.partition.clone(),
            "--num-partitions".into(),
            args.workers.to_string(),
            "--partition-id".into(),
            i.to_string(),
            "--seed".into(),
            args.job.seed.to_string(),
            "--threads".into(),
            threads.to_string(),
        ];
        children.push(spawn(
            &worker_bin,
            &worker_args,
            &log_dir.join(format!("worker-{i}.log")),
        )?);
        // One at a time: worker ids follow the partitions, and with them each worker's local
        // training seeds, so a run is reproducible for a seed (and runs that differ in one
        // setting differ only by it).
        wait_for_joined(&url, i + 1, &mut children, &log_dir).await?;
    }
    let result = tokio::select! {
        r = drive_job(&args, &url, &children) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted: stopping the coordinator and workers")),
    };
    for c in children.iter_mut() {
        let _ = c.start_kill();
    }
    for c in children.iter_mut() {
        let _ = c.wait().await;
    }
    result
}

/// Waits until `n` workers have joined the coordinator at `url`; fails if a process exits.
async fn wait_for_joined(
    url: &str,
    n: usize,
    children: &mut [Child],
    log_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let mut op = Operator::connect_local(url).await?;
    let started = Instant::now();
    loop {
        let joined = op.all_workers().await?.len();
        if joined >= n {
            return Ok(());
        }
        for c in children.iter_mut() {
            if let Some(status) = c.try_wait()? {
                anyhow::bail!(
                    "a process exited with {status} while workers were joining; see the logs in {}",
                    log_dir.display()
                );
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "worker {n} did not join within 300 s; see {}",
            log_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn drive_job(args: &LocalArgs, url: &str, children: &[Child]) -> anyhow::Result<()> {
    let mut op = Operator::connect_local(url).await?;
    let job = op
        .create_job(args.job.spec("local", args.workers as u32)?)
        .await?;
    println!(
        "job {}: {} csg={} on {} workers, {} rounds; exchanges {} values per update ({} bytes as f32), a full-filter exchange {} ({} bytes); {}",
        job.job_id,
        args.job.model,
        args.job.csg,
        args.workers,
        args.job.rounds,
        job.exchanged_values,
        job.exchanged_values * 4,
        job.full_filter_exchanged_values,
        job.full_filter_exchanged_values * 4,
        args.job.exchange_description()
    );
    if let Some(addr) = &args.dashboard_listen {
        println!("dashboard: http://{addr}/");
    }
    let started = Instant::now();
    let mut stream = op.watch_job(&job.job_id).await?;
    let mut rounds = Vec::new();
    while let Some(e) = stream.message().await? {
        // Round 0 ends a watch on a job that failed or was cancelled between rounds.
        if e.round == 0 {
            continue;
        }
        println!("{}", local_round_line(&e, &job));
        rounds.push(e);
    }
    let (final_job, state) = op.job_state(&job.job_id).await?;
    println!(
        "job {} {} in {:.1} s: {}",
        job.job_id,
        state,
        started.elapsed().as_secs_f64(),
        final_job.message
    );
    let coordinator_rss = peak_rss_kib(children[0].id());
    let worker_rss: Vec<Option<u64>> = children[1..].iter().map(|c| peak_rss_kib(c.id())).collect();
    let summary = summary_json(
        &args.job,
        args.workers,
        &job,
        state,
        started.elapsed().as_secs_f64(),
        (coordinator_rss, &worker_rss),
        &rounds,
    );
    if let Some(path) = &args.summary_json {
        write_summary(path, &summary)?;
    }
    if let Some(path) = &args.plot {
        crate::plot_cmd::write(&crate::plot_cmd::from_summary(&summary)?, path)?;
        println!("plot written to {}", path.display());
    }
    ensure_succeeded(&final_job, state)
}

/// Writes a summary JSON and says where.
pub fn write_summary(path: &Path, summary: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("summary written to {}", path.display());
    Ok(())
}

/// An error unless the job ended in success (`state` is its state's name).
pub fn ensure_succeeded(job: &pb::Job, state: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        job.state == pb::JobState::Succeeded as i32,
        "job ended {state}: {}",
        job.message
    );
    Ok(())
}

/// A round's line of `fedcsg local`: [`round_line`], which compares the bytes with a full-filter
/// f32 exchange when the coordinator counted one; from an older coordinator, an estimate of the
/// full-filter upload per worker (the mean upload scaled by the exchanged-values ratio).
pub fn local_round_line(e: &pb::RoundEvent, job: &pb::Job) -> String {
    if e.workers.iter().any(|w| w.full_filter_f32_bytes > 0) {
        return round_line(e);
    }
    let full_equiv = (e.workers.iter().map(|w| w.bytes_up).sum::<u64>() as f64
        / e.workers.len().max(1) as f64)
        * job.full_filter_exchanged_values as f64
        / job.exchanged_values.max(1) as f64;
    format!(
        "{}  (full filters: ~{full_equiv:.0} B/worker)",
        round_line(e)
    )
}

/// The summary JSON of `--summary-json` (schema in README): the job, its exchange sizes, peak
/// memory (coordinator, each worker) and every round with per-worker figures. Figures the
/// coordinator did not measure (negative on the wire) are null.
pub fn summary_json(
    job_args: &JobArgs,
    workers: usize,
    job: &pb::Job,
    state: &str,
    total_seconds: f64,
    (coordinator_rss, worker_rss): (Option<u64>, &[Option<u64>]),
    rounds: &[pb::RoundEvent],
) -> serde_json::Value {
    serde_json::json!({
        "job_id": job.job_id,
        "state": state,
        "model": job_args.model,
        "csg": job_args.csg,
        "data": job_args.data,
        "workers": workers,
        "rounds_requested": job_args.rounds,
        "upload_encoding": job_args.upload_encoding.to_string(),
        "download_encoding": job_args.download_encoding.to_string(),
        "upload_topk": (job_args.topk > 0.0).then_some(job_args.topk),
        "error_feedback": !job_args.no_error_feedback,
        "strategy": job.spec.as_ref().map(|s| s.strategy.clone()),
        "lr": job_args.lr,
        "lr_schedule": job_args.lr_schedule,
        "seed": job_args.seed,
        "exchanged_values": job.exchanged_values,
        "full_filter_exchanged_values": job.full_filter_exchanged_values,
        "total_seconds": total_seconds,
        "coordinator_peak_rss_kib": coordinator_rss,
        "worker_peak_rss_kib": worker_rss,
        "rounds": rounds.iter().map(round_json).collect::<Vec<_>>(),
    })
}

/// One round of the summary JSON.
pub fn round_json(e: &pb::RoundEvent) -> serde_json::Value {
    serde_json::json!({
        "round": e.round,
        "test_accuracy": (e.test_accuracy >= 0.0).then_some(e.test_accuracy),
        "test_loss": (e.test_loss >= 0.0).then_some(e.test_loss),
        "federated_accuracy": (e.federated_accuracy >= 0.0).then_some(e.federated_accuracy),
        "client_evaluation": e.client_evaluation.as_ref().map(|c| serde_json::json!({
            "clients": c.clients, "weighted_accuracy": c.weighted_accuracy,
            "mean_accuracy": c.mean_accuracy, "worst_accuracy": c.worst_accuracy,
            "p10_accuracy": c.p10_accuracy, "loss": c.loss,
        })),
        "learning_rate": (e.learning_rate > 0.0).then_some(e.learning_rate),
        "privacy": e.privacy.as_ref().map(|p| serde_json::json!({
            "mode": p.mode, "epsilon": p.epsilon, "delta": p.delta,
            "noise_multiplier": p.noise_multiplier, "sample_rate": p.sample_rate,
            "clip_norm": p.clip_norm,
        })),
        "train_loss": e.train_loss,
        "participants": e.participants,
        "sampled": e.sampled,
        "seconds": e.seconds,
        "bytes_up": e.bytes_up,
        "bytes_down": e.bytes_down,
        "full_filter_f32_bytes_up": e.full_filter_f32_bytes_up,
        "full_filter_f32_bytes_down": e.full_filter_f32_bytes_down,
        "aggregation_seconds": e.aggregation_seconds,
        "clip_norm": (e.clip_norm > 0.0).then_some(e.clip_norm),
        "clipped_updates": e.clipped_updates,
        "selected": (!e.selected_ids.is_empty()).then(|| e.selected_ids.clone()),
        "workers": e.workers.iter().map(worker_json).collect::<Vec<_>>(),
        "model_sha256": e.model_sha256,
    })
}

/// One worker's figures of a round in the summary JSON.
fn worker_json(w: &pb::WorkerRoundStats) -> serde_json::Value {
    serde_json::json!({
        "worker_id": w.worker_id, "num_samples": w.num_samples, "train_loss": w.train_loss,
        "bytes_up": w.bytes_up, "bytes_down": w.bytes_down, "train_seconds": w.train_seconds,
        "full_filter_f32_bytes": w.full_filter_f32_bytes,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> LocalArgs {
        match Cli::try_parse_from([&["fedcsg", "local"], args].concat()) {
            Ok(Cli {
                command: Command::Local(a),
            }) => a,
            Ok(_) => panic!("parsed into another command"),
            Err(e) => panic!("{e}"),
        }
    }

    fn round(n: u64, accuracy: f64, bytes_up: &[u64]) -> pb::RoundEvent {
        pb::RoundEvent {
            job_id: "job-1".into(),
            round: n,
            participants: bytes_up.len() as u32,
            sampled: bytes_up.len() as u32,
            train_loss: 0.5,
            test_accuracy: accuracy,
            test_loss: -1.0,
            federated_accuracy: -1.0,
            bytes_down: 4_000,
            bytes_up: bytes_up.iter().sum(),
            seconds: 2.5,
            workers: bytes_up
                .iter()
                .enumerate()
                .map(|(i, b)| pb::WorkerRoundStats {
                    worker_id: format!("w{i}"),
                    num_samples: 100,
                    bytes_up: *b,
                    bytes_down: 4_000 / bytes_up.len() as u64,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn job() -> pb::Job {
        pb::Job {
            job_id: "job-1".into(),
            exchanged_values: 1_000,
            full_filter_exchanged_values: 2_500,
            ..Default::default()
        }
    }

    /// Workers split the cores: 4 workers on 2 cores train with 1 thread each (not 4 x 2), 2 on
    /// 16 with 8; `--threads` overrides the share.
    #[test]
    fn workers_share_the_cores() {
        assert_eq!(threads_per_worker(2, 4), 1);
        assert_eq!(threads_per_worker(16, 2), 8);
        assert_eq!(threads_per_worker(16, 3), 5);
        assert_eq!(threads_per_worker(1, 1), 1);
        assert_eq!(threads_per_worker(8, 0), 8);
        assert_eq!(parse(&[]).threads, None);
        assert_eq!(parse(&["--threads", "2"]).threads, Some(2));
    }

    /// `fedcsg local` runs 4 workers, IID, every test image, unless told otherwise; the job flags
    /// are the shared ones of `submit`.
    #[test]
    fn defaults_and_job_flags() {
        let a = parse(&[]);
        assert_eq!(
            (a.workers, a.partition.as_str(), a.test_limit),
            (4, "iid", 0)
        );
        assert!(a.summary_json.is_none() && a.log_dir.is_none());
        assert_eq!((a.job.rounds, a.job.csg.as_str()), (5, "12-72"));
        let a = parse(&[
            "--workers",
            "2",
            "--rounds",
            "3",
            "--csg",
            "none",
            "--partition",
            "dirichlet:0.5",
            "--summary-json",
            "s.json",
            "--federated-eval",
        ]);
        assert_eq!(
            (a.workers, a.job.rounds, a.job.csg.as_str()),
            (2, 3, "none")
        );
        assert_eq!(a.partition, "dirichlet:0.5");
        assert_eq!(a.summary_json.as_deref(), Some(Path::new("s.json")));
        assert!(a.job.federated_eval);
    }

    /// The per-round line compares with full filters in f32: exactly when the coordinator counted
    /// it, else estimated from the mean upload scaled by full / exchanged values (here 2.5x of a
    /// 1,200-byte mean).
    #[test]
    fn round_line_adds_the_full_filter_upload() {
        let line = local_round_line(&round(3, 0.8123, &[1_000, 1_400]), &job());
        assert!(line.starts_with("round   3: accuracy  81.23%"), "{line}");
        assert!(
            line.contains("2/2 workers  up 1200 B/worker  down 2000 B/worker"),
            "{line}"
        );
        assert!(line.ends_with("(full filters: ~3000 B/worker)"), "{line}");
        let mut counted = round(3, 0.8123, &[1_000, 1_400]);
        for w in &mut counted.workers {
            w.full_filter_f32_bytes = 10_000;
        }
        let line = local_round_line(&counted, &job());
        assert!(
            line.contains("(full filters in f32: 10000 B each way; this round 0.160x)"),
            "{line}"
        );
    }

    /// The summary JSON names the job and run, and writes unmeasured figures as null, not -1.
    #[test]
    fn summary_json_schema() {
        let args = parse(&["--workers", "2"]);
        let rounds = [round(1, 0.5, &[10, 20]), round(2, -1.0, &[30, 40])];
        let json = summary_json(
            &args.job,
            args.workers,
            &job(),
            "JOB_STATE_SUCCEEDED",
            12.5,
            (Some(1024), &[Some(1), None]),
            &rounds,
        );
        assert_eq!(json["job_id"], "job-1");
        assert_eq!(json["state"], "JOB_STATE_SUCCEEDED");
        assert_eq!(json["workers"], 2);
        assert_eq!(json["exchanged_values"], 1_000);
        assert_eq!(json["full_filter_exchanged_values"], 2_500);
        assert_eq!(json["coordinator_peak_rss_kib"], 1024);
        assert_eq!(json["worker_peak_rss_kib"], serde_json::json!([1, null]));
        let r = json["rounds"].as_array().expect("rounds");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0]["test_accuracy"], 0.5);
        assert!(r[1]["test_accuracy"].is_null());
        assert!(r[0]["test_loss"].is_null() && r[0]["federated_accuracy"].is_null());
        assert_eq!(r[1]["bytes_up"], 70);
        assert_eq!(r[1]["workers"][1]["bytes_up"], 40);
        assert_eq!(r[1]["workers"][1]["worker_id"], "w1");
        assert_eq!(json["upload_encoding"], "f32");
        assert_eq!(json["download_encoding"], "f32");
        assert!(json["upload_topk"].is_null());
        assert_eq!(json["error_feedback"], true);
        assert_eq!(r[1]["full_filter_f32_bytes_up"], 0);
        assert_eq!(r[1]["workers"][1]["full_filter_f32_bytes"], 0);
        // Without clipping or Krum, those figures are null rather than zero-valued claims.
        assert!(r[0]["clip_norm"].is_null() && r[0]["selected"].is_null());
        assert_eq!(r[0]["clipped_updates"], 0);
        assert_eq!(r[0]["aggregation_seconds"], 0.0);
        assert_eq!(json["lr_schedule"], "constant");
        assert!(r[0]["client_evaluation"].is_null() && r[0]["learning_rate"].is_null());
    }
}
