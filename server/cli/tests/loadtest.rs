//! `fedcsg loadtest` with the real binaries: 200 synthetic workers over real gRPC against a real
//! coordinator process, every worker in every round of a CSG 12-72 ResNet-20 job. Every round
//! commits with every worker's update, no call fails, and the figures the report is for are
//! measured (the values themselves are in bench/README.md, not asserted: this is not a timing
//! test).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

#[test]
fn two_hundred_synthetic_workers_commit_every_round() {
    let summary = std::env::temp_dir().join(format!("fedcsg-loadtest-{}.json", std::process::id()));
    let out = Command::new(PathBuf::from(env!("CARGO_BIN_EXE_fedcsg")))
        .args([
            "loadtest",
            "--workers",
            "200",
            "--rounds",
            "3",
            "--think-ms",
            "200",
        ])
        .arg("--summary-json")
        .arg(&summary)
        .output()
        .expect("fedcsg runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadtest failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let _ = std::fs::remove_file(&summary);
    assert_eq!(s["state"], "JOB_STATE_SUCCEEDED", "{s}");
    assert_eq!(s["rounds_committed"], 3);
    assert_eq!(s["failed_requests"], 0, "{s}");
    // Every worker's update went up in every round: 200 updates of the exchanged tensors.
    let per_round = s["bytes_up"].as_u64().unwrap() / 3;
    assert!(per_round > 200 * 400_000, "{per_round} bytes up per round");
    for figure in ["round_latency_ms", "heartbeat_ms"] {
        assert!(
            s[figure]["p99"].as_f64().is_some(),
            "{figure} not measured: {s}"
        );
    }
    assert!(s["coordinator_cpu_seconds"].as_f64().unwrap() > 0.0);
    assert!(s["coordinator_peak_rss_kib"].as_u64().unwrap() > 0);
}
