//! `fedcsg train`: centralised training on one machine, printing per-epoch train loss, test
//! accuracy and images/s (with a progress bar on a terminal), optionally a JSON record.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use fedcsg_ml::data::{Augmentation, DataSource};
use fedcsg_ml::model::{BnStatsPolicy, Model, ModelSpec};
use fedcsg_ml::ops::ConvBackend;
use fedcsg_ml::optim::{LrSchedule, OptimizerConfig};
use fedcsg_ml::train::{self, TrainSettings, Trainer, steps_per_epoch};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub struct TrainArgs {
    #[arg(long, default_value = "resnet20")]
    model: String,
    /// none | S-C (e.g. 12-72) | seeded:S-C.
    #[arg(long, default_value = "12-72")]
    csg: String,
    /// bundled | fashion-mnist | fashion-mnist:PATH | mnist:PATH | cifar10:PATH.
    #[arg(long, default_value = "bundled")]
    data: String,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Train on a seeded random subset of this many training images.
    #[arg(long)]
    limit: Option<usize>,
    /// Evaluate on at most this many test images (default: all).
    #[arg(long)]
    test_limit: Option<usize>,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// sgd | adamw.
    #[arg(long, default_value = "sgd")]
    optimizer: String,
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    /// warmup-cosine | constant | step (x0.1 every epoch).
    #[arg(long, default_value = "warmup-cosine")]
    schedule: String,
    /// Linear warm-up steps for warmup-cosine.
    #[arg(long, default_value_t = 30)]
    warmup: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// fast | reference convolution kernels.
    #[arg(long, default_value = "fast")]
    conv: String,
    /// Write a JSON record of the run here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Save the trained model (safetensors).
    #[arg(long)]
    save: Option<PathBuf>,
    /// Save the materialised full-filter model (safetensors).
    #[arg(long)]
    export_materialised: Option<PathBuf>,
}

pub fn conv_backend(name: &str) -> anyhow::Result<ConvBackend> {
    match name {
        "fast" => Ok(ConvBackend::Fast),
        "reference" => Ok(ConvBackend::Reference),
        other => anyhow::bail!("--conv {other:?}: use fast or reference"),
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let source: DataSource = args.data.parse()?;
    let data = source.load()?;
    let train_set = match args.limit {
        Some(n) => data.train.seeded_subset(n, args.seed),
        None => data.train,
    };
    let test_set = match args.test_limit {
        Some(n) => data.test.seeded_subset(n, args.seed),
        None => data.test,
    };
    let (c, _, _) = train_set.image_shape();
    let spec = ModelSpec::new(
        args.model.parse()?,
        args.csg.parse()?,
        c,
        train_set.num_classes(),
    );
    let backend = conv_backend(&args.conv)?;
    let model = Model::new(&spec, args.seed, backend)?;
    let inv = model.inventory(BnStatsPolicy::Averaged);
    let steps = steps_per_epoch(train_set.len(), args.batch) * args.epochs;
    let schedule = match args.schedule.as_str() {
        "warmup-cosine" => LrSchedule::WarmupCosine {
            warmup: args.warmup,
            total: steps,
        },
        "constant" => LrSchedule::Constant,
        "step" => LrSchedule::Step {
            every: steps_per_epoch(train_set.len(), args.batch),
            gamma: 0.1,
        },
        other => anyhow::bail!("--schedule {other:?}: use warmup-cosine, constant or step"),
    };
    let optimizer = match args.optimizer.as_str() {
        "sgd" => OptimizerConfig::sgd(args.lr, args.momentum, args.weight_decay),
        "adamw" => OptimizerConfig::adamw(args.lr, args.weight_decay),
        other => anyhow::bail!("--optimizer {other:?}: use sgd or adamw"),
    };
    let augmentation = source.default_augmentation();
    println!(
        "{spec}: {} trainable parameters, {} train / {} test images ({}), {} epochs, batch {}, {} steps",
        inv.trainable_count(),
        train_set.len(),
        test_set.len(),
        source,
        args.epochs,
        args.batch,
        steps
    );
    let norm = source.normalization();
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} steps {msg} [{elapsed} < {eta}]",
    )?);
    let started = Instant::now();
    let mut epochs_json = Vec::new();
    let settings = TrainSettings {
        epochs: args.epochs,
        batch_size: args.batch,
        optimizer,
        schedule,
        augmentation: if augmentation.is_identity() {
            Augmentation::none()
        } else {
            augmentation
        },
        seed: args.seed,
        proximal_mu: 0.0,
    };
    let mut trainer = Trainer::new(&model, &settings)?;
    for epoch in 0..args.epochs {
        let r = trainer.epoch(
            &model,
            &train_set,
            &norm,
            epoch,
            &mut |p| {
                bar.inc(1);
                bar.set_message(format!("loss {:.4}", p.loss));
            },
            &|| false,
        )?;
        let eval_start = Instant::now();
        let eval = train::evaluate(&model, &test_set, &norm, 256)?;
        let eval_ips = test_set.len() as f64 / eval_start.elapsed().as_secs_f64();
        crate::remote::print_line(
            &bar,
            format!(
                "epoch {}: train loss {:.4}  test accuracy {:.2}%  test loss {:.4}  train {:.1} images/s  eval {:.1} images/s",
                epoch + 1,
                r.train_loss,
                100.0 * eval.accuracy(),
                eval.mean_loss(),
                r.images_per_second,
                eval_ips
            ),
        );
        epochs_json.push(serde_json::json!({
            "epoch": epoch + 1, "train_loss": r.train_loss, "test_accuracy": eval.accuracy(),
            "test_loss": eval.mean_loss(), "train_images_per_second": r.images_per_second,
            "eval_images_per_second": eval_ips, "seconds": r.seconds,
        }));
    }
    bar.finish_and_clear();
    let total = started.elapsed().as_secs_f64();
    println!("done in {total:.1} s");
    if let Some(path) = &args.save {
        model.save(path)?;
        println!("saved {}", path.display());
    }
    if let Some(path) = &args.export_materialised {
        model.materialize(backend)?.save(path)?;
        println!("saved materialised full-filter model {}", path.display());
    }
    if let Some(path) = &args.json {
        let out = serde_json::json!({
            "spec": spec, "data": source.to_string(), "train_images": train_set.len(),
            "test_images": test_set.len(), "epochs": epochs_json, "batch": args.batch,
            "optimizer": optimizer, "schedule": schedule, "seed": args.seed,
            "trainable_parameters": inv.trainable_count(), "seconds": total,
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}
