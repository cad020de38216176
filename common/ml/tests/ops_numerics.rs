//! Proves the fast conv2d agrees with candle's reference op: forward output and the gradients
//! reaching both the input and the weight, over the shapes the models use and awkward ones.

use anyhow::Result;
use candle_core::{D, DType, Device, Tensor, Var};
use fedcsg_ml::ops::{self, ConvBackend};

/// One convolution to check: input `[n, c_in, h, w]`, weight `[c_out, c_in, kh, kw]`.
#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
}

const fn case(
    n: usize,
    c_in: usize,
    c_out: usize,
    hw: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> Case {
    Case {
        n,
        c_in,
        c_out,
        h: hw,
        w: hw,
        kh: k,
        kw: k,
        stride,
        padding,
    }
}

const CASES: &[Case] = &[
    // ResNet-20 layers at small batch: stem, stage convs, the downsampling convs and shortcuts.
    case(3, 1, 16, 28, 3, 1, 1),
    case(2, 16, 16, 28, 3, 1, 1),
    case(3, 16, 32, 28, 3, 2, 1),
    case(2, 32, 64, 14, 3, 2, 1),
    case(2, 64, 64, 7, 3, 1, 1),
    case(2, 16, 32, 28, 1, 2, 0),
    // Batch 1 takes the path where gemm itself is multi-threaded.
    case(1, 16, 16, 28, 3, 1, 1),
    case(1, 32, 64, 14, 3, 2, 1),
    // Channel counts that are not multiples of 8, odd sizes, padding 0, pointwise.
    case(2, 3, 5, 9, 3, 1, 1),
    case(3, 7, 9, 11, 3, 2, 1),
    case(2, 5, 6, 8, 3, 1, 0),
    case(2, 5, 6, 9, 3, 2, 0),
    case(2, 6, 10, 8, 1, 1, 0),
    case(2, 6, 10, 9, 1, 2, 0),
    case(2, 6, 10, 8, 1, 1, 1),
    case(5, 33, 17, 7, 3, 1, 1),
    case(2, 3, 4, 9, 5, 2, 1),
    case(2, 4, 3, 6, 6, 1, 0),
    // Stride-1 same convolutions take the direct kernels on CPUs with AVX2: a 5x5 kernel,
    // channel counts that leave block remainders, 1-pixel images, and (below) a non-square one.
    case(2, 4, 6, 10, 5, 1, 2),
    case(3, 9, 5, 13, 3, 1, 1),
    case(2, 3, 5, 1, 3, 1, 1),
    Case {
        n: 2,
        c_in: 6,
        c_out: 7,
        h: 10,
        w: 5,
        kh: 3,
        kw: 3,
        stride: 1,
        padding: 1,
    },
    Case {
        n: 2,
        c_in: 3,
        c_out: 4,
        h: 10,
        w: 7,
        kh: 3,
        kw: 1,
        stride: 1,
        padding: 1,
    },
    // Square input: candle's reference backward takes the output padding of both axes from the
    // height, so a non-square strided case would test candle's bug rather than ours.
    Case {
        n: 2,
        c_in: 3,
        c_out: 4,
        h: 9,
        w: 9,
        kh: 1,
        kw: 3,
        stride: 2,
        padding: 1,
    },
];

/// Deterministic values in [-1, 1) so failures reproduce (a 64-bit LCG, top bits).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn random(dims: &[usize], seed: u64) -> Result<Tensor> {
    let len = dims.iter().product();
    Ok(Tensor::from_vec(values(len, seed), dims, &Device::Cpu)?)
}

/// Largest difference relative to the largest reference magnitude.
fn rel_err(got: &Tensor, want: &Tensor) -> Result<f32> {
    assert_eq!(got.dims(), want.dims());
    let diff = (got - want)?
        .abs()?
        .flatten_all()?
        .max(D::Minus1)?
        .to_scalar::<f32>()?;
    let scale = want
        .abs()?
        .flatten_all()?
        .max(D::Minus1)?
        .to_scalar::<f32>()?;
    Ok(diff / scale.max(1e-6))
}

/// Output, input gradient and weight gradient of `sum(conv(x, w) * r)`.
fn conv_and_grads(c: &Case, backend: ConvBackend, seed: u64) -> Result<(Tensor, Tensor, Tensor)> {
    let x = Var::from_tensor(&random(&[c.n, c.c_in, c.h, c.w], seed)?)?;
    let w = Var::from_tensor(&random(&[c.c_out, c.c_in, c.kh, c.kw], seed + 1)?)?;
    let y = ops::conv2d(x.as_tensor(), w.as_tensor(), c.stride, c.padding, backend)?;
    let r = random(y.dims(), seed + 2)?;
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let dx = grads
        .get(x.as_tensor())
        .ok_or_else(|| anyhow::anyhow!("no input gradient"))?
        .clone();
    let dw = grads
        .get(w.as_tensor())
        .ok_or_else(|| anyhow::anyhow!("no weight gradient"))?
        .clone();
    Ok((y, dx, dw))
}

#[test]
fn fast_conv_matches_reference_forward_and_both_gradients() -> Result<()> {
    for (i, c) in CASES.iter().enumerate() {
        let seed = 100 * i as u64;
        let (y, dx, dw) = conv_and_grads(c, ConvBackend::Fast, seed)?;
        let (y_ref, dx_ref, dw_ref) = conv_and_grads(c, ConvBackend::Reference, seed)?;
        for (what, got, want) in [
            ("output", &y, &y_ref),
            ("input grad", &dx, &dx_ref),
            ("weight grad", &dw, &dw_ref),
        ] {
            let err = rel_err(got, want)?;
            assert!(err < 1e-4, "{what} of {c:?}: relative error {err}");
        }
    }
    Ok(())
}

/// The models build conv weights as products of trainable tensors: the weight gradient must
/// flow through the op into those, not only into a `Var` passed directly.
#[test]
fn gradient_reaches_tensors_the_weight_is_computed_from() -> Result<()> {
    let c = case(2, 6, 8, 10, 3, 2, 1);
    let mut grads_by_backend = Vec::new();
    for backend in [ConvBackend::Fast, ConvBackend::Reference] {
        let basis = Var::from_tensor(&random(&[c.c_out, 5], 7)?)?;
        let code = Var::from_tensor(&random(&[5, c.c_in * c.kh * c.kw], 8)?)?;
        let w = basis
            .as_tensor()
            .matmul(code.as_tensor())?
            .reshape((c.c_out, c.c_in, c.kh, c.kw))?;
        let x = random(&[c.n, c.c_in, c.h, c.w], 9)?;
        let y = ops::conv2d(&x, &w, c.stride, c.padding, backend)?;
        let grads = (&y * random(y.dims(), 10)?)?.sum_all()?.backward()?;
        let d_basis = grads
            .get(basis.as_tensor())
            .ok_or_else(|| anyhow::anyhow!("no basis gradient"))?
            .clone();
        let d_code = grads
            .get(code.as_tensor())
            .ok_or_else(|| anyhow::anyhow!("no code gradient"))?
            .clone();
        grads_by_backend.push((d_basis, d_code));
    }
    let [(fast_basis, fast_code), (ref_basis, ref_code)] = grads_by_backend.as_slice() else {
        unreachable!("two backends were run");
    };
    assert!(rel_err(fast_basis, ref_basis)? < 1e-4);
    assert!(rel_err(fast_code, ref_code)? < 1e-4);
    Ok(())
}

/// Strided views (a narrowed input, a transposed weight) are valid operands.
#[test]
fn non_contiguous_operands_give_the_reference_result() -> Result<()> {
    let x = random(&[2, 4, 9, 12], 21)?.narrow(3, 2, 9)?;
    let w = random(&[4, 6, 3, 3], 22)?.transpose(0, 1)?;
    assert!(!x.is_contiguous() && !w.is_contiguous());
    let fast = ops::conv2d(&x, &w, 1, 1, ConvBackend::Fast)?;
    let reference = ops::conv2d(&x, &w, 1, 1, ConvBackend::Reference)?;
    assert!(rel_err(&fast, &reference)? < 1e-4);
    Ok(())
}

/// Operands that do not fit are an error, not a panic.
#[test]
fn mismatched_shapes_are_errors() -> Result<()> {
    let x = random(&[1, 3, 8, 8], 31)?;
    assert!(ops::conv2d(&x, &random(&[4, 5, 3, 3], 32)?, 1, 1, ConvBackend::Fast).is_err());
    assert!(ops::conv2d(&x, &random(&[4, 3, 9, 9], 33)?, 1, 0, ConvBackend::Fast).is_err());
    assert!(ops::conv2d(&x, &random(&[4, 3, 3, 3], 34)?, 0, 1, ConvBackend::Fast).is_err());
    Ok(())
}

/// Other dtypes take candle's reference op and still work.
#[test]
fn f64_falls_back_to_the_reference_op() -> Result<()> {
    let x = random(&[2, 3, 8, 8], 41)?.to_dtype(DType::F64)?;
    let w = random(&[4, 3, 3, 3], 42)?.to_dtype(DType::F64)?;
    let y = ops::conv2d(&x, &w, 2, 1, ConvBackend::Fast)?;
    assert_eq!(y.dims(), &[2, 4, 4, 4]);
    assert_eq!(y.dtype(), DType::F64);
    Ok(())
}
