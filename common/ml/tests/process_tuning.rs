//! Proves that `tune_process_for_training`, called first thing in `main` as the binaries do,
//! applies its settings. A plain `main` (this test has no harness, see Cargo.toml): the test
//! harness runs tests on threads of its own, and the tuning applies only while the process has
//! a single thread.

use fedcsg_ml::ops::{ProcessTuning, tune_process_for_training};

fn main() {
    let chosen = std::env::var_os("CANDLE_NUM_THREADS");
    let outcome = tune_process_for_training();
    if cfg!(target_os = "linux") {
        assert_eq!(outcome, ProcessTuning::Applied);
        // A value the user chose wins; otherwise candle's pool is turned off.
        let expected = chosen.unwrap_or_else(|| "1".into());
        assert_eq!(std::env::var_os("CANDLE_NUM_THREADS"), Some(expected));
    } else {
        // Off Linux the thread count is unknown, and nothing may change.
        assert_eq!(outcome, ProcessTuning::Skipped { threads: None });
        assert_eq!(std::env::var_os("CANDLE_NUM_THREADS"), chosen);
    }
    println!("process_tuning: {outcome:?}: ok");
}
