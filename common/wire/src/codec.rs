//! The chunked tensor codec: a header describing every tensor (name, shape, encoding, byte
//! length, CRC-32), then the tensors' little-endian f32 bytes in header order, cut into chunks.
//! The receiver checks every declared fact before accepting a byte and assembles incrementally,
//! so memory is bounded by the declared (and limited) size, and grows only as data arrives: a
//! header alone reserves at most [`INITIAL_RESERVE`] bytes, however large it claims to be.

use crate::{WireError, WireLimits, limits::CHUNK_BYTES};

/// Bytes an assembler reserves before any data arrived.
pub const INITIAL_RESERVE: usize = 4 * CHUNK_BYTES;
use fedcsg_core::tensor::{NamedTensor, StateDict};

/// How a tensor's values are encoded. Only `F32` is produced and accepted today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorEncoding {
    F32,
    F16,
    Bf16,
    Int8Scaled,
}

/// Domain form of a wire tensor header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorMeta {
    pub name: String,
    pub shape: Vec<usize>,
    pub encoding: TensorEncoding,
    pub byte_length: u64,
    pub crc32: u32,
}

/// Encodes `state` as tensor headers and a list of data chunks of at most `CHUNK_BYTES`.
pub fn encode_state(state: &StateDict) -> (Vec<TensorMeta>, Vec<Vec<u8>>) {
    let mut metas = Vec::with_capacity(state.len());
    let mut payload = Vec::with_capacity(state.numel() * 4);
    for t in state.tensors() {
        let start = payload.len();
        for v in &t.values {
            payload.extend_from_slice(&v.to_le_bytes());
        }
        let bytes = &payload[start..];
        metas.push(TensorMeta {
            name: t.name.clone(),
            shape: t.shape.clone(),
            encoding: TensorEncoding::F32,
            byte_length: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        });
    }
    let chunks = payload.chunks(CHUNK_BYTES).map(<[u8]>::to_vec).collect();
    (metas, chunks)
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
    /// Validates the header against `limits`: count, names, ranks, element counts, encodings,
    /// byte lengths consistent with shapes, total size.
    pub fn new(metas: Vec<TensorMeta>, limits: WireLimits) -> Result<Self, WireError> {
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
            if m.encoding != TensorEncoding::F32 {
                return Err(WireError::UnsupportedEncoding {
                    name: m.name.clone(),
                    encoding: format!("{:?}", m.encoding),
                });
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
            if m.byte_length != elements * 4 {
                return Err(bad(format!(
                    "byte length {} does not match shape {:?} in f32 ({})",
                    m.byte_length,
                    m.shape,
                    elements * 4
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

    /// Checks the length and every checksum, then decodes the tensors.
    pub fn finish(self) -> Result<StateDict, WireError> {
        if self.buffer.len() as u64 != self.expected {
            return Err(WireError::LengthMismatch {
                expected: self.expected,
                got: self.buffer.len() as u64,
            });
        }
        let mut offset = 0usize;
        let mut tensors = Vec::with_capacity(self.metas.len());
        for m in self.metas {
            let bytes = &self.buffer[offset..offset + m.byte_length as usize];
            offset += m.byte_length as usize;
            let got = crc32fast::hash(bytes);
            if got != m.crc32 {
                return Err(WireError::Checksum {
                    name: m.name,
                    expected: m.crc32,
                    got,
                });
            }
            let values = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            tensors.push(NamedTensor {
                name: m.name,
                shape: m.shape,
                values,
            });
        }
        StateDict::new(tensors).map_err(WireError::Protocol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(sizes: &[usize]) -> StateDict {
        let tensors = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| NamedTensor {
                name: format!("t{i:03}"),
                shape: vec![*n],
                values: (0..*n).map(|v| v as f32 * 0.5 - i as f32).collect(),
            })
            .collect();
        StateDict::new(tensors).unwrap()
    }

    fn round_trip(s: &StateDict) -> Result<StateDict, WireError> {
        let (metas, chunks) = encode_state(s);
        let mut a = ModelAssembler::new(metas, WireLimits::default())?;
        for c in &chunks {
            a.push(c)?;
        }
        a.finish()
    }

    /// A state larger than one chunk (a 3 MiB tensor) survives the trip bit for bit, in chunks
    /// that all respect the chunk size.
    #[test]
    fn large_state_round_trips_in_bounded_chunks() {
        let s = state(&[3, 786_432, 0, 17]);
        let (_, chunks) = encode_state(&s);
        assert!(chunks.len() >= 3);
        assert!(chunks.iter().all(|c| c.len() <= CHUNK_BYTES));
        assert_eq!(round_trip(&s).unwrap(), s);
    }

    /// A flipped byte is caught by the checksum of the tensor it belongs to.
    #[test]
    fn corruption_names_the_tensor() {
        let s = state(&[4, 8]);
        let (metas, mut chunks) = encode_state(&s);
        chunks[0][20] ^= 1;
        let mut a = ModelAssembler::new(metas, WireLimits::default()).unwrap();
        a.push(&chunks[0]).unwrap();
        assert!(matches!(a.finish(), Err(WireError::Checksum { name, .. }) if name == "t001"));
    }

    /// Headers that lie or exceed limits are refused before any data is accepted.
    #[test]
    fn bad_headers_are_refused() {
        let (metas, _) = encode_state(&state(&[4, 8]));
        let mut m = metas.clone();
        m[1].byte_length = 31;
        assert!(matches!(
            ModelAssembler::new(m, WireLimits::default()),
            Err(WireError::BadTensorSpec { .. })
        ));
        let mut m = metas.clone();
        m[1].name = m[0].name.clone();
        assert!(matches!(
            ModelAssembler::new(m, WireLimits::default()),
            Err(WireError::DuplicateTensor { .. })
        ));
        let mut m = metas.clone();
        m[0].shape = vec![1 << 40, 1 << 40];
        assert!(matches!(
            ModelAssembler::new(m, WireLimits::default()),
            Err(WireError::BadTensorSpec { .. })
        ));
        // No values, but a dimension beyond the element limit is no shape either.
        let mut m = metas.clone();
        m[0].shape = vec![0, 1 << 40];
        m[0].byte_length = 0;
        assert!(matches!(
            ModelAssembler::new(m, WireLimits::default()),
            Err(WireError::BadTensorSpec { .. })
        ));
        let mut m = metas.clone();
        m[0].encoding = TensorEncoding::Int8Scaled;
        assert!(matches!(
            ModelAssembler::new(m, WireLimits::default()),
            Err(WireError::UnsupportedEncoding { .. })
        ));
        let limits = WireLimits {
            max_tensors: 1,
            ..WireLimits::default()
        };
        assert!(matches!(
            ModelAssembler::new(metas.clone(), limits),
            Err(WireError::TooManyTensors { .. })
        ));
        // too much and too little data
        let mut a = ModelAssembler::new(metas.clone(), WireLimits::default()).unwrap();
        assert!(matches!(
            a.push(&[0u8; 49]),
            Err(WireError::LengthMismatch { .. })
        ));
        let mut a = ModelAssembler::new(metas, WireLimits::default()).unwrap();
        a.push(&[0u8; 47]).unwrap();
        assert!(matches!(a.finish(), Err(WireError::LengthMismatch { .. })));
    }

    proptest! {
        /// Any state round-trips exactly, whatever the values (NaN bit patterns included).
        #[test]
        fn any_state_round_trips(sizes in proptest::collection::vec(0usize..3000, 0..12), seed in any::<u32>()) {
            let mut s = state(&sizes).into_tensors();
            for t in &mut s { for v in &mut t.values { *v = f32::from_bits(v.to_bits() ^ seed); } }
            let s = StateDict::new(s).unwrap();
            let back = round_trip(&s).unwrap();
            prop_assert_eq!(back.fingerprint(), s.fingerprint());
        }

        /// Arbitrary bytes pushed against a valid header never panic: they are accepted or refused.
        #[test]
        fn arbitrary_data_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), split in 0usize..200) {
            let (metas, _) = encode_state(&state(&[5, 7, 13]));
            let mut a = ModelAssembler::new(metas, WireLimits::default()).unwrap();
            let split = split.min(data.len());
            let ok = a.push(&data[..split]).and_then(|_| a.push(&data[split..]));
            if ok.is_ok() { let _ = a.finish(); }
        }
    }
}
