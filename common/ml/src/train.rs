//! The local training and evaluation loops every node runs: seeded epochs over a data set,
//! forward/backward on candle, the optimiser step, and evaluation with running statistics.
//! These are synchronous and CPU-bound: async callers run them on a blocking thread.

use std::time::Instant;

use candle_core::{D, Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use thiserror::Error;

use crate::data::{
    Augmentation, DataError, Dataset, Normalization, epoch_order, fill_batch, shuffle::derive_seed,
};
use crate::error::ModelError;
use crate::model::Model;
use crate::optim::{LrSchedule, Optimizer, OptimizerConfig};

#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("training diverged: loss is {loss} at epoch {epoch}, step {step}")]
    Diverged {
        loss: f32,
        epoch: usize,
        step: usize,
    },
    #[error("data set {name:?} has images {got:?} but the model expects {expected} input channels")]
    ChannelMismatch {
        name: String,
        got: (usize, usize, usize),
        expected: usize,
    },
    #[error("invalid training settings: {why}")]
    Settings { why: String },
    #[error("training was cancelled")]
    Cancelled,
}

/// How to train locally.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainSettings {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub schedule: LrSchedule,
    pub augmentation: Augmentation,
    pub seed: u64,
    /// FedProx's μ: the local loss gains `μ/2·‖w − w_start‖²` (0 = off; SGD only).
    pub proximal_mu: f64,
}

impl TrainSettings {
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |why: String| Err(TrainError::Settings { why });
        if self.epochs == 0 || self.epochs > 10_000 {
            return bad(format!("epochs must be 1..=10000, got {}", self.epochs));
        }
        if self.batch_size == 0 || self.batch_size > 8192 {
            return bad(format!(
                "batch size must be 1..=8192, got {}",
                self.batch_size
            ));
        }
        if !(self.proximal_mu.is_finite() && (0.0..=10.0).contains(&self.proximal_mu)) {
            return bad(format!(
                "proximal mu must be in [0, 10], got {}",
                self.proximal_mu
            ));
        }
        if self.proximal_mu != 0.0 && !matches!(self.optimizer, OptimizerConfig::Sgd { .. }) {
            return bad("the proximal term (FedProx) needs SGD".into());
        }
        self.optimizer
            .validate()
            .map_err(|why| TrainError::Settings { why })
    }
}

/// Number of optimiser steps per epoch over `len` samples.
pub fn steps_per_epoch(len: usize, batch_size: usize) -> usize {
    len.div_ceil(batch_size.max(1))
}

/// What a step reports to a progress display.
#[derive(Debug, Clone, Copy)]
pub struct StepProgress {
    pub epoch: usize,
    pub step: usize,
    pub steps_per_epoch: usize,
    pub loss: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub images: usize,
    pub seconds: f64,
    pub images_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub samples: usize,
    pub correct: usize,
    pub loss_sum: f64,
}

impl EvalReport {
    pub fn accuracy(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.correct as f64 / self.samples as f64
        }
    }

    pub fn mean_loss(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.loss_sum / self.samples as f64
        }
    }
}

fn check_channels(model: &Model, data: &Dataset) -> Result<(), TrainError> {
    if data.channels() != model.spec().in_channels {
        return Err(TrainError::ChannelMismatch {
            name: data.name().to_string(),
            got: data.image_shape(),
            expected: model.spec().in_channels,
        });
    }
    Ok(())
}

fn batch_tensors(
    data: &Dataset,
    indices: &[usize],
    norm: &Normalization,
    augmentation: Option<(&Augmentation, &mut StdRng)>,
    images: &mut Vec<f32>,
    labels: &mut Vec<u32>,
    device: &Device,
) -> Result<(Tensor, Tensor), TrainError> {
    let aug = augmentation.map(|(a, rng)| (a, rng as &mut dyn rand::RngCore));
    fill_batch(data, indices, norm, aug, images, labels)?;
    let (c, h, w) = data.image_shape();
    let x = Tensor::from_slice(images, (indices.len(), c, h, w), device)?;
    let y = Tensor::from_slice(labels, indices.len(), device)?;
    Ok((x, y))
}

/// Trains `model` on `data` for `settings.epochs` with a fresh optimiser, calling `on_step`
/// after every step and `should_stop` before each one (`true` ends with `TrainError::Cancelled`).
pub fn train(
    model: &Model,
    data: &Dataset,
    norm: &Normalization,
    settings: &TrainSettings,
    on_step: &mut dyn FnMut(StepProgress),
    should_stop: &dyn Fn() -> bool,
) -> Result<Vec<EpochReport>, TrainError> {
    let mut trainer = Trainer::new(model, settings)?;
    (0..settings.epochs)
        .map(|epoch| trainer.epoch(model, data, norm, epoch, on_step, should_stop))
        .collect()
}

/// Optimiser state that lives across epochs (momentum buffers, schedule position).
pub struct Trainer {
    settings: TrainSettings,
    optimizer: Optimizer,
    aug_rng: StdRng,
}

impl Trainer {
    pub fn new(model: &Model, settings: &TrainSettings) -> Result<Self, TrainError> {
        settings.validate()?;
        let vars = model.trainable_vars().into_iter().map(|(_, v)| v).collect();
        let optimizer = Optimizer::new(vars, settings.optimizer, settings.schedule)?
            .with_proximal_term(settings.proximal_mu)?;
        let aug_rng = StdRng::seed_from_u64(derive_seed(settings.seed, 0xa06));
        Ok(Self {
            settings: *settings,
            optimizer,
            aug_rng,
        })
    }

    /// One pass over `data` in the seeded order of `epoch`.
    pub fn epoch(
        &mut self,
        model: &Model,
        data: &Dataset,
        norm: &Normalization,
        epoch: usize,
        on_step: &mut dyn FnMut(StepProgress),
        should_stop: &dyn Fn() -> bool,
    ) -> Result<EpochReport, TrainError> {
        check_channels(model, data)?;
        if data.is_empty() {
            return Err(TrainError::Settings {
                why: format!("data set {:?} is empty", data.name()),
            });
        }
        let settings = self.settings;
        let augment = !settings.augmentation.is_identity();
        let steps = steps_per_epoch(data.len(), settings.batch_size);
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        let start = Instant::now();
        let order = epoch_order(data.len(), settings.seed, epoch as u64);
        let mut loss_sum = 0.0f64;
        for (step, indices) in order.chunks(settings.batch_size).enumerate() {
            if should_stop() {
                return Err(TrainError::Cancelled);
            }
            let aug = if augment {
                Some((&settings.augmentation, &mut self.aug_rng))
            } else {
                None
            };
            let (x, y) = batch_tensors(
                data,
                indices,
                norm,
                aug,
                &mut images,
                &mut labels,
                model.device(),
            )?;
            let logits = model.forward_t(&x, true)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            let loss_value = loss.to_scalar::<f32>()?;
            if !loss_value.is_finite() {
                return Err(TrainError::Diverged {
                    loss: loss_value,
                    epoch,
                    step,
                });
            }
            self.optimizer.step(&loss.backward()?)?;
            loss_sum += loss_value as f64 * indices.len() as f64;
            on_step(StepProgress {
                epoch,
                step,
                steps_per_epoch: steps,
                loss: loss_value,
            });
        }
        let seconds = start.elapsed().as_secs_f64();
        Ok(EpochReport {
            epoch,
            train_loss: loss_sum / data.len() as f64,
            images: data.len(),
            seconds,
            images_per_second: data.len() as f64 / seconds.max(1e-9),
        })
    }
}

/// Calls `visit` with every batch of `data` in order (at most `batch_size` images, no
/// augmentation): its indices, images and labels as tensors on the model's device.
fn for_each_batch(
    model: &Model,
    data: &Dataset,
    norm: &Normalization,
    batch_size: usize,
    mut visit: impl FnMut(&[usize], Tensor, Tensor) -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    check_channels(model, data)?;
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let all: Vec<usize> = (0..data.len()).collect();
    for indices in all.chunks(batch_size.max(1)) {
        let (x, y) = batch_tensors(
            data,
            indices,
            norm,
            None,
            &mut images,
            &mut labels,
            model.device(),
        )?;
        visit(indices, x, y)?;
    }
    Ok(())
}

/// Accuracy and summed cross-entropy of `model` on `data`, with running batch-norm statistics.
pub fn evaluate(
    model: &Model,
    data: &Dataset,
    norm: &Normalization,
    batch_size: usize,
) -> Result<EvalReport, TrainError> {
    let mut report = EvalReport {
        samples: 0,
        correct: 0,
        loss_sum: 0.0,
    };
    for_each_batch(model, data, norm, batch_size, |indices, x, y| {
        let logits = model.forward_t(&x, false)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?.to_scalar::<f32>()?;
        let predicted = logits.argmax(D::Minus1)?;
        let correct = predicted
            .eq(&y)?
            .to_dtype(candle_core::DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()?;
        report.samples += indices.len();
        report.correct += correct as usize;
        report.loss_sum += loss as f64 * indices.len() as f64;
        Ok(())
    })?;
    Ok(report)
}

/// Batch-norm running statistics re-estimated from `data`: a training-mode forward pass over
/// every image in batches of `batch_size` moves each layer's running mean and variance toward
/// the batch statistics (momentum 0.1 per batch); nothing else changes. For models whose
/// running statistics never left the workers (`bn_stats = local`), before the coordinator
/// evaluates them: 40 batches leave 0.9^40 ≈ 1.5% of the initial statistics.
pub fn recalibrate_batch_norm(
    model: &Model,
    data: &Dataset,
    norm: &Normalization,
    batch_size: usize,
) -> Result<(), TrainError> {
    for_each_batch(model, data, norm, batch_size, |_, x, _| {
        model.forward_t(&x, true)?;
        Ok(())
    })
}

/// Logits of the whole data set (for comparing two models on the same images).
pub fn logits(
    model: &Model,
    data: &Dataset,
    norm: &Normalization,
    batch_size: usize,
) -> Result<Tensor, TrainError> {
    let mut out = Vec::new();
    for_each_batch(model, data, norm, batch_size, |_, x, _| {
        out.push(model.forward_t(&x, false)?);
        Ok(())
    })?;
    Ok(Tensor::cat(&out, 0)?)
}
