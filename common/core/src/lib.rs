//! fedcsg-core: the plain data every other fedcsg crate shares. No unsafe code, no candle, no
//! protobuf.
//!
//! - [`tensor`]: model state as named f32 arrays, the unit of aggregation, storage and transfer.
//! - [`spec`]: what a model is (architecture, CSG mode, layout, classes) and its CLI spellings.
//! - [`secret`]: tokens that never show in logs, compared in constant time.
//! - [`seed`]: the one way seeds are mixed into independent streams.
//! - [`clip`]: the L2 norm of an update and clipping it to a bound.
//! - [`privacy`]: differential privacy: settings, Gaussian noise, the Rényi-DP accountant.
//!
//! The crates above it: `fedcsg-wire` (the gRPC contract, chunk codec, limits, TLS) and
//! `fedcsg-ml` (kernels, CSG models, data, training); neither imports the other.

#![forbid(unsafe_code)]

pub mod clip;
pub mod privacy;
pub mod secret;
pub mod seed;
pub mod spec;
pub mod tensor;
