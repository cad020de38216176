//! The chunked tensor codec, sending side: a state's tensors in a [`Compression`] (a value
//! encoding, optionally top-k), as the headers and data chunks [`crate::ModelAssembler`] takes.

use std::fmt;

use fedcsg_core::tensor::{NamedTensor, StateDict};

use crate::WireError;
use crate::codec::{TensorMeta, decode_payload};
use crate::encoding::{INT8_VALUES_PER_SCALE, TensorEncoding, ValueCodec};
use crate::limits::CHUNK_BYTES;
use crate::rounding::StochasticRounding;
use crate::sparse::{TopK, largest};

/// How a sender compresses tensors: a value encoding, and optionally top-k sparsification.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Compression {
    pub encoding: TensorEncoding,
    pub topk: Option<TopK>,
}

impl Compression {
    /// Dense f32: exact.
    pub const PLAIN: Compression = Compression {
        encoding: TensorEncoding::F32,
        topk: None,
    };

    pub fn dense(encoding: TensorEncoding) -> Self {
        Self {
            encoding,
            topk: None,
        }
    }

    /// Whether the receiver decodes exactly the values sent.
    pub fn is_exact(&self) -> bool {
        self.encoding.is_exact() && self.topk.is_none()
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.topk {
            None => write!(f, "{}", self.encoding),
            Some(k) => write!(f, "{} top-{k}", self.encoding),
        }
    }
}

/// An encoded transfer: the tensor headers, the data chunks (each at most `CHUNK_BYTES`), and
/// how many values had to be saturated to fit the encoding's range.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedState {
    pub metas: Vec<TensorMeta>,
    pub chunks: Vec<Vec<u8>>,
    pub saturated: u64,
}

impl EncodedState {
    /// Bytes of tensor data (without any message framing).
    pub fn data_bytes(&self) -> u64 {
        self.metas.iter().map(|m| m.byte_length).sum()
    }

    /// The values a receiver decodes from this transfer, exactly.
    pub fn decode(&self) -> Result<StateDict, WireError> {
        decode_payload(self.metas.clone(), &self.chunks.concat())
    }
}

/// Encodes `state` in plain f32: exact, any bit pattern, infallible.
pub fn encode_state(state: &StateDict) -> (Vec<TensorMeta>, Vec<Vec<u8>>) {
    let e = encode_state_with(state, Compression::PLAIN, 0).expect("f32 encodes every value");
    (e.metas, e.chunks)
}

/// Encodes every tensor of `state` in `compression`; `seed` drives int8's stochastic rounding
/// (derive it per sender and round, so runs reproduce and re-sends are identical).
pub fn encode_state_with(
    state: &StateDict,
    compression: Compression,
    seed: u64,
) -> Result<EncodedState, WireError> {
    encode_tensors(state, seed, |_| compression)
}

/// Encodes every tensor of `state` in the compression `plan` picks for it. A sparse tensor is
/// sent dense when that is no larger. NaN and infinite values are refused by the lossy
/// encodings ([`WireError::NotEncodable`]).
pub fn encode_tensors(
    state: &StateDict,
    seed: u64,
    plan: impl Fn(&NamedTensor) -> Compression,
) -> Result<EncodedState, WireError> {
    let mut metas = Vec::with_capacity(state.len());
    let mut payload = Vec::new();
    let mut saturated = 0;
    for (index, t) in state.tensors().iter().enumerate() {
        let compression = plan(t);
        let encoding = compression.encoding;
        let values_per_scale = if encoding == TensorEncoding::Int8Scaled {
            INT8_VALUES_PER_SCALE
        } else {
            0
        };
        let n = t.values.len();
        let kept = compression.topk.map(|k| k.kept(n)).filter(|k| {
            let section = |m| encoding.section_bytes(m as u64, values_per_scale);
            section(*k).map(|s| s + 4 * *k as u64) < section(n)
        });
        let mut codec =
            ValueCodec::new(encoding, StochasticRounding::for_tensor(seed, index as u64));
        let start = payload.len();
        let result = match kept {
            None => codec.encode(&t.values, &mut payload),
            Some(k) => {
                let indices = largest(&t.values, k);
                for i in &indices {
                    payload.extend_from_slice(&i.to_le_bytes());
                }
                let values: Vec<f32> = indices.iter().map(|i| t.values[*i as usize]).collect();
                codec.encode(&values, &mut payload)
            }
        };
        result.map_err(|why| WireError::NotEncodable {
            name: t.name.clone(),
            why,
        })?;
        saturated += codec.saturated();
        let bytes = &payload[start..];
        metas.push(TensorMeta {
            name: t.name.clone(),
            shape: t.shape.clone(),
            encoding,
            byte_length: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
            values_per_scale,
            kept_values: kept.map(|k| k as u64),
        });
    }
    let chunks = payload.chunks(CHUNK_BYTES).map(<[u8]>::to_vec).collect();
    Ok(EncodedState {
        metas,
        chunks,
        saturated,
    })
}
