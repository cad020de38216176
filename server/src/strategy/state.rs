//! The server-side state a strategy carries from round to round (FedAvgM's momentum, the adaptive
//! optimisers' m and v), kept per exchanged tensor and committed with each round's model so a
//! restarted coordinator resumes the optimiser exactly.

use std::collections::BTreeMap;

use fedcsg_core::tensor::{NamedTensor, StateDict};

/// Slots named `<slot>/<tensor>` (`m/layer1.0.conv1.codes`), each as long as its tensor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerState {
    slots: BTreeMap<String, Vec<f32>>,
}

/// The slot names a strategy may keep.
const SLOTS: [&str; 3] = ["momentum", "m", "v"];

impl ServerState {
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Removes the slot `slot` of `tensor` to update it, or a fresh one filled with `init`; a
    /// stored slot of another length is an error (the state belongs to another model).
    pub(super) fn take(
        &mut self,
        slot: &str,
        tensor: &str,
        len: usize,
        init: f32,
    ) -> Result<Vec<f32>, String> {
        match self.slots.remove(&format!("{slot}/{tensor}")) {
            Some(v) if v.len() == len => Ok(v),
            Some(v) => Err(format!(
                "strategy state {slot}/{tensor} has {} values, the tensor {len}",
                v.len()
            )),
            None => Ok(vec![init; len]),
        }
    }

    pub(super) fn put(&mut self, slot: &str, tensor: &str, values: Vec<f32>) {
        self.slots.insert(format!("{slot}/{tensor}"), values);
    }

    /// The slot `slot` of `tensor`, if kept.
    pub fn get(&self, slot: &str, tensor: &str) -> Option<&[f32]> {
        self.slots
            .get(&format!("{slot}/{tensor}"))
            .map(Vec::as_slice)
    }

    /// As tensors (each flat), for the model file format.
    pub fn to_state_dict(&self) -> StateDict {
        let tensors = self
            .slots
            .iter()
            .map(|(name, values)| NamedTensor {
                name: name.clone(),
                shape: vec![values.len()],
                values: values.clone(),
            })
            .collect();
        StateDict::new(tensors).expect("slot names are unique and shapes match")
    }

    /// From what [`ServerState::to_state_dict`] wrote; unknown slot names are refused.
    pub fn from_state_dict(state: StateDict) -> Result<Self, String> {
        let mut slots = BTreeMap::new();
        for t in state.into_tensors() {
            let known = t
                .name
                .split_once('/')
                .is_some_and(|(slot, _)| SLOTS.contains(&slot));
            if !known {
                return Err(format!("unknown strategy state tensor {:?}", t.name));
            }
            slots.insert(t.name, t.values);
        }
        Ok(Self { slots })
    }
}
