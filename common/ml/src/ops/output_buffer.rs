//! Output buffers that a kernel writes in full, allocated without zeroing, and the write-only
//! slots through which kernels fill them.
//!
//! `vec![0.0; len]` zeroes every activation and gradient buffer only for the kernel to overwrite
//! it: a `memset` of each one, 7% of a ResNet-20 training step in `perf`.
//!
//! [`OutSlots`] is the one way to write into an [`OutputBuffer`], and also serves initialised
//! scratch (`OutSlots::from(&mut [f32])`), so that one copy routine fills both. It can only store
//! whole `f32` values, never `MaybeUninit::uninit()`, so handing it initialised memory is safe.
//!
//! In debug builds (which include `cargo test`: the dev profile keeps debug assertions) a fresh
//! buffer is filled with [`UNWRITTEN`], and [`OutputBuffer::assume_written`] panics if any slot
//! still holds it, so a kernel that forgets part of its output fails its tests instead of
//! returning uninitialised memory.

use std::mem::MaybeUninit;
use std::ops::Range;

/// The bits a fresh buffer holds in debug builds: a signalling NaN with a distinctive payload.
/// Arithmetic never produces it (x86 and ARM quiet every NaN they compute, setting bit 22), so
/// only an unwritten slot, or a bit-exact copy of this very value from an input, holds it.
pub const UNWRITTEN_BITS: u32 = 0x7FA5_A5A5;

/// [`UNWRITTEN_BITS`] as a float.
pub const UNWRITTEN: f32 = f32::from_bits(UNWRITTEN_BITS);

/// `len` floats that are not yet written.
pub struct OutputBuffer(Box<[MaybeUninit<f32>]>);

impl OutputBuffer {
    pub fn new(len: usize) -> Self {
        let mut slots = Box::new_uninit_slice(len);
        if cfg!(debug_assertions) {
            slots.fill(MaybeUninit::new(UNWRITTEN));
        }
        Self(slots)
    }

    /// Write-only access to every slot.
    pub fn slots(&mut self) -> OutSlots<'_> {
        OutSlots(&mut self.0)
    }

    /// The written floats.
    ///
    /// # Panics
    /// In debug builds, if any slot still holds [`UNWRITTEN`] (see the module doc).
    ///
    /// # Safety
    /// Every element must have been written (through [`OutputBuffer::slots`]). In debug builds
    /// every element is initialised from the start (with [`UNWRITTEN`]), so there a missed
    /// element is a panic rather than undefined behaviour.
    #[track_caller] // The panic names the kernel that called this.
    pub unsafe fn assume_written(self) -> Vec<f32> {
        // SAFETY: the caller guarantees every element is initialised (and in debug builds
        // `new` initialised them all).
        let written = unsafe { self.0.assume_init() }.into_vec();
        if cfg!(debug_assertions) {
            let unwritten = written
                .iter()
                .filter(|v| v.to_bits() == UNWRITTEN_BITS)
                .count();
            assert!(
                unwritten == 0,
                "kernel bug: {unwritten} of {} output slots were never written (they still hold \
                 the debug fill pattern {UNWRITTEN_BITS:#010x})",
                written.len()
            );
        }
        written
    }
}

/// Write-only floats: either slots of an [`OutputBuffer`] or initialised `f32`s
/// (`OutSlots::from(&mut [f32])`). Every method stores whole `f32` values, so initialised memory
/// stays initialised, and nothing can be read back.
///
/// Handing out `&mut OutSlots` is fine: swapping two of them swaps the borrows, not the floats.
pub struct OutSlots<'a>(&'a mut [MaybeUninit<f32>]);

impl<'a> From<&'a mut [f32]> for OutSlots<'a> {
    fn from(buf: &'a mut [f32]) -> Self {
        // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and `OutSlots` only ever stores
        // initialised `f32` values through it (it never exposes the `MaybeUninit` slice), so
        // `buf` stays initialised.
        Self(unsafe { &mut *(buf as *mut [f32] as *mut [MaybeUninit<f32>]) })
    }
}

impl<'a> OutSlots<'a> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Stores `value` in slot `i` (panics if `i` is out of bounds).
    #[inline(always)]
    pub fn write(&mut self, i: usize, value: f32) {
        self.0[i].write(value);
    }

    /// The slots of `range` (panics if it is out of bounds), borrowed from these.
    #[inline(always)]
    pub fn slice(&mut self, range: Range<usize>) -> OutSlots<'_> {
        OutSlots(&mut self.0[range])
    }

    /// These slots again, for a call that takes `OutSlots` by value.
    #[inline(always)]
    pub fn reborrow(&mut self) -> OutSlots<'_> {
        OutSlots(&mut *self.0)
    }

    /// The first `mid` slots and the rest (panics if `mid > len`).
    pub fn split_at(self, mid: usize) -> (OutSlots<'a>, OutSlots<'a>) {
        let (head, tail) = self.0.split_at_mut(mid);
        (OutSlots(head), OutSlots(tail))
    }

    /// Consecutive runs of `size` slots (the last may be shorter), as `slice::chunks_mut`.
    pub fn chunks(self, size: usize) -> impl Iterator<Item = OutSlots<'a>> {
        self.0.chunks_mut(size).map(OutSlots)
    }

    /// Each slot on its own, in order.
    #[inline(always)]
    pub fn iter(self) -> impl Iterator<Item = OutSlot<'a>> {
        self.0.iter_mut().map(OutSlot)
    }

    /// Where the first slot is, for SIMD stores.
    ///
    /// Writing through the pointer is the caller's `unsafe` business: it must stay in bounds and
    /// store only initialised `f32`s, like every method here.
    pub fn as_mut_ptr(&mut self) -> *mut f32 {
        self.0.as_mut_ptr().cast::<f32>()
    }

    /// `copy_from_slice(src)` for image rows of a few dozen floats, inline: `copy_from_slice`
    /// calls `memcpy`, whose call overhead is most of the cost at this size (6% of a ResNet-20
    /// step in `perf`). Panics if the lengths differ.
    #[inline(always)]
    pub fn copy_from_slice(&mut self, src: &[f32]) {
        let dst = &mut *self.0;
        let len = dst.len();
        assert_eq!(len, src.len(), "row lengths differ");
        let copy8 = |d: &mut [MaybeUninit<f32>], s: &[f32]| {
            let d: &mut [MaybeUninit<f32>; 8] = d.try_into().expect("8 floats");
            let s: [f32; 8] = s.try_into().expect("8 floats");
            *d = s.map(MaybeUninit::new);
        };
        if len < 8 {
            for (d, &v) in dst.iter_mut().zip(src) {
                d.write(v);
            }
            return;
        }
        for (d, s) in dst.chunks_exact_mut(8).zip(src.chunks_exact(8)) {
            copy8(d, s);
        }
        if !len.is_multiple_of(8) {
            // The last 8, overlapping the last full chunk: same values written twice.
            copy8(&mut dst[len - 8..], &src[len - 8..]);
        }
    }
}

/// One write-only float of an [`OutSlots`].
pub struct OutSlot<'a>(&'a mut MaybeUninit<f32>);

impl OutSlot<'_> {
    #[inline(always)]
    pub fn write(&mut self, value: f32) {
        self.0.write(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves every way of writing reaches the buffer, and that a buffer written in full comes
    /// back with exactly the written values.
    #[test]
    fn written_slots_come_back_in_order() {
        let mut buf = OutputBuffer::new(23);
        let (mut head, tail) = buf.slots().split_at(20);
        head.slice(0..11)
            .copy_from_slice(&(0..11).map(|i| i as f32).collect::<Vec<_>>());
        head.write(11, 11.0);
        for (i, mut slot) in head.slice(12..20).iter().enumerate() {
            slot.write((12 + i) as f32);
        }
        for (c, mut chunk) in tail.chunks(2).enumerate() {
            for i in 0..chunk.len() {
                chunk.write(i, (20 + 2 * c + i) as f32);
            }
        }
        // SAFETY: slots 0..11, 11, 12..20 and 20..23 were all written above.
        let got = unsafe { buf.assume_written() };
        assert_eq!(got, (0..23).map(|i| i as f32).collect::<Vec<_>>());
    }

    /// Proves `OutSlots` over initialised floats writes through to them and leaves the rest.
    #[test]
    fn slots_over_initialised_floats_write_through() {
        let mut floats = vec![-1.0f32; 10];
        let mut slots = OutSlots::from(&mut floats[2..]);
        slots.slice(0..3).copy_from_slice(&[1.0, 2.0, 3.0]);
        slots.write(7, 9.0);
        assert_eq!(
            floats,
            [-1.0, -1.0, 1.0, 2.0, 3.0, -1.0, -1.0, -1.0, -1.0, 9.0]
        );
    }

    /// Proves the inline row copy agrees with `copy_from_slice` for lengths below, at and past
    /// one 8-float chunk, including the overlapping tail.
    #[test]
    fn row_copy_matches_copy_from_slice() {
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 28, 33] {
            let src: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
            let mut dst = vec![f32::NAN; len];
            OutSlots::from(dst.as_mut_slice()).copy_from_slice(&src);
            assert_eq!(dst, src, "length {len}");
        }
    }

    /// The debug fill is a value no float arithmetic yields: a signalling NaN, which every
    /// operation that meets it turns quiet.
    #[test]
    fn the_fill_pattern_is_a_signalling_nan_that_arithmetic_quiets() {
        assert!(UNWRITTEN.is_nan());
        let quiet_bit = 1 << 22;
        assert_eq!(UNWRITTEN_BITS & quiet_bit, 0, "must be signalling");
        let x = std::hint::black_box(UNWRITTEN);
        // (Only operations that compute: the optimiser may fold identities such as `-(-x)` or
        // `x * 1.0` into `x`, which pass an input's bits through unchanged.)
        for computed in [x + 1.0, x * 2.0, x - x, x * x] {
            assert_ne!(computed.to_bits(), UNWRITTEN_BITS);
        }
    }

    /// Proves the debug check catches a kernel that leaves part of its output unwritten.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "3 of 10 output slots were never written")]
    fn a_partly_written_buffer_panics_in_debug_builds() {
        let mut buf = OutputBuffer::new(10);
        let mut slots = buf.slots();
        for i in 0..7 {
            slots.write(i, i as f32);
        }
        // SAFETY: slots 7..10 are unwritten, which breaks `assume_written`'s contract in general;
        // but in debug builds (this test's cfg) `new` initialised them with the fill pattern, so
        // every element is initialised and the call is sound. It must panic.
        let _ = unsafe { buf.assume_written() };
    }
}
