//! The coordinator's error type and the one place where errors become gRPC statuses.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Internal(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl From<fedcsg_wire::WireError> for ServerError {
    fn from(e: fedcsg_wire::WireError) -> Self {
        ServerError::InvalidArgument(e.to_string())
    }
}

impl From<ServerError> for tonic::Status {
    fn from(e: ServerError) -> Self {
        use tonic::Status;
        match e {
            ServerError::InvalidArgument(m) => Status::invalid_argument(m),
            ServerError::FailedPrecondition(m) => Status::failed_precondition(m),
            ServerError::NotFound(m) => Status::not_found(m),
            ServerError::Unauthenticated(m) => Status::unauthenticated(m),
            ServerError::PermissionDenied(m) => Status::permission_denied(m),
            other => Status::internal(other.to_string()),
        }
    }
}

pub type Result<T, E = ServerError> = std::result::Result<T, E>;
