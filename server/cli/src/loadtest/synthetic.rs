//! A synthetic worker: joins, heartbeats, long-polls for tasks, downloads the global model and
//! uploads a random delta of the right names and shapes after a think time, over real gRPC,
//! without training. Every call's latency goes to the shared [`Stats`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fedcsg_core::tensor::{NamedTensor, StateDict};
use fedcsg_wire::convert::{meta_to_proto, metas_from_proto};
use fedcsg_wire::delta::stays_plain;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::worker_service_client::WorkerServiceClient;
use fedcsg_wire::{WireLimits, encode_state};
use rand::{Rng, SeedableRng};
use tokio::sync::OnceCell;
use tonic::Request;
use tonic::transport::Channel;

/// What every synthetic worker records.
#[derive(Debug, Default)]
pub struct Stats {
    /// (when it was sent, how long it took) of every heartbeat.
    pub heartbeats: Vec<(Instant, Duration)>,
    /// (round, when the coordinator acknowledged it) of every accepted upload.
    pub uploads: Vec<(u64, Instant)>,
    /// Calls made (every RPC, streams counted once).
    pub requests: u64,
    /// Calls that failed.
    pub errors: u64,
}

/// An update's tensor headers and data chunks, ready to send.
type EncodedUpdate = (Vec<pb::TensorSpec>, Vec<Vec<u8>>);

/// A few random updates of the job's exchanged tensors, encoded once and shared by every
/// worker (the coordinator does not compare updates across workers).
pub struct UpdatePool {
    updates: OnceCell<Vec<EncodedUpdate>>,
}

impl UpdatePool {
    pub fn new() -> Self {
        Self {
            updates: OnceCell::new(),
        }
    }

    async fn get(&self, header: &pb::ModelHeader, i: usize) -> anyhow::Result<&EncodedUpdate> {
        let updates = self
            .updates
            .get_or_try_init(|| async {
                let metas = metas_from_proto(&header.tensors, &WireLimits::default())?;
                let mut rng = rand::rngs::StdRng::seed_from_u64(7);
                let mut out = Vec::new();
                for _ in 0..4 {
                    let tensors = metas
                        .iter()
                        .map(|m| NamedTensor {
                            name: m.name.clone(),
                            shape: m.shape.clone(),
                            values: (0..m.shape.iter().product::<usize>())
                                .map(|_| {
                                    match (stays_plain(&m.name), m.name.ends_with("running_var")) {
                                        // Running statistics travel as values, not deltas.
                                        (true, true) => 1.0,
                                        (true, false) => 0.0,
                                        (false, _) => rng.random_range(-1e-3f32..1e-3),
                                    }
                                })
                                .collect(),
                        })
                        .collect();
                    let (metas, chunks) =
                        encode_state(&StateDict::new(tensors).map_err(anyhow::Error::msg)?);
                    out.push((metas.iter().map(meta_to_proto).collect(), chunks));
                }
                anyhow::Ok(out)
            })
            .await?;
        Ok(&updates[i % updates.len()])
    }
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("hex token"),
    );
    r
}

/// Runs one synthetic worker until the coordinator says done.
pub async fn run(
    channel: Channel,
    index: usize,
    think: Duration,
    pool: Arc<UpdatePool>,
    stats: Arc<Mutex<Stats>>,
) -> anyhow::Result<()> {
    let mut client = WorkerServiceClient::new(channel)
        .max_decoding_message_size(fedcsg_wire::limits::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(fedcsg_wire::limits::MAX_MESSAGE_BYTES);
    let count = |ok: bool| {
        let mut s = stats.lock().expect("stats");
        s.requests += 1;
        s.errors += u64::from(!ok);
    };
    let joined = client
        .join(pb::JoinRequest {
            protocol_version: fedcsg_wire::proto::PROTOCOL_VERSION,
            worker_name: format!("load-{index}"),
            num_samples: 600,
            in_channels: 1,
            num_classes: 10,
            data_description: "synthetic".into(),
            previous_session_token: String::new(),
        })
        .await?
        .into_inner();
    count(true);
    let (id, token) = (joined.worker_id, joined.session_token);
    let interval = Duration::from_millis(joined.heartbeat_interval_ms.max(100).into());
    let beating = {
        let (mut client, id, token, stats) = (
            client.clone(),
            id.clone(),
            token.clone(),
            Arc::clone(&stats),
        );
        tokio::spawn(async move {
            // Spread the first beats over the interval, as real workers joining over time do.
            let offset = interval.mul_f64(rand::rng().random::<f64>());
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let sent = Instant::now();
                let ok = client
                    .heartbeat(authed(
                        pb::HeartbeatRequest {
                            worker_id: id.clone(),
                            busy_with_round_token: String::new(),
                        },
                        &token,
                    ))
                    .await
                    .is_ok();
                let mut s = stats.lock().expect("stats");
                s.heartbeats.push((sent, sent.elapsed()));
                s.requests += 1;
                s.errors += u64::from(!ok);
            }
        })
    };
    let result = tasks(
        &mut client,
        &id,
        &token,
        index,
        think,
        &pool,
        &stats,
        &count,
    )
    .await;
    beating.abort();
    result
}

#[allow(clippy::too_many_arguments)]
async fn tasks(
    client: &mut WorkerServiceClient<Channel>,
    id: &str,
    token: &str,
    index: usize,
    think: Duration,
    pool: &UpdatePool,
    stats: &Mutex<Stats>,
    count: &impl Fn(bool),
) -> anyhow::Result<()> {
    loop {
        let task = client
            .get_task(authed(
                pb::GetTaskRequest {
                    worker_id: id.into(),
                    wait_ms: 20_000,
                },
                token,
            ))
            .await;
        count(task.is_ok());
        let task = match task {
            Ok(t) => t.into_inner().task,
            Err(status) if status.code() == tonic::Code::Unavailable => return Ok(()),
            Err(status) => {
                eprintln!("synthetic worker {index}: GetTask failed: {status}");
                return Err(status.into());
            }
        };
        match task {
            Some(pb::get_task_response::Task::Train(t)) => {
                let uploaded = train(client, id, token, index, think, pool, &t).await;
                count(uploaded.is_ok());
                match uploaded {
                    Ok(()) => stats
                        .lock()
                        .expect("stats")
                        .uploads
                        .push((t.round, Instant::now())),
                    Err(e) => {
                        eprintln!("synthetic worker {index}: round {} failed: {e:#}", t.round)
                    }
                }
            }
            Some(pb::get_task_response::Task::Wait(w)) => {
                tokio::time::sleep(Duration::from_millis(w.retry_after_ms.min(1000).into())).await
            }
            Some(pb::get_task_response::Task::Done(_)) => return Ok(()),
            Some(pb::get_task_response::Task::Evaluate(_)) | None => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    }
}

/// Downloads the round's model (and drops it), thinks, uploads a pooled random delta.
async fn train(
    client: &mut WorkerServiceClient<Channel>,
    id: &str,
    token: &str,
    index: usize,
    think: Duration,
    pool: &UpdatePool,
    t: &pb::TrainTask,
) -> anyhow::Result<()> {
    let mut stream = client
        .download_model(authed(
            pb::DownloadModelRequest {
                worker_id: id.into(),
                job_id: t.job_id.clone(),
                round_token: t.round_token.clone(),
            },
            token,
        ))
        .await?
        .into_inner();
    let mut header = None;
    while let Some(chunk) = stream.message().await? {
        if let Some(pb::model_chunk::Part::Header(h)) = chunk.part {
            header = Some(h);
        }
    }
    let header = header.ok_or_else(|| anyhow::anyhow!("download without a header"))?;
    tokio::time::sleep(think).await;
    let (metas, chunks) = pool.get(&header, index).await?;
    let mut messages = vec![pb::UpdateChunk {
        part: Some(pb::update_chunk::Part::Header(pb::UpdateHeader {
            worker_id: id.into(),
            job_id: t.job_id.clone(),
            round: t.round,
            round_token: t.round_token.clone(),
            num_samples: 600,
            train_loss: 1.0,
            train_seconds: think.as_secs_f64(),
            tensors: metas.clone(),
            kind: pb::UpdateKind::Delta as i32,
        })),
    }];
    messages.extend(chunks.iter().map(|c| pb::UpdateChunk {
        part: Some(pb::update_chunk::Part::Data(c.clone())),
    }));
    // Sent again while the coordinator's upload budget is full, as a real worker does.
    let mut busy = 0u32;
    loop {
        match client
            .upload_update(authed(tokio_stream::iter(messages.clone()), token))
            .await
        {
            Ok(_) => return Ok(()),
            Err(s)
                if s.code() == tonic::Code::ResourceExhausted
                    && busy < fedcsg_worker::transfer::BUSY_ATTEMPTS =>
            {
                busy += 1;
                let pause = fedcsg_worker::transfer::busy_delay(busy, &mut rand::rng());
                tokio::time::sleep(pause).await;
            }
            Err(s) => return Err(anyhow::anyhow!("upload refused: {}", s.message())),
        }
    }
}
