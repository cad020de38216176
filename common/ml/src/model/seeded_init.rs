//! A `VarBuilder` backend that creates variables in a `VarMap` with values drawn from a seed, so
//! the same model spec and seed give bit-identical initial weights on any machine. Each variable
//! gets its own generator seeded from (seed, name), so adding a layer does not shift the others.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

pub struct SeededVarMap {
    vars: VarMap,
    seed: u64,
}

impl SeededVarMap {
    pub fn new(vars: VarMap, seed: u64) -> Self {
        Self { vars, seed }
    }
}

/// FNV-1a: a stable, dependency-free hash of a variable name.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn sample(shape: &Shape, init: Init, rng: &mut StdRng) -> Vec<f32> {
    let n = shape.elem_count();
    let dims = shape.dims();
    let receptive: usize = dims.iter().skip(2).product();
    let fan_in = dims.get(1).copied().unwrap_or(1) * receptive.max(1);
    let fan_out = dims.first().copied().unwrap_or(1) * receptive.max(1);
    let normal = |rng: &mut StdRng, mean: f64, std: f64| -> f32 {
        let z: f64 = StandardNormal.sample(rng);
        (mean + std * z) as f32
    };
    match init {
        Init::Const(v) => vec![v as f32; n],
        Init::Randn { mean, stdev } => (0..n).map(|_| normal(rng, mean, stdev)).collect(),
        Init::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo..up) as f32).collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = match fan {
                FanInOut::FanIn => fan_in,
                FanInOut::FanOut => fan_out,
            };
            let std = non_linearity.gain() / (fan as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => (0..n).map(|_| normal(rng, 0.0, std)).collect(),
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    (0..n)
                        .map(|_| rng.random_range(-bound..bound) as f32)
                        .collect()
                }
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self
            .vars
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
        if let Some(existing) = data.get(name) {
            if existing.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", existing.shape());
            }
            return Ok(existing.as_tensor().clone());
        }
        let mut rng = StdRng::seed_from_u64(self.seed ^ name_hash(name));
        let values = sample(&s, h, &mut rng);
        let var = Var::from_tensor(&Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?)?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        let data = self
            .vars
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
        match data.get(name) {
            Some(var) => Ok(var.as_tensor().clone()),
            None => candle_core::bail!("cannot find tensor {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vars
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}
