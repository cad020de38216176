//! Running a convolution kernel over a batch: image-range tasks on the worker pool with reused,
//! once-zeroed scratch, and the row copies between dense images and the kernels' layouts.

use super::output_buffer::{OutSlots, OutputBuffer};
use super::parallel::{for_each_part, threads, with_scratch};
use super::sizes;

/// Copies `channels` planes of `rows x cols` from dense `src` into `dst`, row `y` of channel `c`
/// at `offset + c * channel_stride + y * row_stride`; the rest of `dst` is left as it is (the
/// zero borders the caller cleared once).
// Source shape, destination and its strides: a struct for them would only rename the arguments.
#[allow(clippy::too_many_arguments)]
pub(super) fn place_rows(
    src: &[f32],
    channels: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    channel_stride: usize,
    row_stride: usize,
    offset: usize,
) {
    for c in 0..channels {
        for y in 0..rows {
            let row = &src[(c * rows + y) * cols..(c * rows + y + 1) * cols];
            let start = offset + c * channel_stride + y * row_stride;
            OutSlots::from(&mut dst[start..start + cols]).copy_from_slice(row);
        }
    }
}

/// The inverse of `place_rows` at offset 0: gathers `channels` planes of `rows x cols` from rows
/// of `row_stride` into dense `dst`, writing every element of it.
pub(super) fn take_rows(
    src: &[f32],
    channel_stride: usize,
    row_stride: usize,
    channels: usize,
    rows: usize,
    cols: usize,
    mut dst: OutSlots<'_>,
) {
    assert_eq!(
        dst.len(),
        sizes::product("output planes", &[channels, rows, cols]),
        "output planes"
    );
    for c in 0..channels {
        for y in 0..rows {
            let start = c * channel_stride + y * row_stride;
            dst.slice((c * rows + y) * cols..(c * rows + y + 1) * cols)
                .copy_from_slice(&src[start..start + cols]);
        }
    }
}

/// Scratch floats per task of the tap kernels: `n_in` input planes of `plane` floats, then
/// `n_out` wide output rows of `q` floats.
pub(super) fn tap_scratch_len(n_in: usize, plane: usize, n_out: usize, q: usize) -> usize {
    sizes::sum(
        "conv scratch",
        &[
            sizes::product("conv scratch input planes", &[n_in, plane]),
            sizes::product("conv scratch output rows", &[n_out, q]),
        ],
    )
}

/// Runs `per_image(n, scratch, out_n)` for every image `n < batch` in image-range tasks over the
/// pool, and returns the outputs (`image_out` floats per image). Each task zeroes its scratch
/// (`scratch_len` floats) once, before its first image: the kernels' padding stays zero.
///
/// # Safety
/// `per_image` must write every element of `out_n`.
pub(super) unsafe fn map_images(
    batch: usize,
    image_out: usize,
    scratch_len: usize,
    per_image: impl Fn(usize, &mut [f32], OutSlots<'_>) + Sync,
) -> Vec<f32> {
    let len = sizes::product("batch output", &[batch, image_out]);
    if len == 0 {
        return Vec::new();
    }
    let mut out = OutputBuffer::new(len);
    let per_task = images_per_task(batch);
    for_each_part(
        out.slots().chunks(per_task * image_out).collect(),
        |t, out_t: &mut OutSlots<'_>| {
            with_scratch(scratch_len, |scratch| {
                scratch.fill(0.0);
                for (i, out_n) in out_t.reborrow().chunks(image_out).enumerate() {
                    per_image(t * per_task + i, scratch, out_n);
                }
            })
        },
    );
    // SAFETY: the tasks' chunks cover `out` in whole images, and the caller guarantees that
    // `per_image` writes each image's output in full.
    unsafe { out.assume_written() }
}

/// `sum_n per_image(n)` of `len`-float gradients: each image-range task adds its images into a
/// partial sum (`per_image(n, scratch, partial)`), then the partials are added up. Scratch is
/// zeroed once per task, as in `map_images`.
pub(super) fn sum_over_images(
    batch: usize,
    len: usize,
    scratch_len: usize,
    per_image: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    if len == 0 || batch == 0 {
        return vec![0f32; len];
    }
    let per_task = images_per_task(batch);
    let tasks = batch.div_ceil(per_task);
    let mut partials = vec![vec![0f32; len]; tasks];
    for_each_part(
        partials.iter_mut().collect(),
        |t, partial: &mut &mut Vec<f32>| {
            with_scratch(scratch_len, |scratch| {
                scratch.fill(0.0);
                for n in t * per_task..((t + 1) * per_task).min(batch) {
                    per_image(n, scratch, partial);
                }
            })
        },
    );
    let mut sum = partials.pop().unwrap_or_else(|| vec![0f32; len]);
    for part in partials {
        sum.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
    }
    sum
}

/// Images per task: two tasks per thread, so that a thread slowed by other load hands work
/// over, while each task zeroes its scratch borders once for many images.
fn images_per_task(batch: usize) -> usize {
    batch.div_ceil((2 * threads()).clamp(1, batch.max(1)))
}
