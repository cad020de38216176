//! Model state as plain named f32 arrays: what the federation averages, stores and sends. Free of
//! candle and protobuf so aggregation and storage never depend on either.

use serde::{Deserialize, Serialize};

/// One named tensor, row-major f32.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl NamedTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Index of the first non-finite value, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        self.values.iter().position(|v| !v.is_finite())
    }
}

/// A model's state: tensors sorted by name, names unique.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StateDict {
    tensors: Vec<NamedTensor>,
}

impl StateDict {
    /// Sorts by name; duplicate names or a shape that does not match its values are errors.
    pub fn new(mut tensors: Vec<NamedTensor>) -> Result<Self, String> {
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        for pair in tensors.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(format!("tensor {:?} appears twice", pair[0].name));
            }
        }
        for t in &tensors {
            if t.numel() != t.values.len() {
                return Err(format!(
                    "tensor {:?} has shape {:?} ({} values) but {} values",
                    t.name,
                    t.shape,
                    t.numel(),
                    t.values.len()
                ));
            }
        }
        Ok(Self { tensors })
    }

    pub fn tensors(&self) -> &[NamedTensor] {
        &self.tensors
    }

    pub fn into_tensors(self) -> Vec<NamedTensor> {
        self.tensors
    }

    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.tensors[i])
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn numel(&self) -> usize {
        self.tensors.iter().map(NamedTensor::numel).sum()
    }

    /// Keeps only the tensors whose names are in `names`.
    pub fn restricted_to(&self, names: &[&str]) -> StateDict {
        let tensors = self
            .tensors
            .iter()
            .filter(|t| names.contains(&t.name.as_str()))
            .cloned()
            .collect();
        StateDict { tensors }
    }

    /// Replaces (or inserts) the tensors of `update` by name, keeping the rest.
    pub fn merged_with(&self, update: &StateDict) -> StateDict {
        let mut tensors: Vec<NamedTensor> = self
            .tensors
            .iter()
            .filter(|t| update.get(&t.name).is_none())
            .cloned()
            .collect();
        tensors.extend(update.tensors.iter().cloned());
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        StateDict { tensors }
    }

    /// A stable fingerprint of names, shapes and exact bits (SHA-256, hex).
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for t in &self.tensors {
            h.update(t.name.as_bytes());
            h.update([0u8]);
            for d in &t.shape {
                h.update((*d as u64).to_le_bytes());
            }
            for v in &t.values {
                h.update(v.to_le_bytes());
            }
        }
        hex::encode(h.finalize())
    }
}
