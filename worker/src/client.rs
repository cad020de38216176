//! The connection to the coordinator: one lazily (re)connecting gRPC channel (TLS for an
//! https:// coordinator) with explicit message-size limits, and the `authorization: Bearer`
//! metadata on every call.
//!
//! The channel reconnects by itself; a call made while the coordinator is down fails with
//! `UNAVAILABLE`, which the task loop answers with backoff. Unary calls carry a deadline; the
//! model streams do not (a large model on a slow link may take long) and rely on HTTP/2
//! keep-alive to notice a dead peer.

use std::time::Duration;

use fedcsg_wire::limits::MAX_MESSAGE_BYTES;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::worker_service_client::WorkerServiceClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status, Streaming};

use crate::config::{WorkerConfig, bearer};
use crate::error::WorkerError;

/// Deadline of every unary call.
pub const UNARY_TIMEOUT: Duration = Duration::from_secs(30);
const KEEPALIVE: Duration = Duration::from_secs(20);

/// A handle on the coordinator's worker service; cheap to clone (clones share the channel).
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    inner: WorkerServiceClient<Channel>,
    bearer: Option<AsciiMetadataValue>,
}

impl CoordinatorClient {
    /// A client for `config.coordinator` that authenticates with the enrollment token (if any).
    /// Connects on first use, so this never fails for an unreachable coordinator.
    pub fn connect_lazy(config: &WorkerConfig) -> Result<Self, WorkerError> {
        let mut endpoint = Endpoint::from(config.coordinator.clone());
        if let Some(tls) = &config.tls {
            endpoint = endpoint
                .tls_config(tls.config())
                .map_err(|e| WorkerError::Config {
                    flag: "--ca-cert",
                    why: format!("unusable TLS material: {e}"),
                })?;
        }
        let channel = endpoint
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .keep_alive_while_idle(true)
            .connect_lazy();
        let inner = WorkerServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let bearer = match &config.token {
            Some(t) => Some(bearer(t.expose()).map_err(|why| WorkerError::Config {
                flag: "--token",
                why,
            })?),
            None => None,
        };
        Ok(Self { inner, bearer })
    }

    /// The same channel, authenticating with the session token a join returned.
    pub fn with_session_token(&self, token: &str) -> Result<Self, WorkerError> {
        let bearer = bearer(token).map_err(|why| WorkerError::Protocol {
            what: "session token",
            why,
        })?;
        Ok(Self {
            inner: self.inner.clone(),
            bearer: Some(bearer),
        })
    }

    fn request<T>(&self, message: T, timeout: Option<Duration>) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(b) = &self.bearer {
            request.metadata_mut().insert("authorization", b.clone());
        }
        if let Some(t) = timeout {
            request.set_timeout(t);
        }
        request
    }

    pub async fn join(&self, message: pb::JoinRequest) -> Result<pb::JoinResponse, Status> {
        let request = self.request(message, Some(UNARY_TIMEOUT));
        Ok(self.inner.clone().join(request).await?.into_inner())
    }

    pub async fn heartbeat(
        &self,
        message: pb::HeartbeatRequest,
        timeout: Duration,
    ) -> Result<pb::HeartbeatResponse, Status> {
        let request = self.request(message, Some(timeout));
        Ok(self.inner.clone().heartbeat(request).await?.into_inner())
    }

    pub async fn get_task(
        &self,
        message: pb::GetTaskRequest,
    ) -> Result<pb::GetTaskResponse, Status> {
        // A long poll holds the call for up to its wait.
        let wait = Duration::from_millis(message.wait_ms.into());
        let request = self.request(message, Some(UNARY_TIMEOUT + wait));
        Ok(self.inner.clone().get_task(request).await?.into_inner())
    }

    pub async fn download_model(
        &self,
        message: pb::DownloadModelRequest,
    ) -> Result<Streaming<pb::ModelChunk>, Status> {
        let request = self.request(message, None);
        Ok(self
            .inner
            .clone()
            .download_model(request)
            .await?
            .into_inner())
    }

    pub async fn upload_update(
        &self,
        chunks: Vec<pb::UpdateChunk>,
    ) -> Result<pb::UploadUpdateResponse, Status> {
        let request = self.request(tokio_stream::iter(chunks), None);
        Ok(self
            .inner
            .clone()
            .upload_update(request)
            .await?
            .into_inner())
    }

    pub async fn report_evaluation(
        &self,
        message: pb::ReportEvaluationRequest,
    ) -> Result<pb::ReportEvaluationResponse, Status> {
        let request = self.request(message, Some(UNARY_TIMEOUT));
        Ok(self
            .inner
            .clone()
            .report_evaluation(request)
            .await?
            .into_inner())
    }

    pub async fn leave(
        &self,
        message: pb::LeaveRequest,
        timeout: Duration,
    ) -> Result<pb::LeaveResponse, Status> {
        let request = self.request(message, Some(timeout));
        Ok(self.inner.clone().leave(request).await?.into_inner())
    }
}
