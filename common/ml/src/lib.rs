//! fedcsg-ml: what a worker computes. The only crate of the workspace with unsafe code (the CPU
//! kernels in [`ops`]), and the only one built at opt-level 3 in the dev profile.
//!
//! - [`ops`]: the compute kernels the models call: direct AVX2 convolutions, fused batch norm,
//!   im2col + gemm for other CPUs, and candle's reference ops.
//! - [`model`]: the CSG-parameterised CNNs (slice generator, code banks, ResNet, DenseNet-BC),
//!   their parameter inventory, state exchange and safetensors persistence.
//! - [`data`]: IDX and CIFAR loaders, the bundled subset, normalisation, augmentation, partitions.
//! - [`optim`]: SGD with momentum and weight decay, AdamW, learning-rate schedules.
//! - [`train`]: the local training and evaluation loops.
//! - [`error`]: typed errors.
//!
//! Model specs and state dicts are `fedcsg-core` types; nothing here knows about the wire.

pub mod data;
pub mod error;
pub mod model;
pub mod ops;
pub mod optim;
pub mod train;
