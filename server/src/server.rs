//! Serving: the coordinator's gRPC services (worker, operator, health, reflection) on a listener,
//! the round driver, and one shutdown path.

use std::future::Future;
use std::sync::Arc;

use fedcsg_wire::limits::MAX_MESSAGE_BYTES;
use fedcsg_wire::proto::v1::{
    self as pb, operator_service_server::OperatorServiceServer,
    worker_service_server::WorkerServiceServer,
};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::CoordinatorConfig;
use crate::coordinator::{Coordinator, CoordinatorSettings, TestSet};
use crate::error::{Result, ServerError};
use crate::metrics::RpcTimingLayer;
use crate::service::{operator_api::OperatorApi, refusals::RefusalLog, worker_api::WorkerApi};
use crate::store::Store;

/// Loads the coordinator's test set (if configured) and builds the coordinator.
pub fn build_coordinator(config: &CoordinatorConfig) -> Result<Arc<Coordinator>> {
    let test_set = match &config.data {
        None => None,
        Some(source) => {
            let data = source
                .load()
                .map_err(|source| ServerError::TestData { source })?;
            let test = if config.test_limit > 0 {
                data.test.seeded_subset(config.test_limit, 0)
            } else {
                data.test
            };
            Some(TestSet {
                data: test,
                normalization: source.normalization(),
            })
        }
    };
    let settings = CoordinatorSettings {
        heartbeat_interval: config.heartbeat_interval,
        heartbeat_timeout: config.heartbeat_timeout,
        enrollment_token: config.enrollment_token.clone(),
        max_worker_samples: config.max_worker_samples,
        gone_worker_retention: config.gone_worker_retention,
        transfers: config.transfers,
        ..CoordinatorSettings::default()
    };
    let store = match &config.state_dir {
        Some(dir) => Some(Store::open(dir).map_err(|source| ServerError::StateDir {
            dir: dir.clone(),
            source,
        })?),
        None => {
            warn!("no --state-dir: coordinator state is in memory only and is lost on restart");
            None
        }
    };
    Coordinator::new(settings, test_set, store)
}

/// Serves until `shutdown` resolves, then stops accepting, tells workers they are done and
/// returns.
pub async fn run(
    listener: TcpListener,
    config: CoordinatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let coordinator = build_coordinator(&config)?;
    run_with(listener, config, coordinator, shutdown).await
}

pub async fn run_with(
    listener: TcpListener,
    config: CoordinatorConfig,
    coordinator: Arc<Coordinator>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener.local_addr()?;
    // Checked again on the bound address: a caller may hand over any listener.
    crate::config::check_plaintext_listen(addr, config.tls.is_some(), config.insecure)?;
    // Bound first, so that a taken port fails the start before anything is served.
    let http_endpoints = crate::http::bind(&config, &coordinator).await?;
    if let Some(path) = &config.addr_file {
        // Write then rename, so a reader never sees a partial address.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, addr.to_string())?;
        std::fs::rename(&tmp, path)?;
    }
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<WorkerServiceServer<WorkerApi>>()
        .await;
    health_reporter
        .set_serving::<OperatorServiceServer<OperatorApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let refusals = Arc::new(RefusalLog::default());
    let worker = WorkerServiceServer::new(WorkerApi::new(
        Arc::clone(&coordinator),
        Arc::clone(&refusals),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let operator = OperatorServiceServer::new(OperatorApi::new(
        Arc::clone(&coordinator),
        config.admin_token.clone(),
        refusals,
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let driver = tokio::spawn(Arc::clone(&coordinator).drive({
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }));
    if !addr.ip().is_loopback() {
        if config.admin_token.is_none() {
            warn!(%addr, "no --admin-token: anyone who reaches this address may create and cancel jobs");
        }
        if config.enrollment_token.is_none() {
            warn!(%addr, "no --enrollment-token: anyone who reaches this address may join as a worker");
        }
    }
    info!(%addr, tls = config.tls.is_some(), mutual_tls = config.tls.as_ref().is_some_and(|t| t.mutual()), "coordinator listening");
    let coord = Arc::clone(&coordinator);
    let grace = config.shutdown_grace;
    let serve_shutdown = async move {
        shutdown.await;
        info!(grace = ?grace, "shutting down: telling workers they are done");
        coord.begin_shutdown();
        let _ = stop_tx.send(true);
        for status in [
            "",
            <WorkerServiceServer<WorkerApi> as tonic::server::NamedService>::NAME,
            <OperatorServiceServer<OperatorApi> as tonic::server::NamedService>::NAME,
        ] {
            health_reporter
                .set_service_status(status, tonic_health::ServingStatus::NotServing)
                .await;
        }
        // Keep serving for the grace period, so that waiting workers hear "done" instead of
        // finding the port closed; stop early once every present worker has heard it.
        let started = tokio::time::Instant::now();
        while started.elapsed() < grace && coord.workers_not_yet_told_done() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        info!(waited = ?started.elapsed(), not_told = coord.workers_not_yet_told_done(), "closing the listener");
    };
    let idle = config.idle_connection_timeout;
    let mut builder = tonic::transport::Server::builder()
        // The default deadline of a call whose client set none (tonic honours a client's
        // shorter `grpc-timeout`).
        .timeout(config.rpc_timeout)
        .http2_keepalive_interval(Some(crate::idle_connection::keepalive_interval(idle)))
        .http2_keepalive_timeout(Some(crate::idle_connection::keepalive_interval(idle)))
        // Windows follow each connection's measured bandwidth-delay product, so a worker far
        // away uploads at its link's speed; uploads are read as they arrive (or refused at the
        // header when the upload budget is full), so no unread stream holds a window.
        .http2_adaptive_window(Some(true));
    if let Some(tls) = &config.tls {
        builder = builder
            .tls_config(tls.config())
            .map_err(|source| ServerError::TlsServe { source })?;
    }
    // The HTTP endpoints stay up through the shutdown grace period (the dashboard shows it).
    let (http_stop_tx, http_stop_rx) = tokio::sync::watch::channel(false);
    let http_tasks: Vec<_> = http_endpoints
        .into_iter()
        .map(|endpoint| {
            let mut rx = http_stop_rx.clone();
            endpoint.spawn(async move {
                let _ = rx.wait_for(|s| *s).await;
            })
        })
        .collect();
    let served = builder
        .layer(RpcTimingLayer::new(Arc::clone(coordinator.metrics())))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(worker)
        .add_service(operator)
        .serve_with_incoming_shutdown(
            crate::idle_connection::incoming(listener, idle),
            serve_shutdown,
        )
        .await;
    let _ = http_stop_tx.send(true);
    for task in http_tasks {
        let _ = task.await;
    }
    served?;
    let _ = driver.await;
    Ok(())
}
