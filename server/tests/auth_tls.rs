//! Who may talk to the coordinator, by transport: TLS that verifies the coordinator, mutual TLS
//! that verifies the client, and the refusal to serve plaintext on a public address. Every
//! refusal is a failed handshake (or UNAUTHENTICATED where the client still lacks its token)
//! and leaves the worker list as it was; each test also shows the same call succeeding with the
//! right credential, so the refusals could have failed. Tokens are in auth_tokens.rs, the real
//! binaries in auth_binaries.rs.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use fedcsg_server::config::CoordinatorArgs;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use fedcsg_wire::proto::v1::worker_service_client::WorkerServiceClient;
use fedcsg_wire::tls::{ClientTls, ClientTlsFiles, ServerTls};
use tonic::Code;
use tonic::transport::Endpoint;

use support::auth::{ADMIN, ENROLL, args, assert_refused, join_request, start, with_token};
use support::pki::{pki, temp_dir, write};

fn tls_endpoint(
    addr: SocketAddr,
    ca: &str,
    domain: Option<&str>,
    identity: Option<(&str, &str)>,
) -> Endpoint {
    let identity = identity.map(|(c, k)| (c.as_bytes().to_vec(), k.as_bytes().to_vec()));
    ClientTls::from_pem(ca.as_bytes().to_vec(), domain.map(String::from), identity)
        .endpoint(&format!("https://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
}

/// Connects and lists the workers with the admin token: `Err` when the handshake or the call
/// fails (with TLS 1.3 a server may refuse a client certificate only after the client finished
/// its side of the handshake, so a refusal can surface at the first call).
async fn try_list_workers(endpoint: Endpoint) -> Result<usize, String> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut op = OperatorServiceClient::new(channel);
    let r = op
        .list_workers(with_token(pb::ListWorkersRequest::default(), Some(ADMIN)))
        .await
        .map_err(|s| format!("call: {s:?}"))?;
    Ok(r.into_inner().workers.len())
}

/// With `--tls-cert`/`--tls-key` a client that trusts the right CA gets through; one that
/// trusts another CA, expects another name, or speaks plaintext fails before any RPC runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_coordinator() {
    let pki = pki();
    let mut config = args().resolve().unwrap();
    config.tls = Some(ServerTls::from_pem(
        pki.server_cert.clone(),
        pki.server_key.clone(),
        None,
    ));
    let (addr, _stop) = start(config).await;

    assert_eq!(
        try_list_workers(tls_endpoint(addr, &pki.ca, None, None)).await,
        Ok(0),
        "the right CA by IP address"
    );
    assert_eq!(
        try_list_workers(tls_endpoint(addr, &pki.ca, Some("localhost"), None)).await,
        Ok(0),
        "the right CA, --tls-domain localhost"
    );

    let plaintext = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let refused = [
        (
            "a client that trusts an unrelated CA",
            tls_endpoint(addr, &pki.other_ca, None, None),
            "UnknownIssuer",
        ),
        (
            "a client that expects another name",
            tls_endpoint(addr, &pki.ca, Some("coordinator.example"), None),
            "NotValidForName",
        ),
        ("a plaintext client", plaintext, ""),
    ];
    for (case, endpoint, why) in refused {
        let err = try_list_workers(endpoint).await.expect_err(case);
        assert!(
            err.contains(why),
            "{case}: refused for another reason: {err}"
        );
    }
    // The worker API behind TLS still wants its tokens.
    let channel = tls_endpoint(addr, &pki.ca, None, None)
        .connect()
        .await
        .unwrap();
    let mut w = WorkerServiceClient::new(channel);
    assert_refused(
        "join over TLS without a token",
        w.join(join_request("x")).await,
        &[Code::Unauthenticated],
    );
    w.join(with_token(join_request("x"), Some(ENROLL)))
        .await
        .unwrap();
    assert_eq!(
        try_list_workers(tls_endpoint(addr, &pki.ca, None, None)).await,
        Ok(1)
    );
}

/// With `--tls-client-ca` (set through the flags, from PEM files) a client without a
/// certificate, or with one from an unrelated CA, is refused; the right certificate works, and
/// still needs its tokens. The refused clients left no trace in the worker list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate() {
    let pki = pki();
    let dir = temp_dir("mtls");
    let config = CoordinatorArgs {
        tls_cert: Some(write(&dir, "server.pem", &pki.server_cert)),
        tls_key: Some(write(&dir, "server.key", &pki.server_key)),
        tls_client_ca: Some(write(&dir, "ca.pem", &pki.ca)),
        ..args()
    }
    .resolve()
    .unwrap();
    let (addr, _stop) = start(config).await;

    let refused = [
        (
            "no client certificate",
            tls_endpoint(addr, &pki.ca, None, None),
        ),
        (
            "a client certificate of an unrelated CA",
            tls_endpoint(
                addr,
                &pki.ca,
                None,
                Some((&pki.other_client_cert, &pki.other_client_key)),
            ),
        ),
        // Signed by the right CA but for server authentication only (extended key usage).
        (
            "the server's certificate as a client certificate",
            tls_endpoint(
                addr,
                &pki.ca,
                None,
                Some((&pki.server_cert, &pki.server_key)),
            ),
        ),
    ];
    for (case, endpoint) in refused {
        let err = try_list_workers(endpoint.clone()).await.expect_err(case);
        // The server's alert (CertificateRequired, UnknownCA) races with its closing the
        // connection, so the client sees either; what matters is that the transport failed and
        // no gRPC status came from a handler.
        assert!(
            err.contains("Transport"),
            "{case}: refused for another reason: {err}"
        );
        // A join attempt on the same footing registers nothing.
        if let Ok(channel) = endpoint.connect().await {
            assert!(
                WorkerServiceClient::new(channel)
                    .join(with_token(join_request("intruder"), Some(ENROLL)))
                    .await
                    .is_err(),
                "{case}: join went through"
            );
        }
    }

    // The right certificate, read through the same flag parsing the worker and the CLI use.
    let tls = ClientTlsFiles {
        ca_cert: Some(dir.join("ca.pem")),
        tls_domain: Some("localhost".into()),
        client_cert: Some(write(&dir, "client.pem", &pki.client_cert)),
        client_key: Some(write(&dir, "client.key", &pki.client_key)),
    }
    .resolve(true)
    .unwrap()
    .unwrap();
    let endpoint = tls.endpoint(&format!("https://{addr}")).unwrap();
    assert_eq!(
        try_list_workers(endpoint.clone()).await,
        Ok(0),
        "no refused client became a worker"
    );
    let channel = endpoint.connect().await.unwrap();
    let mut op = OperatorServiceClient::new(channel.clone());
    assert_refused(
        "ListJobs over mTLS without the admin token",
        op.list_jobs(pb::ListJobsRequest::default()).await,
        &[Code::Unauthenticated],
    );
    let mut w = WorkerServiceClient::new(channel);
    assert_refused(
        "join over mTLS without a token",
        w.join(join_request("one")).await,
        &[Code::Unauthenticated],
    );
    w.join(with_token(join_request("one"), Some(ENROLL)))
        .await
        .unwrap();
    assert_eq!(try_list_workers(endpoint).await, Ok(1));
    std::fs::remove_dir_all(&dir).ok();
}

// ----- plaintext on a public address -----

/// Without TLS the coordinator will not listen on a non-loopback address unless `--insecure`
/// says so; the error names both ways out. The check also holds for a listener handed to `run`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_on_a_public_address_needs_insecure() {
    for listen in ["0.0.0.0:0", "[::]:0", "192.0.2.1:7070"] {
        let err = CoordinatorArgs {
            listen: Some(listen.into()),
            ..args()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--insecure") && err.contains("--tls-cert"),
            "{listen}: {err}"
        );
    }
    for listen in ["127.0.0.1:0", "[::1]:0"] {
        CoordinatorArgs {
            listen: Some(listen.into()),
            ..args()
        }
        .resolve()
        .unwrap();
    }
    let insecure = CoordinatorArgs {
        listen: Some("0.0.0.0:0".into()),
        insecure: true,
        ..args()
    }
    .resolve()
    .unwrap();
    assert!(insecure.insecure);

    // The same from a TOML file, and TLS instead of --insecure.
    let pki = pki();
    let dir = temp_dir("listen");
    let file = write(&dir, "c.toml", "listen = \"0.0.0.0:0\"\ninsecure = true\n");
    CoordinatorArgs {
        config: Some(file),
        listen: None,
        ..args()
    }
    .resolve()
    .unwrap();
    CoordinatorArgs {
        listen: Some("0.0.0.0:0".into()),
        tls_cert: Some(write(&dir, "server.pem", &pki.server_cert)),
        tls_key: Some(write(&dir, "server.key", &pki.server_key)),
        ..args()
    }
    .resolve()
    .unwrap();
    // Half a TLS configuration is refused with the missing flag named.
    let err = CoordinatorArgs {
        tls_cert: Some(dir.join("server.pem")),
        ..args()
    }
    .resolve()
    .unwrap_err()
    .to_string();
    assert!(err.contains("--tls-key"), "{err}");
    let err = CoordinatorArgs {
        tls_cert: Some(dir.join("server.pem")),
        tls_key: Some(dir.join("server.pem")),
        ..args()
    }
    .resolve()
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--tls-key") && err.contains("PRIVATE KEY"),
        "{err}"
    );

    // `run` checks the listener it is given, whatever the configuration says.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = fedcsg_server::run(listener, args().resolve().unwrap(), async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--insecure"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
