//! The chunked tensor codec, receiving side: a header describing every tensor (name, shape,
//! encoding, byte length, CRC-32, and for compressed tensors the int8 block size and the top-k
//! count), then the tensors' encoded bytes in header order, cut into chunks. The receiver checks
//! every declared fact before accepting a byte and assembles incrementally, so memory is bounded
//! by the declared (and limited) size, and grows only as data arrives: a header alone reserves at
//! most [`INITIAL_RESERVE`] bytes, however large it claims to be. The sending side is
//! [`crate::encode`].

use fedcsg_core::tensor::{NamedTensor, StateDict};

use crate::encoding::{MAX_VALUES_PER_SCALE, TensorEncoding, decode_values};
use crate::sparse::decode_indices;
use crate::{WireError, WireLimits, limits::CHUNK_BYTES};

/// Bytes an assembler reserves before any data arrived.
pub const INITIAL_RESERVE: usize = 4 * CHUNK_BYTES;

/// Domain form of a wire tensor header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TensorMeta {
    pub name: String,
    pub shape: Vec<usize>,
    pub encoding: TensorEncoding,
    pub byte_length: u64,
    pub crc32: u32,
    /// Values per scale of an int8 tensor; 0 for the other encodings.
    pub values_per_scale: u32,
    /// `Some(k)`: a top-k sparse tensor carrying k (index, value) pairs.
    pub kept_values: Option<u64>,
}

impl TensorMeta {
    /// The byte length the other fields imply for a tensor of `elements` values, or why there is
    /// none.
    fn implied_byte_length(&self, elements: u64) -> Result<u64, String> {
        match (self.encoding, self.values_per_scale) {
            (TensorEncoding::Int8Scaled, 0) => {
                return Err("int8 tensor without values_per_scale".into());
            }
            (TensorEncoding::Int8Scaled, b) if b > MAX_VALUES_PER_SCALE => {
                return Err(format!(
                    "values_per_scale {b} exceeds the limit of {MAX_VALUES_PER_SCALE}"
                ));
            }
            (TensorEncoding::Int8Scaled, _) | (_, 0) => {}
            (e, b) => {
                return Err(format!(
                    "values_per_scale {b} on an {e} tensor (only int8 has scales)"
                ));
            }
        }
        let values = match self.kept_values {
            None => elements,
            Some(k) if k > elements => {
                return Err(format!(
                    "keeps {k} values of a tensor of {elements} (shape {:?})",
                    self.shape
                ));
            }
            Some(k) => k,
        };
        let index_bytes = if self.kept_values.is_some() {
            values
        } else {
            0
        };
        self.encoding
            .section_bytes(values, self.values_per_scale)
            .and_then(|v| v.checked_add(index_bytes * 4))
            .ok_or_else(|| "byte length overflows".to_string())
    }
}

/// What a receiver accepts: a set of encodings, and whether tensors may be sparse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    encodings: [bool; 4],
    sparse: bool,
}

impl Accepted {
    /// Dense f32 only: the exchange as it was before compression (exported models).
    pub const PLAIN: Accepted = Accepted {
        encodings: [true, false, false, false],
        sparse: false,
    };
    /// Any encoding, dense: what a worker accepts as a global model.
    pub const ANY_DENSE: Accepted = Accepted {
        encodings: [true; 4],
        sparse: false,
    };
    /// Any encoding, dense or sparse.
    pub const ANY: Accepted = Accepted {
        encodings: [true; 4],
        sparse: true,
    };

    fn slot(e: TensorEncoding) -> usize {
        TensorEncoding::ALL
            .iter()
            .position(|x| *x == e)
            .expect("ALL lists every encoding")
    }

    /// f32 and `encoding`, dense.
    pub fn f32_and(encoding: TensorEncoding) -> Accepted {
        let mut a = Self::PLAIN;
        a.encodings[Self::slot(encoding)] = true;
        a
    }

    /// The same encodings, and sparse tensors too when `sparse`.
    pub fn with_sparse(mut self, sparse: bool) -> Accepted {
        self.sparse = sparse;
        self
    }

    pub fn encoding(&self, e: TensorEncoding) -> bool {
        self.encodings[Self::slot(e)]
    }

    pub fn sparse(&self) -> bool {
        self.sparse
    }

    fn names(&self) -> String {
        TensorEncoding::ALL
            .iter()
            .filter(|e| self.encoding(**e))
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Receives the data chunks of a transfer whose header has been validated.
#[derive(Debug)]
pub struct ModelAssembler {
    metas: Vec<TensorMeta>,
    limits: WireLimits,
    expected: u64,
    buffer: Vec<u8>,
}

impl ModelAssembler {
    /// A plain transfer: dense f32 only (see [`Self::accepting`]).
    pub fn new(metas: Vec<TensorMeta>, limits: WireLimits) -> Result<Self, WireError> {
        Self::accepting(metas, limits, Accepted::PLAIN)
    }

    /// Validates the header against `limits` and `accepted`: count, names, ranks, element
    /// counts, encodings, int8 block sizes, top-k counts, byte lengths consistent with shape ×
    /// encoding, total size.
    pub fn accepting(
        metas: Vec<TensorMeta>,
        limits: WireLimits,
        accepted: Accepted,
    ) -> Result<Self, WireError> {
        if metas.len() > limits.max_tensors {
            return Err(WireError::TooManyTensors {
                count: metas.len(),
                limit: limits.max_tensors,
            });
        }
        let mut names = std::collections::HashSet::new();
        let mut total: u64 = 0;
        for m in &metas {
            let bad = |why: String| WireError::BadTensorSpec {
                name: m.name.clone(),
                why,
            };
            if m.name.len() > limits.max_name_len {
                return Err(WireError::NameTooLong {
                    len: m.name.len(),
                    limit: limits.max_name_len,
                });
            }
            if m.name.is_empty() {
                return Err(bad("empty name".into()));
            }
            if !names.insert(m.name.as_str()) {
                return Err(WireError::DuplicateTensor {
                    name: m.name.clone(),
                });
            }
            if !accepted.encoding(m.encoding) {
                return Err(WireError::UnsupportedEncoding {
                    name: m.name.clone(),
                    encoding: m.encoding.to_string(),
                    accepted: accepted.names(),
                });
            }
            if m.kept_values.is_some() && !accepted.sparse() {
                return Err(bad(
                    "is sparse (top-k), but this transfer takes dense tensors only".into(),
                ));
            }
            if m.shape.len() > limits.max_rank {
                return Err(bad(format!(
                    "rank {} exceeds the limit of {}",
                    m.shape.len(),
                    limits.max_rank
                )));
            }
            let elements = m
                .shape
                .iter()
                // Every dimension within the limit too: [0, 2^60] holds no values but is no shape.
                .try_fold(1u64, |acc, d| {
                    if *d as u64 > limits.max_elements {
                        None
                    } else {
                        acc.checked_mul(*d as u64)
                    }
                })
                .filter(|n| *n <= limits.max_elements)
                .ok_or_else(|| {
                    bad(format!(
                        "shape {:?} exceeds the limit of {} elements",
                        m.shape, limits.max_elements
                    ))
                })?;
            let implied = m.implied_byte_length(elements).map_err(bad)?;
            if m.byte_length != implied {
                return Err(bad(format!(
                    "byte length {} does not match shape {:?} in {}{} ({implied})",
                    m.byte_length,
                    m.shape,
                    m.encoding,
                    m.kept_values
                        .map(|k| format!(" with {k} values kept"))
                        .unwrap_or_default(),
                )));
            }
            total += m.byte_length;
            if total > limits.max_total_bytes {
                return Err(WireError::TooLarge {
                    total,
                    limit: limits.max_total_bytes,
                });
            }
        }
        let reserve = (total as usize).min(INITIAL_RESERVE);
        Ok(Self {
            metas,
            limits,
            expected: total,
            buffer: Vec::with_capacity(reserve),
        })
    }

    /// Bytes the receive buffer holds allocated: never more than [`Self::expected_bytes`]
    /// (nor than [`INITIAL_RESERVE`] before data arrives).
    pub fn allocated_bytes(&self) -> usize {
        self.buffer.capacity()
    }

    pub fn expected_bytes(&self) -> u64 {
        self.expected
    }

    pub fn metas(&self) -> &[TensorMeta] {
        &self.metas
    }

    pub fn push(&mut self, chunk: &[u8]) -> Result<(), WireError> {
        if chunk.len() > self.limits.max_chunk_bytes {
            return Err(WireError::ChunkTooLarge {
                len: chunk.len(),
                limit: self.limits.max_chunk_bytes,
            });
        }
        let got = self.buffer.len() as u64 + chunk.len() as u64;
        if got > self.expected {
            return Err(WireError::LengthMismatch {
                expected: self.expected,
                got,
            });
        }
        if got as usize > self.buffer.capacity() {
            // Double, as Vec would, but never past the declared size.
            let target = (self.buffer.capacity() * 2)
                .max(got as usize)
                .min(self.expected as usize);
            self.buffer.reserve_exact(target - self.buffer.len());
        }
        self.buffer.extend_from_slice(chunk);
        Ok(())
    }

    /// Checks the length and every checksum, then decodes the tensors to f32 (a sparse tensor
    /// to its dense form, zeros where nothing was sent). CPU-bound for large models: servers
    /// call it off their async runtime.
    pub fn finish(self) -> Result<StateDict, WireError> {
        if self.buffer.len() as u64 != self.expected {
            return Err(WireError::LengthMismatch {
                expected: self.expected,
                got: self.buffer.len() as u64,
            });
        }
        decode_payload(self.metas, &self.buffer)
    }
}

/// Decodes tensors whose headers were validated from their concatenated bytes (of exactly the
/// declared total length).
pub(crate) fn decode_payload(
    metas: Vec<TensorMeta>,
    payload: &[u8],
) -> Result<StateDict, WireError> {
    let mut offset = 0usize;
    let mut tensors = Vec::with_capacity(metas.len());
    for m in metas {
        let bytes = &payload[offset..offset + m.byte_length as usize];
        offset += m.byte_length as usize;
        let got = crc32fast::hash(bytes);
        if got != m.crc32 {
            return Err(WireError::Checksum {
                name: m.name,
                expected: m.crc32,
                got,
            });
        }
        let values = decode_tensor(&m, bytes).map_err(|why| WireError::BadTensorData {
            name: m.name.clone(),
            why,
        })?;
        tensors.push(NamedTensor {
            name: m.name,
            shape: m.shape,
            values,
        });
    }
    StateDict::new(tensors).map_err(WireError::Protocol)
}

fn decode_tensor(m: &TensorMeta, bytes: &[u8]) -> Result<Vec<f32>, String> {
    let n: usize = m.shape.iter().product();
    let mut values = vec![0.0f32; n];
    match m.kept_values {
        None => decode_values(m.encoding, m.values_per_scale, bytes, &mut values)?,
        Some(k) => {
            let (index_bytes, value_bytes) = bytes.split_at(k as usize * 4);
            let indices = decode_indices(index_bytes, n as u64)?;
            let mut kept = vec![0.0f32; k as usize];
            decode_values(m.encoding, m.values_per_scale, value_bytes, &mut kept)?;
            for (i, v) in indices.iter().zip(kept) {
                values[*i as usize] = v;
            }
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests;
