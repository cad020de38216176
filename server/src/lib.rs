//! fedcsg-server: the federated-training coordinator.
//!
//! - [`config`]: configuration from a TOML file, FEDCSG_* variables and flags, validated once.
//! - [`coordinator`]: workers, jobs and the round state machine (domain logic, no protobuf).
//! - [`aggregate`]: the streaming weighted mean of updates.
//! - [`client_evaluation`]: per-client evaluation of a global model, summarised.
//! - [`strategy`]: aggregation strategies (FedAvg, server optimisers, robust aggregators),
//!   update clipping and weighting.
//! - [`job`]: job specs, states and round records.
//! - [`lr_schedule`]: the learning rate across rounds.
//! - [`ids`]: identifier newtypes.
//! - [`service`]: the gRPC edge (worker and operator services, conversions).
//! - [`server`]: `run(listener, config, shutdown)`, serving everything on one port.
//! - [`idle_connection`]: accepted connections closed after a silence.
//! - [`store`]: durable state in SQLite plus atomically written model files.
//! - [`fault`]: fault injection points for crash tests.
//! - [`error`]: the error type and its single mapping to gRPC statuses.
//! - [`telemetry`]: tracing setup shared by the binaries.
//! - [`metrics`]: Prometheus metrics of the coordinator and the RPC timing layer.
//! - [`http`]: the HTTP endpoints beside the gRPC port: `/metrics` and the [`dashboard`].

#![forbid(unsafe_code)]

pub mod aggregate;
pub mod client_evaluation;
pub mod config;
pub mod coordinator;
pub mod dashboard;
pub mod error;
pub mod fault;
pub mod http;
pub mod idle_connection;
pub mod ids;
pub mod job;
pub mod lr_schedule;
pub mod metrics;
pub mod server;
pub mod service;
pub mod store;
pub mod strategy;
pub mod telemetry;

pub use server::run;
