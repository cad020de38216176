//! End-to-end federations with the real binaries: a `fedcsg-coordinator` process and
//! `fedcsg-worker` processes on loopback, driven through the operator API.

mod support;

use std::time::Duration;

use fedcsg_wire::proto::v1 as pb;

use support::cluster::Cluster;

fn job_spec(rounds: u32, min_workers: u32, deadline: u32, max_samples: u64) -> pb::JobSpec {
    support::job_spec(
        "e2e",
        support::JobShape {
            rounds,
            min_workers,
            deadline_seconds: deadline,
            max_samples,
            seed: 3,
        },
    )
}

/// Three real workers, three rounds of CSG ResNet-20 (12-72) on the bundled subset: every round
/// has 3 participants, accuracy after round 3 beats round 1, and each worker's upload is the
/// inventory's exchanged values plus framing, at most half a full-filter exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_three_rounds() {
    let cluster = Cluster::start("main", 3, &[]);
    let mut op = cluster.operator().await;
    cluster.wait_for_workers(&mut op, 3).await;
    let job = op
        .create_job(pb::CreateJobRequest {
            spec: Some(job_spec(3, 3, 300, 320)),
        })
        .await
        .unwrap()
        .into_inner();
    let mut stream = op
        .watch_job(pb::WatchJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(300), stream.message())
        .await
        .expect("round timed out")
        .unwrap()
    {
        println!(
            "round {} acc {:.3} loss {:.3} up {} participants {}",
            e.round, e.test_accuracy, e.train_loss, e.bytes_up, e.participants
        );
        events.push(e);
    }
    assert_eq!(events.len(), 3, "{}", cluster.logs());
    let done = op
        .get_job(pb::GetJobRequest {
            job_id: job.job_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, pb::JobState::Succeeded as i32);
    for e in &events {
        assert_eq!(e.participants, 3, "round {}", e.round);
    }
    assert!(
        events[2].test_accuracy > events[0].test_accuracy,
        "accuracy {} -> {}",
        events[0].test_accuracy,
        events[2].test_accuracy
    );
    // Exchanged values of CSG ResNet-20 12-72 with 1 input channel: 115,138 parameters plus
    // 1,376 batch-norm statistics (the inventory unit tests assert both).
    assert_eq!(job.exchanged_values, 115_138 + 1_376);
    let payload = job.exchanged_values * 4;
    let full_payload = job.full_filter_exchanged_values * 4;
    for e in &events {
        for w in &e.workers {
            assert!(
                w.bytes_up >= payload && w.bytes_up <= payload + payload / 100 + 16_384,
                "worker {} uploaded {} bytes for a {payload}-byte payload",
                w.worker_id,
                w.bytes_up
            );
            assert!(
                w.bytes_up as f64 <= 0.5 * full_payload as f64,
                "{} > half of {full_payload}",
                w.bytes_up
            );
        }
    }
}

/// A worker killed mid-round does not stall the job: the round closes with the remaining quorum,
/// the next round proceeds, and the restarted worker rejoins and contributes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_does_not_stall_the_job() {
    let mut cluster = Cluster::start(
        "kill",
        3,
        &[
            "--heartbeat-interval-ms",
            "300",
            "--heartbeat-timeout-secs",
            "2",
        ],
    );
    let mut op = cluster.operator().await;
    cluster.wait_for_workers(&mut op, 3).await;
    let job = op
        .create_job(pb::CreateJobRequest {
            spec: Some(job_spec(4, 2, 60, 96)),
        })
        .await
        .unwrap()
        .into_inner();
    let mut stream = op
        .watch_job(pb::WatchJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(240), stream.message())
        .await
        .expect("round timed out")
        .unwrap()
    {
        println!(
            "round {} participants {:?} {:.1}s",
            e.round, e.participant_ids, e.seconds
        );
        if e.round == 1 {
            // Round 2 has just started with all three workers: kill one of them mid-round.
            cluster.kill_worker(0);
        }
        if e.round == 2 {
            cluster.restart_worker(0);
        }
        events.push(e);
    }
    assert_eq!(events.len(), 4, "{}", cluster.logs());
    assert_eq!(events[0].participants, 3);
    assert_eq!(
        events[1].participants, 2,
        "round 2 should close with the two live workers"
    );
    let done = op
        .get_job(pb::GetJobRequest {
            job_id: job.job_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, pb::JobState::Succeeded as i32);
    let workers = op
        .list_workers(pb::ListWorkersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .workers;
    let rejoined = workers
        .iter()
        .find(|w| w.worker_name == "e2e-0")
        .expect("worker e2e-0 rejoined");
    assert_ne!(rejoined.state, "gone");
    assert!(
        events[2..].iter().any(|e| e.participants == 3),
        "the restarted worker never contributed again: {:?}",
        events
            .iter()
            .map(|e| &e.participant_ids)
            .collect::<Vec<_>>()
    );
}

/// Bytes of `values` values in int8 with one f32 scale per 256 values.
fn int8_bytes(values: u64) -> u64 {
    values + 4 * values.div_ceil(256)
}

/// A compressed federation with real processes: int8 delta uploads (error feedback on) and f16
/// downloads. Every worker's bytes in every round are what the encodings imply, summed over the
/// exchanged tensors (int8: one byte per value plus a 4-byte scale per 256 values of each tensor;
/// f16: two bytes per value), within 1% plus 16 KiB of framing (headers and message overhead);
/// the full-filter f32 equivalents are reported; and the model still learns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int8_uploads_and_f16_downloads() {
    let cluster = Cluster::start("compressed", 2, &[]);
    let mut op = cluster.operator().await;
    cluster.wait_for_workers(&mut op, 2).await;
    let spec = pb::JobSpec {
        upload_encoding: pb::Encoding::Int8Scaled as i32,
        download_encoding: pb::Encoding::F16 as i32,
        ..job_spec(3, 2, 300, 320)
    };
    let job = op
        .create_job(pb::CreateJobRequest { spec: Some(spec) })
        .await
        .unwrap()
        .into_inner();
    let mut stream = op
        .watch_job(pb::WatchJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(300), stream.message())
        .await
        .expect("round timed out")
        .unwrap()
    {
        println!(
            "round {} acc {:.3} up {:?} down {:?}",
            e.round,
            e.test_accuracy,
            e.workers.iter().map(|w| w.bytes_up).collect::<Vec<_>>(),
            e.workers.iter().map(|w| w.bytes_down).collect::<Vec<_>>()
        );
        events.push(e);
    }
    assert_eq!(events.len(), 3, "{}", cluster.logs());
    // The exchanged tensors' sizes, from the exact model.
    let global = support::export(&mut op, &job.job_id).await;
    // With averaged batch norm every variable of the model travels, so the export is the
    // exchanged set (checked against the job's count).
    let exchanged: Vec<u64> = global
        .tensors()
        .iter()
        .map(|t| t.values.len() as u64)
        .collect();
    assert_eq!(exchanged.iter().sum::<u64>(), job.exchanged_values);
    let up_payload: u64 = exchanged.iter().map(|n| int8_bytes(*n)).sum();
    let down_payload: u64 = exchanged.iter().map(|n| 2 * n).sum();
    let within =
        |bytes: u64, payload: u64| bytes >= payload && bytes <= payload + payload / 100 + 16_384;
    let full_f32 = 4 * job.full_filter_exchanged_values;
    for e in &events {
        assert_eq!(e.participants, 2, "round {}", e.round);
        for w in &e.workers {
            assert!(
                within(w.bytes_up, up_payload),
                "round {} worker {}: {} bytes up for an int8 payload of {up_payload}",
                e.round,
                w.worker_id,
                w.bytes_up
            );
            assert!(
                within(w.bytes_down, down_payload),
                "round {} worker {}: {} bytes down for an f16 payload of {down_payload}",
                e.round,
                w.worker_id,
                w.bytes_down
            );
            assert_eq!(w.full_filter_f32_bytes, full_f32);
        }
        assert_eq!(e.full_filter_f32_bytes_up, 2 * full_f32);
        assert_eq!(e.full_filter_f32_bytes_down, 2 * full_f32);
    }
    assert!(
        events[2].test_accuracy > events[0].test_accuracy,
        "accuracy {} -> {}",
        events[0].test_accuracy,
        events[2].test_accuracy
    );
}
