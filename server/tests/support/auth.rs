//! What the authentication and TLS tests share: the tokens, a coordinator that requires them
//! (started in process on 127.0.0.1:0), requests with or without a bearer token, and the refusal
//! check.

use std::net::SocketAddr;

use fedcsg_server::config::{CoordinatorArgs, CoordinatorConfig};
use fedcsg_wire::proto::PROTOCOL_VERSION;
use fedcsg_wire::proto::v1 as pb;
use tonic::{Code, Request};

pub const ENROLL: &str = "enroll-0123456789";
pub const ADMIN: &str = "admin-0123456789";

pub fn args() -> CoordinatorArgs {
    CoordinatorArgs {
        listen: Some("127.0.0.1:0".into()),
        data: Some("none".into()),
        enrollment_token: Some(ENROLL.into()),
        admin_token: Some(ADMIN.into()),
        ..Default::default()
    }
}

pub async fn start(config: CoordinatorConfig) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(fedcsg_server::run(listener, config, async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

pub fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

pub fn join_request(name: &str) -> pb::JoinRequest {
    pb::JoinRequest {
        protocol_version: PROTOCOL_VERSION,
        worker_name: name.into(),
        num_samples: 100,
        in_channels: 1,
        num_classes: 10,
        data_description: String::new(),
        previous_session_token: String::new(),
    }
}

pub fn assert_refused(
    case: &str,
    result: Result<impl std::fmt::Debug, tonic::Status>,
    codes: &[Code],
) {
    let err = result.expect_err(case);
    assert!(
        codes.contains(&err.code()),
        "{case}: {:?} {}",
        err.code(),
        err.message()
    );
}
