//! `WorkerError`, the worker library's one error type, and how the task loop reacts to each kind.

use fedcsg_ml::data::DataError;
use fedcsg_ml::error::ModelError;
use fedcsg_ml::train::TrainError;
use fedcsg_wire::WireError;
use thiserror::Error;
use tonic::Code;

/// Everything that can go wrong in a worker. Messages name the flag, the call or the tensor.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// A flag (or its environment variable) has a value the worker cannot use.
    #[error("invalid {flag}: {why}")]
    Config { flag: &'static str, why: String },

    /// The data set could not be loaded or partitioned.
    #[error("data {data}: {source}")]
    Data {
        data: String,
        #[source]
        source: DataError,
    },

    /// The coordinator refused the join for a reason retrying cannot fix.
    #[error("the coordinator refused to let this worker join ({code:?}): {message}{hint}")]
    JoinRefused {
        code: Code,
        message: String,
        hint: &'static str,
    },

    /// A call to the coordinator failed.
    #[error("{call} failed ({code:?}): {message}")]
    Rpc {
        call: &'static str,
        code: Code,
        message: String,
    },

    /// The coordinator sent something that breaks the contract.
    #[error("the coordinator sent an invalid {what}: {why}")]
    Protocol { what: &'static str, why: String },

    /// A model transfer was malformed, oversized or corrupted.
    #[error("model transfer: {0}")]
    Wire(#[from] WireError),

    #[error(transparent)]
    Model(#[from] ModelError),

    #[error(transparent)]
    Train(#[from] TrainError),

    /// Training or evaluation panicked on its blocking thread.
    #[error("local {what} panicked: {why}")]
    Panicked { what: &'static str, why: String },
}

/// What the task loop does after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The coordinator does not know this session (it restarted, or expired us): join again.
    Rejoin,
    /// Wait (with backoff) and ask for the next task; the local state is kept.
    Retry,
    /// Retrying cannot help: stop the worker.
    Fatal,
}

impl WorkerError {
    /// Wraps a failed call.
    pub fn rpc(call: &'static str, status: tonic::Status) -> Self {
        WorkerError::Rpc {
            call,
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// Wraps a refused join, with a hint for the codes an operator can act on.
    pub fn join_refused(status: tonic::Status) -> Self {
        let hint = match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => " (check --token / FEDCSG_TOKEN)",
            Code::FailedPrecondition => {
                " (is this worker built from the same release as the coordinator?)"
            }
            _ => "",
        };
        WorkerError::JoinRefused {
            code: status.code(),
            message: status.message().to_string(),
            hint,
        }
    }

    pub fn recovery(&self) -> Recovery {
        match self {
            WorkerError::Config { .. }
            | WorkerError::Data { .. }
            | WorkerError::JoinRefused { .. } => Recovery::Fatal,
            WorkerError::Rpc {
                code: Code::Unauthenticated,
                ..
            } => Recovery::Rejoin,
            // NOT_FOUND about a job or round is a task error; about the worker itself it comes
            // from the calls that name nothing but the worker.
            WorkerError::Rpc {
                call: "GetTask" | "Heartbeat",
                code: Code::NotFound,
                ..
            } => Recovery::Rejoin,
            _ => Recovery::Retry,
        }
    }
}

/// Codes worth retrying the same call for: the coordinator is down, restarting or overloaded, or
/// the connection broke.
pub fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Unknown
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A coordinator that forgot the worker triggers a re-join, a closed round only a retry, a
    /// refused join stops the worker.
    #[test]
    fn errors_map_to_the_documented_recovery() {
        let rpc = |call, code| WorkerError::rpc(call, tonic::Status::new(code, "x"));
        assert_eq!(rpc("GetTask", Code::NotFound).recovery(), Recovery::Rejoin);
        assert_eq!(
            rpc("UploadUpdate", Code::Unauthenticated).recovery(),
            Recovery::Rejoin
        );
        assert_eq!(
            rpc("DownloadModel", Code::NotFound).recovery(),
            Recovery::Retry
        );
        assert_eq!(
            rpc("UploadUpdate", Code::FailedPrecondition).recovery(),
            Recovery::Retry
        );
        assert_eq!(
            rpc("GetTask", Code::Unavailable).recovery(),
            Recovery::Retry
        );
        let refused = WorkerError::join_refused(tonic::Status::failed_precondition(
            "protocol version 2 expected",
        ));
        assert_eq!(refused.recovery(), Recovery::Fatal);
        assert!(
            refused.to_string().contains("protocol version 2 expected"),
            "{refused}"
        );
    }

    #[test]
    fn only_transport_like_codes_are_transient() {
        assert!(is_transient(Code::Unavailable));
        assert!(!is_transient(Code::FailedPrecondition));
        assert!(!is_transient(Code::Unauthenticated));
        assert!(!is_transient(Code::PermissionDenied));
    }
}
