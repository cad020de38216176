//! fedcsg-common: everything coordinator and workers share.
//!
//! - [`model`]: the CSG-parameterised CNNs (slice generator, code banks, ResNet, DenseNet-BC),
//!   their parameter inventory, state exchange and safetensors persistence.
//! - [`ops`]: the compute kernels the models call (a fast CPU conv2d and candle's reference).
//! - [`tensor`]: model state as plain named f32 arrays, the unit of aggregation and transfer.
//! - [`optim`]: SGD with momentum and weight decay, AdamW, learning-rate schedules.
//! - [`train`]: the local training and evaluation loops.
//! - [`error`]: typed errors.
//! - [`secret`]: tokens that never show in logs, compared in constant time.
//! - [`tls`]: TLS material for the coordinator and its clients, and the client TLS flags.

pub mod data;
pub mod error;
pub mod model;
pub mod ops;
pub mod optim;
pub mod proto;
pub mod secret;
pub mod tensor;
pub mod tls;
pub mod train;
pub mod wire;
