//! What a crowd of slow or hostile clients may hold, over real gRPC against an in-process
//! coordinator: a stalled upload is cut off after the transfer idle timeout and its buffer is
//! freed; a worker may not hold more uploads open than its cap; an upload beyond the fleet-wide
//! upload budget is refused and admitted once there is room; a connection that never speaks
//! HTTP/2 is closed after the idle-connection timeout, while a quiet but live client (a watch on
//! a job that has not started) is kept by the keepalive pings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fedcsg_server::config::CoordinatorArgs;
use fedcsg_server::coordinator::Coordinator;
use fedcsg_wire::proto::v1 as pb;
use tokio::io::AsyncReadExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

mod support;
use support::fake_worker::FakeWorker;
use support::hostile::{header_of, messages};
use support::{authed, operator};

struct Served {
    url: String,
    coordinator: Arc<Coordinator>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(extra: CoordinatorArgs) -> Served {
    let config = CoordinatorArgs {
        data: Some("none".into()),
        ..extra
    }
    .resolve()
    .unwrap();
    let coordinator = fedcsg_server::server::build_coordinator(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(fedcsg_server::server::run_with(
        listener,
        config,
        Arc::clone(&coordinator),
        async move {
            let _ = rx.await;
        },
    ));
    Served {
        url,
        coordinator,
        _stop: stop,
    }
}

fn spec(min_workers: u32) -> pb::JobSpec {
    let mut spec = support::job_spec(
        "transfers",
        support::JobShape {
            rounds: 1,
            min_workers,
            deadline_seconds: 120,
            max_samples: 32,
            seed: 1,
        },
    );
    if let Some(m) = spec.model.as_mut() {
        // CSG 12-72: its update spans several chunks.
        m.csg = "12-72".into();
    }
    spec
}

/// A job in its first round with one worker holding the training task; the worker and the
/// upload messages of an update (the global model sent back as weights).
async fn round_with_one_worker(s: &Served) -> (FakeWorker, pb::TrainTask, Vec<pb::UpdateChunk>) {
    let mut op = operator(&s.url).await;
    op.create_job(pb::CreateJobRequest {
        spec: Some(spec(1)),
    })
    .await
    .unwrap();
    let mut w = FakeWorker::join(&s.url, "uploader").await;
    let task = w.train_task().await;
    let global = w.download(&task).await;
    let (header, chunks) = header_of(&global, &w.id, &task.job_id, task.round, &task.round_token);
    (w, task, messages(Some(header), chunks))
}

/// Starts an upload that sends its header and half of its data and then stalls, holding the
/// stream open; returns the call's result handle and the sender that keeps it open.
fn stalled_upload(
    w: &FakeWorker,
    msgs: &[pb::UpdateChunk],
) -> (
    tokio::task::JoinHandle<Result<pb::UploadUpdateResponse, tonic::Status>>,
    tokio::sync::mpsc::Sender<pb::UpdateChunk>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.try_send(msgs[0].clone()).unwrap();
    let Some(pb::update_chunk::Part::Data(data)) = &msgs[1].part else {
        panic!("the second message is data");
    };
    tx.try_send(pb::UpdateChunk {
        part: Some(pb::update_chunk::Part::Data(
            data[..data.len() / 2].to_vec(),
        )),
    })
    .unwrap();
    let mut client = w.client.clone();
    let req = authed(ReceiverStream::new(rx), &w.token);
    let call = tokio::spawn(async move { client.upload_update(req).await.map(|r| r.into_inner()) });
    (call, tx)
}

/// Sends a complete upload of `msgs` as worker `w`.
async fn upload(
    w: &mut FakeWorker,
    msgs: Vec<pb::UpdateChunk>,
) -> Result<pb::UploadUpdateResponse, tonic::Status> {
    let req = authed(tokio_stream::iter(msgs), &w.token);
    w.client.upload_update(req).await.map(|r| r.into_inner())
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_cut_off_after_the_idle_timeout_and_its_buffer_freed() {
    let s = serve(CoordinatorArgs {
        transfer_idle_timeout_ms: Some(700),
        ..Default::default()
    })
    .await;
    let (mut w, task, msgs) = round_with_one_worker(&s).await;
    let transfers = Arc::clone(s.coordinator.transfers());
    assert_eq!(transfers.buffered_bytes(), 0);

    let started = Instant::now();
    let (call, _keep_open) = stalled_upload(&w, &msgs);
    until("the first chunk to be buffered", || {
        transfers.buffered_bytes() > 0
    })
    .await;
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("idle timeout"), "{}", err.message());
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert_eq!(
        transfers.buffered_bytes(),
        0,
        "the cut-off upload's buffer is freed"
    );

    // Nothing was credited: the same worker's complete upload is accepted afterwards.
    let ok = upload(&mut w, msgs).await.unwrap();
    assert!(ok.accepted && !ok.duplicate);
    let _ = task;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_may_not_hold_more_uploads_open_than_its_cap() {
    let s = serve(CoordinatorArgs {
        max_uploads_per_worker: Some(1),
        ..Default::default()
    })
    .await;
    let (mut w, _task, msgs) = round_with_one_worker(&s).await;
    let transfers = Arc::clone(s.coordinator.transfers());
    let (first, keep_open) = stalled_upload(&w, &msgs);
    until("the first upload to be receiving", || {
        transfers.buffered_bytes() > 0
    })
    .await;

    let err = upload(&mut w, msgs.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("already has 1 uploads open"),
        "{}",
        err.message()
    );

    // The client gives up on the first upload: its slot and buffer are released, and the
    // complete upload goes through.
    drop(keep_open);
    let refused = first.await.unwrap().unwrap_err();
    assert_eq!(
        refused.code(),
        Code::InvalidArgument,
        "a truncated update: {refused:?}"
    );
    until("the buffer to be freed", || transfers.buffered_bytes() == 0).await;
    let ok = upload(&mut w, msgs).await.unwrap();
    assert!(ok.accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_and_a_quiet_live_client_is_kept() {
    let s = serve(CoordinatorArgs {
        idle_connection_timeout_secs: Some(1),
        ..Default::default()
    })
    .await;
    let addr = s.url.trim_start_matches("http://").to_string();

    // A quiet but live client: a watch on a job that waits for workers that never come.
    let mut op = operator(&s.url).await;
    let job = op
        .create_job(pb::CreateJobRequest {
            spec: Some(spec(5)),
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let mut watch = op
        .watch_job(pb::WatchJobRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();

    // A connection that never sends the HTTP/2 preface is closed after about a second.
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let opened = Instant::now();
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match raw.read(&mut buf).await {
                // The server's SETTINGS frame, then the close.
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a silent connection was kept past 15 s");
    assert!(opened.elapsed() >= Duration::from_millis(900));

    // Three idle timeouts later the watch still delivers: its connection answered the pings.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let mut op2 = operator(&s.url).await;
    op2.cancel_job(pb::CancelJobRequest { job_id: job })
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the watch hears the cancellation")
        .expect("the watch stream is intact")
        .expect("an event, not the end of the stream");
    assert_eq!(event.job_state, pb::JobState::Cancelled as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_beyond_the_fleet_budget_is_refused_and_admitted_once_there_is_room() {
    // 1 MiB of budget; a full-filter update (about 1.1 MB) is admitted alone, not beside another.
    let s = serve(CoordinatorArgs {
        max_upload_buffer_mib: Some(1),
        ..Default::default()
    })
    .await;
    let mut op = operator(&s.url).await;
    let mut job = spec(2);
    if let Some(m) = job.model.as_mut() {
        m.csg = "full".into();
    }
    op.create_job(pb::CreateJobRequest { spec: Some(job) })
        .await
        .unwrap();
    let mut a = FakeWorker::join(&s.url, "first").await;
    let mut b = FakeWorker::join(&s.url, "second").await;
    let (ta, tb) = (a.train_task().await, b.train_task().await);
    let global = a.download(&ta).await;
    let update = |w: &FakeWorker, t: &pb::TrainTask| {
        let (header, chunks) = header_of(&global, &w.id, &t.job_id, t.round, &t.round_token);
        messages(Some(header), chunks)
    };
    let (msgs_a, msgs_b) = (update(&a, &ta), update(&b, &tb));
    let transfers = Arc::clone(s.coordinator.transfers());
    let (first, keep_open) = stalled_upload(&a, &msgs_a);
    until("the first upload to be admitted", || {
        transfers.buffered_bytes() > 0
    })
    .await;

    let err = upload(&mut b, msgs_b.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("max_upload_buffer_mib"),
        "{}",
        err.message()
    );

    drop(keep_open);
    first.await.unwrap().unwrap_err();
    until("the budget to be given back", || {
        transfers.reserved_upload_bytes() == 0
    })
    .await;
    let ok = upload(&mut b, msgs_b).await.unwrap();
    assert!(ok.accepted);
    let ok = upload(&mut a, msgs_a).await.unwrap();
    assert!(ok.accepted);
}
