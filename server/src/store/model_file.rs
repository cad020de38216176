//! Global models on disk: safetensors files written atomically (temporary file, fsync, rename,
//! fsync of the directory) and read back with their SHA-256 checked.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use fedcsg_core::tensor::{NamedTensor, StateDict};
use safetensors::tensor::{Dtype, TensorView};
use sha2::{Digest, Sha256};

use super::StoreError;

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}

/// Serialises `state` as safetensors bytes.
pub fn encode(state: &StateDict) -> Result<Vec<u8>, StoreError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = state
        .tensors()
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.shape.clone(),
                t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| StoreError::Corrupt {
                    what: name.clone(),
                    why: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, None).map_err(|e| StoreError::Corrupt {
        what: "model".into(),
        why: e.to_string(),
    })
}

pub fn decode(bytes: &[u8], what: &str) -> Result<StateDict, StoreError> {
    let corrupt = |why: String| StoreError::Corrupt {
        what: what.to_string(),
        why,
    };
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(corrupt(format!(
                "tensor {name} is {:?}, expected F32",
                view.dtype()
            )));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.push(NamedTensor {
            name,
            shape: view.shape().to_vec(),
            values,
        });
    }
    StateDict::new(tensors).map_err(corrupt)
}

/// Writes `state` to `path` atomically and durably; returns the file's SHA-256.
pub fn write_atomic(path: &Path, state: &StateDict) -> Result<String, StoreError> {
    let bytes = encode(state)?;
    let dir = path
        .parent()
        .ok_or_else(|| io_err(path, "no parent directory"))?;
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let tmp = path.with_extension("safetensors.tmp");
    {
        let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| io_err(&tmp, e))?;
        f.sync_all().map_err(|e| io_err(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    // The rename is durable only once the directory entry is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))?;
    Ok(sha256_hex(&bytes))
}

/// Reads a model file and checks it against the SHA-256 its record holds.
pub fn read_verified(path: &Path, expected_sha256: &str) -> Result<StateDict, StoreError> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let got = sha256_hex(&bytes);
    if got != expected_sha256 {
        return Err(StoreError::Corrupt {
            what: path.display().to_string(),
            why: format!("SHA-256 is {got} but the round record holds {expected_sha256}"),
        });
    }
    decode(&bytes, &path.display().to_string())
}
