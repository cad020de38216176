//! Optimisers and learning-rate schedules. candle-nn's SGD has neither momentum nor weight decay,
//! so SGD here follows PyTorch's `torch.optim.SGD` exactly; AdamW is candle-nn's.

use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{Result, Var};
use candle_nn::{AdamW, Optimizer as _, ParamsAdamW};
use serde::{Deserialize, Serialize};

use crate::ops::SgdStep;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OptimizerConfig {
    /// `g = grad + wd * p; buf = momentum * buf + g; p -= lr * buf` (PyTorch semantics).
    Sgd {
        lr: f64,
        momentum: f64,
        weight_decay: f64,
    },
    AdamW {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    pub fn sgd(lr: f64, momentum: f64, weight_decay: f64) -> Self {
        Self::Sgd {
            lr,
            momentum,
            weight_decay,
        }
    }

    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Self::AdamW {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }

    pub fn lr(&self) -> f64 {
        match self {
            Self::Sgd { lr, .. } | Self::AdamW { lr, .. } => *lr,
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let (lr, wd) = match *self {
            Self::Sgd {
                lr,
                momentum,
                weight_decay,
            } => {
                if !(0.0..1.0).contains(&momentum) {
                    return Err(format!("momentum must be in [0, 1), got {momentum}"));
                }
                (lr, weight_decay)
            }
            Self::AdamW {
                lr, weight_decay, ..
            } => (lr, weight_decay),
        };
        if !(lr.is_finite() && lr > 0.0 && lr <= 10.0) {
            return Err(format!("learning rate must be in (0, 10], got {lr}"));
        }
        if !(wd.is_finite() && (0.0..1.0).contains(&wd)) {
            return Err(format!("weight decay must be in [0, 1), got {wd}"));
        }
        Ok(())
    }
}

/// Learning rate as a function of the optimiser step (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LrSchedule {
    #[default]
    Constant,
    /// Multiply by `gamma` every `every` steps.
    Step { every: usize, gamma: f64 },
    /// Linear warm-up over `warmup` steps, then cosine decay to zero at `total` steps.
    WarmupCosine { warmup: usize, total: usize },
}

impl LrSchedule {
    pub fn factor(&self, step: usize) -> f64 {
        match *self {
            LrSchedule::Constant => 1.0,
            LrSchedule::Step { every, gamma } => gamma.powi((step / every.max(1)) as i32),
            LrSchedule::WarmupCosine { warmup, total } => {
                if step < warmup {
                    (step + 1) as f64 / warmup as f64
                } else {
                    let span = total.saturating_sub(warmup).max(1) as f64;
                    let t = ((step - warmup) as f64 / span).min(1.0);
                    0.5 * (1.0 + (std::f64::consts::PI * t).cos())
                }
            }
        }
    }
}

enum Inner {
    Sgd {
        lr: f64,
        momentum: f64,
        weight_decay: f64,
        /// Momentum buffers, empty until the first step.
        buffers: Vec<Mutex<Vec<f32>>>,
    },
    AdamW(AdamW),
}

/// An optimiser over a fixed set of variables with a schedule.
pub struct Optimizer {
    vars: Vec<Var>,
    inner: Inner,
    schedule: LrSchedule,
    base_lr: f64,
    step: usize,
    /// FedProx's term: μ and μ·w₀ per variable, w₀ the values when the term was added.
    proximal: Option<(f64, Vec<Vec<f32>>)>,
}

impl Optimizer {
    pub fn new(vars: Vec<Var>, config: OptimizerConfig, schedule: LrSchedule) -> Result<Self> {
        let inner = match config {
            OptimizerConfig::Sgd {
                lr,
                momentum,
                weight_decay,
            } => Inner::Sgd {
                lr,
                momentum,
                weight_decay,
                buffers: vars.iter().map(|_| Mutex::new(Vec::new())).collect(),
            },
            OptimizerConfig::AdamW {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => Inner::AdamW(AdamW::new(
                vars.clone(),
                ParamsAdamW {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                },
            )?),
        };
        Ok(Self {
            vars,
            inner,
            schedule,
            base_lr: config.lr(),
            step: 0,
            proximal: None,
        })
    }

    /// Adds FedProx's proximal term `μ/2·‖w − w₀‖²` to the loss the optimiser minimises, with
    /// w₀ the variables' current values (the round's global model, for a worker that has just
    /// loaded it): each step's gradient gains `μ·(w − w₀)`, folded into the weight-decay term
    /// as `(wd + μ)·w − μ·w₀` so it costs one extra tensor op per variable. SGD only; μ = 0
    /// changes nothing.
    pub fn with_proximal_term(mut self, mu: f64) -> Result<Self> {
        if mu == 0.0 {
            return Ok(self);
        }
        if !matches!(self.inner, Inner::Sgd { .. }) {
            candle_core::bail!("the proximal term (FedProx) needs SGD");
        }
        let anchors = self
            .vars
            .iter()
            .map(|v| {
                v.as_tensor()
                    .detach()
                    .affine(mu, 0.0)?
                    .flatten_all()?
                    .to_vec1::<f32>()
            })
            .collect::<Result<Vec<_>>>()?;
        self.proximal = Some((mu, anchors));
        Ok(self)
    }

    /// The learning rate the next step will use.
    pub fn current_lr(&self) -> f64 {
        self.base_lr * self.schedule.factor(self.step)
    }

    pub fn steps_taken(&self) -> usize {
        self.step
    }

    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let lr_now = self.current_lr();
        match &mut self.inner {
            Inner::Sgd {
                lr,
                momentum,
                weight_decay,
                buffers,
            } => {
                *lr = lr_now;
                let mu = self.proximal.as_ref().map_or(0.0, |(mu, _)| *mu);
                for (i, (var, buffer)) in self.vars.iter().zip(buffers.iter()).enumerate() {
                    let Some(grad) = grads.get(var.as_tensor()) else {
                        continue;
                    };
                    // One fused pass per variable (ops::SgdStep), in place.
                    let step = SgdStep {
                        lr: *lr as f32,
                        momentum: *momentum as f32,
                        decay: (*weight_decay + mu) as f32,
                        anchor: self
                            .proximal
                            .as_ref()
                            .map(|(_, anchors)| anchors[i].as_slice()),
                        buffer,
                    };
                    var.as_tensor().inplace_op2(&grad.contiguous()?, &step)?;
                }
            }
            Inner::AdamW(opt) => {
                opt.set_learning_rate(lr_now);
                opt.step(grads)?;
            }
        }
        self.step += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// FedProx's term pulls toward the values at the time it was added: on f(p) = p (grad 1),
    /// with p₀ = 1 and p moved to 3 by hand, one step with μ = 0.5, lr = 0.1 (no momentum, no
    /// decay) gives p = 3 − 0.1·(1 + 0.5·(3 − 1)) = 2.8; with μ = 0, p = 3 − 0.1 = 2.9. AdamW
    /// refuses the term.
    #[test]
    fn proximal_term_pulls_toward_the_anchor() {
        for (mu, want) in [(0.5, 2.8f32), (0.0, 2.9)] {
            let p = Var::new(&[1.0f32], &Device::Cpu).unwrap();
            let mut opt = Optimizer::new(
                vec![p.clone()],
                OptimizerConfig::sgd(0.1, 0.0, 0.0),
                LrSchedule::Constant,
            )
            .unwrap()
            .with_proximal_term(mu)
            .unwrap();
            p.set(&Tensor::new(&[3.0f32], &Device::Cpu).unwrap())
                .unwrap();
            let loss = p.as_tensor().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            let got = p.as_tensor().to_vec1::<f32>().unwrap()[0];
            assert!((got - want).abs() < 1e-6, "mu {mu}: {got} vs {want}");
        }
        let adam = Optimizer::new(
            vec![Var::new(&[1.0f32], &Device::Cpu).unwrap()],
            OptimizerConfig::adamw(0.1, 0.0),
            LrSchedule::Constant,
        )
        .unwrap();
        assert!(adam.with_proximal_term(0.1).is_err());
    }

    /// Three SGD steps on f(p) = sum(p^2)/2 (grad = p) match PyTorch's formula worked by hand:
    /// p=1, lr=0.1, momentum=0.9, wd=0.1: g=1.1, buf=1.1, p=0.89; g=0.979, buf=1.969, p=0.6931;
    /// g=0.76241, buf=2.53451, p=0.439649.
    #[test]
    fn sgd_matches_pytorch_reference_numbers() {
        let p = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let mut opt = Optimizer::new(
            vec![p.clone()],
            OptimizerConfig::sgd(0.1, 0.9, 0.1),
            LrSchedule::Constant,
        )
        .unwrap();
        // 0.6931 is the second step worked by hand above, not an approximation of ln 2.
        #[allow(clippy::approx_constant)]
        let expected = [0.89f32, 0.6931, 0.439649];
        for want in expected {
            let loss = (p.as_tensor().sqr().unwrap() * 0.5)
                .unwrap()
                .sum_all()
                .unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            let got = p.as_tensor().to_vec1::<f32>().unwrap()[0];
            assert!((got - want).abs() < 1e-5, "got {got}, want {want}");
        }
    }

    /// The fused step computes exactly what the same step written as candle tensor ops computes
    /// (`g + w * decay - anchor`, `buf * momentum + g`, `w - g * lr`), bit for bit, over several
    /// steps with momentum, weight decay and the proximal term, on a 1,000-value tensor.
    #[test]
    fn the_fused_step_equals_the_tensor_op_step() {
        let dev = Device::Cpu;
        let (lr, momentum, wd, mu) = (0.05, 0.9, 5e-4, 0.01);
        let init = Tensor::randn(0f32, 1.0, 1000, &dev).unwrap();
        let p = Var::from_tensor(&init).unwrap();
        let mut opt = Optimizer::new(
            vec![p.clone()],
            OptimizerConfig::sgd(lr, momentum, wd),
            LrSchedule::Constant,
        )
        .unwrap()
        .with_proximal_term(mu)
        .unwrap();
        let anchor = (&init * mu).unwrap();
        let mut w = init.clone();
        let mut buf: Option<Tensor> = None;
        for step in 0..4 {
            let target = Tensor::randn(0f32, 1.0, 1000, &dev).unwrap();
            let loss = ((p.as_tensor() - &target).unwrap().sqr().unwrap() * 0.5)
                .unwrap()
                .sum_all()
                .unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            // The same step as tensor ops: grad = w - target.
            let g = (&w - &target).unwrap();
            let g = ((g + (&w * (wd + mu)).unwrap()).unwrap() - &anchor).unwrap();
            let g = match buf.take() {
                Some(b) => ((b * momentum).unwrap() + &g).unwrap(),
                None => g,
            };
            buf = Some(g.clone());
            w = (&w - (g * lr).unwrap()).unwrap();
            let (got, want) = (
                p.as_tensor().to_vec1::<f32>().unwrap(),
                w.to_vec1::<f32>().unwrap(),
            );
            let differ = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| a.to_bits() != b.to_bits() && **a != **b)
                .count();
            assert_eq!(differ, 0, "step {step}: {differ} of 1000 values differ");
        }
    }

    /// Warm-up rises linearly to the base rate, cosine then falls to zero at the last step.
    #[test]
    fn warmup_cosine_shape() {
        let s = LrSchedule::WarmupCosine {
            warmup: 30,
            total: 130,
        };
        assert!((s.factor(0) - 1.0 / 30.0).abs() < 1e-12);
        assert!((s.factor(29) - 1.0).abs() < 1e-12);
        assert!((s.factor(30) - 1.0).abs() < 1e-12);
        assert!((s.factor(80) - 0.5).abs() < 1e-12);
        assert!(s.factor(130).abs() < 1e-12);
        let step = LrSchedule::Step {
            every: 10,
            gamma: 0.1,
        };
        assert!((step.factor(25) - 0.01).abs() < 1e-12);
    }
}
