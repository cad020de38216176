//! Process-wide settings that make CPU training fast, applied once at the start of `main`.

/// Prepares the process for training on the CPU. Call it first thing in `main`, before any
/// thread exists.
///
/// - `CANDLE_NUM_THREADS=1` unless the user chose a value: candle 0.11's own elementwise thread
///   pool spins after every op and competes with our kernels' rayon workers for the cores; with
///   it off, training steps were 1.5-2x faster under load (bench/README.md).
/// - glibc malloc keeps freed memory for reuse instead of returning it to the kernel: a training
///   step allocates and frees dozens of multi-megabyte activation and gradient buffers, and by
///   default each one is a fresh `mmap` whose every page faults in and is zeroed by the kernel
///   (15% of a ResNet-20 step in `perf`). The cost is that peak memory stays reserved.
pub fn tune_process_for_training() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called at the start of main, before the process starts any other thread.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    keep_freed_memory();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // Buffers up to 32 MiB (glibc's largest allowed threshold) come from the heap rather than
    // their own mapping, and the heap is trimmed only when 512 MiB at its top are free. An
    // explicit GLIBC_TUNABLES setting wins.
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
