//! The job flags `fedcsg local` and `fedcsg submit` share, and the one place they become a
//! fedcsg.v1 `JobSpec`.

use clap::Args;
use fedcsg_ml::data::DataSource;
use fedcsg_wire::convert::encoding_to_proto;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::{TensorEncoding, TopK};

#[derive(Args, Clone)]
pub struct JobArgs {
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// resnet20/32/44/56/110 or densenetDEPTHkGROWTH.
    #[arg(long, default_value = "resnet20")]
    pub model: String,
    /// none | S-C (e.g. 12-72) | seeded:S-C.
    #[arg(long, default_value = "12-72")]
    pub csg: String,
    /// Data set the workers train on (bundled | fashion-mnist | ...:PATH): sets the model's input
    /// channels and classes.
    #[arg(long, default_value = "bundled")]
    pub data: String,
    #[arg(long, default_value_t = 1)]
    pub local_epochs: u32,
    #[arg(long, default_value_t = 32)]
    pub batch: u32,
    /// Local learning rate (the base of --lr-schedule).
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// The learning rate across rounds: constant | step:EVERY:GAMMA | cosine | cosine:FLOOR.
    #[arg(long, default_value = "constant")]
    pub lr_schedule: String,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Samples per worker per round (0 = the whole partition).
    #[arg(long, default_value_t = 0)]
    pub max_samples: u64,
    /// Fraction of free workers sampled per round.
    #[arg(long, default_value_t = 1.0)]
    pub fraction: f64,
    /// A round starts with at least this many free workers. Default: every worker for `local`,
    /// 1 for `submit`.
    #[arg(long)]
    pub min_workers: Option<u32>,
    /// The updates a round needs to close at its deadline, 1..=min-workers (default:
    /// min-workers).
    #[arg(long)]
    pub quorum: Option<u32>,
    /// Retries of one round (quorum missed by the deadline, or not aggregated or committed)
    /// before the job fails.
    #[arg(long, default_value_t = 5)]
    pub max_round_retries: u32,
    /// Round deadline in seconds.
    #[arg(long, default_value_t = 1800)]
    pub deadline: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// averaged | local: whether batch-norm running statistics are averaged.
    #[arg(long, default_value = "averaged")]
    pub bn_stats: String,
    /// Also evaluate each round's model on the workers' own test partitions.
    #[arg(long)]
    pub federated_eval: bool,
    /// Encoding of the workers' updates (deltas from the global model): f32 | f16 | bf16 | int8
    /// (int8: one scale per 256 values, stochastic rounding).
    #[arg(long, default_value = "f32")]
    pub upload_encoding: TensorEncoding,
    /// Encoding of the global model sent to the workers: f32 | f16 | bf16 | int8. Evaluation and
    /// export always use the exact f32 model.
    #[arg(long, default_value = "f32")]
    pub download_encoding: TensorEncoding,
    /// Top-k sparsification of updates: the fraction of each tensor's values sent, in (0, 1]
    /// (0 = dense).
    #[arg(long, default_value_t = 0.0)]
    pub topk: f64,
    /// Turn off the workers' error feedback (on by default when uploads are lossy).
    #[arg(long)]
    pub no_error_feedback: bool,
    /// Aggregation strategy: fedavg | fedavgm | fedadam | fedyogi | fedadagrad | fedprox |
    /// median | trimmed-mean | krum (README: "Aggregation strategies").
    #[arg(long, default_value = "fedavg")]
    pub strategy: String,
    /// Server learning rate η (fedavgm, fedadam, fedyogi, fedadagrad); default per strategy.
    #[arg(long)]
    pub server_lr: Option<f64>,
    /// Server momentum β (fedavgm; default 0.9).
    #[arg(long)]
    pub server_momentum: Option<f64>,
    /// First-moment decay β1 (fedadam, fedyogi: 0.9; fedadagrad: 0).
    #[arg(long)]
    pub beta1: Option<f64>,
    /// Second-moment decay β2 (fedadam, fedyogi; default 0.99).
    #[arg(long)]
    pub beta2: Option<f64>,
    /// Adaptivity τ (fedadam, fedyogi, fedadagrad; default 1e-3).
    #[arg(long)]
    pub tau: Option<f64>,
    /// Proximal coefficient μ (fedprox; default 0.01).
    #[arg(long)]
    pub proximal_mu: Option<f64>,
    /// Fraction trimmed from each end (trimmed-mean; default 0.2).
    #[arg(long)]
    pub trim_fraction: Option<f64>,
    /// Hostile participants tolerated, f (krum; default 1; rounds need 2f + 3 participants).
    #[arg(long)]
    pub krum_f: Option<u32>,
    /// Updates averaged after scoring, m (krum; default 1 = Krum, more = Multi-Krum).
    #[arg(long)]
    pub krum_m: Option<u32>,
    /// Clip each update's delta to this L2 norm on the coordinator (the initial bound with
    /// --clip-quantile).
    #[arg(long)]
    pub clip_norm: Option<f64>,
    /// Adaptive clipping: the bound follows this quantile of the updates' norms (needs
    /// --clip-norm as the starting bound).
    #[arg(long, requires = "clip_norm")]
    pub clip_quantile: Option<f64>,
    /// Adaptive clipping's learning rate (default 0.2).
    #[arg(long, requires = "clip_quantile")]
    pub clip_lr: Option<f64>,
    /// The most of a round's FedAvg weight one update may hold, in (0, 1].
    #[arg(long)]
    pub max_weight_share: Option<f64>,
    /// Differential privacy: central (the coordinator clips, averages with equal weights and
    /// noises) or local (each worker clips and noises its update). Needs --bn-stats local,
    /// --dp-clip-norm and --dp-noise-multiplier or --dp-epsilon (README: "Differential privacy").
    #[arg(long, value_parser = ["central", "local"])]
    pub dp: Option<String>,
    /// z: the noise's standard deviation over the clipping bound.
    #[arg(long, requires = "dp", conflicts_with = "dp_epsilon")]
    pub dp_noise_multiplier: Option<f64>,
    /// Calibrate z so that ε after --rounds rounds is at most this (sampling rate --fraction
    /// for central DP, 1 for local), and stop the job before a round would pass it.
    #[arg(long, requires = "dp")]
    pub dp_epsilon: Option<f64>,
    /// C: each update's L2 bound (the first round's with --dp-clip-quantile).
    #[arg(long, requires = "dp")]
    pub dp_clip_norm: Option<f64>,
    /// Central DP: the bound follows this quantile of the updates' norms (Andrew et al. 2021).
    #[arg(long, requires = "dp")]
    pub dp_clip_quantile: Option<f64>,
    /// δ of the reported (ε, δ).
    #[arg(long, requires = "dp", default_value_t = 1e-5)]
    pub dp_delta: f64,
}

impl JobArgs {
    /// The job spec named `name`, with `default_min_workers` when `--min-workers` is not given.
    pub fn spec(&self, name: &str, default_min_workers: u32) -> anyhow::Result<pb::JobSpec> {
        let source: DataSource = self.data.parse()?;
        if self.topk != 0.0 {
            TopK::new(self.topk).map_err(|e| anyhow::anyhow!("--topk: {e}"))?;
        }
        let (channels, _, _) = source.image_shape();
        Ok(pb::JobSpec {
            name: name.to_string(),
            model: Some(pb::ModelSpec {
                architecture: self.model.clone(),
                csg: self.csg.clone(),
                in_channels: channels as u32,
                num_classes: source.num_classes() as u32,
            }),
            training: Some(pb::TrainingConfig {
                local_epochs: self.local_epochs,
                batch_size: self.batch,
                learning_rate: self.lr,
                momentum: self.momentum,
                weight_decay: self.weight_decay,
                max_samples_per_round: self.max_samples,
            }),
            strategy: self.strategy.clone(),
            rounds: self.rounds,
            fraction: self.fraction,
            min_workers: self.min_workers.unwrap_or(default_min_workers),
            round_deadline_seconds: self.deadline,
            seed: self.seed,
            bn_stats: self.bn_stats.clone(),
            federated_evaluation: self.federated_eval,
            upload_encoding: encoding_to_proto(self.upload_encoding) as i32,
            download_encoding: encoding_to_proto(self.download_encoding) as i32,
            upload_topk: self.topk,
            disable_error_feedback: self.no_error_feedback,
            strategy_params: Some(pb::StrategyParams {
                server_learning_rate: self.server_lr,
                server_momentum: self.server_momentum,
                beta1: self.beta1,
                beta2: self.beta2,
                tau: self.tau,
                proximal_mu: self.proximal_mu,
                trim_fraction: self.trim_fraction,
                krum_byzantine: self.krum_f,
                krum_selected: self.krum_m,
            }),
            clipping: self.clip_norm.map(|norm| pb::UpdateClipping {
                norm,
                target_quantile: self.clip_quantile,
                learning_rate: self.clip_lr,
            }),
            max_weight_share: self.max_weight_share,
            lr_schedule: self.lr_schedule.clone(),
            quorum: self.quorum,
            max_round_retries: Some(self.max_round_retries),
            privacy: self.privacy()?,
        })
    }

    /// The job's differential privacy from the --dp flags (`None` without --dp).
    pub fn privacy(&self) -> anyhow::Result<Option<pb::DifferentialPrivacy>> {
        let Some(mode) = &self.dp else {
            return Ok(None);
        };
        let clip_norm = self
            .dp_clip_norm
            .ok_or_else(|| anyhow::anyhow!("--dp needs --dp-clip-norm (the L2 bound C)"))?;
        let noise_multiplier = match (self.dp_noise_multiplier, self.dp_epsilon) {
            (Some(z), None) => z,
            (None, Some(epsilon)) => {
                let rate = if mode == "local" { 1.0 } else { self.fraction };
                fedcsg_core::privacy::accountant::noise_multiplier_for(
                    epsilon,
                    self.dp_delta,
                    rate,
                    u64::from(self.rounds),
                )
                .map_err(|e| anyhow::anyhow!("--dp-epsilon {epsilon}: {e}"))?
            }
            _ => anyhow::bail!("--dp needs --dp-noise-multiplier or --dp-epsilon"),
        };
        Ok(Some(pb::DifferentialPrivacy {
            mode: mode.clone(),
            noise_multiplier,
            clip_norm,
            target_quantile: self.dp_clip_quantile,
            delta: Some(self.dp_delta),
            target_epsilon: self.dp_epsilon,
        }))
    }

    /// How the job compresses, for the lines the commands print.
    pub fn exchange_description(&self) -> String {
        let topk = if self.topk == 0.0 {
            String::new()
        } else {
            format!(" top-{}", self.topk)
        };
        let feedback = if self.no_error_feedback
            || self.upload_encoding == TensorEncoding::F32 && self.topk == 0.0
        {
            ""
        } else {
            " + error feedback"
        };
        format!(
            "uploads {} deltas{topk}{feedback}, downloads {}",
            self.upload_encoding, self.download_encoding
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The job flags alone, as `local` and `submit` flatten them.
    #[derive(Parser)]
    struct JobFlags {
        #[command(flatten)]
        job: JobArgs,
    }

    fn submit_job_args(args: &[&str]) -> JobArgs {
        match JobFlags::try_parse_from([&["fedcsg"], args].concat()) {
            Ok(flags) => flags.job,
            Err(e) => panic!("{e}"),
        }
    }

    /// --dp-epsilon calibrates z so that ε after --rounds rounds at sampling rate --fraction is
    /// just within the target, and sets the target; the flags it needs are named when missing.
    #[test]
    fn dp_flags_become_the_privacy_spec() {
        let args = submit_job_args(&[
            "--dp",
            "central",
            "--dp-epsilon",
            "8",
            "--dp-clip-norm",
            "0.5",
            "--rounds",
            "10",
        ]);
        let p = args.privacy().unwrap().expect("privacy");
        assert_eq!(
            (p.mode.as_str(), p.clip_norm, p.target_epsilon),
            ("central", 0.5, Some(8.0))
        );
        let epsilon = |z: f64| {
            let mut a = fedcsg_core::privacy::RdpAccountant::new();
            a.step(z, 1.0, 10).unwrap();
            a.epsilon(1e-5).unwrap().0
        };
        assert!(epsilon(p.noise_multiplier) <= 8.0);
        assert!(epsilon(0.99 * p.noise_multiplier) > 8.0);
        let fixed = submit_job_args(&[
            "--dp",
            "local",
            "--dp-noise-multiplier",
            "1.5",
            "--dp-clip-norm",
            "1",
        ]);
        let p = fixed.privacy().unwrap().unwrap();
        assert_eq!(
            (p.mode.as_str(), p.noise_multiplier, p.target_epsilon),
            ("local", 1.5, None)
        );
        let err = submit_job_args(&["--dp", "central", "--dp-noise-multiplier", "1"])
            .privacy()
            .unwrap_err();
        assert!(err.to_string().contains("--dp-clip-norm"), "{err}");
        let err = submit_job_args(&["--dp", "central", "--dp-clip-norm", "1"])
            .privacy()
            .unwrap_err();
        assert!(err.to_string().contains("--dp-epsilon"), "{err}");
        assert!(submit_job_args(&[]).privacy().unwrap().is_none());
    }

    /// The defaults become the documented JobSpec: FedAvg, 5 rounds, SGD 0.05 / 0.9 / 5e-4, batch
    /// 32, and the bundled data's shape (1 channel, 10 classes).
    #[test]
    fn defaults_become_the_documented_job_spec() {
        let spec = submit_job_args(&[]).spec("nightly", 3).unwrap();
        assert_eq!(spec.name, "nightly");
        assert_eq!(spec.strategy, "fedavg");
        assert_eq!((spec.rounds, spec.min_workers, spec.fraction), (5, 3, 1.0));
        let model = spec.model.expect("model");
        assert_eq!(
            (
                model.architecture.as_str(),
                model.csg.as_str(),
                model.in_channels,
                model.num_classes
            ),
            ("resnet20", "12-72", 1, 10)
        );
        let t = spec.training.expect("training");
        assert_eq!(
            (t.local_epochs, t.batch_size, t.max_samples_per_round),
            (1, 32, 0)
        );
        assert_eq!(
            (t.learning_rate, t.momentum, t.weight_decay),
            (0.05, 0.9, 5e-4)
        );
        assert_eq!(spec.bn_stats, "averaged");
        assert!(!spec.federated_evaluation);
    }

    #[test]
    fn flags_override_and_min_workers_beats_the_default() {
        let spec = submit_job_args(&[
            "--min-workers",
            "2",
            "--rounds",
            "9",
            "--lr",
            "0.1",
            "--bn-stats",
            "local",
            "--seed",
            "7",
            "--model",
            "resnet32",
            "--csg",
            "seeded:12-72",
        ])
        .spec("x", 4)
        .unwrap();
        assert_eq!((spec.min_workers, spec.rounds, spec.seed), (2, 9, 7));
        assert_eq!(spec.training.unwrap().learning_rate, 0.1);
        assert_eq!(spec.bn_stats, "local");
        let model = spec.model.unwrap();
        assert_eq!(
            (model.architecture.as_str(), model.csg.as_str()),
            ("resnet32", "seeded:12-72")
        );
    }

    #[test]
    fn an_unknown_data_set_is_an_error_that_names_it() {
        let err = submit_job_args(&["--data", "imagenet"])
            .spec("x", 1)
            .unwrap_err();
        assert!(format!("{err:#}").contains("imagenet"), "{err:#}");
    }

    /// The compression flags reach the job spec; the defaults are the exact f32 exchange.
    #[test]
    fn compression_flags_reach_the_spec() {
        let spec = submit_job_args(&[]).spec("j", 1).unwrap();
        assert_eq!(
            (
                spec.upload_encoding,
                spec.download_encoding,
                spec.upload_topk
            ),
            (pb::Encoding::F32 as i32, pb::Encoding::F32 as i32, 0.0)
        );
        assert!(!spec.disable_error_feedback);
        let args = submit_job_args(&[
            "--upload-encoding",
            "int8",
            "--download-encoding",
            "f16",
            "--topk",
            "0.1",
            "--no-error-feedback",
        ]);
        let spec = args.spec("j", 1).unwrap();
        assert_eq!(
            (
                spec.upload_encoding,
                spec.download_encoding,
                spec.upload_topk
            ),
            (
                pb::Encoding::Int8Scaled as i32,
                pb::Encoding::F16 as i32,
                0.1
            )
        );
        assert!(spec.disable_error_feedback);
        assert_eq!(
            args.exchange_description(),
            "uploads int8 deltas top-0.1, downloads f16"
        );
    }

    /// The strategy flags reach the spec; unset parameters stay unset (the coordinator applies
    /// the strategy's defaults), clipping only with a bound.
    #[test]
    fn strategy_flags_reach_the_spec() {
        let spec = submit_job_args(&[]).spec("j", 1).unwrap();
        assert_eq!(spec.strategy_params, Some(pb::StrategyParams::default()));
        assert_eq!((spec.clipping, spec.max_weight_share), (None, None));
        let spec = submit_job_args(&[
            "--strategy",
            "fedadam",
            "--server-lr",
            "0.03",
            "--tau",
            "0.01",
            "--clip-norm",
            "2.5",
            "--clip-quantile",
            "0.5",
            "--max-weight-share",
            "0.4",
        ])
        .spec("j", 1)
        .unwrap();
        assert_eq!(spec.strategy, "fedadam");
        let p = spec.strategy_params.unwrap();
        assert_eq!(
            (p.server_learning_rate, p.tau, p.beta1),
            (Some(0.03), Some(0.01), None)
        );
        let c = spec.clipping.unwrap();
        assert_eq!(
            (c.norm, c.target_quantile, c.learning_rate),
            (2.5, Some(0.5), None)
        );
        assert_eq!(spec.max_weight_share, Some(0.4));
        let e = JobFlags::try_parse_from(["fedcsg", "--clip-quantile", "0.5"])
            .err()
            .expect("a quantile without a bound is refused")
            .to_string();
        assert!(e.contains("--clip-norm"), "{e}");
    }

    /// A misspelt encoding or an impossible fraction is refused with the choices or the range.
    #[test]
    fn bad_compression_flags_are_refused() {
        let e = JobFlags::try_parse_from(["fedcsg", "--upload-encoding", "fp8"])
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("f32, f16, bf16 or int8"), "{e}");
        let e = submit_job_args(&["--topk", "1.5"])
            .spec("j", 1)
            .unwrap_err();
        assert!(e.to_string().contains("--topk"), "{e}");
    }
}
