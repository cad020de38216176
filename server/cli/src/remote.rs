//! Commands against a running coordinator: `status`, `watch JOB`, `export JOB --out FILE`, and
//! the operator-client plumbing `local` shares.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use fedcsg_core::secret::Secret;
use fedcsg_wire::convert::metas_from_proto;
use fedcsg_wire::limits::MAX_MESSAGE_BYTES;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use fedcsg_wire::{ModelAssembler, WireLimits};
use fedcsg_worker::tls_args::ClientTlsArgs;
use indicatif::{ProgressBar, ProgressStyle};
use tonic::transport::Channel;
use tonic::{Request, Streaming};

/// The longest the CLI waits for the coordinator to answer one call.
pub const OPERATOR_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Args, Clone, Default)]
pub struct Remote {
    /// Coordinator URL: http://HOST:PORT, or https://HOST:PORT with --ca-cert.
    #[arg(
        long,
        env = "FEDCSG_COORDINATOR",
        default_value = "http://127.0.0.1:7070"
    )]
    pub coordinator: String,
    /// Admin token for the operator API.
    #[arg(long, env = "FEDCSG_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

pub struct Operator {
    client: OperatorServiceClient<Channel>,
    token: Option<Secret>,
}

impl Operator {
    pub async fn connect(remote: &Remote) -> anyhow::Result<Self> {
        let endpoint = match remote
            .tls
            .resolve(remote.coordinator.trim_start().starts_with("https://"))?
        {
            Some(tls) => tls.endpoint(&remote.coordinator)?,
            None => Channel::from_shared(remote.coordinator.clone())
                .with_context(|| format!("coordinator URL {:?}", remote.coordinator))?,
        };
        let channel = endpoint
            .connect_timeout(std::time::Duration::from_secs(5))
            // A deadline for each call's response (a stream's first message: watching a job
            // or exporting a model is not cut short), and pings that notice a dead peer.
            .timeout(OPERATOR_CALL_TIMEOUT)
            .http2_keep_alive_interval(std::time::Duration::from_secs(30))
            .keep_alive_timeout(std::time::Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .connect()
            .await
            .with_context(|| format!("cannot reach the coordinator at {}", remote.coordinator))?;
        let client = OperatorServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self {
            client,
            token: remote.admin_token.clone().map(Secret::from),
        })
    }

    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let Some(t) = &self.token
            && let Ok(v) = format!("Bearer {}", t.expose()).parse()
        {
            req.metadata_mut().insert("authorization", v);
        }
        req
    }

    pub fn client(&mut self) -> &mut OperatorServiceClient<Channel> {
        &mut self.client
    }

    /// Connects to an unauthenticated coordinator at `url` (one this process started).
    pub async fn connect_local(url: &str) -> anyhow::Result<Self> {
        Self::connect(&Remote {
            coordinator: url.to_string(),
            ..Remote::default()
        })
        .await
    }

    pub async fn create_job(&mut self, spec: pb::JobSpec) -> anyhow::Result<pb::Job> {
        let req = self.request(pb::CreateJobRequest { spec: Some(spec) });
        Ok(self.client.create_job(req).await?.into_inner())
    }

    /// The job's rounds so far, then each new one, until the job ends.
    pub async fn watch_job(&mut self, job_id: &str) -> anyhow::Result<Streaming<pb::RoundEvent>> {
        let req = self.request(pb::WatchJobRequest {
            job_id: job_id.to_string(),
        });
        Ok(self.client.watch_job(req).await?.into_inner())
    }

    /// Every worker the coordinator lists, page after page.
    pub async fn all_workers(&mut self) -> anyhow::Result<Vec<pb::WorkerInfo>> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = self.request(pb::ListWorkersRequest {
                page_size: 0,
                page_token,
            });
            let page = self.client.list_workers(req).await?.into_inner();
            all.extend(page.workers);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// Every job the coordinator lists (without rounds), page after page.
    pub async fn all_jobs(&mut self) -> anyhow::Result<Vec<pb::Job>> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = self.request(pb::ListJobsRequest {
                page_size: 0,
                page_token,
            });
            let page = self.client.list_jobs(req).await?.into_inner();
            all.extend(page.jobs);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// Every committed round of the job, oldest first, page after page.
    pub async fn all_rounds(&mut self, job_id: &str) -> anyhow::Result<Vec<pb::RoundEvent>> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = self.request(pb::ListRoundsRequest {
                job_id: job_id.to_string(),
                page_size: 1000,
                page_token,
            });
            let page = self.client.list_rounds(req).await?.into_inner();
            all.extend(page.rounds);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// The job and the name of its state.
    pub async fn job_state(&mut self, job_id: &str) -> anyhow::Result<(pb::Job, &'static str)> {
        let req = self.request(pb::GetJobRequest {
            job_id: job_id.to_string(),
            last_rounds: Some(0),
        });
        let job = self.client.get_job(req).await?.into_inner();
        let state = pb::JobState::try_from(job.state)
            .map(|s| s.as_str_name())
            .unwrap_or("?");
        Ok((job, state))
    }
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    remote: Remote,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let mut op = Operator::connect(&args.remote).await?;
    let jobs = op.all_jobs().await.context("ListJobs")?;
    println!(
        "{:<10} {:<10} {:>8} {:<36} message",
        "job", "state", "rounds", "model"
    );
    for j in jobs {
        let spec = j.spec.unwrap_or_default();
        let model = spec
            .model
            .map(|m| format!("{} csg={}", m.architecture, m.csg))
            .unwrap_or_default();
        let state = pb::JobState::try_from(j.state)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("JOB_STATE_")
                    .to_lowercase()
            })
            .unwrap_or_default();
        println!(
            "{:<10} {:<10} {:>3}/{:<4} {:<36} {}",
            j.job_id, state, j.rounds_completed, spec.rounds, model, j.message
        );
    }
    let workers = op.all_workers().await.context("ListWorkers")?;
    println!(
        "\n{:<8} {:<20} {:>8} {:<11} {:>10} {:>7}",
        "worker", "name", "samples", "state", "heartbeat", "rounds"
    );
    for w in workers {
        println!(
            "{:<8} {:<20} {:>8} {:<11} {:>9.1}s {:>7}",
            w.worker_id,
            w.worker_name,
            w.num_samples,
            w.state,
            w.seconds_since_heartbeat,
            w.rounds_contributed
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct WatchArgs {
    job: String,
    #[command(flatten)]
    remote: Remote,
}

pub async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let mut op = Operator::connect(&args.remote).await?;
    let job = op
        .client
        .get_job(op.request(pb::GetJobRequest {
            job_id: args.job.clone(),
            last_rounds: Some(0),
        }))
        .await?
        .into_inner();
    let rounds = job.spec.as_ref().map(|s| s.rounds).unwrap_or(0);
    let bar = ProgressBar::new(rounds as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} round {pos}/{len} {msg} [{elapsed}]",
    )?);
    let mut stream = op
        .client
        .watch_job(op.request(pb::WatchJobRequest {
            job_id: args.job.clone(),
        }))
        .await?
        .into_inner();
    while let Some(e) = stream.message().await? {
        // Round 0 ends a watch on a job that failed or was cancelled between rounds: the job
        // line below says how.
        if e.round == 0 {
            continue;
        }
        bar.set_position(e.round);
        print_line(&bar, round_line(&e));
    }
    bar.finish_and_clear();
    let job = op
        .client
        .get_job(op.request(pb::GetJobRequest {
            job_id: args.job,
            last_rounds: Some(0),
        }))
        .await?
        .into_inner();
    println!(
        "job {}: {} ({})",
        job.job_id,
        pb::JobState::try_from(job.state)
            .map(|s| s.as_str_name())
            .unwrap_or("?"),
        job.message
    );
    Ok(())
}

pub fn round_line(e: &pb::RoundEvent) -> String {
    let acc = if e.test_accuracy >= 0.0 {
        format!("{:.2}%", 100.0 * e.test_accuracy)
    } else {
        "n/a".into()
    };
    let per_worker = |bytes: fn(&pb::WorkerRoundStats) -> u64| {
        e.workers.iter().map(bytes).sum::<u64>() / (e.workers.len().max(1) as u64)
    };
    let (up, down) = (per_worker(|w| w.bytes_up), per_worker(|w| w.bytes_down));
    let full = e.workers.first().map_or(0, |w| w.full_filter_f32_bytes);
    let versus = if full > 0 {
        format!(
            " (full filters in f32: {full} B each way; this round {:.3}x)",
            (up + down) as f64 / (2 * full) as f64
        )
    } else {
        String::new()
    };
    let clipped = if e.clip_norm > 0.0 {
        format!("  clipped {} at {:.4}", e.clipped_updates, e.clip_norm)
    } else {
        String::new()
    };
    let rate = if e.learning_rate > 0.0 {
        format!("  lr {:.4}", e.learning_rate)
    } else {
        String::new()
    };
    let privacy = e.privacy.as_ref().map_or(String::new(), |p| {
        format!(
            "  {} DP: epsilon {:.3} (delta {:e}, z {:.3}, q {:.3})",
            p.mode, p.epsilon, p.delta, p.noise_multiplier, p.sample_rate
        )
    });
    format!(
        "round {:>3}: accuracy {acc:>7}  train loss {:.4}  {}/{} workers  up {up} B/worker  down {down} B/worker{versus}  {:.1} s (aggregation {:.3} s){clipped}{rate}{privacy}{}",
        e.round,
        e.train_loss,
        e.participants,
        e.sampled,
        e.seconds,
        e.aggregation_seconds,
        e.client_evaluation
            .as_ref()
            .map(client_evaluation_text)
            .unwrap_or_default()
    )
}

/// The per-worker evaluation of a round line: mean, worst and 10th-percentile accuracy, loss.
fn client_evaluation_text(c: &pb::ClientEvaluation) -> String {
    format!(
        "  clients {}: mean {:.2}% worst {:.2}% p10 {:.2}% loss {:.4}",
        c.clients,
        100.0 * c.mean_accuracy,
        100.0 * c.worst_accuracy,
        100.0 * c.p10_accuracy,
        c.loss
    )
}

#[derive(Args)]
pub struct ExportArgs {
    job: String,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    remote: Remote,
}

/// Downloads a job's global model (every variable).
pub async fn fetch_model(
    op: &mut Operator,
    job: &str,
) -> anyhow::Result<(pb::ModelHeader, fedcsg_core::tensor::StateDict)> {
    let req = op.request(pb::ExportModelRequest {
        job_id: job.to_string(),
    });
    let mut stream = op.client.export_model(req).await?.into_inner();
    let first = stream
        .message()
        .await?
        .context("export stream ended before its header")?;
    let Some(pb::model_chunk::Part::Header(header)) = first.part else {
        anyhow::bail!("export stream did not start with a header")
    };
    let limits = WireLimits::default();
    let mut assembler = ModelAssembler::new(metas_from_proto(&header.tensors, &limits)?, limits)?;
    while let Some(m) = stream.message().await? {
        match m.part {
            Some(pb::model_chunk::Part::Data(d)) => assembler.push(&d)?,
            _ => anyhow::bail!("unexpected message after the header"),
        }
    }
    Ok((header, assembler.finish()?))
}

pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let mut op = Operator::connect(&args.remote).await?;
    let (header, state) = fetch_model(&mut op, &args.job).await?;
    let mut tensors = HashMap::new();
    for t in state.tensors() {
        let tensor = candle_core::Tensor::from_slice(
            &t.values,
            t.shape.as_slice(),
            &candle_core::Device::Cpu,
        )?;
        tensors.insert(t.name.clone(), tensor);
    }
    candle_core::safetensors::save(&tensors, &args.out)?;
    println!(
        "wrote {} ({} tensors, {} values) of job {} after round {}, sha256 {}",
        args.out.display(),
        state.len(),
        state.numel(),
        args.job,
        header.round,
        header.model_sha256
    );
    Ok(())
}

/// Prints above the progress bar on a terminal, plainly otherwise (indicatif drops `println`
/// when the bar is hidden, e.g. when output goes to a file).
pub fn print_line(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    /// `status`, `watch` and `export` share the coordinator flags: the default local URL, the
    /// admin token, and the client TLS flags.
    #[test]
    fn remote_flags_parse_with_defaults() {
        let Ok(Cli {
            command: Command::Status(a),
        }) = Cli::try_parse_from(["fedcsg", "status"])
        else {
            panic!("status did not parse");
        };
        assert_eq!(a.remote.coordinator, "http://127.0.0.1:7070");
        let Ok(Cli {
            command: Command::Export(a),
        }) = Cli::try_parse_from([
            "fedcsg",
            "export",
            "job-3",
            "--out",
            "m.safetensors",
            "--coordinator",
            "https://c:7070",
            "--admin-token",
            "t",
            "--ca-cert",
            "ca.pem",
        ])
        else {
            panic!("export did not parse");
        };
        assert_eq!(
            (a.job.as_str(), a.out.to_str()),
            ("job-3", Some("m.safetensors"))
        );
        assert_eq!(a.remote.coordinator, "https://c:7070");
        assert_eq!(a.remote.admin_token.as_deref(), Some("t"));
        assert_eq!(
            a.remote.tls.ca_cert.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );
    }

    #[test]
    fn export_needs_a_job_and_an_output_file() {
        let err = Cli::try_parse_from(["fedcsg", "export", "job-1"])
            .err()
            .expect("refused");
        assert!(err.to_string().contains("--out"), "{err}");
        assert!(Cli::try_parse_from(["fedcsg", "watch"]).is_err());
    }

    /// A round line: accuracy as a percentage (n/a when the coordinator has no test set), the
    /// mean upload and download per worker, the full-filter f32 comparison when counted, the time.
    #[test]
    fn round_line_format() {
        let mut e = pb::RoundEvent {
            round: 12,
            train_loss: 0.25,
            test_accuracy: 0.9,
            participants: 3,
            sampled: 4,
            bytes_down: 900,
            seconds: 1.5,
            workers: [100u64, 200, 300]
                .iter()
                .map(|b| pb::WorkerRoundStats {
                    bytes_up: *b,
                    bytes_down: 300,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            round_line(&e),
            "round  12: accuracy  90.00%  train loss 0.2500  3/4 workers  up 200 B/worker  down 300 B/worker  1.5 s (aggregation 0.000 s)"
        );
        for w in &mut e.workers {
            w.full_filter_f32_bytes = 1_000;
        }
        assert!(
            round_line(&e).ends_with(
                "down 300 B/worker (full filters in f32: 1000 B each way; this round 0.250x)  1.5 s (aggregation 0.000 s)"
            ),
            "{}",
            round_line(&e)
        );
        e.learning_rate = 0.05;
        e.client_evaluation = Some(pb::ClientEvaluation {
            clients: 10,
            weighted_accuracy: 0.8,
            mean_accuracy: 0.79,
            worst_accuracy: 0.5,
            p10_accuracy: 0.625,
            loss: 0.61,
        });
        assert!(
            round_line(&e).ends_with(
                "(aggregation 0.000 s)  lr 0.0500  clients 10: mean 79.00% worst 50.00% p10 62.50% loss 0.6100"
            ),
            "{}",
            round_line(&e)
        );
        e.learning_rate = 0.0;
        e.client_evaluation = None;
        e.test_accuracy = -1.0;
        e.workers.clear();
        assert!(
            round_line(&e).contains("accuracy     n/a"),
            "{}",
            round_line(&e)
        );
        assert!(round_line(&e).contains("up 0 B/worker"));
        e.clip_norm = 2.5;
        e.clipped_updates = 1;
        e.aggregation_seconds = 0.0123;
        assert!(
            round_line(&e).ends_with("(aggregation 0.012 s)  clipped 1 at 2.5000"),
            "{}",
            round_line(&e)
        );
    }
}
