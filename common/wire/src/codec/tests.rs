//! The codec end to end: encode a state, send its chunks, assemble and check, for every
//! encoding dense and sparse; headers that lie and bytes that cannot have been sent are refused.

use proptest::prelude::*;

use super::*;
use crate::encode::{Compression, encode_state, encode_state_with};
use crate::sparse::TopK;

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

fn receive(
    metas: Vec<TensorMeta>,
    chunks: &[Vec<u8>],
    accepted: Accepted,
) -> Result<StateDict, WireError> {
    let mut a = ModelAssembler::accepting(metas, WireLimits::default(), accepted)?;
    for c in chunks {
        a.push(c)?;
    }
    a.finish()
}

fn round_trip(s: &StateDict) -> Result<StateDict, WireError> {
    let (metas, chunks) = encode_state(s);
    receive(metas, &chunks, Accepted::PLAIN)
}

fn compressions() -> Vec<Compression> {
    let mut all = Vec::new();
    for encoding in TensorEncoding::ALL {
        all.push(Compression::dense(encoding));
        all.push(Compression {
            encoding,
            topk: Some(TopK::new(0.1).unwrap()),
        });
    }
    all
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

/// Every compression goes through the assembler and decodes to what the sender says the
/// receiver gets ([`crate::EncodedState::decode`]), with byte lengths of shape × encoding.
#[test]
fn every_compression_round_trips_through_the_assembler() {
    let s = state(&[3, 700_000, 0, 1, 300]);
    for c in compressions() {
        let e = encode_state_with(&s, c, 42).unwrap();
        assert!(e.chunks.iter().all(|ch| ch.len() <= CHUNK_BYTES));
        let got = receive(e.metas.clone(), &e.chunks, Accepted::ANY).unwrap();
        assert_eq!(got, e.decode().unwrap(), "{c}");
        let big = &e.metas[1];
        let (n, b) = (700_000u64, u64::from(big.values_per_scale));
        let expected = match (c.encoding, c.topk) {
            (TensorEncoding::F32, None) => 4 * n,
            (TensorEncoding::F16 | TensorEncoding::Bf16, None) => 2 * n,
            (TensorEncoding::Int8Scaled, None) => n + 4 * n.div_ceil(b),
            (TensorEncoding::F32, Some(_)) => 70_000 * 8,
            (TensorEncoding::F16 | TensorEncoding::Bf16, Some(_)) => 70_000 * 6,
            (TensorEncoding::Int8Scaled, Some(_)) => 70_000 * 5 + 4 * 70_000u64.div_ceil(b),
        };
        assert_eq!(big.byte_length, expected, "{c}");
        if c.is_exact() {
            assert_eq!(got, s);
        }
    }
}

/// Top-k keeps the largest magnitudes and zeros the rest; a tensor too small to gain from
/// sparsity goes dense (the header says which).
#[test]
fn topk_keeps_the_largest_values_and_only_when_it_pays() {
    let values: Vec<f32> = (0..100)
        .map(|i| if i % 10 == 3 { 5.0 + i as f32 } else { 0.01 })
        .collect();
    let s = StateDict::new(vec![
        NamedTensor {
            name: "big".into(),
            shape: vec![100],
            values: values.clone(),
        },
        NamedTensor {
            name: "tiny".into(),
            shape: vec![2],
            values: vec![1.0, 2.0],
        },
    ])
    .unwrap();
    let c = Compression {
        encoding: TensorEncoding::F32,
        topk: Some(TopK::new(0.1).unwrap()),
    };
    let e = encode_state_with(&s, c, 0).unwrap();
    assert_eq!(e.metas[0].kept_values, Some(10));
    assert_eq!(
        e.metas[1].kept_values, None,
        "1 of 2 sparse (8 B) is no smaller than dense"
    );
    let got = receive(e.metas, &e.chunks, Accepted::ANY).unwrap();
    let want: Vec<f32> = values
        .iter()
        .map(|v| if *v > 1.0 { *v } else { 0.0 })
        .collect();
    assert_eq!(got.get("big").unwrap().values, want);
    assert_eq!(got.get("tiny").unwrap().values, vec![1.0, 2.0]);
}

/// A flipped byte is caught by the checksum of the tensor it belongs to, in every encoding
/// (the CRC covers scales, indices and values alike).
#[test]
fn corruption_names_the_tensor() {
    let s = state(&[4, 8]);
    let (metas, mut chunks) = encode_state(&s);
    chunks[0][20] ^= 1;
    let mut a = ModelAssembler::new(metas, WireLimits::default()).unwrap();
    a.push(&chunks[0]).unwrap();
    assert!(matches!(a.finish(), Err(WireError::Checksum { name, .. }) if name == "t001"));
    for c in compressions() {
        let e = encode_state_with(&state(&[400]), c, 1).unwrap();
        // Byte 0 is the first scale (int8), the first index (sparse) or the first value.
        let mut chunks = e.chunks.clone();
        chunks[0][0] ^= 0x10;
        let got = receive(e.metas, &chunks, Accepted::ANY);
        assert!(
            matches!(got, Err(WireError::Checksum { .. })),
            "{c}: {got:?}"
        );
    }
}

/// Re-checksummed hostile bytes: what no sender produces is refused by name even with a valid
/// CRC: NaN / zero / negative / infinite int8 scales, an index out of range or repeated, an f16
/// Inf.
#[test]
fn hostile_data_with_valid_checksums_is_refused() {
    let forge = |c: Compression, edit: &dyn Fn(&mut Vec<u8>)| {
        let e = encode_state_with(&state(&[300]), c, 1).unwrap();
        let mut bytes = e.chunks.concat();
        edit(&mut bytes);
        let mut metas = e.metas;
        metas[0].crc32 = crc32fast::hash(&bytes);
        receive(metas, &[bytes], Accepted::ANY)
    };
    let int8 = Compression::dense(TensorEncoding::Int8Scaled);
    for scale in [f32::NAN, 0.0, -2.0, f32::INFINITY] {
        let got = forge(int8, &|b| b[4..8].copy_from_slice(&scale.to_le_bytes()));
        assert!(
            matches!(&got, Err(WireError::BadTensorData { why, .. }) if why.contains("scale 1")),
            "{scale}: {got:?}"
        );
    }
    let sparse = Compression {
        encoding: TensorEncoding::F16,
        topk: Some(TopK::new(0.1).unwrap()),
    };
    let got = forge(sparse, &|b| b[4..8].copy_from_slice(&300u32.to_le_bytes()));
    assert!(
        matches!(&got, Err(WireError::BadTensorData { why, .. }) if why.contains("out of range")),
        "{got:?}"
    );
    let got = forge(sparse, &|b| {
        let first: [u8; 4] = b[0..4].try_into().unwrap();
        b[4..8].copy_from_slice(&first);
    });
    assert!(
        matches!(&got, Err(WireError::BadTensorData { why, .. }) if why.contains("strictly increase")),
        "{got:?}"
    );
    let got = forge(Compression::dense(TensorEncoding::F16), &|b| {
        b[2..4].copy_from_slice(&0x7c00u16.to_le_bytes())
    });
    assert!(
        matches!(&got, Err(WireError::BadTensorData { why, .. }) if why.contains("non-finite")),
        "{got:?}"
    );
}

/// Headers that lie or exceed limits are refused before any data is accepted.
#[test]
fn bad_headers_are_refused() {
    let (metas, _) = encode_state(&state(&[4, 8]));
    let refused = |m: Vec<TensorMeta>| ModelAssembler::new(m, WireLimits::default()).unwrap_err();
    let mut m = metas.clone();
    m[1].byte_length = 31;
    assert!(matches!(refused(m), WireError::BadTensorSpec { .. }));
    let mut m = metas.clone();
    m[1].name = m[0].name.clone();
    assert!(matches!(refused(m), WireError::DuplicateTensor { .. }));
    let mut m = metas.clone();
    m[0].shape = vec![1 << 40, 1 << 40];
    assert!(matches!(refused(m), WireError::BadTensorSpec { .. }));
    // No values, but a dimension beyond the element limit is no shape either.
    let mut m = metas.clone();
    m[0].shape = vec![0, 1 << 40];
    m[0].byte_length = 0;
    assert!(matches!(refused(m), WireError::BadTensorSpec { .. }));
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

/// Compressed headers are checked against what the receiver accepts and against shape ×
/// encoding: an encoding or sparsity not accepted, an int8 tensor without (or with an
/// oversized) block size, a block size on a non-int8 tensor, more kept values than the tensor
/// has, and a length off by one in each encoding.
#[test]
fn compressed_headers_are_checked() {
    let s = state(&[1000]);
    let int8 = encode_state_with(&s, Compression::dense(TensorEncoding::Int8Scaled), 0).unwrap();
    let why = |metas: Vec<TensorMeta>, accepted| {
        ModelAssembler::accepting(metas, WireLimits::default(), accepted)
            .unwrap_err()
            .to_string()
    };
    let e = why(int8.metas.clone(), Accepted::PLAIN);
    assert!(
        e.contains("not supported") && e.contains("int8") && e.contains("accepts f32"),
        "{e}"
    );
    let e = why(int8.metas.clone(), Accepted::f32_and(TensorEncoding::F16));
    assert!(e.contains("accepts f32, f16"), "{e}");
    assert!(
        ModelAssembler::accepting(
            int8.metas.clone(),
            WireLimits::default(),
            Accepted::f32_and(TensorEncoding::Int8Scaled)
        )
        .is_ok()
    );
    let edit = |f: &dyn Fn(&mut TensorMeta)| {
        let mut m = int8.metas.clone();
        f(&mut m[0]);
        why(m, Accepted::ANY)
    };
    assert!(edit(&|m| m.values_per_scale = 0).contains("without values_per_scale"));
    assert!(edit(&|m| m.values_per_scale = (1 << 16) + 1).contains("exceeds the limit"));
    assert!(edit(&|m| m.byte_length += 1).contains("byte length 1017 does not match"));
    assert!(edit(&|m| m.values_per_scale = 512).contains("byte length"));
    assert!(edit(&|m| m.kept_values = Some(1001)).contains("keeps 1001 values"));
    let f16 = encode_state_with(&s, Compression::dense(TensorEncoding::F16), 0).unwrap();
    let mut m = f16.metas.clone();
    m[0].values_per_scale = 256;
    assert!(why(m, Accepted::ANY).contains("only int8 has scales"));
    let mut m = f16.metas.clone();
    m[0].byte_length = 1999;
    assert!(why(m, Accepted::ANY).contains("in f16 (2000)"));
    let sparse = encode_state_with(
        &s,
        Compression {
            encoding: TensorEncoding::Bf16,
            topk: Some(TopK::new(0.05).unwrap()),
        },
        0,
    )
    .unwrap();
    let e = why(sparse.metas.clone(), Accepted::ANY_DENSE);
    assert!(e.contains("sparse"), "{e}");
    let mut m = sparse.metas.clone();
    m[0].kept_values = Some(49);
    assert!(why(m, Accepted::ANY).contains("with 49 values kept (294)"));
}

proptest! {
    /// Any state round-trips exactly in f32, whatever the values (NaN bit patterns included).
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
