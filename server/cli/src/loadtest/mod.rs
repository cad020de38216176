//! `fedcsg loadtest`: the coordinator under a fleet. Starts a real `fedcsg-coordinator` process
//! (this build's, or `--coordinator-bin`) and N synthetic workers over real gRPC on loopback,
//! each joining, heartbeating, long-polling for tasks, downloading the global model and uploading
//! a random delta of the chosen model's exchanged tensors after a think time, without training.
//! One job with every worker in every round. Prints round latency (last upload acknowledged to
//! the commit event), heartbeat latency (overall and while rounds close), the coordinator's CPU
//! seconds and peak RSS, requests per second and aggregation throughput.

mod synthetic;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use fedcsg_wire::proto::v1 as pb;
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

use crate::local::{peak_rss_kib, sibling_binary, spawn};
use crate::remote::Operator;
use synthetic::{Stats, UpdatePool};

#[derive(Args)]
pub struct LoadtestArgs {
    /// Synthetic workers.
    #[arg(long, default_value_t = 200)]
    workers: usize,
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// resnet20/32/44/56/110 or densenetDEPTHkGROWTH.
    #[arg(long, default_value = "resnet20")]
    model: String,
    /// none | S-C | seeded:S-C: what each update carries.
    #[arg(long, default_value = "12-72")]
    csg: String,
    /// Milliseconds each worker "trains" between download and upload.
    #[arg(long, default_value_t = 500)]
    think_ms: u64,
    /// TCP connections the workers share (default: one per worker, as real workers have).
    #[arg(long)]
    connections: Option<usize>,
    /// The coordinator binary (default: the one next to this program), e.g. an older build to
    /// compare against.
    #[arg(long)]
    coordinator_bin: Option<PathBuf>,
    /// Heartbeat interval the coordinator tells workers.
    #[arg(long, default_value_t = 2000)]
    heartbeat_interval_ms: u64,
    /// Write the figures here as JSON.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Directory for the coordinator's log (default: a temporary directory).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Observe the coordinator as operators do: it serves /metrics and the dashboard on one
    /// port, and during the test /metrics is scraped and the dashboard's API (overview and the
    /// job with its rounds) is polled every second (Prometheus plus an open dashboard tab).
    #[arg(long)]
    observe: bool,
}

pub async fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=100_000).contains(&args.workers),
        "--workers must be 1..=100000"
    );
    anyhow::ensure!(
        (1..=10_000).contains(&args.rounds),
        "--rounds must be 1..=10000"
    );
    let connections = args
        .connections
        .unwrap_or(args.workers)
        .clamp(1, args.workers);
    let bin = match &args.coordinator_bin {
        Some(b) => b.clone(),
        None => sibling_binary("fedcsg-coordinator")?,
    };
    let log_dir = match &args.log_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("fedcsg-loadtest-{}", std::process::id())),
    };
    std::fs::create_dir_all(&log_dir)?;
    let addr_file = log_dir.join("coordinator.addr");
    let _ = std::fs::remove_file(&addr_file);
    let timeout_secs = (args.heartbeat_interval_ms / 1000 * 5).max(10);
    let observe_addr = args.observe.then(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.to_string())
    });
    let observe_addr = observe_addr.transpose()?;
    let mut coordinator_args: Vec<String> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--addr-file".into(),
        addr_file.display().to_string(),
        "--data".into(),
        "none".into(),
        "--heartbeat-interval-ms".into(),
        args.heartbeat_interval_ms.to_string(),
        "--heartbeat-timeout-secs".into(),
        timeout_secs.to_string(),
    ];
    if let Some(addr) = &observe_addr {
        coordinator_args
            .extend(["--metrics-listen", addr, "--dashboard-listen", addr].map(String::from));
    }
    let mut coordinator = spawn(&bin, &coordinator_args, &log_dir.join("coordinator.log"))?;
    let pid = coordinator.id();
    let started = Instant::now();
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            break a;
        }
        if let Some(status) = coordinator.try_wait()? {
            anyhow::bail!(
                "coordinator exited with {status}; see {}",
                log_dir.display()
            );
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "no coordinator"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let url = format!("http://{addr}");
    let cpu_at_start = cpu_seconds(pid);
    println!(
        "coordinator {} at {url} (pid {}); {} synthetic workers on {connections} connection(s), \
         {} {} , think {} ms, {} rounds; log in {}",
        bin.display(),
        pid.unwrap_or(0),
        args.workers,
        args.model,
        args.csg,
        args.think_ms,
        args.rounds,
        log_dir.display()
    );
    let channels: Vec<Channel> = (0..connections)
        .map(|_| Endpoint::from_shared(url.clone()).map(|e| e.tcp_nodelay(true).connect_lazy()))
        .collect::<Result<_, _>>()?;
    let stats = Arc::new(Mutex::new(Stats::default()));
    let pool = Arc::new(UpdatePool::new());
    let think = Duration::from_millis(args.think_ms);
    let workers: Vec<_> = (0..args.workers)
        .map(|i| {
            tokio::spawn(synthetic::run(
                channels[i % connections].clone(),
                i,
                think,
                Arc::clone(&pool),
                Arc::clone(&stats),
            ))
        })
        .collect();
    let mut op = Operator::connect_local(&url).await?;
    loop {
        if op.all_workers().await?.len() >= args.workers {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let joined_in = started.elapsed();
    let spec = pb::JobSpec {
        name: "loadtest".into(),
        model: Some(pb::ModelSpec {
            architecture: args.model.clone(),
            csg: args.csg.clone(),
            in_channels: 1,
            num_classes: 10,
        }),
        training: Some(pb::TrainingConfig {
            local_epochs: 1,
            batch_size: 32,
            learning_rate: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            max_samples_per_round: 0,
        }),
        strategy: "fedavg".into(),
        rounds: args.rounds,
        fraction: 1.0,
        min_workers: args.workers as u32,
        round_deadline_seconds: 600,
        seed: 1,
        bn_stats: "averaged".into(),
        ..Default::default()
    };
    let job = op.create_job(spec).await?;
    let observed = Arc::new(Observed::default());
    let observer = observe_addr
        .clone()
        .map(|addr| tokio::spawn(observe(addr, job.job_id.clone(), Arc::clone(&observed))));
    let job_started = Instant::now();
    let mut stream = op.watch_job(&job.job_id).await?;
    let mut commits: Vec<(u64, Instant, pb::RoundEvent)> = Vec::new();
    while let Some(e) = stream.message().await? {
        if e.round == 0 {
            continue;
        }
        commits.push((e.round, Instant::now(), e));
    }
    let wall = job_started.elapsed();
    let (final_job, state) = op.job_state(&job.job_id).await?;
    let cpu = cpu_seconds(pid)
        .zip(cpu_at_start)
        .map(|(end, start)| end - start);
    let rss_kib = peak_rss_kib(pid);
    if let Some(task) = &observer {
        task.abort();
    }
    drop(coordinator);
    for w in &workers {
        w.abort();
    }
    let stats = stats.lock().expect("stats");
    let report = Report::new(&stats, &commits, job_started);
    let aggregation_seconds: f64 = commits.iter().map(|c| c.2.aggregation_seconds).sum();
    let bytes_up: u64 = commits.iter().map(|c| c.2.bytes_up).sum();
    let bytes_down: u64 = commits.iter().map(|c| c.2.bytes_down).sum();
    let rps = stats.requests as f64 / (joined_in + wall).as_secs_f64();
    println!(
        "job {} {state} in {:.1} s: {} (workers joined in {:.1} s)",
        job.job_id,
        wall.as_secs_f64(),
        final_job.message,
        joined_in.as_secs_f64()
    );
    println!("| figure | value |\n|---|---:|");
    println!("| rounds committed | {} |", commits.len());
    println!(
        "| round latency, last upload to commit: median / p99 / max | {} / {} / {} |",
        ms(report.round_latency.median),
        ms(report.round_latency.p99),
        ms(report.round_latency.max)
    );
    println!(
        "| heartbeat latency: median / p99 (all) | {} / {} |",
        ms(report.heartbeat.median),
        ms(report.heartbeat.p99)
    );
    println!(
        "| heartbeat latency while rounds close: p99 / max ({} beats) | {} / {} |",
        report.heartbeats_closing,
        ms(report.heartbeat_closing.p99),
        ms(report.heartbeat_closing.max)
    );
    println!(
        "| coordinator CPU seconds (job) | {} |",
        cpu.map_or("n/a".into(), |c| format!("{c:.2}"))
    );
    println!(
        "| coordinator peak RSS | {} |",
        rss_kib.map_or("n/a".into(), |k| format!("{:.1} MB", k as f64 / 1024.0))
    );
    println!("| requests / s (all workers) | {rps:.0} |");
    if let Some(addr) = &observe_addr {
        println!(
            "| observed on http://{addr}: scrapes / dashboard polls / failed | {} / {} / {} |",
            observed.scrapes.load(Ordering::Relaxed),
            observed.polls.load(Ordering::Relaxed),
            observed.failed.load(Ordering::Relaxed)
        );
    }
    println!("| failed requests | {} |", stats.errors);
    println!(
        "| bytes up / down per round | {:.1} MB / {:.1} MB |",
        bytes_up as f64 / commits.len().max(1) as f64 / 1e6,
        bytes_down as f64 / commits.len().max(1) as f64 / 1e6
    );
    println!(
        "| aggregation throughput (update bytes / aggregation seconds) | {} |",
        if aggregation_seconds > 0.0 {
            format!("{:.2} GB/s", bytes_up as f64 / aggregation_seconds / 1e9)
        } else {
            "n/a".into()
        }
    );
    if let Some(path) = &args.summary_json {
        let summary = json!({
            "workers": args.workers,
            "connections": connections,
            "rounds": args.rounds,
            "model": args.model,
            "csg": args.csg,
            "think_ms": args.think_ms,
            "coordinator_bin": bin.display().to_string(),
            "state": state.to_string(),
            "rounds_committed": commits.len(),
            "wall_seconds": wall.as_secs_f64(),
            "round_latency_ms": report.round_latency.to_json(),
            "heartbeat_ms": report.heartbeat.to_json(),
            "heartbeat_while_closing_ms": report.heartbeat_closing.to_json(),
            "coordinator_cpu_seconds": cpu,
            "coordinator_peak_rss_kib": rss_kib,
            "requests_per_second": rps,
            "failed_requests": stats.errors,
            "bytes_up": bytes_up,
            "bytes_down": bytes_down,
            "aggregation_seconds": aggregation_seconds,
            "observed": observe_addr.as_ref().map(|_| json!({
                "scrapes": observed.scrapes.load(Ordering::Relaxed),
                "dashboard_polls": observed.polls.load(Ordering::Relaxed),
                "failed": observed.failed.load(Ordering::Relaxed),
            })),
        });
        crate::local::write_summary(path, &summary)?;
    }
    anyhow::ensure!(
        commits.len() as u32 == args.rounds,
        "only {} of {} rounds committed",
        commits.len(),
        args.rounds
    );
    Ok(())
}

/// Requests of the `--observe` poller.
#[derive(Debug, Default)]
struct Observed {
    scrapes: AtomicU64,
    polls: AtomicU64,
    failed: AtomicU64,
}

/// Every second: `/metrics` (as Prometheus scrapes it) and the dashboard's overview and job
/// detail (as an open dashboard polls them), until aborted.
async fn observe(addr: String, job: String, observed: Arc<Observed>) {
    let detail = format!("/api/jobs/{job}?last_rounds=200");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for (path, counter) in [
            ("/metrics", &observed.scrapes),
            ("/api/overview", &observed.polls),
            (detail.as_str(), &observed.polls),
        ] {
            match fedcsg_wire::metrics_http::get(&addr, path, None).await {
                Ok((200, _)) => counter.fetch_add(1, Ordering::Relaxed),
                _ => observed.failed.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
}

fn ms(d: Option<f64>) -> String {
    d.map_or("n/a".into(), |v| format!("{v:.1} ms"))
}

/// Median, 99th percentile (nearest rank) and maximum of some latencies, in ms.
#[derive(Debug, Default)]
struct Spread {
    median: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let rank =
            |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
        Self {
            median: Some(rank(0.5)),
            p99: Some(rank(0.99)),
            max: values.last().copied(),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        json!({ "median": self.median, "p99": self.p99, "max": self.max })
    }
}

struct Report {
    round_latency: Spread,
    heartbeat: Spread,
    heartbeat_closing: Spread,
    heartbeats_closing: usize,
}

impl Report {
    /// `commits`: (round, when its event arrived). A round closes between its last acknowledged
    /// upload and its commit event; heartbeats sent in that window are "while closing".
    fn new(stats: &Stats, commits: &[(u64, Instant, pb::RoundEvent)], since: Instant) -> Self {
        let mut windows = Vec::new();
        let mut latencies = Vec::new();
        for (round, committed, _) in commits {
            let last_upload = stats
                .uploads
                .iter()
                .filter(|(r, _)| r == round)
                .map(|(_, t)| *t)
                .max();
            if let Some(last) = last_upload {
                latencies.push(committed.saturating_duration_since(last).as_secs_f64() * 1e3);
                windows.push((last, *committed));
            }
        }
        let beats: Vec<&(Instant, Duration)> = stats
            .heartbeats
            .iter()
            .filter(|(t, _)| *t >= since)
            .collect();
        let closing: Vec<f64> = beats
            .iter()
            .filter(|(t, d)| windows.iter().any(|(a, b)| *t <= *b && *t + *d >= *a))
            .map(|(_, d)| d.as_secs_f64() * 1e3)
            .collect();
        Self {
            round_latency: Spread::of(latencies),
            heartbeat: Spread::of(beats.iter().map(|(_, d)| d.as_secs_f64() * 1e3).collect()),
            heartbeats_closing: closing.len(),
            heartbeat_closing: Spread::of(closing),
        }
    }
}

/// User + system CPU seconds of process `pid` so far (Linux `/proc/PID/stat`, in clock ticks of
/// 1/100 s, the value on every Linux this runs on).
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_use_the_nearest_rank() {
        let s = Spread::of((1..=100).map(f64::from).collect());
        assert_eq!(
            (s.median, s.p99, s.max),
            (Some(50.0), Some(99.0), Some(100.0))
        );
        assert!(Spread::of(Vec::new()).median.is_none());
    }

    #[test]
    fn cpu_seconds_of_this_process_are_read() {
        let c = cpu_seconds(Some(std::process::id())).unwrap();
        assert!(c >= 0.0);
        assert!(cpu_seconds(Some(u32::MAX)).is_none());
    }
}
