//! The CNNs of "Associative Convolutional Layers" in candle: a shared slice generator, code banks,
//! conv layers whose filters are stored or generated, and the ResNet / DenseNet-BC models built
//! from them, with their parameter inventory, state exchange, persistence and materialisation.

pub mod conv;
pub mod densenet;
mod fused;
pub mod inventory;
mod linear;
pub mod resnet;
mod seeded_init;
pub mod slice_generator;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

pub use conv::{Conv2d, ConvConfig, ConvWeight};
pub use densenet::DenseNet;
pub use fedcsg_core::spec::{
    Architecture, BnStatsPolicy, CodeInit, CsgMode, CsgShape, DEFAULT_GENERATOR_SEED, ModelSpec,
    SliceLayout,
};
pub use inventory::{Inventory, ParamEntry, ParamRole};
pub use resnet::ResNet;
pub use slice_generator::SliceGenerator;

use crate::error::ModelError;
use crate::ops::ConvBackend;
use fedcsg_core::tensor::{NamedTensor, StateDict};

#[derive(Debug, Clone)]
enum Net {
    ResNet(ResNet),
    DenseNet(DenseNet),
}

/// A built model: its spec, its variables and the network that reads them.
pub struct Model {
    spec: ModelSpec,
    vars: VarMap,
    net: Net,
    generator: Option<Arc<SliceGenerator>>,
    device: Device,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Builds `spec` on the CPU with weights drawn deterministically from `seed`.
    pub fn new(spec: &ModelSpec, seed: u64, backend: ConvBackend) -> Result<Self, ModelError> {
        spec.validate()?;
        let device = Device::Cpu;
        let vars = VarMap::new();
        let backend_vars: Box<dyn candle_nn::var_builder::SimpleBackend> =
            Box::new(seeded_init::SeededVarMap::new(vars.clone(), seed));
        let vb = VarBuilder::from_backend(backend_vars, DType::F32, device.clone());
        let generator = match spec.csg {
            CsgMode::Full => None,
            CsgMode::Trained { shape, codes } => Some(Arc::new(SliceGenerator::trained(
                shape,
                3,
                spec.layout,
                codes,
                vb.pp("generator"),
            )?)),
            CsgMode::Seeded { shape, seed, codes } => Some(Arc::new(SliceGenerator::seeded(
                shape,
                3,
                spec.layout,
                seed,
                codes,
                &device,
            )?)),
        };
        let g = generator.as_ref();
        let net = match spec.arch {
            Architecture::ResNet { depth } => Net::ResNet(ResNet::new(
                depth,
                spec.in_channels,
                spec.num_classes,
                g,
                backend,
                vb,
            )?),
            Architecture::DenseNet { depth, growth } => Net::DenseNet(DenseNet::new(
                depth,
                growth,
                spec.in_channels,
                spec.num_classes,
                g,
                backend,
                vb,
            )?),
        };
        Ok(Self {
            spec: *spec,
            vars,
            net,
            generator,
            device,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn var_map(&self) -> &VarMap {
        &self.vars
    }

    /// Logits `[n, classes]` for images `[n, c, h, w]`; `train` selects batch statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match &self.net {
            Net::ResNet(n) => n.forward_t(x, train),
            Net::DenseNet(n) => n.forward_t(x, train),
        }
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        let data = self.vars.data().lock().expect("variable map lock poisoned");
        let mut out: Vec<(String, Var)> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Variables the optimiser updates (everything but batch-norm running statistics), by name.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        self.named_vars()
            .into_iter()
            .filter(|(n, _)| ParamRole::of(n) != ParamRole::BnStats)
            .collect()
    }

    pub fn inventory(&self, bn: BnStatsPolicy) -> Inventory {
        let vars = self
            .named_vars()
            .into_iter()
            .map(|(n, v)| (n, v.dims().to_vec()))
            .collect();
        let seeded = match self.spec.csg {
            CsgMode::Seeded { .. } => self.generator.as_ref().map(|g| g.weight().dims().to_vec()),
            _ => None,
        };
        Inventory::new(self.spec.csg, vars, seeded, bn)
    }

    /// Every variable's current value.
    pub fn state(&self) -> Result<StateDict, ModelError> {
        let mut tensors = Vec::new();
        for (name, var) in self.named_vars() {
            let t = var.as_tensor();
            let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
            tensors.push(NamedTensor {
                name,
                shape: t.dims().to_vec(),
                values,
            });
        }
        StateDict::new(tensors).map_err(|why| ModelError::BadConfig { why })
    }

    /// The tensors that travel in a federated exchange under `bn`.
    pub fn exchanged_state(&self, bn: BnStatsPolicy) -> Result<StateDict, ModelError> {
        let inv = self.inventory(bn);
        Ok(self.state()?.restricted_to(&inv.exchanged_names()))
    }

    /// Checks `state` against this model without changing anything: every name known, shapes
    /// equal, values finite. With `complete`, every variable must be present.
    pub fn check_state(&self, state: &StateDict, complete: bool) -> Result<(), ModelError> {
        let vars: HashMap<String, Var> = self.named_vars().into_iter().collect();
        for t in state.tensors() {
            let Some(var) = vars.get(&t.name) else {
                return Err(ModelError::BadTensor {
                    name: t.name.clone(),
                    why: format!("not a variable of {}", self.spec),
                });
            };
            if var.dims() != t.shape.as_slice() {
                return Err(ModelError::BadTensor {
                    name: t.name.clone(),
                    why: format!("shape {:?}, expected {:?}", t.shape, var.dims()),
                });
            }
            if let Some(i) = t.first_non_finite() {
                return Err(ModelError::BadTensor {
                    name: t.name.clone(),
                    why: format!("value {} at index {i} is not finite", t.values[i]),
                });
            }
        }
        if complete && state.len() != vars.len() {
            let missing: Vec<&String> = vars
                .keys()
                .filter(|k| state.get(k).is_none())
                .take(5)
                .collect();
            return Err(ModelError::BadTensor {
                name: format!("{missing:?}"),
                why: "missing from the model state".into(),
            });
        }
        Ok(())
    }

    /// Overwrites the named variables with `state` after checking all of it first, so a bad
    /// state changes nothing.
    pub fn load_state(&self, state: &StateDict) -> Result<(), ModelError> {
        self.check_state(state, false)?;
        let vars: HashMap<String, Var> = self.named_vars().into_iter().collect();
        for t in state.tensors() {
            let value = Tensor::from_slice(&t.values, t.shape.as_slice(), &self.device)?;
            vars[&t.name].set(&value)?;
        }
        Ok(())
    }

    /// Writes every variable to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let tensors: HashMap<String, Tensor> = self
            .named_vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, path).map_err(|e| ModelError::File {
            path: path.display().to_string(),
            why: e.to_string(),
        })
    }

    /// Loads a safetensors file written by `save` (or by `materialize().save`) into this model.
    pub fn load(&self, path: &Path) -> Result<(), ModelError> {
        let file_err = |why: String| ModelError::File {
            path: path.display().to_string(),
            why,
        };
        let tensors = candle_core::safetensors::load(path, &self.device)
            .map_err(|e| file_err(e.to_string()))?;
        let mut named = Vec::with_capacity(tensors.len());
        for (name, t) in tensors {
            let values: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            named.push(NamedTensor {
                name,
                shape: t.dims().to_vec(),
                values,
            });
        }
        let state = StateDict::new(named).map_err(file_err)?;
        self.check_state(&state, true)
            .map_err(|e| file_err(e.to_string()))?;
        self.load_state(&state)
    }

    /// The plain full-filter model of the same architecture, with every generated filter
    /// written out as an ordinary conv weight and every other variable copied.
    pub fn materialize(&self, backend: ConvBackend) -> Result<Model, ModelError> {
        let full = Model::new(&self.spec.full_filter(), 0, backend)?;
        let mut tensors: Vec<NamedTensor> = self
            .state()?
            .into_tensors()
            .into_iter()
            .filter(|t| {
                !matches!(
                    ParamRole::of(&t.name),
                    ParamRole::Codes | ParamRole::Generator
                )
            })
            .collect();
        for conv in self.convs() {
            if conv.is_generated() {
                let w = conv.kernel()?;
                tensors.push(NamedTensor {
                    name: format!("{}.weight", conv.path()),
                    shape: w.dims().to_vec(),
                    values: w.flatten_all()?.to_vec1()?,
                });
            }
        }
        let state = StateDict::new(tensors).map_err(|why| ModelError::BadConfig { why })?;
        full.check_state(&state, true)?;
        full.load_state(&state)?;
        Ok(full)
    }

    fn convs(&self) -> Vec<&Conv2d> {
        match &self.net {
            Net::ResNet(n) => n.convs(),
            Net::DenseNet(n) => n.convs(),
        }
    }
}

#[cfg(test)]
mod tests;
