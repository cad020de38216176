//! fedcsg-wire: everything that crosses the network, and nothing that trains.
//!
//! - [`proto`]: the generated fedcsg.v1 types and gRPC stubs (from `proto/`), the protocol version.
//! - [`codec`]: model state as a header of tensor specs plus 1 MiB data chunks; the receiving
//!   side ([`ModelAssembler`]) and its checks.
//! - [`encode`]: the sending side, in a [`Compression`]: f32, f16, bf16 or int8, optionally top-k.
//! - [`encoding`]: the value encodings, their byte layouts and error bounds.
//! - [`rounding`]: the seeded stochastic rounding of int8.
//! - [`sparse`]: top-k selection and the index section of sparse tensors.
//! - [`delta`]: updates as deltas from the round's global model, and which tensors stay plain.
//! - [`convert`]: the one place where wire (proto) types become domain types and back.
//! - [`limits`]: message, tensor and transfer size limits both ends enforce.
//! - [`tls`]: TLS material for the coordinator and its clients.
//! - [`metrics_http`]: the Prometheus `/metrics` endpoint both binaries serve.
//!
//! No unsafe code; it depends on `fedcsg-core` only, never on `fedcsg-ml`.

#![forbid(unsafe_code)]

pub mod codec;
pub mod convert;
pub mod delta;
pub mod encode;
pub mod encoding;
pub mod limits;
pub mod metrics_http;
pub mod proto;
pub mod rounding;
pub mod sparse;
pub mod tls;

pub use codec::{Accepted, ModelAssembler, TensorMeta};
pub use delta::UpdateKind;
pub use encode::{Compression, EncodedState, encode_state, encode_state_with, encode_tensors};
pub use encoding::TensorEncoding;
pub use limits::WireLimits;
pub use sparse::TopK;

use thiserror::Error;

/// A malformed, oversized or corrupted transfer. Messages name the tensor and the problem.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum WireError {
    #[error("transfer has {count} tensors, more than the limit of {limit}")]
    TooManyTensors { count: usize, limit: usize },
    #[error("tensor name of {len} bytes exceeds the limit of {limit}")]
    NameTooLong { len: usize, limit: usize },
    #[error("tensor {name:?}: {why}")]
    BadTensorSpec { name: String, why: String },
    #[error("tensor {name:?} appears twice in the header")]
    DuplicateTensor { name: String },
    #[error("data chunk of {len} bytes exceeds the limit of {limit}")]
    ChunkTooLarge { len: usize, limit: usize },
    #[error("transfer of {total} bytes exceeds the limit of {limit}")]
    TooLarge { total: u64, limit: u64 },
    #[error("received {got} data bytes but the header announces {expected}")]
    LengthMismatch { expected: u64, got: u64 },
    #[error("tensor {name:?}: checksum mismatch (header {expected:08x}, data {got:08x})")]
    Checksum {
        name: String,
        expected: u32,
        got: u32,
    },
    #[error(
        "tensor {name:?}: encoding {encoding} is not supported by this transfer (it accepts {accepted})"
    )]
    UnsupportedEncoding {
        name: String,
        encoding: String,
        accepted: String,
    },
    /// Encoded bytes that no honest sender produces: a bad scale, a non-finite value, an index
    /// out of range or out of order.
    #[error("tensor {name:?}: {why}")]
    BadTensorData { name: String, why: String },
    /// A value the sender's encoding cannot represent (NaN or infinite in a lossy encoding).
    #[error("tensor {name:?} cannot be encoded: {why}")]
    NotEncodable { name: String, why: String },
    #[error("{0}")]
    Protocol(String),
}
