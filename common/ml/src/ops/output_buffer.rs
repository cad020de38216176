//! Output buffers that a kernel writes in full, allocated without zeroing.
//!
//! `vec![0.0; len]` zeroes every activation and gradient buffer only for the kernel to overwrite
//! it: a `memset` of each one, 7% of a ResNet-20 training step in `perf`.

use std::mem::MaybeUninit;

/// `len` floats that are not yet written.
pub struct OutputBuffer(Box<[MaybeUninit<f32>]>);

impl OutputBuffer {
    pub fn new(len: usize) -> Self {
        Self(Box::new_uninit_slice(len))
    }

    pub fn as_mut_slice(&mut self) -> &mut [MaybeUninit<f32>] {
        &mut self.0
    }

    /// The written floats.
    ///
    /// # Safety
    /// Every element must have been written.
    pub unsafe fn assume_written(self) -> Vec<f32> {
        // SAFETY: the caller guarantees every element is initialised.
        unsafe { self.0.assume_init() }.into_vec()
    }
}

/// Views initialised floats as write-only slots, so that one copy routine serves both fresh
/// outputs and reused scratch.
pub fn as_slots(buf: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and through the returned slice only
    // initialised `f32` values can be written (never `uninit()`, as the slots are only used
    // with `MaybeUninit::write` and whole initialised values), so `buf` stays initialised.
    unsafe { &mut *(buf as *mut [f32] as *mut [MaybeUninit<f32>]) }
}
