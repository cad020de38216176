//! The virtual clients of a simulation: each has its data partition, its coordinator session
//! and what a real worker keeps between rounds (local batch-norm statistics, the error-feedback
//! residual), but no model of its own. Models come from a pool of at most `concurrency`, so
//! memory grows with the clients training at once, not with the clients.
//!
//! A task runs the real worker's code: `transfer::download`, `local_work::train_round`,
//! `feedback::prepare_update`, `transfer::update_chunks` and `transfer::send_update`, or
//! `local_work::evaluate_round` and the evaluation report, over a real gRPC connection to the
//! in-process coordinator.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use fedcsg_core::tensor::StateDict;
use fedcsg_ml::model::{Model, ModelSpec};
use fedcsg_ml::ops::ConvBackend;
use fedcsg_wire::UpdateKind;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_worker::WorkerError;
use fedcsg_worker::assignment::{EvalAssignment, TrainAssignment};
use fedcsg_worker::client::CoordinatorClient;
use fedcsg_worker::feedback::{Residual, prepare_update};
use fedcsg_worker::local_data::LocalData;
use fedcsg_worker::local_work::{evaluate_round, on_blocking_thread, train_round};
use fedcsg_worker::transfer::{self, update_chunks};
use tokio::sync::{Semaphore, oneshot};

/// What a real worker would keep between rounds.
#[derive(Debug, Default)]
struct ClientMemory {
    /// The variables the federation does not exchange (local batch-norm statistics), as this
    /// client's last task left them.
    local_state: Option<StateDict>,
    residual: Option<Residual>,
}

/// One simulated client.
#[derive(Debug)]
pub struct VirtualClient {
    pub index: usize,
    pub worker_id: String,
    pub data: Arc<LocalData>,
    client: CoordinatorClient,
    memory: Mutex<ClientMemory>,
}

impl VirtualClient {
    /// Joins the coordinator as `name` with `data`'s sizes, as a real worker does.
    pub async fn join(
        index: usize,
        name: String,
        data: Arc<LocalData>,
        client: &CoordinatorClient,
    ) -> anyhow::Result<Self> {
        let request = pb::JoinRequest {
            protocol_version: fedcsg_wire::proto::PROTOCOL_VERSION,
            worker_name: name.clone(),
            num_samples: data.train.len() as u64,
            in_channels: data.train.channels() as u32,
            num_classes: data.train.num_classes() as u32,
            data_description: data.description.clone(),
            previous_session_token: String::new(),
        };
        let joined = client
            .join(request)
            .await
            .with_context(|| format!("client {name} could not join"))?;
        let client = match joined.session_token.as_str() {
            "" => client.clone(),
            token => client.with_session_token(token)?,
        };
        Ok(Self {
            index,
            worker_id: joined.worker_id,
            data,
            client,
            memory: Mutex::new(ClientMemory::default()),
        })
    }

    pub fn client(&self) -> &CoordinatorClient {
        &self.client
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, ClientMemory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops a residual that can no longer be used: a worker only carries one into the round
    /// right after the one that left it.
    pub fn forget_stale_residual(&self, current_round: u64) {
        let mut memory = self.memory();
        if memory
            .residual
            .as_ref()
            .is_some_and(|r| r.round + 1 < current_round)
        {
            memory.residual = None;
        }
    }

    /// Bytes of state this client keeps between rounds.
    pub fn kept_bytes(&self) -> usize {
        let memory = self.memory();
        let size = |s: &StateDict| {
            s.tensors()
                .iter()
                .map(|t| t.values.len() * 4)
                .sum::<usize>()
        };
        memory.local_state.as_ref().map_or(0, size)
            + memory.residual.as_ref().map_or(0, |r| size(&r.values))
    }
}

/// What the clients that are training or evaluating borrow: a model each, and a kernel
/// thread pool each (as each real worker process has its own), at most `concurrency` at once.
#[derive(Debug)]
pub struct ModelPool {
    backend: ConvBackend,
    free: Mutex<Vec<Arc<Model>>>,
    thread_pools: Mutex<Vec<Arc<rayon::ThreadPool>>>,
    /// Models the pool has built (at most the concurrency per model spec).
    pub built: std::sync::atomic::AtomicUsize,
    permits: Semaphore,
}

/// A model and a thread pool lent by the pool, returned to it when dropped.
struct Lent<'a> {
    pool: &'a ModelPool,
    model: Option<Arc<Model>>,
    threads: Option<Arc<rayon::ThreadPool>>,
}

impl Lent<'_> {
    fn parts(&self) -> (Arc<Model>, Arc<rayon::ThreadPool>) {
        let model = self.model.as_ref().expect("lent until dropped");
        let threads = self.threads.as_ref().expect("lent until dropped");
        (Arc::clone(model), Arc::clone(threads))
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(model) = self.model.take() {
            locked(&self.pool.free).push(model);
        }
        if let Some(threads) = self.threads.take() {
            locked(&self.pool.thread_pools).push(threads);
        }
    }
}

/// The pool's free list; a panic elsewhere while holding it leaves a usable list.
fn locked<T>(list: &Mutex<Vec<T>>) -> std::sync::MutexGuard<'_, Vec<T>> {
    list.lock().unwrap_or_else(|p| p.into_inner())
}

impl ModelPool {
    /// A pool for `concurrency` clients at once, each training with `threads` kernel threads.
    pub fn new(backend: ConvBackend, concurrency: usize, threads: usize) -> anyhow::Result<Self> {
        let thread_pools = (0..concurrency)
            .map(|i| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(move |t| format!("sim-slot{i}-{t}"))
                    .build()
                    .map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            backend,
            free: Mutex::new(Vec::new()),
            thread_pools: Mutex::new(thread_pools),
            built: Default::default(),
            permits: Semaphore::new(concurrency),
        })
    }

    /// A model of `spec` whose variables a task may overwrite (built like a real worker's
    /// first model, seed 0, when none of that spec is free) and a thread pool. Call it holding
    /// a permit.
    async fn lend(&self, spec: ModelSpec) -> anyhow::Result<Lent<'_>> {
        let threads = locked(&self.thread_pools)
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no thread pool is free (lent without a permit)"))?;
        let found = {
            let mut free = locked(&self.free);
            let i = free.iter().position(|m| *m.spec() == spec);
            i.map(|i| free.swap_remove(i))
        };
        let model = match found {
            Some(m) => m,
            None => {
                let backend = self.backend;
                self.built
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                on_blocking_thread("model construction", move || {
                    Ok(Arc::new(Model::new(&spec, 0, backend)?))
                })
                .await?
            }
        };
        Ok(Lent {
            pool: self,
            model: Some(model),
            threads: Some(threads),
        })
    }
}

/// Who uploads before whom in a round: uploads go in client order, so that the coordinator
/// folds the same updates in the same order on every run of a seed.
pub struct UploadTurn {
    pub previous: Option<oneshot::Receiver<()>>,
    pub done: oneshot::Sender<()>,
}

impl UploadTurn {
    /// One turn per task, in order.
    pub fn chain(n: usize) -> Vec<UploadTurn> {
        let mut previous = None;
        (0..n)
            .map(|_| {
                let (done, next) = oneshot::channel();
                let turn = UploadTurn {
                    previous: previous.take(),
                    done,
                };
                previous = Some(next);
                turn
            })
            .collect()
    }
}

/// Restores what this client keeps (or a fresh worker's values) for the variables `global`
/// does not carry, so that a pooled model holds nothing of another client; returns their names.
fn restore_local(
    model: &Model,
    pristine: &Pristine,
    kept: Option<&StateDict>,
    global: &StateDict,
) -> Result<Vec<String>, WorkerError> {
    let pristine = pristine.of(model)?;
    let local: Vec<String> = pristine
        .tensors()
        .iter()
        .filter(|t| global.get(&t.name).is_none())
        .map(|t| t.name.clone())
        .collect();
    if !local.is_empty() {
        let names: Vec<&str> = local.iter().map(String::as_str).collect();
        model.load_state(
            &kept
                .cloned()
                .unwrap_or_else(|| pristine.restricted_to(&names)),
        )?;
    }
    Ok(local)
}

/// What one training task reported.
#[derive(Debug, Clone, Copy)]
pub struct TrainReport {
    pub bytes_down: u64,
    pub bytes_up: u64,
    pub accepted: bool,
}

/// The pristine state of a fresh model of `spec` (a real worker's values before its first
/// download), computed once per spec.
#[derive(Debug, Default)]
pub struct Pristine {
    states: Mutex<Vec<(ModelSpec, Arc<StateDict>)>>,
}

impl Pristine {
    fn of(&self, model: &Model) -> Result<Arc<StateDict>, WorkerError> {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, s)) = states.iter().find(|(spec, _)| spec == model.spec()) {
            return Ok(Arc::clone(s));
        }
        let fresh = Model::new(model.spec(), 0, ConvBackend::Reference)?;
        let state = Arc::new(fresh.state()?);
        states.push((*model.spec(), Arc::clone(&state)));
        Ok(state)
    }
}

/// Runs a train task for `client`: download, train on a pooled model (waiting for a permit),
/// upload in turn.
pub async fn train(
    client: Arc<VirtualClient>,
    task: TrainAssignment,
    pool: Arc<ModelPool>,
    pristine: Arc<Pristine>,
    turn: UploadTurn,
) -> anyhow::Result<TrainReport> {
    let UploadTurn { previous, done } = turn;
    let trained = async {
        let _permit = pool.permits.acquire().await?;
        let global = transfer::download(&client.client, &client.worker_id, &task.round).await?;
        let lent = pool.lend(task.spec).await?;
        let (model, threads) = lent.parts();
        let (kept, carried) = {
            let mut memory = client.memory();
            let carried = memory
                .residual
                .take()
                .filter(|r| r.job_id == task.round.job_id && r.round + 1 == task.round.round)
                .map(|r| r.values);
            (memory.local_state.clone(), carried)
        };
        let (data, job, bytes_down) =
            (Arc::clone(&client.data), task.clone(), global.encoded_bytes);
        let outcome = on_blocking_thread("training", move || {
            threads.install(|| {
                let local = restore_local(&model, &pristine, kept.as_ref(), &global.state)?;
                let trained = train_round(&model, &data, &job, &global.state, &|| false)?;
                let prepared = prepare_update(
                    &trained.update,
                    &global.state,
                    &job.upload,
                    job.seed,
                    carried.as_ref(),
                )?;
                let names: Vec<&str> = local.iter().map(String::as_str).collect();
                let kept = (!names.is_empty())
                    .then(|| model.state().map(|s| s.restricted_to(&names)))
                    .transpose()?;
                Ok((trained, prepared, kept))
            })
        })
        .await?;
        drop(lent);
        anyhow::Ok((outcome, bytes_down))
    }
    .await;
    if let Some(previous) = previous {
        // The client before this one uploaded, or failed: either way it is this one's turn.
        let _ = previous.await;
    }
    let result = async {
        let ((trained, prepared, kept), bytes_down) = trained?;
        let (chunks, bytes_up) = update_chunks(
            &client.worker_id,
            &task.round,
            trained.summary,
            UpdateKind::Delta,
            prepared.encoded,
        );
        let response =
            transfer::send_update(&client.client, chunks, Duration::from_secs(2)).await?;
        let accepted = response.accepted || response.duplicate;
        let mut memory = client.memory();
        memory.local_state = kept;
        if accepted && let Some(values) = prepared.residual {
            memory.residual = Some(Residual {
                job_id: task.round.job_id.clone(),
                round: task.round.round,
                values,
            });
        }
        anyhow::Ok(TrainReport {
            bytes_down,
            bytes_up,
            accepted,
        })
    }
    .await;
    let _ = done.send(());
    result
}

/// Runs an evaluation task for `client` on its held-out split and reports it.
pub async fn evaluate(
    client: Arc<VirtualClient>,
    task: EvalAssignment,
    pool: Arc<ModelPool>,
    pristine: Arc<Pristine>,
) -> anyhow::Result<()> {
    let report = {
        let _permit = pool.permits.acquire().await?;
        let global = transfer::download(&client.client, &client.worker_id, &task.round).await?;
        let lent = pool.lend(task.spec).await?;
        let (model, threads) = lent.parts();
        let kept = client.memory().local_state.clone();
        let (data, job) = (Arc::clone(&client.data), task.clone());
        let report = on_blocking_thread("evaluation", move || {
            threads.install(|| {
                restore_local(&model, &pristine, kept.as_ref(), &global.state)?;
                evaluate_round(&model, &data, &job, &global.state)
            })
        })
        .await?;
        drop(lent);
        report
    };
    client
        .client
        .report_evaluation(pb::ReportEvaluationRequest {
            worker_id: client.worker_id.clone(),
            job_id: task.round.job_id.clone(),
            round_token: task.round.round_token.clone(),
            num_samples: report.samples as u64,
            correct: report.correct as u64,
            loss_sum: report.loss_sum,
        })
        .await
        .context("ReportEvaluation")?;
    Ok(())
}
