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

mod fuzz_inputs;

use fedcsg_core::tensor::StateDict;
use fedcsg_wire::codec::INITIAL_RESERVE;
use fedcsg_wire::convert::metas_from_proto;
use fedcsg_wire::encoding::ValueCodec;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::rounding::StochasticRounding;
use fedcsg_wire::{Accepted, ModelAssembler, TensorEncoding, TensorMeta, WireLimits};
use fuzz_inputs::{LIMITS, Transfer, arbitrary_headers, mutated_transfers, raw_bytes};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use prost::Message;

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
            pb::model_chunk::Part::Data(d) => Some(d.to_vec()),
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
