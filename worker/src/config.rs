//! The worker's flags (each also read from a `FEDCSG_*` environment variable) and the validated
//! [`WorkerConfig`] they become. Defaults live here once; `--help` shows them.

use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, ValueEnum};
use fedcsg_core::secret::Secret;
use fedcsg_ml::data::{DataSource, Partitioning};
use fedcsg_ml::ops::ConvBackend;
use fedcsg_wire::tls::ClientTls;

use crate::tls_args::ClientTlsArgs;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Uri;

use crate::error::WorkerError;

pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7070";
pub const DEFAULT_MAX_RETRY_SECONDS: f64 = 30.0;
/// How long one attempt to open the TCP connection to the coordinator may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_NAME_LEN: usize = 128;
/// Most training threads a worker takes (far more than any machine it would share).
const MAX_THREADS: usize = 1024;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A fedcsg training node: joins a coordinator and trains on one partition of a data set.
#[derive(Debug, Clone, Parser)]
#[command(name = "fedcsg-worker", version, about, long_about = None)]
pub struct WorkerArgs {
    /// Coordinator address: http://HOST:PORT, or https://HOST:PORT with --ca-cert.
    #[arg(long, env = "FEDCSG_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,

    /// Name shown in the coordinator's worker list [default: HOSTNAME-PID, or worker-PARTITION_ID].
    #[arg(long, env = "FEDCSG_NAME")]
    pub name: Option<String>,

    /// Data set: bundled | fashion-mnist | fashion-mnist:PATH | mnist:PATH | cifar10:PATH.
    #[arg(long, env = "FEDCSG_DATA", default_value = "bundled")]
    pub data: String,

    /// How the data set is split across workers: iid | dirichlet:ALPHA | shards | shards:K.
    #[arg(long, env = "FEDCSG_PARTITION", default_value = "iid")]
    pub partition: String,

    /// Number of partitions the data set is split into (usually the number of workers).
    #[arg(long, env = "FEDCSG_NUM_PARTITIONS", default_value_t = 1)]
    pub num_partitions: usize,

    /// Which partition this worker trains on, 0..NUM_PARTITIONS.
    #[arg(long, env = "FEDCSG_PARTITION_ID", default_value_t = 0)]
    pub partition_id: usize,

    /// Seed of the partitioning; every worker of a federation must use the same one.
    #[arg(long, env = "FEDCSG_SEED", default_value_t = 0)]
    pub seed: u64,

    /// Enrollment token, sent as `authorization: Bearer TOKEN` when joining.
    #[arg(long, env = "FEDCSG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Log format (the level comes from RUST_LOG, default info).
    #[arg(long, env = "FEDCSG_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Longest wait between two reconnect attempts, in seconds.
    #[arg(long, env = "FEDCSG_MAX_RETRY_SECONDS", default_value_t = DEFAULT_MAX_RETRY_SECONDS)]
    pub max_retry_seconds: f64,

    /// Convolution kernels: fast (im2col + gemm) or reference (candle's own).
    #[arg(
        long,
        env = "FEDCSG_CONV",
        default_value = "fast",
        value_parser = PossibleValuesParser::new(["fast", "reference"]).map(|s| conv_backend(&s)),
    )]
    pub conv: ConvBackend,

    /// Threads for local training (the kernels' pool); default: every core. Workers sharing a
    /// machine should split its cores between them (`fedcsg local` does).
    #[arg(long, env = "FEDCSG_THREADS")]
    pub threads: Option<usize>,

    /// Serve Prometheus metrics at http://ADDR/metrics (off by default; plain HTTP without
    /// authentication: bind it to an address only your monitoring reaches).
    #[arg(long, env = "FEDCSG_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

fn conv_backend(name: &str) -> ConvBackend {
    match name {
        "reference" => ConvBackend::Reference,
        _ => ConvBackend::Fast,
    }
}

/// A validated worker configuration. Build it from flags with [`WorkerConfig::from_args`], or in
/// tests with [`WorkerConfig::for_coordinator`] and then change the public fields.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The coordinator's address (scheme http, or https with `tls` set, and a host).
    pub coordinator: Uri,
    /// What verifies an https:// coordinator (and identifies this worker for mutual TLS).
    pub tls: Option<ClientTls>,
    /// The name this worker joins under.
    pub name: String,
    pub data: DataSource,
    pub partitioning: Partitioning,
    pub num_partitions: usize,
    /// Always `< num_partitions`.
    pub partition_id: usize,
    pub partition_seed: u64,
    /// The enrollment token, already checked to be a valid header value.
    pub token: Option<Secret>,
    pub log_format: LogFormat,
    /// Cap of the reconnect backoff.
    pub max_retry: Duration,
    pub connect_timeout: Duration,
    pub conv: ConvBackend,
    /// Threads of the training kernels' pool; `None`: one per core.
    pub threads: Option<usize>,
    /// Where to serve `/metrics`; `None` = nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl WorkerConfig {
    /// Checks every flag and fills in the derived defaults (the name).
    pub fn from_args(args: WorkerArgs) -> Result<Self, WorkerError> {
        let coordinator = parse_coordinator(&args.coordinator)?;
        let tls = args
            .tls
            .resolve(coordinator.scheme_str() == Some("https"))
            .map_err(|e| config_err(e.flag, e.why))?;
        let data: DataSource = args
            .data
            .parse()
            .map_err(|e: fedcsg_ml::data::DataError| config_err("--data", e.to_string()))?;
        let partitioning: Partitioning = args
            .partition
            .parse()
            .map_err(|e: fedcsg_ml::data::DataError| config_err("--partition", e.to_string()))?;
        if args.num_partitions == 0 {
            return Err(config_err("--num-partitions", "must be at least 1".into()));
        }
        if args.partition_id >= args.num_partitions {
            return Err(config_err(
                "--partition-id",
                format!(
                    "{} is out of range for --num-partitions {} (use 0..={})",
                    args.partition_id,
                    args.num_partitions,
                    args.num_partitions - 1
                ),
            ));
        }
        let name = match args.name {
            Some(name) => validate_name(name)?,
            None => default_name(args.partition_id),
        };
        let token = match args.token {
            Some(t) if t.is_empty() => None,
            Some(t) => {
                bearer(&t).map_err(|why| config_err("--token", why))?;
                Some(Secret::from(t))
            }
            None => None,
        };
        let max = args.max_retry_seconds;
        if !(max.is_finite() && max > 0.0 && max <= 3600.0) {
            return Err(config_err(
                "--max-retry-seconds",
                format!("{max} is not in (0, 3600]"),
            ));
        }
        if let Some(threads) = args.threads
            && !(1..=MAX_THREADS).contains(&threads)
        {
            return Err(config_err(
                "--threads",
                format!("{threads} is not in 1..={MAX_THREADS}"),
            ));
        }
        Ok(Self {
            coordinator,
            tls,
            name,
            data,
            partitioning,
            num_partitions: args.num_partitions,
            partition_id: args.partition_id,
            partition_seed: args.seed,
            token,
            log_format: args.log_format,
            max_retry: Duration::from_secs_f64(max),
            connect_timeout: CONNECT_TIMEOUT,
            conv: args.conv,
            threads: args.threads,
            metrics_listen: args.metrics_listen,
        })
    }

    /// The defaults of every flag, with `coordinator` as the address.
    pub fn for_coordinator(coordinator: &str) -> Result<Self, WorkerError> {
        let args = WorkerArgs::try_parse_from(["fedcsg-worker", "--coordinator", coordinator])
            .map_err(|e| config_err("--coordinator", e.to_string()))?;
        Self::from_args(args)
    }
}

fn config_err(flag: &'static str, why: String) -> WorkerError {
    WorkerError::Config { flag, why }
}

/// The `authorization` header value for `token`.
pub(crate) fn bearer(token: &str) -> Result<AsciiMetadataValue, String> {
    const WHY: &str = "a token must be printable ASCII without spaces";
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(WHY.into());
    }
    MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| WHY.into())
}

fn parse_coordinator(text: &str) -> Result<Uri, WorkerError> {
    let bad = |why: String| config_err("--coordinator", format!("{text:?}: {why}"));
    let uri: Uri = text
        .trim()
        .parse()
        .map_err(|e| bad(format!("not a URL ({e}); use http://HOST:PORT")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(bad(format!(
                "scheme {other:?} is not supported; use http://HOST:PORT or https://HOST:PORT"
            )));
        }
        None => return Err(bad("missing scheme; use http://HOST:PORT".into())),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("missing host; use http://HOST:PORT".into()));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad(
            "a coordinator address has no path or query; use http://HOST:PORT".into(),
        ));
    }
    Ok(uri)
}

fn validate_name(name: String) -> Result<String, WorkerError> {
    let name = name.trim().to_string();
    if name.is_empty() {
        return Err(config_err("--name", "must not be empty".into()));
    }
    if name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(config_err(
            "--name",
            format!("must be at most {MAX_NAME_LEN} bytes without control characters"),
        ));
    }
    Ok(name)
}

/// `HOSTNAME-PID` when the host name is known: unique among workers sharing a host.
fn default_name(partition_id: usize) -> String {
    match hostname() {
        Some(host) => format!("{host}-{}", std::process::id()),
        None => format!("worker-{partition_id}"),
    }
}

fn hostname() -> Option<String> {
    let from_file = |p: &str| std::fs::read_to_string(p).ok();
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| from_file("/proc/sys/kernel/hostname"))
        .or_else(|| from_file("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 64
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(flags: &[&str]) -> Result<WorkerConfig, WorkerError> {
        let args = WorkerArgs::try_parse_from(
            std::iter::once("fedcsg-worker").chain(flags.iter().copied()),
        )
        .map_err(|e| config_err("flags", e.to_string()))?;
        WorkerConfig::from_args(args)
    }

    fn err(flags: &[&str]) -> String {
        config(flags).unwrap_err().to_string()
    }

    /// Without flags the worker joins the local coordinator with the bundled data as one partition.
    #[test]
    fn defaults_are_valid() {
        let c = config(&[]).unwrap();
        assert_eq!(c.coordinator.to_string(), "http://127.0.0.1:7070/");
        assert_eq!(c.data, DataSource::Bundled);
        assert_eq!(c.partitioning, Partitioning::Iid);
        assert_eq!(
            (c.num_partitions, c.partition_id, c.partition_seed),
            (1, 0, 0)
        );
        assert_eq!(c.max_retry, Duration::from_secs(30));
        assert_eq!(c.conv, ConvBackend::Fast);
        assert!(!c.name.is_empty());
    }

    /// Every documented spelling is taken and lands in the right field.
    #[test]
    fn flags_are_parsed_into_domain_types() {
        let c = config(&[
            "--coordinator",
            "http://coord.example:9000",
            "--name",
            "w7",
            "--partition",
            "dirichlet:0.5",
            "--num-partitions",
            "4",
            "--partition-id",
            "3",
            "--seed",
            "9",
            "--token",
            "s3cret",
            "--max-retry-seconds",
            "0.5",
            "--conv",
            "reference",
            "--log-format",
            "json",
            "--data",
            "mnist:/d",
        ])
        .unwrap();
        assert_eq!(c.coordinator.host(), Some("coord.example"));
        assert_eq!(c.coordinator.port_u16(), Some(9000));
        assert_eq!(c.name, "w7");
        assert_eq!(c.partitioning, Partitioning::Dirichlet { alpha: 0.5 });
        assert_eq!(
            (c.num_partitions, c.partition_id, c.partition_seed),
            (4, 3, 9)
        );
        assert_eq!(c.token.as_ref().map(Secret::expose), Some("s3cret"));
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "the token shows in Debug output"
        );
        assert_eq!(c.max_retry, Duration::from_millis(500));
        assert_eq!(c.conv, ConvBackend::Reference);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.data, DataSource::Mnist("/d".into()));
        assert_eq!(
            config(&["--partition", "shards:3"]).unwrap().partitioning,
            Partitioning::Shards { per_partition: 3 }
        );
    }

    /// A partition id must name one of the partitions.
    #[test]
    fn training_threads_default_to_every_core_and_are_checked() {
        assert_eq!(config(&[]).unwrap().threads, None);
        assert_eq!(config(&["--threads", "3"]).unwrap().threads, Some(3));
        for bad in ["0", "1025"] {
            let e = err(&["--threads", bad]);
            assert!(e.contains("--threads") && e.contains("1..=1024"), "{e}");
        }
    }

    #[test]
    fn partition_id_out_of_range_is_refused() {
        let e = err(&["--num-partitions", "3", "--partition-id", "3"]);
        assert!(e.contains("--partition-id") && e.contains("0..=2"), "{e}");
        assert!(err(&["--num-partitions", "0"]).contains("--num-partitions"));
    }

    /// Misspelled partitioning schemes and data sets are refused with the flag named.
    #[test]
    fn bad_partition_and_data_spellings_are_refused() {
        for bad in [
            "random",
            "dirichlet",
            "dirichlet:x",
            "dirichlet:-1",
            "shards:0",
            "iid:2",
        ] {
            let e = err(&["--partition", bad]);
            assert!(e.starts_with("invalid --partition"), "{bad}: {e}");
        }
        let e = err(&["--data", "fmnist"]);
        assert!(
            e.starts_with("invalid --data") && e.contains("valid: bundled"),
            "{e}"
        );
    }

    /// Only http://HOST[:PORT] addresses are taken; everything else says what to write instead.
    #[test]
    fn coordinator_urls_are_checked() {
        assert_eq!(
            config(&["--coordinator", "http://[::1]:7070"])
                .unwrap()
                .coordinator
                .port_u16(),
            Some(7070)
        );
        for (bad, why) in [
            ("localhost:7070", "missing scheme"),
            ("ftp://c:7070", "scheme"),
            ("http://c:7070/api", "no path"),
            ("http://", "not a URL"),
            ("not a url", "not a URL"),
        ] {
            let e = err(&["--coordinator", bad]);
            assert!(
                e.starts_with("invalid --coordinator") && e.contains(why),
                "{bad}: {e}"
            );
        }
    }

    /// An https:// coordinator needs the CA to verify it; TLS flags need an https:// URL.
    #[test]
    fn tls_flags_follow_the_scheme() {
        assert!(err(&["--coordinator", "https://c:7070"]).starts_with("invalid --ca-cert"));
        assert!(
            err(&[
                "--coordinator",
                "http://c:7070",
                "--ca-cert",
                "/nonexistent.pem"
            ])
            .contains("https://")
        );
        assert!(
            err(&[
                "--coordinator",
                "https://c:7070",
                "--ca-cert",
                "/nonexistent.pem"
            ])
            .contains("cannot read")
        );
        assert!(config(&[]).unwrap().tls.is_none());
    }

    /// Values that cannot become a header or a sane delay are refused; an empty token means none.
    #[test]
    fn token_name_and_retry_cap_are_checked() {
        assert!(err(&["--token", "a b"]).contains("--token"));
        assert!(err(&["--token", "tök"]).contains("--token"));
        assert!(config(&["--token", ""]).unwrap().token.is_none());
        assert!(err(&["--name", " "]).contains("--name"));
        assert!(err(&["--max-retry-seconds", "0"]).contains("--max-retry-seconds"));
        assert!(err(&["--max-retry-seconds", "NaN"]).contains("--max-retry-seconds"));
        assert!(err(&["--conv", "slow"]).contains("possible values: fast, reference"));
    }
}
