//! Conversions between wire (proto) types and domain types, in one place. Every optional or
//! enumerated field a peer sent is validated here; errors say which field and why.

use crate::WireError;
use crate::codec::{TensorEncoding, TensorMeta};
use crate::proto::v1 as pb;
use fedcsg_core::spec::{Architecture, CsgMode, ModelSpec};

pub fn meta_to_proto(m: &TensorMeta) -> pb::TensorSpec {
    let encoding = match m.encoding {
        TensorEncoding::F32 => pb::Encoding::F32,
        TensorEncoding::F16 => pb::Encoding::F16,
        TensorEncoding::Bf16 => pb::Encoding::Bf16,
        TensorEncoding::Int8Scaled => pb::Encoding::Int8Scaled,
    };
    pb::TensorSpec {
        name: m.name.clone(),
        dtype: pb::Dtype::F32 as i32,
        shape: m.shape.iter().map(|d| *d as u64).collect(),
        encoding: encoding as i32,
        byte_length: m.byte_length,
        crc32: m.crc32,
        scale: 0.0,
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
    if encoding != TensorEncoding::Int8Scaled && t.scale != 0.0 {
        return Err(bad(
            "scale is only for ENCODING_INT8_SCALED and must be 0 otherwise",
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
