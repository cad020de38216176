//! The rules a fleet relies on, over real gRPC against an in-process coordinator: a round closes
//! with its quorum at the deadline; a round whose quorum never comes is retried and then fails
//! the job; a live worker's name is taken over only with its session token; Leave closes the
//! session; gone workers are forgotten after the retention period; shutdown reports NOT_SERVING
//! and answers "done" before the listener closes.

use std::time::{Duration, Instant};

use fedcsg_server::config::CoordinatorArgs;
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use tonic::Code;
use tonic::transport::Channel;

mod support;
use support::fake_worker::{FakeWorker, workers};
use support::hostile::join_request;
use support::operator;
use support::start_with;

async fn coordinator(extra: CoordinatorArgs) -> (String, tokio::sync::oneshot::Sender<()>) {
    start_with(CoordinatorArgs {
        data: Some("none".into()),
        heartbeat_interval_ms: Some(200),
        heartbeat_timeout_secs: Some(30),
        ..extra
    })
    .await
}

fn spec(min_workers: u32, quorum: Option<u32>, retries: u32, deadline: u32) -> pb::JobSpec {
    let mut spec = support::job_spec(
        "fleet",
        support::JobShape {
            rounds: 1,
            min_workers,
            deadline_seconds: deadline,
            max_samples: 32,
            seed: 1,
        },
    );
    spec.quorum = quorum;
    spec.max_round_retries = Some(retries);
    if let Some(model) = spec.model.as_mut() {
        model.csg = "seeded:12-72".into();
    }
    spec
}

async fn job(op: &mut OperatorServiceClient<Channel>, id: &str) -> pb::Job {
    op.get_job(pb::GetJobRequest {
        job_id: id.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

/// Waits (polling) until the job is in a finished state; panics after `within`.
async fn finished(op: &mut OperatorServiceClient<Channel>, id: &str, within: Duration) -> pb::Job {
    let start = Instant::now();
    loop {
        let j = job(op, id).await;
        let state = pb::JobState::try_from(j.state).unwrap();
        if matches!(
            state,
            pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled
        ) {
            return j;
        }
        assert!(
            start.elapsed() < within,
            "job {id} still {state:?} after {within:?}: {}",
            j.message
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two workers are sampled, one uploads and the other (alive, heartbeating) never does: with a
/// quorum of 1 the round commits at its deadline with one participant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_closes_with_its_quorum_at_the_deadline() {
    let (url, _stop) = coordinator(CoordinatorArgs::default()).await;
    let mut op = operator(&url).await;
    let mut a = FakeWorker::join(&url, "a").await;
    let mut b = FakeWorker::join(&url, "b").await;
    let created = op
        .create_job(pb::CreateJobRequest {
            spec: Some(spec(2, Some(1), 0, 2)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.spec.as_ref().unwrap().quorum, Some(1));
    let task = a.train_task().await;
    let _ = b.train_task().await;
    let global = a.download(&task).await;
    a.upload(&task, &global).await.unwrap();
    b.heartbeat(&task.round_token).await;
    let j = finished(&mut op, &created.job_id, Duration::from_secs(20)).await;
    assert_eq!(j.state, pb::JobState::Succeeded as i32, "{}", j.message);
    assert_eq!(j.rounds.len(), 1);
    assert_eq!(j.rounds[0].participant_ids, vec![a.id.clone()]);
}

/// One worker takes the round's task and never uploads: the round misses its quorum at every
/// deadline, is retried max_round_retries times, and the job ends FAILED with the reason; the
/// coordinator goes on serving (a new job is accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_without_its_quorum_fails_the_job_after_its_retries() {
    let (url, _stop) = coordinator(CoordinatorArgs::default()).await;
    let mut op = operator(&url).await;
    let mut idle = FakeWorker::join(&url, "idle").await;
    let created = op
        .create_job(pb::CreateJobRequest {
            spec: Some(spec(1, None, 2, 1)),
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = op
        .watch_job(pb::WatchJobRequest {
            job_id: created.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // Take each attempt's task and sit on it.
    let mut tokens = std::collections::BTreeSet::new();
    let start = Instant::now();
    let j = loop {
        let j = job(&mut op, &created.job_id).await;
        if j.state == pb::JobState::Failed as i32 {
            break j;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{}", j.message);
        if let Ok(t) = tokio::time::timeout(Duration::from_millis(300), idle.train_task()).await {
            tokens.insert(t.round_token);
        }
    };
    assert!(
        j.message.contains("round 1 failed 3 times") && j.message.contains("max_round_retries 2"),
        "{}",
        j.message
    );
    assert!(j.message.contains("quorum"), "{}", j.message);
    assert!(j.rounds.is_empty());
    assert_eq!(tokens.len(), 3, "one task per attempt: {tokens:?}");
    let last = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = events.message().await.unwrap().expect("stream open");
            if e.job_state == pb::JobState::Failed as i32 {
                return e;
            }
        }
    })
    .await
    .expect("watchers hear of the failure");
    assert_eq!(last.job_id, created.job_id);
    // The worker is free again and the coordinator serves on.
    assert_eq!(workers(&mut op).await[0].state, "idle");
    op.create_job(pb::CreateJobRequest {
        spec: Some(spec(1, None, 0, 5)),
    })
    .await
    .unwrap();
}

/// A quorum above min_workers could never be met, and Krum needs its quorum: both are refused at
/// create, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_quorums_are_refused() {
    let (url, _stop) = coordinator(CoordinatorArgs::default()).await;
    let mut op = operator(&url).await;
    let e = op
        .create_job(pb::CreateJobRequest {
            spec: Some(spec(2, Some(3), 0, 5)),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("spec.quorum"), "{}", e.message());
    let mut krum = spec(6, Some(4), 0, 5);
    krum.strategy = "krum".into();
    let e = op
        .create_job(pb::CreateJobRequest { spec: Some(krum) })
        .await
        .unwrap_err();
    assert!(e.message().contains("quorum"), "{}", e.message());
    let e = op
        .create_job(pb::CreateJobRequest {
            spec: Some(spec(1, None, 1001, 5)),
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("max_round_retries"), "{}", e.message());
}

/// A Join under the name of a live worker is refused (ALREADY_EXISTS, naming the holder) and
/// the holder keeps its session; with the holder's session token it is the same worker
/// rejoining: it gets a new session and the old token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_name_is_taken_over_only_with_its_session_token() {
    let (url, _stop) = coordinator(CoordinatorArgs::default()).await;
    let mut op = operator(&url).await;
    let mut holder = FakeWorker::join(&url, "hw-0").await;
    let e = FakeWorker::join_with(&url, join_request("hw-0"))
        .await
        .err()
        .expect("a takeover without the token is refused");
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(e.message().contains(&holder.id), "{}", e.message());
    let forged = pb::JoinRequest {
        previous_session_token: "0123456789abcdef".into(),
        ..join_request("hw-0")
    };
    let e = FakeWorker::join_with(&url, forged).await.err().unwrap();
    assert_eq!(e.code(), Code::AlreadyExists);
    holder.try_heartbeat().await.unwrap();
    assert_eq!(workers(&mut op).await.len(), 1);

    let rejoin = pb::JoinRequest {
        previous_session_token: holder.token.clone(),
        ..join_request("hw-0")
    };
    let mut again = FakeWorker::join_with(&url, rejoin).await.unwrap();
    assert_ne!(again.id, holder.id);
    let e = holder.try_heartbeat().await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("unknown worker"), "{}", e.message());
    again.try_heartbeat().await.unwrap();
    let list = workers(&mut op).await;
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].worker_name.as_str(), &list[0].worker_id),
        ("hw-0", &again.id)
    );
}

/// Leave closes the session: the old token is refused (it cannot make the worker samplable
/// again) and the name is free. Gone and departed workers are forgotten, in memory and in the
/// store, after the retention period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_revokes_the_session_and_gone_workers_are_forgotten() {
    let dir = support::pki::temp_dir("fleet-retention");
    let (url, _stop) = coordinator(CoordinatorArgs {
        gone_worker_retention_secs: Some(1),
        state_dir: Some(dir.clone()),
        ..Default::default()
    })
    .await;
    let mut op = operator(&url).await;
    let mut w = FakeWorker::join(&url, "leaver").await;
    let _stays = FakeWorker::join(&url, "stays").await;
    w.leave().await;
    let e = w.try_heartbeat().await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("left"), "{}", e.message());
    let state = |list: &[pb::WorkerInfo], name: &str| {
        list.iter()
            .find(|w| w.worker_name == name)
            .map(|w| w.state.clone())
    };
    assert_eq!(
        state(&workers(&mut op).await, "leaver").as_deref(),
        Some("left")
    );
    // The name is free at once.
    let mut back = FakeWorker::join(&url, "leaver").await;
    back.leave().await;
    let db = rusqlite::Connection::open(dir.join("state.db")).unwrap();
    let stored = || -> i64 {
        db.query_row("SELECT COUNT(*) FROM workers", [], |r| r.get(0))
            .unwrap()
    };
    let start = Instant::now();
    while state(&workers(&mut op).await, "leaver").is_some() {
        assert!(start.elapsed() < Duration::from_secs(10), "never forgotten");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = workers(&mut op).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].worker_name, "stays");
    assert_eq!(stored(), 1);
}

/// Shutdown with a worker that has not asked for a task yet: health says NOT_SERVING, the
/// worker's next GetTask is answered "done", and the listener closes once it has heard it, long
/// before the 20 s grace period is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_not_serving_and_answers_done() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let (url, stop) = coordinator(CoordinatorArgs {
        shutdown_grace_ms: Some(20_000),
        ..Default::default()
    })
    .await;
    let mut w = FakeWorker::join(&url, "waiting").await;
    let mut health = HealthClient::new(Channel::from_shared(url.clone()).unwrap().connect_lazy());
    let status = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let serving = health.check(status("")).await.unwrap().into_inner().status;
    assert_eq!(serving, ServingStatus::Serving as i32);
    stop.send(()).unwrap();
    let start = Instant::now();
    loop {
        let s = health
            .check(status("fedcsg.v1.WorkerService"))
            .await
            .unwrap()
            .into_inner()
            .status;
        if s == ServingStatus::NotServing as i32 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "still serving");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let task = w.task().await.unwrap().task.unwrap();
    match task {
        pb::get_task_response::Task::Done(d) => {
            assert!(d.reason.contains("shutting down"), "{}", d.reason)
        }
        other => panic!("expected done, got {other:?}"),
    }
    // Every present worker has heard it: the listener closes without waiting out the grace.
    let start = Instant::now();
    while health.check(status("")).await.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the coordinator kept serving after every worker heard done"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A long-polled GetTask with nothing to do is held for its wait and then answered "wait"; one
/// held while a job is created is answered with the round's task as soon as the round starts,
/// long before its 30 s wait is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_polled_task_arrives_when_the_round_starts() {
    let (url, _stop) = coordinator(CoordinatorArgs::default()).await;
    let mut op = operator(&url).await;
    let w = FakeWorker::join(&url, "poller").await;
    let ask = |wait_ms: u32| {
        let (mut client, id, token) = (w.client.clone(), w.id.clone(), w.token.clone());
        async move {
            let started = Instant::now();
            let r = client
                .get_task(support::authed(
                    pb::GetTaskRequest {
                        worker_id: id,
                        wait_ms,
                    },
                    &token,
                ))
                .await
                .unwrap()
                .into_inner();
            (r.task.unwrap(), started.elapsed())
        }
    };
    let (task, waited) = ask(400).await;
    assert!(
        matches!(task, pb::get_task_response::Task::Wait(_)),
        "{task:?}"
    );
    assert!(
        waited >= Duration::from_millis(350),
        "answered after {waited:?}"
    );

    let held = tokio::spawn(ask(30_000));
    tokio::time::sleep(Duration::from_millis(300)).await;
    op.create_job(pb::CreateJobRequest {
        spec: Some(spec(1, None, 0, 60)),
    })
    .await
    .unwrap();
    let (task, waited) = held.await.unwrap();
    assert!(
        matches!(task, pb::get_task_response::Task::Train(_)),
        "{task:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "the task waited {waited:?}"
    );
}

/// A real worker process restarted under its name while the old session still looks alive (as
/// after a crash): its Join is refused while the old session holds the name, and it joins by
/// itself within seconds once the old session leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_joins_once_its_old_session_is_released() {
    use clap::Parser;
    let (url, _stop) = coordinator(CoordinatorArgs::default()).await;
    let mut op = operator(&url).await;
    let mut old = FakeWorker::join(&url, "restarted").await;
    let args = fedcsg_worker::WorkerArgs::try_parse_from([
        "fedcsg-worker",
        "--coordinator",
        url.as_str(),
        "--name",
        "restarted",
        "--data",
        "bundled",
    ])
    .unwrap();
    let config = fedcsg_worker::WorkerConfig::from_args(args).unwrap();
    let (quit, quitting) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(fedcsg_worker::run(config, async move {
        let _ = quitting.await;
    }));
    // Refused while the old session lives (and heartbeats).
    for _ in 0..10 {
        old.try_heartbeat().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let list = workers(&mut op).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].worker_id, old.id);
    old.leave().await;
    let start = Instant::now();
    loop {
        let list = workers(&mut op).await;
        if list
            .iter()
            .any(|w| w.worker_name == "restarted" && w.state == "idle")
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{list:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = quit.send(());
    let _ = worker.await;
}
