//! The coordinator reads tokio's clock, so heartbeat timeouts, round deadlines and retries can be
//! tested under `tokio::time::pause()`: minutes of coordinator time pass in milliseconds, and
//! nothing depends on how busy the machine running the tests is. The coordinator's domain API
//! is driven directly, with its real round driver.

use std::sync::Arc;
use std::time::Duration;

use fedcsg_server::coordinator::{Coordinator, CoordinatorSettings, JoinInfo, RoundsWanted, Task};
use fedcsg_server::ids::{JobId, WorkerId};
use fedcsg_server::job::JobState;
use fedcsg_server::service::convert::job_spec_from_proto;
use fedcsg_wire::proto::PROTOCOL_VERSION;

mod support;

fn coordinator() -> (Arc<Coordinator>, tokio::sync::oneshot::Sender<()>) {
    let settings = CoordinatorSettings {
        heartbeat_interval: Duration::from_secs(2),
        heartbeat_timeout: Duration::from_secs(10),
        ..CoordinatorSettings::default()
    };
    let c = Coordinator::new(settings, None, None).unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(Arc::clone(&c).drive(async move {
        let _ = rx.await;
    }));
    (c, stop)
}

fn join(c: &Coordinator, name: &str) -> WorkerId {
    c.join(
        JoinInfo {
            protocol_version: PROTOCOL_VERSION,
            previous_session_token: None,
            name: name.into(),
            num_samples: 100,
            in_channels: 1,
            num_classes: 10,
        },
        None,
    )
    .unwrap()
    .worker_id
}

fn state_of(c: &Coordinator, id: &WorkerId) -> &'static str {
    c.list_workers(None, 100)
        .0
        .into_iter()
        .find(|w| &w.id == id)
        .map_or("forgotten", |w| w.state)
}

/// Lets the coordinator's clock run for `d`, one second at a time, calling `each` every
/// second (a worker's heartbeat).
async fn run_for(d: Duration, mut each: impl FnMut()) {
    let mut left = d;
    while !left.is_zero() {
        let step = left.min(Duration::from_secs(1));
        tokio::time::advance(step).await;
        // Let the round driver take its tick.
        tokio::task::yield_now().await;
        each();
        left -= step;
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_worker_is_dropped_at_the_heartbeat_timeout_and_not_before() {
    let (c, _stop) = coordinator();
    let silent = join(&c, "silent");
    let talking = join(&c, "talking");
    run_for(Duration::from_secs(9), || {
        c.heartbeat(&talking, None).unwrap();
    })
    .await;
    assert_eq!(
        state_of(&c, &silent),
        "idle",
        "9 s of silence is within the 10 s timeout"
    );
    run_for(Duration::from_secs(3), || {
        c.heartbeat(&talking, None).unwrap();
    })
    .await;
    assert_eq!(state_of(&c, &silent), "gone");
    assert_eq!(state_of(&c, &talking), "idle");
}

#[tokio::test(start_paused = true)]
async fn a_round_whose_quorum_never_comes_is_retried_at_each_deadline_then_fails_the_job() {
    let (c, _stop) = coordinator();
    let mut spec = support::job_spec(
        "deadlines",
        support::JobShape {
            rounds: 2,
            min_workers: 1,
            deadline_seconds: 30,
            max_samples: 32,
            seed: 1,
        },
    );
    spec.max_round_retries = Some(2);
    if let Some(m) = spec.model.as_mut() {
        m.csg = "seeded:12-72".into();
    }
    let job: JobId = c
        .create_job(job_spec_from_proto(Some(spec)).unwrap())
        .unwrap()
        .id;
    // A worker that keeps taking the round's task and heartbeating, and never uploads.
    let worker = join(&c, "stalling");
    let mut tokens = std::collections::BTreeSet::new();
    let mut take_tasks = || {
        if let Ok(Task::Train(t)) = c.next_task(&worker) {
            tokens.insert(t.token.to_string());
        }
        c.heartbeat(&worker, None).unwrap();
    };
    run_for(Duration::from_secs(29), &mut take_tasks).await;
    let view = c.get_job(&job, RoundsWanted::None).unwrap();
    assert_eq!(view.state, JobState::Running, "{}", view.message);

    // Three deadlines: the round, then its two retries; then the job fails.
    run_for(Duration::from_secs(3 * 30 + 15), &mut take_tasks).await;
    let view = c.get_job(&job, RoundsWanted::None).unwrap();
    assert_eq!(view.state, JobState::Failed, "{}", view.message);
    assert!(
        view.message.contains("max_round_retries 2"),
        "{}",
        view.message
    );
    assert_eq!(view.rounds_completed, 0);
    assert_eq!(
        tokens.len(),
        3,
        "the worker was given the round and each retry"
    );
}
