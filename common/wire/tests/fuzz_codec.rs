//! Fuzzing the tensor/chunk decoder, bounded in time so it runs with every `cargo test`.
//!
//! cargo-fuzz needs a nightly toolchain and libFuzzer, which CI does not have; this is the same
//! idea with proptest's generators and runner. Every case feeds the receiving side exactly what
//! a peer controls: protobuf bytes of a `ModelChunk` / `UpdateChunk` header (decoded with
//! prost), then a sequence of data chunks, through `metas_from_proto` and `ModelAssembler`.
//! Inputs come from three generators: raw bytes, well-typed headers with arbitrary field values,
//! and valid transfers in every encoding (f32, f16, bf16, int8; dense or top-k sparse) with
//! random mutations (flipped bits in header or data, wrong lengths, checksums, shapes, names,
//! encodings, int8 block sizes, kept-value counts, scale fields; chunks split, dropped,
//! duplicated, reordered).
//!
//! Properties: nothing panics; the assembler never holds more memory than the declared size,
//! which never exceeds the limit; every accepted transfer is consistent with what was sent
//! (f32, f16 and bf16 values re-encode to the exact bytes sent, sparse tensors are zero off
//! their indices, lossy encodings decode to finite values only); an unmutated transfer is always
//! accepted and decodes to exactly what its sender computed. FEDCSG_FUZZ_CASES sets the number
//! of cases (default 100,000, a few seconds).

use std::time::Instant;

use fedcsg_core::tensor::{NamedTensor, StateDict};
use fedcsg_wire::codec::INITIAL_RESERVE;
use fedcsg_wire::convert::{meta_to_proto, metas_from_proto};
use fedcsg_wire::encoding::ValueCodec;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::rounding::StochasticRounding;
use fedcsg_wire::{
    Accepted, Compression, ModelAssembler, TensorEncoding, TensorMeta, TopK, WireLimits,
    encode_state_with,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use prost::Message;

/// Small limits, so that generated inputs reach them often and memory bounds mean something.
const LIMITS: WireLimits = WireLimits {
    max_chunk_bytes: 96,
    max_total_bytes: 4096,
    max_tensors: 12,
    max_name_len: 12,
    max_rank: 4,
    max_elements: 700,
};

/// What a peer sends: the encoded header message, then the encoded data messages.
#[derive(Debug, Clone)]
struct Transfer {
    /// Decode as `UpdateChunk` rather than `ModelChunk` (the two share the layout).
    update: bool,
    header: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    /// Known to be a valid, unmutated transfer decoding to this state.
    valid: Option<StateDict>,
}

fn data_message(update: bool, bytes: Vec<u8>) -> Vec<u8> {
    if update {
        pb::UpdateChunk {
            part: Some(pb::update_chunk::Part::Data(bytes)),
        }
        .encode_to_vec()
    } else {
        pb::ModelChunk {
            part: Some(pb::model_chunk::Part::Data(bytes)),
        }
        .encode_to_vec()
    }
}

fn header_message(update: bool, tensors: Vec<pb::TensorSpec>) -> Vec<u8> {
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
fn raw_bytes() -> impl Strategy<Value = Transfer> {
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
fn arbitrary_headers() -> impl Strategy<Value = Transfer> {
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
fn mutated_transfers() -> impl Strategy<Value = Transfer> {
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

fn decode_header(update: bool, bytes: &[u8]) -> Option<Vec<pb::TensorSpec>> {
    if update {
        match pb::UpdateChunk::decode(bytes).ok()?.part? {
            pb::update_chunk::Part::Header(h) => Some(h.tensors),
            pb::update_chunk::Part::Data(_) => None,
        }
    } else {
        match pb::ModelChunk::decode(bytes).ok()?.part? {
            pb::model_chunk::Part::Header(h) => Some(h.tensors),
            pb::model_chunk::Part::Data(_) => None,
        }
    }
}

fn decode_data(update: bool, bytes: &[u8]) -> Option<Vec<u8>> {
    if update {
        match pb::UpdateChunk::decode(bytes).ok()?.part? {
            pb::update_chunk::Part::Data(d) => Some(d),
            pb::update_chunk::Part::Header(_) => None,
        }
    } else {
        match pb::ModelChunk::decode(bytes).ok()?.part? {
            pb::model_chunk::Part::Data(d) => Some(d),
            pb::model_chunk::Part::Header(_) => None,
        }
    }
}

/// An accepted transfer: its headers, the data bytes sent, the decoded state.
type Received = (Vec<TensorMeta>, Vec<u8>, StateDict);

/// The receiving side, as the coordinator and the workers run it, with the properties checked.
fn receive(t: &Transfer) -> Result<bool, TestCaseError> {
    let outcome = (|| -> Result<Option<Received>, TestCaseError> {
        let Some(specs) = decode_header(t.update, &t.header) else {
            return Ok(None);
        };
        let Ok(metas) = metas_from_proto(&specs, &LIMITS) else {
            return Ok(None);
        };
        let Ok(mut assembler) = ModelAssembler::accepting(metas.clone(), LIMITS, Accepted::ANY)
        else {
            return Ok(None);
        };
        let bound = assembler.expected_bytes() as usize;
        prop_assert!(
            bound as u64 <= LIMITS.max_total_bytes,
            "declared size {bound} passed the limit"
        );
        let mut sent = Vec::new();
        for c in &t.chunks {
            let Some(d) = decode_data(t.update, c) else {
                return Ok(None);
            };
            if assembler.push(&d).is_err() {
                return Ok(None);
            }
            prop_assert!(
                assembler.allocated_bytes() <= bound,
                "holds {} bytes for a {bound}-byte transfer",
                assembler.allocated_bytes()
            );
            sent.extend_from_slice(&d);
        }
        Ok(assembler.finish().ok().map(|s| (metas, sent, s)))
    })()?;
    if let Some(want) = &t.valid {
        let (_, _, got) = outcome
            .as_ref()
            .ok_or_else(|| TestCaseError::fail("a valid transfer was refused"))?;
        prop_assert_eq!(got.fingerprint(), want.fingerprint());
    }
    let Some((metas, sent, state)) = outcome else {
        return Ok(false);
    };
    prop_assert_eq!(state.len(), metas.len());
    let mut offset = 0usize;
    for m in &metas {
        let tensor = state
            .get(&m.name)
            .ok_or_else(|| TestCaseError::fail(format!("{:?} lost", m.name)))?;
        prop_assert_eq!(&tensor.shape, &m.shape);
        let end = offset + m.byte_length as usize;
        check_tensor(m, &tensor.values, &sent[offset..end])?;
        offset = end;
    }
    prop_assert_eq!(offset, sent.len());
    Ok(true)
}

/// An accepted tensor is consistent with its bytes: a sparse one is zero off its indices; f32,
/// f16 and bf16 values re-encode to the very bytes sent; lossy encodings decode to finite values.
fn check_tensor(m: &TensorMeta, values: &[f32], bytes: &[u8]) -> Result<(), TestCaseError> {
    let (indices, value_bytes): (Vec<usize>, &[u8]) = match m.kept_values {
        None => ((0..values.len()).collect(), bytes),
        Some(k) => {
            let (index_bytes, rest) = bytes.split_at(k as usize * 4);
            let indices: Vec<usize> = index_bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .collect();
            for (i, v) in values.iter().enumerate() {
                if !indices.contains(&i) {
                    prop_assert_eq!(v.to_bits(), 0, "{:?}: value {} was not sent", m.name, i);
                }
            }
            (indices, rest)
        }
    };
    let sent: Vec<f32> = indices.iter().map(|i| values[*i]).collect();
    if m.encoding != TensorEncoding::F32 {
        prop_assert!(
            sent.iter().all(|v| v.is_finite()),
            "{:?}: non-finite value accepted",
            m.name
        );
    }
    if m.encoding != TensorEncoding::Int8Scaled {
        let mut codec = ValueCodec::new(m.encoding, StochasticRounding::for_tensor(0, 0));
        let mut again = Vec::new();
        codec
            .encode(&sent, &mut again)
            .map_err(|e| TestCaseError::fail(format!("{:?} does not re-encode: {e}", m.name)))?;
        prop_assert_eq!(
            again,
            value_bytes.to_vec(),
            "{:?} re-encodes differently",
            m.name
        );
    }
    Ok(())
}

#[test]
fn fuzz_decoder_never_panics_stays_bounded_and_round_trips() {
    let cases: u32 = std::env::var("FEDCSG_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let executions = std::cell::Cell::new(0u64);
    let accepted = std::cell::Cell::new(0u64);
    let start = Instant::now();
    let inputs = prop_oneof![1 => raw_bytes(), 2 => arbitrary_headers(), 4 => mutated_transfers()];
    let result = runner.run(&inputs, |t| {
        executions.set(executions.get() + 1);
        if receive(&t)? {
            accepted.set(accepted.get() + 1);
        }
        Ok(())
    });
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "fuzz_codec: {} executions in {seconds:.2} s ({:.0}/s), {} accepted transfers round-tripped",
        executions.get(),
        executions.get() as f64 / seconds,
        accepted.get()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generators reach both sides: some transfers are accepted, most are refused.
    assert!(
        accepted.get() > u64::from(cases) / 20,
        "only {} of {cases} transfers were accepted",
        accepted.get()
    );
}

/// A header alone cannot make the receiver allocate what it announces: 1 GiB declared (the
/// default limit) reserves at most INITIAL_RESERVE until data arrives.
#[test]
fn a_huge_header_reserves_little() {
    let limits = WireLimits::default();
    let meta = TensorMeta {
        name: "big".into(),
        shape: vec![1 << 28],
        encoding: TensorEncoding::F32,
        byte_length: 1 << 30,
        crc32: 0,
        values_per_scale: 0,
        kept_values: None,
    };
    let mut a = ModelAssembler::new(vec![meta], limits).unwrap();
    assert_eq!(a.expected_bytes(), 1 << 30);
    assert!(
        a.allocated_bytes() <= INITIAL_RESERVE,
        "reserved {} bytes",
        a.allocated_bytes()
    );
    a.push(&vec![0u8; 1 << 20]).unwrap();
    assert!(
        a.allocated_bytes() <= INITIAL_RESERVE,
        "reserved {} bytes after 1 MiB",
        a.allocated_bytes()
    );
}
