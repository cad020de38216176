//! Runs the real `fedcsg-worker` binary: bad flags are refused before anything starts, with a
//! message naming the flag and clap's usage exit code. (This test also makes `cargo test` build
//! the binary, which the coordinator's end-to-end tests start.)

use std::process::Command;

fn worker(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fedcsg-worker"))
        .args(args)
        // Keep the test independent of the caller's environment.
        .env_remove("FEDCSG_COORDINATOR")
        .env_remove("FEDCSG_PARTITION")
        .env_remove("FEDCSG_NUM_PARTITIONS")
        .env_remove("FEDCSG_PARTITION_ID")
        .output()
        .expect("the worker binary runs")
}

/// A partition id outside 0..N exits with code 2 and says which flag and which range.
#[test]
fn out_of_range_partition_id_is_a_usage_error() {
    let out = worker(&["--num-partitions", "2", "--partition-id", "5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("invalid --partition-id") && stderr.contains("0..=1"),
        "stderr: {stderr}"
    );
}

/// A misspelled scheme, an unknown flag and a bad URL are all refused with exit code 2.
#[test]
fn bad_values_and_unknown_flags_are_usage_errors() {
    for (args, expected) in [
        (&["--partition", "dirichlet"][..], "invalid --partition"),
        (&["--coordinator", "localhost:7070"][..], "missing scheme"),
        (&["--conv", "slow"][..], "possible values: fast, reference"),
        (
            &["--no-such-flag"][..],
            "unexpected argument '--no-such-flag'",
        ),
    ] {
        let out = worker(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
    }
}

/// `--help` lists every flag with its environment variable.
#[test]
fn help_names_flags_and_environment_variables() {
    let out = worker(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--coordinator",
        "--name",
        "--data",
        "--partition",
        "--num-partitions",
        "--partition-id",
        "--seed",
        "--token",
        "--log-format",
        "--max-retry-seconds",
        "--conv",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(
        help.contains("FEDCSG_COORDINATOR") && help.contains("FEDCSG_TOKEN"),
        "{help}"
    );
}
