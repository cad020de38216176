//! The worker's life: load the local data once, join, then ask for tasks until the coordinator
//! says the work is done or shutdown is requested.
//!
//! Failures never lose local state (data, models): a coordinator that is down is waited for with
//! backoff, one that forgot this worker (it restarted) is joined again, and a task that fails
//! (its round closed meanwhile, say) is logged and the loop asks for the next one. Only a refused
//! join stops the worker with an error.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fedcsg_ml::train::TrainError;
use fedcsg_wire::proto::PROTOCOL_VERSION;
use fedcsg_wire::proto::v1 as pb;
use tokio::time::sleep;
use tracing::{Instrument, debug, info, info_span, instrument, warn};

use crate::assignment::{Assignment, EvalAssignment, TrainAssignment};
use crate::backoff::Backoff;
use crate::client::CoordinatorClient;
use crate::config::WorkerConfig;
use crate::error::{Recovery, WorkerError, is_transient};
use crate::feedback::{FeedbackMemory, Residual, prepare_update};
use crate::heartbeat::{BusySlot, Heartbeat, interval_from_ms};
use crate::local_data::LocalData;
use crate::local_work::{ModelCache, evaluate_round, on_blocking_thread, train_round};
use crate::metrics::WorkerMetrics;
use crate::transfer::{self, update_chunks};
use fedcsg_wire::UpdateKind;

/// How long a GetTask call waits on the coordinator for a task (a long poll): an idle worker
/// sends one request per wait, and a new round reaches it at once.
const TASK_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// How often a worker whose name a live session still holds asks again.
const NAME_IN_USE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a best-effort Leave may take at shutdown.
const LEAVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs the worker until the coordinator says it is done (`Ok`), `shutdown` completes (`Ok`,
/// after a best-effort Leave), or the coordinator refuses the join (`Err`).
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let span = info_span!("worker", name = %config.name);
    run_worker(config, shutdown).instrument(span).await
}

async fn run_worker(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    tokio::pin!(shutdown);
    let metrics = Arc::new(WorkerMetrics::new());
    // Bound before the data loads, so a taken port fails the start at once.
    let metrics_endpoint = match config.metrics_listen {
        Some(addr) => Some(serve_metrics(addr, &metrics).await?),
        None => None,
    };
    let loading = config.clone();
    let data = tokio::select! {
        biased;
        () = &mut shutdown => {
            info!("shutdown requested while loading data");
            return Ok(());
        }
        data = on_blocking_thread("data loading", move || LocalData::load(&loading)) => data?,
    };
    info!(data = %data.description, coordinator = %config.coordinator, "local data ready");
    let mut worker = Worker::new(config, data, metrics)?;
    let stopping = Arc::clone(&worker.stopping);
    let result = tokio::select! {
        biased;
        () = &mut shutdown => {
            info!("shutdown requested");
            // Training on a blocking thread cannot be dropped: it polls this flag instead.
            stopping.store(true, Ordering::Relaxed);
            Ok(())
        }
        result = worker.serve() => result,
    };
    worker.leave().await;
    if let Some(endpoint) = metrics_endpoint {
        endpoint.abort();
    }
    result
}

/// Local DP: the update's difference from the global model (trained tensors) is clipped and
/// noised here, before compression and upload, with noise from the operating system's seed.
fn privatize_update(
    update: &mut fedcsg_core::tensor::StateDict,
    global: &fedcsg_core::tensor::StateDict,
    settings: fedcsg_core::privacy::LocalPrivacy,
) -> Result<(), WorkerError> {
    let names: Vec<&str> = update.tensors().iter().map(|t| t.name.as_str()).collect();
    let base = global.restricted_to(&names);
    let mut noise = fedcsg_core::privacy::GaussianNoise::from_os();
    let mut tensors = std::mem::take(update).into_tensors();
    let protocol = |why| WorkerError::Protocol {
        what: "local privacy",
        why,
    };
    let norm = fedcsg_core::privacy::privatize(
        &mut tensors,
        base.tensors(),
        |n| !fedcsg_wire::delta::stays_plain(n),
        settings,
        &mut noise,
    )
    .map_err(protocol)?;
    *update = fedcsg_core::tensor::StateDict::new(tensors).map_err(protocol)?;
    debug!(
        norm,
        clip_norm = settings.clip_norm,
        "update clipped and noised (local DP)"
    );
    Ok(())
}

/// Serves the worker's `/metrics` on `addr` until the worker stops.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    metrics: &WorkerMetrics,
) -> Result<tokio::task::JoinHandle<()>, WorkerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| WorkerError::Config {
            flag: "--metrics-listen",
            why: format!("cannot listen on {addr}: {e}"),
        })?;
    let bound = listener.local_addr().map_err(|e| WorkerError::Config {
        flag: "--metrics-listen",
        why: e.to_string(),
    })?;
    info!(addr = %bound, "metrics listening");
    let router = fedcsg_wire::metrics_http::router(Arc::clone(metrics.registry()));
    Ok(tokio::spawn(async move {
        if let Err(e) =
            fedcsg_wire::metrics_http::serve(listener, router, std::future::pending()).await
        {
            warn!(error = %e, "the metrics endpoint stopped");
        }
    }))
}

/// A joined worker's identity with the coordinator.
struct Session {
    worker_id: String,
    /// Authenticates with the session token.
    client: CoordinatorClient,
    /// Every log line of the session carries its worker id (one field, however often the
    /// worker rejoins).
    span: tracing::Span,
    _heartbeat: Heartbeat,
}

enum Step {
    Continue,
    Done,
}

struct Worker {
    config: WorkerConfig,
    /// Authenticates with the enrollment token; used to join.
    client: CoordinatorClient,
    data: Arc<LocalData>,
    models: ModelCache,
    /// Error-feedback residuals per job (memory only: a restart starts without).
    feedback: FeedbackMemory,
    session: Option<Session>,
    /// The token of the last session, sent at a rejoin to take the name over from it.
    last_session_token: Option<String>,
    backoff: Backoff,
    busy: BusySlot,
    stopping: Arc<AtomicBool>,
    metrics: Arc<WorkerMetrics>,
}

impl Worker {
    fn new(
        config: WorkerConfig,
        data: LocalData,
        metrics: Arc<WorkerMetrics>,
    ) -> Result<Self, WorkerError> {
        Ok(Self {
            client: CoordinatorClient::connect_lazy(&config)?,
            data: Arc::new(data),
            models: ModelCache::new(config.conv),
            feedback: FeedbackMemory::default(),
            session: None,
            last_session_token: None,
            backoff: Backoff::new(config.max_retry),
            busy: BusySlot::default(),
            stopping: Arc::new(AtomicBool::new(false)),
            metrics,
            config,
        })
    }

    /// The task loop. Returns only when the coordinator says done or on a fatal error.
    async fn serve(&mut self) -> Result<(), WorkerError> {
        loop {
            if self.session.is_none() {
                self.join().await?;
            }
            let span = self
                .session
                .as_ref()
                .map_or_else(tracing::Span::none, |s| s.span.clone());
            let error = match self.next_task().instrument(span).await {
                Ok(Step::Continue) => {
                    self.backoff.reset();
                    continue;
                }
                Ok(Step::Done) => return Ok(()),
                Err(error) => error,
            };
            let recovery = error.recovery();
            if recovery == Recovery::Fatal {
                return Err(error);
            }
            let delay = self.backoff.next_delay(&mut rand::rng());
            let attempt = self.backoff.failures();
            if recovery == Recovery::Rejoin {
                warn!(%error, "the coordinator does not know this session; joining again");
                self.metrics.reconnecting();
                self.session = None;
            } else if matches!(&error, WorkerError::Rpc { code, .. } if is_transient(*code)) {
                warn!(%error, attempt, retry_in_ms = delay.as_millis() as u64, "the coordinator is unreachable; retrying");
                self.metrics.reconnecting();
            } else {
                warn!(%error, attempt, retry_in_ms = delay.as_millis() as u64, "task failed; asking for the next one");
                self.metrics.task_failed();
            }
            sleep(delay).await;
        }
    }

    /// Joins, retrying with backoff while the coordinator is unreachable.
    async fn join(&mut self) -> Result<(), WorkerError> {
        let train = &self.data.train;
        let request = pb::JoinRequest {
            protocol_version: PROTOCOL_VERSION,
            worker_name: self.config.name.clone(),
            num_samples: train.len() as u64,
            in_channels: train.channels() as u32,
            num_classes: train.num_classes() as u32,
            data_description: self.data.description.clone(),
            previous_session_token: self.last_session_token.clone().unwrap_or_default(),
        };
        loop {
            match self.client.join(request.clone()).await {
                Ok(response) => return self.open_session(response),
                // The name is still held by a session of ours the coordinator thinks alive
                // (this process restarted): it is released within the heartbeat timeout.
                // Not a failure of the coordinator: retry every second, not with a growing
                // backoff, so the worker joins as soon as the old session is released.
                Err(status) if status.code() == tonic::Code::AlreadyExists => {
                    warn!(
                        message = status.message(),
                        "worker name in use; retrying in 1 s"
                    );
                    sleep(NAME_IN_USE_RETRY).await;
                }
                Err(status) if is_transient(status.code()) => {
                    let delay = self.backoff.next_delay(&mut rand::rng());
                    let attempt = self.backoff.failures();
                    let (code, message, retry_in_ms) =
                        (status.code(), status.message(), delay.as_millis() as u64);
                    if attempt <= 3 {
                        info!(coordinator = %self.config.coordinator, ?code, message, attempt, retry_in_ms, "cannot join yet; retrying");
                    } else {
                        warn!(coordinator = %self.config.coordinator, ?code, message, attempt, retry_in_ms, "cannot join yet; retrying");
                    }
                    sleep(delay).await;
                }
                Err(status) => return Err(WorkerError::join_refused(status)),
            }
        }
    }

    fn open_session(&mut self, response: pb::JoinResponse) -> Result<(), WorkerError> {
        if response.protocol_version != 0 && response.protocol_version != PROTOCOL_VERSION {
            return Err(WorkerError::JoinRefused {
                code: tonic::Code::FailedPrecondition,
                message: format!(
                    "the coordinator speaks protocol {}, this worker {PROTOCOL_VERSION}",
                    response.protocol_version
                ),
                hint: "",
            });
        }
        if response.worker_id.is_empty() {
            return Err(WorkerError::Protocol {
                what: "JoinResponse",
                why: "worker_id is empty".into(),
            });
        }
        // A coordinator without authentication may hand out no session token.
        let client = match response.session_token.as_str() {
            "" => self.client.clone(),
            token => self.client.with_session_token(token)?,
        };
        let interval = interval_from_ms(response.heartbeat_interval_ms);
        let span = info_span!("session", worker_id = %response.worker_id);
        info!(parent: &span, heartbeat_ms = interval.as_millis() as u64, "joined");
        self.metrics.joined();
        self.last_session_token = Some(response.session_token.clone()).filter(|t| !t.is_empty());
        let heartbeat = Heartbeat::spawn(
            client.clone(),
            response.worker_id.clone(),
            interval,
            self.busy.clone(),
        );
        self.session = Some(Session {
            worker_id: response.worker_id,
            client,
            span,
            _heartbeat: heartbeat,
        });
        Ok(())
    }

    async fn next_task(&mut self) -> Result<Step, WorkerError> {
        let Some(session) = &self.session else {
            return Ok(Step::Continue);
        };
        let (client, worker_id) = (session.client.clone(), session.worker_id.clone());
        let request = pb::GetTaskRequest {
            worker_id: worker_id.clone(),
            wait_ms: TASK_WAIT.as_millis() as u32,
        };
        let response = client
            .get_task(request)
            .await
            .map_err(|s| WorkerError::rpc("GetTask", s))?;
        match Assignment::from_proto(response)? {
            Assignment::Wait {
                retry_after,
                reason,
            } => {
                debug!(
                    reason,
                    wait_ms = retry_after.as_millis() as u64,
                    "nothing to do yet"
                );
                sleep(retry_after).await;
            }
            Assignment::Done { reason } => {
                info!(reason, "the coordinator has no more work for this worker");
                return Ok(Step::Done);
            }
            Assignment::Train(task) => self.train(&client, &worker_id, task).await?,
            Assignment::Evaluate(task) => self.evaluate(&client, &worker_id, task).await?,
        }
        Ok(Step::Continue)
    }

    #[instrument(name = "task", skip_all, fields(job_id = %task.round.job_id, round = task.round.round, kind = "train"))]
    async fn train(
        &mut self,
        client: &CoordinatorClient,
        worker_id: &str,
        task: TrainAssignment,
    ) -> Result<(), WorkerError> {
        let busy = self.busy.start(&task.round.round_token);
        info!(model = %task.spec, epochs = task.epochs, batch_size = task.batch_size, deadline_s = task.deadline.as_secs(), "training task");
        let global = transfer::download(client, worker_id, &task.round).await?;
        self.metrics.downloaded(global.encoded_bytes);
        debug!(bytes_down = global.encoded_bytes, tensors = global.state.len(), sha256 = %global.model_sha256, "global model received");
        let model = self.models.model_for(&task.round.job_id, task.spec).await?;
        let should_stop = {
            let (abandon, stopping) = (busy.abandon_flag(), Arc::clone(&self.stopping));
            move || abandon.load(Ordering::Relaxed) || stopping.load(Ordering::Relaxed)
        };
        // Taken now: whatever happens to this round, the residual is not reused later.
        let carried = self.feedback.take(&task.round.job_id, task.round.round);
        let (data, job, state) = (Arc::clone(&self.data), task.clone(), global.state);
        let outcome = on_blocking_thread("training", move || {
            let mut trained = train_round(&model, &data, &job, &state, &should_stop)?;
            if let Some(settings) = job.local_privacy {
                privatize_update(&mut trained.update, &state, settings)?;
            }
            let prepared = prepare_update(
                &trained.update,
                &state,
                &job.upload,
                job.seed,
                carried.as_ref(),
            )?;
            Ok((trained, prepared))
        })
        .await;
        let (outcome, prepared) = match outcome {
            Err(WorkerError::Train(TrainError::Cancelled)) => {
                info!("training stopped early; no update sent");
                return Ok(());
            }
            Err(error @ WorkerError::Panicked { .. }) => {
                // The model may be half-updated; the next round rebuilds it from the download.
                self.models.forget(&task.round.job_id);
                return Err(error);
            }
            other => other?,
        };
        if busy.abandoned() {
            info!("the round no longer needs this update; not sending it");
            return Ok(());
        }
        self.metrics.trained(&outcome);
        let summary = outcome.summary;
        if prepared.encoded.saturated > 0 {
            warn!(
                values = prepared.encoded.saturated,
                encoding = %task.upload.compression,
                "update values beyond the encoding's range were sent saturated"
            );
        }
        let data_bytes_up = prepared.encoded.data_bytes();
        let (chunks, bytes_up) = update_chunks(
            worker_id,
            &task.round,
            summary,
            UpdateKind::Delta,
            prepared.encoded,
        );
        let response = transfer::send_update(client, chunks, self.config.max_retry).await?;
        self.metrics.uploaded(bytes_up);
        info!(
            samples = summary.num_samples,
            train_loss = summary.train_loss,
            train_seconds = summary.train_seconds,
            bytes_down = global.encoded_bytes,
            bytes_up,
            data_bytes_up,
            encoding = %task.upload.compression,
            error_feedback = prepared.residual.is_some(),
            accepted = response.accepted,
            duplicate = response.duplicate,
            "update sent"
        );
        if !response.accepted && !response.duplicate {
            warn!("the coordinator did not accept the update");
        } else if let Some(values) = prepared.residual {
            self.feedback.keep(Residual {
                job_id: task.round.job_id.clone(),
                round: task.round.round,
                values,
            });
        }
        Ok(())
    }

    #[instrument(name = "task", skip_all, fields(job_id = %task.round.job_id, round = task.round.round, kind = "evaluate"))]
    async fn evaluate(
        &mut self,
        client: &CoordinatorClient,
        worker_id: &str,
        task: EvalAssignment,
    ) -> Result<(), WorkerError> {
        let _busy = self.busy.start(&task.round.round_token);
        let global = transfer::download(client, worker_id, &task.round).await?;
        self.metrics.downloaded(global.encoded_bytes);
        let model = self.models.model_for(&task.round.job_id, task.spec).await?;
        let (data, job, state) = (Arc::clone(&self.data), task.clone(), global.state);
        let report = on_blocking_thread("evaluation", move || {
            evaluate_round(&model, &data, &job, &state)
        })
        .await?;
        let request = pb::ReportEvaluationRequest {
            worker_id: worker_id.to_string(),
            job_id: task.round.job_id.clone(),
            round_token: task.round.round_token.clone(),
            num_samples: report.samples as u64,
            correct: report.correct as u64,
            loss_sum: report.loss_sum,
        };
        client
            .report_evaluation(request)
            .await
            .map_err(|s| WorkerError::rpc("ReportEvaluation", s))?;
        self.metrics.evaluated();
        info!(
            samples = report.samples,
            accuracy = report.accuracy(),
            loss = report.mean_loss(),
            "evaluation reported"
        );
        Ok(())
    }

    /// Best-effort Leave, so the coordinator stops counting on this worker at once.
    async fn leave(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let request = pb::LeaveRequest {
            worker_id: session.worker_id.clone(),
        };
        match session.client.leave(request, LEAVE_TIMEOUT).await {
            Ok(_) => info!("left the federation"),
            Err(status) => {
                warn!(code = ?status.code(), message = status.message(), "could not leave cleanly")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `run` can be spawned on a multi-threaded runtime (an in-process cluster test does that).
    #[test]
    fn run_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let config = WorkerConfig::for_coordinator("http://127.0.0.1:1").unwrap();
        let future = run(config, std::future::pending());
        assert_send(&future);
    }

    /// A shutdown requested at once ends the worker cleanly even with no coordinator around.
    #[tokio::test]
    async fn immediate_shutdown_returns_ok() {
        let config = WorkerConfig::for_coordinator("http://127.0.0.1:1").unwrap();
        run(config, std::future::ready(())).await.unwrap();
    }
}
