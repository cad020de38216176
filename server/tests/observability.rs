//! What operators see: Prometheus metrics scraped during a real job (real coordinator and worker
//! processes) and checked with the Python Prometheus parser, the dashboard's JSON API and its
//! token rule, and the dashboard in a real headless Chromium.
//!
//! Needs python3 with `pip install -r tests/python/requirements.txt` (prometheus_client,
//! selenium) and Debian's `chromium` and `chromium-driver`; `.ci/run` installs them.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fedcsg_wire::proto::v1 as pb;
use serde_json::Value;
use support::cluster::Cluster;
use support::fake_worker::FakeWorker;
use support::http::{free_port, get};

const TOKEN: &str = "dashboard-admin-token";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// One sample of a parsed exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// `/metrics` at `addr`, parsed by prometheus_client's OpenMetrics parser
/// (tests/python/parse_metrics.py).
async fn scrape(addr: &str) -> Vec<Sample> {
    let (status, text) = get(addr, "/metrics", None).await;
    assert_eq!(status, 200, "{text}");
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/python/parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (pip install -r tests/python/requirements.txt)");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics of {addr}:\n{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .into_iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_string(),
            labels: serde_json::from_value(s["labels"].clone()).unwrap(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect()
}

/// The value of the sample `name` with exactly `labels` (0 when absent: a counter family that
/// has seen no label set yet).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map_or(0.0, |s| s.value)
}

fn has(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|s| s.name == name)
}

/// A 3-worker job with the coordinator's and one worker's metrics on: the round counter equals
/// the committed rounds, the byte counters equal the API's per-round bytes, and hostile uploads
/// raise the rejected counter by their reason (and change nothing else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_real_job() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let worker_metrics = format!("127.0.0.1:{}", free_port());
    let cluster = Cluster::start_with(
        "metrics",
        3,
        &["--metrics-listen", &metrics],
        vec![vec!["--metrics-listen".into(), worker_metrics.clone()]],
    );
    let mut op = cluster.operator().await;
    cluster.wait_for_workers(&mut op, 3).await;
    let before = scrape(&metrics).await;
    assert_eq!(value(&before, "fedcsg_rounds_committed_total", &[]), 0.0);
    assert_eq!(value(&before, "fedcsg_workers", &[("state", "idle")]), 3.0);
    let spec = support::job_spec(
        "metrics",
        support::JobShape {
            rounds: 3,
            min_workers: 3,
            deadline_seconds: 300,
            max_samples: 160,
            seed: 5,
        },
    );
    let job = op
        .create_job(pb::CreateJobRequest { spec: Some(spec) })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    // Scraped while the job runs, until it has committed a round.
    let started = Instant::now();
    loop {
        let during = scrape(&metrics).await;
        if value(&during, "fedcsg_rounds_committed_total", &[]) >= 1.0 {
            assert_eq!(
                value(&during, "fedcsg_jobs", &[("state", "running")])
                    + value(&during, "fedcsg_jobs", &[("state", "succeeded")]),
                1.0
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no round committed\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rounds = support::in_process::watch_rounds(&mut op, &job).await;
    assert_eq!(rounds.len(), 3, "{}", cluster.logs());

    let after = scrape(&metrics).await;
    let sum = |f: fn(&pb::RoundEvent) -> u64| rounds.iter().map(f).sum::<u64>() as f64;
    assert_eq!(value(&after, "fedcsg_rounds_committed_total", &[]), 3.0);
    assert_eq!(
        value(&after, "fedcsg_round_up_bytes_total", &[]),
        sum(|e| e.bytes_up)
    );
    assert_eq!(
        value(&after, "fedcsg_round_down_bytes_total", &[]),
        sum(|e| e.bytes_down)
    );
    assert_eq!(
        value(&after, "fedcsg_round_full_filter_f32_up_bytes_total", &[]),
        sum(|e| e.full_filter_f32_bytes_up)
    );
    assert_eq!(
        value(&after, "fedcsg_updates_accepted_total", &[]),
        sum(|e| e.participants as u64)
    );
    assert_eq!(value(&after, "fedcsg_round_participants_count", &[]), 3.0);
    assert_eq!(value(&after, "fedcsg_round_participants_sum", &[]), 9.0);
    assert_eq!(value(&after, "fedcsg_jobs", &[("state", "succeeded")]), 1.0);
    assert_eq!(
        value(&after, "fedcsg_round_duration_seconds_count", &[]),
        3.0
    );
    let heartbeat = [
        ("service", "fedcsg.v1.WorkerService"),
        ("method", "Heartbeat"),
    ];
    assert!(value(&after, "fedcsg_rpc_duration_seconds_count", &heartbeat) > 0.0);
    let uploads = [
        ("service", "fedcsg.v1.WorkerService"),
        ("method", "UploadUpdate"),
    ];
    assert_eq!(
        value(&after, "fedcsg_rpc_duration_seconds_count", &uploads),
        9.0
    );
    assert!(has(&after, "fedcsg_aggregation_duration_seconds_bucket"));

    // Hostile uploads: data before any header, and a header with a wrong session token.
    let model_before = support::export(&mut op, &job).await.fingerprint();
    let mut hostile = FakeWorker::join(&cluster.url, "hostile").await;
    let data_first = vec![pb::UpdateChunk {
        part: Some(pb::update_chunk::Part::Data(vec![1, 2, 3])),
    }];
    let refused = hostile
        .client
        .upload_update(support::authed(
            tokio_stream::iter(data_first),
            &hostile.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let header = pb::UpdateHeader {
        worker_id: hostile.id.clone(),
        job_id: job.clone(),
        round: 3,
        round_token: "forged".into(),
        ..Default::default()
    };
    let forged = vec![pb::UpdateChunk {
        part: Some(pb::update_chunk::Part::Header(header)),
    }];
    let refused = hostile
        .client
        .upload_update(support::authed(
            tokio_stream::iter(forged),
            "not-the-session-token",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let hostile_after = scrape(&metrics).await;
    for reason in ["invalid_argument", "unauthenticated"] {
        let labels = [("reason", reason)];
        assert_eq!(
            value(&hostile_after, "fedcsg_updates_rejected_total", &labels),
            value(&after, "fedcsg_updates_rejected_total", &labels) + 1.0,
            "{reason}"
        );
    }
    assert_eq!(
        value(&hostile_after, "fedcsg_updates_accepted_total", &[]),
        9.0
    );
    assert_eq!(
        value(&hostile_after, "fedcsg_rounds_committed_total", &[]),
        3.0
    );
    assert_eq!(
        support::export(&mut op, &job).await.fingerprint(),
        model_before
    );
    let workers = support::fake_worker::workers(&mut op).await.len() as f64;
    let listed: f64 = ["idle", "training", "evaluating", "gone", "left"]
        .iter()
        .map(|s| value(&hostile_after, "fedcsg_workers", &[("state", s)]))
        .sum();
    assert_eq!(listed, workers);

    // `fedcsg plot` against the live coordinator draws the same three rounds.
    let svg = cluster.dir.join("job.svg");
    let plot = Command::new(support::bin("fedcsg"))
        .args(["plot", &job, "--coordinator", &cluster.url, "--out"])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        plot.status.success(),
        "fedcsg plot: {}",
        String::from_utf8_lossy(&plot.stderr)
    );
    assert!(String::from_utf8_lossy(&plot.stdout).contains("plot of 3 rounds"));
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.contains("MB per round") && svg.contains(&job),
        "an SVG of the job"
    );

    // The worker with --metrics-listen trained every round and counted its bytes as the
    // coordinator did.
    let w = scrape(&worker_metrics).await;
    assert_eq!(value(&w, "fedcsg_worker_rounds_trained_total", &[]), 3.0);
    assert_eq!(value(&w, "fedcsg_worker_joins_total", &[]), 1.0);
    assert!(value(&w, "fedcsg_worker_train_images_per_second", &[]) > 0.0);
    assert!(value(&w, "fedcsg_worker_train_step_duration_seconds_count", &[]) >= 3.0);
    // Worker 0 (e2e-0) counted exactly its uploads and downloads as the coordinator did.
    let id = support::fake_worker::workers(&mut op)
        .await
        .into_iter()
        .find(|w| w.worker_name == "e2e-0")
        .unwrap()
        .worker_id;
    let of_worker0 = |f: fn(&pb::WorkerRoundStats) -> u64| {
        rounds
            .iter()
            .flat_map(|e| e.workers.iter().filter(|s| s.worker_id == id).map(f))
            .sum::<u64>() as f64
    };
    assert_eq!(
        value(&w, "fedcsg_worker_upload_bytes_total", &[]),
        of_worker0(|s| s.bytes_up)
    );
    assert_eq!(
        value(&w, "fedcsg_worker_download_bytes_total", &[]),
        of_worker0(|s| s.bytes_down)
    );
}

/// The dashboard's JSON API needs the admin token (and says so), serves the page without it,
/// and answers bad requests with JSON errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_api_needs_the_admin_token() {
    let dashboard = format!("127.0.0.1:{}", free_port());
    let args = fedcsg_server::config::CoordinatorArgs {
        data: Some("none".into()),
        admin_token: Some(TOKEN.into()),
        dashboard_listen: Some(dashboard.clone()),
        metrics_listen: Some(dashboard.clone()),
        ..Default::default()
    };
    let (url, _stop) = support::start_with(args).await;
    let mut op = support::operator(&url).await;
    let job = op
        .create_job(support::authed(
            pb::CreateJobRequest {
                spec: Some(support::hostile::spec()),
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let (status, body) = get(&dashboard, "/api/overview", None).await;
    assert_eq!(status, 401, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("admin token"),
        "{body}"
    );
    let (status, body) = get(&dashboard, "/api/overview", Some("wrong-token-1234")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not valid"), "{body}");
    let (status, body) = get(&dashboard, &format!("/api/jobs/{job}"), None).await;
    assert_eq!(status, 401, "{body}");

    let (status, body) = get(&dashboard, "/api/overview", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let overview: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(overview["coordinator"]["token_required"], true);
    assert_eq!(overview["jobs"][0]["id"], job.as_str());
    assert_eq!(overview["jobs"][0]["state"], "pending");
    let (status, body) = get(
        &dashboard,
        &format!("/api/jobs/{job}?last_rounds=5"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let detail: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["job"]["id"], job.as_str());
    assert_eq!(detail["rounds"].as_array().unwrap().len(), 0);
    let (status, body) = get(&dashboard, "/api/jobs/no-such-job", Some(TOKEN)).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no-such-job"), "{body}");
    let (status, body) = get(
        &dashboard,
        &format!("/api/jobs/{job}?last_rounds=5000"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("last_rounds"), "{body}");

    // The page and its assets hold no data and need no token; /metrics shares the port.
    let (status, page) = get(&dashboard, "/", None).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("app.js") && page.contains("token-form"),
        "{page}"
    );
    assert_eq!(get(&dashboard, "/app.js", None).await.0, 200);
    let (status, text) = get(&dashboard, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(text.contains("fedcsg_jobs{state=\"pending\"} 1"), "{text}");
}

/// The dashboard in headless Chromium during a real job: the token is required, then the job
/// row, the round table and a chart with points appear (tests/python/dashboard_browser_test.py,
/// Selenium with Debian's chromium-driver). Saves a screenshot to $FEDCSG_ARTIFACT_DIR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    let dashboard = format!("127.0.0.1:{}", free_port());
    let cluster = Cluster::start(
        "dashboard",
        3,
        &["--dashboard-listen", &dashboard, "--admin-token", TOKEN],
    );
    let mut op = cluster.operator().await;
    let spec = support::job_spec(
        "dashboard",
        support::JobShape {
            rounds: 4,
            min_workers: 3,
            deadline_seconds: 300,
            max_samples: 160,
            seed: 6,
        },
    );
    let job = op
        .create_job(support::authed(
            pb::CreateJobRequest { spec: Some(spec) },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let artifacts = std::env::var("FEDCSG_ARTIFACT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("fedcsg-artifacts"));
    let script = repo_root().join("tests/python/dashboard_browser_test.py");
    let started = Instant::now();
    let out = tokio::process::Command::new(python())
        .arg(&script)
        .env("FEDCSG_DASHBOARD_URL", format!("http://{dashboard}/"))
        .env("FEDCSG_ADMIN_TOKEN", TOKEN)
        .env("FEDCSG_JOB_ID", &job)
        .env("FEDCSG_ARTIFACT_DIR", &artifacts)
        .env("PYTHONUNBUFFERED", "1")
        .output()
        .await
        .expect("python3 runs");
    println!(
        "----- {} ({:.1} s) -----\n{}\n{}",
        script.display(),
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the browser test failed ({}); it needs Debian's chromium and chromium-driver and \
         `pip install -r tests/python/requirements.txt` (selenium); screenshots in {}\n{}",
        out.status,
        artifacts.display(),
        cluster.logs()
    );
    assert!(artifacts.join("dashboard.png").is_file());
}
