//! TLS for both ends of a connection: PEM files read once at start into [`ServerTls`] (the
//! coordinator) and [`ClientTls`] (workers and the CLI), and the client flags they share.
//!
//! TLS is rustls (tonic's `tls-ring`). There are no system roots: a client names the CA that
//! signed the coordinator's certificate with `--ca-cert`. Mutual TLS is the coordinator's
//! `--tls-client-ca` plus the clients' `--client-cert`/`--client-key`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// A handshake that has not finished after this long is dropped (slow-loris guard).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS setting that cannot work; `flag` names the flag to fix.
#[derive(Debug, Error)]
#[error("{flag}: {why}")]
pub struct TlsError {
    pub flag: &'static str,
    pub why: String,
}

fn tls_err(flag: &'static str, why: impl Into<String>) -> TlsError {
    TlsError {
        flag,
        why: why.into(),
    }
}

/// Reads a PEM file and checks that it holds at least one block of the expected kind.
fn read_pem(path: &Path, flag: &'static str, kind: &str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path)
        .map_err(|e| tls_err(flag, format!("cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let found = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{kind}-----")));
    if !found {
        return Err(tls_err(
            flag,
            format!("{} holds no PEM block ending in {kind:?}", path.display()),
        ));
    }
    Ok(bytes)
}

/// The coordinator's certificate chain and key, and the CA its clients' certificates must
/// chain to when mutual TLS is on.
#[derive(Clone)]
pub struct ServerTls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
}

impl ServerTls {
    /// From `--tls-cert`, `--tls-key` and optionally `--tls-client-ca` (all PEM).
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        Ok(Self {
            cert_pem: read_pem(cert, "--tls-cert", "CERTIFICATE")?,
            key_pem: read_pem(key, "--tls-key", "PRIVATE KEY")?,
            client_ca_pem: client_ca
                .map(|p| read_pem(p, "--tls-client-ca", "CERTIFICATE"))
                .transpose()?,
        })
    }

    pub fn from_pem(
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
        client_ca_pem: Option<Vec<u8>>,
    ) -> Self {
        Self {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            client_ca_pem,
        }
    }

    /// Whether clients must present a certificate signed by the client CA.
    pub fn mutual(&self) -> bool {
        self.client_ca_pem.is_some()
    }

    pub fn config(&self) -> ServerTlsConfig {
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca_pem {
            // Client authentication is required (tonic's default once a client CA is set).
            config = config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(false);
        }
        config
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_pem_bytes", &self.cert_pem.len())
            .field("key_pem", &"***")
            .field("mutual", &self.mutual())
            .finish()
    }
}

/// What a client trusts and, for mutual TLS, who it is.
#[derive(Clone)]
pub struct ClientTls {
    ca_pem: Vec<u8>,
    domain: Option<String>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    pub fn from_pem(
        ca_pem: impl Into<Vec<u8>>,
        domain: Option<String>,
        identity: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Self {
        Self {
            ca_pem: ca_pem.into(),
            domain,
            identity,
        }
    }

    pub fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        config
    }

    /// An endpoint for `url` (which must be https://) that verifies the server with this CA.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, TlsError> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| tls_err("--coordinator", format!("{url:?}: {e}")))?;
        endpoint
            .tls_config(self.config())
            .map_err(|e| tls_err("--ca-cert", format!("unusable TLS material: {e}")))
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("domain", &self.domain)
            .field("client_key", &self.identity.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The client-side TLS files and settings, as the `--ca-cert`, `--tls-domain`, `--client-cert`
/// and `--client-key` flags of `fedcsg-worker` and `fedcsg` give them (the clap struct is
/// `fedcsg_worker::ClientTlsArgs`); error messages name those flags.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsFiles {
    /// PEM file of the CA that signed the coordinator's certificate.
    pub ca_cert: Option<PathBuf>,
    /// Name to verify the coordinator's certificate against (default: the URL's host).
    pub tls_domain: Option<String>,
    /// PEM certificate presented to a coordinator that requires mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

impl ClientTlsFiles {
    /// Checks the flags against the coordinator URL's scheme and reads the files: `None` for a
    /// plaintext http:// coordinator, the TLS material for an https:// one.
    pub fn resolve(&self, https: bool) -> Result<Option<ClientTls>, TlsError> {
        if !https {
            let given = [
                (self.ca_cert.is_some(), "--ca-cert"),
                (self.tls_domain.is_some(), "--tls-domain"),
                (self.client_cert.is_some(), "--client-cert"),
                (self.client_key.is_some(), "--client-key"),
            ];
            if let Some((_, flag)) = given.iter().find(|(set, _)| *set) {
                return Err(tls_err(
                    flag,
                    "is a TLS setting but the coordinator URL is http://; use https://HOST:PORT",
                ));
            }
            return Ok(None);
        }
        let ca = self.ca_cert.as_deref().ok_or_else(|| {
            tls_err(
                "--ca-cert",
                "an https:// coordinator needs the PEM file of the CA that signed its certificate",
            )
        })?;
        let ca_pem = read_pem(ca, "--ca-cert", "CERTIFICATE")?;
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some((
                read_pem(cert, "--client-cert", "CERTIFICATE")?,
                read_pem(key, "--client-key", "PRIVATE KEY")?,
            )),
            (None, None) => None,
            (Some(_), None) => {
                return Err(tls_err(
                    "--client-key",
                    "--client-cert needs its private key",
                ));
            }
            (None, Some(_)) => {
                return Err(tls_err(
                    "--client-cert",
                    "--client-key needs its certificate",
                ));
            }
        };
        if let Some(d) = &self.tls_domain
            && (d.is_empty()
                || d.len() > 253
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
        {
            return Err(tls_err(
                "--tls-domain",
                format!("{d:?} is not a DNS name or IP address"),
            ));
        }
        Ok(Some(ClientTls {
            ca_pem,
            domain: self.tls_domain.clone(),
            identity,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "fedcsg-tls-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// TLS flags with an http:// URL, an https:// URL without a CA, half a client identity and a
    /// file that is not PEM are each refused with the flag to fix named.
    #[test]
    fn client_flags_are_checked() {
        let d = dir();
        let ca = d.join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let junk = d.join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let args =
            |ca_cert: Option<&Path>, cert: Option<&Path>, key: Option<&Path>| ClientTlsFiles {
                ca_cert: ca_cert.map(Path::to_path_buf),
                tls_domain: None,
                client_cert: cert.map(Path::to_path_buf),
                client_key: key.map(Path::to_path_buf),
            };
        assert!(args(None, None, None).resolve(false).unwrap().is_none());
        assert_eq!(
            args(Some(&ca), None, None).resolve(false).unwrap_err().flag,
            "--ca-cert"
        );
        assert_eq!(
            args(None, None, None).resolve(true).unwrap_err().flag,
            "--ca-cert"
        );
        assert_eq!(
            args(Some(&junk), None, None)
                .resolve(true)
                .unwrap_err()
                .flag,
            "--ca-cert"
        );
        assert_eq!(
            args(Some(&ca), Some(&ca), None)
                .resolve(true)
                .unwrap_err()
                .flag,
            "--client-key"
        );
        assert_eq!(
            args(Some(&ca), None, Some(&ca))
                .resolve(true)
                .unwrap_err()
                .flag,
            "--client-cert"
        );
        assert_eq!(
            args(Some(&d.join("absent.pem")), None, None)
                .resolve(true)
                .unwrap_err()
                .flag,
            "--ca-cert"
        );
        let bad_domain = ClientTlsFiles {
            tls_domain: Some("a b".into()),
            ..args(Some(&ca), None, None)
        };
        assert_eq!(bad_domain.resolve(true).unwrap_err().flag, "--tls-domain");
        assert!(args(Some(&ca), None, None).resolve(true).unwrap().is_some());
        std::fs::remove_dir_all(&d).ok();
    }

    /// A key never appears in Debug output.
    #[test]
    fn debug_hides_keys() {
        let server = ServerTls::from_pem(b"CERT".to_vec(), b"SECRET-KEY".to_vec(), None);
        let client = ClientTls::from_pem(
            b"CA".to_vec(),
            None,
            Some((b"CERT".to_vec(), b"SECRET-KEY".to_vec())),
        );
        let text = format!("{server:?} {client:?}");
        assert!(!text.contains("SECRET"), "{text}");
    }
}
