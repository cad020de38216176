//! The client TLS flags shared by `fedcsg-worker` and the operator CLI `fedcsg` (each also a
//! FEDCSG_* variable); they resolve into `fedcsg_wire::tls::ClientTls`.

use std::path::PathBuf;

use fedcsg_wire::tls::{ClientTls, ClientTlsFiles, TlsError};

/// The client-side TLS flags of `fedcsg-worker` and `fedcsg` (each also a FEDCSG_* variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// PEM file of the CA that signed the coordinator's certificate (turns on TLS; use an
    /// https:// coordinator URL).
    #[arg(long, env = "FEDCSG_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Name to verify the coordinator's certificate against [default: the URL's host].
    #[arg(long, env = "FEDCSG_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
    /// PEM certificate presented to a coordinator that requires mutual TLS.
    #[arg(long, env = "FEDCSG_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, env = "FEDCSG_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// Checks the flags against the coordinator URL's scheme and reads the files: `None` for a
    /// plaintext http:// coordinator, the TLS material for an https:// one.
    pub fn resolve(&self, https: bool) -> Result<Option<ClientTls>, TlsError> {
        self.files().resolve(https)
    }

    fn files(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca_cert: self.ca_cert.clone(),
            tls_domain: self.tls_domain.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }
}
