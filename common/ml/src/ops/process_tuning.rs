//! Process-wide settings that make CPU training fast, applied once at the start of `main`.
//!
//! Both settings change process-global state that other threads may read without locks
//! (`setenv` against C's `getenv`; glibc documents `mallopt` as MT-Unsafe), so they are only
//! sound while the process has a single thread. Rather than make every binary promise that in an
//! `unsafe` block, [`tune_process_for_training`] counts the process's threads itself and changes
//! nothing unless the caller's thread is the only one.

/// What [`tune_process_for_training`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessTuning {
    /// The process had one thread: the settings the user had not chosen themselves are applied.
    Applied,
    /// Other threads were running (`threads`), or the count could not be read (`None`, as on
    /// platforms other than Linux): the environment and the allocator were left alone.
    Skipped { threads: Option<usize> },
}

/// Prepares the process for training on the CPU. Call it first thing in `main`, before any
/// thread exists; called later, it changes nothing, says so on stderr and returns
/// [`ProcessTuning::Skipped`] (callers may ignore the result).
///
/// - `CANDLE_NUM_THREADS=1` unless the user chose a value: candle 0.11's own elementwise thread
///   pool spins after every op and competes with our kernels' rayon workers for the cores; with
///   it off, training steps were 1.5-2x faster under load (bench/README.md).
/// - glibc malloc keeps freed memory for reuse instead of returning it to the kernel: a training
///   step allocates and frees dozens of multi-megabyte activation and gradient buffers, and by
///   default each one is a fresh `mmap` whose every page faults in and is zeroed by the kernel
///   (15% of a ResNet-20 step in `perf`). The cost is that peak memory stays reserved.
pub fn tune_process_for_training() -> ProcessTuning {
    let threads = thread_count();
    if threads != Some(1) {
        let counted = threads.map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string());
        eprintln!(
            "fedcsg: process tuning skipped: {counted} threads are running, and the environment \
             and allocator settings may only change while there is one (call \
             tune_process_for_training first thing in main)"
        );
        return ProcessTuning::Skipped { threads };
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: `thread_count` just found this thread to be the process's only one. Only a
        // running thread can start another, and this one starts none before `set_var` returns,
        // so no other thread can read or write the environment meanwhile.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    // SAFETY: as above, this is still the process's only thread.
    unsafe { keep_freed_memory() };
    ProcessTuning::Applied
}

/// Threads of this process, from the `Threads:` line of `/proc/self/status`.
#[cfg(target_os = "linux")]
fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// Unknown off Linux: the tuning is then skipped rather than risked.
#[cfg(not(target_os = "linux"))]
fn thread_count() -> Option<usize> {
    None
}

/// Buffers up to 32 MiB (glibc's largest allowed threshold) come from the heap rather than their
/// own mapping, and the heap is trimmed only when 512 MiB at its top are free. An explicit
/// `GLIBC_TUNABLES` setting wins.
///
/// # Safety
/// The calling thread must be the process's only thread: glibc documents `mallopt` as
/// MT-Unsafe.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe fn keep_freed_memory() {
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    // SAFETY: mallopt only changes allocator parameters, and the caller guarantees no other
    // thread runs (so none is inside malloc or reading these parameters).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// # Safety
/// None needed: nothing to tune off glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
unsafe fn keep_freed_memory() {}

#[cfg(test)]
mod tests {
    //! The applied path needs a process with a single thread, which a test harness is not: see
    //! `tests/process_tuning.rs` (a test binary without the harness).

    use std::sync::mpsc;

    use super::*;

    /// Proves that with a second thread alive the tuning changes nothing and says so.
    #[test]
    fn a_second_thread_makes_the_tuning_skip() {
        let (release, wait) = mpsc::channel::<()>();
        let helper = std::thread::spawn(move || {
            let _ = wait.recv();
        });
        let before = std::env::var_os("CANDLE_NUM_THREADS");
        let outcome = tune_process_for_training();
        let after = std::env::var_os("CANDLE_NUM_THREADS");
        drop(release);
        helper.join().expect("helper thread");
        #[cfg(target_os = "linux")]
        assert!(
            matches!(outcome, ProcessTuning::Skipped { threads: Some(n) } if n >= 2),
            "{outcome:?}"
        );
        #[cfg(not(target_os = "linux"))]
        assert_eq!(outcome, ProcessTuning::Skipped { threads: None });
        assert_eq!(before, after, "the environment must stay as it was");
    }

    /// Proves the count sees threads this process starts.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_thread_count_sees_a_started_thread() {
        let (release, wait) = mpsc::channel::<()>();
        let helper = std::thread::spawn(move || {
            let _ = wait.recv();
        });
        let count = thread_count();
        drop(release);
        helper.join().expect("helper thread");
        assert!(matches!(count, Some(n) if n >= 2), "{count:?}");
    }
}
