//! Coordinator configuration: defaults, then a TOML file, then FEDCSG_* environment variables,
//! then flags (later wins), validated once at start into [`CoordinatorConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use fedcsg_core::secret::Secret;
use fedcsg_wire::tls::ServerTls;

use crate::coordinator::CoordinatorSettings;
use crate::coordinator::transfers::TransferLimits;
use crate::error::ServerError;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Long enough for a worker waiting on a task to hear "done" (tasks are long-polled).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Far longer than the 30 s between the coordinator's keepalive pings, which every live client
/// answers.
pub const DEFAULT_IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Generous for an upload on a slow link; the transfer idle timeout catches a stalled one.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(300);

/// Flags (each also readable from its FEDCSG_* variable).
#[derive(Debug, Args, Default)]
pub struct CoordinatorArgs {
    /// TOML file with any of the settings below (flags and environment override it).
    #[arg(long, env = "FEDCSG_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "FEDCSG_LISTEN")]
    pub listen: Option<String>,
    /// Test set for coordinator-side evaluation: bundled | fashion-mnist | ...:PATH | none.
    #[arg(long, env = "FEDCSG_DATA")]
    pub data: Option<String>,
    /// Evaluate on at most this many test images (0 = all).
    #[arg(long, env = "FEDCSG_TEST_LIMIT")]
    pub test_limit: Option<usize>,
    /// Token workers must present at Join.
    #[arg(long, env = "FEDCSG_ENROLLMENT_TOKEN", hide_env_values = true)]
    pub enrollment_token: Option<String>,
    /// Token the operator API requires.
    #[arg(long, env = "FEDCSG_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[arg(long, env = "FEDCSG_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Seconds without a heartbeat after which a worker is dropped.
    #[arg(long, env = "FEDCSG_HEARTBEAT_TIMEOUT_SECS")]
    pub heartbeat_timeout_secs: Option<u64>,
    /// Write the bound address here once listening (for scripts and tests using port 0).
    #[arg(long, env = "FEDCSG_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,
    /// PEM certificate chain of the coordinator: serve TLS (needs --tls-key).
    #[arg(long, env = "FEDCSG_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FEDCSG_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate: require every client to present a certificate it signed (mutual TLS).
    #[arg(long, env = "FEDCSG_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Allow plaintext on a non-loopback address (tokens then cross the network in the clear).
    #[arg(long, env = "FEDCSG_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
    /// Directory for durable state (SQLite database and model files); without it state is
    /// in memory only and lost on restart.
    #[arg(long, env = "FEDCSG_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The most samples a worker may declare at join (default 1,000,000,000); a declared count
    /// bounds the weight of the worker's updates.
    #[arg(long, env = "FEDCSG_MAX_WORKER_SAMPLES")]
    pub max_worker_samples: Option<u64>,
    /// Seconds a gone or departed worker stays in the worker list (and the state store) before
    /// it is forgotten (default 3600).
    #[arg(long, env = "FEDCSG_GONE_WORKER_RETENTION_SECS")]
    pub gone_worker_retention_secs: Option<u64>,
    /// On shutdown, milliseconds the coordinator keeps answering "done" to workers before it
    /// closes its listener (default 3000).
    #[arg(long, env = "FEDCSG_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Milliseconds a model upload or download may go without moving data before it is cut off
    /// and its buffer freed (default 30000).
    #[arg(long, env = "FEDCSG_TRANSFER_IDLE_TIMEOUT_MS")]
    pub transfer_idle_timeout_ms: Option<u64>,
    /// Uploads one worker may have open at once (default 2).
    #[arg(long, env = "FEDCSG_MAX_UPLOADS_PER_WORKER")]
    pub max_uploads_per_worker: Option<usize>,
    /// Model downloads one worker may have open at once (default 2).
    #[arg(long, env = "FEDCSG_MAX_DOWNLOADS_PER_WORKER")]
    pub max_downloads_per_worker: Option<usize>,
    /// MiB of upload data (declared sizes) received and decoded at once over the fleet; an
    /// upload beyond it is refused with RESOURCE_EXHAUSTED and sent again by its worker
    /// (default 64).
    #[arg(long, env = "FEDCSG_MAX_UPLOAD_BUFFER_MIB")]
    pub max_upload_buffer_mib: Option<u64>,
    /// Uploads decoded at once over the fleet (default: the number of cores).
    #[arg(long, env = "FEDCSG_MAX_DECODING_UPLOADS")]
    pub max_decoding_uploads: Option<usize>,
    /// Model downloads sending at once over the fleet; the rest wait (default 128).
    #[arg(long, env = "FEDCSG_MAX_SENDING_DOWNLOADS")]
    pub max_sending_downloads: Option<usize>,
    /// Seconds a connection may send nothing (not even an answer to the coordinator's HTTP/2
    /// keepalive ping, sent every 30 s) before it is closed (default 120).
    #[arg(long, env = "FEDCSG_IDLE_CONNECTION_TIMEOUT_SECS")]
    pub idle_connection_timeout_secs: Option<u64>,
    /// Seconds the coordinator gives one gRPC call to produce its response (an upload: to be
    /// read whole) unless the client asks for less (default 300; at least 61, above the longest
    /// task wait). Streamed responses are bounded by the transfer idle timeout instead.
    #[arg(long, env = "FEDCSG_RPC_TIMEOUT_SECS")]
    pub rpc_timeout_secs: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default). Plain HTTP without
    /// authentication: bind it to an address only your monitoring reaches.
    #[arg(long, env = "FEDCSG_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Serve the live dashboard at http://ADDR/ (off by default; may equal --metrics-listen).
    /// Its data needs the admin token when one is set; plain HTTP, so a non-loopback address
    /// needs --insecure.
    #[arg(long, env = "FEDCSG_DASHBOARD_LISTEN")]
    pub dashboard_listen: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data: Option<String>,
    test_limit: Option<usize>,
    enrollment_token: Option<String>,
    admin_token: Option<String>,
    heartbeat_interval_ms: Option<u64>,
    heartbeat_timeout_secs: Option<u64>,
    addr_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    insecure: Option<bool>,
    state_dir: Option<PathBuf>,
    max_worker_samples: Option<u64>,
    gone_worker_retention_secs: Option<u64>,
    shutdown_grace_ms: Option<u64>,
    transfer_idle_timeout_ms: Option<u64>,
    max_uploads_per_worker: Option<usize>,
    max_downloads_per_worker: Option<usize>,
    max_upload_buffer_mib: Option<u64>,
    max_decoding_uploads: Option<usize>,
    max_sending_downloads: Option<usize>,
    idle_connection_timeout_secs: Option<u64>,
    rpc_timeout_secs: Option<u64>,
    metrics_listen: Option<String>,
    dashboard_listen: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub listen: SocketAddr,
    pub data: Option<fedcsg_ml::data::DataSource>,
    pub test_limit: usize,
    pub enrollment_token: Option<Secret>,
    pub admin_token: Option<Secret>,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub addr_file: Option<PathBuf>,
    /// Serve TLS with this material; `None` is plaintext.
    pub tls: Option<ServerTls>,
    /// Plaintext is allowed on a non-loopback address.
    pub insecure: bool,
    /// Durable state directory; `None` keeps state in memory only.
    pub state_dir: Option<PathBuf>,
    /// The most samples a worker may declare at join.
    pub max_worker_samples: u64,
    /// How long a gone or departed worker is remembered.
    pub gone_worker_retention: Duration,
    /// How long shutdown keeps answering "done" before the listener closes.
    pub shutdown_grace: Duration,
    /// Caps on concurrent transfers and their idle timeout.
    pub transfers: TransferLimits,
    /// A connection that sends nothing for this long is closed.
    pub idle_connection_timeout: Duration,
    /// The longest one gRPC call may take to produce its response.
    pub rpc_timeout: Duration,
    /// Where to serve `/metrics`; `None` = nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where to serve the dashboard; `None` = nowhere.
    pub dashboard_listen: Option<SocketAddr>,
}

impl CoordinatorArgs {
    pub fn resolve(self) -> Result<CoordinatorConfig, ServerError> {
        let file: FileConfig = match &self.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ServerError::ConfigRead {
                        path: path.clone(),
                        source,
                    })?;
                toml::from_str(&text).map_err(|source| ServerError::ConfigSyntax {
                    path: path.clone(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        let listen_text = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr =
            listen_text
                .parse()
                .map_err(|source| ServerError::ListenAddress {
                    text: listen_text.clone(),
                    source,
                })?;
        let data_text = self.data.or(file.data).unwrap_or_else(|| "bundled".into());
        let data = if data_text == "none" {
            None
        } else {
            Some(
                data_text
                    .parse()
                    .map_err(|source| ServerError::DataSource { source })?,
            )
        };
        let heartbeat_interval = Duration::from_millis(
            self.heartbeat_interval_ms
                .or(file.heartbeat_interval_ms)
                .unwrap_or(2000),
        );
        let heartbeat_timeout = Duration::from_secs(
            self.heartbeat_timeout_secs
                .or(file.heartbeat_timeout_secs)
                .unwrap_or(10),
        );
        if heartbeat_interval < Duration::from_millis(100)
            || heartbeat_interval > Duration::from_secs(60)
        {
            return Err(ServerError::config(
                "heartbeat_interval_ms must be 100..=60000",
            ));
        }
        if heartbeat_timeout < 2 * heartbeat_interval {
            return Err(ServerError::config(format!(
                "heartbeat_timeout_secs ({}s) must be at least twice the heartbeat interval ({:?})",
                heartbeat_timeout.as_secs(),
                heartbeat_interval
            )));
        }
        let non_empty = |t: Option<String>, what: &str| -> Result<Option<Secret>, ServerError> {
            match t {
                Some(t) if t.len() < 8 => Err(ServerError::config(format!(
                    "{what} must be at least 8 characters"
                ))),
                Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => {
                    Err(ServerError::config(format!(
                        "{what} must be printable ASCII without spaces (it travels in a header)"
                    )))
                }
                other => Ok(other.map(Secret::from)),
            }
        };
        let tls = match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
            self.tls_client_ca.or(file.tls_client_ca),
        ) {
            (Some(cert), Some(key), ca) => Some(ServerTls::from_files(&cert, &key, ca.as_deref())?),
            (None, None, None) => None,
            (None, None, Some(_)) => {
                return Err(ServerError::config(
                    "--tls-client-ca needs --tls-cert and --tls-key",
                ));
            }
            (Some(_), None, _) => {
                return Err(ServerError::config("--tls-cert needs --tls-key"));
            }
            (None, Some(_), _) => {
                return Err(ServerError::config("--tls-key needs --tls-cert"));
            }
        };
        let defaults = TransferLimits::default();
        let transfers = TransferLimits {
            uploads_per_worker: self
                .max_uploads_per_worker
                .or(file.max_uploads_per_worker)
                .unwrap_or(defaults.uploads_per_worker),
            downloads_per_worker: self
                .max_downloads_per_worker
                .or(file.max_downloads_per_worker)
                .unwrap_or(defaults.downloads_per_worker),
            upload_buffer_bytes: self
                .max_upload_buffer_mib
                .or(file.max_upload_buffer_mib)
                .map_or(defaults.upload_buffer_bytes, |mib| {
                    mib.saturating_mul(1 << 20)
                }),
            decoding_uploads: self
                .max_decoding_uploads
                .or(file.max_decoding_uploads)
                .unwrap_or(defaults.decoding_uploads),
            sending_downloads: self
                .max_sending_downloads
                .or(file.max_sending_downloads)
                .unwrap_or(defaults.sending_downloads),
            idle_timeout: self
                .transfer_idle_timeout_ms
                .or(file.transfer_idle_timeout_ms)
                .map_or(defaults.idle_timeout, Duration::from_millis),
        };
        transfers.validate()?;
        let idle_connection_timeout = match self
            .idle_connection_timeout_secs
            .or(file.idle_connection_timeout_secs)
        {
            Some(s) if !(1..=86_400).contains(&s) => {
                return Err(ServerError::config(
                    "idle_connection_timeout_secs must be 1..=86400",
                ));
            }
            Some(s) => Duration::from_secs(s),
            None => DEFAULT_IDLE_CONNECTION_TIMEOUT,
        };
        let rpc_timeout = match self.rpc_timeout_secs.or(file.rpc_timeout_secs) {
            Some(s) if !(61..=86_400).contains(&s) => {
                return Err(ServerError::config(
                    "rpc_timeout_secs must be 61..=86400 (above the 60 s a task request may wait)",
                ));
            }
            Some(s) => Duration::from_secs(s),
            None => DEFAULT_RPC_TIMEOUT,
        };
        let http_address = |text: Option<String>| -> Result<Option<SocketAddr>, ServerError> {
            text.map(|t| {
                t.parse()
                    .map_err(|source| ServerError::ListenAddress { text: t, source })
            })
            .transpose()
        };
        let metrics_listen = http_address(self.metrics_listen.or(file.metrics_listen))?;
        let dashboard_listen = http_address(self.dashboard_listen.or(file.dashboard_listen))?;
        let insecure = self.insecure || file.insecure.unwrap_or(false);
        check_plaintext_listen(listen, tls.is_some(), insecure)?;
        if let Some(addr) = dashboard_listen.filter(|a| !insecure && !a.ip().is_loopback()) {
            return Err(ServerError::PlaintextDashboard { listen: addr });
        }
        Ok(CoordinatorConfig {
            listen,
            data,
            test_limit: self.test_limit.or(file.test_limit).unwrap_or(0),
            enrollment_token: non_empty(
                self.enrollment_token.or(file.enrollment_token),
                "enrollment token",
            )?,
            admin_token: non_empty(self.admin_token.or(file.admin_token), "admin token")?,
            heartbeat_interval,
            heartbeat_timeout,
            addr_file: self.addr_file.or(file.addr_file),
            tls,
            insecure,
            state_dir: self.state_dir.or(file.state_dir),
            max_worker_samples: match self.max_worker_samples.or(file.max_worker_samples) {
                Some(0) => {
                    return Err(ServerError::Config {
                        why: "max_worker_samples must be positive".into(),
                    });
                }
                Some(n) => n,
                None => CoordinatorSettings::DEFAULT_MAX_WORKER_SAMPLES,
            },
            gone_worker_retention: Duration::from_secs(
                self.gone_worker_retention_secs
                    .or(file.gone_worker_retention_secs)
                    .unwrap_or(CoordinatorSettings::DEFAULT_GONE_WORKER_RETENTION.as_secs()),
            ),
            shutdown_grace: match self.shutdown_grace_ms.or(file.shutdown_grace_ms) {
                Some(ms) if ms > 600_000 => {
                    return Err(ServerError::config("shutdown_grace_ms must be 0..=600000"));
                }
                Some(ms) => Duration::from_millis(ms),
                None => DEFAULT_SHUTDOWN_GRACE,
            },
            transfers,
            idle_connection_timeout,
            rpc_timeout,
            metrics_listen,
            dashboard_listen,
        })
    }
}

/// Tokens must not cross a network in the clear by accident: plaintext is only for loopback
/// unless the operator says `--insecure` (e.g. behind a TLS-terminating proxy).
pub fn check_plaintext_listen(
    listen: SocketAddr,
    tls: bool,
    insecure: bool,
) -> Result<(), ServerError> {
    if tls || insecure || listen.ip().is_loopback() {
        return Ok(());
    }
    Err(ServerError::PlaintextListen { listen })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags win over the file; the file's values fill the rest; bad values are explained.
    #[test]
    fn layering_and_validation() {
        let dir = std::env::temp_dir().join(format!("fedcsg-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\ndata = \"none\"\nheartbeat_timeout_secs = 30\n",
        )
        .unwrap();
        let args = CoordinatorArgs {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.listen.port(), 0);
        assert!(c.data.is_none());
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(30));
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let err = CoordinatorArgs {
            config: Some(path.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = CoordinatorArgs {
            listen: Some("nowhere".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.contains("nowhere"), "{err}");
        let err = CoordinatorArgs {
            heartbeat_timeout_secs: Some(1),
            ..Default::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.contains("twice"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    fn refusal(args: CoordinatorArgs) -> String {
        args.resolve().unwrap_err().to_string()
    }

    /// The HTTP endpoints: off by default; the dashboard (plain HTTP with the admin token) only
    /// on loopback unless --insecure; bad addresses and RPC timeouts are explained.
    #[test]
    fn http_endpoints_and_rpc_timeout() {
        let c = CoordinatorArgs::default().resolve().unwrap();
        assert_eq!((c.metrics_listen, c.dashboard_listen), (None, None));
        assert_eq!(c.rpc_timeout, DEFAULT_RPC_TIMEOUT);
        let c = CoordinatorArgs {
            metrics_listen: Some("0.0.0.0:9464".into()),
            dashboard_listen: Some("127.0.0.1:8080".into()),
            rpc_timeout_secs: Some(120),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.metrics_listen.unwrap().port(), 9464);
        assert_eq!(c.dashboard_listen.unwrap().port(), 8080);
        assert_eq!(c.rpc_timeout, Duration::from_secs(120));
        let err = refusal(CoordinatorArgs {
            dashboard_listen: Some("0.0.0.0:8080".into()),
            ..Default::default()
        });
        assert!(
            err.contains("dashboard serves plain HTTP") && err.contains("--insecure"),
            "{err}"
        );
        let insecure = CoordinatorArgs {
            dashboard_listen: Some("0.0.0.0:8080".into()),
            insecure: true,
            ..Default::default()
        };
        assert!(insecure.resolve().is_ok());
        let err = refusal(CoordinatorArgs {
            metrics_listen: Some("localhost".into()),
            ..Default::default()
        });
        assert!(err.contains("\"localhost\""), "{err}");
        let err = refusal(CoordinatorArgs {
            rpc_timeout_secs: Some(30),
            ..Default::default()
        });
        assert!(err.contains("rpc_timeout_secs must be 61..=86400"), "{err}");
    }
}
