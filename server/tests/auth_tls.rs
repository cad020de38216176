//! Who may talk to the coordinator: enrollment, session and admin tokens over real gRPC, TLS that
//! verifies the coordinator, mutual TLS that verifies the client, and the refusal to serve
//! plaintext on a public address. Every refusal is UNAUTHENTICATED, PERMISSION_DENIED or a failed
//! handshake, and leaves the job and worker lists as they were; each test also shows the same
//! call succeeding with the right credential, so the refusals could have failed.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fedcsg_server::config::{CoordinatorArgs, CoordinatorConfig};
use fedcsg_wire::proto::PROTOCOL_VERSION;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use fedcsg_wire::proto::v1::worker_service_client::WorkerServiceClient;
use fedcsg_wire::tls::{ClientTls, ClientTlsFiles, ServerTls};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

const ENROLL: &str = "enroll-0123456789";
const ADMIN: &str = "admin-0123456789";

// ----- certificates, made fresh for every test run -----

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate signed by it,
/// and an unrelated CA with its own client certificate.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
    other_ca: String,
    other_client_cert: String,
    other_client_key: String,
}

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// (certificate PEM, key PEM) for `names`, signed by `ca`.
fn leaf(ca: &Ca, cn: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    (
        params.signed_by(&key, &ca.issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}

fn pki() -> Pki {
    let root = ca("fedcsg test CA");
    let other = ca("unrelated CA");
    let (server_cert, server_key) = leaf(
        &root,
        "coordinator",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(
        &root,
        "worker-1",
        &["worker-1"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (other_client_cert, other_client_key) = leaf(
        &other,
        "intruder",
        &["intruder"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    Pki {
        ca: root.pem,
        server_cert,
        server_key,
        client_cert,
        client_key,
        other_ca: other.pem,
        other_client_cert,
        other_client_key,
    }
}

/// A fresh directory for the PEM files of one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fedcsg-auth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

// ----- an in-process coordinator and clients -----

fn args() -> CoordinatorArgs {
    CoordinatorArgs {
        listen: Some("127.0.0.1:0".into()),
        data: Some("none".into()),
        enrollment_token: Some(ENROLL.into()),
        admin_token: Some(ADMIN.into()),
        ..Default::default()
    }
}

async fn start(config: CoordinatorConfig) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(fedcsg_server::run(listener, config, async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

fn join_request(name: &str) -> pb::JoinRequest {
    pb::JoinRequest {
        protocol_version: PROTOCOL_VERSION,
        worker_name: name.into(),
        num_samples: 100,
        in_channels: 1,
        num_classes: 10,
        data_description: String::new(),
    }
}

fn job_spec() -> pb::JobSpec {
    support::job_spec(
        "auth",
        support::JobShape {
            rounds: 1,
            min_workers: 5,
            deadline_seconds: 600,
            max_samples: 0,
            seed: 1,
        },
    )
}

/// (job ids, worker ids and states) as the admin sees them.
async fn snapshot(
    op: &mut OperatorServiceClient<Channel>,
) -> (Vec<(String, i32)>, Vec<(String, String)>) {
    let jobs = op
        .list_jobs(with_token(pb::ListJobsRequest {}, Some(ADMIN)))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let workers = op
        .list_workers(with_token(pb::ListWorkersRequest {}, Some(ADMIN)))
        .await
        .unwrap()
        .into_inner()
        .workers;
    (
        jobs.into_iter().map(|j| (j.job_id, j.state)).collect(),
        workers
            .into_iter()
            .map(|w| (w.worker_id, w.state))
            .collect(),
    )
}

fn assert_refused(case: &str, result: Result<impl std::fmt::Debug, tonic::Status>, codes: &[Code]) {
    let err = result.expect_err(case);
    assert!(
        codes.contains(&err.code()),
        "{case}: {:?} {}",
        err.code(),
        err.message()
    );
}

/// Every operator call with `token` is refused with `code`.
async fn operator_refuses(
    op: &mut OperatorServiceClient<Channel>,
    who: &str,
    token: Option<&str>,
    code: Code,
    job: &str,
) {
    let id = || job.to_string();
    let c = [code];
    assert_refused(
        &format!("{who}: CreateJob"),
        op.create_job(with_token(
            pb::CreateJobRequest {
                spec: Some(job_spec()),
            },
            token,
        ))
        .await,
        &c,
    );
    assert_refused(
        &format!("{who}: ListJobs"),
        op.list_jobs(with_token(pb::ListJobsRequest {}, token))
            .await,
        &c,
    );
    assert_refused(
        &format!("{who}: GetJob"),
        op.get_job(with_token(pb::GetJobRequest { job_id: id() }, token))
            .await,
        &c,
    );
    assert_refused(
        &format!("{who}: CancelJob"),
        op.cancel_job(with_token(pb::CancelJobRequest { job_id: id() }, token))
            .await,
        &c,
    );
    assert_refused(
        &format!("{who}: ListWorkers"),
        op.list_workers(with_token(pb::ListWorkersRequest {}, token))
            .await,
        &c,
    );
    assert_refused(
        &format!("{who}: WatchJob"),
        op.watch_job(with_token(pb::WatchJobRequest { job_id: id() }, token))
            .await
            .map(|_| ()),
        &c,
    );
    assert_refused(
        &format!("{who}: ExportModel"),
        op.export_model(with_token(pb::ExportModelRequest { job_id: id() }, token))
            .await
            .map(|_| ()),
        &c,
    );
}

// ----- tokens -----

/// Joining needs the enrollment token, every later worker call the caller's own session token,
/// and the operator API the admin token: a missing token is UNAUTHENTICATED, a wrong one on the
/// worker API UNAUTHENTICATED, and any other token on the operator API (a worker's session
/// token, the enrollment token, a guess) PERMISSION_DENIED. None of the refused calls creates,
/// cancels or changes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_and_refusals_change_nothing() {
    let (addr, _stop) = start(args().resolve().unwrap()).await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut op = OperatorServiceClient::new(channel.clone());
    let mut w = WorkerServiceClient::new(channel);

    // Join: missing, wrong, wrongly spelled and other tokens.
    let bad_joins: [(&str, Option<&str>); 5] = [
        ("no token", None),
        ("wrong token", Some("enroll-0123456788")),
        ("admin token", Some(ADMIN)),
        ("token prefix", Some(&ENROLL[..8])),
        ("token with a suffix", Some("enroll-0123456789x")),
    ];
    for (case, token) in bad_joins {
        assert_refused(
            &format!("join with {case}"),
            w.join(with_token(join_request("intruder"), token)).await,
            &[Code::Unauthenticated],
        );
    }
    let mut lowercase = Request::new(join_request("intruder"));
    lowercase
        .metadata_mut()
        .insert("authorization", format!("bearer {ENROLL}").parse().unwrap());
    assert_refused(
        "join with `bearer` in lower case",
        w.join(lowercase).await,
        &[Code::Unauthenticated],
    );
    let mut basic = Request::new(join_request("intruder"));
    basic
        .metadata_mut()
        .insert("authorization", format!("Basic {ENROLL}").parse().unwrap());
    assert_refused(
        "join with Basic auth",
        w.join(basic).await,
        &[Code::Unauthenticated],
    );
    assert_eq!(
        snapshot(&mut op).await,
        (vec![], vec![]),
        "a refused join registered a worker"
    );

    let one = w
        .join(with_token(join_request("one"), Some(ENROLL)))
        .await
        .unwrap()
        .into_inner();
    let two = w
        .join(with_token(join_request("two"), Some(ENROLL)))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(one.session_token, two.session_token);
    let job = op
        .create_job(with_token(
            pb::CreateJobRequest {
                spec: Some(job_spec()),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    let before = snapshot(&mut op).await;
    assert_eq!(before.0.len(), 1);
    assert_eq!(before.1.len(), 2);

    // Worker calls of worker one with anything but its own session token.
    let wrong: [(&str, Option<&str>); 5] = [
        ("no token", None),
        ("a guessed token", Some("00000000000000000000000000000000")),
        ("worker two's session token", Some(&two.session_token)),
        ("the enrollment token", Some(ENROLL)),
        ("the admin token", Some(ADMIN)),
    ];
    let u = [Code::Unauthenticated];
    for (case, token) in wrong {
        let id = || one.worker_id.clone();
        assert_refused(
            &format!("GetTask, {case}"),
            w.get_task(with_token(pb::GetTaskRequest { worker_id: id() }, token))
                .await,
            &u,
        );
        let hb = pb::HeartbeatRequest {
            worker_id: id(),
            busy_with_round_token: String::new(),
        };
        assert_refused(
            &format!("Heartbeat, {case}"),
            w.heartbeat(with_token(hb, token)).await,
            &u,
        );
        assert_refused(
            &format!("Leave, {case}"),
            w.leave(with_token(pb::LeaveRequest { worker_id: id() }, token))
                .await,
            &u,
        );
        let dl = pb::DownloadModelRequest {
            worker_id: id(),
            job_id: job.job_id.clone(),
            round_token: "t".into(),
        };
        assert_refused(
            &format!("DownloadModel, {case}"),
            w.download_model(with_token(dl, token)).await.map(|_| ()),
            &u,
        );
        let ev = pb::ReportEvaluationRequest {
            worker_id: id(),
            job_id: job.job_id.clone(),
            round_token: "t".into(),
            num_samples: 1,
            correct: 1,
            loss_sum: 0.0,
        };
        assert_refused(
            &format!("ReportEvaluation, {case}"),
            w.report_evaluation(with_token(ev, token)).await,
            &u,
        );
        let header = pb::UpdateHeader {
            worker_id: id(),
            job_id: job.job_id.clone(),
            round: 1,
            round_token: "t".into(),
            num_samples: 1,
            ..Default::default()
        };
        let chunks = vec![pb::UpdateChunk {
            part: Some(pb::update_chunk::Part::Header(header)),
        }];
        assert_refused(
            &format!("UploadUpdate, {case}"),
            w.upload_update(with_token(tokio_stream::iter(chunks), token))
                .await,
            &u,
        );
    }
    // A session token of a worker id that does not exist.
    let ghost = pb::GetTaskRequest {
        worker_id: "w-999".into(),
    };
    assert_refused(
        "GetTask of an unknown worker",
        w.get_task(with_token(ghost, Some(&one.session_token)))
            .await,
        &u,
    );

    // The operator API: no token, a guess, a worker's session token, the enrollment token.
    operator_refuses(
        &mut op,
        "no token",
        None,
        Code::Unauthenticated,
        &job.job_id,
    )
    .await;
    operator_refuses(
        &mut op,
        "a guessed token",
        Some("admin-0123456788"),
        Code::PermissionDenied,
        &job.job_id,
    )
    .await;
    operator_refuses(
        &mut op,
        "a worker session token",
        Some(&one.session_token),
        Code::PermissionDenied,
        &job.job_id,
    )
    .await;
    operator_refuses(
        &mut op,
        "the enrollment token",
        Some(ENROLL),
        Code::PermissionDenied,
        &job.job_id,
    )
    .await;

    assert_eq!(
        snapshot(&mut op).await,
        before,
        "a refused call changed the jobs or the workers"
    );
    // The right tokens work: the same calls could have succeeded.
    w.get_task(with_token(
        pb::GetTaskRequest {
            worker_id: one.worker_id.clone(),
        },
        Some(&one.session_token),
    ))
    .await
    .unwrap();
    let cancelled = op
        .cancel_job(with_token(
            pb::CancelJobRequest {
                job_id: job.job_id.clone(),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state, pb::JobState::Cancelled as i32);
}

/// Secrets stay out of `{:?}` output: the tokens and the TLS key of a resolved configuration.
#[test]
fn configuration_debug_hides_secrets() {
    let pki = pki();
    let dir = temp_dir("debug");
    let config = CoordinatorArgs {
        tls_cert: Some(write(&dir, "server.pem", &pki.server_cert)),
        tls_key: Some(write(&dir, "server.key", &pki.server_key)),
        ..args()
    }
    .resolve()
    .unwrap();
    let text = format!("{config:?} {config:#?}");
    for secret in [ENROLL, ADMIN, pki.server_key.lines().nth(1).unwrap()] {
        assert!(!text.contains(secret), "{secret:?} shows in {text}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

// ----- TLS -----

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
        .list_workers(with_token(pb::ListWorkersRequest {}, Some(ADMIN)))
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
        op.list_jobs(pb::ListJobsRequest {}).await,
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

// ----- the real binaries -----

fn bin(name: &str) -> PathBuf {
    let coordinator = PathBuf::from(env!("CARGO_BIN_EXE_fedcsg-coordinator"));
    let path = coordinator.with_file_name(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Kills its processes when dropped, also when the test fails.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The binaries end to end over mutual TLS: `fedcsg-coordinator --tls-*`, a `fedcsg-worker`,
/// `fedcsg status` and `fedcsg-health` with `--ca-cert --client-cert --client-key`; `fedcsg status` without the CA
/// and `fedcsg-coordinator --listen 0.0.0.0:0` without TLS are refused with the flag named; and
/// with every log at debug level no token appears in the coordinator's or the worker's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_over_mutual_tls_and_no_token_in_logs() {
    let pki = pki();
    let dir = temp_dir("bins");
    let ca = write(&dir, "ca.pem", &pki.ca);
    let (cert, key) = (
        write(&dir, "server.pem", &pki.server_cert),
        write(&dir, "server.key", &pki.server_key),
    );
    let (client_cert, client_key) = (
        write(&dir, "client.pem", &pki.client_cert),
        write(&dir, "client.key", &pki.client_key),
    );
    let addr_file = dir.join("addr");
    let coordinator_log = dir.join("coordinator.log");
    let worker_log = dir.join("worker.log");

    let refused = Command::new(bin("fedcsg-coordinator"))
        .args(["--listen", "0.0.0.0:0", "--data", "none"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--insecure"), "{stderr}");

    let mut procs = Processes(Vec::new());
    procs.0.push(
        Command::new(bin("fedcsg-coordinator"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--data",
                "none",
                "--enrollment-token",
                ENROLL,
                "--admin-token",
                ADMIN,
            ])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .arg("--tls-client-ca")
            .arg(&ca)
            .arg("--addr-file")
            .arg(&addr_file)
            .env("RUST_LOG", "debug")
            .stderr(std::fs::File::create(&coordinator_log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            break a;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "coordinator did not start: {}",
            std::fs::read_to_string(&coordinator_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let port = addr.rsplit(':').next().unwrap().to_string();
    let url = format!("https://localhost:{port}");
    let tls_flags = |cmd: &mut Command| {
        cmd.arg("--ca-cert")
            .arg(&ca)
            .arg("--client-cert")
            .arg(&client_cert)
            .arg("--client-key")
            .arg(&client_key);
    };
    let mut worker = Command::new(bin("fedcsg-worker"));
    worker.args([
        "--coordinator",
        &url,
        "--name",
        "tls-worker",
        "--data",
        "bundled",
        "--token",
        ENROLL,
    ]);
    tls_flags(&mut worker);
    procs.0.push(
        worker
            .env("RUST_LOG", "debug")
            .stderr(std::fs::File::create(&worker_log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // `fedcsg status` over mTLS lists the worker once it has joined.
    let status = |with_tls: bool| {
        let mut cmd = Command::new(bin("fedcsg"));
        cmd.args(["status", "--coordinator", &url, "--admin-token", ADMIN]);
        if with_tls {
            tls_flags(&mut cmd);
        }
        cmd.output().unwrap()
    };
    let start = Instant::now();
    loop {
        let out = status(true);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.contains("tls-worker") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the worker did not join over mTLS: {stdout} {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&worker_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out = status(false);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ca-cert"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The container probe speaks (m)TLS too.
    let mut health = Command::new(bin("fedcsg-health"));
    health.args(["--addr", &url]);
    tls_flags(&mut health);
    let out = health.output().unwrap();
    assert!(
        out.status.success(),
        "fedcsg-health over mTLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    drop(procs);
    for log in [&coordinator_log, &worker_log] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            text.lines().count() > 3,
            "{} is nearly empty",
            log.display()
        );
        for secret in [ENROLL, ADMIN] {
            assert!(!text.contains(secret), "{} contains a token", log.display());
        }
        // Session tokens are 32 hex digits; none may appear either.
        let hex_run = text
            .split(|c: char| !c.is_ascii_hexdigit())
            .any(|w| w.len() == 32);
        assert!(
            !hex_run,
            "{} contains what looks like a session token",
            log.display()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
