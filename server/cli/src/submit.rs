//! `fedcsg submit`: create a job on a running coordinator from the job flags of `fedcsg local`,
//! and with `--wait` follow it to its end, a line per round, exiting non-zero unless it succeeds.
//! Made for one-shot deployment services (the compose `submit` service): it waits for the
//! coordinator and for enough workers, rides out a coordinator restart while following, and with
//! `--reuse` follows an earlier job of the same name instead of running it twice.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use fedcsg_wire::proto::v1 as pb;
use tonic::Code;

use crate::job_args::JobArgs;
use crate::remote::{Operator, Remote, round_line};

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    remote: Remote,
    /// Job name, shown by `fedcsg status` (and matched by `--reuse`).
    #[arg(long, default_value = "submitted")]
    name: String,
    #[command(flatten)]
    job: JobArgs,
    /// Create the job only once this many workers are connected (0 = at once), so that the
    /// first round samples all of them.
    #[arg(long, default_value_t = 0)]
    wait_for_workers: usize,
    /// Follow the job to its end, printing a line per round; exit non-zero unless it succeeds.
    #[arg(long)]
    wait: bool,
    /// Follow an existing job of the same name that is pending, running or succeeded instead of
    /// creating another.
    #[arg(long)]
    reuse: bool,
    /// Give up after the coordinator has been unreachable for this many seconds.
    #[arg(long, default_value_t = 300)]
    retry_secs: u64,
}

pub async fn run(args: SubmitArgs) -> anyhow::Result<()> {
    let patience = Duration::from_secs(args.retry_secs);
    let mut op = connect_patiently(&args.remote, patience).await?;
    let job = match existing_job(&mut op, &args).await? {
        Some(job) => {
            println!(
                "job {}: following the existing job named {:?}",
                job.job_id, args.name
            );
            job
        }
        None => {
            wait_for_workers(&mut op, args.wait_for_workers, patience).await?;
            let spec = args.job.spec(&args.name, 1)?;
            let req = op.request(pb::CreateJobRequest { spec: Some(spec) });
            let job = op
                .client()
                .create_job(req)
                .await
                .context("CreateJob")?
                .into_inner();
            println!(
                "job {} created: {} csg={}, {} rounds, {} values per update ({} for full filters); {}",
                job.job_id,
                args.job.model,
                args.job.csg,
                args.job.rounds,
                job.exchanged_values,
                job.full_filter_exchanged_values,
                args.job.exchange_description()
            );
            job
        }
    };
    if !args.wait {
        return Ok(());
    }
    let started = Instant::now();
    let last = follow(&args.remote, &job.job_id, patience).await?;
    let state = state_name(last.state);
    println!(
        "job {} {} in {:.1} s: {}",
        last.job_id,
        state,
        started.elapsed().as_secs_f64(),
        last.message
    );
    anyhow::ensure!(
        last.state == pb::JobState::Succeeded as i32,
        "job {} ended {state}: {}",
        last.job_id,
        last.message
    );
    Ok(())
}

async fn existing_job(op: &mut Operator, args: &SubmitArgs) -> anyhow::Result<Option<pb::Job>> {
    if !args.reuse {
        return Ok(None);
    }
    let jobs = op.all_jobs().await.context("ListJobs")?;
    let alive = [
        pb::JobState::Pending,
        pb::JobState::Running,
        pb::JobState::Succeeded,
    ]
    .map(|s| s as i32);
    Ok(jobs
        .into_iter()
        .find(|j| j.spec.as_ref().is_some_and(|s| s.name == args.name) && alive.contains(&j.state)))
}

async fn connect_patiently(remote: &Remote, patience: Duration) -> anyhow::Result<Operator> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        match Operator::connect(remote).await {
            Ok(op) => return Ok(op),
            Err(e) if started.elapsed() + delay < patience => {
                eprintln!("waiting for the coordinator: {e:#}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

async fn wait_for_workers(
    op: &mut Operator,
    wanted: usize,
    patience: Duration,
) -> anyhow::Result<()> {
    if wanted == 0 {
        return Ok(());
    }
    let started = Instant::now();
    let mut reported = usize::MAX;
    loop {
        let workers = op.all_workers().await.context("ListWorkers")?;
        let connected = workers.iter().filter(|w| w.state != "gone").count();
        if connected >= wanted {
            println!("{connected} workers connected");
            return Ok(());
        }
        if connected != reported {
            println!("waiting for workers: {connected} of {wanted} connected");
            reported = connected;
        }
        anyhow::ensure!(
            started.elapsed() < patience,
            "only {connected} of {wanted} workers connected after {} s",
            patience.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Follows a job until it ends, reconnecting while the coordinator is away (a restart with
/// durable state keeps the job; one without fails here with NotFound). Prints every round once.
async fn follow(remote: &Remote, job_id: &str, patience: Duration) -> anyhow::Result<pb::Job> {
    let mut printed = 0u64;
    let mut away_since: Option<Instant> = None;
    loop {
        match follow_once(remote, job_id, &mut printed, &mut away_since).await {
            Ok(job) if finished(job.state) => return Ok(job),
            Ok(job) => eprintln!(
                "the watch of job {job_id} ended while it is {}; watching again",
                state_name(job.state)
            ),
            Err(e) if retryable(&e) => {
                let since = *away_since.get_or_insert_with(Instant::now);
                anyhow::ensure!(
                    since.elapsed() < patience,
                    "lost the coordinator for {} s: {e:#}",
                    patience.as_secs()
                );
                eprintln!(
                    "lost the coordinator while following job {job_id} ({e:#}); reconnecting"
                );
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow_once(
    remote: &Remote,
    job_id: &str,
    printed: &mut u64,
    away_since: &mut Option<Instant>,
) -> anyhow::Result<pb::Job> {
    let mut op = Operator::connect(remote).await?;
    let req = op.request(pb::GetJobRequest {
        job_id: job_id.to_string(),
        last_rounds: Some(0),
    });
    let job = op.client().get_job(req).await.map_err(|s| {
        let gone = s.code() == Code::NotFound;
        let e = anyhow::Error::new(s);
        if gone {
            e.context(format!(
                "the coordinator no longer knows job {job_id} (restarted without durable state?)"
            ))
        } else {
            e
        }
    })?;
    *away_since = None;
    if job.into_inner().rounds_completed < *printed {
        eprintln!("job {job_id} resumed at an earlier round than this watcher saw");
    }
    let req = op.request(pb::WatchJobRequest {
        job_id: job_id.to_string(),
    });
    let mut stream = op.client().watch_job(req).await?.into_inner();
    while let Some(event) = stream.message().await? {
        if event.round > *printed {
            println!("{}", round_line(&event));
            *printed = event.round;
        }
    }
    let req = op.request(pb::GetJobRequest {
        job_id: job_id.to_string(),
        last_rounds: Some(0),
    });
    Ok(op.client().get_job(req).await?.into_inner())
}

/// Errors worth reconnecting for: anything but a definite answer from a reachable coordinator.
fn retryable(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<tonic::Status>() {
        Some(s) => !matches!(
            s.code(),
            Code::NotFound
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::InvalidArgument
                | Code::FailedPrecondition
        ),
        None => true,
    }
}

fn finished(state: i32) -> bool {
    [
        pb::JobState::Succeeded,
        pb::JobState::Failed,
        pb::JobState::Cancelled,
    ]
    .map(|s| s as i32)
    .contains(&state)
}

fn state_name(state: i32) -> &'static str {
    pb::JobState::try_from(state)
        .map(|s| s.as_str_name())
        .unwrap_or("JOB_STATE_UNKNOWN")
}
