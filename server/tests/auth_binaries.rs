//! The real binaries over mutual TLS, and no token in their logs. Started from the target
//! directory: run `cargo build --workspace --bins` first.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::auth::{ADMIN, ENROLL};
use support::pki::{pki, temp_dir, write};

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
