//! Conversions between wire (proto) types and domain types, in one place. Every optional or
//! enumerated field a peer sent is validated here; errors say which field and why.

use crate::codec::TensorMeta;
use crate::encode::Compression;
use crate::encoding::TensorEncoding;
use crate::proto::v1 as pb;
use crate::sparse::TopK;
use crate::{UpdateKind, WireError};
use fedcsg_core::spec::{Architecture, CsgMode, ModelSpec};

pub fn encoding_to_proto(e: TensorEncoding) -> pb::Encoding {
    match e {
        TensorEncoding::F32 => pb::Encoding::F32,
        TensorEncoding::F16 => pb::Encoding::F16,
        TensorEncoding::Bf16 => pb::Encoding::Bf16,
        TensorEncoding::Int8Scaled => pb::Encoding::Int8Scaled,
    }
}

/// An encoding from a settings field (`JobSpec`, `TrainTask`), where ENCODING_UNSPECIFIED is
/// proto3's "not set" and means f32; `field` names the field for the error message.
pub fn encoding_setting_from_proto(value: i32, field: &str) -> Result<TensorEncoding, String> {
    match pb::Encoding::try_from(value) {
        Ok(pb::Encoding::Unspecified | pb::Encoding::F32) => Ok(TensorEncoding::F32),
        Ok(pb::Encoding::F16) => Ok(TensorEncoding::F16),
        Ok(pb::Encoding::Bf16) => Ok(TensorEncoding::Bf16),
        Ok(pb::Encoding::Int8Scaled) => Ok(TensorEncoding::Int8Scaled),
        Err(_) => Err(format!(
            "{field}: unknown encoding {value} (ENCODING_F32, ENCODING_F16, ENCODING_BF16 or ENCODING_INT8_SCALED)"
        )),
    }
}

/// Top-k from a settings field: 0 means dense.
pub fn topk_setting_from_proto(fraction: f64, field: &str) -> Result<Option<TopK>, String> {
    if fraction == 0.0 {
        return Ok(None);
    }
    TopK::new(fraction)
        .map(Some)
        .map_err(|e| format!("{field}: {e}"))
}

/// The compression of a settings pair (encoding, top-k fraction).
pub fn compression_from_proto(
    encoding: i32,
    topk: f64,
    field: &str,
) -> Result<Compression, String> {
    Ok(Compression {
        encoding: encoding_setting_from_proto(encoding, &format!("{field}_encoding"))?,
        topk: topk_setting_from_proto(topk, &format!("{field}_topk"))?,
    })
}

pub fn update_kind_to_proto(k: UpdateKind) -> pb::UpdateKind {
    match k {
        UpdateKind::Weights => pb::UpdateKind::Weights,
        UpdateKind::Delta => pb::UpdateKind::Delta,
    }
}

pub fn update_kind_from_proto(value: i32) -> Result<UpdateKind, WireError> {
    match pb::UpdateKind::try_from(value) {
        Ok(pb::UpdateKind::Weights) => Ok(UpdateKind::Weights),
        Ok(pb::UpdateKind::Delta) => Ok(UpdateKind::Delta),
        Err(_) => Err(WireError::Protocol(format!(
            "update kind {value} is unknown (UPDATE_KIND_WEIGHTS or UPDATE_KIND_DELTA)"
        ))),
    }
}

pub fn meta_to_proto(m: &TensorMeta) -> pb::TensorSpec {
    pb::TensorSpec {
        name: m.name.clone(),
        dtype: pb::Dtype::F32 as i32,
        shape: m.shape.iter().map(|d| *d as u64).collect(),
        encoding: encoding_to_proto(m.encoding) as i32,
        byte_length: m.byte_length,
        crc32: m.crc32,
        scale: 0.0,
        values_per_scale: m.values_per_scale,
        kept_values: m.kept_values,
    }
}

pub fn meta_from_proto(t: &pb::TensorSpec) -> Result<TensorMeta, WireError> {
    let bad = |why: &str| WireError::BadTensorSpec {
        name: t.name.clone(),
        why: why.to_string(),
    };
    if t.dtype != pb::Dtype::F32 as i32 {
        return Err(bad("dtype must be DTYPE_F32"));
    }
    let encoding = match pb::Encoding::try_from(t.encoding) {
        Ok(pb::Encoding::F32) => TensorEncoding::F32,
        Ok(pb::Encoding::F16) => TensorEncoding::F16,
        Ok(pb::Encoding::Bf16) => TensorEncoding::Bf16,
        Ok(pb::Encoding::Int8Scaled) => TensorEncoding::Int8Scaled,
        Ok(pb::Encoding::Unspecified) | Err(_) => {
            return Err(bad("encoding is unspecified or unknown"));
        }
    };
    // Bits, not value: -0.0 and NaN are not "0" either.
    if t.scale.to_bits() != 0 {
        return Err(bad(
            "the scale field is unused and must be 0 (int8 scales travel in the data)",
        ));
    }
    let shape = t
        .shape
        .iter()
        .map(|d| usize::try_from(*d).map_err(|_| bad("dimension does not fit in memory")))
        .collect::<Result<_, _>>()?;
    Ok(TensorMeta {
        name: t.name.clone(),
        shape,
        encoding,
        byte_length: t.byte_length,
        crc32: t.crc32,
        values_per_scale: t.values_per_scale,
        kept_values: t.kept_values,
    })
}

pub fn metas_from_proto(
    ts: &[pb::TensorSpec],
    limits: &super::WireLimits,
) -> Result<Vec<TensorMeta>, WireError> {
    if ts.len() > limits.max_tensors {
        return Err(WireError::TooManyTensors {
            count: ts.len(),
            limit: limits.max_tensors,
        });
    }
    ts.iter().map(meta_from_proto).collect()
}

pub fn model_spec_to_proto(s: &ModelSpec) -> pb::ModelSpec {
    pb::ModelSpec {
        architecture: s.arch.to_string(),
        csg: s.csg.to_string(),
        in_channels: s.in_channels as u32,
        num_classes: s.num_classes as u32,
    }
}

/// A `ModelSpec` from the wire; `field` names the enclosing field for error messages.
pub fn model_spec_from_proto(s: Option<&pb::ModelSpec>, field: &str) -> Result<ModelSpec, String> {
    let s = s.ok_or_else(|| format!("{field} is missing"))?;
    let arch: Architecture = s
        .architecture
        .parse()
        .map_err(|e| format!("{field}.architecture: {e}"))?;
    let csg: CsgMode = s.csg.parse().map_err(|e| format!("{field}.csg: {e}"))?;
    let spec = ModelSpec::new(arch, csg, s.in_channels as usize, s.num_classes as usize);
    spec.validate().map_err(|e| format!("{field}: {e}"))?;
    Ok(spec)
}
