//! `fedcsg simulate`: a whole federation of N virtual clients in one process.
//!
//! Shared with a real deployment: the coordinator (the same `Coordinator` with its round state
//! machine, strategy, validation and byte accounting, serving the same gRPC API on a loopback
//! port) and the worker's code for each task (download, local training, update encoding with
//! error feedback, upload; evaluation on the held-out split), over one real gRPC connection.
//! Not shared: there is no process, heartbeat or socket per client (the coordinator is told to
//! wait for silent clients a month), and a client's model comes from a pool of at most
//! `--concurrency` models, so memory is O(concurrency × model) plus each client's data share and
//! what a real worker keeps between rounds (local batch-norm statistics, an error-feedback
//! residual while it can still be used). Time on the links is simulated from the exact bytes
//! and the measured training seconds (see [`link`]).

pub mod clients;
pub mod link;
mod report;
mod tasks;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use fedcsg_ml::data::{DataSource, Partitioning};
use fedcsg_ml::ops::ConvBackend;
use fedcsg_server::config::CoordinatorConfig;
use fedcsg_server::coordinator::{Coordinator, CoordinatorSettings, TestSet};
use fedcsg_worker::WorkerConfig;
use fedcsg_worker::client::CoordinatorClient;
use fedcsg_worker::local_data::LocalData;

use crate::job_args::JobArgs;
use crate::local::{ensure_succeeded, local_round_line, peak_rss_kib, summary_json, write_summary};
use crate::remote::Operator;
use clients::VirtualClient;
use link::{Link, LinkMix};

#[derive(Args)]
pub struct SimulateArgs {
    /// Virtual clients, each with its own share of the data.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Clients training at once (default: this machine's cores); memory grows with it.
    #[arg(long)]
    pub concurrency: Option<usize>,
    #[command(flatten)]
    pub job: JobArgs,
    /// iid | dirichlet:ALPHA | shards[:K], over the whole data set.
    #[arg(long, default_value = "iid")]
    pub partition: String,
    /// Coordinator test images (0 = all).
    #[arg(long, default_value_t = 0)]
    pub test_limit: usize,
    /// Hold this many training images out of the clients' data (drawn with --seed) and evaluate
    /// each round's model on them instead of the test set: a validation split for choosing
    /// settings without looking at the test set.
    #[arg(long, default_value_t = 0)]
    pub holdout: usize,
    /// Each client's link, turning its exact bytes into transfer time:
    /// BANDWIDTH/LATENCY[/xSLOWDOWN][*WEIGHT],... e.g. 10mbit/25ms, or
    /// 10mbit/25ms*0.9,1mbit/200ms/x4*0.1 for 10% stragglers.
    #[arg(long)]
    pub link: Option<String>,
    /// Training threads per concurrent client (default: cores / concurrency, at least 1).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write the run's summary here (the schema of `fedcsg local`, plus the simulation).
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// A name for the run in its summary (`fedcsg frontier` groups runs by it).
    #[arg(long)]
    pub label: Option<String>,
}

/// The most clients one simulation takes.
pub const MAX_CLIENTS: usize = 100_000;

/// The simulation's settings, checked before anything starts.
struct Plan {
    clients: usize,
    concurrency: usize,
    threads: usize,
    source: DataSource,
    partitioning: Partitioning,
    links: Option<LinkMix>,
    min_workers: u32,
    holdout: usize,
}

fn plan(args: &SimulateArgs) -> anyhow::Result<Plan> {
    anyhow::ensure!(
        (1..=MAX_CLIENTS).contains(&args.clients),
        "--clients must be 1..={MAX_CLIENTS}, got {}",
        args.clients
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let concurrency = args.concurrency.unwrap_or(cores);
    anyhow::ensure!(
        (1..=1024).contains(&concurrency),
        "--concurrency must be 1..=1024, got {concurrency}"
    );
    let threads = args
        .threads
        .unwrap_or_else(|| crate::local::threads_per_worker(cores, concurrency));
    anyhow::ensure!(
        (1..=1024).contains(&threads),
        "--threads must be 1..=1024, got {threads}"
    );
    anyhow::ensure!(
        args.job.fraction.is_finite() && args.job.fraction > 0.0 && args.job.fraction <= 1.0,
        "--fraction must be in (0, 1], got {}",
        args.job.fraction
    );
    let per_round = ((args.job.fraction * args.clients as f64).ceil() as u32).max(1);
    Ok(Plan {
        clients: args.clients,
        concurrency,
        threads,
        source: args.job.data.parse().context("--data")?,
        partitioning: args
            .partition
            .parse()
            .map_err(|e| anyhow::anyhow!("--partition: {e}"))?,
        links: args
            .link
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: String| anyhow::anyhow!("--link: {e}"))?,
        min_workers: args.job.min_workers.unwrap_or(per_round),
        holdout: args.holdout,
    })
}

/// Runs the simulation to the end of its job.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    let started = Instant::now();
    let (source, partitioning, clients, seed, holdout) = (
        plan.source.clone(),
        plan.partitioning,
        plan.clients,
        args.job.seed,
        args.holdout,
    );
    let (shares, test) = tokio::task::spawn_blocking(move || {
        let all = source.load()?;
        let (train, evaluation) = if holdout > 0 {
            anyhow::ensure!(
                holdout < all.train.len(),
                "--holdout {holdout} leaves no training data ({} images)",
                all.train.len()
            );
            all.train.seeded_split(holdout, seed)
        } else {
            (all.train, all.test.clone())
        };
        let shares =
            LocalData::all_partitions(&source, &train, &all.test, partitioning, clients, seed)?;
        anyhow::Ok((shares, evaluation))
    })
    .await??;
    let test = if args.test_limit > 0 && args.holdout == 0 {
        test.seeded_subset(args.test_limit, 0)
    } else {
        test
    };
    let coordinator = Coordinator::new(
        CoordinatorSettings {
            // Virtual clients do not heartbeat: the coordinator waits for them.
            heartbeat_timeout: Duration::from_secs(30 * 24 * 3600),
            tick: Duration::from_millis(20),
            ..CoordinatorSettings::default()
        },
        Some(TestSet {
            data: test,
            normalization: plan.source.normalization(),
        }),
        None,
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let config = in_process_config(addr);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fedcsg_server::server::run_with(
        listener,
        config,
        Arc::clone(&coordinator),
        async move {
            let _ = stopped.await;
        },
    ));
    let result = simulate(&args, &plan, &url, shares, started).await;
    let _ = stop.send(());
    server.await??;
    result
}

fn in_process_config(listen: std::net::SocketAddr) -> CoordinatorConfig {
    CoordinatorConfig {
        listen,
        data: None,
        test_limit: 0,
        enrollment_token: None,
        admin_token: None,
        heartbeat_interval: Duration::from_secs(3600),
        heartbeat_timeout: Duration::from_secs(30 * 24 * 3600),
        addr_file: None,
        tls: None,
        insecure: false,
        state_dir: None,
        max_worker_samples: CoordinatorSettings::DEFAULT_MAX_WORKER_SAMPLES,
        gone_worker_retention: CoordinatorSettings::DEFAULT_GONE_WORKER_RETENTION,
        shutdown_grace: std::time::Duration::ZERO,
        transfers: Default::default(),
        idle_connection_timeout: fedcsg_server::config::DEFAULT_IDLE_CONNECTION_TIMEOUT,
        rpc_timeout: fedcsg_server::config::DEFAULT_RPC_TIMEOUT,
        metrics_listen: None,
        dashboard_listen: None,
    }
}

async fn simulate(
    args: &SimulateArgs,
    plan: &Plan,
    url: &str,
    shares: Vec<LocalData>,
    started: Instant,
) -> anyhow::Result<()> {
    let worker_config = WorkerConfig::for_coordinator(url)?;
    let connection = CoordinatorClient::connect_lazy(&worker_config)?;
    let digits = plan.clients.to_string().len();
    let mut clients = Vec::with_capacity(plan.clients);
    // One at a time, in order: worker ids follow the partitions (as in `fedcsg local`), so a
    // run is reproducible for a seed.
    for (i, data) in shares.into_iter().enumerate() {
        let name = format!("sim-{i:0digits$}");
        clients.push(Arc::new(
            VirtualClient::join(i, name, Arc::new(data), &connection).await?,
        ));
    }
    let links: HashMap<String, Link> = match &plan.links {
        Some(mix) => clients
            .iter()
            .zip(mix.assign(plan.clients, args.job.seed))
            .map(|(c, l)| (c.worker_id.clone(), l))
            .collect(),
        None => HashMap::new(),
    };
    let mut op = Operator::connect_local(url).await?;
    let job = op
        .create_job(args.job.spec("simulate", plan.min_workers)?)
        .await?;
    println!(
        "job {}: {} csg={} on {} simulated clients ({} partition), {} per round, {} at a time \
         with {} thread(s) each, {} rounds; exchanges {} values per update ({} bytes as f32), \
         a full-filter exchange {} ({} bytes); {}; links: {}",
        job.job_id,
        args.job.model,
        args.job.csg,
        plan.clients,
        plan.partitioning,
        plan.min_workers,
        plan.concurrency,
        plan.threads,
        args.job.rounds,
        job.exchanged_values,
        job.exchanged_values * 4,
        job.full_filter_exchanged_values,
        job.full_filter_exchanged_values * 4,
        args.job.exchange_description(),
        plan.links
            .as_ref()
            .map_or_else(|| "none (no transfer time)".to_string(), |m| m.to_string()),
    );
    let mut stream = op.watch_job(&job.job_id).await?;
    let watcher = {
        let (job, links) = (job.clone(), links.clone());
        tokio::spawn(async move {
            let mut rounds = Vec::new();
            let mut elapsed = 0.0;
            while let Some(e) = stream.message().await? {
                // Round 0 ends a watch on a job that failed or was cancelled between rounds.
                if e.round == 0 {
                    continue;
                }
                let time = report::simulated_round_time(&e, &links);
                elapsed += time.seconds;
                println!(
                    "{}  simulated {:.1} s (transfers up to {:.2} s, total {:.1} s)",
                    local_round_line(&e, &job),
                    time.seconds,
                    time.transfer_seconds,
                    elapsed
                );
                rounds.push(e);
            }
            anyhow::Ok(rounds)
        })
    };
    let pool = Arc::new(clients::ModelPool::new(
        ConvBackend::Fast,
        plan.concurrency,
        plan.threads,
    )?);
    let tasks = tasks::run_tasks(&mut op, &clients, &pool, &watcher).await?;
    let rounds = watcher.await??;
    let (final_job, state) = op.job_state(&job.job_id).await?;
    let kept: usize = clients.iter().map(|c| c.kept_bytes()).sum();
    let rss = peak_rss_kib(Some(std::process::id()));
    println!(
        "job {} {} in {:.1} s: {}; {} train and {} evaluation tasks ({} failed); {} models built; \
         clients keep {} KiB between rounds; peak RSS {} MiB",
        job.job_id,
        state,
        started.elapsed().as_secs_f64(),
        final_job.message,
        tasks.trained,
        tasks.evaluated,
        tasks.failed,
        pool.built.load(std::sync::atomic::Ordering::Relaxed),
        kept / 1024,
        rss.map_or_else(|| "?".into(), |k| (k / 1024).to_string()),
    );
    if let Some(path) = &args.summary_json {
        let mut summary = summary_json(
            &args.job,
            plan.clients,
            &job,
            state,
            started.elapsed().as_secs_f64(),
            (rss, &[]),
            &rounds,
        );
        report::add_simulation(
            &mut summary,
            &rounds,
            &links,
            plan,
            &tasks,
            &args.partition,
            args.label.as_deref(),
        );
        write_summary(path, &summary)?;
    }
    ensure_succeeded(&final_job, state)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn args(extra: &[&str]) -> SimulateArgs {
        let cli = Cli::try_parse_from([&["fedcsg", "simulate"][..], extra].concat()).unwrap();
        match cli.command {
            Command::Simulate(a) => a,
            _ => unreachable!(),
        }
    }

    /// A round samples ceil(fraction x clients) clients, which is also the default quorum.
    #[test]
    fn the_plan_fills_in_the_defaults() {
        let p = plan(&args(&[
            "--clients",
            "50",
            "--fraction",
            "0.2",
            "--concurrency",
            "2",
        ]))
        .unwrap();
        assert_eq!((p.clients, p.min_workers, p.concurrency), (50, 10, 2));
        assert!(p.links.is_none());
        let p = plan(&args(&[
            "--clients",
            "7",
            "--fraction",
            "0.1",
            "--link",
            "1mbit/10ms",
        ]))
        .unwrap();
        assert_eq!(p.min_workers, 1);
        assert_eq!(p.links.unwrap().to_string(), "1mbit/10ms");
    }

    /// Bad settings are refused before any data is loaded, naming the flag.
    #[test]
    fn bad_settings_name_their_flag() {
        for (extra, says) in [
            (&["--clients", "0"][..], "--clients"),
            (&["--clients", "100001"][..], "--clients"),
            (&["--concurrency", "0"][..], "--concurrency"),
            (&["--threads", "0"][..], "--threads"),
            (&["--fraction", "1.5"][..], "--fraction"),
            (&["--partition", "dirichlet:-1"][..], "--partition"),
            (&["--link", "fast"][..], "--link"),
            (&["--data", "nowhere:/x"][..], "--data"),
        ] {
            let err = plan(&args(extra)).err().expect("refused").to_string();
            assert!(err.contains(says), "{extra:?}: {err}");
        }
    }
}
