//! The documented error bounds of every encoding, on random and adversarial values; overflow,
//! rounding mode, unbiasedness and the refusals of the decoder.

use super::*;

/// Deterministic test values: SplitMix64 turned into roughly normal numbers.
fn random_values(seed: u64, n: usize, magnitude: f32) -> Vec<f32> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 53) as f32
    };
    (0..n)
        .map(|_| ((0..4).map(|_| next()).sum::<f32>() - 2.0) * magnitude)
        .collect()
}

fn round_trip(encoding: TensorEncoding, values: &[f32], seed: u64) -> (Vec<f32>, u64) {
    let mut codec = ValueCodec::new(encoding, StochasticRounding::for_tensor(seed, 0));
    let mut bytes = Vec::new();
    codec.encode(values, &mut bytes).unwrap();
    let expected = encoding
        .section_bytes(values.len() as u64, INT8_VALUES_PER_SCALE)
        .unwrap();
    assert_eq!(bytes.len() as u64, expected, "{encoding}: section length");
    let mut out = vec![f32::NAN; values.len()];
    decode_values(encoding, INT8_VALUES_PER_SCALE, &bytes, &mut out).unwrap();
    (out, codec.saturated())
}

/// Asserts the module's documented bound for every value, and returns the values saturated.
fn assert_within_bound(encoding: TensorEncoding, values: &[f32], what: &str) -> u64 {
    let (decoded, saturated) = round_trip(encoding, values, 11);
    let block = INT8_VALUES_PER_SCALE as usize;
    for (i, (x, y)) in values.iter().zip(&decoded).enumerate() {
        assert!(
            y.is_finite(),
            "{encoding} {what}: value {i} ({x}) decoded to {y}"
        );
        let (x, y) = (f64::from(*x), f64::from(*y));
        let bound = match encoding {
            TensorEncoding::F32 => 0.0,
            TensorEncoding::F16 if x.abs() > 65504.0 => x.abs() - 65504.0,
            TensorEncoding::F16 => (x.abs() * 2f64.powi(-11)).max(2f64.powi(-25)),
            TensorEncoding::Bf16 if x.abs() > f64::from(bf16::MAX.to_f32()) => {
                x.abs() - f64::from(bf16::MAX.to_f32())
            }
            TensorEncoding::Bf16 => (x.abs() * 2f64.powi(-8)).max(2f64.powi(-134)),
            TensorEncoding::Int8Scaled => {
                let b = i / block;
                let end = ((b + 1) * block).min(values.len());
                let m = values[b * block..end]
                    .iter()
                    .fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
                // The scale is m / 127 rounded up to an f32: at most one f32 ulp above.
                let s = (m / 127.0) * (1.0 + 2f64.powi(-23));
                s * (1.0 + 2f64.powi(-16)) + 2f64.powi(-149)
            }
        };
        assert!(
            (x - y).abs() <= bound,
            "{encoding} {what}: value {i}: sent {x:e}, decoded {y:e}, error {:e} > bound {bound:e}",
            (x - y).abs()
        );
    }
    saturated
}

fn adversarial() -> Vec<(&'static str, Vec<f32>)> {
    let mut one_huge = random_values(3, 1000, 0.01);
    one_huge[300] = 3.0e38;
    let mut f16_huge = random_values(4, 600, 0.01);
    f16_huge[10] = 60000.0;
    vec![
        ("random, magnitude 1", random_values(1, 3000, 1.0)),
        ("random, magnitude 1e-3", random_values(2, 1000, 1e-3)),
        ("random, magnitude 1e3", random_values(5, 1000, 1e3)),
        ("all zeros", vec![0.0; 700]),
        ("negative zeros", vec![-0.0; 7]),
        ("one huge value", one_huge),
        ("one value near the f16 limit", f16_huge),
        (
            "f32 subnormals",
            vec![1e-45, -1e-45, 1e-40, -3e-39, 1.1e-38, 0.0],
        ),
        (
            "f16 subnormal range",
            vec![6e-8, -1e-7, 3e-6, -6.1e-5, 5e-9],
        ),
        ("+-f32::MAX", vec![f32::MAX, -f32::MAX, 1.0, -1.0]),
        ("+-f16::MAX", vec![65504.0, -65504.0, 0.5]),
        (
            "+-bf16::MAX",
            vec![bf16::MAX.to_f32(), -bf16::MAX.to_f32(), 2.0],
        ),
        ("a single value", vec![-0.37]),
        ("no values", vec![]),
    ]
}

/// Every encoding round-trips random and adversarial tensors within its documented bound
/// (zeros, one huge value, subnormals, +-max), with the documented section length.
#[test]
fn every_encoding_meets_its_error_bound() {
    for encoding in TensorEncoding::ALL {
        for (what, values) in adversarial() {
            assert_within_bound(encoding, &values, what);
        }
    }
}

/// f32 carries any bit pattern; the lossy encodings refuse NaN and infinities by index.
#[test]
fn non_finite_values_are_exact_in_f32_and_refused_otherwise() {
    let values = [1.0, f32::NAN, f32::INFINITY];
    let (decoded, _) = round_trip(TensorEncoding::F32, &values, 0);
    assert_eq!(decoded[0], 1.0);
    assert!(decoded[1].is_nan() && decoded[2] == f32::INFINITY);
    for encoding in [
        TensorEncoding::F16,
        TensorEncoding::Bf16,
        TensorEncoding::Int8Scaled,
    ] {
        for (i, bad) in [(1usize, f32::NAN), (0, f32::NEG_INFINITY)] {
            let mut v = vec![0.5f32; 3];
            v[i] = bad;
            let mut codec = ValueCodec::new(encoding, StochasticRounding::for_tensor(0, 0));
            let e = codec.encode(&v, &mut Vec::new()).unwrap_err();
            assert!(e.contains(&format!("value {i}")), "{encoding}: {e}");
        }
    }
}

/// Finite values beyond the f16 / bf16 range saturate to the largest finite value and are
/// counted: never Inf.
#[test]
fn overflow_saturates_and_is_counted() {
    let (d, saturated) = round_trip(
        TensorEncoding::F16,
        &[1e5, -7e4, f32::MAX, 65519.0, 65504.0, 1.0],
        0,
    );
    assert_eq!(d, vec![65504.0, -65504.0, 65504.0, 65504.0, 65504.0, 1.0]);
    assert_eq!(
        saturated, 4,
        "65504 itself fits; the four beyond it saturate"
    );
    let (d, saturated) = round_trip(TensorEncoding::Bf16, &[f32::MAX, -f32::MAX, 3.0e38], 0);
    let max = bf16::MAX.to_f32();
    assert_eq!(d, vec![max, -max, bf16::from_f32(3.0e38).to_f32()]);
    assert_eq!(saturated, 2);
    assert!(d.iter().all(|v| v.is_finite()));
}

/// f16 and bf16 round to nearest, ties to even.
#[test]
fn half_precision_rounds_to_nearest_even() {
    let f16_ulp_at_1 = 2f32.powi(-10);
    let (d, _) = round_trip(
        TensorEncoding::F16,
        &[
            1.0 + f16_ulp_at_1 / 2.0,  // tie: down to the even 1.0
            1.0 + 1.5 * f16_ulp_at_1,  // tie: up to the even 1 + 2 ulp
            1.0 + 0.51 * f16_ulp_at_1, // nearest: up
        ],
        0,
    );
    assert_eq!(d, vec![1.0, 1.0 + 2.0 * f16_ulp_at_1, 1.0 + f16_ulp_at_1]);
    let bf16_ulp_at_1 = 2f32.powi(-7);
    let (d, _) = round_trip(
        TensorEncoding::Bf16,
        &[1.0 + bf16_ulp_at_1 / 2.0, 1.0 + 1.5 * bf16_ulp_at_1],
        0,
    );
    assert_eq!(d, vec![1.0, 1.0 + 2.0 * bf16_ulp_at_1]);
}

/// int8 with stochastic rounding is unbiased: over 4,000 seeds the mean decoded value of each
/// of a block's values is within 5 standard deviations of the value sent (one draw deviates
/// by less than one step s, so the mean of N by at most s / (2 sqrt N) in standard deviation).
#[test]
fn int8_stochastic_rounding_is_unbiased() {
    let values: Vec<f32> = vec![1.0, 0.3, -0.77, 0.004, -0.5, 0.999, 0.0125, -0.0001];
    let draws = 4000;
    let mut sums = vec![0.0f64; values.len()];
    for seed in 0..draws {
        let (d, _) = round_trip(TensorEncoding::Int8Scaled, &values, seed);
        for (s, v) in sums.iter_mut().zip(d) {
            *s += f64::from(v);
        }
    }
    let step = 1.0 / 127.0;
    let tolerance = 5.0 * step / (2.0 * (draws as f64).sqrt());
    for (x, s) in values.iter().zip(sums) {
        let mean = s / draws as f64;
        assert!(
            (mean - f64::from(*x)).abs() < tolerance,
            "value {x}: mean of {draws} draws is {mean} (tolerance {tolerance:e})"
        );
    }
    // Not a deterministic rounding in disguise: 0.3 (= 38.1 steps) decodes both ways.
    let ups = (0..200)
        .filter(|seed| round_trip(TensorEncoding::Int8Scaled, &values, *seed).0[1] > 0.3)
        .count();
    assert!(ups > 0 && ups < 200, "{ups} of 200 draws rounded up");
}

/// The same seed gives the same bytes (a re-sent update is the same update).
#[test]
fn int8_is_reproducible_per_seed() {
    let values = random_values(9, 1000, 1.0);
    let encode = |seed| {
        let mut c = ValueCodec::new(
            TensorEncoding::Int8Scaled,
            StochasticRounding::for_tensor(seed, 3),
        );
        let mut out = Vec::new();
        c.encode(&values, &mut out).unwrap();
        out
    };
    assert_eq!(encode(5), encode(5));
    assert_ne!(encode(5), encode(6));
}

/// Bytes no honest sender produces are refused with the reason: non-finite f16 / bf16
/// patterns, int8 scales that are NaN, infinite, zero or negative, the code -128, and a code
/// times scale that overflows.
#[test]
fn impossible_encodings_are_refused() {
    let decode = |e, block, bytes: &[u8], n| {
        let mut out = vec![0.0; n];
        decode_values(e, block, bytes, &mut out)
    };
    for bits in [0x7c00u16, 0xfc00, 0x7e00] {
        let e = decode(TensorEncoding::F16, 0, &bits.to_le_bytes(), 1).unwrap_err();
        assert!(e.contains("non-finite"), "{e}");
    }
    for bits in [0x7f80u16, 0xff80, 0x7fc1] {
        assert!(decode(TensorEncoding::Bf16, 0, &bits.to_le_bytes(), 1).is_err());
    }
    let int8 = |scale: f32, code: i8| {
        let mut b = scale.to_le_bytes().to_vec();
        b.push(code.to_le_bytes()[0]);
        decode(TensorEncoding::Int8Scaled, 256, &b, 1)
    };
    assert!(int8(0.5, 3).is_ok());
    for scale in [f32::NAN, f32::INFINITY, 0.0, -0.0, -1.0, f32::NEG_INFINITY] {
        let e = int8(scale, 1).unwrap_err();
        assert!(e.contains("scale"), "{scale}: {e}");
    }
    assert!(int8(0.5, i8::MIN).unwrap_err().contains("-128"));
    assert!(int8(f32::MAX, 100).unwrap_err().contains("non-finite"));
    // A subnormal scale is legitimate (a block of subnormal values).
    assert!(int8(1e-44, 5).is_ok());
}

/// Encoding names parse, print and store the same way; a typo is refused with the choices.
#[test]
fn encoding_names_round_trip() {
    for e in TensorEncoding::ALL {
        assert_eq!(e.to_string().parse::<TensorEncoding>().unwrap(), e);
        // Stored settings use the same names.
        assert_eq!(serde_json::to_string(&e).unwrap(), format!("\"{e}\""));
        assert_eq!(
            serde_json::from_str::<TensorEncoding>(&format!("\"{e}\"")).unwrap(),
            e
        );
    }
    let e = "fp8".parse::<TensorEncoding>().unwrap_err();
    assert!(e.contains("f32, f16, bf16 or int8"), "{e}");
    assert_eq!(
        TensorEncoding::Int8Scaled.section_bytes(257, 256),
        Some(8 + 257)
    );
    assert_eq!(TensorEncoding::Int8Scaled.section_bytes(0, 256), Some(0));
    assert_eq!(TensorEncoding::Int8Scaled.section_bytes(1, 0), None);
}
