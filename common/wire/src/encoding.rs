//! Value encodings: how a run of f32 values becomes bytes and back. The byte layouts are the
//! ones documented at `TensorSpec` in `proto/fedcsg/v1/fedcsg.proto`.
//!
//! Error bounds, for a value `x` sent and `x'` decoded (tested below on random and adversarial
//! values):
//! - f32: `x' = x`, bit for bit (any bit pattern, NaN included: the receiver decides about
//!   non-finite values).
//! - f16, round to nearest even: `|x' - x| <= max(2^-11 |x|, 2^-25)` for `|x| <= 65504` (2^-25 is
//!   half the subnormal spacing; smaller values may flush to 0). A finite `x` beyond +-65504
//!   **saturates** to +-65504, the largest finite f16, and is counted in
//!   [`ValueCodec::saturated`]: never Inf. With error feedback the clipped part is sent later.
//! - bf16, round to nearest even: `|x' - x| <= max(2^-8 |x|, 2^-134)` for `|x| <= bf16::MAX`
//!   (3.3895e38); beyond it, saturation as for f16.
//! - int8: with `m` the largest `|x|` of the block of [`INT8_VALUES_PER_SCALE`] values holding
//!   `x` and `s` the block's scale (`m / 127` rounded up to an f32),
//!   `|x' - x| < s (1 + 2^-16) + 2^-149` (one rounding step, plus the f32 rounding of `q * s`),
//!   and stochastic rounding makes `x'` unbiased: `E[x'] = x` (up to that f32 rounding). A
//!   block of zeros gets scale 1 (a zero scale is refused on receipt) and decodes to exact
//!   zeros.
//!
//! The lossy encodings refuse NaN and infinite inputs: no rounding represents them, and
//! saturating a NaN or an Inf would hide a diverged model.
//!
//! ## Why 256 values per int8 scale
//! A scale costs 4 bytes: 256 values per scale add 1.6% to the int8 payload (1.016 bytes per
//! value, 3.94x less than f32), 1,024 would add 0.4% (3.98x). The price of a bigger block is
//! precision: a block's step is its largest magnitude / 127, so one outlier coarsens every value
//! of its block. The exchanged tensors mix magnitudes at a fine grain (a code bank's rows, the
//! rows of the last linear layer, a batch norm's 16 to 64 channels), and a delta's largest values
//! cluster in a few filters; a block of 256 values keeps an outlier's damage to one or two
//! filters' worth of values, for 1.2% more bytes than 1,024. Receivers accept any block size
//! from 1 to [`MAX_VALUES_PER_SCALE`]: the header says which one a sender used.

use std::fmt;
use std::str::FromStr;

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

use crate::rounding::StochasticRounding;

/// Values sharing one scale in the int8 encoding this crate sends.
pub const INT8_VALUES_PER_SCALE: u32 = 256;
/// The largest int8 block a receiver accepts.
pub const MAX_VALUES_PER_SCALE: u32 = 1 << 16;
/// The int8 codes a sender uses: symmetric, so -128 is refused on receipt.
const INT8_LIMIT: f64 = 127.0;

/// How a tensor's values are encoded on the wire. Stored (a job's settings) under the names
/// `Display` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TensorEncoding {
    #[default]
    F32,
    F16,
    Bf16,
    #[serde(rename = "int8")]
    Int8Scaled,
}

impl TensorEncoding {
    pub const ALL: [TensorEncoding; 4] = [Self::F32, Self::F16, Self::Bf16, Self::Int8Scaled];

    /// Whether decoding gives back exactly the values encoded.
    pub fn is_exact(self) -> bool {
        self == Self::F32
    }

    /// Bytes of a section of `values` values (int8: scales included, with `values_per_scale`
    /// values per scale), or `None` on overflow or a zero block size.
    pub fn section_bytes(self, values: u64, values_per_scale: u32) -> Option<u64> {
        match self {
            Self::F32 => values.checked_mul(4),
            Self::F16 | Self::Bf16 => values.checked_mul(2),
            Self::Int8Scaled => {
                let blocks = values.checked_add(u64::from(values_per_scale).checked_sub(1)?)?
                    / u64::from(values_per_scale);
                blocks.checked_mul(4)?.checked_add(values)
            }
        }
    }
}

impl fmt::Display for TensorEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::Int8Scaled => "int8",
        })
    }
}

impl FromStr for TensorEncoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "bf16" => Ok(Self::Bf16),
            "int8" => Ok(Self::Int8Scaled),
            other => Err(format!(
                "unknown encoding {other:?}: expected f32, f16, bf16 or int8"
            )),
        }
    }
}

/// Encodes runs of values in one encoding, counting the values it had to saturate.
#[derive(Debug)]
pub struct ValueCodec {
    encoding: TensorEncoding,
    rounding: StochasticRounding,
    saturated: u64,
}

impl ValueCodec {
    /// `rounding` drives int8's stochastic rounding (the other encodings ignore it).
    pub fn new(encoding: TensorEncoding, rounding: StochasticRounding) -> Self {
        Self {
            encoding,
            rounding,
            saturated: 0,
        }
    }

    /// Finite values beyond the encoding's range that were sent as its largest finite value.
    pub fn saturated(&self) -> u64 {
        self.saturated
    }

    /// Appends the encoding of `values` to `out`; a non-finite value is refused (lossy
    /// encodings only) with its index.
    pub fn encode(&mut self, values: &[f32], out: &mut Vec<u8>) -> Result<(), String> {
        if !self.encoding.is_exact()
            && let Some(i) = values.iter().position(|v| !v.is_finite())
        {
            return Err(format!(
                "value {i} is {} and cannot be encoded in {}",
                values[i], self.encoding
            ));
        }
        match self.encoding {
            TensorEncoding::F32 => {
                out.reserve(values.len() * 4);
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            TensorEncoding::F16 => {
                out.reserve(values.len() * 2);
                let max = f16::MAX.to_f32();
                for v in values {
                    let clamped = self.saturate(*v, max);
                    out.extend_from_slice(&f16::from_f32(clamped).to_le_bytes());
                }
            }
            TensorEncoding::Bf16 => {
                out.reserve(values.len() * 2);
                let max = bf16::MAX.to_f32();
                for v in values {
                    let clamped = self.saturate(*v, max);
                    out.extend_from_slice(&bf16::from_f32(clamped).to_le_bytes());
                }
            }
            TensorEncoding::Int8Scaled => self.encode_int8(values, out),
        }
        Ok(())
    }

    fn saturate(&mut self, v: f32, max: f32) -> f32 {
        if v.abs() > max {
            self.saturated += 1;
            max.copysign(v)
        } else {
            v
        }
    }

    fn encode_int8(&mut self, values: &[f32], out: &mut Vec<u8>) {
        let blocks = values.chunks(INT8_VALUES_PER_SCALE as usize);
        let scales: Vec<f32> = blocks.clone().map(int8_scale).collect();
        out.reserve(scales.len() * 4 + values.len());
        for s in &scales {
            out.extend_from_slice(&s.to_le_bytes());
        }
        for (block, scale) in blocks.zip(&scales) {
            let scale = f64::from(*scale);
            for v in block {
                let q = self
                    .rounding
                    .round(f64::from(*v) / scale)
                    .clamp(-INT8_LIMIT, INT8_LIMIT);
                out.push((q as i8).to_le_bytes()[0]);
            }
        }
    }
}

/// The scale of an int8 block: the smallest f32 `s` with `127 s >= max |x|`, so that every
/// `x / s` lies in [-127, 127]; 1 for a block of zeros (or of values too small for a positive
/// f32 scale: they round stochastically to 0 or +-1). Near f32::MAX, where `127 s` would
/// overflow, `s` is rounded down instead and the very largest values clamp to +-127.
fn int8_scale(block: &[f32]) -> f32 {
    let max = block.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
    let mut scale = (max / INT8_LIMIT) as f32;
    if scale > 0.0 && f64::from(scale) * INT8_LIMIT < max {
        scale = scale.next_up();
    }
    while (scale * INT8_LIMIT as f32).is_infinite() {
        scale = scale.next_down();
    }
    if scale > 0.0 { scale } else { 1.0 }
}

/// Decodes a section of `out.len()` values in `encoding` from `bytes` (whose length the caller
/// checked). A value or scale that cannot have been sent is refused with the reason.
pub fn decode_values(
    encoding: TensorEncoding,
    values_per_scale: u32,
    bytes: &[u8],
    out: &mut [f32],
) -> Result<(), String> {
    let non_finite = |i: usize, bits: u16| {
        format!("value {i} decodes to a non-finite number ({encoding} bits {bits:#06x})")
    };
    match encoding {
        TensorEncoding::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        TensorEncoding::F16 => {
            for (i, (o, b)) in out.iter_mut().zip(bytes.chunks_exact(2)).enumerate() {
                let h = f16::from_le_bytes([b[0], b[1]]);
                if !h.is_finite() {
                    return Err(non_finite(i, h.to_bits()));
                }
                *o = h.to_f32();
            }
        }
        TensorEncoding::Bf16 => {
            for (i, (o, b)) in out.iter_mut().zip(bytes.chunks_exact(2)).enumerate() {
                let h = bf16::from_le_bytes([b[0], b[1]]);
                if !h.is_finite() {
                    return Err(non_finite(i, h.to_bits()));
                }
                *o = h.to_f32();
            }
        }
        TensorEncoding::Int8Scaled => {
            let block = values_per_scale as usize;
            let (scales, codes) = bytes.split_at(out.len().div_ceil(block) * 4);
            for (b, (s, outs)) in scales
                .chunks_exact(4)
                .zip(out.chunks_mut(block))
                .enumerate()
            {
                let scale = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                if !(scale.is_finite() && scale > 0.0) {
                    return Err(format!(
                        "int8 scale {b} is {scale}: a scale must be finite and > 0"
                    ));
                }
                for (j, o) in outs.iter_mut().enumerate() {
                    let i = b * block + j;
                    let q = i8::from_le_bytes([codes[i]]);
                    if q == i8::MIN {
                        return Err(format!(
                            "value {i} has int8 code -128, outside the symmetric range [-127, 127]"
                        ));
                    }
                    *o = f32::from(q) * scale;
                    if !o.is_finite() {
                        return Err(format!(
                            "value {i} decodes to a non-finite number (int8 code {q} x scale {scale})"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
