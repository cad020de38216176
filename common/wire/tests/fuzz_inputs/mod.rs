//! The fuzzer's inputs: what a peer controls, from raw bytes to valid transfers in every
//! encoding with random mutations. See `fuzz_codec.rs` for the properties checked.

use fedcsg_core::tensor::{NamedTensor, StateDict};
use fedcsg_wire::convert::meta_to_proto;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::{Compression, TensorEncoding, TopK, WireLimits, encode_state_with};
use proptest::prelude::*;
use prost::Message;

/// Small limits, so that generated inputs reach them often and memory bounds mean something.
pub const LIMITS: WireLimits = WireLimits {
    max_chunk_bytes: 96,
    max_total_bytes: 4096,
    max_tensors: 12,
    max_name_len: 12,
    max_rank: 4,
    max_elements: 700,
};

/// What a peer sends: the encoded header message, then the encoded data messages.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// Decode as `UpdateChunk` rather than `ModelChunk` (the two share the layout).
    pub update: bool,
    pub header: Vec<u8>,
    pub chunks: Vec<Vec<u8>>,
    /// Known to be a valid, unmutated transfer decoding to this state.
    pub valid: Option<StateDict>,
}

pub fn data_message(update: bool, bytes: Vec<u8>) -> Vec<u8> {
    if update {
        pb::UpdateChunk {
            part: Some(pb::update_chunk::Part::Data(bytes)),
        }
        .encode_to_vec()
    } else {
        pb::ModelChunk {
            part: Some(pb::model_chunk::Part::Data(bytes.into())),
        }
        .encode_to_vec()
    }
}

pub fn header_message(update: bool, tensors: Vec<pb::TensorSpec>) -> Vec<u8> {
    if update {
        let h = pb::UpdateHeader {
            worker_id: "w-1".into(),
            job_id: "job-1".into(),
            round: 1,
            round_token: "t".into(),
            num_samples: 1,
            tensors,
            ..Default::default()
        };
        pb::UpdateChunk {
            part: Some(pb::update_chunk::Part::Header(h)),
        }
        .encode_to_vec()
    } else {
        let h = pb::ModelHeader {
            job_id: "job-1".into(),
            round: 1,
            round_token: "t".into(),
            tensors,
            model_sha256: String::new(),
        };
        pb::ModelChunk {
            part: Some(pb::model_chunk::Part::Header(h)),
        }
        .encode_to_vec()
    }
}

/// Generator 1: bytes that are protobuf only by accident.
pub fn raw_bytes() -> impl Strategy<Value = Transfer> {
    (
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..256),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..128), 0..6),
    )
        .prop_map(|(update, header, chunks)| Transfer {
            update,
            header,
            chunks,
            valid: None,
        })
}

/// Generator 2: well-typed headers whose every field may lie, and arbitrary data.
pub fn arbitrary_headers() -> impl Strategy<Value = Transfer> {
    let dim = prop_oneof![
        0u64..12,
        Just(0u64),
        any::<u64>(),
        Just(u64::MAX),
        Just(1u64 << 32)
    ];
    let spec = (
        prop_oneof!["[a-z.]{0,14}", ".{0,3}"],
        prop_oneof![Just(1i32), -1i32..4],
        prop::collection::vec(dim, 0..6),
        prop_oneof![Just(1i32), -1i32..6],
        prop_oneof![0u64..300, any::<u64>()],
        any::<u32>(),
        prop_oneof![Just(0.0f32), any::<f32>()],
        prop_oneof![Just(0u32), Just(256u32), 0u32..8, any::<u32>()],
        prop_oneof![
            Just(None),
            (0u64..20).prop_map(Some),
            any::<u64>().prop_map(Some)
        ],
    )
        .prop_map(
            |(
                name,
                dtype,
                shape,
                encoding,
                byte_length,
                crc32,
                scale,
                values_per_scale,
                kept_values,
            )| pb::TensorSpec {
                name,
                dtype,
                shape,
                encoding,
                byte_length,
                crc32,
                scale,
                values_per_scale,
                kept_values,
            },
        );
    (
        any::<bool>(),
        prop::collection::vec(spec, 0..16),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..160), 0..6),
    )
        .prop_map(|(update, specs, data)| Transfer {
            update,
            header: header_message(update, specs),
            chunks: data.into_iter().map(|d| data_message(update, d)).collect(),
            valid: None,
        })
}

/// One change to a valid transfer.
#[derive(Debug, Clone)]
enum Mutation {
    FlipHeaderByte {
        at: usize,
        bit: u8,
    },
    FlipDataByte {
        at: usize,
        bit: u8,
    },
    ByteLength {
        tensor: usize,
        delta: i64,
    },
    Crc {
        tensor: usize,
        xor: u32,
    },
    Shape {
        tensor: usize,
        dims: Vec<u64>,
    },
    Name {
        tensor: usize,
        name: String,
    },
    Encoding {
        tensor: usize,
        encoding: i32,
    },
    ValuesPerScale {
        tensor: usize,
        values_per_scale: u32,
    },
    KeptValues {
        tensor: usize,
        kept: Option<u64>,
    },
    ScaleField {
        tensor: usize,
        scale: f32,
    },
    Truncate {
        keep: usize,
    },
    Append {
        bytes: Vec<u8>,
    },
    DropChunk {
        at: usize,
    },
    DuplicateChunk {
        at: usize,
    },
    SwapChunks {
        a: usize,
        b: usize,
    },
    EmptyChunk {
        at: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipHeaderByte { at, bit }),
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipDataByte { at, bit }),
        (any::<usize>(), -8i64..8)
            .prop_map(|(tensor, delta)| Mutation::ByteLength { tensor, delta }),
        (any::<usize>(), 1u32..).prop_map(|(tensor, xor)| Mutation::Crc { tensor, xor }),
        (any::<usize>(), prop::collection::vec(0u64..40, 0..5))
            .prop_map(|(tensor, dims)| Mutation::Shape { tensor, dims }),
        (any::<usize>(), "[a-d]{0,3}").prop_map(|(tensor, name)| Mutation::Name { tensor, name }),
        (any::<usize>(), 0i32..6)
            .prop_map(|(tensor, encoding)| Mutation::Encoding { tensor, encoding }),
        (
            any::<usize>(),
            prop_oneof![0u32..9, Just(256u32), any::<u32>()]
        )
            .prop_map(|(tensor, values_per_scale)| Mutation::ValuesPerScale {
                tensor,
                values_per_scale
            }),
        (any::<usize>(), prop::option::of(0u64..12))
            .prop_map(|(tensor, kept)| Mutation::KeptValues { tensor, kept }),
        (any::<usize>(), any::<f32>())
            .prop_map(|(tensor, scale)| Mutation::ScaleField { tensor, scale }),
        any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        prop::collection::vec(any::<u8>(), 1..9).prop_map(|bytes| Mutation::Append { bytes }),
        any::<usize>().prop_map(|at| Mutation::DropChunk { at }),
        any::<usize>().prop_map(|at| Mutation::DuplicateChunk { at }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapChunks { a, b }),
        any::<usize>().prop_map(|at| Mutation::EmptyChunk { at }),
    ]
}

/// A small valid state: up to 8 tensors named t0.., shapes of rank 0..3, arbitrary bit patterns
/// (finite ones only when `finite`: the lossy encodings refuse the others at the sender).
fn state(finite: bool) -> impl Strategy<Value = StateDict> {
    prop::collection::vec((prop::collection::vec(0usize..7, 0..4), any::<u32>()), 0..8).prop_map(
        move |tensors| {
            let tensors = tensors
                .into_iter()
                .enumerate()
                .map(|(i, (shape, seed))| {
                    let n: usize = shape.iter().product();
                    let values = (0..n as u32)
                        .map(|k| {
                            let v = f32::from_bits(
                                seed.wrapping_mul(2_654_435_761)
                                    .wrapping_add(k.wrapping_mul(40_503)),
                            );
                            if finite && !v.is_finite() {
                                k as f32
                            } else {
                                v
                            }
                        })
                        .collect();
                    NamedTensor {
                        name: format!("t{i}"),
                        shape,
                        values,
                    }
                })
                .collect();
            StateDict::new(tensors).expect("unique names, consistent shapes")
        },
    )
}

/// Every compression a sender may use.
fn compression() -> impl Strategy<Value = Compression> {
    (
        prop::sample::select(TensorEncoding::ALL.to_vec()),
        prop_oneof![
            Just(None),
            Just(Some(0.1)),
            Just(Some(0.5)),
            Just(Some(1.0))
        ],
    )
        .prop_map(|(encoding, topk)| Compression {
            encoding,
            topk: topk.map(|f| TopK::new(f).expect("valid fraction")),
        })
}

/// Generator 3: a valid transfer in any compression, split at random points, then (maybe)
/// mutated.
pub fn mutated_transfers() -> impl Strategy<Value = Transfer> {
    (
        any::<bool>(),
        compression(),
        any::<u64>(),
        prop::collection::vec(1usize..96, 1..8),
        prop::collection::vec(mutation(), 0..4),
    )
        .prop_flat_map(|(update, compression, seed, cuts, mutations)| {
            state(!compression.is_exact()).prop_map(move |state| {
                (
                    update,
                    compression,
                    seed,
                    state,
                    cuts.clone(),
                    mutations.clone(),
                )
            })
        })
        .prop_map(|(update, compression, seed, state, cuts, mutations)| {
            let encoded = encode_state_with(&state, compression, seed).expect("encodable state");
            let decoded = encoded.decode().expect("a sender's own transfer decodes");
            let (metas, chunks) = (encoded.metas, encoded.chunks);
            let data: Vec<u8> = chunks.concat();
            let mut pieces = Vec::new();
            let mut rest = &data[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                pieces.push(rest[..n].to_vec());
                rest = &rest[n..];
                i += 1;
            }
            let mut specs: Vec<pb::TensorSpec> = metas.iter().map(meta_to_proto).collect();
            let mut flips = Vec::new();
            for m in &mutations {
                let pick = |t: usize, len: usize| (len > 0).then(|| t % len);
                match m.clone() {
                    Mutation::FlipHeaderByte { at, bit } => flips.push((at, bit)),
                    Mutation::FlipDataByte { at, bit } => {
                        if let Some(p) = pick(at, pieces.len()) {
                            let i = at % pieces[p].len().max(1);
                            if let Some(b) = pieces[p].get_mut(i) {
                                *b ^= 1 << bit;
                            }
                        }
                    }
                    Mutation::ByteLength { tensor, delta } => {
                        if let Some(t) = pick(tensor, specs.len()) {
                            specs[t].byte_length = specs[t].byte_length.wrapping_add_signed(delta);
                        }
                    }
                    Mutation::Crc { tensor, xor } => {
                        if let Some(t) = pick(tensor, specs.len()) {
                            specs[t].crc32 ^= xor;
                        }
                    }
                    Mutation::Shape { tensor, dims } => {
                        if let Some(t) = pick(tensor, specs.len()) {
                            specs[t].shape = dims;
                        }
                    }
                    Mutation::Name { tensor, name } => {
                        if let Some(t) = pick(tensor, specs.len()) {
                            specs[t].name = name;
                        }
                    }
                    Mutation::Encoding { tensor, encoding } => {
                        if let Some(t) = pick(tensor, specs.len()) {
                            specs[t].encoding = encoding;
                        }
                    }
                    Mutation::ValuesPerScale {
                        tensor,
                        values_per_scale,
                    } => {
                        if let Some(t) = pick(tensor, specs.len()) {
                            specs[t].values_per_scale = values_per_scale;
                        }
                    }
                    Mutation::KeptValues { tensor, kept } => {
                        if let Some(t) = pick(tensor, specs.len()) {
                            specs[t].kept_values = kept;
                        }
                    }
                    Mutation::ScaleField { tensor, scale } => {
                        if let Some(t) = pick(tensor, specs.len()) {
                            specs[t].scale = scale;
                        }
                    }
                    Mutation::Truncate { keep } => pieces.truncate(keep % (pieces.len() + 1)),
                    Mutation::Append { bytes } => pieces.push(bytes),
                    Mutation::DropChunk { at } => {
                        if let Some(p) = pick(at, pieces.len()) {
                            pieces.remove(p);
                        }
                    }
                    Mutation::DuplicateChunk { at } => {
                        if let Some(p) = pick(at, pieces.len()) {
                            pieces.insert(p, pieces[p].clone());
                        }
                    }
                    Mutation::SwapChunks { a, b } => {
                        if let (Some(a), Some(b)) = (pick(a, pieces.len()), pick(b, pieces.len())) {
                            pieces.swap(a, b);
                        }
                    }
                    Mutation::EmptyChunk { at } => {
                        pieces.insert(at % (pieces.len() + 1), Vec::new())
                    }
                }
            }
            let mut header = header_message(update, specs);
            for (at, bit) in flips {
                let len = header.len();
                header[at % len] ^= 1 << bit;
            }
            let valid = mutations.is_empty().then_some(decoded);
            Transfer {
                update,
                header,
                chunks: pieces
                    .into_iter()
                    .map(|p| data_message(update, p))
                    .collect(),
                valid,
            }
        })
}
