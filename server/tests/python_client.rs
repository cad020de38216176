//! Runs tests/python/operator_client_test.py: the operator API driven end to end by Python grpcio,
//! a client written independently of our tonic code, against the real coordinator and worker
//! binaries.
//!
//! Needs python3 with `pip install -r tests/python/requirements.txt` (grpcio, grpcio-tools,
//! grpcio-health-checking) and the worker binary next to the coordinator's
//! (`cargo build --workspace --bins`). Missing either is a failure, never a silent skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server/ has a parent")
        .to_path_buf()
}

#[test]
fn python_grpcio_client_drives_the_operator_api() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools"])
        .output();
    match probe {
        Err(e) => panic!(
            "cannot run {python}: {e}. This test needs Python 3 with: pip install grpcio grpcio-tools grpcio-health-checking"
        ),
        Ok(o) if !o.status.success() => panic!(
            "{python} cannot import grpc / grpc_tools:\n{}\nInstall them: pip install grpcio grpcio-tools grpcio-health-checking \
             (pinned in tests/python/requirements.txt)",
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(_) => {}
    }

    let coordinator = PathBuf::from(env!("CARGO_BIN_EXE_fedcsg-coordinator"));
    let bin_dir = coordinator
        .parent()
        .expect("binary has a directory")
        .to_path_buf();
    let worker = bin_dir.join(format!("fedcsg-worker{}", std::env::consts::EXE_SUFFIX));
    assert!(
        worker.is_file(),
        "{} is missing: this test starts real workers; run `cargo build --workspace --bins` first",
        worker.display()
    );

    let root = repo_root();
    let script = root.join("tests/python/operator_client_test.py");
    let started = Instant::now();
    let out = Command::new(&python)
        .arg(&script)
        .current_dir(&root)
        .env("FEDCSG_BIN_DIR", &bin_dir)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} {}: {e}", script.display()));
    println!(
        "----- {} stdout -----\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    println!(
        "----- {} stderr -----\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("took {:.1}s", started.elapsed().as_secs_f64());
    assert!(
        out.status.success(),
        "{} failed ({}): see its output above",
        script.display(),
        out.status
    );
}
