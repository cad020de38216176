//! The coordinator's error type and the one place where errors become gRPC statuses.

use std::net::SocketAddr;
use std::path::PathBuf;

use fedcsg_ml::data::DataError;
use fedcsg_ml::error::ModelError;
use fedcsg_wire::WireError;
use fedcsg_wire::tls::TlsError;
use thiserror::Error;
use tonic::{Code, Status};

use crate::ids::{JobId, WorkerId};
use crate::store::StoreError;

/// Everything the coordinator refuses or fails at. The variant decides the gRPC code (see
/// [`ServerError::code`]); the message is what the client reads, so it names the field or rule.
#[derive(Debug, Error)]
pub enum ServerError {
    // ----- the caller's fault: INVALID_ARGUMENT -----
    /// A request value breaks a rule; `why` names the field.
    #[error("{why}")]
    InvalidArgument { why: String },
    /// A malformed, oversized or corrupted tensor transfer.
    #[error("{source}")]
    Wire {
        #[from]
        source: WireError,
    },
    /// A job spec whose model cannot be built.
    #[error("{source}")]
    UnbuildableModel {
        #[source]
        source: ModelError,
    },

    // ----- well-formed but wrong now: FAILED_PRECONDITION, NOT_FOUND, ALREADY_EXISTS -----
    /// A Join under a name a live session holds, without that session's token.
    #[error(
        "worker name {name:?} is held by live worker {holder} (last heartbeat {silent_for:.1?} ago): it is released when that worker leaves or within {released_after:.0?} of silence; a worker taking over its own name sends its previous session token"
    )]
    NameInUse {
        name: String,
        holder: WorkerId,
        silent_for: std::time::Duration,
        released_after: std::time::Duration,
    },
    /// The worker speaks another protocol version.
    #[error("protocol version {got} is not supported: this coordinator speaks version {supported}")]
    ProtocolVersion { got: u32, supported: u32 },
    /// The request comes at the wrong time (a closed round, a task never issued, ...).
    #[error("{why}")]
    FailedPrecondition { why: String },
    #[error("unknown worker {worker}")]
    UnknownWorker { worker: WorkerId },
    #[error("job {job} does not exist")]
    UnknownJob { job: JobId },

    // ----- more at once than a worker may have: RESOURCE_EXHAUSTED -----
    #[error("{why}")]
    ResourceExhausted { why: String },
    /// A transfer that moved no data for the idle timeout: cut off, its buffer freed.
    #[error("{what} moved no data for {idle:?} (the transfer idle timeout): cut off")]
    TransferIdle {
        what: &'static str,
        idle: std::time::Duration,
    },

    // ----- who is asking: UNAUTHENTICATED, PERMISSION_DENIED -----
    /// A token is missing or wrong.
    #[error("{why}")]
    Unauthenticated { why: String },
    /// A valid-looking token that may not do this.
    #[error("{why}")]
    PermissionDenied { why: String },

    // ----- a watcher too slow for the event stream: DATA_LOSS -----
    #[error("watcher fell behind by {missed} events: watch again")]
    WatcherLagged { missed: u64 },

    // ----- the coordinator's own failures: INTERNAL -----
    #[error("{source}")]
    Store {
        #[from]
        source: StoreError,
    },
    #[error("{source}")]
    Model {
        #[from]
        source: ModelError,
    },
    /// A job's stored global model does not fit its spec.
    #[error("stored model of {job}: {source}")]
    StoredModel {
        job: String,
        #[source]
        source: ModelError,
    },
    /// A blocking task panicked or was cancelled.
    #[error("{source}")]
    Task {
        #[from]
        source: tokio::task::JoinError,
    },
    #[error("{source}")]
    Reflection {
        #[from]
        source: tonic_reflection::server::Error,
    },
    #[error("I/O: {source}")]
    Io {
        #[from]
        source: std::io::Error,
    },
    #[error("transport: {source}")]
    Transport {
        #[from]
        source: tonic::transport::Error,
    },

    // ----- configuration, refused before serving (INTERNAL should one reach a client) -----
    #[error("configuration: {why}")]
    Config { why: String },
    #[error("configuration: {}: {source}", path.display())]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration: {}: {source}", path.display())]
    ConfigSyntax {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error(
        "configuration: listen address {text:?}: {source} (expected HOST:PORT, e.g. 0.0.0.0:7070)"
    )]
    ListenAddress {
        text: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error(
        "configuration: refusing to serve plaintext on the non-loopback address {listen}: give \
         --tls-cert and --tls-key, or --insecure (FEDCSG_INSECURE=true) to send tokens unencrypted"
    )]
    PlaintextListen { listen: SocketAddr },
    #[error(
        "configuration: the dashboard serves plain HTTP (the admin token would cross the network \
         in the clear): refusing the non-loopback address {listen} without --insecure (put it \
         behind a TLS-terminating proxy)"
    )]
    PlaintextDashboard { listen: SocketAddr },
    #[error("cannot listen on {listen} for {what}: {source}")]
    HttpListen {
        what: &'static str,
        listen: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// `--data` names no data set.
    #[error("configuration: data: {source}")]
    DataSource {
        #[source]
        source: DataError,
    },
    /// The coordinator's test set cannot be loaded.
    #[error("configuration: test data: {source}")]
    TestData {
        #[source]
        source: DataError,
    },
    #[error("configuration: {source}")]
    Tls {
        #[from]
        source: TlsError,
    },
    #[error("configuration: TLS (--tls-cert, --tls-key, --tls-client-ca): {source}")]
    TlsServe {
        #[source]
        source: tonic::transport::Error,
    },
    #[error("configuration: --state-dir {}: {source}", dir.display())]
    StateDir {
        dir: PathBuf,
        #[source]
        source: StoreError,
    },
}

impl ServerError {
    /// A refusal of a request value, naming the field or rule.
    pub fn invalid(why: impl Into<String>) -> Self {
        ServerError::InvalidArgument { why: why.into() }
    }

    /// A request that is well-formed but comes at the wrong time.
    pub fn precondition(why: impl Into<String>) -> Self {
        ServerError::FailedPrecondition { why: why.into() }
    }

    pub fn unauthenticated(why: impl Into<String>) -> Self {
        ServerError::Unauthenticated { why: why.into() }
    }

    pub fn config(why: impl Into<String>) -> Self {
        ServerError::Config { why: why.into() }
    }

    /// The gRPC code a client sees for this error.
    pub fn code(&self) -> Code {
        use ServerError::*;
        match self {
            InvalidArgument { .. } | Wire { .. } | UnbuildableModel { .. } => Code::InvalidArgument,
            ProtocolVersion { .. } | FailedPrecondition { .. } => Code::FailedPrecondition,
            UnknownWorker { .. } | UnknownJob { .. } => Code::NotFound,
            NameInUse { .. } => Code::AlreadyExists,
            Unauthenticated { .. } => Code::Unauthenticated,
            PermissionDenied { .. } => Code::PermissionDenied,
            WatcherLagged { .. } => Code::DataLoss,
            ResourceExhausted { .. } => Code::ResourceExhausted,
            TransferIdle { .. } => Code::DeadlineExceeded,
            Store { .. }
            | Model { .. }
            | StoredModel { .. }
            | Task { .. }
            | Reflection { .. }
            | Io { .. }
            | Transport { .. }
            | Config { .. }
            | ConfigRead { .. }
            | ConfigSyntax { .. }
            | ListenAddress { .. }
            | PlaintextListen { .. }
            | PlaintextDashboard { .. }
            | HttpListen { .. }
            | DataSource { .. }
            | TestData { .. }
            | Tls { .. }
            | TlsServe { .. }
            | StateDir { .. } => Code::Internal,
        }
    }
}

/// The only place a [`Status`] is made: the code from [`ServerError::code`], the message the
/// error displays.
impl From<ServerError> for Status {
    fn from(e: ServerError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

pub type Result<T, E = ServerError> = std::result::Result<T, E>;
