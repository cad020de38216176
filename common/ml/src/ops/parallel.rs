//! Runs the kernels' independent pieces on candle's own CPU worker pool.
//!
//! candle 0.11 runs its elementwise ops on a private barrier pool (the calling thread plus
//! `CANDLE_NUM_THREADS - 1` workers that spin for a while after each op). Running our kernels on
//! rayon's pool instead would put two sets of busy threads on the same cores and have them fight
//! (measured: a third of the step in spin loops). Sharing candle's pool keeps one thread per core.
//! With `CANDLE_NUM_THREADS=1` candle's pool has no workers and its elementwise ops run on the
//! calling thread; the kernels here then use rayon's pool (`RAYON_NUM_THREADS`) instead, which
//! parks idle threads rather than spinning: the better choice on a machine shared with other work.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Mutex;

use candle_core::utils::barrier_pool;

/// Threads that `for_each_index` spreads work over (the caller included).
pub fn threads() -> usize {
    match barrier_pool().n_workers() {
        0 => rayon::current_num_threads(),
        workers => workers + 1,
    }
}

/// Sizes the kernels' pool (rayon's global pool) to `n` threads. Call it before any training
/// (the pool is built on first use and cannot be resized); it fails once the pool exists. With
/// `CANDLE_NUM_THREADS` above 1 the kernels run on candle's pool instead (see above).
pub fn set_kernel_threads(n: usize) -> Result<(), rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
}

/// Calls `f(i)` for every `i < n`, in parallel, each index exactly once.
pub fn for_each_index(n: usize, f: impl Fn(usize) + Sync) {
    let pool = barrier_pool();
    if pool.n_workers() > 0 {
        pool.execute_chunked(n, |range: Range<usize>| range.for_each(&f));
    } else {
        use rayon::prelude::*;
        (0..n).into_par_iter().for_each(&f);
    }
}

/// Calls `f(i, &mut parts[i])` for every part, in parallel (parts are usually `&mut` slices).
pub fn for_each_part<P: Send>(parts: Vec<P>, f: impl Fn(usize, &mut P) + Sync) {
    // One uncontended lock per part hands each part to exactly one thread.
    let parts: Vec<Mutex<P>> = parts.into_iter().map(Mutex::new).collect();
    for_each_index(parts.len(), |i| {
        let mut part = parts[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(i, &mut part);
    });
}

thread_local! {
    /// Per-thread scratch (im2col columns): reused across calls so that the hot loop never
    /// allocates, and sized to the largest layer it has seen.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer resized to `len` (contents unspecified).
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        // Re-entered on the same thread (a kernel inside a kernel): use a fresh buffer.
        Err(_) => f(&mut vec![0.0; len]),
    })
}
