//! fedcsg-worker: a training node of a fedcsg federation.
//!
//! The worker joins a coordinator, then asks it for tasks in a loop: download the global model,
//! train it on this node's data partition (or evaluate it on the local test partition), send the
//! result back. The binary `fedcsg-worker` only parses flags, sets up logging and calls [`run`].
//!
//! - [`config`]: the command-line flags and the validated [`WorkerConfig`] they become.
//! - [`error`]: [`WorkerError`], and which errors the loop retries, re-joins after or stops on.
//! - [`backoff`]: the reconnect schedule (exponential, capped, jittered).
//! - [`client`]: the gRPC channel to the coordinator and the bearer token on every call.
//! - [`assignment`]: tasks from the wire, validated into domain types.
//! - [`transfer`]: the chunked model download and update upload.
//! - [`feedback`]: the update as a compressed delta, and the error-feedback residuals per job.
//! - [`local_data`]: this worker's train and test partitions.
//! - [`local_work`]: the models kept per job and the training / evaluation run off the runtime.
//! - [`tls_args`]: the client TLS flags, shared with the operator CLI.
//! - [`metrics`]: Prometheus metrics of local training and transfers (`--metrics-listen`).
//! - [`heartbeat`]: the task that tells the coordinator this worker is alive (and hears "abandon").
//! - [`run`](mod@run): the loop tying these together, with reconnects and graceful shutdown.

#![forbid(unsafe_code)]

pub mod assignment;
pub mod backoff;
pub mod client;
pub mod config;
pub mod error;
pub mod feedback;
pub mod heartbeat;
pub mod local_data;
pub mod local_work;
pub mod metrics;
pub mod run;
pub mod tls_args;
pub mod transfer;

pub use config::{LogFormat, WorkerArgs, WorkerConfig};
pub use error::WorkerError;
pub use run::run;
