//! `fedcsg simulate` with the real binary: many virtual clients in one process, and the same
//! job giving the same bytes (and the same model) as real worker processes under `fedcsg local`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fedcsg() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fedcsg"))
}

/// Runs `fedcsg ARGS --summary-json FILE` and returns the summary.
fn run(args: &[&str], summary: &Path) -> Value {
    let out = Command::new(fedcsg())
        .args(args)
        .arg("--summary-json")
        .arg(summary)
        .output()
        .expect("fedcsg runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fedcsg {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(summary).expect("summary written"))
        .expect("summary is JSON")
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "fedcsg-simulate-{name}-{}.json",
        std::process::id()
    ))
}

/// 50 clients, a fifth of them per round, 3 rounds on the bundled data: exactly 10 clients
/// train each round, the model learns, and every client evaluates each round's model on its
/// held-out split.
#[test]
fn fifty_clients_train_ten_per_round_and_learn() {
    let path = temp("fifty");
    let s = run(
        &[
            "simulate",
            "--clients",
            "50",
            "--fraction",
            "0.2",
            "--rounds",
            "3",
            "--local-epochs",
            "2",
            "--batch",
            "16",
            "--federated-eval",
            "--link",
            "10mbit/25ms",
        ],
        &path,
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(s["state"], "JOB_STATE_SUCCEEDED");
    assert_eq!(s["simulation"]["clients"], 50);
    assert_eq!(s["simulation"]["train_tasks"], 30);
    assert_eq!(s["simulation"]["evaluation_tasks"], 150);
    assert_eq!(s["simulation"]["failed_tasks"], 0);
    let rounds = s["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 3);
    let mut seen = std::collections::HashSet::new();
    for r in rounds {
        assert_eq!(r["sampled"], 10, "{r}");
        assert_eq!(r["participants"], 10, "{r}");
        let workers = r["workers"].as_array().unwrap();
        assert_eq!(workers.len(), 10);
        seen.extend(
            workers
                .iter()
                .map(|w| w["worker_id"].as_str().unwrap().to_owned()),
        );
        // The round's bytes are its participants' bytes.
        let up: u64 = workers
            .iter()
            .map(|w| w["bytes_up"].as_u64().unwrap())
            .sum();
        assert_eq!(r["bytes_up"].as_u64().unwrap(), up);
        let e = &r["client_evaluation"];
        assert_eq!(e["clients"], 50, "every client evaluates: {e}");
        let (worst, mean) = (
            e["worst_accuracy"].as_f64().unwrap(),
            e["mean_accuracy"].as_f64().unwrap(),
        );
        assert!(
            worst <= mean && mean <= 1.0 && e["loss"].as_f64().unwrap() > 0.0,
            "{e}"
        );
        // Over a 10 Mbit/s link a round moves about a megabyte per client: more than 0.7 s.
        let simulated = r["simulated_seconds"].as_f64().unwrap();
        assert!(
            r["simulated_transfer_seconds"].as_f64().unwrap() > 0.7,
            "{r}"
        );
        assert!(simulated > r["simulated_transfer_seconds"].as_f64().unwrap());
    }
    assert!(seen.len() > 10, "rounds sample different clients: {seen:?}");
    let accuracy: Vec<f64> = rounds
        .iter()
        .map(|r| r["test_accuracy"].as_f64().unwrap())
        .collect();
    assert!(
        accuracy[2] > accuracy[0] + 0.2,
        "accuracy must rise over the rounds: {accuracy:?}"
    );
    let cumulative: Vec<f64> = rounds
        .iter()
        .map(|r| r["cumulative_bytes_per_client"].as_f64().unwrap())
        .collect();
    assert!(cumulative[0] > 0.0 && cumulative[2] > cumulative[1] && cumulative[1] > cumulative[0]);
}

/// The same job, on two real worker processes (`fedcsg local`) and on two simulated clients:
/// every transfer has the same size, and the rounds end in the same global model.
#[test]
fn simulated_clients_move_the_bytes_real_workers_move() {
    let job = [
        "--rounds",
        "2",
        "--max-samples",
        "128",
        "--batch",
        "16",
        "--seed",
        "3",
        "--upload-encoding",
        "f16",
    ];
    let (real_path, sim_path) = (temp("real"), temp("sim"));
    let real = run(
        &[&["local", "--workers", "2"][..], &job[..]].concat(),
        &real_path,
    );
    let sim = run(
        &[
            &["simulate", "--clients", "2", "--concurrency", "2"][..],
            &job[..],
        ]
        .concat(),
        &sim_path,
    );
    let _ = (
        std::fs::remove_file(real_path),
        std::fs::remove_file(sim_path),
    );
    let (real, sim) = (
        real["rounds"].as_array().unwrap(),
        sim["rounds"].as_array().unwrap(),
    );
    assert_eq!(real.len(), 2);
    assert_eq!(sim.len(), 2);
    for (r, s) in real.iter().zip(sim) {
        for field in [
            "bytes_up",
            "bytes_down",
            "full_filter_f32_bytes_up",
            "model_sha256",
        ] {
            assert_eq!(r[field], s[field], "round {}: {field}", r["round"]);
        }
        let (rw, sw) = (
            r["workers"].as_array().unwrap(),
            s["workers"].as_array().unwrap(),
        );
        assert_eq!(rw.len(), 2);
        for (a, b) in rw.iter().zip(sw) {
            for field in [
                "worker_id",
                "bytes_up",
                "bytes_down",
                "num_samples",
                "train_loss",
            ] {
                assert_eq!(a[field], b[field], "round {}: {field}", r["round"]);
            }
        }
    }
}
